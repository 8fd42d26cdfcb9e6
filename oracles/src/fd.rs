//! High-precision finite-difference cross-check of oracle gradients (DESIGN.md: "every oracle
//! gradient is cross-checked … along 3 random directions, one-sided at domain boundaries,
//! skipping kinks and infinite inputs").
//!
//! For a case, seeded random directions v over the requested differentiable inputs are drawn
//! (v_j uniform in (−1, 1) with 53 random bits; 0 at kink members, at non-finite inputs and at
//! non-finite gradient components). The directional derivative Σ_j g_j·v_j from the oracle's
//! gradient enclosures (midpoints, at [`FD_PREC`] bits) is compared with a difference
//! quotient of the oracle's *value* at the perturbed real inputs x ± h·v, evaluated through
//! the same raw evaluator at [`FD_PREC`] bits, with h = 2^[`FD_H_EXP`]:
//!
//! - h·|v_j| < 2^−209 is far below the smallest non-zero difference of two dtype values
//!   (2^−149 in f32), so the perturbation never crosses a kink that the exact inputs are not at;
//! - x ± h·v is exact at [`FD_PREC`] bits (|x| < 2^128 down to 2^−262 needs < 400 bits), and the
//!   value's relative rounding error 2^−1000 divided by h leaves > 500 bits of agreement;
//! - central differences (truncation O(h²)); forward differences with the boundary components
//!   pointed inward when some input sits at the boundary of its domain (0 or 1).
//!
//! What is compared: for `sum` / `mean` with a finite value, the scalar value (times the
//! cotangent); for `sum` / `mean` whose value is not finite (an inf or NaN term), the terms of
//! the same case with reduction `none`, combined with this module's own weight of each term
//! (1/D with D = Σ m·w, or the class-weighted and per-sequence denominators of `cross_entropy`
//! and `nll`: `term_factors`), since gradients are termwise and the other terms' derivatives
//! must still be right; for `none`, every component of an elementwise loss separately
//! (cotangent applied), or the cotangent-weighted sum of the finite components for row-wise
//! losses.

use crate::ival::Ival;
use crate::{point_inputs, Inputs, Raw};
use losscheck_core::catalogue::{Domain, InputKind, Structure};
use losscheck_core::{validate, Case, Checked, LossError, Reduction};
use rug::Float;
use std::collections::BTreeMap;

/// Working precision of the finite-difference evaluations (bits).
pub const FD_PREC: u32 = 1024;
/// The step is h = 2^FD_H_EXP (directions have |v_j| < 1).
pub const FD_H_EXP: i32 = -209;

/// A raw evaluator: [`crate::eval_raw`] or a stand-in (e.g. a deliberately wrong gradient, to
/// show the check detects it).
pub type RawEval<'a> = &'a dyn Fn(&Case, &Checked, &Inputs, u32) -> Result<Raw, LossError>;

pub use losscheck_core::rng::SplitMix64;

/// The result of a finite-difference check.
#[derive(Clone, Debug, Default)]
pub struct FdReport {
    /// Directions drawn.
    pub directions: usize,
    /// Comparisons made (directions × components compared).
    pub comparisons: usize,
    /// Comparisons that could not be made (non-finite value or cotangent, nothing perturbed).
    pub skipped: usize,
    /// Direction components forced to 0 (kinks, non-finite inputs or gradients), per direction.
    pub zeroed: usize,
    /// Directions that used a one-sided difference (an input at a domain boundary).
    pub one_sided: usize,
    /// The largest relative discrepancy |A − B| / max(|A|, |B|, Σ_j |g_j v_j|) seen (0 when
    /// every comparison agreed exactly).
    pub max_rel: f64,
    /// Description of the worst comparison.
    pub worst: String,
}

impl FdReport {
    fn record(&mut self, rel: f64, what: impl FnOnce() -> String) {
        self.comparisons += 1;
        if rel > self.max_rel || (rel.is_nan() && !self.max_rel.is_nan()) {
            self.max_rel = rel;
            self.worst = what();
        }
    }
}

/// Check the oracle's gradients of `case` along `directions` seeded random directions.
pub fn check_gradients(case: &Case, directions: usize, seed: u64) -> Result<FdReport, LossError> {
    check_gradients_with(case, directions, seed, &crate::eval_raw)
}

