//! The results as an SVG chart, written by hand: throughput and connection rate per
//! contender (linear), and latency percentiles per contender (logarithmic).

use std::fmt::Write;

use super::{Report, TestSummary};
use crate::runner::TestCase;

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 40.0;
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

/// One bar group: a label under it and one optional value per series.
struct Group {
    label: String,
    values: Vec<Option<f64>>,
}

/// One panel of grouped bars.
struct Panel {
    title: String,
    series: Vec<String>,
    groups: Vec<Group>,
    logarithmic: bool,
}

/// Renders the chart.
pub fn render(report: &Report) -> String {
    let contenders: Vec<String> = report
        .tests
        .first()
        .map(|test| test.rows.iter().map(|row| row.contender.clone()).collect())
        .unwrap_or_default();
    let by_contender = |title: &str, wanted: fn(TestCase) -> bool, key: &str| Panel {
        title: title.to_owned(),
        series: contenders.clone(),
        groups: report
            .tests
            .iter()
            .filter(|test| wanted(test.test))
            .map(|test| Group {
                label: test.name.clone(),
                values: values(test, key),
            })
            .collect(),
        logarithmic: false,
    };
    let mut panels = vec![
        by_contender(
            "Bulk throughput, Gbit/s (median)",
            |test| matches!(test, TestCase::Bulk(..) | TestCase::ChainBulk(..)),
            "gbps",
        ),
        by_contender(
            "Connection rate, connections/s (median)",
            |test| {
                matches!(
                    test,
                    TestCase::ConnectionRate | TestCase::ChainConnectionRate
                )
            },
            "conn_per_s",
        ),
        by_contender(
            "UDP datagrams received per second (median)",
            |test| matches!(test, TestCase::Udp(_)),
            "pps",
        ),
    ];
    if let Some(latency) = report
        .tests
        .iter()
        .find(|test| test.test == TestCase::Latency)
    {
        let percentiles = ["p50_us", "p99_us", "p999_us"];
        panels.push(Panel {
            title: "Request/response latency, µs (log scale, median of rounds)".to_owned(),
            series: vec!["p50".into(), "p99".into(), "p99.9".into()],
            groups: latency
                .rows
                .iter()
                .map(|row| Group {
                    label: row.label.clone(),
                    values: percentiles
                        .iter()
                        .map(|key| row.medians.get(*key).copied())
                        .collect(),
                })
                .collect(),
            logarithmic: true,
        });
    }
    panels.retain(|panel| !panel.groups.is_empty());

    let height = PANEL_HEIGHT * panels.len().max(1) as f64 + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "uringgost-bench {} UTC, {} CPUs, {} thread(s) per forwarder",
        report.run.started_utc,
        report.run.machine.nproc,
        report.run.threads_text()
    );
    text(
        &mut svg,
        LEFT,
        20.0,
        r#"font-size="14" font-weight="bold""#,
        &title,
    );
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, panel, 30.0 + PANEL_HEIGHT * index as f64);
    }
    svg.push_str("</svg>\n");
    svg
}

fn values(test: &TestSummary, key: &str) -> Vec<Option<f64>> {
    test.rows
        .iter()
        .map(|row| row.medians.get(key).copied())
        .collect()
}

fn draw_panel(svg: &mut String, panel: &Panel, top: f64) {
    let plot_top = top + TOP;
    let plot_height = PANEL_HEIGHT - TOP - BOTTOM;
    let plot_width = WIDTH - LEFT - RIGHT;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top + 18.0,
        escape(&panel.title)
    );

    let mut legend_x = LEFT;
    for (index, name) in panel.series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{legend_x}" y="{}" width="10" height="10" fill="{color}"/>"#,
            top + 26.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            legend_x + 14.0,
            top + 35.0,
            escape(name)
        );
        legend_x += 24.0 + 7.0 * name.len() as f64;
    }

    let all: Vec<f64> = panel
        .groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().copied())
        .collect();
    let max = all.iter().copied().fold(0.0_f64, f64::max);
    let min_positive = all
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let scale = Scale::new(panel.logarithmic, min_positive, max);

    for (tick, label) in scale.ticks() {
        let y = plot_top + plot_height * (1.0 - tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{plot_top}" y2="{}" stroke="#333"/>"##,
        plot_top + plot_height
    );

    let group_width = plot_width / panel.groups.len().max(1) as f64;
    let bar_width = (group_width * 0.8 / panel.series.len().max(1) as f64).min(40.0);
    for (group_index, group) in panel.groups.iter().enumerate() {
        let group_left = LEFT + group_width * group_index as f64;
        let bars_width = bar_width * group.values.len() as f64;
        let first_bar = group_left + (group_width - bars_width) / 2.0;
        for (index, value) in group.values.iter().enumerate() {
            let x = first_bar + bar_width * index as f64;
            let color = PALETTE[index % PALETTE.len()];
            match value {
                Some(value) if *value > 0.0 => {
                    let bar = plot_height * scale.fraction(*value);
                    let y = plot_top + plot_height - bar;
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bar:.1}" "#,
                        bar_width - 2.0
                    );
                    let _ = writeln!(
                        svg,
                        r#"  fill="{color}"><title>{}: {}</title></rect>"#,
                        escape(&panel.series[index]),
                        short(*value)
                    );
                    let centre = x + bar_width / 2.0 - 1.0;
                    let attributes = r#"text-anchor="middle" font-size="9""#;
                    text(svg, centre, y - 3.0, attributes, &short(*value));
                }
                _ => {
                    let centre = x + bar_width / 2.0 - 1.0;
                    let attributes = r##"text-anchor="middle" font-size="9" fill="#999""##;
                    text(svg, centre, plot_top + plot_height - 3.0, attributes, "-");
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            group_left + group_width / 2.0,
            plot_top + plot_height + 16.0,
            escape(&group.label)
        );
    }
}

/// Maps values to a 0..1 height, linearly from 0 or logarithmically between powers of ten.
struct Scale {
    logarithmic: bool,
    low: f64,
    high: f64,
}

impl Scale {
    fn new(logarithmic: bool, min_positive: f64, max: f64) -> Scale {
        if logarithmic {
            let low = if min_positive.is_finite() {
                min_positive.log10().floor()
            } else {
                0.0
            };
            let high = if max > 0.0 {
                max.log10().ceil().max(low + 1.0)
            } else {
                low + 1.0
            };
            Scale {
                logarithmic,
                low,
                high,
            }
        } else {
            Scale {
                logarithmic,
                low: 0.0,
                high: nice_ceiling(max * 1.1),
            }
        }
    }

    fn fraction(&self, value: f64) -> f64 {
        let position = if self.logarithmic {
            value.log10()
        } else {
            value
        };
        ((position - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if self.logarithmic {
            let (low, high) = (self.low as i32, self.high as i32);
            (low..=high)
                .map(|power| {
                    (
                        f64::from(power - low) / f64::from(high - low),
                        short(10f64.powi(power)),
                    )
                })
                .collect()
        } else {
            (0..=5)
                .map(|step| {
                    (
                        f64::from(step) / 5.0,
                        short(self.high * f64::from(step) / 5.0),
                    )
                })
                .collect()
        }
    }
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|nice| *nice >= value)
        .unwrap_or(10.0 * power)
}

/// A value in few characters: 12.3, 4.5k, 1.2M.
fn short(value: f64) -> String {
    match value {
        0.0 => "0".to_owned(),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// Appends a `<text>` element; `content` is escaped.
fn text(svg: &mut String, x: f64, y: f64, attributes: &str, content: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" {attributes}>{}</text>"#,
        escape(content)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
