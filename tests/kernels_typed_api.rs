//! The regression kernels' typed API and case-level glue on small cases whose exact result is
//! obvious. Each expected value is written by hand (with the PyTorch expression beside it, or
//! the exact arithmetic where PyTorch has no such loss or disagrees by policy) — none is
//! produced by the code under test.

#![allow(clippy::excessive_precision)] // exact decimal expansions of the expected values

use half::{bf16, f16};
use losscheck::core::TensorDtype;
use losscheck::kernels::evaluate;
use losscheck::kernels::regression::{
    huber, log_cosh, mae, mse, quantile, ElementwiseArgs, Output,
};
use losscheck::{Case, Dtype, Element, Reduction, Tensor};

fn f32s(out: &Option<Vec<f32>>) -> Vec<f32> {
    out.clone().expect("gradient requested")
}

// ---- hand-computed values

#[test]
fn mse_mean_sum_none() {
    let p = [1.0f32, 2.0];
    let t = [0.0f32, 0.0];
    // torch.nn.functional.mse_loss(torch.tensor([1.,2.], requires_grad=True), torch.zeros(2))
    //   -> 2.5; .backward() -> grad [1., 2.]
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(out.value, vec![2.5]);
    assert_eq!(f32s(&out.grad_pred), vec![1.0, 2.0]);
    assert_eq!(f32s(&out.grad_target), vec![-1.0, -2.0]);
    // torch.nn.functional.mse_loss(..., reduction='sum') -> 5.; grad [2., 4.]
    let out: Output<f32, f32> =
        mse(&ElementwiseArgs::new(&p, &t).reduction(Reduction::Sum)).unwrap();
    assert_eq!(out.value, vec![5.0]);
    assert_eq!(f32s(&out.grad_pred), vec![2.0, 4.0]);
    // torch.nn.functional.mse_loss(..., reduction='none') -> [1., 4.];
    //   .backward(torch.ones(2)) -> [2., 4.]
    let out: Output<f32, f32> =
        mse(&ElementwiseArgs::new(&p, &t).reduction(Reduction::None)).unwrap();
    assert_eq!(out.value, vec![1.0, 4.0]);
    assert_eq!(f32s(&out.grad_pred), vec![2.0, 4.0]);
}