/// [`check_gradients`] for any raw evaluator (its gradients are checked against its values).
pub fn check_gradients_with(
    case: &Case,
    directions: usize,
    seed: u64,
    eval: RawEval,
) -> Result<FdReport, LossError> {
    let checked = validate(case)?;
    let prec = FD_PREC;
    let base = point_inputs(case, prec);
    let raw0 = eval(case, &checked, &base, prec)?;
    let spec = case.spec();
    let reduction = case.reduction();

    // The differentiable inputs that are checked, their gradients, and what must stay fixed.
    let names: Vec<String> = case
        .grad
        .iter()
        .filter(|g| raw0.grads.contains_key(*g))
        .cloned()
        .collect();
    let mut grads: BTreeMap<&str, Vec<Float>> = BTreeMap::new();
    let mut fixed: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    let mut inward: BTreeMap<&str, Vec<i8>> = BTreeMap::new();
    for name in &names {
        let x = &base[name];
        let g = &raw0.grads[name];
        let dom = match spec.input(name).map(|i| i.kind) {
            Some(InputKind::Float(d)) => d,
            _ => Domain::Any,
        };
        let mut fx = vec![false; x.len()];
        let mut iw = vec![0i8; x.len()];
        for j in 0..x.len() {
            let gm = g[j].mid();
            // also fixed: a gradient enclosure that holds 0 without being 0 — at FD_PREC this
            // only happens below MPFR's exponent range (e.g. σ(−1e29) ≈ e^−1e29), where no
            // difference quotient can see the component either
            fx[j] =
                !x[j].is_finite() || !gm.is_finite() || (g[j].contains_zero() && !g[j].is_zero());
            let xv = &x[j].lo;
            iw[j] = match dom {
                Domain::UnitInterval if *xv == 0 => 1,
                Domain::UnitInterval if *xv == 1 => -1,
                Domain::NonNegative if *xv == 0 => 1,
                _ => 0,
            };
        }
        grads.insert(name, g.iter().map(Ival::mid).collect());
        fixed.insert(name, fx);
        inward.insert(name, iw);
    }
    for kg in &raw0.kinks {
        for (input, index, _, _) in &kg.members {
            if let Some(f) = fixed.get_mut(input.as_str()) {
                if *index < f.len() {
                    f[*index] = true;
                }
            }
        }
    }

    // What is compared.
    let n_out = raw0.value.len();
    let elementwise = spec.structure == Structure::Elementwise;
    let cot_case: Option<Vec<Float>> = case
        .inputs
        .get("cotangent")
        .and_then(|t| t.f())
        .map(|v| v.iter().map(|&c| Float::with_val(prec, c)).collect());
    enum Route {
        Scalar,
        Terms {
            case: Box<Case>,
            checked: Checked,
            finite: Vec<bool>,
            /// Per row of the unreduced case: the weight of its term in the reduced value
            /// (cotangent included); `None` when nothing can be compared.
            factors: Option<Vec<Float>>,
        },
        Components {
            finite: Vec<bool>,
        },
    }
    let route = if reduction == Reduction::None {
        Route::Components {
            finite: raw0.value.iter().map(|v| v.mid().is_finite()).collect(),
        }
    } else if raw0.value.first().is_some_and(|v| v.mid().is_finite()) {
        Route::Scalar
    } else {
        // Terms of the unreduced case; D computed here, independently of the reducer.
        let mut c = case.clone();
        c.set_reduction(Reduction::None);
        c.inputs.remove("cotangent");
        let ch = validate(&c)?;
        let r = eval(&c, &ch, &point_inputs(&c, prec), prec)?;
        let finite = r.value.iter().map(|v| v.mid().is_finite()).collect();
        let cot = cot_case
            .as_ref()
            .map(|v| v[0].clone())
            .unwrap_or_else(|| Float::with_val(prec, 1));
        let factors = if cot.is_finite() {
            term_factors(&c, &ch, reduction, prec).map(|mut f| {
                for x in &mut f {
                    *x *= &cot;
                }
                f
            })
        } else {
            None
        };
        Route::Terms {
            case: Box::new(c),
            checked: ch,
            finite,
            factors,
        }
    };

    // Inputs of a row whose unreduced term is not finite stay fixed: that term is left out of
    // the difference, so its derivatives must be left out of grad·v (index j of an input with
    // k·rows elements belongs to row j / k).
    let dead: Option<&Vec<bool>> = match &route {
        Route::Scalar => None,
        Route::Terms { finite, .. } | Route::Components { finite } => Some(finite),
    };
    if let Some(finite) = dead {
        let rows = finite.len();
        for f in fixed.values_mut() {
            if rows == 0 || f.len() % rows != 0 {
                continue;
            }
            let per_row = f.len() / rows;
            for (j, x) in f.iter_mut().enumerate() {
                *x |= !finite[j / per_row];
            }
        }
    }

    let mut rng = SplitMix64::new(seed ^ 0x6C6F_7373_6368_6B21);
    let mut rep = FdReport {
        directions,
        ..FdReport::default()
    };
    for dir in 0..directions {
        // Draw v.
        let mut v: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut one_sided = false;
        let mut any = false;
        for name in &names {
            let fx = &fixed[name.as_str()];
            let iw = &inward[name.as_str()];
            let mut vv = Vec::with_capacity(fx.len());
            for j in 0..fx.len() {
                let mut x = rng.signed_unit();
                if fx[j] {
                    x = 0.0;
                    rep.zeroed += 1;
                } else if iw[j] != 0 {
                    one_sided = true;
                    x = x.abs() * iw[j] as f64;
                }
                any |= x != 0.0;
                vv.push(x);
            }
            v.insert(name, vv);
        }
        if !any {
            rep.skipped += 1;
            continue;
        }
        if one_sided {
            rep.one_sided += 1;
        }
        let perturbed = |sign: i32, inputs: &Inputs, hexp: i32| -> Inputs {
            let mut out = inputs.clone();
            for name in &names {
                let vv = &v[name.as_str()];
                let xs = out.get_mut(name).expect("input present");
                for (j, x) in xs.iter_mut().enumerate() {
                    if vv[j] != 0.0 {
                        let mut step = Float::with_val(prec, vv[j]);
                        step <<= hexp;
                        if sign < 0 {
                            step = -step;
                        }
                        let (y, ord) =
                            Float::with_val_round(prec, &x.lo + &step, rug::float::Round::Nearest);
                        // dtype values span < 280 bits and h·v another 262: always exact
                        assert_eq!(ord, std::cmp::Ordering::Equal, "inexact FD perturbation");
                        *x = Ival::from_float(y);
                    }
                }
            }
            out
        };
        // Directional derivative from the gradient, per output component of an elementwise
        // loss (index j of every input belongs to output j) and in total.
        let gv = |j_filter: Option<usize>| -> (Float, Float) {
            let mut a = Float::new(prec);
            let mut s = Float::new(prec);
            for name in &names {
                let g = &grads[name.as_str()];
                let vv = &v[name.as_str()];
                for j in 0..vv.len() {
                    if vv[j] == 0.0 || j_filter.is_some_and(|f| f != j) {
                        continue;
                    }
                    let t = Float::with_val(prec, &g[j] * vv[j]);
                    s += t.clone().abs();
                    a += t;
                }
            }
            (a, s)
        };
        match &route {
            Route::Scalar => {
                let cot = cot_case.as_ref().map(|c| c[0].clone());
                if cot.as_ref().is_some_and(|c| !c.is_finite()) {
                    rep.skipped += 1;
                    continue;
                }
                let b_at = |hexp: i32| -> Result<Float, LossError> {
                    let rp = eval(case, &checked, &perturbed(1, &base, hexp), prec)?;
                    let rm = if one_sided {
                        raw0.clone()
                    } else {
                        eval(case, &checked, &perturbed(-1, &base, hexp), prec)?
                    };
                    let mut b = difference(&rp.value[0], &rm.value[0], one_sided, prec, hexp);
                    if let Some(c) = &cot {
                        b *= c;
                    }
                    Ok(b)
                };
                let b = b_at(FD_H_EXP)?;
                let (a, s) = gv(None);
                let mut rel = relative(&a, &b, &s);
                if rel >= RETRY_REL {
                    let b2 = b_at(FD_H_EXP - 1)?;
                    rel = relative_truncation(&a, &b2, &s, &b);
                }
                rep.record(rel, || {
                    format!("direction {dir}: grad·v = {}, fd = {}", show(&a), show(&b))
                });
            }
            Route::Terms {
                case: c,
                checked: ch,
                finite,
                factors,
            } => {
                let Some(factors) = factors else {
                    rep.skipped += 1;
                    continue;
                };
                let b0 = point_inputs(c, prec);
                let b_at = |hexp: i32| -> Result<Float, LossError> {
                    let rp = eval(c, ch, &perturbed(1, &b0, hexp), prec)?;
                    let rm = if one_sided {
                        eval(c, ch, &b0, prec)?
                    } else {
                        eval(c, ch, &perturbed(-1, &b0, hexp), prec)?
                    };
                    let mut b = Float::new(prec);
                    for (k, _) in finite.iter().enumerate().filter(|(_, f)| **f) {
                        if !factors[k].is_zero() {
                            b += difference(&rp.value[k], &rm.value[k], one_sided, prec, hexp)
                                * &factors[k];
                        }
                    }
                    Ok(b)
                };
                let b = b_at(FD_H_EXP)?;
                let (a, s) = gv(None);
                let mut rel = relative(&a, &b, &s);
                if rel >= RETRY_REL {
                    let b2 = b_at(FD_H_EXP - 1)?;
                    rel = relative_truncation(&a, &b2, &s, &b);
                }
                rep.record(rel, || {
                    format!(
                        "direction {dir} (terms): grad·v = {}, fd = {}",
                        show(&a),
                        show(&b)
                    )
                });
            }
            Route::Components { finite } => {
                let eval_pm = |hexp: i32| -> Result<(Raw, Raw), LossError> {
                    let rp = eval(case, &checked, &perturbed(1, &base, hexp), prec)?;
                    let rm = if one_sided {
                        raw0.clone()
                    } else {
                        eval(case, &checked, &perturbed(-1, &base, hexp), prec)?
                    };
                    Ok((rp, rm))
                };
                let (rp, rm) = eval_pm(FD_H_EXP)?;
                // the half step, evaluated only when some comparison needs it
                let mut half: Option<(Raw, Raw)> = None;
                let cot_at = |k: usize| -> Float {
                    cot_case
                        .as_ref()
                        .map(|c| c[k].clone())
                        .unwrap_or_else(|| Float::with_val(prec, 1))
                };
                if elementwise {
                    for k in 0..n_out {
                        let c = cot_at(k);
                        let touched = names.iter().any(|nm| v[nm.as_str()][k] != 0.0);
                        if !finite[k] || !c.is_finite() || !touched {
                            rep.skipped += 1;
                            continue;
                        }
                        let b =
                            difference(&rp.value[k], &rm.value[k], one_sided, prec, FD_H_EXP) * &c;
                        let (a, s) = gv(Some(k));
                        let mut rel = relative(&a, &b, &s);
                        if rel >= RETRY_REL {
                            if half.is_none() {
                                half = Some(eval_pm(FD_H_EXP - 1)?);
                            }
                            let (hp, hm) = half.as_ref().expect("just set");
                            let b2 = difference(
                                &hp.value[k],
                                &hm.value[k],
                                one_sided,
                                prec,
                                FD_H_EXP - 1,
                            ) * &c;
                            rel = relative_truncation(&a, &b2, &s, &b);
                        }
                        rep.record(rel, || {
                            format!(
                                "direction {dir}, component {k}: grad·v = {}, fd = {}",
                                show(&a),
                                show(&b)
                            )
                        });
                    }
                } else {
                    let combine = |rp: &Raw, rm: &Raw, hexp: i32| -> Option<Float> {
                        let mut b = Float::new(prec);
                        for (k, _) in finite.iter().enumerate().filter(|(_, f)| **f) {
                            let c = cot_at(k);
                            if !c.is_finite() {
                                return None;
                            }
                            b += difference(&rp.value[k], &rm.value[k], one_sided, prec, hexp) * &c;
                        }
                        Some(b)
                    };
                    let Some(b) = combine(&rp, &rm, FD_H_EXP) else {
                        rep.skipped += 1;
                        continue;
                    };
                    let (a, s) = gv(None);
                    let mut rel = relative(&a, &b, &s);
                    if rel >= RETRY_REL {
                        let (hp, hm) = eval_pm(FD_H_EXP - 1)?;
                        let b2 = combine(&hp, &hm, FD_H_EXP - 1).expect("finite cotangents");
                        rel = relative_truncation(&a, &b2, &s, &b);
                    }
                    rep.record(rel, || {
                        format!("direction {dir}: grad·v = {}, fd = {}", show(&a), show(&b))
                    });
                }
            }
        }
    }
    Ok(rep)
}

