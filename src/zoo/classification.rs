//! Known-bad classification losses: the logistic losses as they are commonly written, and
//! cross-entropy with the reduction mistakes seen in the wild.

use super::Flag;
use super::{naive, Flaws, ZooEntry};
use crate::check::compare::Verdict;
use losscheck_core::catalogue::{self, ignore_index};
use losscheck_core::{Case, Dtype, LossError, Reduction, Response, Tensor};
use std::collections::BTreeMap;

const ALL: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::Bf16];

fn sigmoid_f32(z: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-z))
}

/// `pos_weight` of element `i` (elementwise, or broadcast over the last dim), 1 when absent.
fn pos_weight(case: &Case, i: usize) -> f32 {
    match case.inputs.get("pos_weight").and_then(Tensor::f) {
        Some(pw) if !pw.is_empty() => pw[i % pw.len()] as f32,
        _ => 1.0,
    }
}

/// −t·log σ(z) − (1−t)·log(1 − σ(z)), as written.
fn bce_logits_log_sigmoid(z: f32, t: f32, i: usize, c: &Case) -> (f32, f32) {
    let pw = pos_weight(c, i);
    let s = sigmoid_f32(z);
    let l = -(pw * t * libm::logf(s) + (1.0 - t) * libm::logf(1.0 - s));
    (l, pw * t * (s - 1.0) + (1.0 - t) * s)
}

/// max(z, 0) − z·t + log1p(e^−|z|): stable for finite z, NaN at z = ±inf (inf − inf).
fn bce_logits_max_form(z: f32, t: f32, _: usize, _: &Case) -> (f32, f32) {
    let l = z.max(0.0) - z * t + libm::log1pf(libm::expf(-z.abs()));
    (l, sigmoid_f32(z) - t)
}

/// PyTorch's pos_weight form (1 − t)·z + (1 + (pw − 1)·t)·softplus(−z), softplus(−z) as
/// log1p(e^−|z|) + max(−z, 0): the first two terms cancel for soft targets at negative z.
fn bce_logits_pos_weight_form(z: f32, t: f32, i: usize, c: &Case) -> (f32, f32) {
    let pw = pos_weight(c, i);
    let lw = 1.0 + (pw - 1.0) * t;
    let sp = libm::log1pf(libm::expf(-z.abs())) + (-z).max(0.0);
    let l = (1.0 - t) * z + lw * sp;
    (l, (1.0 - t) - lw * sigmoid_f32(-z))
}

/// Keras-style BCE on probabilities: clip p to [ε, 1 − ε] *and* add ε inside the logs.
fn bce_clip_plus_eps(p: f32, t: f32, _: usize, _: &Case) -> (f32, f32) {
    const EPS: f32 = 1e-7;
    let q = p.clamp(EPS, 1.0 - EPS);
    let l = -(t * libm::logf(q + EPS) + (1.0 - t) * libm::logf(1.0 - q + EPS));
    let d = if p < EPS || p > 1.0 - EPS {
        0.0
    } else {
        -t / (q + EPS) + (1.0 - t) / (1.0 - q + EPS)
    };
    (l, d)
}

/// Focal loss with (1 − p_t)^γ by `powf` and its derivative γ(1 − p_t)^(γ−1)·∂p_t/∂z by the
/// chain rule: for γ < 1 at p_t → 1 that is inf·0 = NaN.
fn focal_powf(z: f32, t: f32, _: usize, c: &Case) -> (f32, f32) {
    let gamma = c.float_param("gamma").unwrap_or(2.0) as f32;
    let at = match c.float_param("alpha") {
        Some(a) => a as f32 * t + (1.0 - a as f32) * (1.0 - t),
        None => 1.0,
    };
    let p = sigmoid_f32(z);
    let pt = p * t + (1.0 - p) * (1.0 - t);
    let ce = z.max(0.0) - z * t + libm::log1pf(libm::expf(-z.abs()));
    let q = 1.0 - pt;
    let l = at * libm::powf(q, gamma) * ce;
    let dpt = (2.0 * t - 1.0) * p * (1.0 - p);
    let d = at * (-gamma * libm::powf(q, gamma - 1.0) * dpt * ce + libm::powf(q, gamma) * (p - t));
    (l, d)
}