#[test]
fn mae_kink_gradient_is_zero() {
    let p = [1.0f32, -2.0, 0.0, 3.0];
    let t = [0.0f32; 4];
    // torch.nn.functional.l1_loss(torch.tensor([1.,-2.,0.,3.], requires_grad=True), torch.zeros(4))
    //   -> 1.5; grad [0.25, -0.25, 0., 0.25] (sign(0) = 0: the Clarke element nearest 0)
    let out: Output<f32, f32> = mae(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(out.value, vec![1.5]);
    assert_eq!(f32s(&out.grad_pred), vec![0.25, -0.25, 0.0, 0.25]);
    assert_eq!(f32s(&out.grad_target), vec![-0.25, 0.25, 0.0, -0.25]);
    // r = 0 with pred = target ≠ 0: both gradients 0 (the coupled pair (s, −s) with s = 0)
    let out: Output<f32, f32> = mae(&ElementwiseArgs::new(&[5.0f32], &[5.0f32])).unwrap();
    assert_eq!(
        (
            out.value[0],
            f32s(&out.grad_pred)[0],
            f32s(&out.grad_target)[0]
        ),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn huber_both_branches_and_infinities() {
    let p = [0.5f32, 3.0, -2.0, 1.0];
    let t = [0.0f32; 4];
    // torch.nn.functional.huber_loss(torch.tensor([.5,3.,-2.,1.], requires_grad=True),
    //   torch.zeros(4), delta=1.0, reduction='sum') -> 0.125 + 2.5 + 1.5 + 0.5 = 4.625;
    //   grad [0.5, 1., -1., 1.] (|r| = δ is on the quadratic side: r = 1)
    let args = ElementwiseArgs::new(&p, &t).reduction(Reduction::Sum);
    let out: Output<f32, f32> = huber(&args, 1.0).unwrap();
    assert_eq!(out.value, vec![4.625]);
    assert_eq!(f32s(&out.grad_pred), vec![0.5, 1.0, -1.0, 1.0]);
    // δ = 2: torch.nn.functional.huber_loss(torch.tensor([inf, -inf, 3.]), torch.zeros(3),
    //   delta=2.0, reduction='none') -> [inf, inf, 4.]; grad [2., -2., 2.] (±δ at ±inf)
    let p = [f32::INFINITY, f32::NEG_INFINITY, 3.0];
    let t = [0.0f32; 3];
    let out: Output<f32, f32> = huber(
        &ElementwiseArgs::new(&p, &t).reduction(Reduction::None),
        2.0,
    )
    .unwrap();
    assert_eq!(out.value, vec![f32::INFINITY, f32::INFINITY, 4.0]);
    assert_eq!(f32s(&out.grad_pred), vec![2.0, -2.0, 2.0]);
    assert_eq!(f32s(&out.grad_target), vec![-2.0, 2.0, -2.0]);
}

#[test]
fn quantile_sides_and_kink() {
    // u = target − pred = [1, −2, 0], τ = 0.25: l = max(τu, (τ−1)u) = [0.25, 1.5, 0] -> sum 1.75
    // torch: u = t - p; torch.maximum(0.25*u, -0.75*u).sum(); ∂/∂pred = [−τ, 1−τ, 0] (the kink
    //   u = 0 takes 0, the Clarke element nearest 0)
    let p = [0.0f32, 2.0, 1.0];
    let t = [1.0f32, 0.0, 1.0];
    let out: Output<f32, f32> = quantile(
        &ElementwiseArgs::new(&p, &t).reduction(Reduction::Sum),
        0.25,
    )
    .unwrap();
    assert_eq!(out.value, vec![1.75]);
    assert_eq!(f32s(&out.grad_pred), vec![-0.25, 0.75, 0.0]);
    assert_eq!(f32s(&out.grad_target), vec![0.25, -0.75, 0.0]);
    // u = ±inf: the slope of that side; value inf
    let p = [f32::NEG_INFINITY, f32::INFINITY];
    let t = [0.0f32; 2];
    let out: Output<f32, f32> = quantile(
        &ElementwiseArgs::new(&p, &t).reduction(Reduction::None),
        0.25,
    )
    .unwrap();
    assert_eq!(out.value, vec![f32::INFINITY, f32::INFINITY]);
    assert_eq!(f32s(&out.grad_pred), vec![-0.25, 0.75]);
}

#[test]
fn log_cosh_tiny_moderate_huge_infinite() {
    let p = [
        0.0f32,
        2f32.powi(-60),
        1.0,
        0.5,
        100.0,
        1.0e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let t = [0.0f32; 8];
    let out: Output<f32, f32> =
        log_cosh(&ElementwiseArgs::new(&p, &t).reduction(Reduction::None)).unwrap();
    // torch.log(torch.cosh(torch.tensor(x, dtype=torch.float64))) for x = 1, .5, 100 (mpmath, 40
    // digits: 0.43378083048302718702..., 0.12011450695827752463..., 99.306852819440054690...);
    // log cosh(2^-60) = 2^-121·(1 − 2^-120/6 + …), whose f32 rounding is 2^-121 (a naive
    // log(cosh(r)) gives 0); log cosh(1e30) = 1e30 − ln 2 (rounds back to 1e30f32); ±inf -> inf.
    let expect = [
        0.0f32,
        2f32.powi(-121),
        0.433_780_830_483_027_187_f64 as f32,
        0.120_114_506_958_277_525_f64 as f32,
        99.306_852_819_440_054_69_f64 as f32,
        1.0e30f32,
        f32::INFINITY,
        f32::INFINITY,
    ];
    assert_eq!(out.value, expect);
    // tanh: mpmath tanh(1) = 0.76159415595576488812, tanh(.5) = 0.46211715726000975850
    let g = [
        0.0f32,
        2f32.powi(-60),
        0.761_594_155_955_764_888_f64 as f32,
        0.462_117_157_260_009_758_f64 as f32,
        1.0,
        1.0,
        1.0,
        -1.0,
    ];
    assert_eq!(f32s(&out.grad_pred), g);
    assert_eq!(f32s(&out.grad_target), g.map(|x| -x));
}

// ---- weights, masks, the policies

#[test]
fn weighted_mean_divides_by_the_weight_sum() {
    let p = [1.0f32, 2.0, 3.0];
    let t = [0.0f32; 3];
    let w = [1.0f32, 0.0, 3.0];
    // w = torch.tensor([1.,0.,3.]); (w*(p-t)**2).sum()/w.sum() = (1 + 27)/4 = 7.;
    //   grad w·2r/Σw = [0.5, 0., 4.5]
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t).weight(&w)).unwrap();
    assert_eq!(out.value, vec![7.0]);
    assert_eq!(f32s(&out.grad_pred), vec![0.5, 0.0, 4.5]);
    // none: w·l = [1., 0., 27.]
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t)
        .weight(&w)
        .reduction(Reduction::None))
    .unwrap();
    assert_eq!(out.value, vec![1.0, 0.0, 27.0]);
    assert_eq!(f32s(&out.grad_pred), vec![2.0, 0.0, 18.0]);
}

