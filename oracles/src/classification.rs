//! Oracles of the classification family. Elementwise losses here: `bce`, `bce_logits`,
//! `hinge`, `focal`; the row-wise `cross_entropy`, `nll`, `multi_margin` are in [`multiclass`]
//! ([`eval`] dispatches to it).
//!
//! Per element, with exact (point) inputs, z a logit, p a probability, t ∈ [0, 1] a target,
//! s = σ(z), sp = softplus:
//!
//! | loss | l | ∂l/∂(prob / logit / score) |
//! |---|---|---|
//! | `bce` | −(t·L(p) + (1−t)·L(1−p)), L = ln or max(ln, floor) | −t·L′(p) + (1−t)·L′(1−p); (p − t)/(p(1 − p)) when no log is clamped |
//! | `bce_logits` | a·sp(−z) + b·sp(z), a = pw·t, b = 1 − t | −a·σ(−z) + b·σ(z) |
//! | `hinge` | max(0, u), u = m − t·s | −t if u > 0, 0 if u < 0; at u = 0 the set [0, 1]·(−t), selection 0 |
//! | `focal` | α_t·q^γ·B, q = 1 − p_t = t·σ(−z) + (1−t)·σ(z), B = bce_logits(z, t) | α_t·q^γ·(γ(1 − 2t)·r·B + (s − t)), r = s(1 − s)/q |
//!
//! **Absent terms.** A term whose coefficient (t, 1 − t, pw·t; focal's α_t) is exactly 0 is
//! not evaluated: it contributes exactly nothing to the value and the gradient, even where its
//! log is −inf or its softplus +inf (bce at t = 1, p = 1 is 0 with gradient −1; at t = 0, p = 0
//! the gradient is 1; bce_logits at z = +inf, t = 1 is 0 with gradient 0). A NaN data input
//! (prob, logit, score, target) still makes its element NaN: a NaN is not a value whose
//! coefficient could be 0.
//!
//! **Extended reals.** softplus(−inf) = 0, softplus(+inf) = +inf, σ(±inf) = 1 / 0, ln 0 = −inf;
//! bce's ∂/∂p at p = 0 (t > 0, unclamped) is −inf and at p = 1 (t < 1) +inf, the one-sided
//! limits. focal at z = ±inf: the limits are worked out in `focal_at_infinity`.
//!
//! **No cancellation where none is intrinsic.** softplus and σ come from [`Ival::logistic`]
//! (one e^{−|z|}, positive quantities only); 1 − p_t is t·σ(−z) + (1 − t)·σ(z), a sum of
//! non-negative terms; r = σ(z)σ(−z)/q ≤ min(1/t, 1/(1 − t)) is bounded, and for t ∈ {0, 1}
//! it is σ(−z) / σ(z) exactly (so q^{γ−1} never appears: for γ < 1 the blow-up of its
//! derivative is absorbed); ln(1 − p) is log1p(−p). What cancels is a genuine difference
//! (the gradients' −a·σ(−z) + b·σ(z), focal's bracket), and precision doubling resolves it.
//!
//! **Kinks.** hinge at u = 0 exactly (with exact inputs, u is the point 0 iff m = t·s) and
//! bce's max(ln x, floor) at ln x = floor exactly, which for a dyadic x ∈ [0, 1] and a binary64
//! floor ≤ 0 happens only for floor = 0 at x = 1 (p = 1 for the first term, p = 0 for the
//! second): the Clarke set of max(ln x, f) is conv{0, 1/x}, the selection nearest 0 is 0. One
//! [`RawKinkGroup`] per active element at a kink whose gradient is requested.
//!
//! **Exact rational gradients.** bce's derivative is a quotient ((p − t)/(p(1 − p)), −t/p,
//! (1 − t)/(1 − p)); it goes to [`Reducer::grad_quotient`], which divides last, so a component
//! that is exactly dyadic (a rounding midpoint, say) becomes a point enclosure and is decided.
//!
//! **Known limitation.** Enclosures are closed: a result that is an exact dyadic S (e.g. a
//! rounding midpoint) plus or minus a logistic tail below 2^−4096·|S| (|z| ≳ 2839 with, say,
//! (1 − t)·z or 1 − t exactly at a midpoint) keeps straddling S up to the precision cap and is
//! reported as a hard case (both neighbours accepted), although the sign of the tail decides
//! it. Deciding these needs strict (open) ends in [`Ival`] (MPFR's ternary values give them).
//!
//! Params are binary64 values, used exactly.