/// The weight f_k of each unreduced term l_k (the `none` output of `case`, which already
/// holds m·w·l, and 0 at masked or ignored rows) in the value of `reduction`: value = Σ_k f_k·l_k.
/// Computed here, independently of the oracles' reducers, from the policies of DESIGN.md:
///
/// - `sum`: 1 (`None` when no row is active);
/// - `mean`: 1/D, D = Σ m·w; for losses with `ignore_index` (`cross_entropy`, `nll`) with
///   class ids, D = Σ w_{y_k} over the rows whose target is not ignored (w = class weights, 1
///   when absent); for soft targets D = the number of rows;
/// - `sequence_mean` (`[B, T, C]`): 1/(D_b·n) for the tokens of sequence b, D_b that sequence's D,
///   n the number of sequences with D_b ≠ 0; 0 for the tokens of the others.
///
/// `None` for an empty mean (nothing to compare: value and gradients are 0).
fn term_factors(
    case: &Case,
    checked: &Checked,
    reduction: Reduction,
    prec: u32,
) -> Option<Vec<Float>> {
    let rows = checked.rows;
    // the denominator weight of each row (0 where masked or ignored)
    let ii = losscheck_core::catalogue::ignore_index(case);
    let ids = case.inputs.get("target").and_then(|t| t.i());
    let den_w: Vec<f64> = match (ii, ids) {
        (Some(ii), Some(ids)) => {
            let cw = case.inputs.get("class_weight").and_then(|t| t.f());
            ids.iter()
                .map(|&y| {
                    if y == ii {
                        0.0
                    } else {
                        cw.map_or(1.0, |w| w[y as usize])
                    }
                })
                .collect()
        }
        (Some(_), None) => vec![1.0; rows], // soft targets
        _ => {
            let mask = case.inputs.get("mask").and_then(|t| t.i());
            let weight = case.inputs.get("weight").and_then(|t| t.f());
            (0..rows)
                .map(|k| {
                    if mask.is_some_and(|m| m[k] == 0) {
                        0.0
                    } else {
                        weight.map_or(1.0, |w| w[k])
                    }
                })
                .collect()
        }
    };
    if reduction == Reduction::Sum {
        // nothing to compare when no row is active
        let active = (0..rows).any(|k| match (ii, ids) {
            (Some(ii), Some(ids)) => ids[k] != ii,
            (Some(_), None) => true,
            _ => den_w[k] != 0.0,
        });
        return active.then(|| vec![Float::with_val(prec, 1); rows]);
    }
    let seq_len = if reduction == Reduction::SequenceMean {
        checked.dim("T")
    } else {
        rows.max(1)
    };
    let groups = if seq_len == 0 {
        0
    } else {
        rows.div_ceil(seq_len)
    };
    let mut dens = vec![Float::new(prec); groups];
    for (k, w) in den_w.iter().enumerate() {
        dens[k / seq_len] += *w;
    }
    let counted = dens.iter().filter(|d| !d.is_zero()).count();
    if counted == 0 {
        return None;
    }
    let n = if reduction == Reduction::SequenceMean {
        counted
    } else {
        1
    };
    Some(
        (0..rows)
            .map(|k| {
                let d = &dens[k / seq_len];
                if d.is_zero() {
                    Float::new(prec)
                } else {
                    Float::with_val(prec, 1) / Float::with_val(prec, d * n as u32)
                }
            })
            .collect(),
    )
}

