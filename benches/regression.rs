//! mse and huber, forward + backward (value and ∂/∂pred, ∂/∂target), `mean`, on 1M f32
//! elements: the built-in kernels (f64 compute, compensated sum, masks/weights/cotangent policy,
//! one rounding per output) against a naive scalar f32 loop in the same run. Throughput is in
//! elements per second. `kernel` allocates fresh output vectors per call (as `mse()` does);
//! `kernel_into` reuses them (`Regression::eval_into`), like the naive loop's preallocated
//! buffers: on machines where first-touching 8 MB of fresh pages is slow, that is most of the
//! difference between the two.
//!
//! `cargo bench --bench regression`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use losscheck::kernels::regression::{huber, mse, ElementwiseArgs, Output, Regression};
use std::hint::black_box;

const N: usize = 1 << 20;

fn inputs() -> (Vec<f32>, Vec<f32>) {
    // A fixed xorshift stream: residuals in about [−4, 4], so huber uses both branches.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let pred = (0..N).map(|_| 8.0 * next() - 4.0).collect();
    let target = (0..N).map(|_| next() - 0.5).collect();
    (pred, target)
}

/// Naive baseline: f32 arithmetic, plain running sum, no policy handling.
fn naive_mse(p: &[f32], t: &[f32], gp: &mut [f32], gt: &mut [f32]) -> f32 {
    let inv = 1.0 / p.len() as f32;
    let mut sum = 0.0f32;
    for i in 0..p.len() {
        let r = p[i] - t[i];
        sum += r * r;
        gp[i] = 2.0 * r * inv;
        gt[i] = -gp[i];
    }
    sum * inv
}

fn naive_huber(p: &[f32], t: &[f32], delta: f32, gp: &mut [f32], gt: &mut [f32]) -> f32 {
    let inv = 1.0 / p.len() as f32;
    let mut sum = 0.0f32;
    for i in 0..p.len() {
        let r = p[i] - t[i];
        let a = r.abs();
        let (l, g) = if a <= delta {
            (0.5 * r * r, r)
        } else {
            (delta * (a - 0.5 * delta), delta * r.signum())
        };
        sum += l;
        gp[i] = g * inv;
        gt[i] = -gp[i];
    }
    sum * inv
}

fn bench(c: &mut Criterion) {
    let (pred, target) = inputs();
    let mut gp = vec![0.0f32; N];
    let mut gt = vec![0.0f32; N];
    let mut group = c.benchmark_group("regression_f32_1M_fwd_bwd");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);

    group.bench_function("mse/kernel", |b| {
        b.iter(|| {
            let args = ElementwiseArgs::new(black_box(&pred), black_box(&target));
            let out: Output<f32, f32> = mse(&args).unwrap();
            black_box(out)
        })
    });
    let mut out = Output::<f32, f32>::default();
    group.bench_function("mse/kernel_into", |b| {
        b.iter(|| {
            let args = ElementwiseArgs::new(black_box(&pred), black_box(&target));
            Regression::Mse.eval_into(&args, &mut out).unwrap();
            black_box(&out);
        })
    });
    group.bench_function("mse/naive", |b| {
        b.iter(|| {
            black_box(naive_mse(
                black_box(&pred),
                black_box(&target),
                &mut gp,
                &mut gt,
            ))
        })
    });
    group.bench_function("huber/kernel", |b| {
        b.iter(|| {
            let args = ElementwiseArgs::new(black_box(&pred), black_box(&target));
            let out: Output<f32, f32> = huber(&args, 1.0).unwrap();
            black_box(out)
        })
    });
    group.bench_function("huber/kernel_into", |b| {
        b.iter(|| {
            let args = ElementwiseArgs::new(black_box(&pred), black_box(&target));
            Regression::Huber { delta: 1.0 }
                .eval_into(&args, &mut out)
                .unwrap();
            black_box(&out);
        })
    });
    group.bench_function("huber/naive", |b| {
        b.iter(|| {
            black_box(naive_huber(
                black_box(&pred),
                black_box(&target),
                1.0,
                &mut gp,
                &mut gt,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
