//! Known-bad contrastive losses: distances and normalisations as they are commonly written, in
//! f32.
//!
//! - `triplet_plain_sqrt`, `contrastive_plain_sqrt`: d = sqrt(Σ u²) differentiated as u/d —
//!   0/0 = NaN for identical points (pytorch/pytorch#2421, #37154; tensorflow/tensorflow#30199;
//!   sentence-transformers PR #4033: FAILURES.md).
//! - `info_nce_raw_norm`: cosine similarity as x/‖x‖ without a floor — NaN for a zero
//!   embedding (optax 0.2.8's cosine_similarity, keras-team/keras#23075, burn #5584).
//! - `info_nce_no_shift`: e^{s/τ} without subtracting the row maximum — overflow at small τ
//!   (Lightning-bolts #811: nt_xent's e^{1/T} at T = 0.01).

use super::Flag;
use super::ZooEntry;
use crate::check::compare::Verdict;
use losscheck_core::{catalogue, Case, Dtype, LossError, ParamValue, Reduction, Response, Tensor};
use std::collections::BTreeMap;

const ALL: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::Bf16];

fn f32s(case: &Case, name: &str) -> Vec<f32> {
    case.inputs
        .get(name)
        .and_then(Tensor::f)
        .map(|v| v.iter().map(|&x| x as f32).collect())
        .unwrap_or_default()
}

/// A row-wise loss reduced the usual way (masked and zero-weight rows skipped, `mean` over
/// Σ m·w, 0 for an empty mean), in f32. `row(i, grads)` returns l_i and writes ∂l_i/∂x_k for
/// the row's D components of each input k into `grads[k]`.
fn reduce_rows(
    case: &Case,
    names: &[&str],
    mut row: impl FnMut(usize, &mut [Vec<f32>]) -> f32,
) -> Result<Response, LossError> {
    let checked = catalogue::validate(case)?;
    let (n, d) = (checked.rows, checked.dim("D"));
    let coef: Vec<f32> = (0..n)
        .map(|i| {
            let m = case
                .inputs
                .get("mask")
                .and_then(Tensor::i)
                .map_or(1, |m| m[i]);
            let w = case
                .inputs
                .get("weight")
                .and_then(Tensor::f)
                .map_or(1.0, |w| w[i]);
            if m == 0 {
                0.0
            } else {
                w as f32
            }
        })
        .collect();
    let den: f32 = coef.iter().sum();
    let red = case.reduction();
    let scale = if red == Reduction::Mean && den > 0.0 {
        1.0 / den
    } else {
        1.0
    };
    let cot = case.inputs.get("cotangent").and_then(Tensor::f);
    let mut value = vec![0f32; n];
    let mut g: Vec<Vec<f32>> = names.iter().map(|_| vec![0f32; n * d]).collect();
    let mut scratch: Vec<Vec<f32>> = names.iter().map(|_| vec![0f32; d]).collect();
    let empty = red == Reduction::Mean && den == 0.0;
    for i in 0..n {
        if coef[i] == 0.0 || empty {
            continue;
        }
        let l = row(i, &mut scratch);
        value[i] = coef[i] * l;
        let c = match (red, cot) {
            (Reduction::None, Some(c)) => c[i] as f32,
            (_, Some(c)) => c[0] as f32,
            _ => 1.0,
        };
        for (k, s) in scratch.iter().enumerate() {
            for j in 0..d {
                g[k][i * d + j] = coef[i] * s[j] * scale * c;
            }
        }
    }
    respond(case, &checked, names, red, value, scale, empty, g)
}

#[allow(clippy::too_many_arguments)]
fn respond(
    case: &Case,
    checked: &losscheck_core::Checked,
    names: &[&str],
    red: Reduction,
    value: Vec<f32>,
    scale: f32,
    empty: bool,
    g: Vec<Vec<f32>>,
) -> Result<Response, LossError> {
    let out = case.out_dtype;
    let v: Vec<f64> = match red {
        Reduction::None => value.iter().map(|&x| out.round(x as f64)).collect(),
        _ if empty => vec![0.0],
        _ => vec![out.round((value.iter().sum::<f32>() * scale) as f64)],
    };
    let mut grad = BTreeMap::new();
    for (k, name) in names.iter().enumerate() {
        if case.grad.iter().any(|x| x == name) {
            grad.insert(
                name.to_string(),
                Tensor::float(
                    case.dtype,
                    case.inputs[*name].shape.clone(),
                    g[k].iter().map(|&x| case.dtype.round(x as f64)).collect(),
                ),
            );
        }
    }
    Ok(Response {
        id: case.id,
        value: Tensor::float(out, checked.value_shape(red), v),
        grad,
    })
}

fn param(case: &Case, name: &str, default: f64) -> f64 {
    case.float_param(name).unwrap_or(default)
}

