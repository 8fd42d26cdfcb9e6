//! Row-wise losses forward + backward, `mean`: `info_nce` on [4096, 256] f32 query / key
//! embeddings (N(0, 1); temperature 0.07, normalize, not symmetric; value, ∂/∂query, ∂/∂key)
//! and `dpo` on 1M pairs in f32 and bf16 (the four sequence log-probs N(−150, 20²), β = 0.1,
//! no label smoothing; value, ∂/∂policy_chosen, ∂/∂policy_rejected). Per group, same run:
//!
//! - `kernel`: the built-in kernel (`info_nce`: f64 `matrixmultiply` GEMMs and double-double
//!   row pieces, allocating its outputs; `dpo`: `dpo_into`, reusing them, inside a rayon pool
//!   of one thread); for dpo also `kernel_t2`, the same on a pool of two threads (its blocks
//!   spread over it; the same bits), and `probe_t2`, the probe on two threads;
//! - `naive`: straightforward scalar f32 (`info_nce`: normalise, S = q̂k̂ᵀ/τ by dot products
//!   with 8 partial sums, row log-softmax, dS = (softmax − I)/(Nτ), then dS·k̂, dSᵀ·q̂ by
//!   axpy loops and the normalisation's backward);
//! - `probe`: the memory probe (reads the inputs, writes the gradients).
//!
//! Throughput is elements/s (`info_nce`: query + key elements; `dpo`: pairs) and bytes/s
//! (inputs read + gradients written). The ratio table is printed at the end and written to
//! `<criterion dir>/ratios-rows.md`.
//!
//! `nice -n 10 cargo bench --bench rows -- --warm-up-time 1 --measurement-time 3`

mod common;

use common::{bytes, bytes_mut, sigmoid, softplus, Group, Io, Rng, Row};
use criterion::Criterion;
use losscheck::kernels::contrastive::{info_nce, InfoNceParams, Output, RowArgs};
use losscheck::kernels::preference::{self as pref, dpo_into, DpoArgs};
use std::hint::black_box;

const ROWS: usize = 4096;
const DIM: usize = 256;
const TAU: f32 = 0.07;
const PAIRS: usize = 1 << 20;
const BETA: f32 = 0.1;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Naive InfoNCE (see the module docs); `ds` is an [N, N] scratch.
fn naive_info_nce(q: &[f32], k: &[f32], gq: &mut [f32], gk: &mut [f32], ds: &mut [f32]) -> f32 {
    let (n, d) = (ROWS, DIM);
    let unit = |x: &[f32]| -> (Vec<f32>, Vec<f32>) {
        let mut u = x.to_vec();
        let mut nrm = Vec::with_capacity(n);
        for r in u.chunks_exact_mut(d) {
            let v = dot(r, r).sqrt().max(1e-12);
            r.iter_mut().for_each(|c| *c /= v);
            nrm.push(v);
        }
        (u, nrm)
    };
    let ((qn, nq), (kn, nk)) = (unit(q), unit(k));
    let coef = 1.0 / (n as f32 * TAU);
    let mut loss = 0.0f32;
    for i in 0..n {
        let qi = &qn[i * d..(i + 1) * d];
        let s = &mut ds[i * n..(i + 1) * n];
        for j in 0..n {
            s[j] = dot(qi, &kn[j * d..(j + 1) * d]) / TAU;
        }
        let m = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0.0f32;
        let si = s[i];
        for x in s.iter_mut() {
            *x = libm::expf(*x - m);
            sum += *x;
        }
        loss += m + libm::logf(sum) - si;
        for x in s.iter_mut() {
            *x *= coef / sum;
        }
        s[i] -= coef;
    }
    // ∂/∂q̂ = dS·k̂, ∂/∂k̂ = dSᵀ·q̂ (into gq, gk), then through x̂ = x/‖x‖
    gq.fill(0.0);
    gk.fill(0.0);
    for i in 0..n {
        for j in 0..n {
            let a = ds[i * n + j];
            axpy(&mut gq[i * d..(i + 1) * d], a, &kn[j * d..(j + 1) * d]);
            axpy(&mut gk[j * d..(j + 1) * d], a, &qn[i * d..(i + 1) * d]);
        }
    }
    for (g, (u, v)) in [(gq, (&qn, &nq)), (gk, (&kn, &nk))] {
        for i in 0..n {
            let (gi, ui) = (&mut g[i * d..(i + 1) * d], &u[i * d..(i + 1) * d]);
            let p = dot(gi, ui);
            for (o, &c) in gi.iter_mut().zip(ui) {
                *o = (*o - c * p) / v[i];
            }
        }
    }
    loss / n as f32
}

