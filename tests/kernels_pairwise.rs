//! The kernels of `margin_ranking`, `pairwise_logistic`, `dpo` and `gaussian_nll`: invalid
//! input (an `Err` naming the input or param, the index and the value — never a panic),
//! degenerate shapes, the typed API against the case path bit for bit on generated cases, and
//! facts against independently derived values (`rug` at 300 bits, or exact arithmetic in a
//! comment): DPO at a margin of −1e4 (finite and accurate, not ±inf), the DPO gradient at its
//! zero crossing, gaussian_nll's straight-through var gradient and its cancelling value, and
//! sums just below the overflow threshold of bf16 (the double rounding that would make them
//! inf).

use half::{bf16, f16};
use losscheck::check::gen;
use losscheck::core::{ErrorKind, ParamValue};
use losscheck::kernels::preference::{dpo, DpoArgs};
use losscheck::kernels::probabilistic::{gaussian_nll, GaussianArgs};
use losscheck::kernels::ranking::{margin_ranking, pairwise_logistic, PairArgs};
use losscheck::kernels::{evaluate, implemented};
use losscheck::{Case, Dtype, Element, LossError, Reduction, Response, Tensor};
use rug::Float;

const P: u32 = 300;

fn fl(x: f64) -> Float {
    Float::with_val(P, x)
}

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

const LOSSES: [&str; 4] = ["margin_ranking", "pairwise_logistic", "dpo", "gaussian_nll"];

// ---------------------------------------------------------------------------------------------
// Invalid input

#[test]
fn typed_api_invalid_input() {
    let x = [0.5f32, -1.0];
    let y = [1i64, -1];
    // margin_ranking: labels, margin, lengths
    let m = msg(margin_ranking::<f32, f32>(
        &PairArgs::new(&x, &x),
        &[1, 0],
        0.0,
    ));
    mentions(&m, &["target", "[1]", "0", "-1 or +1"]);
    let m = msg(margin_ranking::<f32, f32>(
        &PairArgs::new(&x, &x),
        &[2, 1],
        0.0,
    ));
    mentions(&m, &["target", "[0]", "2"]);
    for bad in [f64::INFINITY, f64::NAN] {
        let m = msg(margin_ranking::<f32, f32>(&PairArgs::new(&x, &x), &y, bad));
        mentions(&m, &["margin"]);
    }
    let m = msg(margin_ranking::<f32, f32>(
        &PairArgs::new(&x, &[1.0]),
        &y,
        0.0,
    ));
    mentions(&m, &["s2", "1", "2"]);
    let m = msg(margin_ranking::<f32, f32>(
        &PairArgs::new(&x, &x),
        &[1],
        0.0,
    ));
    mentions(&m, &["target", "1", "2"]);
    // a label at a masked or zero-weight position may be anything
    assert!(margin_ranking::<f32, f32>(&PairArgs::new(&x, &x).mask(&[1, 0]), &[1, 7], 0.0).is_ok());
    assert!(
        margin_ranking::<f32, f32>(&PairArgs::new(&x, &x).weight(&[0.0, 1.0]), &[0, 1], 0.0)
            .is_ok()
    );
    // pairwise_logistic: lengths, weights, mask, cotangent
    let m = msg(pairwise_logistic::<f32, f32>(&PairArgs::new(
        &x,
        &[1.0, 2.0, 3.0],
    )));
    mentions(&m, &["rejected", "3", "2"]);
    for (w, shown) in [(-1.0f32, "-1"), (f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let m = msg(pairwise_logistic::<f32, f32>(
            &PairArgs::new(&x, &x).weight(&[1.0, w]),
        ));
        mentions(&m, &["weight", "[1]", shown]);
    }
    let m = msg(pairwise_logistic::<f32, f32>(
        &PairArgs::new(&x, &x).mask(&[1, 2]),
    ));
    mentions(&m, &["mask", "[1]", "2"]);
    let m = msg(pairwise_logistic::<f32, f32>(
        &PairArgs::new(&x, &x)
            .cotangent(&[1.0, 1.0])
            .reduction(Reduction::Sum),
    ));
    mentions(&m, &["cotangent"]);
    // dpo: beta, label_smoothing, lengths
    let a = DpoArgs::new(&x, &x, &x, &x);
    for (beta, shown) in [
        (0.0, "0.0"),
        (-0.1, "-0.1"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
    ] {
        mentions(&msg(dpo::<f32, f32>(&a, beta, 0.0)), &["beta", shown]);
    }
    for (ls, shown) in [
        (-0.1, "-0.1"),
        (0.6, "0.6"),
        (1.0, "1.0"),
        (f64::NAN, "NaN"),
    ] {
        mentions(
            &msg(dpo::<f32, f32>(&a, 0.1, ls)),
            &["label_smoothing", shown],
        );
    }
    assert!(dpo::<f32, f32>(&a, 0.1, 0.5).is_ok());
    let short = [1.0f32];
    for (k, name) in ["policy_rejected", "ref_chosen", "ref_rejected"]
        .iter()
        .enumerate()
    {
        let mut v = [&x[..], &x[..], &x[..]];
        v[k] = &short;
        let m = msg(dpo::<f32, f32>(
            &DpoArgs::new(&x, v[0], v[1], v[2]),
            0.1,
            0.0,
        ));
        mentions(&m, &[name, "1", "2"]);
    }
    // gaussian_nll: negative var (NaN passes), eps, lengths
    let (mu, t) = ([0.0f32, 1.0], [1.0f32, 1.0]);
    let m = msg(gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&mu, &t, &[1.0, -0.5]),
        1e-6,
        false,
    ));
    mentions(&m, &["var", "[1]", "-0.5", "negative"]);
    let m = msg(gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&mu, &t, &[-f32::INFINITY, 1.0]),
        1e-6,
        false,
    ));
    mentions(&m, &["var", "[0]", "-inf"]);
    assert!(gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&mu, &t, &[1.0, -0.5]).mask(&[1, 0]),
        1e-6,
        false
    )
    .is_ok());
    let out = gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&mu, &t, &[f32::NAN, 1.0]).reduction(Reduction::None),
        1e-6,
        false,
    )
    .unwrap();
    assert!(out.value[0].is_nan() && !out.value[1].is_nan());
    for (eps, shown) in [
        (0.0, "0.0"),
        (-1e-6, "-1e-6"),
        (f64::INFINITY, "inf"),
        (f64::NAN, "NaN"),
    ] {
        let m = msg(gaussian_nll::<f32, f32>(
            &GaussianArgs::new(&mu, &t, &[1.0, 1.0]),
            eps,
            false,
        ));
        mentions(&m, &["eps", shown]);
    }
    let m = msg(gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&mu, &t, &[1.0]),
        1e-6,
        false,
    ));
    mentions(&m, &["var", "1", "2"]);
    let m = msg(gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&mu, &[1.0], &[1.0, 1.0]),
        1e-6,
        false,
    ));
    mentions(&m, &["target", "1", "2"]);
}

