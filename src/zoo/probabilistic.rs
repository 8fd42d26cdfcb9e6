//! Known-bad probabilistic losses: the formulas as commonly written. Each entry's reduction is
//! done right (in f64: skipped rows never evaluated, Σ m·w denominators, the empty mean 0,
//! termwise cotangent-scaled gradients, one rounding), so the flaw is the formula alone.

use super::Flag;
use super::ZooEntry;
use crate::check::compare::Verdict;
use losscheck_core::catalogue::{self, skipped_rows};
use losscheck_core::{Case, Dtype, LossError, ParamValue, Reduction, Response, Tensor};
use std::collections::BTreeMap;

const ALL: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::Bf16];

fn data<'c>(case: &'c Case, name: &str) -> Result<&'c [f64], LossError> {
    case.inputs
        .get(name)
        .and_then(Tensor::f)
        .ok_or_else(|| LossError::invalid(format!("missing input {name}")))
}

/// One row's value and its derivatives ∂l/∂x for each differentiable input (in the
/// catalogue's order, the row's slice of each).
type RowFn<'a> = dyn Fn(usize) -> (f64, Vec<Vec<f64>>) + 'a;

/// The honest reduction of per-row terms (see the module docs).
fn reduce_rows(case: &Case, row: &RowFn<'_>) -> Result<Response, LossError> {
    let checked = catalogue::validate(case)?;
    let n = checked.rows;
    let skip = skipped_rows(case, n);
    let w = |i: usize| {
        case.inputs
            .get("weight")
            .and_then(Tensor::f)
            .map_or(1.0, |w| w[i])
    };
    let reduction = case.reduction();
    let den: f64 = (0..n).filter(|&i| !skip[i]).map(w).sum();
    let empty = reduction == Reduction::Mean && den == 0.0;
    let scale = if reduction == Reduction::Mean {
        den
    } else {
        1.0
    };
    let cot = case.inputs.get("cotangent").and_then(Tensor::f);
    let names = case.spec().grads;
    let mut grads: Vec<Vec<f64>> = names
        .iter()
        .map(|g| vec![0.0; case.inputs.get(*g).map_or(0, Tensor::len)])
        .collect();
    let mut values = vec![0.0; n];
    let mut total = 0.0;
    for i in (0..n).filter(|&i| !skip[i] && !empty) {
        let (l, d) = row(i);
        values[i] = w(i) * l;
        total += w(i) * l;
        let c = match (reduction, cot) {
            (Reduction::None, Some(c)) => c[i],
            (_, Some(c)) => c[0],
            _ => 1.0,
        };
        for (k, dk) in d.iter().enumerate() {
            let per = dk.len();
            for (j, &x) in dk.iter().enumerate() {
                grads[k][i * per + j] = if x == 0.0 || c == 0.0 {
                    0.0
                } else {
                    w(i) * x * c / scale
                };
            }
        }
    }
    let out = case.out_dtype;
    let value: Vec<f64> = match reduction {
        Reduction::None => values.into_iter().map(|x| out.round(x)).collect(),
        _ if empty => vec![0.0],
        _ => vec![out.round(total / scale)],
    };
    let mut grad = BTreeMap::new();
    for (k, name) in names.iter().enumerate() {
        if case.grad.iter().any(|g| g == name) {
            let g = grads[k].iter().map(|&x| case.dtype.round(x)).collect();
            grad.insert(
                name.to_string(),
                Tensor::float(case.dtype, case.inputs[*name].shape.clone(), g),
            );
        }
    }
    Ok(Response {
        id: case.id,
        value: Tensor::float(out, checked.value_shape(reduction), value),
        grad,
    })
}

/// `kl_div` as Σ_c (p·log p − p·log q) in f32: at p = 0, p·log p = 0·(−inf) = NaN (and so is
/// 0·log q at log q = −inf), where the exact value has no term.
fn kl_div_plogp(case: &Case) -> Result<Response, LossError> {
    let (lq, t) = (data(case, "input")?, data(case, "target")?);
    let c = case.inputs["input"].shape.get(1).copied().unwrap_or(0);
    let log_target = matches!(case.params.get("log_target"), Some(ParamValue::Bool(true)));
    reduce_rows(case, &|i| {
        let mut v = 0f32;
        let mut g = vec![0.0; c];
        for j in 0..c {
            let (q, tt) = (lq[i * c + j] as f32, t[i * c + j] as f32);
            let (p, lp) = if log_target {
                (libm::expf(tt), tt)
            } else {
                (tt, libm::logf(tt))
            };
            v += p * lp - p * q;
            g[j] = -p as f64;
        }
        (v as f64, vec![g])
    })
}

