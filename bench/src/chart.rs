//! The PNG chart: horizontal bars, one group per workload and op, one bar per system/placement,
//! drawn into an RGB buffer with the 8x8 bitmap font of `font8x8` (no system font libraries) and
//! encoded with `png`.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;

use crate::report::{human_us, Row, TCP_PINGPONG};

const W: usize = 1200;
const SCALE: usize = 2;
const BAR_H: usize = 16;
const ROW_H: usize = 20;
const LABEL_X: usize = 24;
const BAR_X: usize = 250;
const BAR_MAX: usize = W - BAR_X - 170;

type Rgb = [u8; 3];

const BLACK: Rgb = [20, 20, 20];
const GREY: Rgb = [110, 110, 110];
const LIGHT: Rgb = [225, 225, 225];

/// Bar colour per who.
fn colour(who: &str) -> Rgb {
    match who {
        "mmc own" => [31, 119, 180],
        "mmc host" => [44, 160, 44],
        "mmc tcp" => [255, 127, 14],
        "mmc host bp" => [20, 100, 20],
        "mmc tcp bp" => [190, 80, 0],
        "mmc tcp shard" => [255, 187, 120],
        "mmc tcp uring" => [230, 160, 90],
        "pingpong bp" => [120, 120, 120],
        "memcpy" => [90, 90, 90],
        "tcp-stream" | "tcp-pingpong" => [160, 160, 160],
        "redis tcp" => [214, 39, 40],
        "memcached tcp" => [148, 103, 189],
        "mooncake own" => [140, 86, 75],
        "mooncake tcp" => [227, 119, 194],
        _ => [23, 190, 207],
    }
}

struct Canvas {
    px: Vec<u8>,
    h: usize,
}

impl Canvas {
    fn new(h: usize) -> Canvas {
        Canvas {
            px: vec![255; W * h * 3],
            h,
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..(y + h).min(self.h) {
            for xx in x..(x + w).min(W) {
                let i = (yy * W + xx) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb) {
        for (n, ch) in s.chars().enumerate() {
            let glyph = BASIC_LEGACY[(ch as usize).min(127)];
            let gx = x + n * 8 * SCALE;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(gx + col * SCALE, y + row * SCALE, SCALE, SCALE, c);
                    }
                }
            }
        }
    }
}

/// A row's label on the chart (at most 13 characters fit left of the bars): `Row::who` with
/// "busy-poll" as "bp" and the shard data server as "shard".
fn bar_label(r: &Row) -> String {
    match r.who().as_str() {
        "tcp-pingpong busy-poll" => "pingpong bp".into(),
        "mmc tcp 2 shards" => "mmc tcp shard".into(),
        "mmc tcp 2 uring shards" => "mmc tcp uring".into(),
        w => w.replace(" busy-poll", " bp"),
    }
}

/// One bar: who, value, value as text.
type Bar = (String, f64, String);

/// One chart section: a title and labelled groups of bars.
struct Section {
    title: String,
    groups: Vec<(String, Vec<Bar>)>,
}

