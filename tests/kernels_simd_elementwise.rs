//! The elementwise fast paths (mse, huber, bce_logits): the certification of
//! `vmath::log1p_unit`, `vmath::logistic_parts` and `vmath::logistic_parts_fast` against MPFR, the correctly rounded
//! f64 → f16 / bf16 conversions against `Element::from_f64`, the bit identity of the AVX2 and
//! the plain code generations, and the fast path against the general path (`Plan::run`, taken
//! here by passing an all-ones mask).

use half::{bf16, f16};
use losscheck::kernels::classification::{self as cls, Binary, ClassArgs};
use losscheck::kernels::reduce::{
    cpu_codegen, f64_to_bf16_bits, f64_to_f16_bits, with_codegen, with_plain_codegen, Codegen,
};
use losscheck::kernels::regression::{ElementwiseArgs, Output, Regression};
use losscheck::kernels::vmath;
use losscheck::{Element, Reduction};
use losscheck::check::vmath_cert::{self, Function};

const U: f64 = 1.0 / 9_007_199_254_740_992.0; // 2^-53

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// log1p_unit: |log1p_unit(x)/ln(1 + x) − 1| ≤ 12u on [0, 1].

fn check_log1p(x: f64, worst: &mut (f64, f64)) {
    let got = vmath::log1p_unit(x);
    let e = vmath_cert::errors(Function::Log1pUnit, x, &[got])[0];
    assert!(e <= 12.0, "log1p_unit({x:e}) = {got:e}: relative error {e:.2}u");
    if e > worst.0 {
        *worst = (e, x);
    }
}

#[test]
fn log1p_unit_certified() {
    let mut worst = (0.0, 0.0);
    let mut r = Lcg(0x1234_5678_9abc_def1);
    for _ in 0..300_000 {
        check_log1p(r.unit(), &mut worst);
    }
    // log-uniform magnitudes down to the subnormals
    for _ in 0..200_000 {
        let x = 2f64.powf(-1074.0 * r.unit());
        check_log1p(x.min(1.0), &mut worst);
    }
    // every f16 and bf16 value in [0, 1]
    for b in 0..=u16::MAX {
        for x in [f16::from_bits(b).to_f64(), bf16::from_bits(b).to_f64()] {
            if (0.0..=1.0).contains(&x) {
                check_log1p(x, &mut worst);
            }
        }
    }
    // where k switches (1 + x = √2), and the ends
    let edge = std::f64::consts::SQRT_2 - 1.0;
    let mut x = edge;
    let mut y = edge;
    for _ in 0..2000 {
        check_log1p(x, &mut worst);
        check_log1p(y, &mut worst);
        x = f64::from_bits(x.to_bits() + 1);
        y = f64::from_bits(y.to_bits() - 1);
    }
    for x in [0.0, 1.0, U, 2.0 * U, 3.0 * U, 1.5 * U, f64::MIN_POSITIVE, 5e-324] {
        check_log1p(x, &mut worst);
    }
    assert!(vmath::log1p_unit(f64::NAN).is_nan());
    assert_eq!(vmath::log1p_unit(0.0), 0.0);
    eprintln!("log1p_unit: worst {:.3}u at {:e}", worst.0, worst.1);
}

// ---------------------------------------------------------------------------------------------
// logistic_parts: softplus(±z) within 17u, σ(±z) within 9u, for finite |z| ≤ 700;
// logistic_parts_fast (the cheaper tier): 56u and 12u. The bounds are the certificate's.

fn check_parts(f: Function, z: f64, worst: &mut [f64; 4]) {
    let got = f.eval(z);
    let errs = vmath_cert::errors(f, z, &got);
    for (k, &(part, bound)) in f.parts().iter().enumerate() {
        assert!(
            errs[k] <= bound,
            "{}({z:e}) {part}: relative error {:.2}u",
            f.name(),
            errs[k]
        );
        worst[k] = worst[k].max(errs[k]);
    }
}