pub mod multiclass;

use crate::ival::{Ival, Sign};
use crate::reduce::Reducer;
use crate::{Inputs, Raw, RawKinkGroup};
use losscheck_core::{Case, Checked, LossError};
use rug::Float;
use std::collections::BTreeMap;

/// Primitive names of the kink groups.
pub const HINGE_KINK: &str = "max(0, m − t·s) at 0";
pub const BCE_FLOOR_KINK: &str = "max(log p, floor) at log p = floor";

/// Evaluate a classification case at working precision `prec` (see the module docs).
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    match case.loss.as_str() {
        "bce" => bce(case, checked, inputs, prec),
        "bce_logits" => bce_logits(case, checked, inputs, prec),
        "hinge" => hinge(case, checked, inputs, prec),
        "focal" => focal(case, checked, inputs, prec),
        "cross_entropy" | "nll" | "multi_margin" => multiclass::eval(case, checked, inputs, prec),
        other => Err(LossError::unsupported(format!(
            "no classification oracle yet for {other:?}"
        ))),
    }
}

/// A float input of `n` enclosures.
fn get<'a>(case: &Case, inputs: &'a Inputs, name: &str, n: usize) -> Result<&'a [Ival], LossError> {
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
}

fn wants(case: &Case, name: &str) -> bool {
    case.grad.iter().any(|g| g == name)
}

/// An optional float param as an exact point.
fn opt_param(case: &Case, name: &str, prec: u32) -> Option<Ival> {
    case.float_param(name).map(|x| Ival::point(prec, x))
}

/// One element's local result: l, and when asked ∂l/∂x with, at a kink, the Clarke ends.
type Local = (Ival, Option<(Ival, Option<(Ival, Ival)>)>);

/// ∂l/∂x as a quotient num/den, handed to [`Reducer::grad_quotient`] (division last).
type Quotient = Option<(Ival, Ival)>;

/// The common loop: every active element through `term`, then the reduction.
#[allow(clippy::needless_range_loop)]
fn run(
    case: &Case,
    inputs: &Inputs,
    n: usize,
    prec: u32,
    grad_name: &str,
    primitive: &'static str,
    mut term: impl FnMut(usize, bool) -> (Local, Quotient),
) -> Result<Raw, LossError> {
    let want = wants(case, grad_name);
    let mut red = Reducer::new(case, inputs, n, prec)?;
    let mut g = if want { red.zeros(n) } else { Vec::new() };
    let mut kinks = Vec::new();
    for i in 0..n {
        if !red.is_active(i) {
            continue;
        }
        let ((l, d), quotient) = term(i, want);
        red.add_value(i, l);
        if let (true, Some((num, den))) = (want, quotient) {
            g[i] = red.grad_quotient(i, num, &den);
            continue;
        }
        if let Some((d, kink)) = d {
            if let Some((lo, hi)) = kink {
                kinks.push(RawKinkGroup {
                    primitive,
                    members: vec![(grad_name.to_string(), i, red.grad(i, lo), red.grad(i, hi))],
                });
            }
            g[i] = red.grad(i, d);
        }
    }
    let (value, kappa) = red.finish();
    let mut grads = BTreeMap::new();
    if want {
        grads.insert(grad_name.to_string(), g);
    }
    Ok(Raw {
        value,
        kappa,
        grads,
        kinks,
        ..Raw::default()
    })
}

/// A term function without quotient derivatives.
fn plain(mut f: impl FnMut(usize, bool) -> Local) -> impl FnMut(usize, bool) -> (Local, Quotient) {
    move |i, want| (f(i, want), None)
}

fn nan_local(prec: u32, want: bool) -> Local {
    (Ival::nan(prec), want.then(|| (Ival::nan(prec), None)))
}

/// Σ of the present terms (exact 0 when none is).
fn sum_present(prec: u32, terms: impl IntoIterator<Item = Option<Ival>>) -> Ival {
    let mut s = Ival::zero(prec);
    for t in terms.into_iter().flatten() {
        s.add_assign(&t);
    }
    s
}

/// 1/x with 1/0 = +inf (x ≥ 0: the one-sided limit).
fn recip_nonneg(x: &Ival) -> Ival {
    let p = x.prec();
    if x.is_zero() {
        Ival::point(p, f64::INFINITY)
    } else {
        Ival::one(p).div(x)
    }
}

