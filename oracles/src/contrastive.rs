//! Oracles of the contrastive family: `contrastive`, `triplet`, `info_nce` (row-wise: inputs
//! [N, D], one loss per row).
//!
//! Per row i, with exact (point) inputs:
//!
//! | loss | l_i | gradients |
//! |---|---|---|
//! | `contrastive` | y·Q + (1−y)·max(0, m − d)², Q = ‖w‖², w = x1 − x2, d = √Q | y = 1: ±2w; y = 0, d < m: ∓2(m − d)·w/d |
//! | `triplet` | max(0, z), z = d(a,p) − d(a,n) + m, d(u,v) = ‖u − v + eps·1‖ | z > 0: a: u/dp − v/dn, p: −u/dp, n: v/dn |
//! | `info_nce` | −z_ii + LSE_{j∈K} z_ij, z = s/τ, s_ij = q̂_i·k̂_j | see below |
//!
//! **Exactness.** Differences (x1 − x2, a − p + eps) and sums of squares are formed *exactly*
//! ([`signed_sum`], [`exact_mul`]: the precision grows to hold every bit), so Q, ‖u‖², ‖v‖²
//! and the dot products q_i·k_j are exact points; only the square roots, quotients, exps and
//! logs are enclosures at the working precision. The kink tests are decided exactly on those
//! points (with rationals): `contrastive`'s m − d = 0 ⇔ Q = m²; `triplet`'s z = 0 ⇔
//! (B − S − m²)² = 4m²S with B − S − m² ≥ 0 (B, S the larger / smaller of ‖u‖², ‖v‖² as m's sign
//! says; z = 0 ⇔ ‖u‖² = ‖v‖² for m = 0); `info_nce`'s ‖x‖ = eps ⇔ ‖x‖² = eps².
//!
//! **Kinks** (DESIGN.md: the selection nearest 0 in `grads`):
//!
//! - ‖·‖ at 0 (identical points with eps = 0, or u = 0 exactly): the Clarke set is the unit
//!   ball, selection 0 (the norm's derivative u/‖u‖ is replaced by 0). The ball is not a
//!   segment, so no [`RawKinkGroup`] is reported: a subject is judged against the 0 selection
//!   (docs/policies/contrastive.md).
//! - `triplet`'s max(0, z) at z = 0: value 0, selection θ = 0, and a kink group with every
//!   requested component (θ shared by the row's three inputs: they stay coupled).
//! - `contrastive`'s max(0, m − d)² at m = d: the square makes it smooth (derivative 0).
//! - `info_nce`'s max(‖x‖, eps) at ‖x‖ = eps: selection ∂/∂‖x‖ = 0 (the eps branch: ∂x̂/∂x =
//!   I/eps), a kink group per such embedding whose other end is the norm branch.
//!
//! **info_nce.** K is the set of rows with mask 1 (mask 0 removes query i *and* key i); a row
//! with weight 0 keeps its query and key in the others' softmax and contributes no loss
//! itself. x̂ = x / max(‖x‖, eps) (a zero embedding gives x̂ = 0, defined), s_ij = q_i·k_j /
//! (ν_i μ_j) with ν, μ the floored norms (x itself when `normalize` is off), z = s/τ. Row loss
//! r_i = log Σ_{j∈K} e^{z_ij − z_ii} (as (z_ij* − z_ii) + log Σ e^{z_ij − z_ij*}, j* the row's
//! largest, the i term exactly 1); with `symmetric`, l_i = ½(r_i + c_i), c_i the same over
//! column i (CLIP). The weight w_i and cotangent scale l_i. ∂/∂s_ij = (a_i(P_ij − δ_ij) +
//! b_j(Q_ij − δ_ij))/τ with P the row softmax, Q the column softmax, a_i, b_j the rows'
//! coefficients (w·cot/D, halved when symmetric); P_ii − 1 = −Σ_{j≠i} P_ij (no cancellation).
//! Then ∂/∂q̂_i = Σ_j G_ij k̂_j, and through the normalisation ∂/∂q = (g − q̂(q̂·g))/‖q‖ (norm
//! branch) or g/eps.
//!
//! **Conditioning** (κ, DESIGN.md): `triplet`'s z sums dp, −dn and m: κ = (dp + dn + |m|)/|z|;
//! the anchor's u_d/dp − v_d/dn cancels: κ per component. `contrastive`'s m − d: the value
//! (m − d)² gets 2(m + d)/|m − d|, its gradients (m + d)/|m − d|. `info_nce`'s gradients sum
//! G_ij k̂_j and project: κ per component from the absolute terms, each term G_ij counted
//! 2(λ + 2N + D + 14) times, λ = 2(D + 3)·max ‖q‖‖k‖/(ν μ τ): twice the error bound of
//! similarities and sums formed in f64 (the tolerance-table entry of `info_nce`). Reduced values: Σ|c_i|·(terms
//! of row i) / |Σ c_i l_i|. κ is 1 where the exact result is 0.
//!
//! **Extended reals.** Infinite components propagate through the interval arithmetic (an
//! infinite distance makes `triplet`/`contrastive` values ±inf or NaN for inf − inf); the
//! direction u/‖u‖ of an infinite u is NaN here (its limit, where it exists, is not taken:
//! docs/policies/contrastive.md). NaN propagates.

