//! PNG charts drawn with `plotters`' bitmap backend: the loss and learning
//! rate of a training run, and the confusion matrix of a validation run.
//!
//! Text uses DejaVu Sans Mono, embedded in the binary (its Bitstream Vera
//! license, `assets/fonts/DejaVu-LICENSE`, allows redistribution), through
//! plotters' `ab_glyph` feature, so no system font library is needed.

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::OnceLock;

const FONT: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

/// Registers the embedded font once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if !ok {
        bail!("the embedded chart font could not be parsed");
    }
    Ok(())
}

/// One point of the training curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainPoint {
    pub batch: f64,
    pub loss: f64,
    pub average_loss: f64,
    pub rate: f64,
}

/// Returns the `batch` records of the last run in the JSON-lines log at
/// `log_path`: those after its last `run` record.
pub fn read_last_run(log_path: &Path) -> Result<Vec<TrainPoint>> {
    let text = std::fs::read_to_string(log_path).with_context(|| format!("cannot read log file {}", log_path.display()))?;
    let mut points = Vec::new();
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match record["event"].as_str() {
            Some("run") => points.clear(),
            Some("batch") => {
                let field = |name: &str| record[name].as_f64();
                if let (Some(batch), Some(loss), Some(average_loss), Some(rate)) =
                    (field("batch"), field("loss"), field("avg_loss"), field("rate"))
                {
                    points.push(TrainPoint {
                        batch,
                        loss,
                        average_loss,
                        rate,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(points)
}

/// Encodes an RGB buffer of `size` as PNG and writes it to `path` through a
/// temporary file, so a crash never leaves a half-written chart.
fn save_png(buffer: Vec<u8>, size: (u32, u32), path: &Path) -> Result<()> {
    use image::ImageEncoder;
    crate::formats::atomic::write_atomic(path, |w| {
        image::codecs::png::PngEncoder::new(w)
            .write_image(&buffer, size.0, size.1, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("encoding chart {}", path.display()))
    })
}

fn draw_error<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw chart {}: {e:?}", path.display())
}

/// Writes a two-panel PNG to `path`: loss and average loss against batch on
/// top, learning rate against batch below.
pub fn write_training_chart(points: &[TrainPoint], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        bail!("no batch records to draw in {}", path.display());
    }
    ensure_font()?;
    let size = (1000u32, 700u32);
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error(path))?;
        let root = root.titled(title, (FONT, 22)).map_err(draw_error(path))?;
        let (upper, lower) = root.split_vertically(440);

        let first = points[0].batch;
        let last = points[points.len() - 1].batch.max(first + 1.0);
        let max_loss = points.iter().map(|p| p.loss.max(p.average_loss)).fold(0.0, f64::max).max(1e-6) * 1.05;
        let mut loss_chart = ChartBuilder::on(&upper)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(first..last, 0.0..max_loss)
            .map_err(draw_error(path))?;
        loss_chart
            .configure_mesh()
            .x_desc("batch")
            .x_label_formatter(&|batch| format!("{batch:.0}"))
            .y_desc("loss")
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_error(path))?;
        loss_chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.batch, p.loss)), RGBColor(150, 180, 230)))
            .map_err(draw_error(path))?
            .label("loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(150, 180, 230)));
        loss_chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.batch, p.average_loss)),
                RED.stroke_width(2),
            ))
            .map_err(draw_error(path))?
            .label("average loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        loss_chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error(path))?;

        let max_rate = points.iter().map(|p| p.rate).fold(0.0, f64::max).max(1e-9) * 1.1;
        let mut rate_chart = ChartBuilder::on(&lower)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(first..last, 0.0..max_rate)
            .map_err(draw_error(path))?;
        rate_chart
            .configure_mesh()
            .x_desc("batch")
            .x_label_formatter(&|batch| format!("{batch:.0}"))
            .y_desc("learning rate")
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_error(path))?;
        rate_chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.batch, p.rate)), BLUE.stroke_width(2)))
            .map_err(draw_error(path))?;

        root.present().map_err(draw_error(path))?;
    }
    save_png(buffer, size, path)
}

/// Counts of (true class, predicted top-1 class) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    pub classes: usize,
    /// `[truth][predicted]`, row-major.
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth * self.classes + predicted] += 1;
    }

    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }
}