// ---- cross-entropy

/// How a naive cross-entropy computes a row.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum RowFormula {
    /// In f64, with the max shift and log1p of the non-maximal terms (accurate): the zoo entry's
    /// flaw is then its reduction alone.
    #[default]
    Accurate,
    /// log(e^{z_y} / Σ e^{z_c}) in f32, no max shift.
    NoShift,
    /// (m + log Σ e^{z_c − m}) − z_y in f32: the usual "stable" form, which cancels on confident
    /// rows.
    LseMinusTarget,
}

/// The reduction mistakes.
#[derive(Clone, Copy, Default)]
struct CeFlaws {
    row: RowFormula,
    /// mean = Σ / D with D = 0 → 0/0 = NaN.
    nan_empty_mean: bool,
    /// The mean's denominator counts every row, ignored ones included (padding counted).
    mean_over_rows: bool,
    /// The smoothing term is computed (and summed) for ignored rows too.
    smoothing_on_ignored: bool,
    /// Class-weighted mean divided by the number of non-ignored rows instead of Σ w_y.
    weighted_mean_over_rows: bool,
    /// Ignored rows computed like the others, then multiplied by 0 (NaN and ±inf leak).
    ignore_by_multiply: bool,
    /// The running sum kept in the 16-bit input dtype.
    accumulate_in_dtype: bool,
}

/// One row: l = Σ_c a_c·(LSE(z) − z_c) and ∂l/∂z_j = A·p_j − a_j, in f64, accurate, in
/// extended reals (−inf logits have p = 0; one +inf logit makes p one-hot; two, a NaN, or an
/// all −inf row: NaN).
fn row_accurate(z: &[f64], a: &[f64]) -> (f64, Vec<f64>) {
    let c = z.len();
    let big_a: f64 = a.iter().sum();
    let nan = (f64::NAN, vec![f64::NAN; c]);
    if a.iter().all(|&x| x == 0.0) {
        // no term at all: exactly 0 (a zero coefficient wins, even over NaN)
        return (0.0, vec![0.0; c]);
    }
    if z.iter().any(|x| x.is_nan()) {
        return nan;
    }
    let n_pinf = z.iter().filter(|&&x| x == f64::INFINITY).count();
    if n_pinf >= 2 {
        return nan;
    }
    if n_pinf == 1 {
        let k = z.iter().position(|&x| x == f64::INFINITY).unwrap();
        let l = if (0..c).any(|j| j != k && a[j] > 0.0) {
            f64::INFINITY
        } else {
            0.0
        };
        let g = (0..c)
            .map(|j| if j == k { big_a - a[j] } else { -a[j] })
            .collect();
        return (l, g);
    }
    let (kmax, m) = z
        .iter()
        .copied()
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (j, x)| if x > b.1 { (j, x) } else { b },
        );
    if m == f64::NEG_INFINITY {
        return nan;
    }
    let e: Vec<f64> = z.iter().map(|&x| libm::exp(x - m)).collect();
    let s_rest: f64 = e
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != kmax)
        .map(|(_, &x)| x)
        .sum();
    let log_s = libm::log1p(s_rest);
    let s = 1.0 + s_rest;
    let mut l = 0.0;
    for j in 0..c {
        if a[j] != 0.0 {
            l += a[j] * ((m - z[j]) + log_s);
        }
    }
    // at the argmax, A·p_k − a_k = Σ_{c≠k} a_c − A·s_rest/s, without the cancellation
    let rest_a: f64 = a
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != kmax)
        .map(|(_, &x)| x)
        .sum();
    let g = (0..c)
        .map(|j| {
            if j == kmax {
                rest_a - big_a * (s_rest / s)
            } else {
                big_a * (e[j] / s) - a[j]
            }
        })
        .collect();
    (l, g)
}

