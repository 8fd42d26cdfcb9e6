//! The harness's own speed: oracle evaluations per second (MPFR enclosures with precision
//! doubling) and judged cases per second (generate + oracle + kernel + judge), for elementwise
//! regression losses. Run: `cargo bench --bench harness`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use losscheck::check::campaign::{self, Config};
use losscheck::check::subject::Kernels;
use losscheck::core::{Case, Dtype, Reduction, Tensor};
use std::hint::black_box;

fn case(loss: &str, d: Dtype, n: usize) -> Case {
    let mut c = Case::new(loss, d).unwrap();
    c.set_reduction(Reduction::Mean);
    // a fixed, simple pattern of dtype values (no RNG needed for a cost measurement)
    let v = |k: usize, s: f64| d.round(((k * 7919 % 1000) as f64 / 250.0 - 2.0) * s);
    c.inputs.insert(
        "pred".into(),
        Tensor::float(d, vec![n], (0..n).map(|k| v(k, 1.0)).collect()),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(d, vec![n], (0..n).map(|k| v(k + 13, 0.7)).collect()),
    );
    c.inputs.insert(
        "weight".into(),
        Tensor::float(
            d,
            vec![n],
            (0..n)
                .map(|k| d.round(0.5 + (k % 3) as f64 * 0.25))
                .collect(),
        ),
    );
    c
}

fn oracle(c: &mut Criterion) {
    let mut g = c.benchmark_group("oracle_evaluate");
    g.sample_size(20);
    for loss in ["mse", "log_cosh"] {
        for n in [16usize, 4096] {
            let cs = case(loss, Dtype::F32, n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(loss, n), &cs, |b, cs| {
                b.iter(|| black_box(losscheck::oracles::evaluate(cs).unwrap()))
            });
        }
    }
    g.finish();
}

fn judged(c: &mut Criterion) {
    let mut g = c.benchmark_group("judged_cases");
    g.sample_size(10);
    for loss in ["mse", "log_cosh"] {
        let cfg = Config::new(loss, Dtype::F32, 200, 1);
        g.throughput(Throughput::Elements(200));
        // 200 generated cases of the default mix, judged one after another (single thread)
        g.bench_function(loss, |b| {
            b.iter(|| {
                (0..200)
                    .map(|k| campaign::run_one(&cfg, &Kernels, k).report.is_some())
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, oracle, judged);
criterion_main!(benches);
