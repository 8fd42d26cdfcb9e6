//! The elementwise classification kernels (`bce`, `bce_logits`, `hinge`, `focal`): hand-computed
//! values where the exact result is obvious (with the PyTorch expression beside each, or the
//! exact arithmetic where PyTorch is wrong), the failures of FAILURES.md against independently
//! derived values (exact math in a comment, or `rug` at 300 bits — a reference that shares no
//! code with the kernels), sweeps over the extremes of every dtype against the same reference,
//! and the policies (masks, empty mean, out_dtype, N = 0, `[]`, invalid input).

#![allow(clippy::excessive_precision)]

use half::{bf16, f16};
use losscheck::core::{ErrorKind, ParamValue};
use losscheck::kernels::classification::{
    bce, bce_logits, focal, hinge, Binary, ClassArgs, Output,
};
use losscheck::kernels::{evaluate, implemented};
use losscheck::{Case, Dtype, Element, LossError, Reduction, Tensor};
use rug::ops::Pow;
use rug::Float;

const P: u32 = 300;

fn g32(out: &Output<f32, f32>) -> Vec<f32> {
    out.grad.clone().expect("gradient requested")
}

fn none<'a, T: Element, Y>(x: &'a [T], t: &'a [Y]) -> ClassArgs<'a, T, Y> {
    ClassArgs::new(x, t).reduction(Reduction::None)
}

// ---------------------------------------------------------------------------------------------
// The independent reference: rug at 300 bits, straight from the definitions.

fn fl(x: f64) -> Float {
    Float::with_val(P, x)
}

/// The 300-bit reference as an f64 rounded to odd (toward zero, then the last bit set when
/// inexact), so that the dtype rounding done later by `Dtype::ulps` (precision ≤ 24 ≤ 51 bits)
/// is the correct rounding of the 300-bit value — no double-rounding error at near-ties.
fn odd(x: &Float) -> f64 {
    let t = x.to_f64_round(rug::float::Round::Zero);
    if t.is_finite() && Float::with_val(P, t) != *x {
        f64::from_bits(t.to_bits() | 1)
    } else {
        t
    }
}

/// softplus(z) = max(z, 0) + ln(1 + e^−|z|) (an identity; no overflow for huge |z|).
fn r_softplus(z: &Float) -> Float {
    let m = if *z > 0.0 { z.clone() } else { fl(0.0) };
    let e = Float::with_val(P, -z.clone().abs()).exp();
    m + e.ln_1p()
}

fn r_sigmoid(z: &Float) -> Float {
    let e = Float::with_val(P, -z.clone()).exp();
    (e + 1u32).recip()
}

/// bce_logits: value and ∂/∂z, absent terms (coefficient exactly 0) skipped.
fn r_bce_logits(z: f64, t: f64, pw: f64) -> (f64, f64) {
    let (z, t) = (fl(z), fl(t));
    let a = Float::with_val(P, &t * pw);
    let b = Float::with_val(P, 1u32 - t.clone());
    let mut v = fl(0.0);
    let mut g = fl(0.0);
    if a != 0.0 {
        v += Float::with_val(P, &a * r_softplus(&Float::with_val(P, -z.clone())));
        g -= Float::with_val(P, &a * r_sigmoid(&Float::with_val(P, -z.clone())));
    }
    if b != 0.0 {
        v += Float::with_val(P, &b * r_softplus(&z));
        g += Float::with_val(P, &b * r_sigmoid(&z));
    }
    (odd(&v), odd(&g))
}

/// bce on probabilities: −(t·L(p) + (1−t)·L(1−p)), L = ln or max(ln, floor); gradient of the
/// floored function (0 where clamped, and at the kink).
fn r_bce(p: f64, t: f64, floor: Option<f64>) -> (f64, f64) {
    let (pf, tf) = (fl(p), fl(t));
    let q = Float::with_val(P, 1u32 - pf.clone()); // exact at 300 bits
    let b = Float::with_val(P, 1u32 - tf.clone());
    let lf = |x: &Float| -> (Float, bool) {
        let l = x.clone().ln();
        match floor {
            Some(f) if l <= f => (fl(f), false),
            _ => (l, true),
        }
    };
    let mut v = fl(0.0);
    let mut g = fl(0.0);
    if tf != 0.0 {
        let (l, on) = lf(&pf);
        v -= Float::with_val(P, &tf * &l);
        if on {
            g -= Float::with_val(P, &tf / &pf);
        }
    }
    if b != 0.0 {
        let (l, on) = lf(&q);
        v -= Float::with_val(P, &b * &l);
        if on {
            g += Float::with_val(P, &b / &q);
        }
    }
    (odd(&v), odd(&g))
}

/// focal, finite z: α_t·q^γ·B and its derivative by the textbook chain rule
/// α_t·(γ·q^(γ−1)·q′·B + q^γ·B′) (the kernel uses a different, rearranged formula).
fn r_focal(z: f64, t: f64, alpha: Option<f64>, gamma: f64) -> (f64, f64) {
    let (zf, tf) = (fl(z), fl(t));
    let b = Float::with_val(P, 1u32 - tf.clone());
    let s = r_sigmoid(&zf);
    let sm = r_sigmoid(&Float::with_val(P, -zf.clone()));
    let alpha_t = match alpha {
        None => fl(1.0),
        Some(a) => Float::with_val(P, &tf * a) + Float::with_val(P, &b * (1.0 - a)),
    };
    if alpha_t == 0.0 {
        return (0.0, 0.0);
    }
    let q = Float::with_val(P, &tf * &sm) + Float::with_val(P, &b * &s);
    let dq =
        Float::with_val(P, 1u32 - Float::with_val(P, &tf * 2u32)) * Float::with_val(P, &s * &sm);
    let mut bb = fl(0.0);
    let mut db = fl(0.0);
    if tf != 0.0 {
        bb += Float::with_val(P, &tf * r_softplus(&Float::with_val(P, -zf.clone())));
        db -= Float::with_val(P, &tf * &sm);
    }
    if b != 0.0 {
        bb += Float::with_val(P, &b * r_softplus(&zf));
        db += Float::with_val(P, &b * &s);
    }
    let gf = fl(gamma);
    let qg = if gamma == 0.0 {
        fl(1.0)
    } else {
        Float::with_val(P, (&q).pow(&gf))
    };
    let v = Float::with_val(P, &alpha_t * &qg) * &bb;
    let mut inner = Float::with_val(P, &qg * &db);
    // (q = 0 only where MPFR's exponent range ends, |z| > 7e8: there the exact chain term is
    // below e^(−7e8)·|z| in magnitude, 0 in every dtype)
    if gamma != 0.0 && q != 0.0 {
        let qg1 = Float::with_val(P, (&q).pow(Float::with_val(P, &gf - 1u32)));
        inner += Float::with_val(P, &gf * &qg1) * Float::with_val(P, &dq * &bb);
    }
    let g = alpha_t * inner;
    (odd(&v), odd(&g))
}

// ---------------------------------------------------------------------------------------------
// Hand-computed values (exact results obvious).