fn certify_parts(f: Function) {
    let mut worst = [0.0; 4];
    let mut r = Lcg(0x0bad_cafe_dead_beef);
    for _ in 0..100_000 {
        check_parts(f, -700.0 + 1400.0 * r.unit(), &mut worst);
    }
    for _ in 0..100_000 {
        check_parts(f, -40.0 + 80.0 * r.unit(), &mut worst);
    }
    for _ in 0..50_000 {
        // magnitudes 2^-80 … 700 (the function's domain; 2^10 would leave it)
        let m = 2f64.powf(-80.0 + (80.0 + 700f64.log2()) * r.unit());
        check_parts(f, if r.next() & 1 == 0 { m } else { -m }, &mut worst);
    }
    for b in 0..=u16::MAX {
        for z in [f16::from_bits(b).to_f64(), bf16::from_bits(b).to_f64()] {
            if z.abs() <= 700.0 {
                check_parts(f, z, &mut worst);
            }
        }
    }
    // 0, the ends, where e^-|z| drops below 2^-53, and where 1 + e^-|z| crosses √2
    let sqrt2_edge = -(std::f64::consts::SQRT_2 - 1.0).ln();
    let mut zs = vec![0.0, -0.0, 700.0, -700.0, 36.0, -36.0, 37.0, 1e-300, -1e-300];
    for k in -64i64..=64 {
        let z = f64::from_bits((sqrt2_edge.to_bits() as i64 + k) as u64);
        zs.extend([z, -z]);
    }
    for z in zs {
        check_parts(f, z, &mut worst);
    }
    eprintln!(
        "{} worst: softplus(z) {:.2}u, softplus(-z) {:.2}u, σ(z) {:.2}u, σ(-z) {:.2}u",
        f.name(),
        worst[0],
        worst[1],
        worst[2],
        worst[3]
    );
}

#[test]
fn logistic_parts_certified() {
    certify_parts(Function::LogisticParts);
}

#[test]
fn logistic_parts_fast_certified() {
    certify_parts(Function::LogisticPartsFast);
}

// ---------------------------------------------------------------------------------------------
// f64 → f16 / bf16: the same bits as Element::from_f64 (correct rounding, ties to even).

fn check_round(x: f64) {
    let a = f64_to_f16_bits(x);
    let want16 = <f16 as Element>::from_f64(x);
    let wantb = <bf16 as Element>::from_f64(x);
    if x.is_nan() {
        assert!(f16::from_bits(a).is_nan() && bf16::from_bits(f64_to_bf16_bits(x)).is_nan());
        return;
    }
    assert_eq!(a, want16.to_bits(), "f16 of {x:e} ({:#x})", x.to_bits());
    assert_eq!(
        f64_to_bf16_bits(x),
        wantb.to_bits(),
        "bf16 of {x:e} ({:#x})",
        x.to_bits()
    );
}

#[test]
fn f64_to_16_bit_is_correctly_rounded() {
    let mut r = Lcg(0x5eed);
    for _ in 0..300_000 {
        // random bits over the exponents that matter (2^-160 .. 2^140) and beyond
        let e = (r.next() % 320) as i32 - 170;
        let m = 1.0 + r.unit();
        let s = if r.next() & 1 == 0 { 1.0 } else { -1.0 };
        check_round(s * m * 2f64.powi(e));
        check_round(f64::from_bits(r.next()));
    }
    // every 16-bit value, its midpoints with the next value, and their f64 neighbours
    for b in 0..u16::MAX {
        for (v, w) in [
            (f16::from_bits(b).to_f64(), f16::from_bits(b + 1).to_f64()),
            (bf16::from_bits(b).to_f64(), bf16::from_bits(b + 1).to_f64()),
        ] {
            check_round(v);
            if v.is_finite() && w.is_finite() && !v.is_nan() && !w.is_nan() {
                let mid = 0.5 * (v + w);
                for x in [mid, f64::from_bits(mid.to_bits() + 1), f64::from_bits(mid.to_bits().wrapping_sub(1))] {
                    check_round(x);
                }
            }
        }
    }
    for x in [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        65504.0,
        65519.999,
        65520.0,
        -65520.0,
        1e300,
        -1e-300,
        5e-324,
        f64::MAX,
        3.3895313892515355e38,
        3.39e38,
    ] {
        check_round(x);
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels: AVX2 vs plain bits, fast vs general path.

fn data<T: Element>(n: usize, seed: u64, lo: f64, hi: f64, specials: bool) -> Vec<T> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|i| {
            let x = if specials && i % 97 == 5 {
                [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.0, -0.0, 1e30, -800.0][i % 7]
            } else {
                lo + (hi - lo) * r.unit()
            };
            T::from_f64(x)
        })
        .collect()
}