#[test]
fn masked_and_zero_weight_nan_inf_do_not_leak() {
    let p = [1.0f32, f32::NAN, f32::INFINITY, f32::NAN];
    let t = [0.0f32, 0.0, f32::INFINITY, 0.0];
    let m = [1i64, 0, 0, 1];
    let w = [1.0f32, 1.0, 1.0, 0.0];
    for loss in ["mse", "mae", "huber", "quantile", "log_cosh"] {
        for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let args = ElementwiseArgs::new(&p, &t)
                .mask(&m)
                .weight(&w)
                .reduction(red);
            let out: Output<f32, f32> = run(loss, &args);
            for v in &out.value {
                assert!(v.is_finite(), "{loss} {red}: {:?}", out.value);
            }
            if red != Reduction::None {
                // only element 0 is active: mean = sum = l(1) for every loss
                let l0 = run(loss, &ElementwiseArgs::new(&p[..1], &t[..1])).value[0];
                assert_eq!(out.value, vec![l0], "{loss} {red}");
            } else {
                assert_eq!(&out.value[1..], &[0.0, 0.0, 0.0], "{loss}");
            }
            for g in [f32s(&out.grad_pred), f32s(&out.grad_target)] {
                assert!(g[0] != 0.0 && g[0].is_finite(), "{loss} {red}: {g:?}");
                assert_eq!(&g[1..], &[0.0, 0.0, 0.0], "{loss} {red}");
            }
        }
    }
}

#[test]
fn empty_mean_is_zero() {
    let p = [1.0f32, f32::NAN, f32::INFINITY];
    let t = [0.0f32, 1.0, f32::INFINITY];
    let all_masked = [0i64; 3];
    let zero_w = [0.0f32; 3];
    for loss in ["mse", "mae", "huber", "quantile", "log_cosh"] {
        // PyTorch returns nan here (0/0); DESIGN.md: value and every gradient exactly 0
        for args in [
            ElementwiseArgs::new(&p, &t).mask(&all_masked),
            ElementwiseArgs::new(&p, &t).weight(&zero_w),
        ] {
            let out = run(loss, &args);
            assert_eq!(out.value, vec![0.0], "{loss}");
            assert_eq!(f32s(&out.grad_pred), vec![0.0; 3], "{loss}");
            assert_eq!(f32s(&out.grad_target), vec![0.0; 3], "{loss}");
        }
    }
}

