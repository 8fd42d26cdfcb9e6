//! Oracles of the row-wise probabilistic losses: `kl_div`, `distill_kl`, `neg_elbo`, `brier`.
//!
//! Per row i (exact point inputs; T = temperature, β = beta):
//!
//! | loss | l_i | gradient |
//! |---|---|---|
//! | `kl_div` | Σ_c p_c·(ln p_c − lq_c), p = target (or e^target with `log_target`); a term with p_c = 0 is absent | ∂/∂lq_c = −p_c |
//! | `distill_kl` forward | T²·Σ_c P_c·(ln P_c − ln Q_c), P = softmax(teacher/T), Q = softmax(student/T) | ∂/∂s_j = T·(Q_j − P_j) |
//! | `distill_kl` reverse | T²·Σ_c Q_c·(ln Q_c − ln P_c) | ∂/∂s_j = T·Q_j·(Σ_c Q_c·D_c − D_j) |
//! | `neg_elbo` | Σ_d [x·softplus(−z) + (1−x)·softplus(z)] + β·½·Σ_k (μ² + expm1(lv) − lv) | ∂/∂z = σ(z) − x, ∂/∂μ = β·μ, ∂/∂lv = ½β·expm1(lv) |
//! | `brier` | Σ_c (p_c − [c = y])² | ∂/∂p_c = 2·(p_c − [c = y]) |
//!
//! **Absent terms.** A coefficient that is exactly 0 makes its term absent (it contributes
//! exactly 0 whatever sits beside it): `kl_div` at p = 0 — also where lq = −inf, +inf or NaN
//! (0·log 0 = 0; PyTorch and optax return NaN for −inf, FAILURES.md) and with `log_target` at
//! target = −inf; the x / 1 − x terms of `neg_elbo` (so x = 1, z = +inf gives 0); β = 0 removes
//! `neg_elbo`'s KL term together with its μ and logvar gradients (even at lv = +inf).
//!
//! **distill_kl without cancellation.** With r the first index of the largest teacher logit
//! among the classes where both logits are finite, D_c = ((t_c − t_r) − (s_c − s_r))/T is
//! formed exactly (one division last), and ln P_c − ln Q_c = D_c − L with
//! L = (g_b + λ_b) − (g_a + λ_a), g_a = (t_{ka} − t_r)/T ≥ 0 and λ_a = log1p(S_a) for the
//! teacher shifted at its own max k_a (likewise for the student). Then
//! KL(P‖Q) = Σ_c P_c·D_c + L and KL(Q‖P) = −Σ_c Q_c·D_c − L: student = teacher (+ a constant)
//! makes every D_c the point 0 and the value and gradient exactly 0, where the plain formula
//! would straddle 0 at every precision. κ counts the pieces T²·P_c·D_c, ±T²·g and ±T²·λ (the
//! defining sum written out; docs/policies/distill-kl.md); the forward gradient's
//! κ_j = (Q_j + P_j)/|Q_j − P_j|, the reverse's (Σ_c |Q_c·D_c| + |D_j|)/|Σ_c Q_c·D_c − D_j|.
//!
//! **Extended reals** (`distill_kl`). A NaN logit makes the row NaN. Per side, one +inf logit
//! makes its distribution one-hot, two +inf (or all −inf) make the row NaN; a −inf logit has
//! probability 0. The forward value is +inf when some class has P_c > 0 = Q_c (else finite);
//! the forward gradient T·(Q − P) is the limit, finite. The reverse value is +inf when some
//! class has Q_c > 0 = P_c; with Z those classes, the gradient's limit is: 0 where Q_j = 0;
//! for |Z| ≥ 2 no limit (NaN, the rates compete); for Z = {c}: −inf at j ≠ c with Q_j > 0, and
//! at c +inf (0 when c is the student's only class with Q > 0).
//!
//! `neg_elbo`: lv = +inf gives +inf (and ∂/∂lv = +inf), lv = −inf gives +inf (−lv) with
//! ∂/∂lv = −½β; expm1(lv) − lv is formed in MPFR (precision doubling resolves its
//! cancellation at tiny lv). `brier`: every square is exact. `kl_div` NaN data (in a present
//! term) propagates to the value and that gradient component.
//!
//! Reductions: [`Reducer`] over rows (per-row weight, mask, cotangent; `mean` is Σ m·w·l / Σ m·w
//! — `kl_div`'s `batchmean`); each row's additive terms enter it separately so κ counts them.

