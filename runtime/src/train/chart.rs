//! The training-curve chart: loss and accuracy per epoch, as SVG.

use std::path::Path;

#[cfg(feature = "charts")]
use plotters::prelude::*;

use super::checkpoint::write_atomic;
use super::error::TrainError;
use super::metrics::EpochRecord;

/// Renders the curves of `records` as an SVG document (needs the `charts`
/// feature).
#[cfg(not(feature = "charts"))]
pub fn render_chart(_title: &str, _records: &[EpochRecord]) -> Result<String, String> {
    Err("kiln-runtime was built without its `charts` feature".into())
}

/// Renders the curves of `records` as an SVG document: on the left the
/// training and test loss per epoch, on the right the test accuracy.
#[cfg(feature = "charts")]
pub fn render_chart(title: &str, records: &[EpochRecord]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(480);
        let last = records.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
        let x_range = if records.len() <= 1 { 0.0..last + 1.0 } else { 1.0..last };

        let losses: Vec<f64> = records
            .iter()
            .flat_map(|r| std::iter::once(r.train_loss).chain(r.test_loss))
            .filter(|v| v.is_finite())
            .collect();
        let max_loss = losses.iter().copied().fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(x_range.clone(), 0.0..max_loss)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(|e| e.to_string())?;
        let train: Vec<(f64, f64)> = records.iter().map(|r| (r.epoch as f64, r.train_loss)).collect();
        chart
            .draw_series(LineSeries::new(train.clone(), BLUE.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        chart.draw_series(train.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(|e| e.to_string())?;
        let test: Vec<(f64, f64)> = records.iter().filter_map(|r| Some((r.epoch as f64, r.test_loss?))).collect();
        if !test.is_empty() {
            chart
                .draw_series(LineSeries::new(test.clone(), RED.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label("test")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
            chart.draw_series(test.iter().map(|&p| Circle::new(p, 3, RED.filled()))).map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;

        let mut chart = ChartBuilder::on(&right)
            .caption("test accuracy (%)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(x_range, 0.0..100.0)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(|e| e.to_string())?;
        let acc: Vec<(f64, f64)> =
            records.iter().filter_map(|r| Some((r.epoch as f64, 100.0 * r.test_accuracy?))).collect();
        chart.draw_series(LineSeries::new(acc.clone(), GREEN.stroke_width(2))).map_err(|e| e.to_string())?;
        chart.draw_series(acc.iter().map(|&p| Circle::new(p, 3, GREEN.filled()))).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes the chart of `records` to `path` (SVG), atomically.
pub fn write_chart(path: &Path, title: &str, records: &[EpochRecord]) -> Result<(), TrainError> {
    let svg = render_chart(title, records).map_err(|message| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("cannot draw the chart: {message}"),
    })?;
    write_atomic(path, svg.as_bytes())
}