/// sqrt(Σ u²) in f32, the way it is usually written.
fn plain_norm(u: &[f32]) -> f32 {
    libm::sqrtf(u.iter().map(|x| x * x).sum())
}

fn triplet_plain_sqrt(case: &Case) -> Result<Response, LossError> {
    let names = ["anchor", "positive", "negative"];
    let (a, p, n) = (
        f32s(case, "anchor"),
        f32s(case, "positive"),
        f32s(case, "negative"),
    );
    let d = case.inputs["anchor"].shape.get(1).copied().unwrap_or(0);
    let (m, eps) = (
        param(case, "margin", 1.0) as f32,
        param(case, "eps", 0.0) as f32,
    );
    reduce_rows(case, &names, |i, g| {
        let r = i * d..(i + 1) * d;
        let u: Vec<f32> = a[r.clone()]
            .iter()
            .zip(&p[r.clone()])
            .map(|(x, y)| x - y + eps)
            .collect();
        let v: Vec<f32> = a[r.clone()]
            .iter()
            .zip(&n[r])
            .map(|(x, y)| x - y + eps)
            .collect();
        let (dp, dn) = (plain_norm(&u), plain_norm(&v));
        let z = dp - dn + m;
        for k in 0..d {
            let (uu, vv) = (u[k] / dp, v[k] / dn); // 0/0 at identical points
            let on = if z > 0.0 { 1.0 } else { 0.0 };
            g[0][k] = on * (uu - vv);
            g[1][k] = -on * uu;
            g[2][k] = on * vv;
        }
        z.max(0.0)
    })
}

fn contrastive_plain_sqrt(case: &Case) -> Result<Response, LossError> {
    let names = ["x1", "x2"];
    let (x1, x2) = (f32s(case, "x1"), f32s(case, "x2"));
    let y = case
        .inputs
        .get("target")
        .and_then(Tensor::i)
        .unwrap_or(&[])
        .to_vec();
    let d = case.inputs["x1"].shape.get(1).copied().unwrap_or(0);
    let m = param(case, "margin", 1.0) as f32;
    reduce_rows(case, &names, |i, g| {
        let r = i * d..(i + 1) * d;
        let w: Vec<f32> = x1[r.clone()]
            .iter()
            .zip(&x2[r])
            .map(|(a, b)| a - b)
            .collect();
        let dist = plain_norm(&w);
        let t = (m - dist).max(0.0);
        for k in 0..d {
            // ∂d/∂x1 = w/d: 0/0 at identical points, times (m − d) = m
            let dd = w[k] / dist;
            let gk = if y[i] == 1 { 2.0 * w[k] } else { -2.0 * t * dd };
            g[0][k] = gk;
            g[1][k] = -gk;
        }
        if y[i] == 1 {
            dist * dist
        } else {
            t * t
        }
    })
}