fn case_of(loss: &str, d: Dtype, shape: &[usize], cols: &[(&str, Vec<f64>)]) -> Case {
    let mut c = Case::new(loss, d).unwrap();
    for (name, v) in cols {
        if loss == "margin_ranking" && *name == "target" {
            c.inputs.insert(
                "target".into(),
                Tensor::int(shape.to_vec(), v.iter().map(|&x| x as i64).collect()),
            );
        } else {
            c.inputs.insert(
                name.to_string(),
                Tensor::float(d, shape.to_vec(), v.clone()),
            );
        }
    }
    c
}

/// A small valid case of each loss with `n` elements (all data `x`, labels +1, var 1).
fn simple(loss: &str, d: Dtype, shape: &[usize], x: f64) -> Case {
    let n: usize = shape.iter().product();
    let v = vec![x; n];
    let cols: Vec<(&str, Vec<f64>)> = match loss {
        "margin_ranking" => vec![("s1", v.clone()), ("s2", v), ("target", vec![1.0; n])],
        "pairwise_logistic" => vec![("chosen", v.clone()), ("rejected", v)],
        "dpo" => vec![
            ("policy_chosen", v.clone()),
            ("policy_rejected", v.clone()),
            ("ref_chosen", v.clone()),
            ("ref_rejected", v),
        ],
        _ => vec![("mean", v.clone()), ("target", v), ("var", vec![1.0; n])],
    };
    case_of(loss, d, shape, &cols)
}

