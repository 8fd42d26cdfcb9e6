//! cross_entropy forward + backward (value and ∂/∂logits), `mean`, on [1024, 32000] f32 logits
//! drawn from N(0, 3²) with random class-id targets: the built-in kernel (f64 compute, the
//! confident-row formulation, compensated sums over classes and rows, one rounding per output)
//! against a naive textbook log-softmax in f32 (max, Σ exp, log; gradient softmax − onehot) in
//! the same run. Both write the gradient into a preallocated [N, C] buffer (`eval_into` reuses
//! its output). Throughput is in logits per second.
//!
//! `cargo bench --bench multiclass`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use losscheck::kernels::classification::multiclass::{CrossEntropyArgs, Output};
use std::hint::black_box;

const N: usize = 1024;
const C: usize = 32000;

fn inputs() -> (Vec<f32>, Vec<i64>) {
    // A fixed xorshift stream; Box–Muller for N(0, 3²) (libm, like the kernels).
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut z = Vec::with_capacity(N * C);
    while z.len() < N * C {
        let (u, v) = (next(), next());
        let r = 3.0 * libm::sqrt(-2.0 * libm::log(u));
        let t = 2.0 * std::f64::consts::PI * v;
        z.push((r * libm::cos(t)) as f32);
        z.push((r * libm::sin(t)) as f32);
    }
    z.truncate(N * C);
    let y = (0..N).map(|_| (next() * C as f64) as i64).collect();
    (z, y)
}

/// Naive baseline: textbook log-softmax in f32, plain running sums, no policy handling.
fn naive(z: &[f32], y: &[i64], g: &mut [f32]) -> f32 {
    let inv = 1.0 / N as f32;
    let mut loss = 0.0f32;
    for i in 0..N {
        let row = &z[i * C..(i + 1) * C];
        let gr = &mut g[i * C..(i + 1) * C];
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut s = 0.0f32;
        for (o, &x) in gr.iter_mut().zip(row) {
            let e = libm::expf(x - m);
            *o = e;
            s += e;
        }
        let lse = m + libm::logf(s);
        let yi = y[i] as usize;
        loss += lse - row[yi];
        let r = inv / s;
        for o in gr.iter_mut() {
            *o *= r;
        }
        gr[yi] -= inv;
    }
    loss * inv
}

fn bench(c: &mut Criterion) {
    let (z, y) = inputs();
    let mut g = vec![0.0f32; N * C];
    let mut group = c.benchmark_group("cross_entropy_f32_1024x32000_fwd_bwd");
    group.throughput(Throughput::Elements((N * C) as u64));
    group.sample_size(10);
    let mut out = Output::<f32, f32>::default();
    group.bench_function("kernel_into", |b| {
        b.iter(|| {
            let args = CrossEntropyArgs::new(black_box(&z), N, C).class_ids(black_box(&y));
            args.eval_into(&mut out).unwrap();
            black_box(&out);
        })
    });
    group.bench_function("naive_f32", |b| {
        b.iter(|| black_box(naive(black_box(&z), black_box(&y), &mut g)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