/// `neg_elbo` with e^{logvar} computed (and stored) in the 16-bit input dtype: it overflows to
/// inf at lv > 11.09 in f16, where ½β·(e^lv − 1 − lv) is finite for β ≤ 1 (the rest in f64).
fn neg_elbo_exp_in_dtype(case: &Case) -> Result<Response, LossError> {
    let dt = case.dtype;
    let (x, z) = (data(case, "x")?, data(case, "recon_logits")?);
    let (mu, lv) = (data(case, "mu")?, data(case, "logvar")?);
    let d = case.inputs["x"].shape.get(1).copied().unwrap_or(0);
    let k = case.inputs["mu"].shape.get(1).copied().unwrap_or(0);
    let beta = case.float_param("beta").unwrap_or(1.0);
    reduce_rows(case, &|i| {
        let mut v = 0.0;
        let mut gz = vec![0.0; d];
        for j in 0..d {
            let (xv, zv) = (x[i * d + j], z[i * d + j]);
            let sp = crate::kernels::math::softplus;
            if xv != 0.0 {
                v += xv * sp(-zv);
            }
            if xv != 1.0 {
                v += (1.0 - xv) * sp(zv);
            }
            gz[j] = crate::kernels::math::sigmoid(zv) - xv;
        }
        let (mut gm, mut gl) = (vec![0.0; k], vec![0.0; k]);
        for j in 0..k {
            let (m, l) = (mu[i * k + j], lv[i * k + j]);
            let e = dt.round(libm::exp(l)); // the flaw: e^lv in the 16-bit dtype
            if beta != 0.0 {
                v += 0.5 * beta * (m * m + e - 1.0 - l);
                gm[j] = beta * m;
                gl[j] = 0.5 * beta * (e - 1.0);
            }
        }
        (v, vec![gz, gm, gl])
    })
}

/// `gaussian_nll` as ½·(log var + r²/var) with no floor: var = 0 gives −inf + inf (or 0/0) =
/// NaN where the exact value uses max(var, eps).
fn gaussian_nll_no_floor(case: &Case) -> Result<Response, LossError> {
    let (m, t, var) = (
        data(case, "mean")?,
        data(case, "target")?,
        data(case, "var")?,
    );
    let full = matches!(case.params.get("full"), Some(ParamValue::Bool(true)));
    reduce_rows(case, &|i| {
        let (r, v) = ((t[i] - m[i]) as f32, var[i] as f32);
        let mut l = 0.5 * (libm::logf(v) + r * r / v);
        if full {
            l += 0.918_938_5;
        }
        let dm = -r / v;
        let dv = 0.5 * (1.0 / v - r * r / (v * v));
        (l as f64, vec![vec![dm as f64], vec![dv as f64]])
    })
}

/// The probabilistic zoo entries.
pub static ENTRIES: &[ZooEntry] = &[
    ZooEntry {
        name: "kl_div_plogp",
        loss: "kl_div",
        failure: "kl_div written as Σ p·log p − p·log q: 0·log 0 = NaN at p = 0, also where log q = −inf (PyTorch 2.15 and optax 0.2.8 return NaN there; FAILURES.md: pytorch #89558, #115588, optax PR #473)",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: kl_div_plogp,
    },
    ZooEntry {
        name: "neg_elbo_exp_in_dtype",
        loss: "neg_elbo",
        failure: "the VAE KL term with e^{logvar} computed in the 16-bit dtype: inf for logvar > 11.09 in f16 where the loss is finite",
        verdict: Flag::Verdict(Verdict::SpuriousInf),
        dtypes: &[Dtype::F16],
        eval: neg_elbo_exp_in_dtype,
    },
    ZooEntry {
        name: "gaussian_nll_no_floor",
        loss: "gaussian_nll",
        failure: "gaussian_nll as ½(log var + r²/var) without the eps floor: NaN at var = 0 (PyTorch clamps var at eps; FAILURES.md: PR #190058)",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: gaussian_nll_no_floor,
    },
];
