//! Exec-protocol throughput: eval round trips per second through `ExecSubject` (request
//! encoding, a pipe to a child process, the Python helper's decode / encode, response decoding
//! and checking) with the trivial Python subject (`adapters/examples/trivial.py`) on small
//! generated cases (N ≤ 16), with 1 and 2 child processes; and the same with `losscheck serve`
//! as the subject. Run: `cargo bench --bench exec` (needs python3; skipped with a message
//! otherwise).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use losscheck::check::exec::{ExecOptions, ExecSubject};
use losscheck::check::gen;
use losscheck::check::subject::Subject;
use losscheck::core::{Case, Dtype};
use rayon::prelude::*;
use std::hint::black_box;

/// 256 small cases (every input at most 16 elements) of the elementwise losses.
fn small_cases() -> Vec<Case> {
    let mut v = Vec::new();
    'outer: for k in 0..100 {
        for loss in ["mse", "huber", "bce_logits", "focal"] {
            for d in Dtype::ALL {
                let c = gen::generate(loss, d, 9, k);
                if c.inputs.values().all(|t| t.len() <= 16) {
                    v.push(c);
                    if v.len() == 256 {
                        break 'outer;
                    }
                }
            }
        }
    }
    v
}

fn roundtrips(c: &mut Criterion) {
    let cases = small_cases();
    let trivial = format!(
        "python3 {}/adapters/examples/trivial.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let python_ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    let serve = format!(
        "{}/release/losscheck serve --subject kernels",
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())
    );
    let mut g = c.benchmark_group("exec_roundtrip");
    g.sample_size(10);
    g.throughput(Throughput::Elements(cases.len() as u64));
    for (label, cmd) in [
        ("python_trivial", trivial.as_str()),
        ("losscheck_serve", serve.as_str()),
    ] {
        if label == "python_trivial" && !python_ok {
            eprintln!("skipped {label}: python3 is not available");
            continue;
        }
        for workers in [1usize, 2] {
            let mut o = ExecOptions::new(cmd);
            o.workers = workers;
            let s = match ExecSubject::start(o) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("skipped {label}: {e}");
                    continue;
                }
            };
            g.bench_with_input(
                BenchmarkId::new(label, format!("{workers}_workers")),
                &cases,
                |b, cases| {
                    b.iter(|| {
                        if workers == 1 {
                            for c in cases {
                                let _ = black_box(s.answer(c).expect("no fault"));
                            }
                        } else {
                            cases.par_iter().for_each(|c| {
                                let _ = black_box(s.answer(c).expect("no fault"));
                            });
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, roundtrips);
criterion_main!(benches);