// ------------------------------------------------------------------------------- bce

/// Where ln x stands against the floor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Clamp {
    /// No floor, or ln x > floor: L = ln x.
    Log,
    /// ln x < floor: L = floor, L′ = 0.
    Floor,
    /// ln x = floor exactly: a kink, L′ ∈ conv{0, 1/x}.
    Kink,
    /// Not decided at this precision.
    Undecided,
}

/// L(x) = ln x or max(ln x, floor), given ln x.
fn clamp_log(lnx: Ival, floor: Option<&Ival>) -> (Ival, Clamp) {
    let Some(f) = floor else {
        return (lnx, Clamp::Log);
    };
    if lnx.is_nan() {
        return (lnx, Clamp::Log);
    }
    if lnx.lo > f.hi {
        (lnx, Clamp::Log)
    } else if lnx.hi < f.lo {
        (f.clone(), Clamp::Floor)
    } else if lnx.is_point() && f.is_point() && lnx.lo == f.lo {
        (f.clone(), Clamp::Kink)
    } else {
        (lnx.max(f), Clamp::Undecided)
    }
}

/// d/dx of −c·L(x) scaled: −c·L′(x), as (selection, Clarke ends) for each clamp state, given
/// −c/x.
fn floored_deriv(state: Clamp, d_log: Ival) -> (Ival, Option<(Ival, Ival)>) {
    let p = d_log.prec();
    match state {
        Clamp::Log => (d_log, None),
        Clamp::Floor => (Ival::zero(p), None),
        Clamp::Kink => {
            let z = Ival::zero(p);
            let ends = if d_log.certainly_nonneg() {
                (z.clone(), d_log)
            } else {
                (d_log, z.clone())
            };
            (z, Some(ends))
        }
        Clamp::Undecided => (d_log.hull(&Ival::zero(p)), None),
    }
}

fn bce(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let n = checked.rows;
    let prob = get(case, inputs, "prob", n)?;
    let target = get(case, inputs, "target", n)?;
    let floor = opt_param(case, "log_floor", prec);
    let one = Ival::one(prec);
    run(case, inputs, n, prec, "prob", BCE_FLOOR_KINK, |i, want| {
        let (p, t) = (&prob[i], &target[i]);
        if p.is_nan() || t.is_nan() {
            return (nan_local(prec, want), None);
        }
        let u = one.sub(t); // 1 − t
        let has1 = !t.is_zero();
        let has2 = !u.is_zero();
        let one_m_p = one.sub(p);
        // term 1: −t·L(p); term 2: −(1−t)·L(1−p), ln(1 − p) = log1p(−p)
        let (l1, s1) = if has1 {
            let (l, s) = clamp_log(p.ln(), floor.as_ref());
            (Some(t.mul(&l)), s)
        } else {
            (None, Clamp::Floor)
        };
        let (l2, s2) = if has2 {
            let (l, s) = clamp_log(p.neg().log1p(), floor.as_ref());
            (Some(u.mul(&l)), s)
        } else {
            (None, Clamp::Floor)
        };
        let value = sum_present(prec, [l1, l2]).neg();
        if !want {
            return ((value, None), None);
        }
        let (live1, live2) = (has1 && s1 == Clamp::Log, has2 && s2 == Clamp::Log);
        let settled = |s: Clamp, has: bool| !has || s == Clamp::Floor;
        // quotients, divided last by the reducer: (p − t)/(p(1 − p)) (one sign, no
        // cancellation), −t/p, (1 − t)/(1 − p)
        if live1 && live2 && !p.is_zero() && !one_m_p.is_zero() {
            return ((value, None), Some((p.sub(t), p.mul(&one_m_p))));
        }
        if live1 && settled(s2, has2) && !p.is_zero() {
            return ((value, None), Some((t.neg(), p.clone())));
        }
        if live2 && settled(s1, has1) && !one_m_p.is_zero() {
            return ((value, None), Some((u.clone(), one_m_p)));
        }
        let (d1, k1) = if has1 {
            floored_deriv(s1, t.mul(&recip_nonneg(p)).neg())
        } else {
            (Ival::zero(prec), None)
        };
        let (d2, k2) = if has2 {
            floored_deriv(s2, u.mul(&recip_nonneg(&one_m_p)))
        } else {
            (Ival::zero(prec), None)
        };
        // at most one kink (floor = 0: term 1 at p = 1, term 2 at p = 0)
        let kink = match (k1, k2) {
            (Some((a, b)), None) => Some((a.add(&d2), b.add(&d2))),
            (None, Some((a, b))) => Some((a.add(&d1), b.add(&d1))),
            _ => None,
        };
        ((value, Some((d1.add(&d2), kink))), None)
    })
}