/// The same in f32 by a naive formula.
fn row_f32(z: &[f64], a: &[f64], formula: RowFormula) -> (f64, Vec<f64>) {
    let z: Vec<f32> = z.iter().map(|&x| x as f32).collect();
    let a: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let big_a: f32 = a.iter().sum();
    let (l, p): (f32, Vec<f32>) = match formula {
        RowFormula::NoShift => {
            let e: Vec<f32> = z.iter().map(|&x| libm::expf(x)).collect();
            let s: f32 = e.iter().sum();
            let p: Vec<f32> = e.iter().map(|&x| x / s).collect();
            let l = p
                .iter()
                .zip(&a)
                .filter(|(_, &w)| w != 0.0)
                .map(|(&q, &w)| -w * libm::logf(q))
                .sum();
            (l, p)
        }
        _ => {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = z.iter().map(|&x| libm::expf(x - m)).collect();
            let s: f32 = e.iter().sum();
            let lse = m + libm::logf(s);
            let l = z
                .iter()
                .zip(&a)
                .filter(|(_, &w)| w != 0.0)
                .map(|(&x, &w)| w * (lse - x))
                .sum();
            (l, e.iter().map(|&x| x / s).collect())
        }
    };
    let g = p
        .iter()
        .zip(&a)
        .map(|(&q, &w)| (big_a * q - w) as f64)
        .collect();
    (l as f64, g)
}

/// Cross-entropy over [N, C] / [B, T, C] class ids or [N, C] soft targets, token `mean`
/// (`sequence_mean` is unsupported), with the given flaws.
fn cross_entropy(case: &Case, flaws: CeFlaws) -> Result<Response, LossError> {
    let checked = catalogue::validate(case)?;
    let reduction = case.reduction();
    if reduction == Reduction::SequenceMean {
        return Err(LossError::unsupported("sequence_mean"));
    }
    let z = case.inputs["logits"].f().unwrap_or(&[]);
    let shape = case.inputs["logits"].shape.clone();
    let c = *shape.last().unwrap_or(&0);
    let n = checked.rows;
    let target = &case.inputs["target"];
    let soft = target.f().is_some();
    let ii = ignore_index(case);
    let eps = case.float_param("label_smoothing").unwrap_or(0.0);
    let cw: Vec<f64> = match case.inputs.get("class_weight").and_then(Tensor::f) {
        Some(w) => w.to_vec(),
        None => vec![1.0; c],
    };
    let dt = case.dtype;
    let acc = |x: f64| {
        if flaws.accumulate_in_dtype {
            dt.round(x)
        } else if flaws.row == RowFormula::Accurate {
            x
        } else {
            x as f32 as f64
        }
    };
    let (mut num, mut den, mut rows_active) = (0.0f64, 0.0f64, 0.0f64);
    let mut terms = vec![0.0f64; n];
    let mut grads = vec![0.0f64; n * c];
    let mut scale_row = vec![0.0f64; n];
    for i in 0..n {
        let zi = &z[i * c..(i + 1) * c];
        let (ignored, y) = if soft {
            (false, 0)
        } else {
            let t = target.i().unwrap()[i];
            (Some(t) == ii, t)
        };
        let mut a = vec![0.0f64; c];
        if soft {
            let q = &target.f().unwrap()[i * c..(i + 1) * c];
            for j in 0..c {
                a[j] = cw[j] * ((1.0 - eps) * q[j] + eps / c as f64);
            }
        } else {
            for j in 0..c {
                a[j] = eps / c as f64 * cw[j];
            }
            if !ignored || flaws.ignore_by_multiply {
                let yy = (y.max(0) as usize).min(c.saturating_sub(1));
                if c > 0 {
                    a[yy] += (1.0 - eps) * cw[yy];
                }
            }
        }
        let computed =
            !ignored || flaws.ignore_by_multiply || (flaws.smoothing_on_ignored && eps > 0.0);
        if !computed {
            continue;
        }
        let (l, g) = match flaws.row {
            RowFormula::Accurate => row_accurate(zi, &a),
            f => row_f32(zi, &a, f),
        };
        let factor = if ignored && flaws.ignore_by_multiply {
            0.0
        } else {
            1.0
        };
        terms[i] = factor * l;
        for (o, gj) in grads[i * c..(i + 1) * c].iter_mut().zip(g) {
            *o = factor * gj;
        }
        scale_row[i] = 1.0;
        num = acc(num + terms[i]);
        if !ignored {
            let wy = if soft { 1.0 } else { cw[y as usize] };
            den = acc(den + wy);
            rows_active += 1.0;
        }
    }
    if soft {
        den = n as f64;
    }
    if flaws.mean_over_rows {
        den = n as f64;
    }
    if flaws.weighted_mean_over_rows && case.inputs.contains_key("class_weight") {
        den = rows_active;
    }
    let cot = case.inputs.get("cotangent").and_then(Tensor::f);
    let (value, inv): (Vec<f64>, f64) = match reduction {
        Reduction::None => (terms.clone(), 1.0),
        Reduction::Sum => (vec![num], 1.0),
        _ => {
            if den == 0.0 && !flaws.nan_empty_mean {
                (vec![0.0], 0.0)
            } else {
                (vec![num / den], 1.0 / den)
            }
        }
    };
    let out = case.out_dtype;
    let value = Tensor::float(
        out,
        checked.value_shape(reduction),
        value.into_iter().map(|x| out.round(x)).collect(),
    );
    let mut grad = BTreeMap::new();
    if case.grad.iter().any(|g| g == "logits") {
        let g: Vec<f64> = (0..n * c)
            .map(|k| {
                let i = k / c;
                let ci = match (reduction, cot) {
                    (Reduction::None, Some(t)) => t[i],
                    (_, Some(t)) => t[0],
                    _ => 1.0,
                };
                dt.round(grads[k] * scale_row[i] * inv * ci)
            })
            .collect();
        grad.insert("logits".to_string(), Tensor::float(dt, shape, g));
    }
    Ok(Response {
        id: case.id,
        value,
        grad,
    })
}