#[test]
fn bce_hand_values() {
    // torch.nn.functional.binary_cross_entropy(torch.tensor([.5, .5, .25, 1., 0.],
    //   requires_grad=True), torch.tensor([1., 0., 0., 1., 0.]), reduction='none')
    //   -> [ln 2, ln 2, −ln(3/4), 0, 0]; grad [−2, 2, 4/3, −1, 1]
    //   (−t/p + (1−t)/(1−p); PyTorch's grad at p = 1, t = 1 is −1, at p = 0, t = 0 it is 1)
    let p = [0.5f32, 0.5, 0.25, 1.0, 0.0];
    let t = [1.0f32, 0.0, 0.0, 1.0, 0.0];
    let out: Output<f32, f32> = bce(&none(&p, &t), None).unwrap();
    let ln2 = std::f32::consts::LN_2;
    // −ln(3/4) = 0.28768207245178092744 (ln 4 − ln 3)
    assert_eq!(
        out.value,
        vec![ln2, ln2, 0.287_682_072_451_780_927_f64 as f32, 0.0, 0.0]
    );
    assert_eq!(g32(&out), vec![-2.0, 2.0, (4.0f64 / 3.0) as f32, -1.0, 1.0]);
    // mean of the five: torch ... reduction='mean' -> (2 ln 2 + ln(4/3))/5; grad /5
    let out: Output<f32, f32> = bce(&ClassArgs::new(&p, &t), None).unwrap();
    let exact = (2.0 * std::f64::consts::LN_2 + 0.287_682_072_451_780_927_f64) / 5.0;
    assert_eq!(out.value, vec![exact as f32]);
    assert_eq!(g32(&out)[0], -0.4);
}

#[test]
fn bce_infinities_and_absent_terms() {
    // t = 1, p = 0: −ln 0 = +inf, grad −1/0 = −inf; t = 0, p = 1: +inf, grad +inf;
    // soft t = 0.5 at p = 0: +inf (the t·ln p term), grad −inf.
    // torch.nn.functional.binary_cross_entropy clamps (−100): [100, 100, 50] — the floor is
    // our log_floor=−100 option, tested below.
    let p = [0.0f32, 1.0, 0.0, 1.0];
    let t = [1.0f32, 0.0, 0.5, 0.5];
    let out: Output<f32, f32> = bce(&none(&p, &t), None).unwrap();
    assert_eq!(out.value, vec![f32::INFINITY; 4]);
    assert_eq!(
        g32(&out),
        vec![
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::INFINITY
        ]
    );
}

#[test]
fn bce_log_floor_is_pytorch_clamp() {
    // torch.nn.functional.binary_cross_entropy(torch.tensor([0., 1., .5], requires_grad=True),
    //   torch.tensor([1., 0., 1.]), reduction='none') -> [100., 100., 0.6931]
    // With the floor, a clamped log has gradient 0 (we differentiate the floored function;
    // PyTorch divides by clamp(p·(1−p), 1e-12) and gives −1e12 there — a documented fact).
    let p = [0.0f32, 1.0, 0.5];
    let t = [1.0f32, 0.0, 1.0];
    let out: Output<f32, f32> = bce(&none(&p, &t), Some(-100.0)).unwrap();
    assert_eq!(out.value, vec![100.0, 100.0, std::f32::consts::LN_2]);
    assert_eq!(g32(&out), vec![0.0, 0.0, -2.0]);
    // soft target 0.25 at p = 0 with floor −100: −(0.25·(−100) + 0.75·ln 1) = 25; only the
    // (1−t) term is unclamped: grad (1−t)/(1−p) = 0.75
    let out: Output<f32, f32> = bce(&none(&[0.0f32], &[0.25f32]), Some(-100.0)).unwrap();
    assert_eq!(out.value, vec![25.0]);
    assert_eq!(g32(&out), vec![0.75]);
    // floor 0: every log is clamped; value 0; the kink at p = 0 for the (1−t) term selects 0
    let out: Output<f32, f32> = bce(&none(&[0.0f32, 0.5], &[0.0f32, 0.5]), Some(0.0)).unwrap();
    assert_eq!(out.value, vec![0.0, 0.0]);
    assert_eq!(g32(&out), vec![0.0, 0.0]);
}

#[test]
fn bce_t0_p0_gradient_is_one() {
    // DESIGN.md: at t = 0, p = 0 the gradient is 1 (−ln(1−p) has slope 1 at 0); with or
    // without a (negative) floor. torch: grad of binary_cross_entropy(tensor([0.]), zeros(1))
    //   -> 1 (its clamp 1e-12 does not bite since p(1−p) = 0 → ... PyTorch gives 1e12·0 + ...;
    //   we state the exact value).
    for floor in [None, Some(-100.0), Some(-1e-3)] {
        let out: Output<f32, f32> = bce(&none(&[0.0f32], &[0.0f32]), floor).unwrap();
        assert_eq!(out.value, vec![0.0]);
        assert_eq!(g32(&out), vec![1.0], "floor {floor:?}");
    }
}

#[test]
fn bce_tiny_probability_is_not_lost() {
    // t = 0, p = 2^-149 (f32's least subnormal): −ln(1 − p) = p + p²/2 + … → f32 2^-149. A
    // kernel computing ln(fl(1 − p)) in f64 gets ln(1) = 0 (1 − 2^-149 is not an f64).
    let p = [f32::from_bits(1)];
    let out: Output<f32, f32> = bce(&none(&p, &[0.0f32]), None).unwrap();
    assert_eq!(out.value, vec![f32::from_bits(1)]);
    // gradient 1/(1 − p) = 1 + p + … → 1.0f32
    assert_eq!(g32(&out), vec![1.0]);
}

#[test]
fn bce_gradient_near_p_equals_t() {
    // At p = t the gradient is exactly 0; one ulp away it is (p − t)/(p(1 − p)) with no
    // cancellation: p = 0.5 + 2^-24, t = 0.5 → 2^-24 / (0.25 − 2^-48) = 2^-22·(1 + 2^-46 + …)
    // → 2^-22 in f32.
    let p = [0.5f32, 0.5 + 2f32.powi(-24)];
    let t = [0.5f32, 0.5];
    let out: Output<f32, f32> = bce(&none(&p, &t), None).unwrap();
    assert_eq!(g32(&out), vec![0.0, 2f32.powi(-22)]);
}

#[test]
fn bce_logits_hand_values() {
    // torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([0., 0., 0.],
    //   requires_grad=True), torch.tensor([1., 0., .5]), reduction='none') -> [ln 2]*3;
    //   grad σ(z) − t = [−.5, .5, 0.]
    let z = [0.0f32; 3];
    let t = [1.0f32, 0.0, 0.5];
    let out: Output<f32, f32> = bce_logits(&none(&z, &t)).unwrap();
    let ln2 = std::f32::consts::LN_2;
    assert_eq!(out.value, vec![ln2; 3]);
    assert_eq!(g32(&out), vec![-0.5, 0.5, 0.0]);
    // pos_weight 3 at z = 0, t = 1: 3·ln 2, grad −3·σ(0) = −1.5
    // torch...(torch.zeros(1), torch.ones(1), pos_weight=torch.tensor([3.])) -> 2.0794
    let out: Output<f32, f32> =
        bce_logits(&none(&[0.0f32], &[1.0f32]).pos_weight(&[3.0f32])).unwrap();
    assert_eq!(out.value, vec![(3.0 * std::f64::consts::LN_2) as f32]);
    assert_eq!(g32(&out), vec![-1.5]);
}

#[test]
fn bce_logits_pos_weight_broadcast_matches_elementwise() {
    // logits [2, 3], pos_weight [3] broadcast over the last dim == the same weights repeated
    // (torch's pos_weight broadcasting)
    let z = [0.5f32, -1.0, 2.0, 3.0, 0.0, -4.0];
    let t = [1.0f32, 0.25, 0.0, 1.0, 1.0, 0.75];
    let pw = [2.0f32, 0.5, 10.0];
    let rep = [2.0f32, 0.5, 10.0, 2.0, 0.5, 10.0];
    for red in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        let a: Output<f32, f32> = bce_logits(
            &ClassArgs::new(&z, &t)
                .reduction(red)
                .pos_weight_last_dim(&pw),
        )
        .unwrap();
        let b: Output<f32, f32> =
            bce_logits(&ClassArgs::new(&z, &t).reduction(red).pos_weight(&rep)).unwrap();
        assert_eq!(a, b, "{red}");
    }
    // and through the case glue: pos_weight of shape [3] for logits [2, 3]
    let mut c = case2(
        "bce_logits",
        Dtype::F32,
        &[2, 3],
        "logit",
        &z.map(f64::from),
        &t.map(f64::from),
    );
    c.inputs.insert(
        "pos_weight".into(),
        Tensor::float(Dtype::F32, vec![3], pw.map(f64::from).to_vec()),
    );
    let r = evaluate(&c).unwrap();
    let b: Output<f32, f32> = bce_logits(&ClassArgs::new(&z, &t).pos_weight(&rep)).unwrap();
    assert_eq!(r.value.f().unwrap(), &[b.value[0] as f64]);
    assert_eq!(r.grad["logit"].shape, vec![2, 3]);
}

