//! The run's progress: an indicatif bar on a terminal, plain timestamped lines otherwise.

use std::fmt;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    quiet: bool,
}

impl Progress {
    /// `steps` = how many `step` calls the run will make.
    pub fn new(steps: u64, quiet: bool) -> Progress {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            // Hidden by indicatif itself when stderr is not a terminal.
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(steps), target);
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30.cyan/blue} {pos:>2}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            start: Instant::now(),
            quiet,
        }
    }

    /// The current activity: the bar's message, or a plain line when there is no bar.
    pub fn say(&self, msg: impl fmt::Display) {
        if self.bar.is_hidden() {
            if !self.quiet {
                eprintln!(
                    "[mmc-bench {:6.2}s] {msg}",
                    self.start.elapsed().as_secs_f64()
                );
            }
        } else {
            self.bar.set_message(msg.to_string());
        }
    }

    /// A line that stays (warnings, skipped peers).
    pub fn note(&self, msg: impl fmt::Display) {
        if self.bar.is_hidden() {
            eprintln!("mmc-bench: {msg}");
        } else {
            self.bar.println(format!("mmc-bench: {msg}"));
        }
    }

    /// One step done.
    pub fn step(&self) {
        self.bar.inc(1);
    }

    pub fn set_len(&self, steps: u64) {
        self.bar.set_length(steps);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
