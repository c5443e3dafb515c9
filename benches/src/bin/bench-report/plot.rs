//! `docs/benchmarks.svg`: the backends side by side, p50 per measurement. Top: writes (µs), with
//! the fdatasync floor as a line. Bottom: failover and recovery (ms).

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use switchyard_benches::run::RunRecord;

use crate::doc::Floors;
use crate::results::Results;

/// One panel: categories of measurements, a bar per backend in each.
struct Panel {
    title: String,
    /// Nanoseconds per unit of the y axis.
    unit_ns: f64,
    /// Label, criterion id as `group/{backend}/param`.
    categories: Vec<(&'static str, String)>,
    /// A horizontal line: label and value in nanoseconds.
    floor: Option<(&'static str, f64)>,
}

/// Draw the plot of `record`'s run into `path`.
pub(crate) fn draw(path: &Path, record: &RunRecord, results: &Results) -> anyhow::Result<()> {
    let entries = record.settings.recovery_entries;
    let floors = Floors::of(results);
    let panels = [
        Panel {
            title: "Writes, p50 (µs)".into(),
            unit_ns: 1e3,
            categories: vec![
                ("propose, 1 node", "propose/{}/1".into()),
                ("propose, leader of 3", "propose_3nodes/{}/1".into()),
                ("Kafka OffsetCommit", "kafka/{}/offset_commit".into()),
                ("Kafka CreateTopics (1)", "kafka/{}/create_topic".into()),
                (
                    "Kafka OffsetCommit, 3",
                    "kafka_3nodes/{}/offset_commit".into(),
                ),
            ],
            floor: floors.fsync.map(|f| ("fdatasync_4k", f)),
        },
        Panel {
            title: format!(
                "Failover (3 nodes) and recovery ({} entries), p50 (ms)",
                crate::doc::count(entries as f64)
            ),
            unit_ns: 1e6,
            categories: vec![
                ("failover", "failover/{}/3".into()),
                (
                    "recovery, snapshots",
                    format!("recovery/{{}}/{entries}_snapshots"),
                ),
                (
                    "recovery, no snapshot",
                    format!("recovery/{{}}/{entries}_no_snapshot"),
                ),
            ],
            floor: None,
        },
    ];
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(area, panel, record, results)?;
    }
    root.present()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    record: &RunRecord,
    results: &Results,
) -> anyhow::Result<()> {
    let backends: Vec<&str> = record.backends.iter().map(|b| b.name.as_str()).collect();
    // values[category][backend], in the panel's unit.
    let values: Vec<Vec<Option<f64>>> = panel
        .categories
        .iter()
        .map(|(_, pattern)| {
            backends
                .iter()
                .map(|b| {
                    results
                        .get(&pattern.replace("{}", b))
                        .map(|m| m.p50() / panel.unit_ns)
                })
                .collect()
        })
        .collect();
    let floor = panel.floor.map(|(name, ns)| (name, ns / panel.unit_ns));
    let top = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .chain(floor.map(|(_, v)| v))
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let n = panel.categories.len();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| axis_value(*v, top))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    // Category names under the axis, centred on their bars (drawn 6 px below the x axis).
    let label_style = TextStyle::from(("sans-serif", 14))
        .pos(Pos::new(HPos::Center, VPos::Top))
        .color(&BLACK);
    chart
        .draw_series(panel.categories.iter().enumerate().map(|(i, (name, _))| {
            EmptyElement::at((i as f64 + 0.5, 0.0))
                + Text::new(name.to_string(), (0, 6), label_style.clone())
        }))
        .map_err(|e| anyhow!("{e}"))?;

    let width = 0.8 / backends.len().max(1) as f64;
    let value_style = TextStyle::from(("sans-serif", 11))
        .pos(Pos::new(HPos::Center, VPos::Bottom))
        .color(&BLACK);
    for (j, backend) in backends.iter().enumerate() {
        let measured: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, row)| row[j].map(|v| (i as f64 + 0.1 + j as f64 * width, v)))
            .collect();
        // A backend this panel has no measurement of gets no legend entry either.
        if measured.is_empty() {
            continue;
        }
        let colour = Palette99::pick(j).to_rgba();
        chart
            .draw_series(measured.iter().map(|&(left, v)| {
                Rectangle::new([(left, 0.0), (left + width * 0.9, v)], colour.filled())
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label(*backend)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        chart
            .draw_series(measured.iter().map(|&(left, v)| {
                Text::new(
                    axis_value(v, top),
                    (left + width * 0.45, v),
                    value_style.clone(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    if let Some((name, value)) = floor {
        chart
            .draw_series(LineSeries::new(
                [(0.0, value), (n as f64, value)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{name} floor"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 10, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A value in the panel's unit, with a decimal only where the axis is short.
fn axis_value(value: f64, top: f64) -> String {
    if top >= 20.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