// ------------------------------------------------------------------------------- bce_logits

fn bce_logits(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let logit = get(case, inputs, "logit", n)?;
    let target = get(case, inputs, "target", n)?;
    // pos_weight: per element, or [C] broadcast over the last dim
    let pw: Option<&Vec<Ival>> = inputs.get("pos_weight");
    let last = checked.row_shape.last().copied().unwrap_or(1).max(1);
    if let Some(w) = pw {
        if w.len() != n && w.len() != last {
            return Err(LossError::internal(format!(
                "pos_weight has {} elements, expected {n} or {last}",
                w.len()
            )));
        }
    }
    let one = Ival::one(prec);
    run(
        case,
        inputs,
        n,
        prec,
        "logit",
        "",
        plain(|i, want| {
            let (z, t) = (&logit[i], &target[i]);
            let a = match pw {
                None => t.clone(),
                Some(w) => {
                    let wi = if w.len() == n { &w[i] } else { &w[i % last] };
                    wi.mul(t)
                }
            };
            if z.is_nan() || a.is_nan() {
                return nan_local(prec, want);
            }
            let b = one.sub(t);
            let (ha, hb) = (!a.is_zero(), !b.is_zero());
            let lg = z.logistic();
            let value = sum_present(
                prec,
                [
                    ha.then(|| a.mul(&lg.softplus_neg)),
                    hb.then(|| b.mul(&lg.softplus)),
                ],
            );
            let d = want.then(|| {
                let d = sum_present(
                    prec,
                    [
                        ha.then(|| a.mul(&lg.sigmoid_neg).neg()),
                        hb.then(|| b.mul(&lg.sigmoid)),
                    ],
                );
                (d, None)
            });
            (value, d)
        }),
    )
}

// ------------------------------------------------------------------------------- hinge

fn hinge(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let n = checked.rows;
    let score = get(case, inputs, "score", n)?;
    let target: Vec<i64> = match case.inputs.get("target") {
        Some(t) => match (t.i(), t.f()) {
            (Some(v), _) => v.to_vec(),
            (None, Some(v)) => v.iter().map(|&x| x as i64).collect(),
            _ => return Err(LossError::internal("hinge: target has no data")),
        },
        None => return Err(LossError::invalid("hinge: missing input \"target\"")),
    };
    if target.len() != n {
        return Err(LossError::internal("hinge: target length"));
    }
    let m = Ival::point(
        prec,
        case.float_param("margin")
            .ok_or_else(|| LossError::invalid("hinge: missing param margin"))?,
    );
    run(
        case,
        inputs,
        n,
        prec,
        "score",
        HINGE_KINK,
        plain(|i, want| {
            let s = &score[i];
            let t = target[i];
            let u = if t >= 0 { m.sub(s) } else { m.add(s) };
            let neg_t = Ival::point(prec, if t >= 0 { -1.0 } else { 1.0 });
            let z = Ival::zero(prec);
            match u.sign() {
                Sign::Undefined => nan_local(prec, want),
                Sign::Positive => (u, want.then(|| (neg_t, None))),
                Sign::Negative => (z.clone(), want.then(|| (z, None))),
                Sign::Zero => {
                    let ends = if t >= 0 {
                        (neg_t, z.clone())
                    } else {
                        (z.clone(), neg_t)
                    };
                    (z.clone(), want.then(|| (z, Some(ends))))
                }
                Sign::Straddles => (u.max(&z), want.then(|| (neg_t.hull(&z), None))),
            }
        }),
    )
}

// ------------------------------------------------------------------------------- focal