#[test]
fn unmasked_nan_propagates_termwise() {
    // torch.nn.functional.mse_loss(torch.tensor([nan, 3.]), torch.zeros(2), reduction='sum')
    //   -> nan; the gradient is termwise: [nan, 6.] (the NaN does not poison element 1)
    let p = [f32::NAN, 3.0];
    let t = [0.0f32; 2];
    let out: Output<f32, f32> =
        mse(&ElementwiseArgs::new(&p, &t).reduction(Reduction::Sum)).unwrap();
    assert!(out.value[0].is_nan());
    let g = f32s(&out.grad_pred);
    assert!(g[0].is_nan());
    assert_eq!(g[1], 6.0);
    // inf − inf has no limit: NaN value and gradients for every loss
    for loss in ["mse", "mae", "huber", "quantile", "log_cosh"] {
        let out = run(
            loss,
            &ElementwiseArgs::new(&[f32::INFINITY], &[f32::INFINITY]),
        );
        assert!(out.value[0].is_nan(), "{loss}");
        assert!(f32s(&out.grad_pred)[0].is_nan(), "{loss}");
    }
}

#[test]
fn cotangent_scales_gradients() {
    let p = [1.0f32, 2.0];
    let t = [0.0f32; 2];
    // loss = mse_loss(p, t, reduction='sum'); loss.backward(torch.tensor(3.)) -> [6., 12.]
    let cot = [3.0f32];
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t)
        .reduction(Reduction::Sum)
        .cotangent(&cot))
    .unwrap();
    assert_eq!(out.value, vec![5.0]);
    assert_eq!(f32s(&out.grad_pred), vec![6.0, 12.0]);
    // mean: [3·2/2, 3·4/2] = [3., 6.]
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t).cotangent(&cot)).unwrap();
    assert_eq!(f32s(&out.grad_pred), vec![3.0, 6.0]);
    // none: loss.backward(torch.tensor([1., .5])) -> [2., 2.]
    let cot = [1.0f32, 0.5];
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t)
        .reduction(Reduction::None)
        .cotangent(&cot))
    .unwrap();
    assert_eq!(f32s(&out.grad_pred), vec![2.0, 2.0]);
    // exact-zero rule: a zero cotangent gives 0 even against an infinite derivative, and an
    // exactly-zero derivative (r = 0) gives 0 against an infinite cotangent
    let p = [f32::INFINITY, 0.0, 1.0];
    let t = [0.0f32; 3];
    let cot = [0.0f32, f32::INFINITY, f32::INFINITY];
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p, &t)
        .reduction(Reduction::None)
        .cotangent(&cot))
    .unwrap();
    assert_eq!(f32s(&out.grad_pred), vec![0.0, 0.0, f32::INFINITY]);
}

// ---- dtypes, extremes, long batches