#[test]
fn hinge_hand_values_and_kink() {
    // torch.clamp(1 - y*s, min=0) for s = [.5, 2., -1., 1., -3.], y = [1, 1, 1, 1, -1]
    //   -> [0.5, 0., 2., 0. (the kink), 0.]; grad −y where 1 − y·s > 0, 0 at the kink
    //   (torch.clamp's backward at the boundary passes the gradient: −1; the Clarke element
    //   nearest 0 is 0)
    let s = [0.5f32, 2.0, -1.0, 1.0, -3.0];
    let y = [1i64, 1, 1, 1, -1];
    let out: Output<f32, f32> = hinge(&none(&s, &y), 1.0).unwrap();
    assert_eq!(out.value, vec![0.5, 0.0, 2.0, 0.0, 0.0]);
    assert_eq!(g32(&out), vec![-1.0, 0.0, -1.0, 0.0, 0.0]);
    // margin 0.25, y = −1, s = 0.5: max(0, 0.25 + 0.5) = 0.75, grad +1; mean of [0.75, 0]
    let out: Output<f32, f32> =
        hinge(&ClassArgs::new(&[0.5f32, -2.0], &[-1i64, -1]), 0.25).unwrap();
    assert_eq!(out.value, vec![0.375]);
    assert_eq!(g32(&out), vec![0.5, 0.0]);
    // infinities: s = −inf, y = 1 → inf, grad −1; s = +inf, y = 1 → 0, grad 0
    let out: Output<f32, f32> =
        hinge(&none(&[f32::NEG_INFINITY, f32::INFINITY], &[1i64, 1]), 1.0).unwrap();
    assert_eq!(out.value, vec![f32::INFINITY, 0.0]);
    assert_eq!(g32(&out), vec![-1.0, 0.0]);
}

#[test]
fn focal_hand_values() {
    // z = 0, t = 1, γ = 2, α none: p_t = ½, (1 − p_t)² = ¼, B = ln 2 → ln 2 / 4.
    // torchvision.ops.sigmoid_focal_loss(torch.zeros(1), torch.ones(1), alpha=-1, gamma=2,
    //   reduction='none') -> 0.1733
    // gradient: d/dz [σ(−z)²·softplus(−z)] at 0 = 2σ(−z)·(−σ(z)σ(−z))·ln 2 + σ(−z)²·(−σ(−z))
    //   = −ln 2 / 4 − 1/8
    let out: Output<f32, f32> = focal(&none(&[0.0f32], &[1.0f32]), None, 2.0).unwrap();
    let ln2 = std::f64::consts::LN_2;
    assert_eq!(out.value, vec![(ln2 / 4.0) as f32]);
    assert_eq!(g32(&out), vec![(-ln2 / 4.0 - 0.125) as f32]);
    // α = 0.25: α_t = 0.25 for t = 1, 0.75 for t = 0; α_t = 0 (α = 1, t = 0) gives exactly 0
    // even at z = +inf where B = inf
    let out: Output<f32, f32> = focal(&none(&[0.0f32], &[1.0f32]), Some(0.25), 2.0).unwrap();
    assert_eq!(out.value, vec![(ln2 / 16.0) as f32]);
    let out: Output<f32, f32> = focal(&none(&[f32::INFINITY], &[0.0f32]), Some(1.0), 0.5).unwrap();
    assert_eq!((out.value[0], g32(&out)[0]), (0.0, 0.0));
}