fn bits<T: Element>(v: &[T]) -> Vec<u64> {
    v.iter()
        .map(|x| {
            let y = x.to_f64();
            if y.is_nan() {
                u64::MAX
            } else {
                y.to_bits()
            }
        })
        .collect()
}

fn reg_out<T: Element, O: Element>(loss: Regression, args: &ElementwiseArgs<'_, T>) -> Output<T, O> {
    loss.eval::<T, O>(args).unwrap()
}

fn ulps_apart(a: f64, b: f64) -> u64 {
    let key = |x: f64| {
        let b = x.to_bits() as i64;
        if b < 0 {
            i64::MIN - b
        } else {
            b
        }
    };
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    (key(a) - key(b)).unsigned_abs()
}

fn regression_case<T: Element, O: Element>(loss: Regression) {
    let n = 5000 + 37; // not a multiple of the block
    let p: Vec<T> = data(n, 1, -4.0, 4.0, true);
    let t: Vec<T> = data(n, 2, -0.5, 0.5, false);
    let ones = vec![1i64; n];
    let cot3 = [T::from_f64(3.0)];
    let cot_n: Vec<T> = data(n, 3, -2.0, 2.0, false);
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for cot in [None, Some(&cot3[..])] {
            let mut args = ElementwiseArgs::new(&p, &t).reduction(red);
            if let Some(c) = cot {
                if red != Reduction::None {
                    args = args.cotangent(c);
                }
            }
            let fast: Output<T, O> = reg_out(loss, &args);
            let plain: Output<T, O> = with_plain_codegen(|| reg_out(loss, &args));
            assert_eq!(bits(&fast.value), bits(&plain.value), "{loss:?} {red:?} value avx2 vs plain");
            assert_eq!(bits(fast.grad_pred.as_ref().unwrap()), bits(plain.grad_pred.as_ref().unwrap()));
            assert_eq!(bits(fast.grad_target.as_ref().unwrap()), bits(plain.grad_target.as_ref().unwrap()));
            // the general path (an all-ones mask): same gradients and `none` values, bit for bit
            let general: Output<T, O> = reg_out(loss, &args.mask(&ones));
            assert_eq!(bits(fast.grad_pred.as_ref().unwrap()), bits(general.grad_pred.as_ref().unwrap()));
            assert_eq!(bits(fast.grad_target.as_ref().unwrap()), bits(general.grad_target.as_ref().unwrap()));
            if red == Reduction::None {
                assert_eq!(bits(&fast.value), bits(&general.value));
            } else {
                let (a, b) = (fast.value[0].to_f64(), general.value[0].to_f64());
                assert!(ulps_apart(a, b) <= 1 || (a.is_nan() && b.is_nan()), "{loss:?} {red:?}: {a} vs {b}");
            }
        }
    }
    // finite data: the reduced values agree with the general path
    let p: Vec<T> = data(n, 4, -4.0, 4.0, false);
    let args = ElementwiseArgs::new(&p, &t);
    let fast: Output<T, O> = reg_out(loss, &args);
    let general: Output<T, O> = reg_out(loss, &args.mask(&ones));
    let (a, b) = (fast.value[0].to_f64(), general.value[0].to_f64());
    assert!(ulps_apart(a, b) <= 1, "{loss:?}: {a} vs {b}");
    // per-element cotangent (general path) still works
    let args = ElementwiseArgs::new(&p, &t).reduction(Reduction::None).cotangent(&cot_n);
    let _: Output<T, O> = reg_out(loss, &args);
}

#[test]
fn regression_fast_path_bits() {
    for loss in [Regression::Mse, Regression::Huber { delta: 1.0 }, Regression::Huber { delta: 0.3 }] {
        regression_case::<f32, f32>(loss);
        regression_case::<f16, f16>(loss);
        regression_case::<f16, f32>(loss);
        regression_case::<bf16, bf16>(loss);
        regression_case::<bf16, f32>(loss);
    }
}