#[test]
fn f16_square_overflow_and_autocast() {
    let h = |x: f32| f16::from_f32(x);
    let p = [h(300.0), h(300.0)];
    let t = [h(0.0), h(0.0)];
    // torch.nn.functional.mse_loss(torch.tensor([300.,300.], dtype=torch.float16), ...) -> inf
    // (90000 > f16 max 65504); under autocast (f32 value) 90000.; grad 2·300/2 = 300 (in f16)
    let out: Output<f16, f16> = mse(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(out.value, vec![f16::INFINITY]);
    assert_eq!(out.grad_pred, Some(vec![h(300.0), h(300.0)]));
    let out: Output<f16, f32> = mse(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(out.value, vec![90000.0f32]);
    assert_eq!(out.grad_pred, Some(vec![h(300.0), h(300.0)]));
}

#[test]
fn bf16_value_in_bf16_or_f32() {
    let b = |x: f64| bf16::from_f64(x);
    // (1 + 2^-7)² = 1 + 2^-6 + 2^-14: bf16 (8 bits) rounds to 1 + 2^-6, f32 holds it exactly
    let p = [b(1.0 + 2f64.powi(-7))];
    let t = [b(0.0)];
    let out: Output<bf16, bf16> = mse(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(out.value, vec![b(1.0 + 2f64.powi(-6))]);
    let out: Output<bf16, f32> = mse(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(
        out.value,
        vec![(1.0 + 2f64.powi(-6) + 2f64.powi(-14)) as f32]
    );
}

#[test]
fn f32_extremes() {
    let max = f32::MAX;
    // mae of [max, 0] vs [−max, 0]: sum 2·max overflows f32 (inf), mean = max exactly: no
    // spurious overflow in the intermediate
    let p = [max, 0.0];
    let t = [-max, 0.0];
    let out: Output<f32, f32> = mae(&ElementwiseArgs::new(&p, &t)).unwrap();
    assert_eq!(out.value, vec![max]);
    assert_eq!(f32s(&out.grad_pred), vec![0.5, 0.0]);
    let out: Output<f32, f32> =
        mae(&ElementwiseArgs::new(&p, &t).reduction(Reduction::Sum)).unwrap();
    assert_eq!(out.value, vec![f32::INFINITY]);
    // mse: (2·max)² overflows; gradient 4·max overflows too
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&p[..1], &t[..1])).unwrap();
    assert_eq!(out.value, vec![f32::INFINITY]);
    assert_eq!(f32s(&out.grad_pred), vec![f32::INFINITY]);
    // subnormals: r = 2^-149 (the least f32): mse = 2^-298 underflows to 0, its gradient
    // 2^-148 is exact; mae = 2^-149 exactly
    let tiny = f32::from_bits(1);
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&[tiny], &[0.0])).unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(f32s(&out.grad_pred), vec![f32::from_bits(2)]);
    let out: Output<f32, f32> = mae(&ElementwiseArgs::new(&[tiny], &[-0.0])).unwrap();
    assert_eq!(out.value, vec![tiny]);
    // huge and tiny weights: mean of w·r² with w = [1e30, 1e-30], r = [1, 2]:
    // (1e30 + 4e-30)/(1e30 + 1e-30) rounds to 1 in f32 (the exact quotient is 1 + ~3e-60)
    let w = [1e30f32, 1e-30];
    let out: Output<f32, f32> =
        mse(&ElementwiseArgs::new(&[1.0, 2.0], &[0.0, 0.0]).weight(&w)).unwrap();
    assert_eq!(out.value, vec![1.0]);
    // r = [2^64, 0]: w·r² = 1e30·2^128 overflows f32 but not f64. The mean
    // (1e30·2^128)/(1e30 + 1e-30) = 2^128·(1 − ~1e-60) is past f32's overflow threshold
    // 2^128 − 2^103: inf
    let big = 2f32.powi(64);
    let out: Output<f32, f32> =
        mse(&ElementwiseArgs::new(&[big, 0.0], &[0.0, 0.0]).weight(&w)).unwrap();
    assert_eq!(out.value, vec![f32::INFINITY]);
    let w1 = [1e30f32, 1e30];
    // with equal weights: (1e30·2^128 + 0)/(2e30) = 2^127 exactly: finite
    let out: Output<f32, f32> =
        mse(&ElementwiseArgs::new(&[big, 0.0], &[0.0, 0.0]).weight(&w1)).unwrap();
    assert_eq!(out.value, vec![2f32.powi(127)]);
}

#[test]
fn long_batches_do_not_stall() {
    let n = 1usize << 17;
    // f16 inputs: 2^17 ones vs zeros. mse sum = 131072: f16 overflows (max 65504), an f32
    // value holds it exactly, bf16 too (2^17); a naive f16 accumulator stalls at 2048.
    let one = vec![f16::ONE; n];
    let zero = vec![f16::ZERO; n];
    let out: Output<f16, f32> =
        mse(&ElementwiseArgs::new(&one, &zero).reduction(Reduction::Sum)).unwrap();
    assert_eq!(out.value, vec![131072.0]);
    let out: Output<f16, f16> =
        mse(&ElementwiseArgs::new(&one, &zero).reduction(Reduction::Sum)).unwrap();
    assert_eq!(out.value, vec![f16::INFINITY]);
    let out: Output<f16, f16> = mse(&ElementwiseArgs::new(&one, &zero)).unwrap();
    assert_eq!(out.value, vec![f16::ONE]);
    // mean of 2^17 copies of x = f16(0.1) = 819/8192: the exact mean is x² = 670761/2^26, and in
    // f16 (quantum 2^-17 there) 670761/2^26 = 1310.08·2^-17 rounds to 1310·2^-17.
    let x = vec![f16::from_f64(0.1); n];
    assert_eq!(x[0].to_f64(), 819.0 / 8192.0);
    let out: Output<f16, f16> = mse(&ElementwiseArgs::new(&x, &zero)).unwrap();
    assert_eq!(out.value[0].to_f64(), 1310.0 * 2f64.powi(-17));
    // f32: 2^17 copies of y = f32(0.1); the exact mean is y², 48 bits, exact in f64, so its f32
    // rounding is (y as f64 · y as f64) as f32. A naive f32 sum of 2^17 terms is off by ~2^-7.
    let y = vec![0.1f32; n];
    let z = vec![0.0f32; n];
    let out: Output<f32, f32> = mse(&ElementwiseArgs::new(&y, &z)).unwrap();
    assert_eq!(out.value, vec![((0.1f32 as f64) * (0.1f32 as f64)) as f32]);
    // every gradient component is 2y/n, exact in f32 (scalings by powers of 2)
    let g = 2.0 * 0.1f32 / n as f32;
    assert!(f32s(&out.grad_pred).iter().all(|&x| x == g));
    assert!(f32s(&out.grad_target).iter().all(|&x| x == -g));
}

