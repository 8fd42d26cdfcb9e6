//! The stability report: breakdown sweeps find the zoo's magnitude failures and not the
//! kernels', the plots are well-formed SVG with one polyline per series, the HTML is
//! self-contained, and report.json has exactly the fields docs/report-schema.md documents.

use losscheck::check::subject::{Kernels, Subject};
use losscheck::report::breakdown::{self, SweepConfig};
use losscheck::report::{self, plot, Options, Section};
use losscheck::zoo::{self, ZooSubject};
use losscheck::Dtype;
use serde_json::Value;
use std::sync::OnceLock;

fn cfg(points: usize) -> SweepConfig {
    SweepConfig {
        points,
        cases_per_point: 3,
        seed: 1,
    }
}

#[test]
fn sweep_finds_the_naive_softmax_threshold_in_f16_and_none_for_the_kernels() {
    let naive = ZooSubject(zoo::entry("cross_entropy_naive_softmax").unwrap());
    let subjects: Vec<(&dyn Subject, Vec<Dtype>)> =
        vec![(&Kernels, vec![Dtype::F16]), (&naive, vec![Dtype::F16])];
    let sw = breakdown::sweep("cross_entropy", &subjects, cfg(12), &|| {}).unwrap();
    assert_eq!(sw.series.len(), 2);
    let k = &sw.series[0];
    let z = &sw.series[1];
    assert_eq!(
        (k.subject.as_str(), z.subject.as_str()),
        ("kernels", "zoo:cross_entropy_naive_softmax")
    );
    assert!(k.points.iter().all(|p| p.cases == 3), "every point judged");
    assert_eq!(k.threshold(), None, "kernels break down: {:?}", k.points);
    // e^z overflows the f32 compute type above ln(f32::MAX) = 88.72, and e^(z_y − max) underflows
    // to 0 (log 0 = −inf) once logits differ by more than ~103: at scales of 2^5..2^6.5 the first
    // happens on the confident row or the second on a random one; at 2^4 neither can (the grid's
    // step is 28/11 = 2.5: points 4.0 and 6.4 bracket it).
    let t = z.threshold().expect("naive softmax breaks down in f16");
    let step = (14.0 - -14.0) / 11.0;
    assert!(t > 4.0 && t < 88.72f64.log2() + step, "threshold 2^{t}");
    // below the threshold it is accurate, at and beyond it NaN or inf (the full 16 bits)
    assert!(z
        .points
        .iter()
        .filter(|p| p.log2 < t)
        .all(|p| !p.broke && p.value_bits < 2.0));
    assert!(z
        .points
        .iter()
        .filter(|p| p.log2 >= t)
        .all(|p| p.value_bits == 16.0));
}

#[test]
fn every_catalogue_loss_with_a_kernel_has_a_sweep_whose_cases_the_oracle_accepts() {
    for l in losscheck::core::catalogue::ids().filter(|l| losscheck::kernels::implemented(l)) {
        let s = breakdown::spec_of(l).unwrap_or_else(|| panic!("no sweep for {l}"));
        for d in Dtype::ALL {
            for e in [
                breakdown::range(s.knob, d).0,
                0.5,
                breakdown::range(s.knob, d).1,
            ] {
                for k in 0..3 {
                    let c = breakdown::sweep_case(s, d, e, 1, k);
                    losscheck::oracles::evaluate(&c)
                        .unwrap_or_else(|err| panic!("{l} {d} 2^{e} case {k}: {err}"));
                }
            }
        }
    }
}

/// A small end-to-end report (two losses in f16), shared by the tests below.
fn small_report() -> &'static report::Report {
    static R: OnceLock<report::Report> = OnceLock::new();
    R.get_or_init(|| {
        let mut o = Options::quick(1);
        o.cases = 40;
        o.zoo_cases = 200;
        o.losses = vec!["mae".into(), "log_cosh".into()];
        o.dtypes = vec![Dtype::F16];
        o.sweep.points = 8;
        o.progress = false;
        let mut r = report::run(&o);
        r.sections
            .push(Section::new("Extra", "An extra section with `code`."));
        r
    })
}

#[test]
fn svg_is_well_formed_with_one_polyline_per_series_and_output() {
    let r = small_report();
    assert_eq!(r.sweeps.len(), 2);
    for sw in &r.sweeps {
        let svg = plot::svg(sw);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let lines: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .collect();
        // kernels and the zoo entry, value and gradient each
        assert_eq!(lines.len(), 2 * sw.series.len(), "{}", sw.loss);
        for s in &sw.series {
            for out in ["value", "grad"] {
                let name = format!("{} {} {out}", s.subject, s.dtype);
                let l = lines
                    .iter()
                    .find(|n| n.attribute("data-series") == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("no polyline {name}"));
                let n = l.attribute("points").unwrap().split_whitespace().count();
                assert_eq!(n, s.points.len(), "{name}");
            }
        }
        // the axis labels are text, not glyph outlines
        assert!(doc
            .descendants()
            .any(|n| n.has_tag_name("text") && n.text() == Some("bits of error")));
    }
}