#[test]
fn case_level_invalid_input() {
    let c = case_of(
        "margin_ranking",
        Dtype::F32,
        &[2],
        &[
            ("s1", vec![0.0, 1.0]),
            ("s2", vec![0.0, 1.0]),
            ("target", vec![1.0, 0.0]),
        ],
    );
    mentions(&msg(evaluate(&c)), &["target", "[1]", "0"]);
    let mut c = simple("gaussian_nll", Dtype::Bf16, &[3], 0.5);
    c.inputs.insert(
        "var".into(),
        Tensor::float(Dtype::Bf16, vec![3], vec![1.0, 1.0, -2.0]),
    );
    mentions(&msg(evaluate(&c)), &["var", "[2]", "-2"]);
    let mut c = simple("gaussian_nll", Dtype::F32, &[1], 0.5);
    c.params.insert("eps".into(), ParamValue::Float(0.0));
    mentions(&msg(evaluate(&c)), &["eps"]);
    let mut c = simple("dpo", Dtype::F16, &[1], -1.0);
    c.params.insert("beta".into(), ParamValue::Float(0.0));
    mentions(&msg(evaluate(&c)), &["beta"]);
    let mut c = simple("dpo", Dtype::F16, &[1], -1.0);
    c.params
        .insert("label_smoothing".into(), ParamValue::Float(0.75));
    mentions(&msg(evaluate(&c)), &["label_smoothing"]);
    let mut c = simple("pairwise_logistic", Dtype::F32, &[2], 0.0);
    c.inputs.insert(
        "rejected".into(),
        Tensor::float(Dtype::F32, vec![3], vec![0.0; 3]),
    );
    mentions(&msg(evaluate(&c)), &["rejected"]);
    let mut c = simple("pairwise_logistic", Dtype::F32, &[2], 0.0);
    c.inputs.insert(
        "weight".into(),
        Tensor::float(Dtype::F32, vec![2], vec![1.0, -1.0]),
    );
    mentions(&msg(evaluate(&c)), &["weight", "[1]", "-1"]);
    let mut c = simple("dpo", Dtype::F32, &[2], 0.0);
    c.inputs
        .insert("mask".into(), Tensor::int(vec![2], vec![1, 5]));
    mentions(&msg(evaluate(&c)), &["mask", "[1]", "5"]);
}

// ---------------------------------------------------------------------------------------------
// Degenerate shapes

#[test]
fn degenerate_shapes_never_panic() {
    for loss in LOSSES {
        assert!(implemented(loss));
        for d in Dtype::ALL {
            // N = 0: mean 0, sum 0, none empty; grads empty with the input's shape
            for shape in [vec![0], vec![2, 0, 3], vec![0, 5]] {
                for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                    let mut c = simple(loss, d, &shape, 0.5);
                    c.set_reduction(red);
                    let r = evaluate(&c).unwrap_or_else(|e| panic!("{loss} {shape:?}: {e}"));
                    if red == Reduction::None {
                        assert_eq!(r.value.shape, shape);
                        assert!(r.value.is_empty());
                    } else {
                        assert_eq!(r.value.f().unwrap(), &[0.0], "{loss} {red}");
                    }
                    for g in r.grad.values() {
                        assert_eq!(g.shape, shape);
                    }
                    assert_eq!(r.grad.len(), 2, "{loss}");
                }
            }
            // a scalar [] keeps its shape for none, gradients too
            let mut c = simple(loss, d, &[], -0.5);
            c.set_reduction(Reduction::None);
            let r = evaluate(&c).unwrap();
            assert_eq!(r.value.shape, Vec::<usize>::new());
            for g in r.grad.values() {
                assert_eq!(g.shape, Vec::<usize>::new());
            }
            // [2, 2] none keeps the shape
            let mut c = simple(loss, d, &[2, 2], 0.25);
            c.set_reduction(Reduction::None);
            assert_eq!(evaluate(&c).unwrap().value.shape, vec![2, 2]);
            // all masked: an empty mean, 0 everywhere
            let mut c = simple(loss, d, &[3], f64::NAN);
            c.inputs
                .insert("mask".into(), Tensor::int(vec![3], vec![0; 3]));
            let r = evaluate(&c).unwrap();
            assert_eq!(r.value.f().unwrap(), &[0.0]);
            for g in r.grad.values() {
                assert!(g.f().unwrap().iter().all(|&x| x == 0.0));
            }
        }
    }
    // the typed API with empty slices
    let e: [f32; 0] = [];
    assert_eq!(
        margin_ranking::<f32, f32>(&PairArgs::new(&e, &e), &[], 0.0)
            .unwrap()
            .value,
        vec![0.0]
    );
    assert_eq!(
        pairwise_logistic::<f32, f32>(&PairArgs::new(&e, &e).reduction(Reduction::None))
            .unwrap()
            .value,
        Vec::<f32>::new()
    );
    assert_eq!(
        dpo::<f32, f32>(
            &DpoArgs::new(&e, &e, &e, &e).reduction(Reduction::Sum),
            0.1,
            0.0
        )
        .unwrap()
        .value,
        vec![0.0]
    );
    let out = gaussian_nll::<f32, f32>(&GaussianArgs::new(&e, &e, &e), 1e-6, true).unwrap();
    assert_eq!(
        (out.value, out.grad_mean, out.grad_var),
        (vec![0.0], Some(vec![]), Some(vec![]))
    );
}