fn bce_case<T: Element, O: Element>() {
    let n = 6000 + 11;
    let mut z: Vec<T> = data(n, 7, -12.0, 12.0, true);
    let mut t: Vec<T> = data(n, 8, 0.0, 1.0, false);
    // targets at 0 and 1, huge logits, and elements right at the zero crossing z = logit(t)
    for j in (0..n).step_by(13) {
        t[j] = T::from_f64([0.0, 1.0, 0.5, 0.25][j % 4]);
    }
    for j in (3..n).step_by(17) {
        let tj = t[j].to_f64();
        if tj > 0.0 && tj < 1.0 {
            z[j] = T::from_f64((tj / (1.0 - tj)).ln());
        }
    }
    z[1] = T::from_f64(699.0);
    z[2] = T::from_f64(-701.0);
    z[4] = T::from_f64(1e30);
    let ones = vec![1i64; n];
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let args = ClassArgs::new(&z, &t).reduction(red);
        let fast: cls::Output<T, O> = Binary::BceLogits.eval(&args).unwrap();
        let plain: cls::Output<T, O> = with_plain_codegen(|| Binary::BceLogits.eval(&args).unwrap());
        assert_eq!(bits(&fast.value), bits(&plain.value), "bce_logits {red:?} {:?} vs plain", cpu_codegen());
        assert_eq!(bits(fast.grad.as_ref().unwrap()), bits(plain.grad.as_ref().unwrap()));
        // every code generation below the CPU's (AVX2 where AVX-512 is the default), and the
        // value alone (no gradient wanted): the same bits; whole blocks and a partial one
        for cg in [Codegen::Plain, Codegen::Avx2, Codegen::Avx512] {
            for len in [n, 3 * 256, 256 + 8, 7] {
                let args = ClassArgs::new(&z[..len], &t[..len]).reduction(red);
                let eval = |args: &ClassArgs<'_, T, T>| {
                    let out: cls::Output<T, O> = Binary::BceLogits.eval(args).unwrap();
                    (bits(&out.value), out.grad.as_deref().map(bits))
                };
                let (base, capped) = (with_plain_codegen(|| eval(&args)), with_codegen(cg, || eval(&args)));
                assert_eq!(capped, base, "bce_logits {red:?} n={len}: {cg:?} vs plain");
                let args = args.grad(false);
                let (base, capped) = (with_plain_codegen(|| eval(&args)), with_codegen(cg, || eval(&args)));
                assert_eq!(capped, base, "bce_logits {red:?} n={len}, no gradient: {cg:?} vs plain");
            }
        }
        let general: cls::Output<T, O> = Binary::BceLogits.eval(&args.mask(&ones)).unwrap();
        let (fg, gg) = (fast.grad.unwrap(), general.grad.unwrap());
        for j in 0..n {
            let (a, b) = (fg[j].to_f64(), gg[j].to_f64());
            assert!(ulps_apart(a, b) <= 1, "grad {j}: z={:?} t={:?}: {a:e} vs {b:e}", z[j], t[j]);
        }
        for (j, (a, b)) in fast.value.iter().zip(&general.value).enumerate() {
            let (a, b) = (a.to_f64(), b.to_f64());
            assert!(ulps_apart(a, b) <= 1, "value {j}: {a:e} vs {b:e}");
        }
    }
}

#[test]
fn bce_logits_fast_path_bits() {
    bce_case::<f32, f32>();
    bce_case::<f16, f16>();
    bce_case::<f16, f32>();
    bce_case::<bf16, bf16>();
    bce_case::<bf16, f32>();
}