/// focal at z = ±inf (t, 1 − t, α_t exact enclosures; α_t ≠ 0), the limits as z → ±inf:
///
/// - z → +inf: σ(z) → 1, so q → 1 − t, B ~ (1 − t)·z; l → +inf for t < 1, and for t = 1
///   l = α·σ(−z)^γ·sp(−z) → 0. ∂l/∂z → α_t·(1 − t)^γ·(1 − t): the term γ(1 − 2t)·r·B vanishes
///   (t < 1: r ~ e^{−z}/(1 − t) against B ~ z; t = 1: r = σ(z) → 1 against B = sp(−z) → 0),
///   and s − t → 1 − t.
/// - z → −inf: the mirror image, q → t, l → +inf for t > 0 (0 for t = 0),
///   ∂l/∂z → −α_t·t^γ·t.
fn focal_at_infinity(pos: bool, t: &Ival, u: &Ival, at: &Ival, gamma: &Float, want: bool) -> Local {
    let p = t.prec();
    let c = if pos { u } else { t }; // the limit of q
    if c.is_zero() {
        return (Ival::zero(p), want.then(|| (Ival::zero(p), None)));
    }
    let value = Ival::point(p, f64::INFINITY);
    let d = want.then(|| {
        let g = at.mul(&c.pow_const(gamma)).mul(c);
        (if pos { g } else { g.neg() }, None)
    });
    (value, d)
}

fn focal(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let n = checked.rows;
    let logit = get(case, inputs, "logit", n)?;
    let target = get(case, inputs, "target", n)?;
    let alpha = opt_param(case, "alpha", prec);
    let gamma_f = case
        .float_param("gamma")
        .ok_or_else(|| LossError::invalid("focal: missing param gamma"))?;
    let gamma = Float::with_val(prec.max(53), gamma_f);
    let gamma_iv = Ival::point(prec, gamma_f);
    let gamma_zero = gamma_f == 0.0;
    let one = Ival::one(prec);
    let one_m_alpha = alpha.as_ref().map(|a| one.sub(a));
    run(
        case,
        inputs,
        n,
        prec,
        "logit",
        "",
        plain(|i, want| {
            let (z, t) = (&logit[i], &target[i]);
            if z.is_nan() || t.is_nan() {
                return nan_local(prec, want);
            }
            let u = one.sub(t); // 1 − t
            let (t0, t1) = (t.is_zero(), u.is_zero());
            let at = match (&alpha, &one_m_alpha) {
                (Some(a), Some(b)) => {
                    sum_present(prec, [(!t0).then(|| a.mul(t)), (!t1).then(|| b.mul(&u))])
                }
                _ => one.clone(),
            };
            if at.is_zero() {
                // α_t = 0: the whole term is absent
                return (Ival::zero(prec), want.then(|| (Ival::zero(prec), None)));
            }
            if z.is_point() && z.lo.is_infinite() {
                return focal_at_infinity(!z.lo.is_sign_negative(), t, &u, &at, &gamma, want);
            }
            let lg = z.logistic();
            // B = bce_logits(z, t) (present terms only)
            let b = sum_present(
                prec,
                [
                    (!t0).then(|| t.mul(&lg.softplus_neg)),
                    (!t1).then(|| u.mul(&lg.softplus)),
                ],
            );
            // q = 1 − p_t, a sum of non-negative terms
            let q = if t1 {
                lg.sigmoid_neg.clone()
            } else if t0 {
                lg.sigmoid.clone()
            } else {
                t.mul(&lg.sigmoid_neg).add(&u.mul(&lg.sigmoid))
            };
            let qg = if gamma_zero {
                one.clone()
            } else {
                q.pow_const(&gamma)
            };
            let aq = at.mul(&qg);
            let value = aq.mul(&b);
            if !want {
                return (value, None);
            }
            // s − t = −t·σ(−z) + (1 − t)·σ(z)
            let s_m_t = sum_present(
                prec,
                [
                    (!t0).then(|| t.mul(&lg.sigmoid_neg).neg()),
                    (!t1).then(|| u.mul(&lg.sigmoid)),
                ],
            );
            let bracket = if gamma_zero {
                s_m_t
            } else {
                // γ·(1 − 2t)·r·B, r = σ(z)σ(−z)/q (σ(−z) / σ(z) for t = 0 / 1)
                let (one_m_2t, r) = if t1 {
                    (Ival::point(prec, -1.0), lg.sigmoid.clone())
                } else if t0 {
                    (one.clone(), lg.sigmoid_neg.clone())
                } else {
                    (
                        one.sub(&t.mul_2si(1)),
                        lg.sigmoid.mul(&lg.sigmoid_neg).div(&q),
                    )
                };
                if one_m_2t.is_zero() {
                    s_m_t
                } else {
                    gamma_iv.mul(&one_m_2t).mul(&r).mul(&b).add(&s_m_t)
                }
            };
            (value, Some((aq.mul(&bracket), None)))
        }),
    )
}