use crate::ival::Ival;
use crate::ranking::{
    exact_mul, input, int_input, lift, logistic, param, record_terms, signed_sum, wants,
};
use crate::reduce::Reducer;
use crate::round::{round_enclosure, Decided};
use crate::MAX_PREC;
use crate::{Inputs, Raw};
use losscheck_core::{Case, Checked, LossError, ParamValue, Reduction};
use std::collections::BTreeMap;

/// One row's local result: additive terms of l_i, and ∂l_i/∂x for every gradient input (in
/// the order of `run_rows`' names; empty where not wanted) with their κ (empty: all 1).
pub(super) struct RowLocal {
    pub terms: Vec<Ival>,
    pub d: Vec<Vec<Ival>>,
    pub kappa: Vec<Vec<f64>>,
}

/// The common loop of a row-wise loss: `row(i, want)` for every active row, then the reduction.
/// `names` are the gradient inputs with their widths (elements per row).
fn run_rows(
    case: &Case,
    inputs: &Inputs,
    rows: usize,
    prec: u32,
    names: &[(&str, usize)],
    mut row: impl FnMut(usize, &[bool], u32) -> RowLocal,
) -> Result<Raw, LossError> {
    let want: Vec<bool> = names.iter().map(|(n, _)| wants(case, n)).collect();
    let mut red = Reducer::new(case, inputs, rows, prec)?;
    let none = case.reduction() == Reduction::None;
    let mut g: Vec<Vec<Ival>> = names
        .iter()
        .zip(&want)
        .map(|(&(_, w), &on)| if on { red.zeros(rows * w) } else { Vec::new() })
        .collect();
    let mut gk: Vec<Vec<f64>> = names
        .iter()
        .zip(&want)
        .map(|(&(_, w), &on)| if on { vec![1.0; rows * w] } else { Vec::new() })
        .collect();
    let mut kappa_none = if none { vec![1.0; rows] } else { Vec::new() };
    // exact inputs only (a finite-difference check's perturbed reals never round to one value)
    let exact = inputs
        .values()
        .all(|v| v.iter().all(|x| x.is_point() || x.is_nan()));
    for i in 0..rows {
        if !red.is_active(i) {
            continue;
        }
        // adaptive precision per row: a row whose outputs do not round to one dtype value at
        // `prec` is recomputed alone at doubled precision (up to the cap), so one hard row does
        // not send a whole long batch to 2048 bits
        let mut p = prec;
        let (RowLocal { terms, d, kappa }, scaled) = loop {
            let local = row(i, &want, p);
            let scaled: Vec<Vec<Ival>> = local
                .d
                .iter()
                .enumerate()
                .map(|(k, dk)| {
                    if want[k] {
                        dk.iter().map(|x| red.grad(i, x.clone())).collect()
                    } else {
                        Vec::new()
                    }
                })
                .collect();
            let decided = |iv: &Ival, dt| matches!(round_enclosure(iv, dt), Decided::One(_));
            let mut ok = scaled.iter().flatten().all(|g| decided(g, case.dtype));
            if ok && none {
                let mut s = Ival::zero(p);
                for t in &local.terms {
                    s.add_assign(t);
                }
                ok = decided(&s, case.out_dtype);
            }
            if ok || !exact || p >= MAX_PREC {
                break (local, scaled);
            }
            p *= 2;
        };
        if let Some(k) = record_terms(&mut red, i, terms, none, prec) {
            kappa_none[i] = k;
        }
        let _ = d;
        for (k, dk) in scaled.into_iter().enumerate() {
            if !want[k] {
                continue;
            }
            let w = names[k].1;
            for (j, x) in dk.into_iter().enumerate() {
                g[k][i * w + j] = x;
            }
            if let Some(kk) = kappa.get(k) {
                for (j, &x) in kk.iter().enumerate() {
                    gk[k][i * w + j] = x;
                }
            }
        }
    }
    let (value, mut kappa) = red.finish();
    if none {
        kappa = kappa_none;
    }
    let mut grads = BTreeMap::new();
    let mut grad_kappa = BTreeMap::new();
    for (k, (gv, kv)) in g.into_iter().zip(gk).enumerate() {
        if want[k] {
            grads.insert(names[k].0.to_string(), gv);
            grad_kappa.insert(names[k].0.to_string(), kv);
        }
    }
    Ok(Raw {
        value,
        kappa,
        grads,
        grad_kappa,
        kinks: Vec::new(),
    })
}