// ---------------------------------------------------------------------------------------------
// The typed API = the case path, bit for bit

fn col<T: Element>(c: &Case, name: &str) -> Option<Vec<T>> {
    c.inputs
        .get(name)
        .and_then(|t| t.f())
        .map(|v| v.iter().map(|&x| T::from_f64(x)).collect())
}

fn fparam(c: &Case, name: &str) -> f64 {
    c.float_param(name).unwrap()
}

/// The case evaluated through the typed API, as (value, grads by name).
fn typed<T: Element, O: Element>(c: &Case) -> (Vec<f64>, Vec<(String, Vec<f64>)>) {
    let w = col::<T>(c, "weight");
    let cot = col::<T>(c, "cotangent");
    let mask = c.inputs.get("mask").and_then(|t| t.i());
    let want = |n: &str| c.grad.iter().any(|g| g == n);
    let red = c.reduction();
    let f64s = |v: Option<Vec<T>>| v.map(|v| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>());
    let o64 = |v: Vec<O>| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let named = |pairs: [(&str, Option<Vec<f64>>); 2]| {
        pairs
            .into_iter()
            .filter_map(|(n, g)| g.map(|g| (n.to_string(), g)))
            .collect::<Vec<_>>()
    };
    match c.loss.as_str() {
        "margin_ranking" | "pairwise_logistic" => {
            let names = if c.loss == "margin_ranking" {
                ["s1", "s2"]
            } else {
                ["chosen", "rejected"]
            };
            let (a, b) = (
                col::<T>(c, names[0]).unwrap(),
                col::<T>(c, names[1]).unwrap(),
            );
            let mut args = PairArgs::new(&a, &b)
                .reduction(red)
                .grads(want(names[0]), want(names[1]));
            args.weight = w.as_deref();
            args.mask = mask;
            args.cotangent = cot.as_deref();
            let out = if c.loss == "margin_ranking" {
                margin_ranking::<T, O>(&args, c.inputs["target"].i().unwrap(), fparam(c, "margin"))
                    .unwrap()
            } else {
                pairwise_logistic::<T, O>(&args).unwrap()
            };
            (
                o64(out.value),
                named([
                    (names[0], f64s(out.grad_first)),
                    (names[1], f64s(out.grad_second)),
                ]),
            )
        }
        "dpo" => {
            let v: Vec<Vec<T>> = [
                "policy_chosen",
                "policy_rejected",
                "ref_chosen",
                "ref_rejected",
            ]
            .iter()
            .map(|n| col::<T>(c, n).unwrap())
            .collect();
            let mut args = DpoArgs::new(&v[0], &v[1], &v[2], &v[3])
                .reduction(red)
                .grads(want("policy_chosen"), want("policy_rejected"));
            args.weight = w.as_deref();
            args.mask = mask;
            args.cotangent = cot.as_deref();
            let out = dpo::<T, O>(&args, fparam(c, "beta"), fparam(c, "label_smoothing")).unwrap();
            (
                o64(out.value),
                named([
                    ("policy_chosen", f64s(out.grad_policy_chosen)),
                    ("policy_rejected", f64s(out.grad_policy_rejected)),
                ]),
            )
        }
        _ => {
            let (m, t, v) = (
                col::<T>(c, "mean").unwrap(),
                col::<T>(c, "target").unwrap(),
                col::<T>(c, "var").unwrap(),
            );
            let mut args = GaussianArgs::new(&m, &t, &v)
                .reduction(red)
                .grads(want("mean"), want("var"));
            args.weight = w.as_deref();
            args.mask = mask;
            args.cotangent = cot.as_deref();
            let full = matches!(c.params.get("full"), Some(ParamValue::Bool(true)));
            let out = gaussian_nll::<T, O>(&args, fparam(c, "eps"), full).unwrap();
            (
                o64(out.value),
                named([("mean", f64s(out.grad_mean)), ("var", f64s(out.grad_var))]),
            )
        }
    }
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn compare(c: &Case, r: &Response) {
    let (v, g) = match (c.dtype, c.out_dtype) {
        (Dtype::F32, _) => typed::<f32, f32>(c),
        (Dtype::F16, Dtype::F16) => typed::<f16, f16>(c),
        (Dtype::F16, _) => typed::<f16, f32>(c),
        (Dtype::Bf16, Dtype::Bf16) => typed::<bf16, bf16>(c),
        (Dtype::Bf16, _) => typed::<bf16, f32>(c),
    };
    assert!(
        same_bits(&v, r.value.f().unwrap()),
        "value: {}",
        c.to_json()
    );
    assert_eq!(g.len(), r.grad.len(), "{}", c.to_json());
    for (name, gv) in g {
        assert!(
            same_bits(&gv, r.grad[&name].f().unwrap()),
            "grad {name}: {}",
            c.to_json()
        );
    }
}

#[test]
fn typed_api_is_the_case_path_bit_for_bit() {
    for loss in LOSSES {
        for d in Dtype::ALL {
            for i in 0..300u64 {
                if gen::pick_regime(loss, d, 21, i) == Some(gen::Regime::LongBatch) {
                    continue;
                }
                let c = gen::generate(loss, d, 21, i);
                let r = evaluate(&c).unwrap_or_else(|e| panic!("{loss} {d} #{i}: {e}"));
                compare(&c, &r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Facts

fn r_softplus(x: &Float) -> Float {
    // max(x, 0) + ln(1 + e^−|x|)
    let m = if *x > 0.0 { x.clone() } else { fl(0.0) };
    m + Float::with_val(P, -x.clone().abs()).exp().ln_1p()
}

fn r_sigmoid(x: &Float) -> Float {
    (Float::with_val(P, -x.clone()).exp() + 1u32).recip()
}

/// dpo at one element, f64 inputs, by rug: (l, ∂l/∂πc).
fn r_dpo(v: [f64; 4], beta: f64, eps: f64) -> (f64, f64) {
    let h = (fl(v[0]) - fl(v[2])) - (fl(v[1]) - fl(v[3])); // exact at 300 bits
    let x = Float::with_val(P, &h * beta);
    let e = fl(eps);
    let one_m = Float::with_val(P, 1u32 - &e);
    let l = Float::with_val(P, &one_m * r_softplus(&Float::with_val(P, -x.clone())))
        + Float::with_val(P, &e * r_softplus(&x));
    let g = Float::with_val(P, &e * r_sigmoid(&x))
        - Float::with_val(P, &one_m * r_sigmoid(&Float::with_val(P, -x.clone())));
    (l.to_f64(), Float::with_val(P, g * beta).to_f64())
}

#[test]
fn dpo_at_a_margin_of_minus_1e4_is_finite_and_accurate() {
    // bf16 log-probs around −1e4 (one ulp is 64): h = −9984 − … = −9984 (a margin of −1e4)
    let b = |x: f64| bf16::from_f64(x);
    let (pc, pr, rc, rr) = ([b(-19968.0)], [b(-9984.0)], [b(-9984.0)], [b(-9984.0)]);
    for (beta, eps) in [(0.1, 0.0), (1e-3, 0.0), (1.0, 0.1), (1e3, 0.5), (0.1, 0.25)] {
        let args = DpoArgs::new(&pc, &pr, &rc, &rr).reduction(Reduction::Sum);
        let out = dpo::<bf16, f32>(&args, beta, eps).unwrap();
        let (l, g) = r_dpo([-19968.0, -9984.0, -9984.0, -9984.0], beta, eps);
        let v = out.value[0] as f64;
        assert!(v.is_finite() && v > 0.0, "β={beta}: {v}");
        assert!(Dtype::F32.ulps(v, l) <= 1.0, "β={beta} ε={eps}: {v} vs {l}");
        let gk = out.grad_policy_chosen.unwrap()[0].to_f64();
        assert!(
            Dtype::Bf16.ulps(gk, g) <= 1.0,
            "β={beta} ε={eps}: {gk} vs {g}"
        );
    }
    // the mirror image: a margin of +1e4 gives a tiny positive loss (not 0 for small β·h)
    let (pc, pr, rc, rr) = ([b(-9984.0)], [b(-19968.0)], [b(-9984.0)], [b(-9984.0)]);
    let out = dpo::<bf16, f32>(&DpoArgs::new(&pc, &pr, &rc, &rr), 1e-2, 0.0).unwrap();
    let (l, _) = r_dpo([-9984.0, -19968.0, -9984.0, -9984.0], 1e-2, 0.0);
    assert!(
        Dtype::F32.ulps(out.value[0] as f64, l) <= 1.0,
        "{} vs {l}",
        out.value[0]
    );
    assert!(out.value[0] > 0.0);
    // chosen and rejected one ulp apart, refs equal: h = 64, β = 1e−3
    let (pc, pr, rc, rr) = ([b(-9984.0)], [b(-10048.0)], [b(-10048.0)], [b(-10048.0)]);
    let out = dpo::<bf16, bf16>(&DpoArgs::new(&pc, &pr, &rc, &rr), 1e-3, 0.0).unwrap();
    let (l, _) = r_dpo([-9984.0, -10048.0, -10048.0, -10048.0], 1e-3, 0.0);
    assert!(Dtype::Bf16.ulps(out.value[0].to_f64(), l) <= 1.0);
}

#[test]
fn dpo_gradient_at_its_zero_crossing() {
    // h exactly at x*/β for x* = ln((1 − ε)/ε): the gradient cancels; the kernel keeps it
    // accurate relatively (f32: within 2 ulps), however close
    let mut worst = 0.0f64;
    for eps in [
        0.1f32 as f64,
        0.25,
        0.4f32 as f64,
        1e-3f32 as f64,
        2f64.powi(-40),
    ] {
        let xs = ((1.0 - eps) / eps).ln();
        for beta in [1.0, 0.1f32 as f64, 3.0, 1e-3f32 as f64] {
            for j in -4i32..=4 {
                let h0 = (xs / beta) as f32;
                let h = f32::from_bits((h0.to_bits() as i32 + j) as u32);
                let pc = [h];
                let z = [0.0f32];
                let out = dpo::<f32, f32>(
                    &DpoArgs::new(&pc, &z, &z, &z).reduction(Reduction::Sum),
                    beta,
                    eps,
                )
                .unwrap();
                let (_, g) = r_dpo([h as f64, 0.0, 0.0, 0.0], beta, eps);
                let u = Dtype::F32.ulps(out.grad_policy_chosen.unwrap()[0] as f64, g);
                worst = worst.max(u);
                assert!(u <= 2.0, "ε={eps} β={beta} h={h}: {u} ulps (exact {g:e})");
            }
        }
    }
    assert!(worst <= 1.0, "{worst}");
}

#[test]
fn pairwise_logistic_facts() {
    // ties: ln 2, gradients ∓½; d = −100: e^−100, not 0; d = +inf: inf, (−1, 1)
    let out = pairwise_logistic::<f32, f32>(
        &PairArgs::new(&[3.0f32, 100.0, 0.0], &[3.0f32, 0.0, f32::INFINITY])
            .reduction(Reduction::None),
    )
    .unwrap();
    assert_eq!(out.value[0], std::f32::consts::LN_2);
    assert_eq!(out.value[1], 27.0 * f32::from_bits(1)); // RN_f32(e^−100) = 27·2^−149
    assert_eq!(out.value[2], f32::INFINITY);
    assert_eq!(
        out.grad_first,
        Some(vec![-0.5, -27.0 * f32::from_bits(1), -1.0])
    );
    assert_eq!(
        out.grad_second,
        Some(vec![0.5, 27.0 * f32::from_bits(1), 1.0])
    );
    // inf − inf: NaN
    let out =
        pairwise_logistic::<f16, f16>(&PairArgs::new(&[f16::INFINITY], &[f16::INFINITY])).unwrap();
    assert!(out.value[0].is_nan());
}

/// gaussian_nll at one element by rug: (l, ∂/∂mean, ∂/∂var).
fn r_gauss(m: f64, t: f64, var: f64, eps: f64, full: bool) -> (f64, f64, f64) {
    let v = fl(var.max(eps));
    let r = fl(t) - fl(m);
    let r2 = Float::with_val(P, r.square_ref());
    let mut l = Float::with_val(P, v.ln_ref()) + Float::with_val(P, &r2 / &v);
    if full {
        l += Float::with_val(P, Float::with_val(P, rug::float::Constant::Pi) * 2u32).ln();
    }
    let gm = Float::with_val(P, -r / &v);
    let gv = Float::with_val(P, &v - &r2) / (Float::with_val(P, v.square_ref()) * 2u32);
    ((l / 2u32).to_f64(), gm.to_f64(), gv.to_f64())
}

#[test]
fn gaussian_nll_facts() {
    // var = 0 → v′ = eps; the var gradient is straight-through (1/(2eps) at r = 0), not 0
    let out = gaussian_nll::<f32, f32>(
        &GaussianArgs::new(
            &[1.0f32, 1.0, 0.0],
            &[1.0f32, 1.0, 3.0],
            &[0.0f32, 0.25, f32::INFINITY],
        )
        .reduction(Reduction::None),
        0.25,
        false,
    )
    .unwrap();
    assert_eq!(out.value[0], -std::f32::consts::LN_2); // ½·ln ¼
    assert_eq!(out.grad_var.as_ref().unwrap()[..2], [2.0, 2.0]); // below and at eps: 1/(2·¼)
    assert_eq!(out.value[2], f32::INFINITY); // var = inf
    assert_eq!(
        (out.grad_mean.unwrap()[2], out.grad_var.unwrap()[2]),
        (0.0, 0.0)
    );
    // var at the dtype max, and at f16's max with a residual whose square overflows f16
    let h = |x: f64| f16::from_f64(x);
    let out = gaussian_nll::<f16, f32>(
        &GaussianArgs::new(
            &[h(0.0), h(-300.0)],
            &[h(1.0), h(300.0)],
            &[h(65504.0), h(1.0)],
        )
        .reduction(Reduction::None),
        1e-6,
        true,
    )
    .unwrap();
    for (k, (m, t, v)) in [(0.0, 1.0, 65504.0), (-300.0, 300.0, 1.0)]
        .into_iter()
        .enumerate()
    {
        let (l, gm, gv) = r_gauss(m, t, v, 1e-6, true);
        assert!(
            Dtype::F32.ulps(out.value[k] as f64, l) <= 1.0,
            "{k}: {} vs {l}",
            out.value[k]
        );
        assert!(Dtype::F16.ulps(out.grad_mean.as_ref().unwrap()[k].to_f64(), gm) <= 1.0);
        assert!(Dtype::F16.ulps(out.grad_var.as_ref().unwrap()[k].to_f64(), gv) <= 1.0);
    }
    // infinite residual: l = inf, ∂/∂mean = −inf (r = +inf), ∂/∂var = −inf; with var = inf NaN
    let out = gaussian_nll::<f32, f32>(
        &GaussianArgs::new(
            &[f32::NEG_INFINITY, 0.0],
            &[0.0f32, f32::INFINITY],
            &[1.0f32, f32::INFINITY],
        )
        .reduction(Reduction::None),
        1e-6,
        false,
    )
    .unwrap();
    assert_eq!(out.value, vec![f32::INFINITY, f32::INFINITY]);
    let (gm, gv) = (out.grad_mean.unwrap(), out.grad_var.unwrap());
    assert_eq!((gm[0], gv[0]), (f32::NEG_INFINITY, f32::NEG_INFINITY));
    assert!(gm[1].is_nan() && gv[1].is_nan());
    // v′ = r²: the var gradient is exactly 0
    let out = gaussian_nll::<f32, f32>(
        &GaussianArgs::new(&[0.0f32], &[3.0f32], &[9.0f32]),
        1e-6,
        false,
    )
    .unwrap();
    assert_eq!(out.grad_var, Some(vec![0.0]));
}

#[test]
fn gaussian_nll_value_where_its_terms_cancel() {
    // r² = −v′·(ln v′ [+ ln 2π]) rounded to f32: ½·ln v′ + ½·r²/v′ nearly cancels; the kernel
    // is accurate relatively (its double-double path), within 1 ulp of the 300-bit value
    let mut hits = 0;
    let mut r = losscheck::core::rng::SplitMix64::new(5);
    for _ in 0..3000 {
        let full = r.next_u64() & 1 == 1;
        let v = ((1.0 + r.next_f64()) * 2f64.powi(-(r.below(20) as i32) - 1)) as f32;
        let c = if full {
            (2.0 * std::f64::consts::PI).ln()
        } else {
            0.0
        };
        let s = -(v as f64) * ((v as f64).ln() + c);
        if s <= 0.0 {
            continue;
        }
        let t = s.sqrt() as f32;
        let out = gaussian_nll::<f32, f32>(
            &GaussianArgs::new(&[0.0f32], &[t], &[v]).reduction(Reduction::Sum),
            1e-6,
            full,
        )
        .unwrap();
        let (l, _, _) = r_gauss(0.0, t as f64, v as f64, 1e-6, full);
        let u = Dtype::F32.ulps(out.value[0] as f64, l);
        assert!(
            u <= 1.0,
            "v={v} t={t} full={full}: {} vs {l:e} ({u} ulps)",
            out.value[0]
        );
        hits += (l.abs() < 1e-6 * (v as f64).ln().abs()) as usize;
    }
    assert!(hits > 100, "{hits} strongly cancelling cases");
}

#[test]
fn sums_just_below_the_bf16_overflow_threshold_stay_finite() {
    // bf16's max is 255·2^120; max + ½ulp = 511·2^119 rounds (ties to even) to 2^128 = inf. A
    // sum exactly 1 (or 2^−149) below that threshold must round to max, which an f64 sum
    // loses (511·2^119 − 1 is not an f64): the values are kept as pairs until rounded.
    let b = |x: f64| bf16::from_f64(x);
    let max = 255.0 * 2f64.powi(120);
    // pairwise_logistic: softplus(2^127 − max/2 = 2^119) + softplus(max − 1) = 511·2^119 − 1
    // + tails
    let out = pairwise_logistic::<bf16, bf16>(
        &PairArgs::new(&[b(max / 2.0), b(1.0)], &[b(2f64.powi(127)), b(max)])
            .reduction(Reduction::Sum),
    )
    .unwrap();
    assert_eq!(out.value[0].to_f64(), max);
    // margin_ranking: u = m − y·(s1 − s2) = max + 2^119 − 2^−149 (m = −2^−149, y = −1)
    let out = margin_ranking::<bf16, bf16>(
        &PairArgs::new(&[b(max)], &[b(-(2f64.powi(119)))]).reduction(Reduction::None),
        &[-1],
        -(2f64.powi(-149)),
    )
    .unwrap();
    assert_eq!(out.value[0].to_f64(), max);
    // and the tie itself does overflow (m = 0)
    let out = margin_ranking::<bf16, bf16>(
        &PairArgs::new(&[b(max)], &[b(-(2f64.powi(119)))]).reduction(Reduction::None),
        &[-1],
        0.0,
    )
    .unwrap();
    assert_eq!(out.value[0].to_f64(), f64::INFINITY);
    // dpo: h = −(511·2^119 − 1), β = 1: l = 511·2^119 − 1 + tail
    let out = dpo::<bf16, bf16>(
        &DpoArgs::new(&[b(-max)], &[b(2f64.powi(119))], &[b(-1.0)], &[b(0.0)])
            .reduction(Reduction::Mean),
        1.0,
        0.0,
    )
    .unwrap();
    assert_eq!(out.value[0].to_f64(), max);
}

#[test]
fn out_dtype_f32_for_16_bit_inputs() {
    for loss in LOSSES {
        for d in [Dtype::F16, Dtype::Bf16] {
            let mut c = simple(loss, d, &[2], -0.5);
            c.out_dtype = Dtype::F32;
            let r = evaluate(&c).unwrap();
            assert_eq!(
                r.value.dtype,
                losscheck::core::TensorDtype::Float(Dtype::F32),
                "{loss}"
            );
            for g in r.grad.values() {
                assert_eq!(g.dtype, losscheck::core::TensorDtype::Float(d));
            }
        }
    }
}
