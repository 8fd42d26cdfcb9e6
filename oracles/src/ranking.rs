//! Oracles of the ranking family: `margin_ranking`, `pairwise_logistic` — and the machinery
//! they share with the other elementwise losses of several inputs ([`crate::preference`]'s
//! `dpo`, [`crate::probabilistic`]'s `gaussian_nll`): exact sums and products of point inputs
//! (`signed_sum`, `exact_mul`) and the common loop over two differentiable inputs
//! (`run2`).
//!
//! Per element, with exact (point) inputs:
//!
//! | loss | l | ∂l/∂(s1 / chosen) | ∂l/∂(s2 / rejected) |
//! |---|---|---|---|
//! | `margin_ranking` | max(0, u), u = m − y·(s1 − s2), y = ±1 | −y if u > 0, 0 if u < 0 | +y if u > 0, 0 if u < 0 |
//! | `pairwise_logistic` | softplus(d), d = rejected − chosen | −σ(d) | σ(d) |
//!
//! **Exact differences.** u and d are computed *exactly* (`signed_sum`: the working precision
//! is raised to hold every bit of the operands, up to ~2300 bits for a binary64 margin against
//! f32 subnormal scores), so the kink test of `margin_ranking` is decided at once: u is the
//! point 0 exactly when m = y·(s1 − s2). At u = 0 the Clarke set of max(0, ·) is [0, 1], so the
//! pair of gradients is θ·(−y, +y), θ ∈ [0, 1], coupled; the selection is θ = 0 (nearest 0) and
//! a [`RawKinkGroup`] with both members (those requested) is reported. softplus and σ of the
//! exact d come from [`Ival::logistic`] (no cancellation anywhere).
//!
//! **Extended reals.** inf − inf is NaN (u, d and everything after them); u = −inf gives 0 with
//! gradient 0, u = +inf gives +inf with gradient (−y, +y); softplus(±inf) = +inf / 0 and
//! σ(±inf) = 1 / 0 exactly.
//!
//! Params are binary64 values, used exactly.

use crate::ival::{Ival, Sign};
use crate::reduce::Reducer;
use crate::{Inputs, Raw, RawKinkGroup};
use losscheck_core::{Case, Checked, LossError, Reduction};
use rug::float::Round;
use rug::ops::AddAssignRound;
use rug::Float;
use std::collections::BTreeMap;

/// Primitive name of `margin_ranking`'s kink groups.
pub const MARGIN_RANKING_KINK: &str = "max(0, m − y·(s1 − s2)) at 0";

/// Evaluate a ranking case at working precision `prec` (see the module docs).
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    match case.loss.as_str() {
        "margin_ranking" => margin_ranking(case, checked, inputs, prec),
        "pairwise_logistic" => pairwise_logistic(case, checked, inputs, prec),
        other => Err(LossError::unsupported(format!(
            "no ranking oracle for {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared machinery (also used by `preference` and `probabilistic`).

/// A float input of `n` enclosures.
pub(crate) fn input<'a>(
    case: &Case,
    inputs: &'a Inputs,
    name: &str,
    n: usize,
) -> Result<&'a [Ival], LossError> {
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

/// An i64 input (labels, class ids) of `n` elements.
pub(crate) fn int_input<'a>(case: &'a Case, name: &str, n: usize) -> Result<&'a [i64], LossError> {
    let v =
        case.inputs.get(name).and_then(|t| t.i()).ok_or_else(|| {
            LossError::invalid(format!("{}: missing i64 input {name:?}", case.loss))
        })?;
    if v.len() != n {
        return Err(LossError::internal(format!(
            "{}: input {name} has {} elements, expected {n}",
            case.loss,
            v.len()
        )));
    }
    Ok(v)
}

/// A float param (binary64, used exactly).
pub(crate) fn param(case: &Case, name: &str) -> Result<f64, LossError> {
    case.float_param(name)
        .ok_or_else(|| LossError::invalid(format!("{}: missing param {name}", case.loss)))
}

/// `x` at precision at least `p` (exact: the ends only gain bits).
pub(crate) fn lift(x: &Ival, p: u32) -> Ival {
    if x.prec() >= p && x.hi.prec() >= p {
        return x.clone();
    }
    Ival {
        lo: Float::with_val(p.max(x.lo.prec()), &x.lo),
        hi: Float::with_val(p.max(x.hi.prec()), &x.hi),
    }
}

/// The exponents (top, lowest set bit) of a finite non-zero `x`: 2^(top−1) ≤ |x| < 2^top and
/// x is a multiple of 2^lsb (its significant bits, not its declared precision).
fn bit_range(x: &Float) -> Option<(i64, i64)> {
    let top = x.get_exp()? as i64;
    let (m, e) = x.to_integer_exp()?;
    let lsb = e as i64 + m.find_one(0).unwrap_or(0) as i64;
    Some((top, lsb))
}

/// Bits that hold every finite non-zero end of `xs` exactly, and their sum: from the top
/// exponent down to the lowest set bit, plus the carries of `xs.len()` additions.
fn span_bits<'a>(xs: impl Iterator<Item = &'a Ival>) -> u32 {
    let (mut top, mut bottom, mut n) = (i64::MIN, i64::MAX, 0u32);
    for x in xs {
        n += 1;
        for (t, b) in [&x.lo, &x.hi].into_iter().filter_map(bit_range) {
            top = top.max(t);
            bottom = bottom.min(b);
        }
    }
    if top == i64::MIN {
        return 0;
    }
    ((top - bottom) as u32).saturating_add(32 - n.leading_zeros() + 1)
}