/// A row's enclosures at precision at least `prec`.
fn lift_row(x: &[Ival], prec: u32) -> Vec<Ival> {
    x.iter().map(|v| lift(v, prec)).collect()
}

fn flag(case: &Case, name: &str) -> bool {
    matches!(case.params.get(name), Some(ParamValue::Bool(true)))
}

/// κ = (|a| + |b|)/|a − b| from f64 midpoints (1 where nothing cancels or undefined).
fn kappa_diff(mags: f64, diff: &Ival) -> f64 {
    let d = diff.mid_f64().abs();
    if d > 0.0 && d.is_finite() && mags.is_finite() {
        (mags / d).max(1.0)
    } else {
        1.0
    }
}

// ------------------------------------------------------------------------------- kl_div

pub(super) fn kl_div(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let c = checked.dim("C");
    let lq = input(case, inputs, "input", n * c)?;
    let tg = input(case, inputs, "target", n * c)?;
    let log_target = flag(case, "log_target");
    run_rows(case, inputs, n, prec, &[("input", c)], |i, want, prec| {
        let lq = lift_row(&lq[i * c..(i + 1) * c], prec);
        let tg = lift_row(&tg[i * c..(i + 1) * c], prec);
        let mut terms = Vec::with_capacity(c);
        let mut d = if want[0] {
            vec![Ival::zero(prec); c]
        } else {
            Vec::new()
        };
        for j in 0..c {
            let (t, q) = (&tg[j], &lq[j]);
            let absent = if log_target {
                t.is_point() && t.lo.is_infinite() && t.lo.is_sign_negative()
            } else {
                t.is_zero()
            };
            if absent {
                continue; // 0·(log 0 − anything) = 0
            }
            if t.is_nan() || q.is_nan() {
                terms.push(Ival::nan(prec));
                if want[0] {
                    d[j] = Ival::nan(prec);
                }
                continue;
            }
            let (p, diff) = if log_target {
                // lp − lq exactly
                (t.exp(), signed_sum(prec, &[(t, false), (q, true)]))
            } else {
                (t.clone(), t.ln().sub(q))
            };
            terms.push(p.mul(&diff));
            if want[0] {
                d[j] = p.neg();
            }
        }
        RowLocal {
            terms,
            d: vec![d],
            kappa: Vec::new(),
        }
    })
}

// ------------------------------------------------------------------------------- brier

pub(super) fn brier(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let c = checked.dim("C");
    let p = input(case, inputs, "prob", n * c)?;
    let y = int_input(case, "target", n)?;
    run_rows(case, inputs, n, prec, &[("prob", c)], |i, want, prec| {
        let one = Ival::one(prec);
        let p = lift_row(&p[i * c..(i + 1) * c], prec);
        let mut terms = Vec::with_capacity(c);
        let mut d = Vec::new();
        for j in 0..c {
            let pj = &p[j];
            let r = if y[i] == j as i64 {
                signed_sum(prec, &[(pj, false), (&one, true)])
            } else {
                pj.clone()
            };
            terms.push(exact_mul(prec, &r, &r));
            if want[0] {
                d.push(r.mul_2si(1));
            }
        }
        RowLocal {
            terms,
            d: vec![d],
            kappa: Vec::new(),
        }
    })
}

// ------------------------------------------------------------------------------- neg_elbo