#[test]
fn f16_output_is_correctly_rounded() {
    // mae sum of [1, 2^-11, 2^-24] vs 0 = 1 + 2^-11 + 2^-24: just above the midpoint between 1
    // and 1 + 2^-10, so RN_f16 is 1 + 2^-10. (half's own f64 -> f16 rounds through f32 with
    // F16C, landing on the midpoint and then on 1: double rounding.)
    let p = [f16::ONE, f16::from_f64(2f64.powi(-11)), f16::from_bits(1)];
    assert_eq!(p[2].to_f64(), 2f64.powi(-24));
    let t = [f16::ZERO; 3];
    let out: Output<f16, f16> =
        mae(&ElementwiseArgs::new(&p, &t).reduction(Reduction::Sum)).unwrap();
    assert_eq!(out.value[0].to_f64(), 1.0 + 2f64.powi(-10));
    // the dtype layer directly: values whose deciding bits lie in the low 32 bits of the f64
    let above = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    assert_eq!(
        <f16 as Element>::from_f64(above).to_f64(),
        1.0 + 2f64.powi(-10)
    );
    assert_eq!(
        <f16 as Element>::from_f64(-above).to_f64(),
        -(1.0 + 2f64.powi(-10))
    );
    let below = 1.0 + 2f64.powi(-11) - 2f64.powi(-40);
    assert_eq!(<f16 as Element>::from_f64(below).to_f64(), 1.0);
    let above_b = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
    assert_eq!(
        <bf16 as Element>::from_f64(above_b).to_f64(),
        1.0 + 2f64.powi(-7)
    );
    // ties to even, subnormals, overflow
    assert_eq!(
        <f16 as Element>::from_f64(1.0 + 2f64.powi(-11)).to_f64(),
        1.0
    );
    assert_eq!(
        <f16 as Element>::from_f64(1.0 + 3.0 * 2f64.powi(-11)).to_f64(),
        1.0 + 2f64.powi(-9)
    );
    assert_eq!(
        <f16 as Element>::from_f64(0.75 * 2f64.powi(-24)).to_f64(),
        2f64.powi(-24)
    );
    assert_eq!(
        <f16 as Element>::from_f64(0.5 * 2f64.powi(-24)).to_f64(),
        0.0
    );
    assert_eq!(
        <f16 as Element>::from_f64(0.5000001 * 2f64.powi(-24)).to_f64(),
        2f64.powi(-24)
    );
    assert_eq!(<f16 as Element>::from_f64(65519.99).to_f64(), 65504.0);
    assert_eq!(<f16 as Element>::from_f64(65520.0).to_f64(), f64::INFINITY);
    assert!(<f16 as Element>::from_f64(f64::NAN).is_nan());
    assert!(<f16 as Element>::from_f64(-0.0).is_sign_negative());
    assert_eq!(<bf16 as Element>::from_f64(1e300).to_f64(), f64::INFINITY);
}

// ---- the case-level glue

fn tensor(d: Dtype, xs: &[f64]) -> Tensor {
    Tensor::float(d, vec![xs.len()], xs.to_vec())
}

