//! The row-wise probabilistic kernels (`kl_div`, `distill_kl`, `neg_elbo`, `brier`) through the
//! typed API and the case API: hand-checked values and gradients (exact expected values from
//! their closed forms, computed here independently), the absent-term and extended-real rules,
//! invalid input (an `Err` naming the input, the index and the value) and degenerate shapes
//! (N = 0, C = 0 with N = 0, D = 0, K = 0) that must never panic.

use half::{bf16, f16};
use losscheck::core::ParamValue;
use losscheck::kernels::probabilistic::rowwise::{brier, distill_kl, kl_div, neg_elbo, RowExtras};
use losscheck::kernels::{self};
use losscheck::{Case, Dtype, Reduction, Tensor};

const INF: f32 = f32::INFINITY;

fn sum<'a>() -> RowExtras<'a, f32> {
    RowExtras::new().reduction(Reduction::Sum)
}

#[test]
fn kl_div_values_gradients_and_absent_terms() {
    // p = [½, ½], log q = [ln ¼, ln ¾] (f32): Σ ½(ln ½ − lq_c)
    let lq = [0.25f32.ln(), 0.75f32.ln()];
    let p = [0.5f32, 0.5];
    let out = kl_div::<f32, f32>(&lq, &p, 1, 2, false, &sum(), true).unwrap();
    let want = 0.5 * ((0.5f64).ln() - lq[0] as f64) + 0.5 * ((0.5f64).ln() - lq[1] as f64);
    assert_eq!(out.value, vec![want as f32]);
    assert_eq!(out.grads[0], Some(vec![-0.5, -0.5]));
    // p = 0 at log q = −inf: 0, not NaN (PyTorch / optax: NaN)
    let out = kl_div::<f32, f32>(&[0.0, -INF], &[1.0, 0.0], 1, 2, false, &sum(), true).unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(out.grads[0], Some(vec![-1.0, 0.0]));
    // log_target: −inf targets are absent; target = input gives exactly 0
    let lt = [-INF, -0.75f32, -3.0];
    let out = kl_div::<f32, f32>(&[-INF, -0.75, -3.0], &lt, 1, 3, true, &sum(), true).unwrap();
    assert_eq!(out.value, vec![0.0]);
    // batchmean with a weight: Σ w·l / Σ w
    let ex = RowExtras::new().weight(&[1.0f32, 3.0][..]);
    let out = kl_div::<f32, f32>(&[-1.0, -2.0], &[1.0, 1.0], 2, 1, false, &ex, true).unwrap();
    assert_eq!(out.value, vec![(1.0 + 3.0 * 2.0) / 4.0]);
    assert_eq!(out.grads[0], Some(vec![-0.25, -0.75]));
}

#[test]
fn distill_kl_exact_zero_and_extremes() {
    for rev in [false, true] {
        // student = teacher + 10: exactly 0 and gradient 0, at any temperature
        let t = [1.5f32, -2.0, 0.25];
        let s = [11.5f32, 8.0, 10.25];
        for tau in [1e-4, 0.07, 1.0, 1e3] {
            let out = distill_kl::<f32, f32>(&s, &t, 1, 3, tau, rev, &sum(), true).unwrap();
            assert_eq!(out.value, vec![0.0], "T = {tau}, reverse = {rev}");
            assert_eq!(out.grads[0], Some(vec![0.0; 3]));
        }
    }
    // teacher one-hot (+inf), student [0, 0], T = 1: KL = ln 2, ∂ = Q − P = [−½, ½]
    let out =
        distill_kl::<f32, f32>(&[0.0, 0.0], &[INF, 0.0], 1, 2, 1.0, false, &sum(), true).unwrap();
    assert_eq!(out.value, vec![std::f32::consts::LN_2]);
    assert_eq!(out.grads[0], Some(vec![-0.5, 0.5]));
    // the student has no mass where the teacher has: +inf (forward)
    let out =
        distill_kl::<f32, f32>(&[-INF, 0.0], &[0.0, 0.0], 1, 2, 1.0, false, &sum(), true).unwrap();
    assert_eq!(out.value, vec![INF]);
    assert_eq!(out.grads[0], Some(vec![-0.5, 0.5]));
    // a confident row at T = 1e-4: finite and ≥ 0
    let out =
        distill_kl::<f32, f32>(&[3.0, 0.0], &[3.0, 2.9], 1, 2, 1e-4, false, &sum(), true).unwrap();
    assert!(
        out.value[0].is_finite() && out.value[0] >= 0.0,
        "{:?}",
        out.value
    );
}

