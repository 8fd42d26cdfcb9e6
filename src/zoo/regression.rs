//! Known-bad regression losses.

use super::ZooEntry;
use crate::check::compare::Verdict;
use losscheck_core::{catalogue, Case, Dtype, LossError, Reduction, Response, Tensor};

/// How a naive implementation reduces.
#[derive(Clone, Copy, Default)]
struct Flaws {
    /// Keep the running sum in the input dtype (16-bit sums stall at 2048 and overflow).
    accumulate_in_dtype: bool,
    /// Mask by multiplying with 0 instead of skipping (0·NaN = NaN leaks).
    mask_by_multiply: bool,
    /// Divide the mean by the element count instead of Σ m·w (padding counted).
    mean_over_count: bool,
}

/// A naive elementwise loss: `f(p, t) -> (loss, dloss/dp)` in f32; target gradients are
/// −dloss/dp (every regression loss depends on p − t).
fn naive(
    case: &Case,
    f: fn(f32, f32, &Case) -> (f32, f32),
    flaws: Flaws,
) -> Result<Response, LossError> {
    let checked = catalogue::validate(case)?;
    let get = |n: &str| case.inputs.get(n).and_then(Tensor::f);
    let (p, t) = (get("pred").unwrap(), get("target").unwrap());
    let n = p.len();
    let w = |i: usize| get("weight").map_or(1.0, |w| w[i] as f32);
    let m = |i: usize| {
        case.inputs
            .get("mask")
            .and_then(Tensor::i)
            .map_or(1.0, |m| m[i] as f32)
    };
    let dt = case.dtype;
    let acc_round = |x: f32| {
        if flaws.accumulate_in_dtype {
            dt.round(x as f64) as f32
        } else {
            x
        }
    };
    let mut terms = vec![0f32; n];
    let mut dterms = vec![0f32; n];
    let (mut num, mut den) = (0f32, 0f32);
    for i in 0..n {
        let (mi, wi) = (m(i), w(i));
        if !flaws.mask_by_multiply && (mi == 0.0 || wi == 0.0) {
            continue;
        }
        let (l, d) = f(p[i] as f32, t[i] as f32, case);
        terms[i] = mi * wi * l;
        dterms[i] = mi * wi * d;
        num = acc_round(num + terms[i]);
        den = acc_round(den + mi * wi);
    }
    let reduction = case.reduction();
    if flaws.mean_over_count {
        den = n as f32;
    }
    let cot = case.inputs.get("cotangent").and_then(Tensor::f);
    let (value, scale): (Vec<f64>, f32) = match reduction {
        Reduction::None => (terms.iter().map(|&x| x as f64).collect(), 1.0),
        Reduction::Sum => (vec![num as f64], 1.0),
        _ => (vec![(num / den) as f64], 1.0 / den),
    };
    let out = case.out_dtype;
    let value = Tensor::float(
        out,
        checked.value_shape(reduction),
        value.into_iter().map(|x| out.round(x)).collect(),
    );
    let mut grad = std::collections::BTreeMap::new();
    for name in &case.grad {
        let sign = if name == "target" { -1.0 } else { 1.0 };
        let g: Vec<f64> = (0..n)
            .map(|i| {
                let c = match (reduction, cot) {
                    (Reduction::None, Some(c)) => c[i] as f32,
                    (_, Some(c)) => c[0] as f32,
                    _ => 1.0,
                };
                dt.round((sign * dterms[i] * scale * c) as f64)
            })
            .collect();
        grad.insert(
            name.clone(),
            Tensor::float(dt, case.inputs[name].shape.clone(), g),
        );
    }
    Ok(Response {
        id: case.id,
        value,
        grad,
    })
}

fn log_cosh_textbook(p: f32, t: f32, _: &Case) -> (f32, f32) {
    let r = p - t;
    (libm::logf(libm::coshf(r)), libm::tanhf(r))
}

fn mse_term(p: f32, t: f32, _: &Case) -> (f32, f32) {
    let r = p - t;
    (r * r, 2.0 * r)
}

fn mae_term(p: f32, t: f32, _: &Case) -> (f32, f32) {
    let r = p - t;
    (
        r.abs(),
        if r > 0.0 {
            1.0
        } else if r < 0.0 {
            -1.0
        } else {
            0.0
        },
    )
}

fn huber_term(p: f32, t: f32, c: &Case) -> (f32, f32) {
    let d = c.float_param("delta").unwrap_or(1.0) as f32;
    let r = p - t;
    if r.abs() <= d {
        (0.5 * r * r, r)
    } else {
        (d * (r.abs() - 0.5 * d), d * r.signum())
    }
}

pub static ENTRIES: &[ZooEntry] = &[
    ZooEntry {
        name: "log_cosh_textbook",
        loss: "log_cosh",
        failure: "log(cosh(r)) as written: cosh overflows f32 for |r| > 89.4, so the loss is +inf where the exact \
                  value is |r| − ln 2 (the stable form is |r| + softplus(−2|r|) − ln 2, as Keras writes it).",
        verdict: Verdict::SpuriousInf,
        dtypes: &[Dtype::F32, Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, log_cosh_textbook, Flaws::default()),
    },
    ZooEntry {
        name: "mse_accumulate_in_dtype",
        loss: "mse",
        failure: "the sum kept in the 16-bit input dtype: an f16 running sum stalls at 2048 for unit terms and \
                  overflows at 65504 while the mean is finite (accumulate in f32, as every framework's CPU kernel does).",
        verdict: Verdict::Accuracy,
        dtypes: &[Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, mse_term, Flaws { accumulate_in_dtype: true, ..Flaws::default() }),
    },
    ZooEntry {
        name: "mae_mask_by_multiply",
        loss: "mae",
        failure: "masking by multiplying with 0: a NaN or ±inf in a masked position leaks into the sum (0·NaN = NaN, \
                  0·inf = NaN) — the pattern behind NaN losses from padded batches.",
        verdict: Verdict::SpuriousNan,
        dtypes: &[Dtype::F32, Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, mae_term, Flaws { mask_by_multiply: true, ..Flaws::default() }),
    },
    ZooEntry {
        name: "huber_mean_over_count",
        loss: "huber",
        failure: "the mean divided by the element count instead of Σ mask·weight: padded elements count in the \
                  denominator, so adding padding lowers the loss (burn's CrossEntropy with pad tokens, \
                  tracel-ai/burn#5568, fixed).",
        verdict: Verdict::Accuracy,
        dtypes: &[Dtype::F32, Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, huber_term, Flaws { mean_over_count: true, ..Flaws::default() }),
    },
];