pub(super) fn neg_elbo(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let (dd, kk) = (checked.dim("D"), checked.dim("K"));
    let x = input(case, inputs, "x", n * dd)?;
    let z = input(case, inputs, "recon_logits", n * dd)?;
    let mu = input(case, inputs, "mu", n * kk)?;
    let lv = input(case, inputs, "logvar", n * kk)?;
    let beta_f = param(case, "beta")?;
    let names = [("recon_logits", dd), ("mu", kk), ("logvar", kk)];
    run_rows(case, inputs, n, prec, &names, |i, want, prec| {
        let beta = Ival::point(prec, beta_f);
        let half_beta = beta.mul_2si(-1);
        let one = Ival::one(prec);
        let (x, z) = (
            lift_row(&x[i * dd..(i + 1) * dd], prec),
            lift_row(&z[i * dd..(i + 1) * dd], prec),
        );
        let (mu, lv) = (
            lift_row(&mu[i * kk..(i + 1) * kk], prec),
            lift_row(&lv[i * kk..(i + 1) * kk], prec),
        );
        let mut terms = Vec::with_capacity(2 * dd + 2 * kk);
        let mut dz = Vec::new();
        for j in 0..dd {
            let (xj, zj) = (&x[j], &z[j]);
            if xj.is_nan() || zj.is_nan() {
                terms.push(Ival::nan(prec));
                if want[0] {
                    dz.push(Ival::nan(prec));
                }
                continue;
            }
            let b = signed_sum(prec, &[(&one, false), (xj, true)]); // 1 − x exactly
            let lg = logistic(zj, prec);
            if !xj.is_zero() {
                terms.push(xj.mul(&lg.softplus_neg));
            }
            if !b.is_zero() {
                terms.push(b.mul(&lg.softplus));
            }
            if want[0] {
                // σ(z) − x (= −x·σ(−z) + (1 − x)·σ(z))
                dz.push(lg.sigmoid.sub(xj));
            }
        }
        let (mut dm, mut dl) = (Vec::new(), Vec::new());
        for j in 0..kk {
            let (m, v) = (&mu[j], &lv[j]);
            if beta.is_zero() {
                if want[1] {
                    dm.push(Ival::zero(prec));
                }
                if want[2] {
                    dl.push(Ival::zero(prec));
                }
                continue;
            }
            let m2 = exact_mul(prec, m, m);
            terms.push(half_beta.mul(&m2));
            let pos_inf = v.is_point() && v.lo.is_infinite() && v.lo.is_sign_positive();
            let em1 = v.expm1();
            let kl = if v.is_nan() {
                Ival::nan(prec)
            } else if pos_inf {
                Ival::point(prec, f64::INFINITY)
            } else {
                em1.sub(v)
            };
            terms.push(half_beta.mul(&kl));
            if want[1] {
                dm.push(beta.mul(m));
            }
            if want[2] {
                dl.push(half_beta.mul(&em1));
            }
        }
        RowLocal {
            terms,
            d: vec![dz, dm, dl],
            kappa: Vec::new(),
        }
    })
}

// ------------------------------------------------------------------------------- distill_kl

/// One side of a distill_kl row (logits already known to hold no NaN).
enum Side {
    /// No limit (two +inf logits, or every logit −inf).
    Nan,
    /// Exactly one +inf logit: the distribution is one-hot there.
    OneHot(usize),
    /// A finite largest logit at `k` (first index); −inf entries have probability 0.
    Finite(usize),
}

fn is_inf(x: &Ival, pos: bool) -> bool {
    x.is_point() && x.lo.is_infinite() && x.lo.is_sign_positive() == pos
}

fn side(z: &[Ival]) -> Side {
    let pos: Vec<usize> = (0..z.len()).filter(|&j| is_inf(&z[j], true)).collect();
    match pos.len() {
        0 => {}
        1 => return Side::OneHot(pos[0]),
        _ => return Side::Nan,
    }
    let mut k: Option<usize> = None;
    for (j, x) in z.iter().enumerate() {
        if is_inf(x, false) {
            continue;
        }
        if k.is_none_or(|kk| x.lo > z[kk].lo) {
            k = Some(j);
        }
    }
    k.map_or(Side::Nan, Side::Finite)
}

/// Probabilities and log-probabilities of a side (`None` for a zero probability).
fn softmax_side(z: &[Ival], s: &Side, tau: &Ival, prec: u32) -> (Vec<Ival>, Vec<Option<Ival>>) {
    let c = z.len();
    let mut p = vec![Ival::zero(prec); c];
    let mut lp: Vec<Option<Ival>> = vec![None; c];
    match *s {
        Side::Nan => {}
        Side::OneHot(k) => {
            p[k] = Ival::one(prec);
            lp[k] = Some(Ival::zero(prec));
        }
        Side::Finite(k) => {
            let mut x: Vec<Option<Ival>> = vec![None; c];
            let mut sum = Ival::zero(prec);
            for j in 0..c {
                if is_inf(&z[j], false) {
                    continue;
                }
                let xj = signed_sum(prec, &[(&z[j], false), (&z[k], true)]).div(tau);
                if j != k {
                    sum.add_assign(&xj.exp());
                }
                x[j] = Some(xj);
            }
            let lam = sum.log1p();
            let den = Ival::one(prec).add(&sum);
            for j in 0..c {
                if let Some(xj) = &x[j] {
                    p[j] = xj.exp().div(&den);
                    lp[j] = Some(xj.sub(&lam));
                }
            }
        }
    }
    (p, lp)
}