/// bce_logits' fast path on rayon pools of 1, 2 and 3 threads (≥ 2²⁰ elements: spread over
/// tasks, a partial task and a partial block at the end): the same bits, and the same bits as
/// the plain code generation.
fn bce_threads_case<T: Element>() {
    let n = (1 << 20) + 3 * 65_536 + 1_234;
    let mut z: Vec<T> = data(n, 21, -12.0, 12.0, true);
    let t: Vec<T> = data(n, 22, 0.0, 1.0, false);
    for j in (5..n).step_by(977) {
        let tj = t[j].to_f64();
        if tj > 0.0 && tj < 1.0 {
            z[j] = T::from_f64((tj / (1.0 - tj)).ln()); // the exact path
        }
    }
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        // the code generation is chosen on the calling thread: the pool's, inside install
        let run = |threads: usize, cg: Codegen| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let eval = || {
                let args = ClassArgs::new(&z, &t).reduction(red);
                let out: cls::Output<T, f32> = Binary::BceLogits.eval(&args).unwrap();
                (bits(&out.value), bits(out.grad.as_ref().unwrap()))
            };
            pool.install(|| with_codegen(cg, eval))
        };
        let one = run(1, Codegen::Avx512);
        assert_eq!(run(2, Codegen::Avx512), one, "bce_logits {red:?}: 2 threads vs 1");
        assert_eq!(run(3, Codegen::Avx512), one, "bce_logits {red:?}: 3 threads vs 1");
        let best = cpu_codegen();
        assert_eq!(run(2, Codegen::Plain), one, "bce_logits {red:?}: plain on 2 threads vs {best:?} on 1");
        assert_eq!(run(2, Codegen::Avx2), one, "bce_logits {red:?}: AVX2 on 2 threads vs {best:?} on 1");
    }
}

#[test]
fn bce_logits_fast_path_threads() {
    bce_threads_case::<f32>();
    bce_threads_case::<bf16>();
}

// ---------------------------------------------------------------------------------------------
// dpo's fast path (bce_fast_element at x = β·h, t = 1 − ε).

/// |a − b| ≤ one ulp of T at max(|a|, |b|) (or T's smallest subnormal): two neighbours of T.
fn within_one_ulp_of<T: Element>(a: f64, b: f64) -> bool {
    let (p, tiny) = match T::DTYPE {
        losscheck::Dtype::F32 => (24, 2f64.powi(-149)),
        losscheck::Dtype::F16 => (11, 2f64.powi(-24)),
        losscheck::Dtype::Bf16 => (8, 2f64.powi(-133)),
    };
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 2f64.powi(1 - p) * a.abs().max(b.abs()) + tiny
}

/// dpo on log-probs around −150 (N(−150, 20²)-like, as the benchmark's), with elements that
/// must leave the fast path — h inexact in f64 (magnitudes 2⁴⁸ apart), |β·h| > 700, the
/// gradient's zero crossing x = ln((1 − ε)/ε), NaN and ±inf — for ε ∈ {0, 0.1, 0.125, 10⁻²⁰}
/// (the last: 1 − (1 − ε) is not ε, so no fast path) and every reduction: every code
/// generation gives the plain one's bits, at whole and partial blocks, with and without
/// gradients; and the fast path agrees with the general one (`run2`, taken by an all-ones
/// mask) to one ulp of T per output.
fn dpo_case<T: Element, O: Element>() {
    use losscheck::kernels::preference::{dpo, DpoArgs, Output as DOut};
    let n = 4000 + 13;
    let x: [Vec<T>; 4] = std::array::from_fn(|k| data(n, 40 + k as u64, -190.0, -110.0, true));
    let [mut pc, pr, mut rc, rr] = x;
    let beta = 0.1;
    for j in (2..n).step_by(31) {
        pc[j] = T::from_f64(3e4); // with rc tiny: h inexact in f64 for f32 inputs
        rc[j] = T::from_f64(1.1e-7);
    }
    for j in (9..n).step_by(37) {
        pc[j] = T::from_f64(-9000.0); // β·h < −700
    }
    let ones = vec![1i64; n];
    for eps in [0.0f64, 0.1, 0.125, 1e-20] {
        let mut pc = pc.clone();
        if eps > 0.0 {
            // the zero crossing: β·h = ln((1 − ε)/ε), as near as T allows
            let xs = ((1.0 - eps) / eps).ln() / beta;
            for j in (4..n).step_by(29) {
                pc[j] = T::from_f64(rc[j].to_f64() + pr[j].to_f64() - rr[j].to_f64() + xs);
            }
        }
        for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let eval = |len: usize, grads: bool| {
                let args = DpoArgs::new(&pc[..len], &pr[..len], &rc[..len], &rr[..len]).reduction(red).grads(grads, grads);
                let out: DOut<T, O> = dpo(&args, beta, eps).unwrap();
                (bits(&out.value), out.grad_policy_chosen.as_deref().map(bits), out.grad_policy_rejected.as_deref().map(bits))
            };
            for len in [n, 3 * 256, 256 + 8, 7] {
                for grads in [true, false] {
                    let base = with_plain_codegen(|| eval(len, grads));
                    for cg in [Codegen::Avx2, Codegen::Avx512] {
                        assert_eq!(with_codegen(cg, || eval(len, grads)), base, "dpo ε={eps} {red:?} n={len} grads={grads}: {cg:?} vs plain");
                    }
                }
            }
            let args = DpoArgs::new(&pc, &pr, &rc, &rr).reduction(red);
            let fast: DOut<T, O> = dpo(&args, beta, eps).unwrap();
            let general: DOut<T, O> = dpo(&args.mask(&ones), beta, eps).unwrap();
            for (j, (a, b)) in fast.value.iter().zip(&general.value).enumerate() {
                assert!(within_one_ulp_of::<O>(a.to_f64(), b.to_f64()), "dpo ε={eps} {red:?} value {j}: {a:?} vs {b:?}");
            }
            let (fc, gc) = (fast.grad_policy_chosen.unwrap(), general.grad_policy_chosen.unwrap());
            let (fr, gr) = (fast.grad_policy_rejected.unwrap(), general.grad_policy_rejected.unwrap());
            for j in 0..n {
                assert!(within_one_ulp_of::<T>(fc[j].to_f64(), gc[j].to_f64()), "dpo ε={eps} {red:?} ∂/∂πc {j}: {:?} vs {:?}", fc[j], gc[j]);
                assert!(fr[j].to_f64() == -fc[j].to_f64() || fr[j].to_f64().is_nan(), "∂/∂πr = −∂/∂πc (zeros of either sign)");
                assert!(within_one_ulp_of::<T>(fr[j].to_f64(), gr[j].to_f64()));
            }
            if eps == 1e-20 {
                assert_eq!(bits(&fast.value), bits(&general.value), "ε = 1e-20 takes the general path");
            }
        }
    }
}

