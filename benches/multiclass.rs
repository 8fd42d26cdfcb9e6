//! cross_entropy forward + backward (value and ∂/∂logits), `mean`, class-id targets, on
//! [1024, 32000] and [256, 128000] logits in f32 and bf16 (value in f32), two distributions:
//! `normal` (logits N(0, 3²), targets uniform over the classes) and `confident` (the same, then
//! every row's target logit set to the row's max + 30). Per group, in the same run:
//!
//! - `kernel`: the built-in kernel (f64 compute, the confident-row formulation, the vmath
//!   fast path for finite rows with class-id targets, compensated sums over rows, one rounding
//!   per output), `eval_into` reusing its output, inside a rayon pool of **one** thread;
//! - `kernel_t2`: the same inside a pool of two threads (the rows spread over both; the same
//!   bits);
//! - `naive`: a textbook log-softmax in f32 (max, Σ exp, log; gradient softmax − onehot, one
//!   exp per logit kept in an f32 row scratch), loads / stores in the dtype;
//! - `probe`: the memory probe (reads the logits and targets, writes a gradient-sized buffer);
//!   `probe_t2` the same on two threads, each its half (for the two-thread table).
//!
//! Throughput is logits/s and bytes/s (bytes = logits + targets read, gradient written). The
//! table of ratios is printed at the end and written to `<criterion dir>/ratios-multiclass.md`
//! (`kernel` there is the one-thread kernel), then a second table with `kernel_t2`
//! (`ratios-multiclass-t2.md`).
//!
//! `nice -n 10 cargo bench --bench multiclass -- --warm-up-time 1 --measurement-time 3`

mod common;

use common::{bytes, bytes_mut, Group, Io, Rng, Row};
use criterion::Criterion;
use losscheck::kernels::classification::multiclass::{CrossEntropyArgs, Output};
use std::hint::black_box;

/// `n` × `c` logits and targets; `confident`: target logit = row max + 30.
fn inputs<T: Io>(n: usize, c: usize, confident: bool) -> (Vec<T>, Vec<i64>) {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let mut z: Vec<T> = rng.normal(n * c, 0.0, 3.0);
    let y: Vec<i64> = (0..n).map(|_| (rng.uniform() * c as f64) as i64).collect();
    if confident {
        for (row, &yi) in z.chunks_exact_mut(c).zip(&y) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.to_f64()));
            row[yi as usize] = T::from_f64(m + 30.0);
        }
    }
    (z, y)
}

/// Naive baseline: textbook log-softmax in f32, plain running sums, no policy handling.
fn naive<T: Io>(z: &[T], y: &[i64], c: usize, g: &mut [T], e: &mut [f32]) -> f32 {
    let n = y.len();
    let inv = 1.0 / n as f32;
    let mut loss = 0.0f32;
    for i in 0..n {
        let row = &z[i * c..(i + 1) * c];
        let gr = &mut g[i * c..(i + 1) * c];
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x.f()));
        let mut s = 0.0f32;
        for (o, &x) in e.iter_mut().zip(row) {
            *o = libm::expf(x.f() - m);
            s += *o;
        }
        let yi = y[i] as usize;
        loss += m + libm::logf(s) - row[yi].f();
        let r = inv / s;
        for (o, &x) in gr.iter_mut().zip(e.iter()) {
            *o = T::of(x * r);
        }
        gr[yi] = T::of(e[yi] * r - inv);
    }
    loss * inv
}

fn group<T: Io>(c: &mut Criterion, n: usize, k: usize, confident: bool) -> Row {
    let (z, y) = inputs::<T>(n, k, confident);
    let dist = if confident { "confident" } else { "normal" };
    let (tag, label) = (format!("{n}x{k}_{dist}"), format!("[{n}, {k}] {dist}"));
    let mut g = Group::new::<T>(c, ["cross_entropy", &tag, &label], n * k, 2, 8 * n);
    for (id, threads) in [("kernel", 1), ("kernel_t2", 2)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = Output::<T, f32>::default();
        g.run(id, || {
            pool.install(|| {
                let args = CrossEntropyArgs::new(black_box(&z), n, k).class_ids(black_box(&y));
                args.eval_into(&mut out).unwrap();
                black_box(out.value[0])
            })
        });
    }
    let mut grad = vec![T::default(); n * k];
    let mut e = vec![0.0f32; k];
    g.run("naive", || {
        naive(black_box(&z), black_box(&y), k, &mut grad, &mut e)
    });
    g.probe(&[bytes(&z), bytes(&y)], &mut [bytes_mut(&mut grad)]);
    g.probe_t2(&[bytes(&z), bytes(&y)], &mut [bytes_mut(&mut grad)]);
    g.finish()
}

fn main() {
    common::main("multiclass", |c| {
        let mut rows = Vec::new();
        for confident in [false, true] {
            for (n, k) in [(1024, 32000), (256, 128000)] {
                rows.push(group::<f32>(c, n, k, confident));
                rows.push(group::<half::bf16>(c, n, k, confident));
            }
        }
        rows
    })
}