/// Writes the confusion matrix as a PNG heat map to `path`. Rows are the
/// true labels and columns the top-1 predictions. Each cell is shaded by its
/// share of the row and, for up to 30 classes, labelled with its count.
pub fn write_confusion_chart(matrix: &ConfusionMatrix, labels: &[String], title: &str, path: &Path) -> Result<()> {
    ensure_font()?;
    let n = matrix.classes;
    if n == 0 {
        bail!("no classes to draw in {}", path.display());
    }
    let cell = (720 / n as u32).clamp(8, 72);
    let side = cell * n as u32;
    let size = (side + 200, side + 170);
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error(path))?;
        let root = root.titled(title, (FONT, 20)).map_err(draw_error(path))?;
        let (left, top) = (150i32, 60i32);
        let with_text = n <= 30;
        let label_style = TextStyle::from((FONT, 14).into_font()).color(&BLACK);

        for truth in 0..n {
            let row_total = (0..n).map(|p| matrix.count(truth, p)).sum::<u64>().max(1);
            for predicted in 0..n {
                let count = matrix.count(truth, predicted);
                let share = count as f64 / row_total as f64;
                // Errors are rare, so their red is four times as strong as their
                // share of the row, to keep a 5% confusion visible.
                let color = if truth == predicted {
                    let shade = (255.0 * (1.0 - share)) as u8;
                    RGBColor(shade, 255 - (255 - shade) / 3, shade)
                } else {
                    let shade = (255.0 * (1.0 - (4.0 * share).min(1.0))) as u8;
                    RGBColor(255, shade, shade)
                };
                let x0 = left + predicted as i32 * cell as i32;
                let y0 = top + truth as i32 * cell as i32;
                root.draw(&Rectangle::new([(x0, y0), (x0 + cell as i32, y0 + cell as i32)], color.filled()))
                    .map_err(draw_error(path))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    RGBColor(200, 200, 200),
                ))
                .map_err(draw_error(path))?;
                if with_text && count > 0 {
                    let text_color = if share > 0.6 { WHITE } else { BLACK };
                    let style = TextStyle::from((FONT, (cell / 3).clamp(8, 16)).into_font()).color(&text_color);
                    root.draw_text(&count.to_string(), &style, (x0 + 3, y0 + cell as i32 / 3))
                        .map_err(draw_error(path))?;
                }
            }
            if with_text {
                let name = labels.get(truth).map(String::as_str).unwrap_or("?");
                root.draw_text(name, &label_style, (10, top + truth as i32 * cell as i32 + cell as i32 / 3))
                    .map_err(draw_error(path))?;
            }
        }
        if with_text {
            for predicted in 0..n {
                let name = labels.get(predicted).map(String::as_str).unwrap_or("?");
                let style = label_style.transform(FontTransform::Rotate90);
                root.draw_text(
                    name,
                    &style,
                    (left + predicted as i32 * cell as i32 + cell as i32 / 2, top + side as i32 + 5),
                )
                .map_err(draw_error(path))?;
            }
        }
        root.draw_text("rows: true label, columns: top-1 prediction", &label_style, (left, top - 25))
            .map_err(draw_error(path))?;
        root.present().map_err(draw_error(path))?;
    }
    save_png(buffer, size, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_counts_by_cell() {
        let mut m = ConfusionMatrix::new(3);
        m.add(0, 0);
        m.add(0, 2);
        m.add(0, 2);
        assert_eq!(m.count(0, 2), 2);
        assert_eq!(m.count(0, 0), 1);
        assert_eq!(m.count(2, 0), 0);
    }

    #[test]
    fn last_run_keeps_only_its_batches() {
        let dir = std::env::temp_dir().join(format!("darknet-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.json");
        std::fs::write(
            &log,
            "{\"event\":\"run\"}\n{\"event\":\"batch\",\"batch\":1,\"loss\":2.0,\"avg_loss\":2.0,\"rate\":0.1}\n\
             {\"event\":\"run\"}\n{\"event\":\"batch\",\"batch\":7,\"loss\":1.0,\"avg_loss\":1.5,\"rate\":0.05}\n",
        )
        .unwrap();
        let points = read_last_run(&log).unwrap();
        assert_eq!(
            points,
            vec![TrainPoint {
                batch: 7.0,
                loss: 1.0,
                average_loss: 1.5,
                rate: 0.05
            }]
        );
        let png = dir.join("x.png");
        write_training_chart(&points, "t", &png).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