#[test]
fn dpo_fast_path_bits_equal_across_code_generations_and_agree_with_the_general_path() {
    dpo_case::<f32, f32>();
    dpo_case::<bf16, f32>();
    dpo_case::<bf16, bf16>();
    dpo_case::<f16, f16>();
}

/// dpo's fast path on rayon pools of 1, 2 and 3 threads (≥ 2¹⁸ pairs: spread over tasks, a
/// partial task and a partial block at the end, with exact-path elements): the same bits, and
/// the same bits as the plain and AVX2 code generations.
fn dpo_threads_case<T: Element>() {
    use losscheck::kernels::preference::{dpo, DpoArgs, Output as DOut};
    let n = (1 << 18) + 3 * 32_768 + 1_234;
    let x: [Vec<T>; 4] = std::array::from_fn(|k| data(n, 60 + k as u64, -190.0, -110.0, true));
    let [mut pc, pr, rc, rr] = x;
    for j in (9..n).step_by(1013) {
        pc[j] = T::from_f64(-9000.0); // the exact path
    }
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let run = |threads: usize, cg: Codegen| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let eval = || {
                let out: DOut<T, f32> = dpo(&DpoArgs::new(&pc, &pr, &rc, &rr).reduction(red), 0.1, 0.1).unwrap();
                (bits(&out.value), bits(out.grad_policy_chosen.as_ref().unwrap()), bits(out.grad_policy_rejected.as_ref().unwrap()))
            };
            pool.install(|| with_codegen(cg, eval))
        };
        let one = run(1, Codegen::Avx512);
        assert_eq!(run(2, Codegen::Avx512), one, "dpo {red:?}: 2 threads vs 1");
        assert_eq!(run(3, Codegen::Avx512), one, "dpo {red:?}: 3 threads vs 1");
        assert_eq!(run(2, Codegen::Plain), one, "dpo {red:?}: plain on 2 threads vs 1");
        assert_eq!(run(2, Codegen::Avx2), one, "dpo {red:?}: AVX2 on 2 threads vs 1");
    }
}

#[test]
fn dpo_fast_path_threads() {
    dpo_threads_case::<f32>();
    dpo_threads_case::<bf16>();
}