#[test]
fn focal_gamma_zero_is_alpha_weighted_bce_logits() {
    // DESIGN.md's metamorphic relation; α = 0.25 with t ∈ {0, 1} makes α_t ∈ {0.25, 0.75},
    // exact weights in every dtype. Extreme logits included (0⁰ = 1 where q underflows).
    let z = [
        0.0f32, 3.0, -3.0, 30.0, -30.0, 1000.0, -1000.0, 88.0, -104.0, 1e30,
    ];
    let t = [1.0f32, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
    let w: Vec<f32> = t
        .iter()
        .map(|&t| if t == 1.0 { 0.25 } else { 0.75 })
        .collect();
    for red in [Reduction::None, Reduction::Sum] {
        let f: Output<f32, f32> =
            focal(&ClassArgs::new(&z, &t).reduction(red), Some(0.25), 0.0).unwrap();
        let b: Output<f32, f32> =
            bce_logits(&ClassArgs::new(&z, &t).reduction(red).weight(&w)).unwrap();
        for (x, y) in f.value.iter().zip(&b.value) {
            assert!(
                Dtype::F32.ulps(*x as f64, *y as f64) <= 1.0,
                "{red}: {x} vs {y}"
            );
        }
        for (x, y) in g32(&f).iter().zip(&g32(&b)) {
            assert!(
                Dtype::F32.ulps(*x as f64, *y as f64) <= 1.0,
                "{red}: {x} vs {y}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FAILURES.md, against independent values.

#[test]
fn failures_bce_logits_infinite_logits() {
    // PyTorch #102894 / #135359: NaN. Exact: z = +inf, t = 1 → softplus(−inf) = 0, gradient
    // −σ(−inf) = 0 (the (1 − t) term is absent); z = −inf, t = 0.9 → 0.9·softplus(+inf) = inf,
    // gradient −0.9·σ(inf) + 0.1·σ(−inf) = −0.9.
    let z = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        f32::INFINITY,
    ];
    let t = [1.0f32, 0.9, 0.0, 0.0];
    let out: Output<f32, f32> = bce_logits(&none(&z, &t)).unwrap();
    assert_eq!(out.value, vec![0.0, f32::INFINITY, 0.0, f32::INFINITY]);
    assert_eq!(g32(&out), vec![0.0, -0.9, 0.0, 1.0]);
}

#[test]
fn failures_bce_logits_z30_gradient() {
    // PyTorch 2.15 CPU: exactly 0. Exact: −σ(−30) = −1/(1 + e^30) = −9.3576229688392e−14.
    let out: Output<f32, f32> = bce_logits(&none(&[30.0f32], &[1.0f32])).unwrap();
    let (_, g) = r_bce_logits(30.0, 1.0, 1.0);
    assert!((g + 9.3576229688392e-14).abs() < 1e-26, "{g:e}");
    assert_eq!(g32(&out), vec![g as f32]);
    // value softplus(−30) = 9.3576229688e-14 (= ln(1 + e^−30))
    assert_eq!(out.value, vec![r_bce_logits(30.0, 1.0, 1.0).0 as f32]);
}

#[test]
fn failures_bce_logits_soft_target_huge_negative_logit() {
    // PyTorch: 0.009765625. Exact: t = fl32(1e−6) = 9.99999997475242708e−7,
    // t·softplus(1e4) + (1 − t)·softplus(−1e4) = t·(1e4 + e^−1e4) + ~e^−1e4 = 1e4·t
    // = 0.00999999997475242708 → f32 0.01 (nearest f32 to 0.0099999999747).
    let t = [1e-6f32];
    let out: Output<f32, f32> = bce_logits(&none(&[-1e4f32], &t)).unwrap();
    let exact = 1e4 * (1e-6f32 as f64);
    assert!((exact - 0.0099999999747524).abs() < 1e-15);
    assert_eq!(out.value, vec![exact as f32]);
    assert_eq!(
        out.value[0] as f64,
        r_bce_logits(-1e4, 1e-6f32 as f64, 1.0).0 as f32 as f64
    );
    // gradient −t·σ(1e4) + (1 − t)·σ(−1e4) = −t (to 2^-14000)
    assert_eq!(g32(&out), vec![-1e-6f32]);
}

#[test]
fn failures_bce_logits_pos_weight_13773() {
    // PyTorch #13773: logits [0, −120], targets [0, 1], pos_weight → NaN. Exact, pos_weight 2:
    // [softplus(0), 2·softplus(120)] = [ln 2, 2·(120 + e^−120)]; mean = (ln 2 + 240)/2;
    // gradient /2: [σ(0)/2, −2σ(120)/2] = [0.25, −1 (to 1e−52)].
    let z = [0.0f32, -120.0];
    let t = [0.0f32, 1.0];
    let pw = [2.0f32, 2.0];
    let out: Output<f32, f32> = bce_logits(&ClassArgs::new(&z, &t).pos_weight(&pw)).unwrap();
    assert_eq!(
        out.value,
        vec![((std::f64::consts::LN_2 + 240.0) / 2.0) as f32]
    );
    assert_eq!(g32(&out), vec![0.25, -1.0]);
}

#[test]
fn failures_bce_near_zero_gradient_not_clamped() {
    // PyTorch #103316: BCELoss(σ(−50)) with t = 1: gradient through the clamp is wrong. Here,
    // on the probability: p = fl32(σ(−50)) ≈ 1.9287e−22, t = 1: value −ln p ≈ 50, gradient
    // −1/p, both against rug (no clamp).
    let p = (1.0 / (1.0 + (50.0f64).exp())) as f32; // test-side only: p is just an input
    let out: Output<f32, f32> = bce(&none(&[p], &[1.0f32]), None).unwrap();
    let (v, g) = r_bce(p as f64, 1.0, None);
    assert_eq!(out.value, vec![v as f32]);
    assert_eq!(g32(&out), vec![g as f32]);
    // floor −100 does not bite here (ln p ≈ −50 > −100): same gradient
    let out: Output<f32, f32> = bce(&none(&[p], &[1.0f32]), Some(-100.0)).unwrap();
    assert_eq!(g32(&out), vec![g as f32]);
}

#[test]
fn failures_focal_small_gamma_extreme_logits_no_nan() {
    // optax #1267 (γ = 0, logit 1000: NaN gradient), kornia #918 (γ = 0.5 at ±100: NaN from
    // pow). Exact values from rug (finite z).
    for (z, t, gamma) in [
        (1000.0f32, 1.0f32, 0.0),
        (-1000.0, 0.0, 0.0),
        (1000.0, 1.0, 0.5),
        (100.0, 1.0, 0.5),
        (-100.0, 0.0, 0.5),
        (100.0, 0.0, 0.5),
        (-100.0, 1.0, 0.5),
        (100.0, 1.0, 0.25),
        (30.0, 1.0, 0.1),
        (-1000.0, 1.0, 0.5),
    ] {
        let out: Output<f32, f32> = focal(&none(&[z], &[t]), Some(0.25), gamma).unwrap();
        let (v, g) = r_focal(z as f64, t as f64, Some(0.25), gamma);
        let (ov, og) = (out.value[0], g32(&out)[0]);
        assert!(
            !ov.is_nan() && !og.is_nan(),
            "z={z} t={t} γ={gamma}: {ov} {og}"
        );
        assert!(
            Dtype::F32.ulps(ov as f64, v) <= 2.0,
            "value z={z} t={t} γ={gamma}: {ov:e} vs {v:e}"
        );
        assert!(
            Dtype::F32.ulps(og as f64, g) <= 2.0,
            "grad z={z} t={t} γ={gamma}: {og:e} vs {g:e}"
        );
    }
    // infinite logits (the limits): t = 1, z = −inf: q → 1, value inf, gradient −α_t;
    // t = 1, z = +inf: 0 and 0; γ = 0.5
    let out: Output<f32, f32> = focal(
        &none(&[f32::NEG_INFINITY, f32::INFINITY], &[1.0f32, 1.0]),
        Some(0.25),
        0.5,
    )
    .unwrap();
    assert_eq!(out.value, vec![f32::INFINITY, 0.0]);
    assert_eq!(g32(&out), vec![-0.25, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// Sweeps over the extremes of each dtype against rug: the accuracy bar (value ≤ 1 ulp for a
// 16-bit output, ≤ 2 for f32; gradient ≤ 2 ulps).

fn logit_grid(d: Dtype) -> Vec<f64> {
    let mut base = vec![
        0.0,
        d.min_subnormal(),
        1e-30,
        1e-7,
        1e-3,
        0.1,
        0.5,
        1.0,
        2.0,
        5.0,
        9.0,
        11.0,
        17.0,
        18.5,
        25.0,
        30.0,
        35.9,
        36.0,
        36.1,
        37.0,
        40.0,
        50.0,
        87.0,
        100.0,
        200.0,
        700.0,
        750.0,
        1e4,
        1e6,
        1e30,
        d.max(),
    ];
    for dd in [d, Dtype::F32] {
        base.push(dd.exp_overflow_edge());
        base.push(dd.exp_subnormal_edge().abs());
        base.push(dd.exp_zero_edge().abs());
    }
    let mut v = Vec::new();
    for x in base {
        let r = d.round(x);
        for y in [r, -r, d.next_up(r), -d.next_up(r)] {
            if y.is_finite() && !v.contains(&y) {
                v.push(y);
            }
        }
    }
    v
}

fn target_grid(d: Dtype) -> Vec<f64> {
    let mut v: Vec<f64> = [
        0.0,
        d.min_subnormal(),
        1e-6,
        1e-3,
        0.1,
        0.25,
        0.5,
        0.75,
        0.9,
        1.0 - 1e-3,
        d.next_down(1.0),
        1.0,
    ]
    .iter()
    .map(|&x| d.round(x))
    .collect();
    v.dedup();
    v
}

struct Worst {
    what: &'static str,
    ulps: f64,
    at: String,
}

impl Worst {
    fn new(what: &'static str) -> Self {
        Worst {
            what,
            ulps: 0.0,
            at: String::new(),
        }
    }
    fn see(&mut self, d: Dtype, got: f64, exact: f64, at: impl FnOnce() -> String) {
        let u = d.ulps(got, exact);
        if u > self.ulps || (u.is_nan() && !self.ulps.is_nan()) {
            self.ulps = u;
            self.at = format!("{} (got {got:e}, exact {exact:e})", at());
        }
    }
    fn check(&self, bar: f64) {
        eprintln!("{}: worst {} ulps at {}", self.what, self.ulps, self.at);
        assert!(
            self.ulps <= bar,
            "{}: {} ulps > {bar} at {}",
            self.what,
            self.ulps,
            self.at
        );
    }
}

fn value_bar<O: Element>() -> f64 {
    if O::DTYPE == Dtype::F32 {
        2.0
    } else {
        1.0
    }
}

fn sweep_bce_logits<T: Element, O: Element>() {
    let d = T::DTYPE;
    let pws: Vec<f64> = [0.0, d.min_subnormal(), 1.0, 3.0, 1e4, d.max()]
        .iter()
        .map(|&x| d.round(x))
        .collect();
    let (mut z, mut t, mut pw) = (Vec::new(), Vec::new(), Vec::new());
    for &zz in &logit_grid(d) {
        for &tt in &target_grid(d) {
            for &ww in &pws {
                z.push(T::from_f64(zz));
                t.push(T::from_f64(tt));
                pw.push(T::from_f64(ww));
            }
        }
    }
    let out: Output<T, O> = bce_logits(&none(&z, &t).pos_weight(&pw)).unwrap();
    let g = out.grad.unwrap();
    let (mut wv, mut wg) = (
        Worst::new("bce_logits value"),
        Worst::new("bce_logits grad"),
    );
    for j in 0..z.len() {
        let (zz, tt, ww) = (z[j].to_f64(), t[j].to_f64(), pw[j].to_f64());
        let (v, gr) = r_bce_logits(zz, tt, ww);
        let at = || format!("{d} z={zz:e} t={tt:e} pw={ww:e}");
        wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
        wg.see(d, g[j].to_f64(), gr, at);
    }
    wv.check(value_bar::<O>());
    wg.check(2.0);
}

fn sweep_bce<T: Element, O: Element>() {
    let d = T::DTYPE;
    let mut probs = target_grid(d);
    for x in [1e-30, 1e-10, 0.3, 0.5 + 1e-3, 0.999] {
        probs.push(d.round(x));
    }
    for k in 1..4 {
        probs.push(d.from_ordinal(k));
        probs.push(d.from_ordinal(d.ordinal(1.0).unwrap() - k));
    }
    let targets = target_grid(d);
    for floor in [None, Some(-100.0), Some(-1.0), Some(-1e-3), Some(0.0)] {
        let (mut p, mut t) = (Vec::new(), Vec::new());
        for &pp in &probs {
            for &tt in &targets {
                p.push(T::from_f64(pp));
                t.push(T::from_f64(tt));
            }
            // p next to t as well (the gradient's zero crossing)
            p.push(T::from_f64(pp));
            t.push(T::from_f64(if pp < 1.0 { d.next_up(pp) } else { pp }));
        }
        let out: Output<T, O> = bce(&none(&p, &t), floor).unwrap();
        let g = out.grad.unwrap();
        let (mut wv, mut wg) = (Worst::new("bce value"), Worst::new("bce grad"));
        for j in 0..p.len() {
            let (pp, tt) = (p[j].to_f64(), t[j].to_f64());
            let (v, gr) = r_bce(pp, tt, floor);
            let at = || format!("{d} p={pp:e} t={tt:e} floor={floor:?}");
            wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
            wg.see(d, g[j].to_f64(), gr, at);
        }
        wv.check(value_bar::<O>());
        wg.check(2.0);
    }
}

fn sweep_focal<T: Element, O: Element>() {
    let d = T::DTYPE;
    for alpha in [None, Some(0.25), Some(1.0)] {
        for gamma in [0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 100.0] {
            let (mut z, mut t) = (Vec::new(), Vec::new());
            for &zz in &logit_grid(d) {
                for &tt in &target_grid(d) {
                    z.push(T::from_f64(zz));
                    t.push(T::from_f64(tt));
                }
            }
            let out: Output<T, O> = focal(&none(&z, &t), alpha, gamma).unwrap();
            let g = out.grad.unwrap();
            let (mut wv, mut wg) = (Worst::new("focal value"), Worst::new("focal grad"));
            for j in 0..z.len() {
                let (zz, tt) = (z[j].to_f64(), t[j].to_f64());
                let (v, gr) = r_focal(zz, tt, alpha, gamma);
                let at = || format!("{d} z={zz:e} t={tt:e} α={alpha:?} γ={gamma}");
                wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
                wg.see(d, g[j].to_f64(), gr, at);
            }
            wv.check(value_bar::<O>());
            wg.check(2.0);
        }
    }
}

fn sweep_hinge<T: Element, O: Element>() {
    let d = T::DTYPE;
    for margin in [1.0, 0.0, -2.5, 1e-3, 3e38] {
        let (mut s, mut y) = (Vec::new(), Vec::new());
        for &ss in &logit_grid(d) {
            for yy in [1i64, -1] {
                s.push(T::from_f64(ss));
                y.push(yy);
            }
        }
        let out: Output<T, O> = hinge(&none(&s, &y), margin).unwrap();
        let g = out.grad.unwrap();
        let (mut wv, mut wg) = (Worst::new("hinge value"), Worst::new("hinge grad"));
        for j in 0..s.len() {
            let ss = s[j].to_f64();
            let dd = Float::with_val(P, margin) - Float::with_val(P, ss * y[j] as f64);
            let (v, gr) = if dd > 0.0 {
                (odd(&dd), -(y[j] as f64))
            } else {
                (0.0, 0.0)
            };
            let at = || format!("{d} s={ss:e} y={} m={margin}", y[j]);
            wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
            wg.see(d, g[j].to_f64(), gr, at);
        }
        wv.check(value_bar::<O>());
        wg.check(2.0);
    }
}

macro_rules! sweeps {
    ($name:ident, $f:ident) => {
        #[test]
        fn $name() {
            $f::<f32, f32>();
            $f::<f16, f16>();
            $f::<f16, f32>();
            $f::<bf16, bf16>();
            $f::<bf16, f32>();
        }
    };
}

sweeps!(sweep_bce_logits_all_dtypes, sweep_bce_logits);
sweeps!(sweep_bce_all_dtypes, sweep_bce);
sweeps!(sweep_focal_all_dtypes, sweep_focal);
sweeps!(sweep_hinge_all_dtypes, sweep_hinge);

// ---------------------------------------------------------------------------------------------
// Policies: masks, weights, empty mean, cotangents, out_dtype, shapes.

#[test]
fn masked_nan_never_leaks() {
    let z = [0.0f32, f32::NAN, f32::INFINITY, f32::NAN];
    let t = [1.0f32, f32::NAN, 5.0, 0.5]; // 5.0 is out of range but masked
    let m = [1i64, 0, 0, 1];
    let w = [1.0f32, 1.0, 1.0, 0.0];
    let ln2 = std::f32::consts::LN_2;
    for red in [Reduction::None, Reduction::Sum, Reduction::Mean] {
        let args = ClassArgs::new(&z, &t).mask(&m).weight(&w).reduction(red);
        for kind in [
            Binary::BceLogits,
            Binary::Focal {
                alpha: None,
                gamma: 0.0,
            },
        ] {
            let out: Output<f32, f32> = kind.eval(&args).unwrap();
            // only element 0 is active: ln 2, gradient −½
            let want_v = if red == Reduction::None {
                vec![ln2, 0.0, 0.0, 0.0]
            } else {
                vec![ln2]
            };
            assert_eq!(out.value, want_v, "{kind:?} {red}");
            assert_eq!(g32(&out), vec![-0.5, 0.0, 0.0, 0.0], "{kind:?} {red}");
        }
        let p = [0.5f32, f32::NAN, 7.0, -1.0];
        let out: Output<f32, f32> = bce(
            &ClassArgs::new(&p, &t).mask(&m).weight(&w).reduction(red),
            None,
        )
        .unwrap();
        assert_eq!(g32(&out), vec![-2.0, 0.0, 0.0, 0.0]);
        let s = [0.0f32, f32::NAN, f32::INFINITY, f32::NAN];
        let y = [1i64, 7, 0, 1];
        let out: Output<f32, f32> = hinge(
            &ClassArgs::new(&s, &y).mask(&m).weight(&w).reduction(red),
            1.0,
        )
        .unwrap();
        assert_eq!(out.value[0], 1.0);
        assert_eq!(g32(&out), vec![-1.0, 0.0, 0.0, 0.0]);
    }
}

#[test]
fn empty_mean_is_zero_and_n0() {
    // everything masked: value 0 and gradient 0 (PyTorch: NaN)
    let z = [f32::NAN, 1.0];
    let t = [1.0f32, 0.0];
    let m = [0i64, 0];
    let out: Output<f32, f32> = bce_logits(&ClassArgs::new(&z, &t).mask(&m)).unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(g32(&out), vec![0.0, 0.0]);
    // N = 0: mean 0, sum 0, none empty; every loss
    let e: [f32; 0] = [];
    let ei: [i64; 0] = [];
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let want = if red == Reduction::None {
            vec![]
        } else {
            vec![0.0f32]
        };
        let a = ClassArgs::new(&e, &e).reduction(red);
        assert_eq!(bce::<f32, f32>(&a, None).unwrap().value, want);
        assert_eq!(bce_logits::<f32, f32>(&a).unwrap().value, want);
        assert_eq!(
            bce_logits::<f32, f32>(&a.pos_weight_last_dim(&[2.0]))
                .unwrap()
                .value,
            want
        );
        assert_eq!(focal::<f32, f32>(&a, None, 2.0).unwrap().value, want);
        let out = hinge::<f32, f32>(&ClassArgs::new(&e, &ei).reduction(red), 1.0).unwrap();
        assert_eq!(out.value, want);
        assert_eq!(out.grad, Some(vec![]));
    }
}

#[test]
fn weights_and_cotangents() {
    // weighted mean: w = [1, 3], z = 0, t = [1, 0]: (ln 2 + 3 ln 2)/4 = ln 2;
    // grad w·(σ(0) − t)/Σw = [−1/8, 3/8]; scalar cotangent 2 doubles it
    let z = [0.0f32, 0.0];
    let t = [1.0f32, 0.0];
    let w = [1.0f32, 3.0];
    let out: Output<f32, f32> =
        bce_logits(&ClassArgs::new(&z, &t).weight(&w).cotangent(&[2.0])).unwrap();
    assert_eq!(out.value, vec![std::f32::consts::LN_2]);
    assert_eq!(g32(&out), vec![-0.25, 0.75]);
    // none with a per-element cotangent: [−½·1·4, ½·3·(−1)]
    let out: Output<f32, f32> =
        bce_logits(&none(&z, &t).weight(&w).cotangent(&[4.0, -1.0])).unwrap();
    assert_eq!(g32(&out), vec![-2.0, -1.5]);
}

/// A two-input case of the given loss.
fn case2(loss: &str, dtype: Dtype, shape: &[usize], xname: &str, x: &[f64], t: &[f64]) -> Case {
    let mut c = Case::new(loss, dtype).unwrap();
    c.inputs.insert(
        xname.into(),
        Tensor::float(dtype, shape.to_vec(), x.to_vec()),
    );
    let target = if loss == "hinge" {
        Tensor::int(shape.to_vec(), t.iter().map(|&v| v as i64).collect())
    } else {
        Tensor::float(dtype, shape.to_vec(), t.to_vec())
    };
    c.inputs.insert("target".into(), target);
    c
}

const LOSSES: [(&str, &str); 4] = [
    ("bce", "prob"),
    ("bce_logits", "logit"),
    ("hinge", "score"),
    ("focal", "logit"),
];

#[test]
fn implemented_and_evaluate_out_dtype_f32() {
    for (loss, x) in LOSSES {
        assert!(implemented(loss));
        // f16 inputs, f32 value (autocast): z/p = 0.5, t = 1:
        //   bce: ln 2; bce_logits: softplus(−½) = 0.47407698418010669; hinge: 0.5;
        //   focal (γ = 2): σ(−½)²·softplus(−½) = 0.37754066879814543²·0.474076984180106
        let mut c = case2(loss, Dtype::F16, &[1], x, &[0.5], &[1.0]);
        c.out_dtype = Dtype::F32;
        let r = evaluate(&c).unwrap();
        assert_eq!(
            r.value.dtype,
            losscheck::core::TensorDtype::Float(Dtype::F32)
        );
        assert_eq!(r.value.shape, Vec::<usize>::new());
        let exact = match loss {
            "bce" => std::f64::consts::LN_2,
            "bce_logits" => 0.474_076_984_180_106_69,
            "hinge" => 0.5,
            _ => 0.377_540_668_798_145_43f64.powi(2) * 0.474_076_984_180_106_69,
        };
        let v = r.value.f().unwrap()[0];
        assert!(Dtype::F32.ulps(v, exact) <= 1.0, "{loss}: {v} vs {exact}");
        let g = &r.grad[x];
        assert_eq!(g.dtype, losscheck::core::TensorDtype::Float(Dtype::F16));
        // f16 output
        c.out_dtype = Dtype::F16;
        let r = evaluate(&c).unwrap();
        assert!(
            Dtype::F16.ulps(r.value.f().unwrap()[0], exact) <= 1.0,
            "{loss}"
        );
    }
}

#[test]
fn scalar_and_nd_shapes() {
    for (loss, x) in LOSSES {
        // shape []
        let mut c = case2(loss, Dtype::Bf16, &[], x, &[0.5], &[1.0]);
        c.set_reduction(Reduction::None);
        let r = evaluate(&c).unwrap();
        assert_eq!(r.value.shape, Vec::<usize>::new(), "{loss}");
        assert_eq!(r.grad[x].shape, Vec::<usize>::new(), "{loss}");
        // [2, 0, 3]: N = 0 — mean 0
        let c = case2(loss, Dtype::F32, &[2, 0, 3], x, &[], &[]);
        let r = evaluate(&c).unwrap();
        assert_eq!(r.value.f().unwrap(), &[0.0], "{loss}");
        assert_eq!(r.grad[x].shape, vec![2, 0, 3]);
        // [2, 2] none keeps the shape
        let mut c = case2(loss, Dtype::F16, &[2, 2], x, &[0.5; 4], &[1.0; 4]);
        c.set_reduction(Reduction::None);
        let r = evaluate(&c).unwrap();
        assert_eq!(r.value.shape, vec![2, 2], "{loss}");
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid input: Err naming input, index and value.

fn msg<T>(r: Result<T, LossError>) -> String {
    match r {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
            e.message
        }
        Ok(_) => panic!("expected an error"),
    }
}

fn mentions(m: &str, words: &[&str]) {
    for w in words {
        assert!(m.contains(w), "{m:?} does not mention {w:?}");
    }
}

#[test]
fn typed_api_invalid_input() {
    let x = [0.5f32, 0.5];
    // target outside [0, 1]
    let m = msg(bce::<f32, f32>(&ClassArgs::new(&x, &[1.0f32, 1.5]), None));
    mentions(&m, &["target", "[1]", "1.5"]);
    let m = msg(bce_logits::<f32, f32>(&ClassArgs::new(
        &x,
        &[-0.25f32, 1.0],
    )));
    mentions(&m, &["target", "[0]", "-0.25"]);
    let m = msg(focal::<f32, f32>(
        &ClassArgs::new(&x, &[0.0f32, 2.0]),
        None,
        2.0,
    ));
    mentions(&m, &["target", "[1]", "2"]);
    // prob outside [0, 1]
    let m = msg(bce::<f32, f32>(
        &ClassArgs::new(&[0.5f32, 1.25], &[1.0f32, 1.0]),
        None,
    ));
    mentions(&m, &["prob", "[1]", "1.25"]);
    // hinge label
    let m = msg(hinge::<f32, f32>(&ClassArgs::new(&x, &[1i64, 0]), 1.0));
    mentions(&m, &["target", "[1]", "0"]);
    // pos_weight
    for (pw, shown) in [(-1.0f32, "-1"), (f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let m = msg(bce_logits::<f32, f32>(
            &ClassArgs::new(&x, &[1.0f32, 1.0]).pos_weight(&[1.0, pw]),
        ));
        mentions(&m, &["pos_weight", "[1]", shown]);
        let m = msg(bce_logits::<f32, f32>(
            &ClassArgs::new(&x, &[1.0f32, 1.0]).pos_weight_last_dim(&[pw]),
        ));
        mentions(&m, &["pos_weight", "[0]", shown]);
    }
    let m = msg(bce_logits::<f32, f32>(
        &ClassArgs::new(&x, &[1.0f32, 1.0]).pos_weight(&[1.0]),
    ));
    mentions(&m, &["pos_weight"]);
    let m = msg(bce_logits::<f32, f32>(
        &ClassArgs::new(&[0.0f32; 3], &[1.0f32; 3]).pos_weight_last_dim(&[1.0, 1.0]),
    ));
    mentions(&m, &["pos_weight"]);
    // an elementwise pos_weight at a masked position may hold anything
    assert!(bce_logits::<f32, f32>(
        &ClassArgs::new(&x, &[1.0f32, 1.0])
            .pos_weight(&[1.0, -1.0])
            .mask(&[1, 0])
    )
    .is_ok());
    // lengths
    let m = msg(bce::<f32, f32>(&ClassArgs::new(&x, &[1.0f32]), None));
    mentions(&m, &["target", "1", "2"]);
    // params
    mentions(
        &msg(bce::<f32, f32>(&ClassArgs::new(&x, &x), Some(0.5))),
        &["log_floor", "0.5"],
    );
    mentions(
        &msg(focal::<f32, f32>(&ClassArgs::new(&x, &x), Some(1.5), 2.0)),
        &["alpha", "1.5"],
    );
    mentions(
        &msg(focal::<f32, f32>(&ClassArgs::new(&x, &x), None, -1.0)),
        &["gamma", "-1"],
    );
    mentions(
        &msg(focal::<f32, f32>(&ClassArgs::new(&x, &x), None, f64::NAN)),
        &["gamma", "NaN"],
    );
    mentions(
        &msg(hinge::<f32, f32>(
            &ClassArgs::new(&x, &[1i64, 1]),
            f64::INFINITY,
        )),
        &["margin", "inf"],
    );
    // weights / mask via Plan
    mentions(
        &msg(bce::<f32, f32>(
            &ClassArgs::new(&x, &x).weight(&[1.0, -2.0]),
            None,
        )),
        &["weight", "[1]", "-2"],
    );
    mentions(
        &msg(hinge::<f32, f32>(
            &ClassArgs::new(&x, &[1i64, 1]).mask(&[1, 3]),
            1.0,
        )),
        &["mask", "[1]", "3"],
    );
    // pos_weight only for bce_logits
    mentions(
        &msg(focal::<f32, f32>(
            &ClassArgs::new(&x, &x).pos_weight(&[1.0, 1.0]),
            None,
            2.0,
        )),
        &["pos_weight"],
    );
    // NaN data is not an error: it propagates
    let out: Output<f32, f32> = bce(&none(&[f32::NAN], &[0.5f32]), None).unwrap();
    assert!(out.value[0].is_nan() && g32(&out)[0].is_nan());
    let out: Output<f32, f32> = bce_logits(&none(&[0.0f32], &[f32::NAN])).unwrap();
    assert!(out.value[0].is_nan() && g32(&out)[0].is_nan());
    let out: Output<f32, f32> = focal(&none(&[f32::NAN], &[1.0f32]), Some(0.5), 0.0).unwrap();
    assert!(out.value[0].is_nan() && g32(&out)[0].is_nan());
}

#[test]
fn case_level_invalid_input() {
    let c = case2("bce", Dtype::F32, &[2], "prob", &[0.5, 1.5], &[1.0, 1.0]);
    mentions(&msg(evaluate(&c)), &["prob", "[1]", "1.5"]);
    let c = case2("hinge", Dtype::F32, &[2], "score", &[0.5, 1.5], &[1.0, 2.0]);
    mentions(&msg(evaluate(&c)), &["target", "[1]", "2"]);
    let mut c = case2(
        "bce_logits",
        Dtype::F16,
        &[2, 2],
        "logit",
        &[0.0; 4],
        &[1.0; 4],
    );
    c.inputs.insert(
        "pos_weight".into(),
        Tensor::float(Dtype::F16, vec![2], vec![1.0, -3.0]),
    );
    mentions(&msg(evaluate(&c)), &["pos_weight", "[1]", "-3"]);
    c.inputs.insert(
        "pos_weight".into(),
        Tensor::float(Dtype::F16, vec![3], vec![1.0; 3]),
    );
    mentions(&msg(evaluate(&c)), &["pos_weight"]);
    let mut c = case2("focal", Dtype::F32, &[1], "logit", &[0.0], &[1.0]);
    c.params.insert("gamma".into(), ParamValue::Float(-0.5));
    mentions(&msg(evaluate(&c)), &["gamma"]);
    let mut c = case2("bce", Dtype::F32, &[1], "prob", &[0.5], &[1.0]);
    c.params
        .insert("log_floor".into(), ParamValue::Float(-100.0));
    assert!(evaluate(&c).is_ok());
    c.params.insert("log_floor".into(), ParamValue::Float(1.0));
    mentions(&msg(evaluate(&c)), &["log_floor"]);
}

// ---------------------------------------------------------------------------------------------
// Random sweeps (bit-uniform logits, random soft targets and weights) and the gradients' zero
// crossings, against rug.

use losscheck::core::rng::SplitMix64;

/// A random value of the dtype: bit-uniform over finite values half the time, else a
/// scaled-normal-like magnitude 2^(±6·u) (the typical range).
fn rand_logit(d: Dtype, r: &mut SplitMix64) -> f64 {
    if r.next_u64() & 1 == 0 {
        let inf = d.ordinal(f64::INFINITY).unwrap();
        d.from_ordinal(r.below(2 * inf as u64 - 1) as i64 - (inf - 1))
    } else {
        d.round(r.signed_unit() * libm::exp2(6.0 * r.signed_unit()))
    }
}

fn rand_target(d: Dtype, r: &mut SplitMix64) -> f64 {
    match r.below(4) {
        0 => d.round(r.next_f64()),
        1 => d.round(libm::exp2(-40.0 * r.next_f64())), // near 0
        2 => d.round(1.0 - libm::exp2(-30.0 * r.next_f64())), // near 1
        _ => [0.0, 1.0, 0.5][r.below(3) as usize],
    }
}

fn random_sweep<T: Element, O: Element>(seed: u64) {
    let d = T::DTYPE;
    let mut r = SplitMix64::new(seed);
    let n = 4000;
    let (mut z, mut t, mut pw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        z.push(T::from_f64(rand_logit(d, &mut r)));
        t.push(T::from_f64(rand_target(d, &mut r)));
        pw.push(T::from_f64(
            d.round(libm::exp2(20.0 * r.signed_unit()).min(d.max())),
        ));
    }
    let out: Output<T, O> = bce_logits(&none(&z, &t).pos_weight(&pw)).unwrap();
    let g = out.grad.unwrap();
    let (mut wv, mut wg) = (
        Worst::new("random bce_logits value"),
        Worst::new("random bce_logits grad"),
    );
    for j in 0..n {
        let (zz, tt, ww) = (z[j].to_f64(), t[j].to_f64(), pw[j].to_f64());
        let (v, gr) = r_bce_logits(zz, tt, ww);
        let at = || format!("{d} z={zz:e} t={tt:e} pw={ww:e}");
        wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
        wg.see(d, g[j].to_f64(), gr, at);
    }
    wv.check(value_bar::<O>());
    wg.check(2.0);
    // bce on random probabilities
    let p: Vec<T> = (0..n)
        .map(|_| T::from_f64(rand_target(d, &mut r)))
        .collect();
    for floor in [None, Some(-100.0), Some(-2.0)] {
        let out: Output<T, O> = bce(&none(&p, &t), floor).unwrap();
        let g = out.grad.unwrap();
        let (mut wv, mut wg) = (
            Worst::new("random bce value"),
            Worst::new("random bce grad"),
        );
        for j in 0..n {
            let (pp, tt) = (p[j].to_f64(), t[j].to_f64());
            let (v, gr) = r_bce(pp, tt, floor);
            let at = || format!("{d} p={pp:e} t={tt:e} floor={floor:?}");
            wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
            wg.see(d, g[j].to_f64(), gr, at);
        }
        wv.check(value_bar::<O>());
        wg.check(2.0);
    }
    // focal with random params
    for _ in 0..6 {
        let alpha = if r.below(3) == 0 {
            None
        } else {
            Some(r.next_f64())
        };
        let gamma = [0.0, 0.5, 2.0, r.next_f64() * 8.0][r.below(4) as usize];
        let out: Output<T, O> = focal(&none(&z, &t), alpha, gamma).unwrap();
        let g = out.grad.unwrap();
        let (mut wv, mut wg) = (
            Worst::new("random focal value"),
            Worst::new("random focal grad"),
        );
        for j in 0..n {
            let (zz, tt) = (z[j].to_f64(), t[j].to_f64());
            let (v, gr) = r_focal(zz, tt, alpha, gamma);
            let at = || format!("{d} z={zz:e} t={tt:e} α={alpha:?} γ={gamma}");
            wv.see(O::DTYPE, out.value[j].to_f64(), v, at);
            wg.see(d, g[j].to_f64(), gr, at);
        }
        wv.check(value_bar::<O>());
        wg.check(2.0);
    }
}

#[test]
fn random_sweeps_all_dtypes() {
    random_sweep::<f32, f32>(1);
    random_sweep::<f16, f16>(2);
    random_sweep::<f16, f32>(3);
    random_sweep::<bf16, bf16>(4);
    random_sweep::<bf16, f32>(5);
}

/// The logits nearest the zero crossing z* = ln(pw·t/(1 − t)) of the bce_logits gradient
/// (±8 dtype values around it), where −pw·t·σ(−z) and (1 − t)·σ(z) cancel.
fn zero_crossing<T: Element>() {
    let d = T::DTYPE;
    let mut r = SplitMix64::new(77);
    let (mut z, mut t, mut pw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..300 {
        let tt = d.round(r.next_f64().clamp(1e-3, 0.999));
        let ww = if r.below(2) == 0 {
            1.0
        } else {
            d.round(libm::exp2(10.0 * r.signed_unit()))
        };
        let c = d.round(libm::log(ww * tt / (1.0 - tt)));
        let k0 = d.ordinal(c).unwrap();
        for k in -8..=8 {
            z.push(T::from_f64(d.from_ordinal(k0 + k)));
            t.push(T::from_f64(tt));
            pw.push(T::from_f64(ww));
        }
    }
    let out: Output<T, f32> = bce_logits(&none(&z, &t).pos_weight(&pw)).unwrap();
    let g = out.grad.unwrap();
    let mut wg = Worst::new("bce_logits grad at its zero crossing");
    for j in 0..z.len() {
        let (zz, tt, ww) = (z[j].to_f64(), t[j].to_f64(), pw[j].to_f64());
        let (_, gr) = r_bce_logits(zz, tt, ww);
        wg.see(d, g[j].to_f64(), gr, || {
            format!("{d} z={zz:e} t={tt:e} pw={ww:e}")
        });
    }
    wg.check(2.0);
    // the same logits for focal (soft targets): its gradient's own zero crossing is elsewhere,
    // but these are typical soft-target cases
    for gamma in [0.5, 2.0] {
        let out: Output<T, f32> = focal(&none(&z, &t), Some(0.25), gamma).unwrap();
        let g = out.grad.unwrap();
        let mut wg = Worst::new("focal grad near the bce crossing");
        for j in 0..z.len() {
            let (zz, tt) = (z[j].to_f64(), t[j].to_f64());
            let (_, gr) = r_focal(zz, tt, Some(0.25), gamma);
            wg.see(d, g[j].to_f64(), gr, || {
                format!("{d} z={zz:e} t={tt:e} γ={gamma}")
            });
        }
        wg.check(2.0);
    }
}

#[test]
fn gradient_zero_crossings_all_dtypes() {
    zero_crossing::<f32>();
    zero_crossing::<f16>();
    zero_crossing::<bf16>();
}

/// The focal gradient's own zero crossing for soft targets (where γ(1−2t)·r·B and B′ have
/// opposite signs and cancel): located by bisection on the rug reference, then the 17 dtype
/// values around it, measured against rug. The accuracy bar there includes DESIGN.md's
/// conditioning allowance κ·2^-53·|exact| = 2^-53·Σ|terms| (an inherent cancellation of the
/// defining sum, which no f64 kernel can beat); the measured worst case is printed.
fn focal_crossing<T: Element>() {
    let d = T::DTYPE;
    let mut r = SplitMix64::new(99);
    let mut worst = 0.0f64;
    let mut worst_at = String::new();
    for _ in 0..60 {
        let t = d.round(0.02 + 0.96 * r.next_f64());
        let gamma = [0.5, 1.0, 2.0, 5.0][r.below(4) as usize];
        let alpha = Some(0.25);
        // the gradient at z → −inf is ≈ −α_t·t^γ·t·(…) < 0 for t > 0 and > 0 at +inf: find a
        // sign change on a coarse grid, then bisect
        let grid: Vec<f64> = (-400..=400).map(|k| k as f64 * 0.05).collect();
        let sgn = |z: f64| r_focal(z, t, alpha, gamma).1.signum();
        let Some(w) = grid.windows(2).find(|w| sgn(w[0]) != sgn(w[1])) else {
            continue;
        };
        let (mut lo, mut hi) = (w[0], w[1]);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if sgn(mid) == sgn(lo) {
                lo = mid
            } else {
                hi = mid
            }
        }
        let k0 = d.ordinal(d.round(lo)).unwrap();
        let z: Vec<T> = (-8..=8)
            .map(|k| T::from_f64(d.from_ordinal(k0 + k)))
            .collect();
        let tt = vec![T::from_f64(t); z.len()];
        let out: Output<T, f32> = focal(&none(&z, &tt), alpha, gamma).unwrap();
        let g = out.grad.unwrap();
        for j in 0..z.len() {
            let zz = z[j].to_f64();
            let (_, e) = r_focal(zz, t, alpha, gamma);
            let got = g[j].to_f64();
            let u = d.ulps(got, e);
            // conditioning allowance: |terms| ≤ α_t·q^γ·(|γ(1−2t)·r·B| + |B′|) ≤ 2·max(|B|, 1)
            // bounded generously by the reference's own scale at this z
            let scale = (r_focal(zz, t, alpha, gamma).0.abs() * gamma + 1.0) * 2f64.powi(-53);
            let allowed = 2.0 + scale / d.ulp_at(e);
            if u > worst {
                worst = u;
                worst_at = format!("{d} z={zz:e} t={t:e} γ={gamma} got {got:e} exact {e:e}");
            }
            assert!(
                u <= allowed,
                "{u} ulps > {allowed} at {d} z={zz:e} t={t:e} γ={gamma}: {got:e} vs {e:e}"
            );
        }
    }
    eprintln!("focal grad at its zero crossing: worst {worst} ulps at {worst_at}");
}

#[test]
fn focal_gradient_zero_crossing_all_dtypes() {
    focal_crossing::<f32>();
    focal_crossing::<f16>();
    focal_crossing::<bf16>();
}
