//! Oracles of the probabilistic family: `gaussian_nll` (elementwise, here) and the row-wise
//! `kl_div`, `distill_kl`, `neg_elbo` and `brier` ([`rowwise`]).
//!
//! `gaussian_nll`, per element, with r = target − mean and v′ = max(var, eps) (var ≥ 0,
//! eps > 0):
//!
//! - l = ½·ln v′ + ½·r²/v′ [+ ½·ln 2π when `full`];
//! - ∂l/∂mean = −r/v′ = (mean − target)/v′;
//! - ∂l/∂var = ½·(1/v′ − r²/v′²) = (v′ − r²)/(2·v′²) for **every** var ≥ 0: the clamp is
//!   straight-through (DESIGN.md, as PyTorch), so below eps the gradient is that of v′ = eps,
//!   not the 0 of the clamped function. At var = eps exactly, max(var, eps) is at its kink: a
//!   [`crate::RawKinkGroup`] with the var member reports the Clarke segment θ·(v′ − r²)/(2v′²),
//!   θ ∈ [0, 1]; the selection (the gradient reported) is the straight-through one, θ = 1.
//!
//! **Exactness.** r, r², v′ − r² and 2·v′² are exact (`signed_sum`, `exact_mul`); both
//! gradients go to [`crate::reduce::Reducer::grad_quotient`] as num/den, divided once and last,
//! so a zero (v′ = r², mean = target) is an exact 0 and a dyadic component a point.
//!
//! **Conditioning.** ln v′ < 0 for v′ < 1, so l can cancel (ln v′ ≈ −r²/v′, or
//! ln v′ ≈ −ln 2π with `full`), and a reduced sum can cancel across elements: the three
//! terms are handed to the reducer separately, so κ counts each of them.
//!
//! **Extended reals.** var = +inf (v′ = inf): l = +inf (ln v′ → inf and r²/v′ ≥ 0, whatever r
//! does), ∂/∂mean and ∂/∂var → 0 for finite r, and have no limit (NaN) for infinite r (r/v′
//! and r²/v′² along different paths). r = ±inf with finite v′: l = +inf, ∂/∂mean = −r/v′ =
//! ∓inf, ∂/∂var = −inf. inf − inf in r is NaN.
//!
//! Params are binary64 values, used exactly.

pub mod rowwise;

use crate::ival::Ival;
use crate::ranking::{exact_mul, input, param, run2, signed_sum, Deriv, Local};
use crate::{Inputs, Raw};
use losscheck_core::{Case, Checked, LossError, ParamValue};
use rug::float::{Constant, Round};
use rug::Float;

/// Primitive name of `gaussian_nll`'s kink groups (var = eps exactly).
pub const VAR_CLAMP_KINK: &str = "max(var, eps) at var = eps";

/// Evaluate a probabilistic case at working precision `prec` (see the module docs).
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    match case.loss.as_str() {
        "gaussian_nll" => gaussian_nll(case, checked, inputs, prec),
        "kl_div" => rowwise::kl_div(case, checked, inputs, prec),
        "distill_kl" => rowwise::distill_kl(case, checked, inputs, prec),
        "neg_elbo" => rowwise::neg_elbo(case, checked, inputs, prec),
        "brier" => rowwise::brier(case, checked, inputs, prec),
        other => Err(LossError::unsupported(format!(
            "no probabilistic oracle yet for {other:?}"
        ))),
    }
}

/// An enclosure of ½·ln 2π.
fn half_ln_2pi(prec: u32) -> Ival {
    let pi = Ival {
        lo: Float::with_val_round(prec, Constant::Pi, Round::Down).0,
        hi: Float::with_val_round(prec, Constant::Pi, Round::Up).0,
    };
    pi.mul_2si(1).ln().mul_2si(-1)
}

fn gaussian_nll(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let mean = input(case, inputs, "mean", n)?;
    let target = input(case, inputs, "target", n)?;
    let var = input(case, inputs, "var", n)?;
    let eps = Ival::point(prec, param(case, "eps")?);
    let full = matches!(case.params.get("full"), Some(ParamValue::Bool(true)));
    let c = full.then(|| half_ln_2pi(prec));
    let (zero, inf) = (Ival::zero(prec), Ival::point(prec, f64::INFINITY));
    run2(
        case,
        inputs,
        n,
        prec,
        ["mean", "var"],
        VAR_CLAMP_KINK,
        |i, want| {
            let v = &var[i];
            // r = target − mean, exactly
            let r = signed_sum(prec, &[(&target[i], false), (&mean[i], true)]);
            if r.is_nan() || v.is_nan() {
                return Local::nan(prec);
            }
            let r_inf = !r.is_finite();
            // v′ = max(var, eps): var is a point (a dtype value, or a perturbed real)
            let at_kink = v.is_point() && eps.is_point() && v.lo == eps.lo;
            let vp = v.max(&eps);
            let mut terms = Vec::with_capacity(3);
            if vp.is_point() && vp.lo.is_infinite() {
                // var = +inf: l = +inf; the gradients → 0 (finite r) or have no limit
                terms.push(inf.clone());
                let g = if r_inf { Ival::nan(prec) } else { zero.clone() };
                return Local {
                    terms,
                    d: [Deriv::Plain(g.clone()), Deriv::Plain(g)],
                    kink: None,
                };
            }
            if r_inf {
                terms.push(inf.clone());
                let dm = if r.lo.is_sign_positive() {
                    Ival::point(prec, f64::NEG_INFINITY)
                } else {
                    inf.clone()
                };
                return Local {
                    terms,
                    d: [
                        Deriv::Plain(dm),
                        Deriv::Plain(Ival::point(prec, f64::NEG_INFINITY)),
                    ],
                    kink: None,
                };
            }
            let r2 = exact_mul(prec, &r, &r);
            terms.push(vp.ln().mul_2si(-1));
            terms.push(r2.div(&vp).mul_2si(-1));
            if let Some(c) = &c {
                terms.push(c.clone());
            }
            // ∂/∂mean = −r/v′; ∂/∂var = (v′ − r²)/(2v′²)
            let dm = Deriv::Quotient(r.neg(), vp.clone());
            let (dv, kink) = if want[1] {
                let num = signed_sum(prec, &[(&vp, false), (&r2, true)]);
                let den = exact_mul(prec, &vp, &vp).mul_2si(1);
                // at var = eps: the Clarke segment [0, 1]·(v′ − r²)/(2v′²) of the var
                // derivative (the mean's is untouched)
                let kink = at_kink.then(|| {
                    let hi = Deriv::Quotient(num.clone(), den.clone());
                    [None, Some((Deriv::Plain(zero.clone()), hi))]
                });
                (Deriv::Quotient(num, den), kink)
            } else {
                (Deriv::Plain(zero.clone()), None)
            };
            Local {
                terms,
                d: [dm, dv],
                kink,
            }
        },
    )
}