use crate::ival::{Ival, Sign};
use crate::ranking::{exact_mul, input, int_input, param, signed_sum, wants};
use crate::reduce::Reducer;
use crate::{Inputs, Raw, RawKinkGroup};
use losscheck_core::{Case, Checked, LossError, ParamValue, Reduction};
use rug::float::Round;
use rug::{Float, Rational};
use std::collections::BTreeMap;

/// Primitive names of the kink groups.
pub const TRIPLET_KINK: &str = "max(0, d(a,p) − d(a,n) + m) at 0";
pub const NORM_FLOOR_KINK: &str = "max(‖x‖, eps) at ‖x‖ = eps";

/// Evaluate a contrastive-family case at working precision `prec` (see the module docs).
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    match case.loss.as_str() {
        "contrastive" => contrastive(case, checked, inputs, prec),
        "triplet" => triplet(case, checked, inputs, prec),
        "info_nce" => info_nce(case, checked, inputs, prec),
        other => Err(LossError::unsupported(format!(
            "no contrastive oracle for {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces.

/// `x` rounded outward to `p` bits (a no-op when it has no more).
fn narrow(x: &Ival, p: u32) -> Ival {
    if x.is_nan() {
        return Ival::nan(p);
    }
    if x.lo.prec() <= p && x.hi.prec() <= p {
        return x.clone();
    }
    Ival {
        lo: Float::with_val_round(p, &x.lo, Round::Down).0,
        hi: Float::with_val_round(p, &x.hi, Round::Up).0,
    }
}

/// Σ_k a_k·b_k, exact for point operands.
fn dot(prec: u32, a: &[Ival], b: &[Ival]) -> Ival {
    let prods: Vec<Ival> = a
        .iter()
        .zip(b)
        .map(|(x, y)| exact_mul(prec, x, y))
        .collect();
    let terms: Vec<(&Ival, bool)> = prods.iter().map(|p| (p, false)).collect();
    if terms.is_empty() {
        return Ival::zero(prec);
    }
    signed_sum(prec, &terms)
}

/// An exact point as a rational (None if not a finite point).
fn rat(x: &Ival) -> Option<Rational> {
    if !x.is_point() {
        return None;
    }
    x.lo.to_rational()
}

/// An upper bound of |x| as f64 (+inf if unbounded).
fn abs_hi(x: &Ival) -> f64 {
    let a = x.abs();
    a.hi.to_f64_round(Round::Up)
}

/// κ = num / |e| rounded up (num an upper bound of the absolute terms), 1 where e is exactly
/// 0, NaN, not finite, or where nothing cancels (κ ≤ 1).
fn kappa(num: f64, e: &Ival) -> f64 {
    if e.is_nan() || !e.is_finite() || e.is_zero() || !num.is_finite() {
        return 1.0;
    }
    // an enclosure that straddles 0 (a result below its dtype's resolution): its midpoint
    // stands for |e| (the allowance κ·|e| is then about num, as it should be)
    let lo = match e.abs().lo.to_f64_round(Round::Down) {
        x if x > 0.0 => x,
        _ => e.magnitude(),
    };
    if !(lo > 0.0) {
        return 1.0;
    }
    // num / lo, rounded up by a relative 2^-50 margin
    ((num / lo) * (1.0 + 2f64.powi(-50))).max(1.0)
}

/// One row's value components for the reduced κ: (l_i enclosure, upper bound of the absolute
/// terms of its defining sum).
struct RowKappa {
    abs_terms: f64,
}

/// The value's κ per component: per row for `none`, else Σ c_i·abs_i / |value|.
fn value_kappa(
    case: &Case,
    inputs: &Inputs,
    rows: &[Option<RowKappa>],
    value: &[Ival],
) -> Vec<f64> {
    let none = case.reduction() == Reduction::None;
    let w = inputs.get("weight");
    let coef = |i: usize| -> f64 { w.map_or(1.0, |w| abs_hi(&w[i])) };
    if none {
        return rows
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(r) => kappa(r.abs_terms * coef(i), &value[i]),
                None => 1.0,
            })
            .collect();
    }
    let mut num = 0.0f64;
    for (i, r) in rows.iter().enumerate() {
        if let Some(r) = r {
            num += r.abs_terms * coef(i);
        }
    }
    num *= 1.0 + 2f64.powi(-40);
    let v = match value.first() {
        Some(v) => v,
        None => return Vec::new(),
    };
    // the mean divides both sides by D: compare with the sum's magnitude
    let scale = if case.reduction() == Reduction::Mean {
        let d: f64 = (0..rows.len())
            .filter(|&i| rows[i].is_some())
            .map(coef)
            .sum::<f64>();
        if d > 0.0 {
            d * (1.0 - 2f64.powi(-40))
        } else {
            1.0
        }
    } else {
        1.0
    };
    vec![kappa(num / scale, v)]
}

fn row(x: &[Ival], i: usize, d: usize) -> &[Ival] {
    &x[i * d..(i + 1) * d]
}

// ---------------------------------------------------------------------------------------------
// triplet

/// Exact test of √P − √S + m = 0 for exact points P, S ≥ 0.
fn triplet_zero(p: &Ival, s: &Ival, m: f64) -> bool {
    let (Some(pr), Some(sr)) = (rat(p), rat(s)) else {
        return false;
    };
    if m == 0.0 {
        return pr == sr;
    }
    let mr = Rational::from_f64(m).expect("finite margin");
    // √big − √small = |m|
    let (big, small) = if m > 0.0 { (sr, pr) } else { (pr, sr) };
    let m2 = Rational::from(&mr * &mr);
    let a = Rational::from(&big - &small) - &m2;
    if a < 0 {
        return false;
    }
    Rational::from(&a * &a) == Rational::from(4 * m2 * small)
}

fn triplet(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let n = checked.rows;
    let d = checked.dim("D");
    let a = input(case, inputs, "anchor", n * d)?;
    let p = input(case, inputs, "positive", n * d)?;
    let ng = input(case, inputs, "negative", n * d)?;
    let m = param(case, "margin")?;
    let eps = param(case, "eps")?;
    let names = ["anchor", "positive", "negative"];
    let want = names.map(|x| wants(case, x));
    let mut red = Reducer::new(case, inputs, n, prec)?;
    let mut g: [Vec<Ival>; 3] = std::array::from_fn(|k| {
        if want[k] {
            red.zeros(n * d)
        } else {
            Vec::new()
        }
    });
    let mut gk: [Vec<f64>; 3] = std::array::from_fn(|k| {
        if want[k] {
            vec![1.0; n * d]
        } else {
            Vec::new()
        }
    });
    let mut kinks = Vec::new();
    let mut rows: Vec<Option<RowKappa>> = (0..n).map(|_| None).collect();
    let mi = Ival::point(prec, m);
    let ei = Ival::point(prec, eps);
    let zero = Ival::zero(prec);
    for i in 0..n {
        if !red.is_active(i) {
            continue;
        }
        let (ar, pr, nr) = (row(a, i, d), row(p, i, d), row(ng, i, d));
        // u = a − p + eps, v = a − n + eps, exactly
        let u: Vec<Ival> = (0..d)
            .map(|k| signed_sum(prec, &[(&ar[k], false), (&pr[k], true), (&ei, false)]))
            .collect();
        let v: Vec<Ival> = (0..d)
            .map(|k| signed_sum(prec, &[(&ar[k], false), (&nr[k], true), (&ei, false)]))
            .collect();
        let pp = dot(prec, &u, &u);
        let ss = dot(prec, &v, &v);
        let wp = prec + 16;
        let dp = narrow(&pp, wp).sqrt();
        let dn = narrow(&ss, wp).sqrt();
        let z = dp.sub(&dn).add(&narrow(&mi, wp));
        rows[i] = Some(RowKappa {
            abs_terms: abs_hi(&dp) + abs_hi(&dn) + m.abs(),
        });
        // the norms' derivatives u/dp, v/dn (0 at a zero norm: the selection)
        let unit = |x: &[Ival], nn: &Ival, q: &Ival| -> Vec<Ival> {
            if q.is_zero() {
                return vec![zero.clone(); d];
            }
            x.iter().map(|c| narrow(c, wp).div(nn)).collect()
        };
        let sign = match z.sign() {
            Sign::Straddles if triplet_zero(&pp, &ss, m) => Sign::Zero,
            s => s,
        };
        let (value, active) = match sign {
            Sign::Undefined => (Ival::nan(prec), None),
            Sign::Negative => (zero.clone(), None),
            Sign::Positive => (z.clone(), Some(false)),
            Sign::Zero => (zero.clone(), Some(true)),
            Sign::Straddles => (z.max(&zero), Some(false)),
        };
        red.add_value(i, value);
        let nan_row = sign == Sign::Undefined;
        let Some(at_kink) = active else {
            if nan_row {
                for k in 0..3 {
                    if want[k] {
                        for c in 0..d {
                            g[k][i * d + c] = red.grad(i, Ival::nan(prec));
                        }
                    }
                }
            }
            continue;
        };
        let uu = unit(&u, &dp, &pp);
        let vv = unit(&v, &dn, &ss);
        // active-branch local derivatives per input
        let dloc = |k: usize, c: usize| -> Ival {
            match k {
                0 => uu[c].sub(&vv[c]),
                1 => uu[c].neg(),
                _ => vv[c].clone(),
            }
        };
        let straddles = sign == Sign::Straddles;
        let mut members = Vec::new();
        for k in 0..3 {
            if !want[k] {
                continue;
            }
            for c in 0..d {
                let dl = dloc(k, c);
                let j = i * d + c;
                if at_kink {
                    g[k][j] = Ival::zero(prec);
                    members.push((names[k].to_string(), j, Ival::zero(prec), red.grad(i, dl)));
                } else if straddles {
                    g[k][j] = red.grad(i, dl.hull(&zero));
                } else {
                    if k == 0 {
                        let num = abs_hi(&uu[c]) + abs_hi(&vv[c]);
                        gk[k][j] = kappa(num, &dl);
                    }
                    g[k][j] = red.grad(i, dl);
                }
            }
        }
        if !members.is_empty() {
            kinks.push(RawKinkGroup {
                primitive: TRIPLET_KINK,
                members,
            });
        }
    }
    let (value, _) = red.finish();
    let kappa_v = value_kappa(case, inputs, &rows, &value);
    finish_raw(value, kappa_v, names, want, g, gk, kinks)
}

fn finish_raw<const K: usize>(
    value: Vec<Ival>,
    kappa: Vec<f64>,
    names: [&str; K],
    want: [bool; K],
    g: [Vec<Ival>; K],
    gk: [Vec<f64>; K],
    kinks: Vec<RawKinkGroup>,
) -> Result<Raw, LossError> {
    let mut grads = BTreeMap::new();
    let mut grad_kappa = BTreeMap::new();
    for (k, (gv, kv)) in g.into_iter().zip(gk).enumerate() {
        if want[k] {
            grads.insert(names[k].to_string(), gv);
            grad_kappa.insert(names[k].to_string(), kv);
        }
    }
    Ok(Raw {
        value,
        kappa,
        grads,
        grad_kappa,
        kinks,
    })
}

// ---------------------------------------------------------------------------------------------
// contrastive

fn contrastive(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let d = checked.dim("D");
    let x1 = input(case, inputs, "x1", n * d)?;
    let x2 = input(case, inputs, "x2", n * d)?;
    let y = int_input(case, "target", n)?;
    let m = param(case, "margin")?;
    let names = ["x1", "x2"];
    let want = names.map(|x| wants(case, x));
    let mut red = Reducer::new(case, inputs, n, prec)?;
    let mut g: [Vec<Ival>; 2] = std::array::from_fn(|k| {
        if want[k] {
            red.zeros(n * d)
        } else {
            Vec::new()
        }
    });
    let mut gk: [Vec<f64>; 2] = std::array::from_fn(|k| {
        if want[k] {
            vec![1.0; n * d]
        } else {
            Vec::new()
        }
    });
    let mut rows: Vec<Option<RowKappa>> = (0..n).map(|_| None).collect();
    let zero = Ival::zero(prec);
    let wp = prec + 16;
    let mi = Ival::point(wp, m);
    let m2 = exact_mul(prec, &Ival::point(prec, m), &Ival::point(prec, m));
    for i in 0..n {
        if !red.is_active(i) {
            continue;
        }
        let (ar, br) = (row(x1, i, d), row(x2, i, d));
        let w: Vec<Ival> = (0..d)
            .map(|k| signed_sum(prec, &[(&ar[k], false), (&br[k], true)]))
            .collect();
        let q = dot(prec, &w, &w);
        // local derivative factor f: ∂l/∂x1 = f·w, ∂l/∂x2 = −f·w
        // y = 1: ∂l/∂w_k = 2w_k componentwise (NaN only where w_k is); y = 0 with a NaN
        // distance: everything NaN (max(0, m − NaN) propagates, whatever m)
        let (value, f, kap_v, kap_g): (Ival, Option<Ival>, f64, f64) = if y[i] == 1 {
            (q.clone(), Some(Ival::point(prec, 2.0)), 1.0, 1.0)
        } else if q.is_nan() {
            (Ival::nan(prec), Some(Ival::nan(prec)), 1.0, 1.0)
        } else if m <= 0.0 {
            (zero.clone(), None, 1.0, 1.0)
        } else {
            let dd = narrow(&q, wp).sqrt();
            let t = mi.sub(&dd);
            let sign = match t.sign() {
                Sign::Straddles if q.is_point() && m2.is_point() && q.lo == m2.lo => Sign::Zero,
                s => s,
            };
            match sign {
                Sign::Undefined => (Ival::nan(prec), Some(Ival::nan(prec)), 1.0, 1.0),
                Sign::Negative | Sign::Zero => (zero.clone(), None, 1.0, 1.0),
                Sign::Positive | Sign::Straddles => {
                    let tp = t.max(&zero);
                    let num = m + abs_hi(&dd);
                    let kv = kappa(2.0 * num, &tp.sqr());
                    let kg = kappa(num, &tp);
                    // −2t/d (0 at d = 0: the selection of ‖·‖ at 0)
                    let f = if q.is_zero() {
                        None
                    } else {
                        Some(tp.scale_f64(-2.0).div(&dd))
                    };
                    (tp.sqr(), f, kv, kg)
                }
            }
        };
        rows[i] = Some(RowKappa {
            abs_terms: abs_hi(&value) * kap_v,
        });
        red.add_value(i, value);
        if let Some(f) = f {
            for c in 0..d {
                let j = i * d + c;
                let dl = f.mul(&narrow(&w[c], wp));
                for k in 0..2 {
                    if want[k] {
                        g[k][j] = red.grad(i, if k == 0 { dl.clone() } else { dl.neg() });
                        gk[k][j] = kap_g;
                    }
                }
            }
        }
    }
    let (value, _) = red.finish();
    let kappa_v = value_kappa(case, inputs, &rows, &value);
    finish_raw(value, kappa_v, names, want, g, gk, Vec::new())
}

// ---------------------------------------------------------------------------------------------
// info_nce

fn bool_param(case: &Case, name: &str, default: bool) -> bool {
    match case.params.get(name) {
        Some(ParamValue::Bool(b)) => *b,
        _ => default,
    }
}

/// One embedding's normalisation: the floor ν = max(‖x‖, eps) (1 when not normalizing), the
/// branch for the backward pass, and ‖x‖² (exact).
struct Norm {
    nu: Ival,
    /// 1 − x̂_c² = (‖x‖² − x_c²)/‖x‖² per component, from exact points (norm branch).
    one_minus_sq: Vec<Ival>,
    /// Some(true): norm branch; Some(false): eps branch; None: undecided (hull of both).
    norm_branch: Option<bool>,
    at_kink: bool,
    xhat: Vec<Ival>,
}

fn normalize(prec: u32, x: &[Ival], on: bool, eps: f64) -> Norm {
    let wp = prec + 16;
    if !on {
        return Norm {
            nu: Ival::one(wp),
            one_minus_sq: Vec::new(),
            norm_branch: None,
            at_kink: false,
            xhat: x.iter().map(|c| narrow(c, wp)).collect(),
        };
    }
    let q = dot(prec, x, x);
    let e = Ival::point(prec, eps);
    let e2 = exact_mul(prec, &e, &e);
    let nrm = narrow(&q, wp).sqrt();
    let (branch, kink) = if q.is_point() && e2.is_point() {
        if q.lo > e2.lo {
            (Some(true), false)
        } else {
            (Some(false), q.lo == e2.lo)
        }
    } else if q.lo > e2.hi {
        (Some(true), false)
    } else if q.hi <= e2.lo {
        (Some(false), false)
    } else {
        (None, false)
    };
    let nu = match branch {
        Some(true) => nrm,
        Some(false) => Ival::point(wp, eps),
        None => nrm.max(&Ival::point(wp, eps)),
    };
    let xhat = x.iter().map(|c| narrow(c, wp).div(&nu)).collect();
    let qn = narrow(&q, wp);
    let one_minus_sq = x
        .iter()
        .map(|c| {
            let c2 = exact_mul(prec, c, c);
            narrow(&signed_sum(prec, &[(&q, false), (&c2, true)]), wp).div(&qn)
        })
        .collect();
    Norm {
        nu,
        one_minus_sq,
        norm_branch: branch,
        at_kink: kink,
        xhat,
    }
}

/// Backward through x̂ = x/ν: g ↦ (g − x̂(x̂·g))/ν (norm branch) or g/ν (eps branch, and no
/// normalisation with ν = 1); `None` branch: the hull of both. Returns the components and
/// the upper bound of their absolute terms (for κ), given the absolute upstream bounds `ga`.
fn norm_backward(n: &Norm, g: &[Ival], ga: &[f64], on: bool) -> (Vec<Ival>, Vec<f64>) {
    let d = g.len();
    let nu_lo = n.nu.lo.to_f64_round(Round::Down);
    let eps_branch: Vec<Ival> = g.iter().map(|x| x.div(&n.nu)).collect();
    let eps_abs: Vec<f64> = ga.iter().map(|a| a / nu_lo).collect();
    if !on || n.norm_branch == Some(false) {
        return (eps_branch, eps_abs);
    }
    let p = n.xhat.first().map_or(64, |x| x.prec());
    let mut xga = 0.0f64;
    for k in 0..d {
        xga += abs_hi(&n.xhat[k]) * ga[k];
    }
    // g_c − x̂_c·(x̂·g) = g_c·(1 − x̂_c²) − x̂_c·Σ_{e≠c} x̂_e g_e (‖x̂‖ = 1 on the norm branch),
    // with the sums over e ≠ c from prefix and suffix sums: no enclosure is subtracted from
    // itself, so an exactly parallel g gives exact zeros
    let t: Vec<Ival> = (0..d).map(|k| n.xhat[k].mul(&g[k])).collect();
    let mut pre = vec![Ival::zero(p); d + 1];
    for k in 0..d {
        pre[k + 1] = pre[k].add(&t[k]);
    }
    let mut suf = vec![Ival::zero(p); d + 1];
    for k in (0..d).rev() {
        suf[k] = suf[k + 1].add(&t[k]);
    }
    let mut out = Vec::with_capacity(d);
    let mut abs = Vec::with_capacity(d);
    for k in 0..d {
        let others = pre[k].add(&suf[k + 1]);
        let r = g[k]
            .mul(&n.one_minus_sq[k])
            .sub(&n.xhat[k].mul(&others))
            .div(&n.nu);
        out.push(match n.norm_branch {
            Some(true) => r,
            _ => r.hull(&eps_branch[k]),
        });
        abs.push((ga[k] + abs_hi(&n.xhat[k]) * xga) / nu_lo);
    }
    (out, abs)
}

fn info_nce(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let n = checked.rows;
    let d = checked.dim("D");
    let qx = input(case, inputs, "query", n * d)?;
    let kx = input(case, inputs, "key", n * d)?;
    let tau = param(case, "temperature")?;
    let eps = param(case, "eps")?;
    let on = bool_param(case, "normalize", true);
    let sym = bool_param(case, "symmetric", false);
    let names = ["query", "key"];
    let want = names.map(|x| wants(case, x));
    let red = Reducer::new(case, inputs, n, prec)?;
    let mut red = red;
    let mut g: [Vec<Ival>; 2] = std::array::from_fn(|k| {
        if want[k] {
            red.zeros(n * d)
        } else {
            Vec::new()
        }
    });
    let mut gk: [Vec<f64>; 2] = std::array::from_fn(|k| {
        if want[k] {
            vec![1.0; n * d]
        } else {
            Vec::new()
        }
    });
    // K: rows whose query and key take part (mask 1)
    let present: Vec<usize> = match case.inputs.get("mask").and_then(|t| t.i()) {
        Some(mk) => (0..n).filter(|&i| mk[i] != 0).collect(),
        None => (0..n).collect(),
    };
    let any_active = (0..n).any(|i| red.is_active(i));
    if !any_active {
        let (value, kappa) = red.finish();
        return finish_raw(value, kappa, names, want, g, gk, Vec::new());
    }
    let wp = prec + 16;
    let nk = present.len();
    let qn: Vec<Norm> = present
        .iter()
        .map(|&i| normalize(prec, row(qx, i, d), on, eps))
        .collect();
    let kn: Vec<Norm> = present
        .iter()
        .map(|&i| normalize(prec, row(kx, i, d), on, eps))
        .collect();
    let t = Ival::point(wp, tau);
    // z[a][b] = q_a·k_b / (ν_a μ_b τ), over present indices
    let mut z: Vec<Vec<Ival>> = Vec::with_capacity(nk);
    for a in 0..nk {
        let qa = row(qx, present[a], d);
        let den_a = qn[a].nu.mul(&t);
        z.push(
            (0..nk)
                .map(|b| {
                    let s = narrow(&dot(prec, qa, row(kx, present[b], d)), wp);
                    s.div(&den_a.mul(&kn[b].nu))
                })
                .collect(),
        );
    }
    // softmax of a line (row a of z, or column a with `col`): (loss, P over the line, P_aa − 1)
    let line = |a: usize, col: bool| -> (Ival, Vec<Ival>, Ival) {
        let at = |b: usize| if col { &z[b][a] } else { &z[a][b] };
        let mid = |x: &Ival| x.mid_f64();
        let mut jstar = a;
        for b in 0..nk {
            if mid(at(b)) > mid(at(jstar)) {
                jstar = b;
            }
        }
        if (0..nk).any(|b| at(b).is_nan()) {
            let nan = Ival::nan(wp);
            return (nan.clone(), vec![nan.clone(); nk], nan);
        }
        // e_b = exp(z_b − z_j*), exactly 1 at j*
        let e: Vec<Ival> = (0..nk)
            .map(|b| {
                if b == jstar {
                    Ival::one(wp)
                } else {
                    at(b).sub(at(jstar)).exp()
                }
            })
            .collect();
        let mut s = Ival::zero(wp);
        let mut s_off = Ival::zero(wp); // Σ_{b ≠ a} e_b
        for b in 0..nk {
            s.add_assign(&e[b]);
            if b != a {
                s_off.add_assign(&e[b]);
            }
        }
        let loss = if jstar == a {
            s_off.log1p()
        } else {
            at(jstar).sub(at(a)).add(&s.ln())
        };
        let p: Vec<Ival> = e.iter().map(|x| x.div(&s)).collect();
        let paa_m1 = s_off.div(&s).neg();
        (loss, p, paa_m1)
    };
    let half = if sym { 0.5 } else { 1.0 };
    // G[a][b] = ∂(output)/∂s_ab (times τ later), built from rows' and columns' coefficients
    let mut gmat: Vec<Vec<Ival>> = vec![vec![Ival::zero(wp); nk]; nk];
    let mut rows_k: Vec<Option<RowKappa>> = (0..n).map(|_| None).collect();
    for a in 0..nk {
        let i = present[a];
        if !red.is_active(i) {
            continue;
        }
        let (r, p, paa) = line(a, false);
        let mut l = r;
        let mut lines = vec![(false, p, paa)];
        if sym {
            let (c, pc, pcc) = line(a, true);
            l = l.add(&c);
            lines.push((true, pc, pcc));
        }
        let l = if sym { l.scale_f64(0.5) } else { l };
        rows_k[i] = Some(RowKappa {
            abs_terms: abs_hi(&l),
        });
        red.add_value(i, l);
        for (col, p, paa) in lines {
            for b in 0..nk {
                let dl = if b == a { paa.clone() } else { p[b].clone() };
                let dl = red.grad(i, dl.scale_f64(half).div(&t));
                let (r_, c_) = if col { (b, a) } else { (a, b) };
                gmat[r_][c_].add_assign(&dl);
            }
        }
    }
    // upstream gradients of q̂_a and k̂_b, with the absolute bounds of their terms. Each term
    // G_ab carries the sensitivity of P to its logits: a kernel that forms the similarities in
    // f64 has logits off by up to (D + 3)·2^−53·‖q_a‖‖k_b‖/(ν_a μ_b τ), hence P_ab (a
    // difference of two logits in the exponent) relatively by twice that: λ·2^−53 of each term,
    // λ = 2(D + 3)·max_ab ‖q_a‖‖k_b‖/(ν_a μ_b τ) (the tolerance-table entry of
    // info_nce, check::compare::TOLERANCES; docs/policies/contrastive.md).
    let ratio = |x: &[Ival], nu: &Ival| -> f64 {
        let sq: f64 = x.iter().map(|c| c.mid_f64() * c.mid_f64()).sum();
        let lo = nu.lo.to_f64_round(Round::Down);
        if lo > 0.0 {
            sq.sqrt() / lo
        } else {
            0.0
        }
    };
    let rq: f64 = (0..nk)
        .map(|a| ratio(row(qx, present[a], d), &qn[a].nu))
        .fold(0.0, f64::max);
    let rk: f64 = (0..nk)
        .map(|b| ratio(row(kx, present[b], d), &kn[b].nu))
        .fold(0.0, f64::max);
    let lambda = 2.0 * (d as f64 + 3.0) * rq * rk / tau * (1.0 + 2f64.powi(-40));
    let lambda = if lambda.is_finite() { lambda } else { 0.0 };
    // E = (λ + 2N + D + 14)·2^−53·Σ|terms| bounds the f64 kernel's error (the derivation is
    // the tolerance-table entry); the allowance is 2E (a kernel returns 0 below E)
    let factor = 2.0 * (2.0 * nk as f64 + d as f64 + 14.0 + lambda);
    let gabs: Vec<Vec<f64>> = gmat
        .iter()
        .map(|r| r.iter().map(|g| abs_hi(g) * factor).collect())
        .collect();
    let mut kinks = Vec::new();
    for (k, name) in names.iter().enumerate() {
        if !want[k] {
            continue;
        }
        for a in 0..nk {
            let mut up = vec![Ival::zero(wp); d];
            let mut up_abs = vec![0.0f64; d];
            for b in 0..nk {
                let (gab, other) = if k == 0 {
                    (&gmat[a][b], &kn[b])
                } else {
                    (&gmat[b][a], &qn[b])
                };
                let gaa = if k == 0 { gabs[a][b] } else { gabs[b][a] };
                if gab.is_zero() {
                    continue;
                }
                for c in 0..d {
                    up[c].add_assign(&gab.mul(&other.xhat[c]));
                    up_abs[c] += gaa * abs_hi(&other.xhat[c]);
                }
            }
            let me = if k == 0 { &qn[a] } else { &kn[a] };
            let (out, abs) = norm_backward(me, &up, &up_abs, on);
            let i = present[a];
            for c in 0..d {
                gk[k][i * d + c] = kappa(abs[c], &out[c]);
            }
            if me.at_kink {
                // the other end of the Clarke segment: the norm branch
                let alt = Norm {
                    nu: me.nu.clone(),
                    one_minus_sq: me.one_minus_sq.clone(),
                    norm_branch: Some(true),
                    at_kink: true,
                    xhat: me.xhat.clone(),
                };
                let (hi, _) = norm_backward(&alt, &up, &up_abs, on);
                kinks.push(RawKinkGroup {
                    primitive: NORM_FLOOR_KINK,
                    members: (0..d)
                        .map(|c| (name.to_string(), i * d + c, out[c].clone(), hi[c].clone()))
                        .collect(),
                });
            }
            for (c, o) in out.into_iter().enumerate() {
                g[k][i * d + c] = o;
            }
        }
    }
    let (value, _) = red.finish();
    let kappa_v = value_kappa(case, inputs, &rows_k, &value);
    finish_raw(value, kappa_v, names, want, g, gk, kinks)
}
