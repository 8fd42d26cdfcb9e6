//! Oracles of the preference family: `dpo` (Direct Preference Optimization, Rafailov et al.
//! 2023, with the label smoothing of the conservative variant).
//!
//! Per element, with the four sequence log-probabilities πc, πr (policy, chosen / rejected)
//! and rc, rr (reference), β > 0 and ε ∈ [0, ½]:
//!
//! - h = (πc − rc) − (πr − rr), x = β·h;
//! - l = (1 − ε)·softplus(−x) + ε·softplus(x) (= −(1 − ε)·ln σ(x) − ε·ln σ(−x));
//! - ∂l/∂πc = ∂l/∂h = β·(ε·σ(x) − (1 − ε)·σ(−x)), ∂l/∂πr = −∂l/∂h (the reference inputs are
//!   not differentiable).
//!
//! **h exactly.** Log-probs of long sequences are large and close: around −1e4 in bf16 one ulp
//! is 64, and chosen and rejected are often equal or a few ulps apart, so the four terms of h
//! cancel almost entirely. h is computed *exactly* (the working precision is raised to hold
//! every bit of the four inputs, `signed_sum`) and so is x = β·h (`exact_mul`); softplus
//! and σ of the exact point x come from [`Ival::logistic`] (bounded without an exponential
//! where the tail is below every output's resolution: [`crate::ranking::logistic`]), with
//! full relative accuracy in both tails: a margin of −1e4 gives l ≈ 1e4·β·(1 − ε), finite,
//! never −inf or inf.
//!
//! **Known limitation** (shared with `bce_logits`): a result that is an exact dyadic S at a
//! rounding midpoint plus or minus a tail below 2^−4096·|S| — the gradient β·(ε − σ(−x))·w at
//! a saturated margin x, e.g. β = 1000, ε = ¼, weight 3: just below 750, a bf16 midpoint —
//! keeps straddling S up to the precision cap and is a hard case (both neighbours accepted).
//!
//! **Absent term.** ε = 0 makes ε·softplus(x) and ε·σ(x) absent: exactly 0 even at x = +inf
//! (where softplus(x) = inf). 1 − ε ≥ ½ is never 0, and 1 − ε is exact (`signed_sum`).
//!
//! **Extended reals.** h is NaN when infinite inputs of opposite effect meet (πc = rc = inf,
//! πc = πr = inf, …), else ±inf when an input is infinite; then σ(±inf) ∈ {0, 1} and
//! softplus(±inf) ∈ {inf, 0} exactly: e.g. h = +inf gives l = inf·ε (0 for ε = 0) and
//! ∂l/∂πc = β·ε.
//!
//! **Cancellation.** What still cancels is the gradient's ε·σ(x) − (1 − ε)·σ(−x) near
//! x = ln((1 − ε)/ε); precision doubling resolves it (exactly 0 only at ε = ½, x = 0, where
//! both products are the point ¼).
//!
//! Params are binary64 values, used exactly.

use crate::ival::Ival;
use crate::ranking::{exact_mul, input, logistic, param, run2, signed_sum, Deriv, Local};
use crate::{Inputs, Raw};
use losscheck_core::{Case, Checked, LossError};

/// Evaluate a preference case at working precision `prec` (see the module docs).
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    match case.loss.as_str() {
        "dpo" => dpo(case, checked, inputs, prec),
        other => Err(LossError::unsupported(format!(
            "no preference oracle for {other:?}"
        ))),
    }
}

fn dpo(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let n = checked.rows;
    let pc = input(case, inputs, "policy_chosen", n)?;
    let pr = input(case, inputs, "policy_rejected", n)?;
    let rc = input(case, inputs, "ref_chosen", n)?;
    let rr = input(case, inputs, "ref_rejected", n)?;
    let beta = Ival::point(prec, param(case, "beta")?);
    let eps = Ival::point(prec, param(case, "label_smoothing")?);
    let one_m_eps = signed_sum(prec, &[(&Ival::one(prec), false), (&eps, true)]);
    let smoothed = !eps.is_zero();
    run2(
        case,
        inputs,
        n,
        prec,
        ["policy_chosen", "policy_rejected"],
        "",
        |i, want| {
            // h = πc − rc − πr + rr, exactly
            let h = signed_sum(
                prec,
                &[
                    (&pc[i], false),
                    (&rc[i], true),
                    (&pr[i], true),
                    (&rr[i], false),
                ],
            );
            if h.is_nan() {
                return Local::nan(prec);
            }
            let x = exact_mul(prec, &beta, &h);
            let lg = logistic(&x, prec);
            let mut l = one_m_eps.mul(&lg.softplus_neg);
            if smoothed {
                l.add_assign(&eps.mul(&lg.softplus));
            }
            let dh = if want[0] || want[1] {
                let mut g = one_m_eps.mul(&lg.sigmoid_neg).neg();
                if smoothed {
                    g.add_assign(&eps.mul(&lg.sigmoid));
                }
                beta.mul(&g)
            } else {
                Ival::zero(prec)
            };
            Local {
                terms: vec![l],
                d: [Deriv::Plain(dh.clone()), Deriv::Plain(dh.neg())],
                kink: None,
            }
        },
    )
}