#[test]
fn neg_elbo_tiny_and_huge_logvar_without_16bit_exp() {
    // no data dims: ½(expm1(lv) − lv) for lv = 1e−20 is lv²/4 = 2.5e−41 (f32 subnormal), not 0
    let lv = [1e-20f32];
    let out =
        neg_elbo::<f32, f32>(&[], &[], &[0.0], &lv, 1, (0, 1), 1.0, &sum(), [true; 3]).unwrap();
    assert_eq!(out.value, vec![(1e-20f64 * 1e-20 / 4.0) as f32]);
    // f16 with f32 output: lv = 11.5 > ln(f16 max), e^lv overflows f16 but the loss does not
    let (x, z, mu) = ([f16::ONE], [f16::ZERO], [f16::ZERO]);
    let lv = [f16::from_f32(11.5)];
    let ex = RowExtras::new().reduction(Reduction::Sum);
    let out = neg_elbo::<f16, f32>(&x, &z, &mu, &lv, 1, (1, 1), 1.0, &ex, [true; 3]).unwrap();
    let want = 2f64.ln() + 0.5 * ((11.5f64).exp_m1() - 11.5);
    assert_eq!(out.value, vec![want as f32]);
    // the gradient ½·expm1(11.5) ≈ 49 370 fits f16
    let g = out.grads[2].as_ref().unwrap()[0].to_f64();
    assert_eq!(g, Dtype::F16.round(0.5 * (11.5f64).exp_m1()));
    // β = 0 removes the KL term: +inf logvar does not matter
    let out = neg_elbo::<f32, f32>(
        &[1.0],
        &[INF],
        &[INF],
        &[INF],
        1,
        (1, 1),
        0.0,
        &sum(),
        [true; 3],
    )
    .unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(out.grads[1], Some(vec![0.0]));
    assert_eq!(out.grads[2], Some(vec![0.0]));
}

#[test]
fn brier_is_exact() {
    let out = brier::<bf16, bf16>(
        &[bf16::from_f32(0.25), bf16::from_f32(0.75)],
        &[1],
        1,
        2,
        &RowExtras::new().reduction(Reduction::Sum),
        true,
    )
    .unwrap();
    assert_eq!(out.value, vec![bf16::from_f32(0.125)]);
    assert_eq!(
        out.grads[0],
        Some(vec![bf16::from_f32(0.5), bf16::from_f32(-0.5)])
    );
}