#[test]
fn html_is_self_contained_and_carries_the_markdown_content() {
    let r = small_report();
    let html = r.html();
    let lower = html.to_lowercase();
    for bad in [
        "http://", "https://", "<script", "<link", "src=", "@import", "url(",
    ] {
        assert!(!lower.contains(bad), "report.html contains {bad:?}");
    }
    assert_eq!(html.matches("<svg").count(), r.sweeps.len());
    assert!(html.contains("<h2>Breakdown thresholds</h2>"));
    assert!(html.contains("<h2>Extra</h2>"));
    assert!(html.contains("zoo:log_cosh_textbook"));
    // every table row of the Markdown is a row of the HTML
    let md_rows = r
        .markdown()
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|-"))
        .count();
    assert_eq!(html.matches("<tr>").count(), md_rows);
}

#[test]
fn the_report_meets_its_bar_and_shows_a_counterexample_for_non_magnitude_entries() {
    let r = small_report();
    assert!(
        report::bar_violations(r).is_empty(),
        "{:?}",
        report::bar_violations(r)
    );
    let lc = r.sweeps.iter().find(|s| s.loss == "log_cosh").unwrap();
    let textbook = lc
        .series
        .iter()
        .find(|s| s.subject == "zoo:log_cosh_textbook")
        .unwrap();
    assert!(textbook.threshold().is_some());
    // mae_mask_by_multiply leaks a masked NaN: not a magnitude effect, shown by its case
    let c = r
        .counterexamples
        .iter()
        .find(|c| c.subject == "zoo:mae_mask_by_multiply")
        .expect("counterexample");
    // the poison sits in a masked or zero-weight position
    assert!(
        c.case.inputs.contains_key("mask") || c.case.inputs.contains_key("weight"),
        "{}",
        c.case.to_json()
    );
    assert!(!c.verdicts.is_empty());
    let md = r.markdown();
    assert!(md.contains("none within the dtype's range"));
    assert!(md.contains("`losscheck verify --subject zoo:mae_mask_by_multiply"));
}

/// The `| `field` | type | … |` rows of one `## heading` table of docs/report-schema.md.
fn documented(section: &str) -> Vec<(String, String)> {
    let doc = include_str!("../docs/report-schema.md");
    let start = doc.find(&format!("## {section}\n")).expect(section);
    doc[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            let f = c.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((f.to_string(), c[2].to_string()))
        })
        .collect()
}

fn check_fields(v: &Value, section: &str, exact: bool) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{section}: not an object"));
    let fields = documented(section);
    assert!(!fields.is_empty(), "{section}");
    for (f, ty) in &fields {
        let x = obj
            .get(f)
            .unwrap_or_else(|| panic!("{section}: missing {f}"));
        let ok = match ty.as_str() {
            "string" => x.is_string(),
            "number" => x.is_number(),
            "boolean" => x.is_boolean(),
            "object" => x.is_object(),
            "array" => x.is_array(),
            "number or null" => x.is_number() || x.is_null(),
            "object or null" => x.is_object() || x.is_null(),
            other => panic!("{section}: undocumented type {other}"),
        };
        assert!(ok, "{section}.{f} should be {ty}: {x}");
    }
    if exact {
        for k in obj.keys() {
            assert!(
                fields.iter().any(|(f, _)| f == k),
                "{section}: field {k} is not documented"
            );
        }
    }
}

#[test]
fn report_json_has_the_documented_fields() {
    let r = small_report();
    let v = r.to_json();
    check_fields(&v, "Top level", true);
    assert_eq!(v["schema"], report::SCHEMA);
    assert_eq!(report::SCHEMA, "losscheck-report/1");
    check_fields(&v["options"], "`options`", true);
    for c in v["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["zoo_campaigns"].as_array().unwrap())
    {
        check_fields(
            c,
            "Campaign objects (`campaigns[]`, `zoo_campaigns[]`, `peer_campaigns[]`)",
            true,
        );
    }
    assert!(!v["zoo_campaigns"].as_array().unwrap().is_empty());
    for s in v["sweeps"].as_array().unwrap() {
        check_fields(s, "Sweep objects (`sweeps[]`)", true);
    }
    for b in v["breakdown"].as_array().unwrap() {
        check_fields(b, "Breakdown rows (`breakdown[]`)", true);
    }
    for c in v["counterexamples"].as_array().unwrap() {
        check_fields(c, "Counterexamples (`counterexamples[]`)", true);
    }
    // written atomically: no temporary file left behind, every file parses
    let dir = std::env::temp_dir().join(format!("losscheck-report-test-{}", std::process::id()));
    let written = r.write(&dir).unwrap();
    assert_eq!(written.len(), 2 + 3);
    let back: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(back["schema"], "losscheck-report/1");
    assert!(std::fs::read_dir(dir.join("plots")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_report_probes_invalid_input_and_every_built_in_subject_rejects_it() {
    let r = small_report();
    let probed: u64 = r.kernels.iter().chain(&r.zoo).map(|s| s.invalid_probes).sum();
    let rejected: u64 = r.kernels.iter().chain(&r.zoo).map(|s| s.invalid_rejected).sum();
    assert!(probed > 0);
    // the kernels and the zoo entries all validate with catalogue::validate
    assert_eq!(rejected, probed);
    let md = r.markdown();
    let kernels_row = md
        .lines()
        .find(|l| l.starts_with("| kernels | ") && l.contains(" / "))
        .expect("the kernels' policy row");
    assert!(kernels_row.contains(&format!(
        "{} / {}",
        r.kernels.iter().map(|s| s.invalid_rejected).sum::<u64>(),
        r.kernels.iter().map(|s| s.invalid_probes).sum::<u64>()
    )));
}