/// Significant bits of a point's value (its declared precision otherwise).
fn sig_bits(x: &Ival) -> u32 {
    if !x.is_point() {
        return x.prec();
    }
    bit_range(&x.lo).map_or(1, |(t, b)| (t - b) as u32)
}

/// Σ ±x_k, exactly for point operands: the precision is raised to [`span_bits`] (at least
/// `prec`), so no addition rounds; infinities and NaN follow [`Ival::add`] (inf − inf is NaN).
/// `terms` are (x, negate).
pub(crate) fn signed_sum(prec: u32, terms: &[(&Ival, bool)]) -> Ival {
    let p = prec.max(53).max(span_bits(terms.iter().map(|t| t.0)));
    let mut s = Ival::zero(p);
    for (x, neg) in terms {
        let x = lift(x, p);
        s = if *neg { s.sub(&x) } else { s.add(&x) };
    }
    s
}

/// a·b, exactly for point operands (the precision is the sum of the operands' significant
/// bits, at least `prec`).
pub(crate) fn exact_mul(prec: u32, a: &Ival, b: &Ival) -> Ival {
    let p = prec.max(53).max(sig_bits(a) + sig_bits(b));
    lift(a, p).mul(&lift(b, p))
}

/// Bits below which a logistic tail e^{−|x|} is bounded rather than computed: see
/// [`logistic`].
const TAIL_BITS: i64 = 1164;

/// softplus(±x) and σ(±x) ([`Ival::logistic`]), except for an exact point x so large that
/// e^{−|x|} < 2^−(2p + 1164) (p the working precision): there the rigorous bounds
/// 0 ≤ e^{−|x|} ≤ 2^−(2p + 1164) stand in for MPFR's exponential (so log1p(e) and
/// σ(−|x|) = e·σ(|x|) lie in [0, 2^−(2p + 1164)], σ(|x|) in [1 − 2^−(2p + 1164), 1]), with no
/// transcendental evaluated. Such a tail is below any output's resolution at p bits (the
/// 1164 covers scale factors down to 2^−1100); results that sit on a rounding midpoint
/// beside it are hard cases either way (closed enclosures), and long batches of saturated
/// DPO margins (β = 1e3) no longer cost a 4096-bit exponential per element.
pub fn logistic(x: &Ival, prec: u32) -> crate::Logistic {
    let t = 2 * prec as i64 + TAIL_BITS;
    if !(x.is_point() && x.lo.is_finite() && x.lo.clone().abs() > t) {
        return x.logistic();
    }
    let p = x.prec();
    let tiny = Float::with_val(p, Float::i_exp(1, -(t as i32)));
    let e = Ival {
        lo: Float::new(p),
        hi: tiny.clone(),
    };
    let near_one = Ival {
        lo: Float::with_val_round(p, 1 - &tiny, Round::Down).0,
        hi: Float::with_val(p, 1),
    };
    let big = x.abs().add(&e);
    if x.lo.is_sign_negative() {
        crate::Logistic {
            softplus: e.clone(),
            softplus_neg: big,
            sigmoid: e,
            sigmoid_neg: near_one,
        }
    } else {
        crate::Logistic {
            softplus: big,
            softplus_neg: e.clone(),
            sigmoid: near_one,
            sigmoid_neg: e,
        }
    }
}

