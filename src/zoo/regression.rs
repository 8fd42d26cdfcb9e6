//! Known-bad regression losses.

use super::Flag;
use super::{naive, Flaws, ZooEntry};
use crate::check::compare::Verdict;
use losscheck_core::{Case, Dtype};

fn log_cosh_textbook(p: f32, t: f32, _: usize, _: &Case) -> (f32, f32) {
    let r = p - t;
    (libm::logf(libm::coshf(r)), libm::tanhf(r))
}

fn mse_term(p: f32, t: f32, _: usize, _: &Case) -> (f32, f32) {
    let r = p - t;
    (r * r, 2.0 * r)
}

fn mae_term(p: f32, t: f32, _: usize, _: &Case) -> (f32, f32) {
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

fn huber_term(p: f32, t: f32, _: usize, c: &Case) -> (f32, f32) {
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
        verdict: Flag::Verdict(Verdict::SpuriousInf),
        dtypes: &[Dtype::F32, Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, log_cosh_textbook, Flaws::default()),
    },
    ZooEntry {
        name: "mse_accumulate_in_dtype",
        loss: "mse",
        failure: "the sum kept in the 16-bit input dtype: an f16 running sum stalls at 2048 for unit terms and \
                  overflows at 65504 while the mean is finite (accumulate in f32, as every framework's CPU kernel does).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: &[Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, mse_term, Flaws { accumulate_in_dtype: true, ..Flaws::default() }),
    },
    ZooEntry {
        name: "mae_mask_by_multiply",
        loss: "mae",
        failure: "masking by multiplying with 0: a NaN or ±inf in a masked position leaks into the sum (0·NaN = NaN, \
                  0·inf = NaN) — the pattern behind NaN losses from padded batches.",
        verdict: Flag::Verdict(Verdict::SpuriousNan),
        dtypes: &[Dtype::F32, Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, mae_term, Flaws { mask_by_multiply: true, ..Flaws::default() }),
    },
    ZooEntry {
        name: "huber_mean_over_count",
        loss: "huber",
        failure: "the mean divided by the element count instead of Σ mask·weight: padded elements count in the \
                  denominator, so adding padding lowers the loss (burn's CrossEntropy with pad tokens, \
                  tracel-ai/burn#5568, fixed).",
        verdict: Flag::Verdict(Verdict::Accuracy),
        dtypes: &[Dtype::F32, Dtype::F16, Dtype::Bf16],
        eval: |c| naive(c, huber_term, Flaws { mean_over_count: true, ..Flaws::default() }),
    },
];
