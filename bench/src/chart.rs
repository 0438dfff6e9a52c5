//! The chart, drawn with `plotters` as SVG and PNG: horizontal bars, one group per workload and
//! op, one bar per system/placement. No font features (they need fontconfig or a font file at
//! build time): the SVG carries its text as text, and the PNG's text is drawn with the 8x8 bitmap
//! glyphs of `font8x8` by [`Glyphs`], a backend wrapped around `plotters`' bitmap backend; the
//! RGB buffer is encoded with `png`.

use std::path::{Path, PathBuf};

use font8x8::legacy::BASIC_LEGACY;
use plotters::backend::{BitMapBackend, SVGBackend};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use crate::report::{human_us, Row, TCP_PINGPONG};

const W: usize = 1200;
/// Text height in pixels: 8x8 glyphs at twice their size in the PNG.
const TEXT_PX: u32 = 16;
const BAR_H: usize = 16;
const ROW_H: usize = 20;
const LABEL_X: usize = 24;
const BAR_X: usize = 250;
const BAR_MAX: usize = W - BAR_X - 170;

const INK: RGBColor = RGBColor(20, 20, 20);
const GREY: RGBColor = RGBColor(110, 110, 110);
const LIGHT: RGBColor = RGBColor(225, 225, 225);

/// Bar colour per who.
fn colour(who: &str) -> RGBColor {
    let (r, g, b) = match who {
        "mmc own" => (31, 119, 180),
        "mmc host" => (44, 160, 44),
        "mmc tcp" => (255, 127, 14),
        "mmc host bp" => (20, 100, 20),
        "mmc tcp bp" => (190, 80, 0),
        "mmc tcp shard" => (255, 187, 120),
        "mmc tcp uring" => (230, 160, 90),
        "pingpong bp" => (120, 120, 120),
        "memcpy" | "memcpy own" | "memcpy host" => (90, 90, 90),
        "tcp-stream" | "tcp-pingpong" => (160, 160, 160),
        "redis tcp" => (214, 39, 40),
        "memcached tcp" => (148, 103, 189),
        "mooncake own" => (140, 86, 75),
        "mooncake tcp" => (227, 119, 194),
        _ => (23, 190, 207),
    };
    RGBColor(r, g, b)
}

/// A drawing backend that forwards everything to `B` but draws text itself, with font8x8's
/// glyphs scaled to the style's size (whole multiples of 8 pixels), so a bitmap gets readable
/// text without any font library.
struct Glyphs<B>(B);

impl<B: DrawingBackend> Glyphs<B> {
    /// Pixels per glyph dot for a text style's size.
    fn scale(size: f64) -> i32 {
        ((size / 8.0).round() as i32).max(1)
    }
}

impl<B: DrawingBackend> DrawingBackend for Glyphs<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<B::ErrorType>> {
        let k = Self::scale(style.size()) as u32;
        Ok((8 * k * text.chars().count() as u32, 8 * k))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let k = Self::scale(style.size());
        let (w, h) = (8 * k * text.chars().count() as i32, 8 * k);
        let anchor = style.anchor();
        let x0 = pos.0
            - match anchor.h_pos {
                HPos::Left => 0,
                HPos::Center => w / 2,
                HPos::Right => w,
            };
        let y0 = pos.1
            - match anchor.v_pos {
                VPos::Top => 0,
                VPos::Center => h / 2,
                VPos::Bottom => h,
            };
        let color = style.color();
        for (n, ch) in text.chars().enumerate() {
            let glyph = BASIC_LEGACY[(ch as usize).min(127)];
            let gx = x0 + n as i32 * 8 * k;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let (x, y) = (gx + col * k, y0 + row as i32 * k);
                        self.0
                            .draw_rect((x, y), (x + k - 1, y + k - 1), &color, true)?;
                    }
                }
            }
        }
        Ok(())
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
        (
            crate::steady::NAME,
            "pool at its eviction watermark, 16 x 8 MiB",
        ),
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

/// The chart's height for these sections.
fn height(secs: &[Section]) -> usize {
    let mut h = 20 + 2 * ROW_H + 10;
    for s in secs {
        h += ROW_H * 2;
        for g in &s.groups {
            h += ROW_H + g.1.len() * ROW_H + 8;
        }
    }
    h + 20
}

