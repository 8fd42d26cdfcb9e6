//! The exec protocol end to end: `losscheck serve` round trips bit-exactly; the pure-Python
//! exact subject draws no finding; each broken subject (crash, signal, hang, garbage, wrong id,
//! wrong shape, a number not in the dtype, stdout chatter, no handshake) yields its fault
//! verdict on exactly the cases it breaks while every other case is judged; every zoo entry
//! served over exec is flagged with the same verdicts as in-process; the Python helper rounds
//! like the dtype layer.
//!
//! Python-dependent tests print a message and pass when `python3` is missing.

use losscheck::check::campaign::{self, Config};
use losscheck::check::exec::{self, ExecOptions, ExecSubject};
use losscheck::check::fuzz::{self, Settings};
use losscheck::check::gen;
use losscheck::check::subject::{Capabilities, Kernels, Subject};
use losscheck::core::{Dtype, ErrorKind};
use losscheck::zoo::{self, ZooSubject};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_losscheck")
}

fn adapters() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("adapters")
}

fn python() -> bool {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import fractions, json")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 is not available");
    }
    ok
}

fn start(cmd: &str, timeout_ms: u64) -> ExecSubject {
    let mut o = ExecOptions::new(cmd);
    o.timeout = Duration::from_millis(timeout_ms);
    ExecSubject::start(o).unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("losscheck-exec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn serve_round_trips_the_kernels_bit_exactly() {
    let s = start(&format!("{} serve --subject kernels", bin()), 10_000);
    let caps = s.capabilities().expect("capabilities");
    for l in ["mse", "huber", "bce_logits", "focal"] {
        let c = &caps.losses[l];
        assert_eq!(c.dtypes, Dtype::ALL.to_vec());
        assert!(c.grad);
        assert!(c.inputs.iter().any(|i| i == "mask"));
    }
    let mut compared = 0;
    for loss in [
        "mse",
        "mae",
        "huber",
        "quantile",
        "log_cosh",
        "bce",
        "bce_logits",
        "hinge",
        "focal",
    ] {
        for dtype in Dtype::ALL {
            for k in 0..25 {
                let case = gen::generate(loss, dtype, 3, k);
                let a = s.answer(&case).expect("no fault");
                let b = Kernels.eval(&case);
                match (a, b) {
                    (Ok(x), Ok(y)) => {
                        let same = |p: &losscheck::Tensor, q: &losscheck::Tensor| {
                            p.shape == q.shape
                                && (0..p.len()).all(|i| {
                                    let (u, v) = (p.get_f64(i), q.get_f64(i));
                                    (u.is_nan() && v.is_nan()) || u.to_bits() == v.to_bits()
                                })
                        };
                        assert!(
                            same(&x.value, &y.value),
                            "{loss} {dtype} case {k}: value differs"
                        );
                        for (g, t) in &y.grad {
                            assert!(
                                same(&x.grad[g], t),
                                "{loss} {dtype} case {k}: grad.{g} differs"
                            );
                        }
                        compared += 1;
                    }
                    (Err(x), Err(y)) => assert_eq!(x.kind, y.kind),
                    (x, y) => panic!("{loss} {dtype} case {k}: exec {x:?} vs in-process {y:?}"),
                }
            }
        }
    }
    assert!(compared > 600, "{compared}");
    assert_eq!(s.faults(), 0);
    // an invalid case is `invalid_input`
    let mut bad = gen::generate("mse", Dtype::F32, 1, 1);
    bad.inputs.remove("target");
    assert_eq!(
        s.answer(&bad).unwrap().unwrap_err().kind,
        ErrorKind::InvalidInput
    );
    // the subject side: a loss it does not declare is `unsupported`, garbage `invalid_input`,
    // the handshake its capabilities
    let caps = Capabilities::full("k", ["mse"]);
    let huber = gen::generate("huber", Dtype::F32, 1, 2)
        .to_json()
        .to_string();
    let r = exec::serve_one(&Kernels, &caps, &huber);
    assert_eq!(r["kind"], "unsupported", "{r}");
    assert_eq!(
        exec::serve_one(&Kernels, &caps, "{nope")["kind"],
        "invalid_input"
    );
    let h = exec::serve_one(&Kernels, &caps, r#"{"op":"hello","protocol":1}"#);
    assert_eq!(h["protocol"], 1);
    assert!(h["losses"]["mse"].is_object());
}

#[test]
fn the_exact_python_subject_draws_no_finding() {
    if !python() {
        return;
    }
    let cmd = format!(
        "python3 {}",
        adapters().join("examples/exact_mse.py").display()
    );
    // pure Python: a long batch (2^17 elements) takes seconds; a generous timeout
    let s = start(&cmd, 60_000);
    let settings = Settings {
        losses: vec![
            "mse".into(),
            "mae".into(),
            "huber".into(),
            "quantile".into(),
        ],
        cases: 80,
        seed: 5,
        ..Settings::default()
    };
    let r = fuzz::check(&s, &settings);
    assert_eq!(r.campaigns.len(), 12);
    for c in &r.campaigns {
        assert_eq!(
            c.stats.unsupported + c.stats.skipped + c.stats.oracle_errors,
            0
        );
    }
    assert_eq!(r.findings(), 0, "{}", r.terminal());
    // exactly correct: every value and gradient correctly rounded
    for c in &r.campaigns {
        assert_eq!(c.stats.value_bits.max, 0.0, "{}", fuzz::campaign_line(c));
        assert_eq!(c.stats.grad_bits.max, 0.0, "{}", fuzz::campaign_line(c));
    }
}

/// A broken subject: its fault verdict on exactly the requests it breaks (ids ≡ 3 mod
/// `every`), every other case judged with no finding, and the campaign complete.
fn broken(mode: &str, every: u64, cases: u64, verdict: &str, timeout_ms: u64) {
    let cmd = format!(
        "python3 {} {mode} {every}",
        adapters().join("examples/broken.py").display()
    );
    let s = start(&cmd, timeout_ms);
    let dir = tmpdir(mode);
    let settings = Settings {
        losses: vec!["mse".into()],
        dtypes: vec![Dtype::F32],
        cases,
        out: Some(dir.clone()),
        replay_subject: format!("--exec '{cmd}'"),
        // every shrink step of a crash restarts the subject, of a hang waits for the timeout
        shrink_iters: 5,
        ..Settings::default()
    };
    let r = fuzz::run(&s, &settings, &fuzz::Quiet).unwrap();
    let c = &r.campaigns[0];
    let hits = (0..cases).filter(|k| k % every == 3).count() as u64;
    assert_eq!(c.stats.cases, cases);
    assert_eq!(
        c.stats.unsupported + c.stats.skipped + c.stats.oracle_errors,
        0
    );
    assert_eq!(
        c.findings.get(verdict).copied(),
        Some(hits),
        "{mode}: {}",
        r.terminal()
    );
    assert_eq!(
        c.findings.len(),
        1,
        "{mode}: only the fault: {}",
        r.terminal()
    );
    // the findings carry the request
    let text = std::fs::read_to_string(dir.join("findings.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["verdict"], verdict);
        assert_eq!(l["case"]["id"].as_u64().unwrap() % every, 3, "{l}");
        assert!(l["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(c.distinct.iter().any(|d| d.verdict == verdict));
    assert!(
        s.restarts() >= hits,
        "{mode}: restarted {} times",
        s.restarts()
    );
}

#[test]
fn broken_subjects_yield_their_fault_and_a_complete_campaign() {
    if !python() {
        return;
    }
    broken("crash", 10, 80, "crash", 10_000);
    broken("segfault", 20, 80, "crash", 10_000);
    broken("garbage", 10, 60, "protocol", 10_000);
    broken("wrong_id", 10, 60, "protocol", 10_000);
    broken("wrong_shape", 10, 60, "protocol", 10_000);
    broken("not_dtype", 10, 60, "protocol", 10_000);
    broken("hang", 25, 60, "hang", 400);
    // the crash carries the subject's stderr
    let cmd = format!(
        "python3 {} crash 10",
        adapters().join("examples/broken.py").display()
    );
    let s = start(&cmd, 10_000);
    let case = gen::generate("mse", Dtype::F32, 1, 3);
    let f = s.answer(&case).unwrap_err();
    assert_eq!(f.verdict.name(), "crash");
    assert!(f.message.contains("status 3"), "{}", f.message);
    assert!(f.stderr.contains("crashing on purpose"), "{f:?}");
    // and the subject is restarted for the next request
    assert!(s.answer(&gen::generate("mse", Dtype::F32, 1, 4)).is_ok());
}

#[test]
fn chatter_on_stdout_cannot_corrupt_the_stream_and_no_handshake_is_a_setup_error() {
    if !python() {
        return;
    }
    let cmd = format!(
        "python3 {} chatter",
        adapters().join("examples/broken.py").display()
    );
    let s = start(&cmd, 10_000);
    let r = fuzz::check(
        &s,
        &Settings {
            losses: vec!["huber".into()],
            dtypes: vec![Dtype::Bf16],
            cases: 60,
            ..Settings::default()
        },
    );
    assert_eq!(r.findings(), 0, "{}", r.terminal());
    assert!(s.stderr_tail().unwrap().contains("chatter from print()"));
    let cmd = format!(
        "python3 {} no_hello",
        adapters().join("examples/broken.py").display()
    );
    let e = ExecSubject::start(ExecOptions::new(&cmd))
        .err()
        .expect("a set-up error");
    assert!(
        e.contains("handshake") && e.contains("refusing to start"),
        "{e}"
    );
    let e = ExecSubject::start(ExecOptions::new("exit 0"))
        .err()
        .expect("a set-up error");
    assert!(e.contains("handshake"), "{e}");
}

#[test]
fn every_zoo_entry_served_over_exec_is_flagged_like_in_process() {
    let settings = Settings::default();
    for entry in zoo::entries() {
        let inproc = ZooSubject(entry);
        let exec = start(
            &format!("{} serve --subject zoo:{}", bin(), entry.name),
            10_000,
        );
        for &dtype in entry.dtypes {
            let cfg = Config {
                max_bits: settings.max_bits.clone(),
                ..Config::new(entry.loss, dtype, fuzz::DEFAULT_CASES, 1)
            };
            // in-process, within the default budget: the entry's verdict, and its first cases
            let hits: Vec<u64> = {
                let found = std::sync::Mutex::new(Vec::new());
                campaign::run_with(&cfg, &inproc, &|o| {
                    if o.report
                        .as_ref()
                        .is_some_and(|r| entry.verdict.in_report(r))
                    {
                        found.lock().unwrap().push(o.index);
                    }
                });
                let mut v = found.into_inner().unwrap();
                v.sort();
                v.truncate(4);
                v
            };
            assert!(
                !hits.is_empty(),
                "zoo:{} {dtype}: no `{}` in-process",
                entry.name,
                entry.verdict
            );
            // over exec: the same cases draw the same verdict
            for &k in &hits {
                let o = campaign::run_one(&cfg, &exec, k);
                let r = o.report.expect("judged");
                assert!(
                    entry.verdict.in_report(&r),
                    "zoo:{} {dtype} case {k} over exec: {:?}, in-process {}",
                    entry.name,
                    r.verdicts,
                    entry.verdict
                );
            }
            // and a short campaign gives identical verdict counts both ways
            let short = Config {
                cases: 150,
                ..cfg.clone()
            };
            let a = campaign::run(&short, &inproc, &|| {});
            let b = campaign::run(&short, &exec, &|| {});
            assert_eq!(a.verdicts, b.verdicts, "zoo:{} {dtype}", entry.name);
            assert_eq!(a.facts, b.facts, "zoo:{} {dtype}", entry.name);
        }
        assert_eq!(exec.faults(), 0, "zoo:{}", entry.name);
    }
}

#[test]
fn the_python_helper_rounds_like_the_dtype_layer() {
    if !python() {
        return;
    }
    // values around every kind of edge: midpoints, near-midpoints, subnormals, overflow
    let mut xs: Vec<f64> = Vec::new();
    let mut rng = losscheck::core::rng::SplitMix64::new(11);
    for d in Dtype::ALL {
        for _ in 0..300 {
            let a = d.from_ordinal(rng.below(d.ordinal(d.max()).unwrap() as u64) as i64);
            let b = d.next_up(a);
            if b.is_finite() {
                let mid = a + (b - a) / 2.0;
                xs.extend([
                    mid,
                    f64::from_bits(mid.to_bits() + 1),
                    f64::from_bits(mid.to_bits() - 1),
                ]);
            }
            xs.push(a * (1.0 + rng.signed_unit() * 1e-3));
        }
        let m = d.max();
        xs.extend([
            m + d.ulp_at(m) / 2.0,
            m + d.ulp_at(m) / 4.0,
            d.min_subnormal() / 2.0,
            d.min_subnormal() * 0.75,
        ]);
    }
    let input: String = xs.iter().map(|x| format!("{x:e}\n")).collect();
    let script = format!(
        "import sys; sys.dont_write_bytecode = True; sys.path.insert(0, {:?})\nfrom losscheck_adapter import round_to\n\
         for l in sys.stdin:\n    x = float(l)\n    print(repr(round_to(x, 'f32')), repr(round_to(x, 'f16')), repr(round_to(x, 'bf16')))\n",
        adapters().display().to_string()
    );
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut n = 0;
    for (x, line) in xs.iter().zip(text.lines()) {
        let got: Vec<f64> = line
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        for (d, g) in [Dtype::F32, Dtype::F16, Dtype::Bf16].iter().zip(&got) {
            assert_eq!(
                d.round(*x).to_bits(),
                g.to_bits(),
                "round_to({x:e}, {d}) = {g:e}, expected {:e}",
                d.round(*x)
            );
            n += 1;
        }
    }
    assert_eq!(n, 3 * xs.len());
}

/// The interpreter for the peer adapters: `$LOSSCHECK_PYTHON` (e.g. a venv's python), else
/// `python3`; `None` (with a message) when it cannot import `modules`.
fn peer_python(modules: &str) -> Option<String> {
    let py = std::env::var("LOSSCHECK_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .arg("-c")
        .arg(format!("import {modules}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `{py}` cannot import {modules} (set LOSSCHECK_PYTHON to an interpreter that can)");
        return None;
    }
    Some(py)
}

#[test]
fn the_jax_adapter_runs_when_jax_is_importable() {
    let Some(py) = peer_python("jax, optax") else {
        return;
    };
    let cmd = format!("{py} {}", adapters().join("jax_adapter.py").display());
    let s = start(&cmd, 60_000);
    let caps = s.capabilities().unwrap();
    for l in [
        "mse",
        "huber",
        "log_cosh",
        "bce_logits",
        "hinge",
        "focal",
        "cross_entropy",
        "kl_div",
    ] {
        assert!(caps.losses.contains_key(l), "{l} not declared");
    }
    for l in ["mae", "bce", "quantile"] {
        assert!(!caps.losses.contains_key(l), "{l}: optax has none");
    }
    let r = fuzz::check(
        &s,
        &Settings {
            losses: vec!["bce_logits".into()],
            dtypes: vec![Dtype::F32],
            cases: 200,
            shrink_iters: 40,
            ..Settings::default()
        },
    );
    let c = &r.campaigns[0];
    for fault in ["crash", "hang", "protocol"] {
        assert!(!c.findings.contains_key(fault), "{fault}: {}", r.terminal());
    }
    // optax's −t·log σ(z) − (1 − t)·log σ(−z) is 0·inf = NaN at an infinite logit
    assert!(c.findings.contains_key("spurious_nan"), "{}", r.terminal());
}

#[test]
fn the_torch_adapter_runs_when_torch_is_importable() {
    let Some(py) = peer_python("torch") else {
        return;
    };
    let cmd = format!(
        "{py} {} --device cpu",
        adapters().join("torch_adapter.py").display()
    );
    let s = start(&cmd, 60_000);
    let caps = s.capabilities().unwrap();
    for l in [
        "mse",
        "mae",
        "huber",
        "bce",
        "bce_logits",
        "cross_entropy",
        "nll",
        "kl_div",
    ] {
        assert!(caps.losses.contains_key(l), "{l} not declared");
    }
    let r = fuzz::check(
        &s,
        &Settings {
            losses: vec!["mse".into(), "bce_logits".into()],
            dtypes: vec![Dtype::F32],
            cases: 300,
            shrink_iters: 40,
            ..Settings::default()
        },
    );
    for c in &r.campaigns {
        for fault in ["crash", "hang", "protocol"] {
            assert!(!c.findings.contains_key(fault), "{fault}: {}", r.terminal());
        }
    }
    // torch's mean of nothing is NaN (DESIGN.md: 0)
    assert!(
        r.campaigns[0].findings.contains_key("policy"),
        "{}",
        r.terminal()
    );
}

/// `adapters/expected.toml`'s entry for a peer: the pinned version prefix, the cases, and the
/// (loss, dtype, verdict) findings asserted for that version.
fn expected_findings(peer: &str) -> (String, u64, Vec<(String, Dtype, String)>) {
    let text = std::fs::read_to_string(adapters().join("expected.toml")).unwrap();
    let doc: toml::Table = text.parse().expect("adapters/expected.toml parses");
    let t = doc[peer].as_table().expect("a table per peer");
    let version = t["version"].as_str().unwrap().to_string();
    let cases = t["cases"].as_integer().unwrap() as u64;
    let findings = t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let g = |k: &str| f[k].as_str().unwrap().to_string();
            (g("loss"), g("dtype").parse().unwrap(), g("verdict"))
        })
        .collect();
    (version, cases, findings)
}

/// Against the pinned PyTorch version, the fuzzer finds what `adapters/expected.toml` lists
/// (issue 5's bar); another version is reported, not asserted.
#[test]
fn the_fuzzer_finds_the_expected_pytorch_failures() {
    let Some(py) = peer_python("torch") else {
        return;
    };
    let version = Command::new(&py)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let (pinned, cases, expected) = expected_findings("torch");
    let cmd = format!(
        "{py} {} --device cpu",
        adapters().join("torch_adapter.py").display()
    );
    let s = start(&cmd, 60_000);
    let mut missing = Vec::new();
    let mut seen = Vec::new();
    for (loss, dtype, verdict) in &expected {
        let r = fuzz::check(
            &s,
            &Settings {
                losses: vec![loss.clone()],
                dtypes: vec![*dtype],
                cases,
                shrink_iters: 40,
                ..Settings::default()
            },
        );
        let c = &r.campaigns[0];
        seen.push(format!("{loss} {dtype}: {:?}", c.findings));
        if !c.findings.contains_key(verdict.as_str()) {
            missing.push(format!("{loss} {dtype} {verdict}"));
        }
    }
    if !version.starts_with(&pinned) {
        eprintln!(
            "torch {version} is not the pinned {pinned}*: findings reported, not asserted:\n{}",
            seen.join("\n")
        );
        return;
    }
    assert!(
        missing.is_empty(),
        "torch {version}: expected findings not found: {missing:?}\nseen:\n{}",
        seen.join("\n")
    );
}