/// (f+ − f−)/(2h), or (f+ − f)/h one-sided, from the midpoints, h = 2^hexp.
fn difference(fp: &Ival, fm: &Ival, one_sided: bool, prec: u32, hexp: i32) -> Float {
    let mut q = Float::with_val(prec, &fp.mid() - &fm.mid());
    // 1/(2h) = 2^(−1 − hexp), 1/h = 2^(−hexp).
    q <<= if one_sided { -hexp } else { -1 - hexp };
    q
}

/// A comparison at least this bad is repeated with the half step (see
/// [`relative_truncation`]); below it the first difference quotient stands.
const RETRY_REL: f64 = 1.0 / (1u64 << 60) as f64;

/// The comparison of `a` with the half-step quotient `b_half`, on a scale that includes the
/// observed truncation error: |a − b_half| / max(|a|, |b_half|, s, 2^50·|b − b_half|). With
/// D(h) = f′ + c·h² + …, |D(h) − D(h/2)| ≈ ¾·c·h² measures the truncation of the difference
/// quotient itself, which matters where the exact derivative is 0 (or tiny) but the function
/// curves (bce at p = t: D(h) ≈ f‴·h²/6 ≠ 0 against an exact 0). A gradient off by a relative
/// δ ≫ 2^50·c·h²/|f′| is still caught.
fn relative_truncation(a: &Float, b_half: &Float, s: &Float, b: &Float) -> f64 {
    let t = Float::with_val(a.prec(), b - b_half).abs() << 50u32;
    let m = if t > *s { t } else { s.clone() };
    relative(a, b_half, &m)
}

/// |a − b| / max(|a|, |b|, s); 0 when a = b (including both 0), +inf when the scale is 0 but
/// a ≠ b, NaN when either is NaN.
fn relative(a: &Float, b: &Float, s: &Float) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let d = Float::with_val(a.prec(), a - b).abs();
    if d.is_zero() {
        return 0.0;
    }
    let mut m = a.clone().abs();
    let bb = b.clone().abs();
    if bb > m {
        m = bb;
    }
    if *s > m {
        m = s.clone();
    }
    if m.is_zero() {
        return f64::INFINITY;
    }
    Float::with_val(53, &d / &m).to_f64()
}

fn show(x: &Float) -> String {
    x.to_string_radix(10, Some(20))
}