/// Does the case want the gradient of `name`?
pub(crate) fn wants(case: &Case, name: &str) -> bool {
    case.grad.iter().any(|g| g == name)
}

/// A local derivative ∂l/∂x for [`run2`].
pub(crate) enum Deriv {
    /// The derivative itself.
    Plain(Ival),
    /// num/den (den certainly non-zero), divided last by [`Reducer::grad_quotient`], so that an
    /// exactly dyadic component becomes a point enclosure.
    Quotient(Ival, Ival),
}

/// One element's local result for [`run2`].
pub(crate) struct Local {
    /// The additive terms of l, kept apart so that κ counts each (a sum that cancels inside
    /// one element, e.g. `gaussian_nll`'s ½ ln v′ + ½ r²/v′, is conditioned like any other).
    pub terms: Vec<Ival>,
    /// ∂l/∂x for the two differentiable inputs (anything where not wanted).
    pub d: [Deriv; 2],
    /// At a primitive kink: the ends (θ = 0, θ = 1) of the Clarke segment of each derivative
    /// the kink acts on (`None`: a derivative the primitive does not touch), θ shared by the
    /// group; `d` holds the selection.
    pub kink: Option<[Option<(Deriv, Deriv)>; 2]>,
}

impl Local {
    /// NaN value and derivatives.
    pub(crate) fn nan(prec: u32) -> Local {
        Local {
            terms: vec![Ival::nan(prec)],
            d: [Deriv::Plain(Ival::nan(prec)), Deriv::Plain(Ival::nan(prec))],
            kink: None,
        }
    }
}

/// κ = Σ|t| / |Σ t| of one element's terms, bounded above (1 when nothing cancels).
fn kappa_of(terms: &[Ival], prec: u32) -> f64 {
    if terms.iter().any(|t| t.is_nan() || !t.is_finite()) {
        return 1.0;
    }
    if terms.iter().all(|t| t.lo >= 0) || terms.iter().all(|t| t.hi <= 0) {
        return 1.0;
    }
    let mut abs_hi = Float::new(prec);
    let mut s = Ival::zero(prec);
    for t in terms {
        let (l, h) = (t.lo.as_abs(), t.hi.as_abs());
        let m: &Float = if *l > *h { &l } else { &h };
        abs_hi.add_assign_round(m, Round::Up);
        s.add_assign(t);
    }
    let s = s.abs();
    if s.lo.is_zero() {
        return f64::INFINITY;
    }
    Float::with_val_round(prec, &abs_hi / &s.lo, Round::Up)
        .0
        .to_f64_round(Round::Up)
        .max(1.0)
}

/// Record the additive terms of active row `i` in the reducer: for `none` their sum (returning
/// its κ), else each term on its own (so the reduced κ counts them).
pub(crate) fn record_terms(
    red: &mut Reducer,
    i: usize,
    terms: Vec<Ival>,
    none: bool,
    prec: u32,
) -> Option<f64> {
    if none {
        let k = kappa_of(&terms, prec);
        let mut s = Ival::zero(prec);
        for t in &terms {
            s.add_assign(t);
        }
        red.add_value(i, s);
        return Some(k);
    }
    if terms.is_empty() {
        red.add_value(i, Ival::zero(prec));
    }
    for t in terms {
        red.add_value(i, t);
    }
    None
}

