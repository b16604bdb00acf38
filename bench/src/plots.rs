//! SVG charts of the figures a run measured, written beside its Markdown report
//! (`<stem>-<chart>.svg`). Only measured points are drawn: medians of the repeats, as in
//! the table, at the allocation counts and viewer steps the run used.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use crate::conn::Transport;
use crate::report::{fmt, Results};
use crate::servers::Kind;
use crate::viewers::Outcome;

/// One line (or set of points) on a chart.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    /// Joined by a line (otherwise points only).
    pub line: bool,
    pub points: Vec<(f64, f64)>,
}

/// One chart, one SVG file.
pub struct Chart {
    /// File name suffix: `<out stem>-<slug>.svg`.
    pub slug: &'static str,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    /// What the chart shows, for the report.
    pub caption: String,
    pub series: Vec<Series>,
}

impl Chart {
    /// The series with at least one finite point, each with only its finite points.
    fn drawable(&self) -> Vec<(&Series, Vec<(f64, f64)>)> {
        self.series
            .iter()
            .map(|s| {
                let mut p: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
                    .collect();
                p.sort_by(|a, b| a.0.total_cmp(&b.0));
                (s, p)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.drawable().is_empty()
    }
}

/// `<dir>/<stem>-<slug>.svg` beside `out`.
pub fn path_for(out: &Path, slug: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bench".into());
    out.with_file_name(format!("{stem}-{slug}.svg"))
}

const GATEWAY_TCP: RGBColor = RGBColor(31, 119, 180);
const GATEWAY_TLS: RGBColor = RGBColor(23, 190, 207);
const COTURN_TCP: RGBColor = RGBColor(214, 39, 40);
const COTURN_TLS: RGBColor = RGBColor(255, 127, 14);

fn color(kind: Kind, t: Transport) -> RGBColor {
    match (kind, t) {
        (Kind::Gateway, Transport::Tcp) => GATEWAY_TCP,
        (Kind::Gateway, Transport::Tls) => GATEWAY_TLS,
        (Kind::Coturn, Transport::Tcp) => COTURN_TCP,
        (Kind::Coturn, Transport::Tls) => COTURN_TLS,
    }
}

/// A relay figure (`"<transport>, <n> alloc: <what>"` rows) against allocations, one
/// series per server and transport.
fn relay_series(results: &Results, allocs: &[usize], what: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for kind in [Kind::Gateway, Kind::Coturn] {
        for t in [Transport::Tcp, Transport::Tls] {
            let points = allocs
                .iter()
                .map(|&n| {
                    let row = format!("{}, {n} alloc: {what}", t.name());
                    (n as f64, results.median_of(&row, kind))
                })
                .collect();
            out.push(Series {
                label: format!("{} {}", kind.name(), t.name()),
                color: color(kind, t),
                line: true,
                points,
            });
        }
    }
    out
}

/// Every chart the run has data for (a chart without a single measured point is left out
/// by [`write_all`]).
pub fn charts(results: &Results, allocs: &[usize], viewers: Option<&Outcome>) -> Vec<Chart> {
    let steps = viewers.map(Outcome::points).unwrap_or_default();
    let passed: Vec<_> = steps.iter().filter(|p| p.passed).collect();
    let failed: Vec<_> = steps.iter().filter(|p| !p.passed).collect();
    vec![
        Chart {
            slug: "throughput",
            title: "Relayed packets/s against allocations (1,200-byte ChannelData)".into(),
            x_desc: "allocations".into(),
            y_desc: "relayed packets/s (highest passing rate)".into(),
            log_x: true,
            caption: "highest passing relayed packet rate against allocations, both servers, \
                      TURN/TCP and TURN/TLS (medians of the repeats)"
                .into(),
            series: relay_series(results, allocs, "relayed packets"),
        },
        Chart {
            slug: "cpu",
            title: "Server CPU per relayed gigabit against allocations".into(),
            x_desc: "allocations".into(),
            y_desc: "server CPU seconds per Gbit of payload".into(),
            log_x: true,
            caption: "server CPU seconds per relayed gigabit at that rate, both servers \
                      (medians of the repeats; lower is better)"
                .into(),
            series: relay_series(results, allocs, "server CPU"),
        },
        Chart {
            slug: "viewers-cpu",
            title: "Gateway CPU against viewers (1 Mbit/s test pattern, TURN/TLS)".into(),
            x_desc: "viewers".into(),
            y_desc: "gateway CPU, % of its one core".into(),
            log_x: false,
            caption: "gateway CPU in each viewer step's receiving window (gateway only: coturn \
                      has no media); steps that failed are drawn as points"
                .into(),
            series: vec![
                Series {
                    label: "gateway, steps that passed".into(),
                    color: GATEWAY_TCP,
                    line: true,
                    points: passed
                        .iter()
                        .filter_map(|p| Some((p.n as f64, p.gateway_cpu_pct?)))
                        .collect(),
                },
                Series {
                    label: "gateway, steps that failed".into(),
                    color: COTURN_TCP,
                    line: false,
                    points: failed
                        .iter()
                        .filter_map(|p| Some((p.n as f64, p.gateway_cpu_pct?)))
                        .collect(),
                },
            ],
        },
        Chart {
            slug: "ttff",
            title: "Time to first frame against viewers (TURN/TLS)".into(),
            x_desc: "viewers".into(),
            y_desc: "time to first frame, ms".into(),
            log_x: false,
            caption: "time to first frame in the viewer steps that passed, p50 and (with at \
                      least 20 viewers) p99; gateway only"
                .into(),
            series: vec![
                Series {
                    label: "gateway p50".into(),
                    color: GATEWAY_TCP,
                    line: true,
                    points: passed
                        .iter()
                        .filter_map(|p| Some((p.n as f64, p.ttff_p50_ms?)))
                        .collect(),
                },
                Series {
                    label: "gateway p99".into(),
                    color: GATEWAY_TLS,
                    line: true,
                    points: passed
                        .iter()
                        .filter_map(|p| Some((p.n as f64, p.ttff_p99_ms?)))
                        .collect(),
                },
            ],
        },
    ]
}

/// A chart that was written: its caption and file name (relative to the report).
pub struct Written {
    pub caption: String,
    pub file: String,
}

/// Writes each chart with data beside `out`; returns those written and a note for each
/// one that was not.
pub fn write_all(charts: &[Chart], out: &Path) -> (Vec<Written>, Vec<String>) {
    let mut written = Vec::new();
    let mut notes = Vec::new();
    for c in charts {
        if c.is_empty() {
            notes.push(format!(
                "chart `{}` not drawn: the run measured none of its points",
                c.slug
            ));
            continue;
        }
        let path = path_for(out, c.slug);
        match draw(c, &path) {
            Ok(()) => written.push(Written {
                caption: c.caption.clone(),
                file: path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => notes.push(format!("chart `{}` not written: {e:#}", c.slug)),
        }
    }
    (written, notes)
}

fn x_label(x: &f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        fmt(*x)
    }
}

fn y_label(y: &f64) -> String {
    if *y == 0.0 {
        "0".into()
    } else {
        fmt(*y)
    }
}

/// Draws one chart into an SVG file.
pub fn draw(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    let series = chart.drawable();
    let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max);
    if !x_min.is_finite() || !x_max.is_finite() {
        return Err(anyhow!("no finite points"));
    }
    // Headroom for the legend in the upper left corner.
    let y_top = if y_max > 0.0 { y_max * 1.35 } else { 1.0 };
    if chart.log_x {
        render(
            chart,
            &series,
            path,
            (x_min / 2.0..x_max * 2.0).log_scale(),
            y_top,
        )
    } else {
        render(chart, &series, path, 0.0..(x_max * 1.1).max(1.0), y_top)
    }
}

fn render<X>(
    chart: &Chart,
    series: &[(&Series, Vec<(f64, f64)>)],
    path: &Path,
    x: X,
    y_top: f64,
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut cc = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(84)
        .build_cartesian_2d(x, 0.0..y_top)
        .map_err(|x| e(&x))?;
    cc.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(|x| e(&x))?;
    for (s, points) in series {
        let color = s.color;
        let style = ShapeStyle::from(&color).stroke_width(2);
        if s.line {
            cc.draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(|x| e(&x))?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            cc.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 4, ShapeStyle::from(&color).filled())),
            )
            .map_err(|x| e(&x))?;
        } else {
            cc.draw_series(
                points
                    .iter()
                    .map(|&p| Cross::new(p, 6, ShapeStyle::from(&color).stroke_width(2))),
            )
            .map_err(|x| e(&x))?
            .label(s.label.as_str())
            .legend(move |(x, y)| Cross::new((x + 10, y), 6, style));
        }
    }
    cc.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            slug: "t",
            title: "a <title> & more".into(),
            x_desc: "allocations".into(),
            y_desc: "packets/s".into(),
            log_x: true,
            caption: String::new(),
            series,
        }
    }

    #[test]
    fn path_is_beside_the_report() {
        assert_eq!(
            path_for(Path::new("docs/BENCHMARKS.md"), "throughput"),
            PathBuf::from("docs/BENCHMARKS-throughput.svg")
        );
    }

    #[test]
    fn draws_measured_points_and_skips_the_rest() {
        let c = chart(vec![
            Series {
                label: "gateway TURN/TCP".into(),
                color: GATEWAY_TCP,
                line: true,
                points: vec![(1.0, 1000.0), (10.0, f64::NAN), (100.0, 250_000.0)],
            },
            Series {
                label: "coturn TURN/TCP".into(),
                color: COTURN_TCP,
                line: false,
                points: vec![(10.0, 5000.0)],
            },
            Series {
                label: "never measured".into(),
                color: COTURN_TLS,
                line: true,
                points: vec![(1.0, f64::NAN)],
            },
        ]);
        let dir = std::env::temp_dir().join(format!("plots-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("R.md");
        let (written, notes) = write_all(std::slice::from_ref(&c), &out);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].file, "R-t.svg");
        let svg = std::fs::read_to_string(dir.join("R-t.svg")).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("gateway TURN/TCP"));
        assert!(svg.contains("coturn TURN/TCP"));
        assert!(!svg.contains("never measured"));
        // The title is escaped, not raw markup.
        assert!(!svg.contains("<title> &"));
    }

    #[test]
    fn a_chart_without_points_is_not_drawn() {
        let c = chart(vec![Series {
            label: "x".into(),
            color: GATEWAY_TCP,
            line: true,
            points: vec![(0.0, 1.0), (1.0, f64::INFINITY)],
        }]);
        assert!(c.is_empty());
        let (written, notes) = write_all(&[c], Path::new("/nonexistent/R.md"));
        assert!(written.is_empty());
        assert_eq!(notes.len(), 1);
    }
}