fn sections(rows: &[Row]) -> Vec<Section> {
    let mut out = Vec::new();
    let mut bulk = Section {
        title: "Bulk transfers, GB/s (longer is better)".into(),
        groups: Vec::new(),
    };
    for (w, label) in [
        ("batch-1m", "batch 64 x 1 MiB"),
        ("batch-8m", "batch 16 x 8 MiB"),
        ("deepseek-r1", "DeepSeek-R1 block, 8 keys x 122 pieces"),
    ] {
        for op in ["put", "get"] {
            let mut bars: Vec<Bar> = rows
                .iter()
                .filter(|r| {
                    r.workload == w
                        && r.bulk
                        && (r.op == op
                            || r.op == "send"
                            || r.op == if op == "get" { "copy out" } else { "copy in" })
                })
                .map(|r| (bar_label(r), r.gbps, format!("{:.2}", r.gbps)))
                .collect();
            bars.sort_by_key(|b| order(&b.0));
            if !bars.is_empty() {
                bulk.groups.push((format!("{label}: {op}"), bars));
            }
        }
    }
    out.push(bulk);
    let mut lat = Section {
        title: "4 KiB, one key per call: p50 latency, us (shorter is better)".into(),
        groups: Vec::new(),
    };
    for op in ["put", "get", "exist"] {
        let mut bars: Vec<Bar> = rows
            .iter()
            .filter(|r| r.workload == "4k" && (r.op == op || r.system == TCP_PINGPONG))
            .filter_map(|r| r.p50_us.map(|p| (bar_label(r), p, human_us(p))))
            .collect();
        bars.sort_by_key(|b| order(&b.0));
        if bars.len() > 1 {
            lat.groups.push((format!("4 KiB {op}"), bars));
        }
    }
    out.push(lat);
    let mut ex = Section {
        title: "batch exist of 1000 keys: M keys/s (longer is better)".into(),
        groups: Vec::new(),
    };
    let mut bars: Vec<Bar> = rows
        .iter()
        .filter(|r| r.workload == "exist" && r.op == "batch_exist")
        .map(|r| (bar_label(r), r.rate / 1e6, format!("{:.2}", r.rate / 1e6)))
        .collect();
    bars.sort_by_key(|b| order(&b.0));
    if !bars.is_empty() {
        ex.groups.push(("batch_exist 1000 keys".into(), bars));
    }
    out.push(ex);
    out.retain(|s| !s.groups.is_empty());
    out
}

fn order(who: &str) -> usize {
    [
        "mmc own",
        "mmc host",
        "mmc host bp",
        "mmc tcp",
        "mmc tcp bp",
        "mmc tcp shard",
        "mmc tcp uring",
        "memcpy",
        "tcp-stream",
        "tcp-pingpong",
        "pingpong bp",
        "redis tcp",
        "memcached tcp",
        "mooncake own",
        "mooncake tcp",
    ]
    .iter()
    .position(|w| *w == who)
    .unwrap_or(99)
}

/// Draw and write the chart; `subtitle` says what run it shows.
pub fn write(path: &Path, rows: &[Row], subtitle: &str) -> Result<(), String> {
    let secs = sections(rows);
    let mut h = 20 + 2 * ROW_H + 10;
    for s in &secs {
        h += ROW_H * 2;
        for g in &s.groups {
            h += ROW_H + g.1.len() * ROW_H + 8;
        }
    }
    h += 20;
    let mut c = Canvas::new(h);
    c.text(LABEL_X, 14, "MemCache benchmark", BLACK);
    c.text(LABEL_X, 14 + ROW_H, subtitle, GREY);
    let mut y = 20 + 2 * ROW_H + 10;
    for s in &secs {
        c.rect(LABEL_X, y + 4, W - 2 * LABEL_X, 2, BLACK);
        c.text(LABEL_X, y + 10, &s.title, BLACK);
        y += ROW_H * 2;
        let max = s
            .groups
            .iter()
            .flat_map(|g| g.1.iter().map(|b| b.1))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        for (label, bars) in &s.groups {
            c.text(LABEL_X, y + 2, label, GREY);
            y += ROW_H;
            for (who, v, txt) in bars {
                c.text(LABEL_X + 16, y + 2, who, BLACK);
                c.rect(BAR_X, y, BAR_MAX, BAR_H + 2, LIGHT);
                let len = ((v / max) * BAR_MAX as f64).round().max(1.0) as usize;
                c.rect(BAR_X, y + 1, len.min(BAR_MAX), BAR_H, colour(who));
                c.text(BAR_X + len.min(BAR_MAX) + 8, y + 2, txt, BLACK);
                y += ROW_H;
            }
            y += 8;
        }
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    w.write_image_data(&c.px)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    w.finish().map_err(|e| format!("{}: {e}", path.display()))
}