pub static ENTRIES: &[ZooEntry] = &[
    ZooEntry {
        name: "bce_logits_log_sigmoid",
        loss: "bce_logits",
        failure: "−t·log(σ(z)) − (1−t)·log(1−σ(z)) as written: σ(z) rounds to 1 in f32 for z ≳ 17 and to 0 for z ≲ −104, \
                  so a log is −inf and the loss +inf where the exact value is about |z| (FAILURES.md: the reason \
                  BCEWithLogitsLoss exists).",
        verdict: Flag::Verdict(Verdict::SpuriousInf),
        dtypes: ALL,
        eval: |c| naive(c, bce_logits_log_sigmoid, Flaws::default()),
    },
    ZooEntry {
        name: "bce_logits_max_form_nan_at_inf",
        loss: "bce_logits",
        failure: "the stable form max(z,0) − z·t + log1p(e^−|z|) still gives inf − inf = NaN at z = +inf with t = 1 (exact 0); \
                  PyTorch 2.15 returns NaN there.",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: |c| naive(c, bce_logits_max_form, Flaws::default()),
    },
    ZooEntry {
        name: "bce_logits_pos_weight_cancels",
        loss: "bce_logits",
        failure: "(1−t)·z + (1+(pw−1)·t)·softplus(−z), PyTorch's pos_weight form: the two terms cancel for soft targets \
                  at negative z (t = 1e−6, z = −1e4 in f32 loses 18 bits; exact t·softplus(−z) + (1−t)·softplus(z)).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: &[Dtype::F32],
        eval: |c| naive(c, bce_logits_pos_weight_form, Flaws::default()),
    },
    ZooEntry {
        name: "bce_clip_plus_eps",
        loss: "bce",
        failure: "BCE that clips p to [ε, 1−ε] and also adds ε inside the logs (ε = 1e−7, Keras-style): every value is \
                  biased by about ε/p, many ulps in f32, and the gradient is 0 outside the clip.",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: &[Dtype::F32],
        eval: |c| naive(c, bce_clip_plus_eps, Flaws::default()),
    },
    ZooEntry {
        name: "focal_powf_gradient",
        loss: "focal",
        failure: "focal loss with (1−p_t)^γ by powf and its chain-rule derivative γ(1−p_t)^(γ−1)·∂p_t/∂z: for γ < 1 at \
                  p_t → 1 that is inf·0 = NaN (the exact gradient is 0; torchvision's sigmoid_focal_loss pattern).",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: |c| naive(c, focal_powf, Flaws::default()),
    },
    ZooEntry {
        name: "cross_entropy_naive_softmax",
        loss: "cross_entropy",
        failure: "log(softmax(z)) without the max shift: e^z overflows f32 for z > 88.7, so p = inf/inf = NaN (and for a \
                  row of very negative logits 0/0) where the exact loss is finite.",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: |c| cross_entropy(c, CeFlaws { row: RowFormula::NoShift, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_lse_minus_target",
        loss: "cross_entropy",
        failure: "(m + log Σ e^{z−m}) − z_y in f32: on a confident row the two nearly equal terms cancel \
                  ([12, 0 × 9] target 0 loses about 15 bits of value and gradient; PyTorch 2.15 CPU).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: &[Dtype::F32],
        eval: |c| cross_entropy(c, CeFlaws { row: RowFormula::LseMinusTarget, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_nan_when_all_ignored",
        loss: "cross_entropy",
        failure: "mean = Σ / Σ w_y with every target ignored: 0/0 = NaN (PyTorch's cross_entropy and nll_loss; \
                  pytorch/pytorch#75181). DESIGN.md: an empty mean is 0.",
        verdict: Flag::Verdict(Verdict::Policy),
        dtypes: ALL,
        eval: |c| cross_entropy(c, CeFlaws { nan_empty_mean: true, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_mean_counts_ignored",
        loss: "cross_entropy",
        failure: "the mean's denominator counts ignored (padded) rows: padding lowers the loss and scales every gradient \
                  (burn's CrossEntropyLoss with pad tokens, tracel-ai/burn#5568).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: ALL,
        eval: |c| cross_entropy(c, CeFlaws { mean_over_rows: true, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_smoothing_counts_ignored",
        loss: "cross_entropy",
        failure: "label smoothing whose smoothing term is summed over ignored rows too (PyTorch before the fix of \
                  pytorch/pytorch#73205): ignored rows change the loss (and NaN or inf in them leaks).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: ALL,
        eval: |c| cross_entropy(c, CeFlaws { smoothing_on_ignored: true, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_weighted_mean_over_rows",
        loss: "cross_entropy",
        failure: "class-weighted mean divided by the number of rows instead of Σ w_y (the unweighted denominator; \
                  Keras' and many hand-written losses): the result is not the weighted mean PyTorch's cross_entropy \
                  defines, but a known alternative reading (check/policies.rs), so a fact, a finding under \
                  --strict-policy.",
        verdict: Flag::Fact("weighted_mean_over_n"),
        dtypes: ALL,
        eval: |c| cross_entropy(c, CeFlaws { weighted_mean_over_rows: true, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_ignore_by_multiply",
        loss: "cross_entropy",
        failure: "ignored rows computed like the others and then multiplied by 0: a NaN or ±inf logit in a padded row \
                  leaks into the loss (0·NaN = NaN).",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: ALL,
        eval: |c| cross_entropy(c, CeFlaws { ignore_by_multiply: true, ..CeFlaws::default() }),
    },
    ZooEntry {
        name: "cross_entropy_accumulate_in_dtype",
        loss: "cross_entropy",
        failure: "the batch sum kept in the 16-bit input dtype: an f16 running sum stalls at 2048 for unit terms, and \
                  every addition rounds, while the mean is representable (accumulate in f32).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: &[Dtype::F16, Dtype::Bf16],
        eval: |c| cross_entropy(c, CeFlaws { accumulate_in_dtype: true, ..CeFlaws::default() }),
    },
];