pub(super) fn distill_kl(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let n = checked.rows;
    let c = checked.dim("C");
    let st = input(case, inputs, "student", n * c)?;
    let te = input(case, inputs, "teacher", n * c)?;
    let tau_f = param(case, "temperature")?;
    let reverse =
        matches!(case.params.get("direction"), Some(ParamValue::Str(s)) if s == "reverse");
    run_rows(case, inputs, n, prec, &[("student", c)], |i, want, prec| {
        let tau = Ival::point(prec, tau_f);
        let tau2 = exact_mul(prec, &tau, &tau);
        let s = lift_row(&st[i * c..(i + 1) * c], prec);
        let t = lift_row(&te[i * c..(i + 1) * c], prec);
        distill_row(&t, &s, &tau, &tau2, reverse, want[0], prec)
    })
}

fn nan_row(c: usize, want: bool, prec: u32) -> RowLocal {
    RowLocal {
        terms: vec![Ival::nan(prec)],
        d: vec![if want {
            vec![Ival::nan(prec); c]
        } else {
            Vec::new()
        }],
        kappa: Vec::new(),
    }
}

/// One row. The reverse value is the forward one with the roles swapped (so its reference class
/// is the student's largest logit); the reverse gradient's D is referenced there too.
fn distill_row(
    t: &[Ival],
    s: &[Ival],
    tau: &Ival,
    tau2: &Ival,
    reverse: bool,
    want: bool,
    prec: u32,
) -> RowLocal {
    if !reverse {
        return distill_dir(t, s, tau, tau2, false, want, prec);
    }
    let terms = distill_dir(s, t, tau, tau2, false, false, prec).terms;
    RowLocal {
        terms,
        ..distill_dir(t, s, tau, tau2, true, want, prec)
    }
}

