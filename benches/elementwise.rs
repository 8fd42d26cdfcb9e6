//! Elementwise losses forward + backward, `mean`, on 16M (2²⁴) elements in f32 and bf16 (value
//! in f32): `mse` and `huber` (δ = 1; value, ∂/∂pred and ∂/∂target; pred U(−4, 4), target
//! U(−½, ½), so huber takes both branches) and `bce_logits` (value and ∂/∂logit; logits N(0, 3²),
//! targets U(0, 1)). Per group, in the same run:
//!
//! - `kernel`: the built-in kernel (f64 compute, compensated sum, masks/weights/cotangent
//!   policy, one rounding per output), `eval_into` reusing its output buffers, in a pool of
//!   one thread; for bce_logits also `kernel_t2`, the same in a pool of two (its blocks are
//!   spread over rayon's pool from 2²⁰ elements; the same bits), in a second table; on a CPU
//!   with AVX-512 also `kernel_avx2`, the one-thread kernel capped at the AVX2 code generation
//!   (criterion's output only);
//! - `naive`: a scalar f32 loop, plain running sum, no policy handling, preallocated buffers;
//! - `probe`: the memory probe (reads both inputs, writes as many gradients as the kernel); for
//!   bce_logits also `probe_t2`, the same on two threads (each its half), for the second table.
//!
//! Throughput is elements/s and bytes/s (bytes = inputs read + gradients written). The table of
//! ratios is printed at the end and written to `<criterion dir>/ratios-elementwise.md`.
//! (This replaces the former `regression` bench: mse / huber f32 on 1M elements.)
//!
//! `nice -n 10 cargo bench --bench elementwise -- --warm-up-time 1 --measurement-time 3`

mod common;

use common::{bytes, bytes_mut, sigmoid, softplus, Group, Io, Rng, Row};
use criterion::Criterion;
use losscheck::kernels::classification::{self as cls, Binary, ClassArgs};
use losscheck::kernels::reduce::{cpu_codegen, with_codegen, Codegen};
use losscheck::kernels::regression::{self as reg, ElementwiseArgs, Regression};
use std::hint::black_box;

const N: usize = 1 << 24;

fn naive_mse<T: Io>(p: &[T], t: &[T], gp: &mut [T], gt: &mut [T]) -> f32 {
    let inv = 1.0 / p.len() as f32;
    let mut sum = 0.0f32;
    for i in 0..p.len() {
        let r = p[i].f() - t[i].f();
        sum += r * r;
        gp[i] = T::of(2.0 * r * inv);
        gt[i] = T::of(-2.0 * r * inv);
    }
    sum * inv
}

fn naive_huber<T: Io>(p: &[T], t: &[T], delta: f32, gp: &mut [T], gt: &mut [T]) -> f32 {
    let inv = 1.0 / p.len() as f32;
    let mut sum = 0.0f32;
    for i in 0..p.len() {
        let r = p[i].f() - t[i].f();
        let a = r.abs();
        let (l, g) = if a <= delta {
            (0.5 * r * r, r)
        } else {
            (delta * (a - 0.5 * delta), delta * r.signum())
        };
        sum += l;
        gp[i] = T::of(g * inv);
        gt[i] = T::of(-g * inv);
    }
    sum * inv
}

fn naive_bce_logits<T: Io>(z: &[T], t: &[T], g: &mut [T]) -> f32 {
    let inv = 1.0 / z.len() as f32;
    let mut sum = 0.0f32;
    for i in 0..z.len() {
        let (x, y) = (z[i].f(), t[i].f());
        sum += softplus(x) - x * y;
        g[i] = T::of((sigmoid(x) - y) * inv);
    }
    sum * inv
}

fn regression<T: Io>(c: &mut Criterion, loss: Regression) -> Row {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let pred: Vec<T> = rng.uniform_vec(N, -4.0, 4.0);
    let target: Vec<T> = rng.uniform_vec(N, -0.5, 0.5);
    let mut g = Group::new::<T>(c, [loss.id(), "16M", "16M"], N, 4, 0);
    let mut out = reg::Output::<T, f32>::default();
    g.run("kernel", || {
        let args = ElementwiseArgs::new(black_box(&pred), black_box(&target));
        loss.eval_into(&args, &mut out).unwrap();
        black_box(out.value[0])
    });
    drop(out);
    let (mut gp, mut gt) = (vec![T::default(); N], vec![T::default(); N]);
    g.run("naive", || match loss {
        Regression::Huber { delta } => naive_huber(
            black_box(&pred),
            black_box(&target),
            delta as f32,
            &mut gp,
            &mut gt,
        ),
        _ => naive_mse(black_box(&pred), black_box(&target), &mut gp, &mut gt),
    });
    g.probe(
        &[bytes(&pred), bytes(&target)],
        &mut [bytes_mut(&mut gp), bytes_mut(&mut gt)],
    );
    g.finish()
}

fn bce_logits<T: Io>(c: &mut Criterion) -> Row {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let z: Vec<T> = rng.normal(N, 0.0, 3.0);
    let t: Vec<T> = rng.uniform_vec(N, 0.0, 1.0);
    let mut g = Group::new::<T>(c, ["bce_logits", "16M", "16M"], N, 3, 0);
    // one thread, and (its blocks spread over rayon's pool) two; on a CPU with AVX-512 also
    // the AVX2 code generation on one thread (the same bits), to show what AVX-512 adds
    let mut runs = vec![("kernel", 1, Codegen::Avx512), ("kernel_t2", 2, Codegen::Avx512)];
    if cpu_codegen() == Codegen::Avx512 {
        runs.push(("kernel_avx2", 1, Codegen::Avx2));
    }
    for (id, threads, cg) in runs {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut out = cls::Output::<T, f32>::default();
        g.run(id, || {
            pool.install(|| {
                with_codegen(cg, || {
                    let args = ClassArgs::new(black_box(&z), black_box(&t));
                    Binary::BceLogits.eval_into(&args, &mut out).unwrap();
                    black_box(out.value[0])
                })
            })
        });
    }
    let mut grad = vec![T::default(); N];
    g.run("naive", || {
        naive_bce_logits(black_box(&z), black_box(&t), &mut grad)
    });
    g.probe(&[bytes(&z), bytes(&t)], &mut [bytes_mut(&mut grad)]);
    g.probe_t2(&[bytes(&z), bytes(&t)], &mut [bytes_mut(&mut grad)]);
    g.finish()
}

fn main() {
    common::main("elementwise", |c| {
        let huber = Regression::Huber { delta: 1.0 };
        vec![
            bce_logits::<f32>(c),
            bce_logits::<half::bf16>(c),
            regression::<f32>(c, Regression::Mse),
            regression::<half::bf16>(c, Regression::Mse),
            regression::<f32>(c, huber),
            regression::<half::bf16>(c, huber),
        ]
    });
}
