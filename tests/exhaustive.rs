//! The exhaustive certificates (`check::exhaustive`): the shards partition the pattern space, the
//! chunked evaluation agrees with one-element cases, a broken subject is caught and counted
//! exactly, and a shard of a committed certificate reproduces its block.

use losscheck::check::exhaustive::{self, Config, Shard};
use losscheck::check::subject::{FnSubject, Kernels, Subject};
use losscheck::core::{catalogue, Case, Dtype, Response};
use losscheck::zoo::{self, ZooSubject};
use std::path::Path;

#[test]
fn shards_cover_every_pattern_exactly_once() {
    for dtype in [Dtype::F16, Dtype::Bf16] {
        for n in [1u64, 3, 7, 16, 1000] {
            let mut seen = vec![0u8; 1 << 16];
            for k in 0..n {
                for p in (Shard { index: k, count: n }).range(dtype) {
                    seen[p as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{dtype} {n} shards");
        }
    }
    // f32: contiguous ranges from 0 to 2^32, by arithmetic
    for n in [1u64, 7, 4096, 65_537] {
        let mut next = 0u64;
        for k in 0..n {
            let r = (Shard { index: k, count: n }).range(Dtype::F32);
            assert_eq!(r.start, next, "f32 {k}/{n}");
            assert!(r.end > r.start);
            next = r.end;
        }
        assert_eq!(next, 1u64 << 32);
    }
    assert_eq!(
        Shard::parse("3/16"),
        Ok(Shard {
            index: 3,
            count: 16
        })
    );
    assert!(Shard::parse("16/16").is_err());
    assert!(Shard::parse("0/0").is_err());
}

#[test]
fn only_elementwise_losses_and_f32_only_by_shard() {
    let e = Config::new("cross_entropy", Dtype::F16, None).unwrap_err();
    assert!(e.contains("not an elementwise loss"), "{e}");
    let e = Config::new("mse", Dtype::F32, None).unwrap_err();
    assert!(e.contains("--shard"), "{e}");
    assert!(Config::new(
        "mse",
        Dtype::F32,
        Some(Shard {
            index: 0,
            count: 4096
        })
    )
    .is_ok());
    // the 13 elementwise losses of the catalogue
    let want = [
        "mse",
        "mae",
        "huber",
        "quantile",
        "log_cosh",
        "bce",
        "bce_logits",
        "hinge",
        "focal",
        "gaussian_nll",
        "margin_ranking",
        "pairwise_logistic",
        "dpo",
    ];
    let mut got = exhaustive::elementwise_losses();
    got.sort();
    let mut w = want.to_vec();
    w.sort();
    assert_eq!(got, w);
}

#[test]
fn every_listed_combination_is_a_valid_case_with_the_anchors() {
    for loss in exhaustive::elementwise_losses() {
        for dtype in [Dtype::F16, Dtype::Bf16] {
            let combos = exhaustive::combinations(loss, dtype).unwrap();
            assert!(!combos.is_empty());
            for c in &combos {
                let case = exhaustive::build_case(loss, dtype, c, &[0.5, 0.25]);
                catalogue::validate(&case).unwrap_or_else(|e| panic!("{loss} {}: {e}", c.label()));
            }
            // 0, 1 and ½ of the first other input are there, with their ulp neighbours
            let spec = catalogue::spec(loss).unwrap();
            let primary = exhaustive::primary_input(spec);
            if let Some(other) = spec
                .required_inputs()
                .find(|i| i.name != primary && !i.kind.is_integer())
            {
                let has = |x: f64| {
                    combos.iter().any(|c| {
                        c.params.is_empty()
                            && matches!(c.inputs.get(other.name), Some(exhaustive::Scalar::F(v)) if v.to_bits() == x.to_bits())
                    })
                };
                for a in [0.0, 1.0, 0.5] {
                    assert!(has(a), "{loss} {dtype}: {} = {a}", other.name);
                }
                assert!(has(dtype.next_down(1.0)), "{loss} {dtype}: 1 − ulp");
                assert!(has(dtype.next_up(0.0)), "{loss} {dtype}: min subnormal");
            }
        }
    }
}

/// The oracle's element-by-element precision driver gives exactly the one-case driver's answer,
/// and the kernels answer a chunk as they answer its elements alone.
#[test]
fn chunked_oracle_and_kernels_agree_with_one_element_cases() {
    let dtype = Dtype::Bf16;
    // every 97th pattern: NaN, ±inf, subnormals, huge values, and hard elements included
    let xs: Vec<f64> = (0..=65535u32)
        .step_by(97)
        .chain([0x7f80, 0xff80, 0x7fc0, 0x0001, 0x8001])
        .map(|p| dtype.from_bits(p))
        .collect();
    for loss in ["focal", "log_cosh", "mae", "pairwise_logistic"] {
        let combos = exhaustive::combinations(loss, dtype).unwrap();
        for c in combos.iter().take(4) {
            let case = exhaustive::build_case(loss, dtype, c, &xs);
            let fast = losscheck::oracles::evaluate_elementwise(&case).unwrap();
            let whole = losscheck::oracles::evaluate(&case).unwrap();
            let k = Kernels.eval(&case).unwrap();
            for (i, &x) in xs.iter().enumerate() {
                let one = exhaustive::build_case(loss, dtype, c, &[x]);
                let o1 = losscheck::oracles::evaluate(&one).unwrap();
                let same = |a: &losscheck::oracles::Exact, b: &losscheck::oracles::Exact| {
                    a.rounded.to_bits() == b.rounded.to_bits() && a.hard == b.hard
                };
                assert!(same(&fast.value[i], &o1.value[0]), "{loss} {x}: value");
                assert!(
                    same(&whole.value[i], &o1.value[0]),
                    "{loss} {x}: value (whole)"
                );
                for (name, g) in &o1.grads {
                    assert!(same(&fast.grads[name][i], &g[0]), "{loss} {x}: grad {name}");
                }
                let kinks_fast = fast
                    .kinks
                    .iter()
                    .filter(|g| g.members[0].index == i)
                    .count();
                assert_eq!(kinks_fast, o1.kinks.len(), "{loss} {x}: kinks");
                let k1 = Kernels.eval(&one).unwrap();
                assert_eq!(
                    k.value.get_f64(i).to_bits(),
                    k1.value.get_f64(0).to_bits(),
                    "{loss} {x}: kernel value in a chunk"
                );
                for (name, g) in &k1.grad {
                    assert_eq!(
                        k.grad[name].get_f64(i).to_bits(),
                        g.get_f64(0).to_bits(),
                        "{loss} {x}: kernel grad {name}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_zoo_entry_is_caught_by_the_exhaustive_check() {
    // log cosh as log(cosh r): cosh overflows f32 for |r| > 89 (the kernels do not)
    let entry = zoo::entry("log_cosh_textbook").unwrap();
    let zoo::Flag::Verdict(verdict) = entry.verdict else {
        panic!("log_cosh_textbook is flagged by a verdict, not a fact")
    };
    // bf16 patterns 0x4000..0x5000: 2 ≤ x < 2^33
    let cfg = Config::new(
        "log_cosh",
        Dtype::Bf16,
        Some(Shard {
            index: 4,
            count: 16,
        }),
    )
    .unwrap();
    let cert = exhaustive::run(&cfg, &ZooSubject(entry), &|_| {}).unwrap();
    let n = cert
        .total
        .verdicts
        .get(&verdict)
        .copied()
        .unwrap_or(0);
    assert!(n > 0, "{}: {:?}", verdict, cert.total.verdicts);
    assert!(!cert.all_correctly_rounded());
    assert!(!cert.summary_line().contains("correctly rounded on all"));
    let ex = &cert.total.examples[verdict.name()];
    assert!(!ex.is_empty());
    // the counterexample replays: its case, judged alone, draws the verdict
    let (case, _) = Case::from_json(&ex[0].case).unwrap();
    let o = losscheck::oracles::evaluate(&case).unwrap();
    let rep = losscheck::check::compare::judge(&case, &o, &ZooSubject(entry).eval(&case));
    assert!(rep.verdicts.contains(&verdict));
    // the built-in kernels on the same shard: no such verdict
    let ok = exhaustive::run(&cfg, &Kernels, &|_| {}).unwrap();
    assert_eq!(ok.total.verdicts.get(&verdict), None);
}

/// A subject that is the kernels except at chosen patterns, where the value is NaN or +inf: the
/// certificate counts exactly those, and keeps the first as its counterexamples.
#[test]
fn a_perturbed_subject_is_counted_exactly() {
    let dtype = Dtype::Bf16;
    let shard = Shard {
        index: 3,
        count: 16,
    }; // 0x3000..0x4000: 2^-31 ≤ x < 2, finite
    let nan_at = |p: u32| p % 97 == 0;
    let inf_at = |p: u32| p % 89 == 0 && !nan_at(p);
    let subject = FnSubject {
        name: "perturbed".into(),
        f: |case: &Case| -> Result<Response, losscheck::LossError> {
            let mut r = Kernels.eval(case)?;
            let xs = case.inputs["score"].f().unwrap().to_vec();
            let v = r.value.f_mut().unwrap();
            for (k, x) in xs.iter().enumerate() {
                let p = Dtype::Bf16.to_bits(*x);
                if nan_at(p) {
                    v[k] = f64::NAN;
                } else if inf_at(p) {
                    v[k] = f64::INFINITY;
                }
            }
            Ok(r)
        },
    };
    let cfg = Config::new("hinge", dtype, Some(shard)).unwrap();
    let cert = exhaustive::run(&cfg, &subject, &|_| {}).unwrap();
    let k = cert.combos.len() as u64;
    let range = shard.range(dtype);
    assert_eq!((range.start, range.end), (0x3000, 0x4000));
    let nans = range.clone().filter(|&p| nan_at(p as u32)).count() as u64;
    let infs = range.clone().filter(|&p| inf_at(p as u32)).count() as u64;
    assert_eq!(cert.total.checked, 0x1000 * k);
    let count = |v: losscheck::check::compare::Verdict| cert.total.verdicts.get(&v).copied();
    use losscheck::check::compare::Verdict;
    assert_eq!(count(Verdict::SpuriousNan), Some(nans * k));
    assert_eq!(count(Verdict::SpuriousInf), Some(infs * k));
    assert!(cert.total.value_correctly_rounded <= cert.total.checked - (nans + infs) * k);
    assert!(cert.total.value_max_ulps.is_infinite());
    // the first counterexample: combination 0, the first multiple of 97 in the range
    let first = &cert.total.examples["spurious_nan"][0];
    assert_eq!(
        (first.combo, first.pattern),
        (0, 0x3000u64.div_ceil(97) * 97)
    );
    // blocks of a shard run: one, equal to the total
    assert_eq!(cert.blocks.len(), 1);
    assert_eq!(cert.blocks[0].1.checked, cert.total.checked);
}

/// `--shard 5/16` of a committed 16-bit certificate reproduces that certificate's block 5.
#[test]
fn a_shard_reproduces_the_committed_certificates_block() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/exhaustive");
    for (loss, dtype) in [("hinge", Dtype::Bf16), ("mae", Dtype::F16)] {
        let path = dir.join(format!("{loss}-{dtype}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate: docs/exhaustive.md)", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let shard = Shard {
            index: 5,
            count: 16,
        };
        let cert = exhaustive::run(
            &Config::new(loss, dtype, Some(shard)).unwrap(),
            &Kernels,
            &|_| {},
        )
        .unwrap();
        let block = &v["blocks"][5];
        let r = shard.range(dtype);
        assert_eq!(block["start"].as_u64(), Some(r.start));
        assert_eq!(block["end"].as_u64(), Some(r.end));
        let fresh = serde_json::to_value(cert.to_json()["total"].clone()).unwrap();
        for key in [
            "inputs_checked",
            "all_correctly_rounded",
            "elements_with_findings",
            "hard_cases",
            "nan_patterns",
        ] {
            assert_eq!(block[key], fresh[key], "{loss} {dtype} block 5: {key}");
        }
        assert_eq!(block["value"], fresh["value"], "{loss} {dtype}: value");
        assert_eq!(block["grad"], fresh["grad"], "{loss} {dtype}: grad");
        assert_eq!(
            block["findings"], fresh["findings"],
            "{loss} {dtype}: findings"
        );
    }
}

/// The finding of the bce certificates (before the fix): at prob = −0 the gradient −t/p was
/// +inf. −0 is the probability 0, where the exact gradient is the limit p → 0⁺ of
/// −t/p + (1 − t)/(1 − p): −inf for t > 0, and 1 for t = 0 (DESIGN.md).
#[test]
fn bce_at_minus_zero_is_bce_at_zero() {
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        for p0 in [-0.0, 0.0] {
            let combo = exhaustive::Combo {
                inputs: Default::default(),
                params: Default::default(),
            };
            let mut case = exhaustive::build_case("bce", dtype, &combo, &[p0, p0, p0]);
            case.inputs.insert(
                "target".into(),
                losscheck::Tensor::float(dtype, vec![3], vec![1.0, 0.5, 0.0]),
            );
            let r = Kernels.eval(&case).unwrap();
            let g: Vec<f64> = (0..3).map(|k| r.grad["prob"].get_f64(k)).collect();
            assert_eq!(
                g,
                [f64::NEG_INFINITY, f64::NEG_INFINITY, 1.0],
                "{dtype} p = {p0:?}"
            );
            let v: Vec<f64> = (0..3).map(|k| r.value.get_f64(k)).collect();
            assert_eq!(v, [f64::INFINITY, f64::INFINITY, 0.0], "{dtype} p = {p0:?}");
        }
    }
}

/// The report's section lists every committed certificate once, with its findings.
#[test]
fn report_section_has_a_row_per_committed_certificate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/exhaustive");
    let md = exhaustive::report_section(&dir);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(files.len(), 26, "13 losses × f16, bf16");
    for f in files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
        let row = format!(
            "| {} | {} | all |",
            v["loss"].as_str().unwrap(),
            v["dtype"].as_str().unwrap()
        );
        let line = md
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("no row {row} in\n{md}"));
        let no_findings = v["total"]["findings"].as_object().unwrap().is_empty();
        assert_eq!(line.ends_with("| none |"), no_findings, "{line}");
        // the sentence only where it is true
        let everywhere = v["correctly_rounded_everywhere"].as_bool().unwrap();
        let s = v["summary"].as_str().unwrap();
        assert_eq!(s.contains("correctly rounded on all"), everywhere, "{s}");
        let t = &v["total"];
        assert_eq!(
            everywhere,
            no_findings && t["all_correctly_rounded"] == t["inputs_checked"],
            "{s}"
        );
    }
    assert!(exhaustive::report_section(Path::new("/nonexistent")).is_empty());
}