fn distill_dir(
    t: &[Ival],
    s: &[Ival],
    tau: &Ival,
    tau2: &Ival,
    reverse: bool,
    want: bool,
    prec: u32,
) -> RowLocal {
    let c = t.len();
    if t.iter().chain(s).any(Ival::is_nan) {
        return nan_row(c, want, prec);
    }
    let (sa, sb) = (side(t), side(s));
    if matches!(sa, Side::Nan) || matches!(sb, Side::Nan) {
        return nan_row(c, want, prec);
    }
    let (p, lp) = softmax_side(t, &sa, tau, prec);
    let (q, lq) = softmax_side(s, &sb, tau, prec);
    let inf = Ival::point(prec, f64::INFINITY);
    let zero = Ival::zero(prec);
    // the value is +inf when the first distribution has mass where the second has none
    let (first, second) = if reverse { (&lq, &lp) } else { (&lp, &lq) };
    let infinite = (0..c).any(|j| first[j].is_some() && second[j].is_none());
    // the reference class r: the largest teacher logit among classes where both are finite
    // (the student's for the reverse gradient)
    let both_finite = |j: usize| t[j].is_finite() && s[j].is_finite();
    let lead = if reverse { s } else { t };
    let mut r: Option<usize> = None;
    for j in (0..c).filter(|&j| both_finite(j)) {
        if r.is_none_or(|rr| lead[j].lo > lead[rr].lo) {
            r = Some(j);
        }
    }
    let general = matches!((&sa, &sb), (Side::Finite(_), Side::Finite(_))) && r.is_some();
    let mut terms = Vec::new();
    let mut d = Vec::new();
    let mut kap = Vec::new();
    // D_c (general rows): ((t_c − t_r) − (s_c − s_r))/T for classes where both are finite
    let dvec: Vec<Option<Ival>> = match r {
        Some(r) if general => (0..c)
            .map(|j| {
                both_finite(j).then(|| {
                    signed_sum(
                        prec,
                        &[(&t[j], false), (&t[r], true), (&s[j], true), (&s[r], false)],
                    )
                    .div(tau)
                })
            })
            .collect(),
        _ => vec![None; c],
    };
    // student = teacher + a constant (every D_c exactly 0, the same support): P = Q exactly
    let same = general
        && (0..c).all(|j| lp[j].is_some() == lq[j].is_some())
        && dvec.iter().all(|x| x.as_ref().is_none_or(Ival::is_zero));
    if reverse {
        // (the value comes from the swapped forward computation)
    } else if infinite {
        terms.push(inf.clone());
    } else if same {
        terms.push(zero.clone());
    } else if general {
        let (Side::Finite(ka), Side::Finite(kb), Some(r)) = (&sa, &sb, r) else {
            unreachable!()
        };
        // L = (g_b + λ_b) − (g_a + λ_a), pieces kept apart
        let lam = |z: &[Ival], k: usize| {
            let mut sum = Ival::zero(prec);
            for j in (0..z.len()).filter(|&j| j != k && !is_inf(&z[j], false)) {
                sum.add_assign(
                    &signed_sum(prec, &[(&z[j], false), (&z[k], true)])
                        .div(tau)
                        .exp(),
                );
            }
            sum.log1p()
        };
        let ga = signed_sum(prec, &[(&t[*ka], false), (&t[r], true)]).div(tau);
        let gb = signed_sum(prec, &[(&s[*kb], false), (&s[r], true)]).div(tau);
        if !(ga.hi > 1) && !(gb.hi > 1) {
            close_terms(t, s, r, &dvec, tau, tau2, prec, &mut terms);
        } else {
            let (la, lb) = (lam(t, *ka), lam(s, *kb));
            let w = if reverse { &q } else { &p };
            for j in 0..c {
                if let Some(dj) = &dvec[j] {
                    if !dj.is_zero() && !w[j].is_zero() {
                        let x = w[j].mul(dj);
                        terms.push(if reverse { x.neg() } else { x }.mul(tau2));
                    }
                }
            }
            for (x, neg) in [(gb, reverse), (lb, reverse), (ga, !reverse), (la, !reverse)] {
                if !x.is_zero() {
                    terms.push(if neg { x.neg() } else { x }.mul(tau2));
                }
            }
        }
    } else {
        // special rows (a one-hot side): Σ over the first distribution's support
        let w = if reverse { &q } else { &p };
        for j in 0..c {
            if let (Some(a), Some(b)) = (&first[j], &second[j]) {
                let diff = a.sub(b);
                if !diff.is_zero() {
                    terms.push(w[j].mul(&diff).mul(tau2));
                }
            }
        }
    }
    if !want {
        return RowLocal {
            terms,
            d: vec![d],
            kappa: vec![kap],
        };
    }
    kap = vec![1.0; c];
    if !reverse {
        for j in 0..c {
            let g = if same {
                zero.clone()
            } else if !matches!(sa, Side::Finite(_)) && lp[j].is_some() {
                // P one-hot at j: Q_j − 1 = −Σ_{c≠j} Q_c
                let mut rest = Ival::zero(prec);
                for (k, qk) in q.iter().enumerate() {
                    if k != j {
                        rest.add_assign(qk);
                    }
                }
                rest.neg()
            } else if !matches!(sb, Side::Finite(_)) && lq[j].is_some() {
                let mut rest = Ival::zero(prec);
                for (k, pk) in p.iter().enumerate() {
                    if k != j {
                        rest.add_assign(pk);
                    }
                }
                rest
            } else {
                let g = q[j].sub(&p[j]);
                kap[j] = kappa_diff(q[j].mid_f64() + p[j].mid_f64(), &g);
                g
            };
            d.push(g.mul(tau));
        }
    } else if infinite {
        let zs: Vec<usize> = (0..c)
            .filter(|&j| lq[j].is_some() && lp[j].is_none())
            .collect();
        let n_q = lq.iter().filter(|x| x.is_some()).count();
        for j in 0..c {
            let g = if lq[j].is_none() {
                zero.clone()
            } else if zs.len() >= 2 {
                Ival::nan(prec)
            } else if zs[0] == j {
                if n_q >= 2 {
                    inf.clone()
                } else {
                    zero.clone()
                }
            } else {
                Ival::point(prec, f64::NEG_INFINITY)
            };
            d.push(g);
        }
    } else if same {
        d = vec![zero.clone(); c];
    } else if general {
        // T·Q_j·(Σ_c Q_c·D_c − D_j)
        let mut sqd = Ival::zero(prec);
        let mut mags = 0.0;
        for j in 0..c {
            if let Some(dj) = &dvec[j] {
                if !q[j].is_zero() && !dj.is_zero() {
                    let x = q[j].mul(dj);
                    mags += x.mid_f64().abs();
                    sqd.add_assign(&x);
                }
            }
        }
        for j in 0..c {
            let g = match &dvec[j] {
                Some(dj) if !q[j].is_zero() => {
                    let diff = if dj.is_zero() {
                        sqd.clone()
                    } else {
                        sqd.sub(dj)
                    };
                    kap[j] = kappa_diff(mags + dj.mid_f64().abs(), &diff);
                    if diff.is_zero() {
                        zero.clone()
                    } else {
                        q[j].mul(&diff).mul(tau)
                    }
                }
                _ => zero.clone(),
            };
            d.push(g);
        }
    } else {
        // finite reverse value with a one-hot side: Q is one-hot where P has mass: 0
        d = vec![zero.clone(); c];
    }
    RowLocal {
        terms,
        d: vec![d],
        kappa: vec![kap],
    }
}

