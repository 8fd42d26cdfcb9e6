//! Known-bad preference losses: DPO as it is often first written.

use super::Flag;
use super::{float_input, naive_terms, Flaws, ZooEntry};
use crate::check::compare::Verdict;
use losscheck_core::{Case, Dtype, LossError, Response};

const ALL: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::Bf16];

/// −log σ(x) as written, in f32: σ(x) = 1/(1 + e^−x) rounds to 0 for x ≲ −104 (e^−x
/// overflows), so the log is −inf and the loss +inf where the exact value is about −x.
fn neg_log_sigmoid_f32(x: f32) -> f32 {
    -libm::logf(1.0 / (1.0 + libm::expf(-x)))
}

fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// DPO as (1−ε)·(−log σ(βh)) + ε·(−log σ(−βh)), h = (πc − rc) − (πr − rr), all in f32.
fn dpo_log_sigmoid(case: &Case) -> Result<Response, LossError> {
    let beta = case.float_param("beta").unwrap_or(0.1) as f32;
    let eps = case.float_param("label_smoothing").unwrap_or(0.0) as f32;
    let x = |name: &str| float_input(case, name);
    let (pc, pr, rc, rr) = (
        x("policy_chosen")?,
        x("policy_rejected")?,
        x("ref_chosen")?,
        x("ref_rejected")?,
    );
    naive_terms(case, Flaws::default(), &|i| {
        let h = (pc[i] as f32 - rc[i] as f32) - (pr[i] as f32 - rr[i] as f32);
        let bh = beta * h;
        let l = (1.0 - eps) * neg_log_sigmoid_f32(bh) + eps * neg_log_sigmoid_f32(-bh);
        // dl/dh = β·((1−ε)·(σ(βh) − 1) + ε·σ(βh)); ∂h/∂πc = 1, ∂h/∂πr = −1
        let s = sigmoid_f32(bh);
        let d = beta * ((1.0 - eps) * (s - 1.0) + eps * s);
        (l, [d, -d, 0.0, 0.0])
    })
}

pub static ENTRIES: &[ZooEntry] = &[ZooEntry {
    name: "dpo_log_sigmoid",
    loss: "dpo",
    failure: "DPO as −log(sigmoid(β·h)) (the paper's formula typed in, as in many first implementations before \
              F.logsigmoid): σ(βh) underflows to 0 in f32 once βh ≲ −104 — a rejected answer far more likely than \
              the chosen one under the policy, e.g. sequence log-probs around −1e4 with β = 0.1 — and the loss is \
              +inf where the exact value is about −βh (issue 4's zoo list; the reason TRL and the DPO reference code use \
              logsigmoid).",
    verdict: Flag::Verdict(Verdict::SpuriousInf),
    dtypes: ALL,
    eval: dpo_log_sigmoid,
}];
