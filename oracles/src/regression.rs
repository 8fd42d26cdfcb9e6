//! Oracles of the regression family: `mse`, `mae`, `huber`, `quantile`, `log_cosh`.
//!
//! Every loss is a function of r = pred − target alone, so ∂l/∂target = −∂l/∂pred. Per
//! element, with exact (point) inputs:
//!
//! | loss | l(r) | ∂l/∂pred |
//! |---|---|---|
//! | `mse` | r² | 2r |
//! | `mae` | \|r\| | sign r; at r = 0 the Clarke set [−1, 1], selection 0 |
//! | `huber` | ½r² if \|r\| ≤ δ else δ(\|r\| − ½δ) | clamp(r, −δ, δ) (C¹: no kink) |
//! | `quantile` | max(τu, (τ−1)u), u = −r | −τ if u > 0, 1 − τ if u < 0; at u = 0 the set [−τ, 1 − τ], selection 0 |
//! | `log_cosh` | ln cosh r | tanh r |
//!
//! In extended reals: r = inf − inf is NaN (value and gradients); r = ±inf gives the limits
//! (mse: inf and ±inf; mae: inf and ±1; huber: inf and ±δ; quantile: inf and 1 − τ / −τ;
//! log_cosh: inf and ±1).
//!
//! The kink test is exact: with point inputs, r is computed with directed rounding and MPFR
//! never rounds a non-zero difference to zero, so the enclosure of r is the point 0 exactly when
//! pred = target (finite). A kink group (pred and target coupled, target = −pred) is reported
//! for every active element at a kink whose gradient is requested. For non-point inputs whose r
//! straddles 0 the gradient enclosure is the hull of the Clarke set (no group: not decided).
//!
//! Params are binary64 values, used exactly.

use crate::ival::{Ival, Sign};
use crate::reduce::Reducer;
use crate::{Inputs, Raw, RawKinkGroup};
use losscheck_core::{Case, Checked, LossError};

/// The per-element loss and its parameters at one precision.
enum Loss {
    Mse,
    Mae,
    Huber {
        delta: Ival,
        half_delta: Ival,
        neg_delta: Ival,
    },
    Quantile {
        tau: Ival,
        tau_m1: Ival,
        neg_tau: Ival,
        one_m_tau: Ival,
    },
    LogCosh,
}

impl Loss {
    fn new(case: &Case, prec: u32) -> Result<Loss, LossError> {
        let param = |name: &str| {
            case.float_param(name)
                .ok_or_else(|| LossError::invalid(format!("{}: missing param {name}", case.loss)))
        };
        Ok(match case.loss.as_str() {
            "mse" => Loss::Mse,
            "mae" => Loss::Mae,
            "huber" => {
                let d = Ival::point(prec, param("delta")?);
                Loss::Huber {
                    half_delta: d.mul_2si(-1),
                    neg_delta: d.neg(),
                    delta: d,
                }
            }
            "quantile" => {
                let t = Ival::point(prec, param("tau")?);
                let one = Ival::one(prec);
                Loss::Quantile {
                    tau_m1: t.sub(&one),
                    one_m_tau: one.sub(&t),
                    neg_tau: t.neg(),
                    tau: t,
                }
            }
            "log_cosh" => Loss::LogCosh,
            other => {
                return Err(LossError::unsupported(format!(
                    "no regression oracle for {other:?}"
                )))
            }
        })
    }

