//! The `losscheck` command line: `list`, `eval`, `verify --index`, `--help` (`fuzz` and
//! `serve` have their own suites: `fuzz_cli`, `exec_protocol`); and `eval`'s
//! `oracle.rounded` against an independent exact computation (rug `Rational`) for the rational
//! regression losses.

use losscheck::check::gen;
use losscheck::core::{Case, Dtype, Reduction};
use rug::Rational;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_losscheck"))
}

fn eval(case_json: &str) -> (Value, i32) {
    let mut child = bin()
        .args(["eval", "--compact"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case_json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    (
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("eval printed no JSON ({e}): {text}")),
        out.status.code().unwrap_or(-1),
    )
}

fn num(v: &Value) -> f64 {
    losscheck::core::tensor::decode_f64(v).expect("a number")
}

/// Is `c` (a value of `d`) the correctly rounded value of the rational `x` (ties to even)?
fn is_rn(x: &Rational, c: f64, d: Dtype) -> bool {
    let dist =
        |y: f64| -> Option<Rational> { Rational::from_f64(y).map(|y| (x.clone() - y).abs()) };
    if c.is_infinite() {
        let m = d.max();
        let half = Rational::from_f64(m).unwrap() + Rational::from_f64(d.ulp_at(m)).unwrap() / 2u32;
        return if c > 0.0 { *x >= half } else { *x <= -half };
    }
    let here = dist(c).unwrap();
    for n in [d.next_up(c), d.next_down(c)] {
        let Some(there) = dist(n) else { continue }; // ±inf neighbour: farther than any finite
        if there < here {
            return false;
        }
        if there == here {
            // tie: the even significand wins
            let even = |v: f64| d.to_bits(v) & 1 == 0;
            if !even(c) {
                return false;
            }
        }
    }
    true
}

/// The exact value of a regression case with finite inputs, per DESIGN.md (mean = Σmwl/Σmw,
/// empty mean = 0), as a rational; `None` when some unmasked input is not finite.
fn exact_value(case: &Case) -> Option<Vec<Rational>> {
    let f = |n: &str| case.inputs.get(n).and_then(|t| t.f().map(|v| v.to_vec()));
    let (p, t) = (f("pred")?, f("target")?);
    let n = p.len();
    let w = f("weight").unwrap_or(vec![1.0; n]);
    let m: Vec<i64> = case
        .inputs
        .get("mask")
        .and_then(|t| t.i().map(|v| v.to_vec()))
        .unwrap_or(vec![1; n]);
    let q = |x: f64| Rational::from_f64(x);
    let delta = case.float_param("delta").and_then(q);
    let tau = case.float_param("tau").and_then(q);
    let mut terms = Vec::new();
    for i in 0..n {
        if m[i] == 0 || w[i] == 0.0 {
            terms.push(None);
            continue;
        }
        let r = q(p[i])? - q(t[i])?;
        let l = match case.loss.as_str() {
            "mse" => r.clone() * &r,
            "mae" => r.abs(),
            "huber" => {
                let d = delta.clone().unwrap();
                if r.clone().abs() <= d {
                    Rational::from((1, 2)) * r.clone() * &r
                } else {
                    d.clone() * (r.abs() - d / 2u32)
                }
            }
            "quantile" => {
                let tau = tau.clone().unwrap();
                let u = -r;
                let a = tau.clone() * &u;
                let b = (tau - 1u32) * u;
                if a > b {
                    a
                } else {
                    b
                }
            }
            _ => return None,
        };
        terms.push(Some(l * q(w[i])?));
    }
    Some(match case.reduction() {
        Reduction::None => terms.into_iter().map(|x| x.unwrap_or_default()).collect(),
        Reduction::Sum => vec![terms
            .into_iter()
            .flatten()
            .fold(Rational::new(), |a, b| a + b)],
        _ => {
            let den = (0..n)
                .filter(|&i| m[i] != 0 && w[i] != 0.0)
                .fold(Rational::new(), |a, i| {
                    a + Rational::from_f64(w[i]).unwrap()
                });
            let num = terms
                .into_iter()
                .flatten()
                .fold(Rational::new(), |a, b| a + b);
            vec![if den == 0 { Rational::new() } else { num / den }]
        }
    })
}

#[test]
fn eval_oracle_rounded_is_the_correctly_rounded_exact_value() {
    let mut checked = 0;
    for loss in ["mse", "mae", "huber", "quantile"] {
        for dtype in Dtype::ALL {
            for index in 0..12 {
                let case = gen::generate(loss, dtype, 7, index);
                let Some(exact) = exact_value(&case) else {
                    continue;
                };
                let (out, _) = eval(&case.to_json().to_string());
                let data = out["oracle"]["rounded"]["value"]["data"]
                    .as_array()
                    .unwrap_or_else(|| panic!("no oracle.rounded: {out}"));
                assert_eq!(data.len(), exact.len());
                for (x, c) in exact.iter().zip(data) {
                    let c = num(c);
                    assert!(
                        is_rn(x, c, case.out_dtype),
                        "{loss} {dtype}: oracle.rounded {c:e} is not RN({}) in {}; case {}",
                        x.to_f64(),
                        case.out_dtype,
                        case.to_json()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} components compared");
}

#[test]
fn eval_prints_enclosure_rounded_kernel_and_judgement() {
    let case = r#"{"loss":"mse","dtype":"f16","params":{"reduction":"mean"},
        "inputs":{"pred":{"shape":[2],"data":[1,2]},"target":{"shape":[2],"data":[0,0.1]}}}"#;
    let (out, code) = eval(case);
    assert_eq!(code, 0, "{out}");
    // 0.1 is not an f16 value: rounded, with a warning, and canonical_case shows the result
    assert!(out["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("target")));
    assert_eq!(
        num(&out["canonical_case"]["inputs"]["target"]["data"][1]),
        half::f16::from_f32(0.1).to_f64()
    );
    let enc = &out["oracle"]["enclosure"]["value"][0];
    let (lo, hi): (f64, f64) = (
        enc[0].as_str().unwrap().parse().unwrap(),
        enc[1].as_str().unwrap().parse().unwrap(),
    );
    assert!(lo <= hi);
    assert_eq!(
        out["oracle"]["rounded"]["value"]["shape"],
        serde_json::json!([])
    );
    assert!(out["kernel"]["value"]["data"].is_array());
    assert_eq!(out["judgement"]["value"]["verdict"], Value::Null);
    assert!(out["judgement"]["grad.pred"]["ulps"].is_number());
}

#[test]
fn eval_reports_invalid_input_from_both_sides() {
    let case = r#"{"loss":"huber","dtype":"f32","params":{"delta":-1},
        "inputs":{"pred":{"shape":[1],"data":[1]},"target":{"shape":[1],"data":[0]}}}"#;
    let (out, _) = eval(case);
    assert_eq!(out["oracle"]["kind"], "invalid_input", "{out}");
    assert!(out["oracle"]["error"].as_str().unwrap().contains("delta"));
    assert_eq!(out["kernel"]["kind"], "invalid_input");
    assert_eq!(out["judgement"]["kernel_refused"], true);
}

#[test]
fn eval_rejects_malformed_input_with_exit_2() {
    let mut child = bin()
        .arg("eval")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{not json").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[test]
fn list_json_holds_the_whole_catalogue() {
    let out = bin().args(["list", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 23);
    for id in ["mse", "cross_entropy", "info_nce", "dpo"] {
        assert!(ids.contains(&id));
    }
    let human = bin().arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("huber"));
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["list", "--help"],
        vec!["eval", "--help"],
        vec!["verify", "--help"],
        vec!["report", "--help"],
        vec!["fuzz", "--help"],
        vec!["serve", "--help"],
        vec!["exhaustive", "--help"],
        vec!["merge", "--help"],
    ] {
        let out = bin().args(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
}

#[test]
fn verify_index_replays_one_case_deterministically() {
    let run = || {
        bin()
            .args([
                "verify", "--loss", "mse", "--dtype", "bf16", "--seed", "3", "--index", "17",
            ])
            .output()
            .unwrap()
    };
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let v: Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(v["case"]["loss"], "mse");
    assert_eq!(v["verdicts"], serde_json::json!([]));
    // the replayed case is case 17 of the campaign
    assert_eq!(
        v["case"],
        gen::generate("mse", Dtype::Bf16, 3, 17).to_json()
    );
}

#[test]
fn verify_flags_a_zoo_entry_and_exits_1() {
    let out = bin()
        .args([
            "verify",
            "--subject",
            "zoo:mae_mask_by_multiply",
            "--loss",
            "mae",
            "--dtype",
            "f32",
            "--cases",
            "300",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("spurious_nan"), "{text}");
    assert!(
        text.contains("minimal case: {") && text.contains("losscheck verify --subject zoo:mae_mask_by_multiply --loss mae --dtype f32 --seed 1 --index"),
        "{text}"
    );
}

/// `losscheck eval` handles every catalogue loss: a generated case of each (the first few of
/// the default campaign, f32 and bf16) is evaluated by the oracle and the kernel, judged, and
/// draws no verdict; the enclosure covers every output the kernel returned.
#[test]
fn eval_handles_every_catalogue_loss() {
    for loss in losscheck::core::catalogue::ids() {
        if !gen::supported(loss) {
            panic!("{loss}: no generators");
        }
        for dtype in [Dtype::F32, Dtype::Bf16] {
            for index in 0..3 {
                let case = gen::generate(loss, dtype, 1, index);
                let (v, code) = eval(&case.to_json().to_string());
                assert_eq!(code, 0, "{loss} {dtype} case {index}: exit {code}: {v}");
                assert_eq!(
                    v["judgement"]["verdicts"],
                    serde_json::json!([]),
                    "{loss} {dtype} case {index}: {v}"
                );
                assert!(
                    v["oracle"]["enclosure"]["value"].is_array(),
                    "{loss} {dtype} case {index}: no enclosure: {v}"
                );
                assert!(
                    v["kernel"]["value"]["data"].is_array(),
                    "{loss} {dtype} case {index}: no kernel answer: {v}"
                );
            }
        }
    }
}

#[test]
fn report_with_an_exec_peer_puts_it_side_by_side_and_writes_its_own_tables() {
    let out = std::env::temp_dir().join(format!("losscheck-peer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let peer = format!(
        "exec:{} serve --subject zoo:mse_accumulate_in_dtype",
        env!("CARGO_BIN_EXE_losscheck")
    );
    let o = bin()
        .args(["report", "--loss", "mse", "--loss", "bce", "--dtype", "f16"])
        .args(["--cases", "80", "--zoo-cases", "60", "--sweep-points", "4", "--subject", &peer])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    let name = "exec:zoo:mse_accumulate_in_dtype";
    // its error-table row for mse f16, and its breakdown series (only mse: it declares nothing else)
    assert!(md.contains(&format!("| {name} | f16 | 60 |")), "{md}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let peers = j["peer_campaigns"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0]["loss"], "mse");
    // the zoo entry accumulates in f16: the peer is flagged
    assert!(peers[0]["verdicts"].as_object().is_some_and(|v| !v.is_empty()), "{}", peers[0]);
    let own = std::fs::read_to_string(out.join("peers/exec-zoo-mse_accumulate_in_dtype.md")).unwrap();
    assert!(own.contains("| mse | f16 | 60 |"), "{own}");
    // each replay line names the command, and replays the case with the same verdict
    let line = own.lines().find(|l| l.starts_with("- mse f16 case")).expect("a failure line");
    let replay = line.split('`').nth(1).unwrap();
    assert!(replay.contains("--subject 'exec:"), "{replay}");
    let index: String = replay.rsplit(' ').next().unwrap().to_string();
    let r = bin()
        .args(["verify", "--subject", &peer, "--loss", "mse", "--dtype", "f16", "--seed", "1", "--index", &index])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    let verdict = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(
        v["verdicts"].as_array().unwrap().iter().any(|x| x == verdict),
        "{line} → {v}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