#[test]
fn evaluate_autocast_dtypes_and_shapes() {
    for d in [Dtype::F16, Dtype::Bf16] {
        let mut c = Case::new("mse", d).unwrap();
        c.out_dtype = Dtype::F32;
        c.inputs
            .insert("pred".into(), Tensor::float(d, vec![2, 1], vec![1.0, 2.0]));
        c.inputs.insert(
            "target".into(),
            Tensor::float(d, vec![2, 1], vec![0.0, 0.0]),
        );
        let r = evaluate(&c).unwrap();
        // torch.nn.functional.mse_loss(torch.tensor([[1.],[2.]]), torch.zeros(2,1)) -> 2.5
        assert_eq!(r.value.dtype, TensorDtype::Float(Dtype::F32));
        assert_eq!(r.value.shape, Vec::<usize>::new());
        assert_eq!(r.value.f().unwrap(), &[2.5]);
        assert_eq!(r.grad["pred"].dtype, TensorDtype::Float(d));
        assert_eq!(r.grad["pred"].shape, vec![2, 1]);
        assert_eq!(r.grad["pred"].f().unwrap(), &[1.0, 2.0]);
        assert_eq!(r.grad["target"].f().unwrap(), &[-1.0, -2.0]);
    }
}

#[test]
fn evaluate_params_mask_weight_cotangent() {
    let mut c = Case::new("huber", Dtype::F32).unwrap();
    c.id = 42;
    c.params
        .insert("delta".into(), losscheck::core::ParamValue::Float(0.5));
    c.inputs
        .insert("pred".into(), tensor(Dtype::F32, &[2.0, 0.25, f64::NAN]));
    c.inputs
        .insert("target".into(), tensor(Dtype::F32, &[0.0, 0.0, 0.0]));
    c.inputs
        .insert("mask".into(), Tensor::int(vec![3], vec![1, 1, 0]));
    c.inputs
        .insert("weight".into(), tensor(Dtype::F32, &[2.0, 4.0, 1.0]));
    c.inputs
        .insert("cotangent".into(), Tensor::scalar(Dtype::F32, 10.0));
    c.set_reduction(Reduction::Sum);
    let r = evaluate(&c).unwrap();
    assert_eq!(r.id, 42);
    // torch.nn.functional.huber_loss(torch.tensor([2., .25]), torch.zeros(2), delta=.5,
    //   reduction='none') -> [0.875, 0.03125]; weighted sum 2·0.875 + 4·0.03125 = 1.875
    assert_eq!(r.value.f().unwrap(), &[1.875]);
    // grad: cot·w·[δ, r] = 10·[2·0.5, 4·0.25, masked] = [10., 10., 0.]
    assert_eq!(r.grad["pred"].f().unwrap(), &[10.0, 10.0, 0.0]);

    let mut c = Case::new("quantile", Dtype::Bf16).unwrap();
    c.params
        .insert("tau".into(), losscheck::core::ParamValue::Float(0.75));
    c.inputs
        .insert("pred".into(), tensor(Dtype::Bf16, &[0.0, 4.0]));
    c.inputs
        .insert("target".into(), tensor(Dtype::Bf16, &[2.0, 0.0]));
    c.set_reduction(Reduction::None);
    let r = evaluate(&c).unwrap();
    // u = [2, −4]: [0.75·2, 0.25·4] = [1.5, 1.]; ∂/∂pred = [−0.75, 0.25]
    assert_eq!(r.value.f().unwrap(), &[1.5, 1.0]);
    assert_eq!(r.value.shape, vec![2]);
    assert_eq!(r.grad["pred"].f().unwrap(), &[-0.75, 0.25]);
}

// ---- helpers

fn run(loss: &str, args: &ElementwiseArgs<'_, f32>) -> Output<f32, f32> {
    match loss {
        "mse" => mse(args),
        "mae" => mae(args),
        "huber" => huber(args, 1.0),
        "quantile" => quantile(args, 0.3),
        "log_cosh" => log_cosh(args),
        _ => unreachable!(),
    }
    .unwrap()
}
