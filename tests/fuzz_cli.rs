//! `losscheck fuzz` from the command line: exit codes (0 nothing found, 1 findings, 2 usage or
//! set-up errors), findings.jsonl (one JSON object a line with loss, dtype, verdict, bits, the
//! case and a replay command that works), summary.md, the baseline, --max-bits, and
//! `losscheck eval --exec` replaying a finding.

use losscheck::core::Case;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_losscheck"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o: Output = bin().args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("losscheck-fuzzcli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("findings.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn nothing_found_exits_0_with_a_summary() {
    let d = tmpdir("clean");
    let (code, out, err) = run(&[
        "fuzz",
        "--subject",
        "kernels",
        "--loss",
        "mse",
        "--loss",
        "hinge",
        "--dtype",
        "f16",
        "--cases",
        "150",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("mse") && out.contains("hinge") && out.contains("0 findings"),
        "{out}"
    );
    assert!(lines(&d).is_empty());
    let md = std::fs::read_to_string(d.join("summary.md")).unwrap();
    assert!(
        md.contains("| mse | f16 | 150 |") && md.contains("| hinge | f16 | 150 |"),
        "{md}"
    );
}

#[test]
fn findings_exit_1_and_each_line_replays() {
    let d = tmpdir("zoo");
    let (code, out, err) = run(&[
        "fuzz",
        "--subject",
        "zoo:log_cosh_textbook",
        "--dtype",
        "f32",
        "--cases",
        "200",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("spurious_inf") && out.contains("replay: losscheck eval --case"),
        "{out}"
    );
    let ls = lines(&d);
    assert!(!ls.is_empty());
    for l in &ls {
        for k in ["loss", "dtype", "verdict", "bits", "case", "replay"] {
            assert!(!l[k].is_null(), "field {k} missing: {l}");
        }
        assert_eq!(l["loss"], "log_cosh");
        assert_eq!(l["dtype"], "f32");
        assert!(l["bits"].is_number());
        let (case, _) = Case::from_json(&l["case"]).expect("the case is an eval request");
        assert_eq!(case.loss, "log_cosh");
        assert!(Path::new(l["case_file"].as_str().unwrap()).exists());
    }
    // one minimal line per distinct failure, and its replay draws the verdict again
    let minimal: Vec<&Value> = ls.iter().filter(|l| l["minimal"] == true).collect();
    assert!(minimal.iter().any(|l| l["verdict"] == "spurious_inf"));
    for m in minimal.iter().take(3) {
        let replay = m["replay"].as_str().unwrap();
        let words: Vec<&str> = replay.split_whitespace().collect();
        assert_eq!(&words[..3], &["losscheck", "eval", "--case"], "{replay}");
        let o = Command::new("sh")
            .arg("-c")
            .arg(replay.replacen("losscheck", env!("CARGO_BIN_EXE_losscheck"), 1) + " --compact")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{replay}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let verdicts = v["judgement"]["verdicts"].as_array().unwrap();
        assert!(verdicts.iter().any(|x| x == &m["verdict"]), "{replay}: {v}");
        assert_eq!(v["subject"], "zoo:log_cosh_textbook");
    }
    let md = std::fs::read_to_string(d.join("summary.md")).unwrap();
    assert!(
        md.contains("## Distinct failures") && md.contains("replay: `losscheck eval --case"),
        "{md}"
    );
}

#[test]
fn a_baseline_accepts_findings() {
    let d = tmpdir("base1");
    let args = |dir: &Path, extra: &[&str]| {
        let mut v: Vec<String> = [
            "fuzz",
            "--subject",
            "zoo:huber_mean_over_count",
            "--dtype",
            "bf16",
            "--cases",
            "150",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(dir.display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a = args(&d, &[]);
    let (code, out, _) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{out}");
    // the previous run's findings.jsonl as the baseline
    let base = d.join("findings.jsonl");
    let copy = std::env::temp_dir().join(format!(
        "losscheck-fuzzcli-{}-baseline.jsonl",
        std::process::id()
    ));
    std::fs::copy(&base, &copy).unwrap();
    let d2 = tmpdir("base2");
    let a = args(&d2, &["--baseline", copy.to_str().unwrap()]);
    let (code, out, _) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepted by the baseline"), "{out}");
    assert!(lines(&d2).iter().all(|l| l["accepted"] == true));
    // `loss dtype verdict` lines, with a wildcard
    let txt = std::env::temp_dir().join(format!(
        "losscheck-fuzzcli-{}-baseline.txt",
        std::process::id()
    ));
    std::fs::write(&txt, "# accepted for now\nhuber bf16 *\n").unwrap();
    let d3 = tmpdir("base3");
    let a = args(&d3, &["--baseline", txt.to_str().unwrap()]);
    let (code, out, _) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}");
    // a baseline for something else accepts nothing
    std::fs::write(&txt, "huber f32 accuracy\n").unwrap();
    let a = args(&d3, &["--baseline", txt.to_str().unwrap()]);
    assert_eq!(run(&a.iter().map(String::as_str).collect::<Vec<_>>()).0, 1);
}

#[test]
fn max_bits_raises_the_accuracy_threshold() {
    let d = tmpdir("maxbits");
    let base = [
        "fuzz",
        "--subject",
        "zoo:mse_accumulate_in_dtype",
        "--loss",
        "mse",
        "--dtype",
        "f16",
        "--cases",
        "300",
        "--out",
        d.to_str().unwrap(),
    ];
    let (code, out, _) = run(&base);
    assert_eq!(code, 1);
    assert!(out.contains("accuracy:"), "{out}");
    let mut a = base.to_vec();
    a.extend(["--max-bits", "f16=16", "--max-bits", "f32=32"]);
    let (_, out, _) = run(&a);
    let line = out.lines().find(|l| l.starts_with("mse")).unwrap();
    assert!(!line.contains("accuracy"), "{line}");
}

#[test]
fn usage_and_setup_errors_exit_2() {
    let d = tmpdir("usage");
    let o = d.to_str().unwrap();
    for args in [
        vec!["fuzz", "--out", o],                                     // no subject
        vec!["fuzz", "--exec", "exit 3", "--out", o], // does not answer the handshake
        vec!["fuzz", "--exec", "echo not-json; sleep 5", "--out", o], // garbage handshake
        vec!["fuzz", "--subject", "zoo:nope", "--out", o], // unknown subject
        vec!["fuzz", "--subject", "kernels", "--loss", "nope", "--out", o], // unknown loss
        vec![
            "fuzz",
            "--subject",
            "kernels",
            "--max-bits",
            "f16",
            "--out",
            o,
        ], // bad --max-bits
        vec!["fuzz", "--subject", "kernels", "--exec", "x", "--out", o], // both
        vec![
            "fuzz",
            "--subject",
            "zoo:log_cosh_textbook",
            "--loss",
            "mse",
            "--out",
            o,
        ], // nothing to run
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.trim().is_empty(), "{args:?}: an explanation on stderr");
    }
}

#[test]
fn fuzz_over_exec_and_help() {
    let (code, out, _) = run(&["fuzz", "--help"]);
    assert_eq!(code, 0);
    for opt in [
        "--exec",
        "--subject",
        "--loss",
        "--dtype",
        "--cases",
        "--seed",
        "--timeout-ms",
        "--out",
        "--max-bits",
        "--strict-policy",
        "--baseline",
    ] {
        assert!(out.contains(opt), "{opt} missing from --help");
    }
    let d = tmpdir("exec");
    let cmd = format!(
        "{} serve --subject zoo:mae_mask_by_multiply",
        env!("CARGO_BIN_EXE_losscheck")
    );
    let (code, out, err) = run(&[
        "fuzz",
        "--exec",
        &cmd,
        "--dtype",
        "f16",
        "--cases",
        "150",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("spurious_nan"), "{out}");
    let l = &lines(&d)[0];
    assert!(l["replay"].as_str().unwrap().contains("--exec"), "{l}");
}

#[test]
fn an_alternative_reading_is_a_fact_exit_0_and_a_finding_under_strict_policy() {
    let subject = "zoo:cross_entropy_weighted_mean_over_rows";
    let d = tmpdir("fact");
    let args = |strict: bool| {
        let mut a = vec![
            "fuzz",
            "--subject",
            subject,
            "--dtype",
            "f32",
            "--cases",
            "150",
            "--out",
            d.to_str().unwrap(),
        ];
        if strict {
            a.push("--strict-policy");
        }
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let a = args(false);
    let (code, out, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("weighted_mean_over_n"), "{out}");
    assert!(!out.contains("accuracy:"), "{out}");
    assert!(lines(&d).is_empty());
    let a = args(true);
    let (code, out, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{out}{err}");
    let l = lines(&d);
    assert!(!l.is_empty());
    for v in &l {
        assert_eq!(v["verdict"], "weighted_mean_over_n", "{v}");
    }
}