#[test]
fn invalid_input_names_input_index_and_value() {
    let e = kl_div::<f32, f32>(&[0.0], &[0.5], 1, 1, true, &sum(), true).unwrap_err();
    assert!(e.message.contains("target[0]=0.5"), "{}", e.message);
    let e = kl_div::<f32, f32>(&[0.0, 0.0], &[0.5, 1.5], 1, 2, false, &sum(), true).unwrap_err();
    assert!(e.message.contains("target[1]=1.5"), "{}", e.message);
    let e = distill_kl::<f32, f32>(&[0.0], &[0.0], 1, 1, 0.0, false, &sum(), true).unwrap_err();
    assert!(e.message.contains("temperature"), "{}", e.message);
    let e =
        distill_kl::<f32, f32>(&[0.0, 1.0], &[0.0], 1, 2, 1.0, false, &sum(), true).unwrap_err();
    assert!(e.message.contains("teacher"), "{}", e.message);
    let e = neg_elbo::<f32, f32>(&[0.5], &[0.0], &[], &[], 1, (1, 0), -1.0, &sum(), [true; 3])
        .unwrap_err();
    assert!(e.message.contains("beta=-1.0"), "{}", e.message);
    let e = neg_elbo::<f32, f32>(&[1.5], &[0.0], &[], &[], 1, (1, 0), 1.0, &sum(), [true; 3])
        .unwrap_err();
    assert!(e.message.contains("x[0]=1.5"), "{}", e.message);
    let e = brier::<f32, f32>(&[0.5, -0.25], &[0], 1, 2, &sum(), true).unwrap_err();
    assert!(e.message.contains("prob[1]=-0.25"), "{}", e.message);
    let e = brier::<f32, f32>(&[0.5, 0.5], &[2], 1, 2, &sum(), true).unwrap_err();
    assert!(e.message.contains("target[0]=2"), "{}", e.message);
    // a masked row is not checked
    let ex = RowExtras::new().mask(&[0i64][..]);
    assert!(brier::<f32, f32>(&[7.0, f32::NAN], &[9], 1, 2, &ex, true).is_ok());
}

fn case(loss: &str, d: Dtype, inputs: &[(&str, Vec<usize>, Vec<f64>)]) -> Case {
    let mut c = Case::new(loss, d).unwrap();
    for (name, shape, v) in inputs {
        c.inputs
            .insert(name.to_string(), Tensor::float(d, shape.clone(), v.clone()));
    }
    c.grad = c.spec().grads.iter().map(|s| s.to_string()).collect();
    c
}

#[test]
fn degenerate_shapes_never_panic() {
    for d in Dtype::ALL {
        for red in ["none", "sum", "mean"] {
            let mut cs = vec![
                case(
                    "kl_div",
                    d,
                    &[
                        ("input", vec![0, 0], vec![]),
                        ("target", vec![0, 0], vec![]),
                    ],
                ),
                case(
                    "distill_kl",
                    d,
                    &[
                        ("student", vec![0, 3], vec![]),
                        ("teacher", vec![0, 3], vec![]),
                    ],
                ),
                case(
                    "neg_elbo",
                    d,
                    &[
                        ("x", vec![2, 0], vec![]),
                        ("recon_logits", vec![2, 0], vec![]),
                        ("mu", vec![2, 0], vec![]),
                        ("logvar", vec![2, 0], vec![]),
                    ],
                ),
                case(
                    "neg_elbo",
                    d,
                    &[
                        ("x", vec![0, 2], vec![]),
                        ("recon_logits", vec![0, 2], vec![]),
                        ("mu", vec![0, 1], vec![]),
                        ("logvar", vec![0, 1], vec![]),
                    ],
                ),
                case("brier", d, &[("prob", vec![0, 0], vec![])]),
            ];
            cs[4]
                .inputs
                .insert("target".into(), Tensor::int(vec![0], vec![]));
            for mut c in cs {
                c.params
                    .insert("reduction".into(), ParamValue::Str(red.into()));
                let r = kernels::evaluate(&c).unwrap_or_else(|e| panic!("{}: {e:?}", c.loss));
                let want = if red == "none" {
                    c.inputs.values().next().unwrap().shape[0]
                } else {
                    1
                };
                assert_eq!(r.value.len(), want, "{} {red}", c.loss);
                for i in 0..r.value.len() {
                    assert_eq!(r.value.get_f64(i), 0.0, "{} {red}", c.loss);
                }
            }
        }
    }
    // C = 0 with N > 0 is invalid, not a panic
    let c = case(
        "kl_div",
        Dtype::F32,
        &[
            ("input", vec![2, 0], vec![]),
            ("target", vec![2, 0], vec![]),
        ],
    );
    assert!(kernels::evaluate(&c).is_err());
}