/// Draw the sections onto `root` (any plotters backend).
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    secs: &[Section],
    subtitle: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing the chart: {e}");
    let font = |c: RGBColor| ("sans-serif", TEXT_PX).into_font().color(&c);
    let text = |s: &str, x: usize, y: usize, c: RGBColor| {
        root.draw(&Text::new(s.to_string(), (x as i32, y as i32), font(c)))
            .map_err(err)
    };
    let rect = |x: usize, y: usize, w: usize, h: usize, c: RGBColor| {
        root.draw(&Rectangle::new(
            [(x as i32, y as i32), ((x + w) as i32, (y + h) as i32)],
            c.filled(),
        ))
        .map_err(err)
    };
    root.fill(&WHITE).map_err(err)?;
    text("MemCache benchmark", LABEL_X, 14, INK)?;
    text(subtitle, LABEL_X, 14 + ROW_H, GREY)?;
    let mut y = 20 + 2 * ROW_H + 10;
    for s in secs {
        rect(LABEL_X, y + 4, W - 2 * LABEL_X, 2, INK)?;
        text(&s.title, LABEL_X, y + 10, INK)?;
        y += ROW_H * 2;
        let max = s
            .groups
            .iter()
            .flat_map(|g| g.1.iter().map(|b| b.1))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        for (label, bars) in &s.groups {
            text(label, LABEL_X, y + 2, GREY)?;
            y += ROW_H;
            for (who, v, txt) in bars {
                text(who, LABEL_X + 16, y + 2, INK)?;
                rect(BAR_X, y, BAR_MAX, BAR_H + 2, LIGHT)?;
                let len = ((v / max) * BAR_MAX as f64).round().max(1.0) as usize;
                rect(BAR_X, y + 1, len.min(BAR_MAX), BAR_H, colour(who))?;
                text(txt, BAR_X + len.min(BAR_MAX) + 8, y + 2, INK)?;
                y += ROW_H;
            }
            y += 8;
        }
    }
    root.present().map_err(err)
}

/// Draw the chart and write it as PNG (`path` with the extension `.png`) and SVG (`.svg`);
/// `subtitle` says what run it shows. The paths written.
pub fn write(path: &Path, rows: &[Row], subtitle: &str) -> Result<Vec<PathBuf>, String> {
    let secs = sections(rows);
    let h = height(&secs);
    let (png_path, svg_path) = (path.with_extension("png"), path.with_extension("svg"));
    let mut px = vec![255u8; W * h * 3];
    {
        let bitmap = BitMapBackend::with_buffer(&mut px, (W as u32, h as u32));
        draw(&Glyphs(bitmap).into_drawing_area(), &secs, subtitle)?;
    }
    let file =
        std::fs::File::create(&png_path).map_err(|e| format!("{}: {e}", png_path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| format!("{}: {e}", png_path.display()))?;
    w.write_image_data(&px)
        .map_err(|e| format!("{}: {e}", png_path.display()))?;
    w.finish()
        .map_err(|e| format!("{}: {e}", png_path.display()))?;
    draw(
        &SVGBackend::new(&svg_path, (W as u32, h as u32)).into_drawing_area(),
        &secs,
        subtitle,
    )?;
    Ok(vec![png_path, svg_path])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{MMC, TCP};

    #[test]
    fn writes_png_and_svg_with_bars_and_labels() {
        let calls = [Duration::from_millis(20); 4];
        let rows = [
            Row::from_calls(
                "batch-8m",
                "put",
                MMC,
                TCP,
                "16 x 8 MiB",
                64,
                4 << 30,
                &calls,
                true,
            ),
            Row::from_calls("4k", "get", MMC, TCP, "1 key", 4, 0, &calls, false),
        ];
        let dir = std::env::temp_dir().join(format!("mmc-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = write(&dir.join("c.png"), &rows, "a test run").unwrap();
        assert_eq!(written, vec![dir.join("c.png"), dir.join("c.svg")]);
        let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
        for label in [
            "MemCache benchmark",
            "a test run",
            "mmc tcp",
            "batch 16 x 8 MiB: put",
        ] {
            assert!(svg.contains(label), "the SVG lacks {label:?}");
        }
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(dir.join("c.png")).unwrap(),
        ));
        let mut reader = decoder.read_info().unwrap();
        let mut px = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut px).unwrap();
        assert_eq!(info.width as usize, W);
        let rgb = |c: RGBColor| [c.0, c.1, c.2];
        let count = |c: [u8; 3]| px.chunks(3).filter(|p| *p == c).count();
        // The tcp bar (its colour) and glyph dots of the text (ink) are both drawn.
        assert!(count(rgb(colour("mmc tcp"))) > 1000);
        assert!(count(rgb(INK)) > 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