/// The common loop of an elementwise loss with two differentiable inputs `names`: every active
/// element through `term(i, want)`, then the reduction. A kink group (primitive `primitive`)
/// with the requested members is reported for every element whose [`Local::kink`] is set. κ
/// counts every additive term of every element (for `none`, per element).
pub(crate) fn run2(
    case: &Case,
    inputs: &Inputs,
    n: usize,
    prec: u32,
    names: [&str; 2],
    primitive: &'static str,
    mut term: impl FnMut(usize, [bool; 2]) -> Local,
) -> Result<Raw, LossError> {
    let want = [wants(case, names[0]), wants(case, names[1])];
    let mut red = Reducer::new(case, inputs, n, prec)?;
    let none = case.reduction() == Reduction::None;
    let mut g: [Vec<Ival>; 2] =
        std::array::from_fn(|k| if want[k] { red.zeros(n) } else { Vec::new() });
    let mut kappa_none = if none { vec![1.0; n] } else { Vec::new() };
    let mut kinks = Vec::new();
    #[allow(clippy::needless_range_loop)]
    for i in 0..n {
        if !red.is_active(i) {
            continue;
        }
        let Local { terms, d, kink } = term(i, want);
        if let Some(k) = record_terms(&mut red, i, terms, none, prec) {
            kappa_none[i] = k;
        }
        let scaled = |dk: Deriv| match dk {
            Deriv::Plain(x) => red.grad(i, x),
            Deriv::Quotient(num, den) => red.grad_quotient(i, num, &den),
        };
        for (k, dk) in d.into_iter().enumerate() {
            if want[k] {
                g[k][i] = scaled(dk);
            }
        }
        if let Some(ends) = kink {
            let members: Vec<_> = ends
                .into_iter()
                .enumerate()
                .filter_map(|(k, e)| e.filter(|_| want[k]).map(|e| (k, e)))
                .map(|(k, (lo, hi))| (names[k].to_string(), i, scaled(lo), scaled(hi)))
                .collect();
            if !members.is_empty() {
                kinks.push(RawKinkGroup { primitive, members });
            }
        }
    }
    let (value, mut kappa) = red.finish();
    if none {
        kappa = kappa_none;
    }
    let mut grads = BTreeMap::new();
    for (k, gk) in g.into_iter().enumerate() {
        if want[k] {
            grads.insert(names[k].to_string(), gk);
        }
    }
    Ok(Raw {
        value,
        kappa,
        grads,
        kinks,
        ..Raw::default()
    })
}

// ---------------------------------------------------------------------------------------------
// margin_ranking

fn margin_ranking(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let s1 = input(case, inputs, "s1", n)?;
    let s2 = input(case, inputs, "s2", n)?;
    let y = int_input(case, "target", n)?;
    let m = Ival::point(prec, param(case, "margin")?);
    let (one, minus_one, zero) = (Ival::one(prec), Ival::point(prec, -1.0), Ival::zero(prec));
    run2(
        case,
        inputs,
        n,
        prec,
        ["s1", "s2"],
        MARGIN_RANKING_KINK,
        |i, _| {
            let pos = y[i] >= 0;
            // u = m − y·s1 + y·s2, exactly
            let u = signed_sum(prec, &[(&m, false), (&s1[i], pos), (&s2[i], !pos)]);
            // (∂u/∂s1, ∂u/∂s2) = (−y, +y)
            let (d1, d2) = if pos {
                (&minus_one, &one)
            } else {
                (&one, &minus_one)
            };
            let plain = |a: &Ival, b: &Ival| [Deriv::Plain(a.clone()), Deriv::Plain(b.clone())];
            match u.sign() {
                Sign::Undefined => Local::nan(prec),
                Sign::Positive => Local {
                    terms: vec![u],
                    d: plain(d1, d2),
                    kink: None,
                },
                Sign::Negative => Local {
                    terms: vec![zero.clone()],
                    d: plain(&zero, &zero),
                    kink: None,
                },
                Sign::Zero => Local {
                    terms: vec![zero.clone()],
                    d: plain(&zero, &zero),
                    kink: Some(
                        [d1, d2]
                            .map(|dk| Some((Deriv::Plain(zero.clone()), Deriv::Plain(dk.clone())))),
                    ),
                },
                Sign::Straddles => Local {
                    terms: vec![u.max(&zero)],
                    d: plain(&d1.hull(&zero), &d2.hull(&zero)),
                    kink: None,
                },
            }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// pairwise_logistic

fn pairwise_logistic(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let chosen = input(case, inputs, "chosen", n)?;
    let rejected = input(case, inputs, "rejected", n)?;
    run2(case, inputs, n, prec, ["chosen", "rejected"], "", |i, _| {
        // d = rejected − chosen, exactly
        let d = signed_sum(prec, &[(&rejected[i], false), (&chosen[i], true)]);
        if d.is_nan() {
            return Local::nan(prec);
        }
        let lg = logistic(&d, prec);
        Local {
            terms: vec![lg.softplus],
            d: [Deriv::Plain(lg.sigmoid.neg()), Deriv::Plain(lg.sigmoid)],
            kink: None,
        }
    })
}