fn naive_dpo<T: Io>(x: [&[T]; 4], gc: &mut [T], gr: &mut [T]) -> f32 {
    let [pc, pr, rc, rr] = x;
    let inv = 1.0 / pc.len() as f32;
    let mut sum = 0.0f32;
    for i in 0..pc.len() {
        let h = (pc[i].f() - rc[i].f()) - (pr[i].f() - rr[i].f());
        let z = BETA * h;
        sum += softplus(-z);
        let g = -BETA * sigmoid(-z) * inv;
        gc[i] = T::of(g);
        gr[i] = T::of(-g);
    }
    sum * inv
}

fn info_nce_group(c: &mut Criterion) -> Row {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let q: Vec<f32> = rng.normal(ROWS * DIM, 0.0, 1.0);
    let k: Vec<f32> = rng.normal(ROWS * DIM, 0.0, 1.0);
    let e = 2 * ROWS * DIM;
    let (tag, label) = (format!("{ROWS}x{DIM}"), format!("[{ROWS}, {DIM}]"));
    let mut g = Group::new::<f32>(c, ["info_nce", &tag, &label], e, 2, 0);
    let params = InfoNceParams {
        temperature: TAU as f64,
        ..InfoNceParams::default()
    };
    g.run("kernel", || {
        let out: Output<f32, f32> = info_nce(
            &RowArgs::new(ROWS, DIM),
            black_box(&q),
            black_box(&k),
            params,
        )
        .unwrap();
        black_box(out).value[0]
    });
    let (mut gq, mut gk) = (vec![0.0f32; ROWS * DIM], vec![0.0f32; ROWS * DIM]);
    let mut ds = vec![0.0f32; ROWS * ROWS];
    g.run("naive", || {
        naive_info_nce(black_box(&q), black_box(&k), &mut gq, &mut gk, &mut ds)
    });
    g.probe(
        &[bytes(&q), bytes(&k)],
        &mut [bytes_mut(&mut gq), bytes_mut(&mut gk)],
    );
    g.finish()
}

fn dpo_group<T: Io>(c: &mut Criterion) -> Row {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let x: [Vec<T>; 4] = std::array::from_fn(|_| rng.normal(PAIRS, -150.0, 20.0));
    let mut g = Group::new::<T>(c, ["dpo", "1M", "1M pairs"], PAIRS, 6, 0);
    // one thread, and (its blocks spread over rayon's pool) two
    for (id, threads) in [("kernel", 1), ("kernel_t2", 2)] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut out = pref::Output::<T, f32>::default();
        g.run(id, || {
            pool.install(|| {
                let args = DpoArgs::new(&x[0], &x[1], &x[2], &x[3]);
                dpo_into(black_box(&args), BETA as f64, 0.0, &mut out).unwrap();
                black_box(out.value[0])
            })
        });
    }
    let (mut gc, mut gr) = (vec![T::default(); PAIRS], vec![T::default(); PAIRS]);
    g.run("naive", || {
        naive_dpo(black_box([&x[0], &x[1], &x[2], &x[3]]), &mut gc, &mut gr)
    });
    let reads = [bytes(&x[0]), bytes(&x[1]), bytes(&x[2]), bytes(&x[3])];
    g.probe(&reads, &mut [bytes_mut(&mut gc), bytes_mut(&mut gr)]);
    g.probe_t2(&reads, &mut [bytes_mut(&mut gc), bytes_mut(&mut gr)]);
    g.finish()
}

fn main() {
    common::main("rows", |c| {
        vec![
            dpo_group::<f32>(c),
            dpo_group::<half::bf16>(c),
            info_nce_group(c),
        ]
    });
}