/// info_nce in f32 with a chosen normalisation (`floor`: max(‖x‖, eps), else the raw norm)
/// and softmax (`shift`: subtract the row maximum, else e^{s/τ} as is); symmetric like CLIP.
fn info_nce_naive(case: &Case, floor: bool, shift: bool) -> Result<Response, LossError> {
    let checked = catalogue::validate(case)?;
    let (n, d) = (checked.rows, checked.dim("D"));
    let names = ["query", "key"];
    let tau = param(case, "temperature", 0.07) as f32;
    let eps = param(case, "eps", 1e-12) as f32;
    let flag = |k: &str, def: bool| match case.params.get(k) {
        Some(ParamValue::Bool(b)) => *b,
        _ => def,
    };
    let (normalize, symmetric) = (flag("normalize", true), flag("symmetric", false));
    let mask: Vec<bool> = (0..n)
        .map(|i| {
            case.inputs
                .get("mask")
                .and_then(Tensor::i)
                .is_none_or(|m| m[i] != 0)
        })
        .collect();
    let present: Vec<usize> = (0..n).filter(|&i| mask[i]).collect();
    let nk = present.len();
    let unit = |x: &[f32]| -> (Vec<f32>, f32) {
        if !normalize {
            return (x.to_vec(), 1.0);
        }
        let nn = plain_norm(x);
        let nu = if floor { nn.max(eps) } else { nn };
        (x.iter().map(|c| c / nu).collect(), nu)
    };
    let (q, k) = (f32s(case, "query"), f32s(case, "key"));
    let qh: Vec<(Vec<f32>, f32)> = present
        .iter()
        .map(|&i| unit(&q[i * d..(i + 1) * d]))
        .collect();
    let kh: Vec<(Vec<f32>, f32)> = present
        .iter()
        .map(|&i| unit(&k[i * d..(i + 1) * d]))
        .collect();
    let z: Vec<Vec<f32>> = (0..nk)
        .map(|a| {
            (0..nk)
                .map(|b| {
                    qh[a]
                        .0
                        .iter()
                        .zip(&kh[b].0)
                        .map(|(x, y)| x * y)
                        .sum::<f32>()
                        / tau
                })
                .collect()
        })
        .collect();
    let coef: Vec<f32> = (0..n)
        .map(|i| {
            let w = case
                .inputs
                .get("weight")
                .and_then(Tensor::f)
                .map_or(1.0, |w| w[i]);
            if mask[i] {
                w as f32
            } else {
                0.0
            }
        })
        .collect();
    let den: f32 = coef.iter().sum();
    let red = case.reduction();
    let empty = red == Reduction::Mean && den == 0.0;
    let scale = if red == Reduction::Mean && den > 0.0 {
        1.0 / den
    } else {
        1.0
    };
    let cot = case.inputs.get("cotangent").and_then(Tensor::f);
    let half = if symmetric { 0.5f32 } else { 1.0 };
    let mut value = vec![0f32; n];
    let mut gm = vec![vec![0f32; nk]; nk];
    for a in 0..nk {
        let i = present[a];
        if coef[i] == 0.0 || empty {
            continue;
        }
        let c = match (red, cot) {
            (Reduction::None, Some(c)) => c[i] as f32,
            (_, Some(c)) => c[0] as f32,
            _ => 1.0,
        };
        let mut l = 0f32;
        for col in [false, true]
            .into_iter()
            .take(if symmetric { 2 } else { 1 })
        {
            let at = |b: usize| if col { z[b][a] } else { z[a][b] };
            let top = if shift {
                (0..nk).map(at).fold(f32::NEG_INFINITY, f32::max)
            } else {
                0.0
            };
            let e: Vec<f32> = (0..nk).map(|b| libm::expf(at(b) - top)).collect();
            let s: f32 = e.iter().sum();
            l += half * (libm::logf(s) + top - at(a));
            for b in 0..nk {
                let p = e[b] / s - if b == a { 1.0 } else { 0.0 };
                let (r, cc) = if col { (b, a) } else { (a, b) };
                gm[r][cc] += coef[i] * c * scale * half * p / tau;
            }
        }
        value[i] = coef[i] * l;
    }
    let mut g: Vec<Vec<f32>> = vec![vec![0f32; n * d]; 2];
    for (kk, (mine, other)) in [(&qh, &kh), (&kh, &qh)].into_iter().enumerate() {
        for a in 0..nk {
            let up: Vec<f32> = (0..d)
                .map(|c| {
                    (0..nk)
                        .map(|b| if kk == 0 { gm[a][b] } else { gm[b][a] } * other[b].0[c])
                        .sum()
                })
                .collect();
            let (xh, nu) = (&mine[a].0, mine[a].1);
            let dotp: f32 = xh.iter().zip(&up).map(|(x, y)| x * y).sum();
            let branch = normalize && (!floor || nu > eps);
            for c in 0..d {
                g[kk][present[a] * d + c] = if branch {
                    (up[c] - xh[c] * dotp) / nu
                } else {
                    up[c] / nu
                };
            }
        }
    }
    respond(case, &checked, &names, red, value, scale, empty, g)
}

/// The contrastive family's zoo entries.
pub static ENTRIES: &[ZooEntry] = &[
    ZooEntry {
        name: "triplet_plain_sqrt",
        loss: "triplet",
        failure: "d = sqrt(Σ(a − p)²) differentiated as (a − p)/d: 0/0 = NaN gradient when the anchor equals the \
                  positive (pytorch/pytorch#2421, tensorflow/tensorflow#30199, sentence-transformers PR #4033).",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: triplet_plain_sqrt,
    },
    ZooEntry {
        name: "contrastive_plain_sqrt",
        loss: "contrastive",
        failure: "d = sqrt(Σ(x1 − x2)²), ∂/∂x1 = −2(m − d)·(x1 − x2)/d: 0/0 = NaN for identical dissimilar pairs \
                  (pytorch/pytorch#37154).",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: contrastive_plain_sqrt,
    },
    ZooEntry {
        name: "info_nce_raw_norm",
        loss: "info_nce",
        failure: "cosine similarity as x/‖x‖ without a floor: NaN value and gradients for a zero embedding \
                  (optax 0.2.8's cosine_similarity; keras-team/keras#23075; burn #5584).",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: |c| info_nce_naive(c, false, true),
    },
    ZooEntry {
        name: "info_nce_no_shift",
        loss: "info_nce",
        failure: "softmax as e^{s/τ}/Σ e^{s/τ} without the max shift: e^{1/τ} overflows f32 for τ < 0.0113, \
                  log(inf) = inf (Lightning-bolts #811, nt_xent at T = 0.01).",
        verdict: Flag::Verdict(Verdict::SpuriousInf),
        dtypes: ALL,
        eval: |c| info_nce_naive(c, true, false),
    },
];