    /// Name of the primitive kink, if the loss has one.
    fn kink_name(&self) -> &'static str {
        match self {
            Loss::Mae => "|r| at 0",
            Loss::Quantile { .. } => "quantile at u = 0",
            _ => "",
        }
    }

    /// l(r).
    fn value(&self, r: &Ival) -> Ival {
        match self {
            Loss::Mse => r.sqr(),
            Loss::Mae => r.abs(),
            Loss::Huber {
                delta, half_delta, ..
            } => r.abs().map_increasing(|s| {
                // s is an exact point ≥ 0: the branch is decided exactly.
                if s.lo <= delta.lo {
                    s.sqr().mul_2si(-1)
                } else {
                    delta.mul(&s.sub(half_delta))
                }
            }),
            Loss::Quantile { tau, tau_m1, .. } => {
                let u = r.neg();
                u.mul(tau).max(&u.mul(tau_m1))
            }
            Loss::LogCosh => r.log_cosh(),
        }
    }

    /// l(r) and, when asked, [`Loss::deriv`]; log_cosh computes both from one evaluation.
    #[allow(clippy::type_complexity)]
    fn eval(&self, r: &Ival, deriv: bool) -> (Ival, Option<(Ival, Option<(Ival, Ival)>)>) {
        match self {
            Loss::LogCosh if deriv => {
                let (l, t) = r.log_cosh_tanh();
                (l, Some((t, None)))
            }
            _ => (self.value(r), deriv.then(|| self.deriv(r))),
        }
    }

    /// ∂l/∂pred (the Clarke selection nearest 0 at a kink) and, at a kink, the ends of the
    /// Clarke set of ∂l/∂pred.
    fn deriv(&self, r: &Ival) -> (Ival, Option<(Ival, Ival)>) {
        let p = r.prec();
        match self {
            Loss::Mse => (r.mul_2si(1), None),
            Loss::Huber {
                delta, neg_delta, ..
            } => (r.max(neg_delta).min(delta), None),
            Loss::LogCosh => (r.tanh(), None),
            Loss::Mae => {
                let (m1, p1) = (Ival::point(p, -1.0), Ival::one(p));
                match r.sign() {
                    Sign::Positive => (p1, None),
                    Sign::Negative => (m1, None),
                    Sign::Zero => (Ival::zero(p), Some((m1, p1))),
                    Sign::Straddles => (m1.hull(&p1), None),
                    Sign::Undefined => (Ival::nan(p), None),
                }
            }
            Loss::Quantile {
                neg_tau, one_m_tau, ..
            } => match r.sign() {
                // r > 0 ⇔ u < 0: l = (τ − 1)u = (1 − τ)r.
                Sign::Positive => (one_m_tau.clone(), None),
                Sign::Negative => (neg_tau.clone(), None),
                Sign::Zero => (Ival::zero(p), Some((neg_tau.clone(), one_m_tau.clone()))),
                Sign::Straddles => (neg_tau.hull(one_m_tau), None),
                Sign::Undefined => (Ival::nan(p), None),
            },
        }
    }
}

/// Evaluate a regression case at working precision `prec`: value components (decided later in
/// `out_dtype`), termwise gradients for the requested inputs among `pred` and `target`, κ, and
/// kink groups. `inputs` holds enclosures of `pred`, `target` and, when present, `weight` and
/// `cotangent` (points for exact cases); `mask` is read from the case.
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let loss = Loss::new(case, prec)?;
    let n = checked.rows;
    let get = |name: &str| -> Result<&Vec<Ival>, LossError> {
        let v = inputs
            .get(name)
            .ok_or_else(|| LossError::invalid(format!("{}: missing input {name:?}", case.loss)))?;
        if v.len() != n {
            return Err(LossError::internal(format!(
                "input {name} has {} elements, expected {n}",
                v.len()
            )));
        }
        Ok(v)
    };
    let pred = get("pred")?;
    let target = get("target")?;
    let want_p = case.grad.iter().any(|g| g == "pred");
    let want_t = case.grad.iter().any(|g| g == "target");
    let mut red = Reducer::new(case, inputs, n, prec)?;
    let mut gp = if want_p { red.zeros(n) } else { Vec::new() };
    let mut gt = if want_t { red.zeros(n) } else { Vec::new() };
    let mut kinks = Vec::new();
    for i in 0..n {
        if !red.is_active(i) {
            continue;
        }
        let r = pred[i].sub(&target[i]);
        let (l, dk) = loss.eval(&r, want_p || want_t);
        red.add_value(i, l);
        let Some((d, kink)) = dk else {
            continue;
        };
        let g = red.grad(i, d);
        if let Some((klo, khi)) = kink {
            let (lo, hi) = (red.grad(i, klo), red.grad(i, khi));
            let mut members = Vec::with_capacity(2);
            if want_p {
                members.push(("pred".to_string(), i, lo.clone(), hi.clone()));
            }
            if want_t {
                members.push(("target".to_string(), i, lo.neg(), hi.neg()));
            }
            kinks.push(RawKinkGroup {
                primitive: loss.kink_name(),
                members,
            });
        }
        if want_t {
            gt[i] = g.neg();
        }
        if want_p {
            gp[i] = g;
        }
    }
    let (value, kappa) = red.finish();
    let mut grads = std::collections::BTreeMap::new();
    if want_p {
        grads.insert("pred".to_string(), gp);
    }
    if want_t {
        grads.insert("target".to_string(), gt);
    }
    Ok(Raw {
        value,
        kappa,
        grads,
        kinks,
        ..Raw::default()
    })
}