/// The value's pieces of a general row whose two sides are within T of their logits at r
/// ((t_ka − t_r)/T ≤ 1 and (s_kb − s_r)/T ≤ 1; both shifted at r): with v_c = −D_c and
/// m = Σ_c (e^{y_c} − e^{x_c})/(1 + S_a) (so 1 + m = (1 + S_b)/(1 + S_a)),
/// KL(P‖Q) = Σ_c P_c·φ(v_c) − ψ(m) + m₀ with φ(v) = expm1(v) − v and ψ(m) = m − log1p(m)
/// (both ≥ 0 and of second order), m₀ the student mass where the teacher has none: no
/// first-order cancellation (student ≈ teacher, huge T). The reverse direction is this with
/// the roles swapped.
#[allow(clippy::too_many_arguments)]
fn close_terms(
    t: &[Ival],
    s: &[Ival],
    r: usize,
    dvec: &[Option<Ival>],
    tau: &Ival,
    tau2: &Ival,
    prec: u32,
    terms: &mut Vec<Ival>,
) {
    let c = t.len();
    let one = Ival::one(prec);
    let e_at = |z: &[Ival], j: usize| -> Option<Ival> {
        (!is_inf(&z[j], false)).then(|| {
            signed_sum(prec, &[(&z[j], false), (&z[r], true)])
                .div(tau)
                .exp()
        })
    };
    let ex: Vec<Option<Ival>> = (0..c).map(|j| e_at(t, j)).collect();
    let ey: Vec<Option<Ival>> = (0..c).map(|j| e_at(s, j)).collect();
    let mut sa = Ival::zero(prec);
    for (j, e) in ex.iter().enumerate() {
        if let (Some(e), true) = (e, j != r) {
            sa.add_assign(e);
        }
    }
    let one_a = one.add(&sa);
    let mut m = Ival::zero(prec);
    let mut m01 = Ival::zero(prec);
    let mut second = Vec::new();
    for j in 0..c {
        match (&ex[j], &ey[j], &dvec[j]) {
            (Some(exj), Some(eyj), Some(d)) => {
                if d.is_zero() {
                    continue;
                }
                let v = d.neg();
                let small = !(d.lo < -1 || d.hi > 1);
                let pj = exj.div(&one_a);
                let (mj, wj) = if small {
                    let u = v.expm1();
                    let w = u.sub(&v);
                    (pj.mul(&u), pj.mul(&w))
                } else {
                    let mj = eyj.sub(exj).div(&one_a);
                    let w = mj.add(&pj.mul(d));
                    (mj, w)
                };
                m.add_assign(&mj);
                second.push(wj);
            }
            (None, Some(eyj), _) => {
                let x = eyj.div(&one_a);
                m.add_assign(&x);
                m01.add_assign(&x);
            }
            (Some(exj), None, _) => {
                m = m.sub(&exj.div(&one_a));
            }
            _ => {}
        }
    }
    for w in second {
        terms.push(w.mul(tau2));
    }
    if !m01.is_zero() {
        terms.push(m01.mul(tau2));
    }
    if !m.is_zero() {
        let psi = m.sub(&m.log1p());
        terms.push(psi.neg().mul(tau2));
    }
}
