//! Row-wise probabilistic losses: `kl_div`, `distill_kl`, `neg_elbo`, `brier`.
//!
//! Inputs are row-major `[N, C]` (`neg_elbo`: x and recon_logits `[N, D]`, mu and logvar
//! `[N, K]`) flat slices with their dims given explicitly, so N = 0, C = 0 (with N = 0), D = 0
//! and K = 0 are all expressible and none panics. Per-row weight, mask and cotangent `[N]` and
//! the reductions are [`Plan`]'s (`mean` = Σ m·w·l / Σ m·w; for `kl_div` that is PyTorch's
//! `batchmean`); the empty mean is 0. The typed API is generic over the input type `T` and the
//! value type `O` (`T`, or f32 for 16-bit inputs); gradients are in `T`.
//!
//! # Semantics (DESIGN.md; the oracle's module docs give the formulas)
//!
//! - `kl_div`: l = Σ_c p_c·(ln p_c − lq_c), ∂/∂lq_c = −p_c; p = target, or e^target with
//!   `log_target`. A term with p_c = 0 is absent — 0 also where lq = −inf (PyTorch and optax
//!   return NaN there, FAILURES.md), +inf or NaN (docs/policies/kl-div.md).
//! - `distill_kl`: T²·KL(P‖Q) (forward) or T²·KL(Q‖P) (reverse), P = softmax(teacher/T),
//!   Q = softmax(student/T); ∂/∂student = T·(Q − P) (forward), T·Q_j·(Σ_c Q_c·D_c − D_j)
//!   (reverse). Extended reals as the oracle's (docs/policies/distill-kl.md).
//! - `neg_elbo`: Σ_d bce_logits(z_d, x_d) + β·½·Σ_k (μ_k² + expm1(lv_k) − lv_k); β = 0 removes
//!   the KL term (and its gradients) whatever μ and lv hold.
//! - `brier`: Σ_c (p_c − [c = y])², ∂/∂p_c = 2·(p_c − [c = y]).
//!
//! # Numerics
//!
//! Everything in f64 (pairs where a sum cancels), each output rounded once (to odd in f64,
//! then to the dtype); `libm`, never the platform libm.
//!
//! - `kl_div`: ln p as a double-double (one Newton step, [`ln_dd`]); with `log_target`,
//!   lp − lq exact as a pair and e^lp in double-double ([`exp_dd`]): every term is accurate to
//!   about 2⁻¹⁰⁰ relatively, and the row sum is compensated.
//! - `distill_kl` is fused like cross-entropy: per row one pass for the maxima, one for the
//!   exponentials (of exact differences divided once by T, carried as pairs so that
//!   e^{x_hi + x_lo} = e^{x_hi}·(1 + x_lo) keeps the |x|·2⁻⁵³ that rounding x would cost), no
//!   scratch beyond three `[C]` f64 rows. D_c = ((t_c − t_r) − (s_c − s_r))/T is exact (a pair),
//!   and when the student's maximum is within T of its logit at the teacher's maximum r — the
//!   regime where student ≈ teacher and everything cancels — the difference of the two
//!   normalisers is formed as ΔS = Σ_c e^{x_c}·expm1(−D_c) and the gradient numerators as
//!   e^{x_j}·(expm1(−D_j)·(1 + S_a) − ΔS): Q − P keeps its relative accuracy however close the
//!   two distributions are, and student = teacher (+ a constant) gives exactly 0.
//! - `neg_elbo`: bce_logits through [`softplus`] and [`logistic_grad`]; expm1(lv) − lv by its
//!   Taylor series for |lv| ≤ ¼ (lv = 1e−20 gives lv²/2, not 0), else libm's expm1 minus lv
//!   (at most 3 bits of cancellation there); ½β·expm1(lv) for the gradient. e^lv is never
//!   formed in a 16-bit type.
//! - `brier`: every square is exact in f64.
//!
//! Invalid input (an `Err` naming the input, the index and the value; never a panic): lengths
//! that do not match the dims, C = 0 with N > 0, a `kl_div` target outside [0, 1] (> 0 with
//! `log_target`), a probability or x outside [0, 1], a class id outside [0, C), temperature
//! ≤ 0 or not finite, beta < 0 or not finite, and the weight / mask / cotangent checks of
//! [`Plan::new`]. Row checks skip masked and zero-weight rows; NaN data propagates.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::probabilistic::rowwise::{kl_div, RowExtras};
//! use losscheck::Reduction;
//!
//! // log q = [ln ½, −inf], p = [1, 0]: the second term is absent (PyTorch: NaN)
//! let lq = [-std::f32::consts::LN_2, f32::NEG_INFINITY];
//! let p = [1.0f32, 0.0];
//! let ex = RowExtras::new().reduction(Reduction::Sum);
//! let out = kl_div::<f32, f32>(&lq, &p, 1, 2, false, &ex, true).unwrap();
//! assert_eq!(out.value, vec![std::f32::consts::LN_2]);
//! assert_eq!(out.grads[0], Some(vec![-1.0, 0.0]));
//! ```

use super::super::classification::{int_input, req_param};
use super::super::math::{
    exp_dd, exp_nonpos, logistic_grad, pair_add, pair_div, pair_scale, round_odd, softplus,
    two_prod, two_sum,
};
use super::super::ranking::{extras, reduced_value, req_input, sum_exact, Pair};
use super::super::reduce::{grad_term, CompensatedSum, Plan};
use super::ln_dd;
use losscheck_core::{Case, Checked, Element, LossError, ParamValue, Reduction, Response, Tensor};
use std::collections::BTreeMap;

/// The row-wise probabilistic losses of this module.
pub const LOSSES: &[&str] = &["kl_div", "distill_kl", "neg_elbo", "brier"];

/// The reduction's inputs of a row-wise loss: per-row weight and mask, the cotangent, the
/// reduction. [`RowExtras::new`]: none of them, reduction `mean`.
#[derive(Clone, Copy, Debug)]
pub struct RowExtras<'a, T: Element> {
    pub weight: Option<&'a [T]>,
    pub mask: Option<&'a [i64]>,
    pub cotangent: Option<&'a [T]>,
    pub reduction: Reduction,
}

impl<'a, T: Element> RowExtras<'a, T> {
    pub fn new() -> Self {
        RowExtras {
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
        }
    }
    super::super::ranking::reduction_builders!();
}

impl<T: Element> Default for RowExtras<'_, T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Value and gradients of a row-wise probabilistic loss.
#[derive(Clone, Debug, PartialEq)]
pub struct RowOutput<T, O> {
    /// One element when reduced, one per row for `none` (0 at skipped rows).
    pub value: Vec<O>,
    /// One entry per differentiable input (in the catalogue's order), `Some` when computed.
    pub grads: Vec<Option<Vec<T>>>,
}

// ---------------------------------------------------------------------------------------------
// The row driver.

/// Drive a row kernel through the plan: `row(i, scratch)` returns l_i as a pair and writes the
/// unscaled derivatives ∂l_i/∂x_k (k over `widths`) into `scratch[k]`; it is never called for
/// a skipped row. Gradients are scaled termwise (c·g·cot/den with [`grad_term`]'s exact-zero
/// rule); the value stays a pair until its one rounding.
fn run_rows<T: Element, O: Element>(
    plan: &Plan<'_, T>,
    cotangent: Option<&[T]>,
    widths: &[usize],
    want: &[bool],
    mut row: impl FnMut(usize, &mut [Vec<f64>]) -> Pair,
) -> RowOutput<T, O> {
    let n = plan.len();
    let none = plan.reduction() == Reduction::None;
    let den = plan.denom();
    let zt = T::from_f64(0.0);
    let mut grads: Vec<Vec<T>> = widths
        .iter()
        .zip(want)
        .map(|(&w, &on)| {
            if on {
                Vec::with_capacity(n * w)
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut value: Vec<O> = Vec::with_capacity(plan.value_len());
    let finish = |grads: Vec<Vec<T>>, value| RowOutput {
        value,
        grads: grads
            .into_iter()
            .zip(want)
            .map(|(g, &on)| on.then_some(g))
            .collect(),
    };
    if plan.is_empty_mean() {
        value.resize(plan.value_len(), O::from_f64(0.0));
        for (g, (&w, &on)) in grads.iter_mut().zip(widths.iter().zip(want)) {
            if on {
                g.resize(n * w, zt);
            }
        }
        return finish(grads, value);
    }
    let mut scratch: Vec<Vec<f64>> = widths.iter().map(|&w| vec![0.0; w]).collect();
    let mut acc = CompensatedSum::new();
    for i in 0..n {
        let c = plan.coef(i);
        if c == 0.0 {
            if none {
                value.push(O::from_f64(0.0));
            }
            for (g, (&w, &on)) in grads.iter_mut().zip(widths.iter().zip(want)) {
                if on {
                    g.resize(g.len() + w, zt);
                }
            }
            continue;
        }
        let l = row(i, &mut scratch);
        let t = if c == 1.0 { l } else { pair_scale(c, l) };
        let t = if t.0.is_finite() { t } else { (t.0, 0.0) };
        if none {
            value.push(O::from_f64(round_odd(t.0, t.1)));
        } else {
            acc.add_lane(i, t.0);
            acc.add_lane(i, t.1);
        }
        let cot = match cotangent {
            None => 1.0,
            Some(v) if none => v[i].to_f64(),
            Some(v) => v[0].to_f64(),
        };
        for (k, g) in grads.iter_mut().enumerate() {
            if want[k] {
                g.extend(
                    scratch[k]
                        .iter()
                        .map(|&d| T::from_f64(grad_term(c, d, cot, den))),
                );
            }
        }
    }
    if !none {
        value.push(reduced_value(plan, &acc));
    }
    finish(grads, value)
}

/// `len` must be rows·width (`name` of dims `[N, what]`); C = 0 only with N = 0 when `classes`.
fn check_matrix(
    name: &str,
    len: usize,
    n: usize,
    w: usize,
    what: &str,
    classes: bool,
) -> Result<(), LossError> {
    if classes && w == 0 && n != 0 {
        return Err(LossError::invalid(format!(
            "input {name}: C = 0 classes with {n} rows (C = 0 only with N = 0)"
        )));
    }
    if n.checked_mul(w) != Some(len) {
        return Err(LossError::invalid(format!(
            "input {name}: {len} elements, expected N·{what} = {n}·{w}"
        )));
    }
    Ok(())
}

/// The first unskipped value of `x` (rows of width `w`) that `bad` rejects, as an error.
fn check_range<T: Element>(
    name: &str,
    x: &[T],
    w: usize,
    plan: &Plan<'_, T>,
    what: &str,
    bad: impl Fn(f64) -> bool,
) -> Result<(), LossError> {
    for (k, v) in x.iter().enumerate() {
        let v = v.to_f64();
        if !v.is_nan() && bad(v) && plan.coef(k / w.max(1)) != 0.0 {
            return Err(LossError::invalid(format!(
                "input {name}[{k}]={v:?} is {what}"
            )));
        }
    }
    Ok(())
}

fn plan_of<'a, T: Element>(n: usize, ex: &RowExtras<'a, T>) -> Result<Plan<'a, T>, LossError> {
    Plan::new(n, ex.weight, ex.mask, ex.cotangent, ex.reduction)
}

// ---------------------------------------------------------------------------------------------
// kl_div

/// c·(hi + lo) for c = 2^k·(c0 + c1) in double-double.
#[inline(always)]
fn dd_scale(k: i32, (c0, c1): Pair, x: Pair) -> Pair {
    let (p, e) = pair_scale(c0, x);
    let (h, l) = (p, e + c1 * x.0);
    (libm::scalbn(h, k), libm::scalbn(l, k))
}

/// One `kl_div` row: the value and −p into `g`.
fn kl_row<T: Element>(lq: &[T], tg: &[T], log_target: bool, g: &mut [f64]) -> Pair {
    let mut acc = CompensatedSum::new();
    for (j, (q, t)) in lq.iter().zip(tg).enumerate() {
        let (q, t) = (q.to_f64(), t.to_f64());
        let absent = if log_target {
            t == f64::NEG_INFINITY
        } else {
            t == 0.0
        };
        if absent {
            g[j] = 0.0;
            continue;
        }
        if q.is_nan() || t.is_nan() {
            acc.add_lane(j, f64::NAN);
            g[j] = f64::NAN;
            continue;
        }
        let term = if log_target {
            let diff = sum_exact([t, -q]);
            let p = libm::exp(t);
            g[j] = -p;
            if !diff.0.is_finite() || t < -700.0 {
                pair_scale(p, diff)
            } else {
                let (k, e) = exp_dd(t);
                dd_scale(k, e, diff)
            }
        } else {
            g[j] = -t;
            let (y, c) = ln_dd(t);
            pair_scale(t, sum_exact([y, c, -q]))
        };
        if term.0.is_finite() {
            acc.add_lane(j, term.0);
            acc.add_lane(j, term.1);
        } else {
            acc.add_lane(j, term.0);
        }
    }
    acc.total_pair()
}

/// `kl_div` of log-probabilities `input` (log q) against `target` (p, or log p with
/// `log_target`), both `[rows, classes]` (see the module docs). `grad`: compute ∂/∂input.
pub fn kl_div<T: Element, O: Element>(
    input: &[T],
    target: &[T],
    rows: usize,
    classes: usize,
    log_target: bool,
    ex: &RowExtras<'_, T>,
    grad: bool,
) -> Result<RowOutput<T, O>, LossError> {
    let c = classes;
    check_matrix("input", input.len(), rows, c, "C", true)?;
    check_matrix("target", target.len(), rows, c, "C", true)?;
    let plan = plan_of(rows, ex)?;
    if log_target {
        check_range(
            "target",
            target,
            c,
            &plan,
            "> 0 with log_target (a log-probability must be <= 0)",
            |x| x > 0.0,
        )?;
    } else {
        check_range("target", target, c, &plan, "outside [0, 1]", |x| {
            !(0.0..=1.0).contains(&x)
        })?;
    }
    Ok(run_rows(&plan, ex.cotangent, &[c], &[grad], |i, s| {
        let r = i * c..(i + 1) * c;
        kl_row(&input[r.clone()], &target[r], log_target, &mut s[0])
    }))
}

// ---------------------------------------------------------------------------------------------
// brier

/// `brier` of probabilities `prob` `[rows, classes]` against class ids `target` `[rows]`.
pub fn brier<T: Element, O: Element>(
    prob: &[T],
    target: &[i64],
    rows: usize,
    classes: usize,
    ex: &RowExtras<'_, T>,
    grad: bool,
) -> Result<RowOutput<T, O>, LossError> {
    let c = classes;
    check_matrix("prob", prob.len(), rows, c, "C", true)?;
    if target.len() != rows {
        return Err(LossError::invalid(format!(
            "input target: {} elements, expected N = {rows}",
            target.len()
        )));
    }
    let plan = plan_of(rows, ex)?;
    check_range("prob", prob, c, &plan, "outside [0, 1]", |x| {
        !(0.0..=1.0).contains(&x)
    })?;
    for (k, &y) in target.iter().enumerate() {
        if !(usize::try_from(y).is_ok_and(|y| y < c)) && plan.coef(k) != 0.0 {
            return Err(LossError::invalid(format!(
                "input target[{k}]={y} is out of range for {c} classes"
            )));
        }
    }
    Ok(run_rows(&plan, ex.cotangent, &[c], &[grad], |i, s| {
        let mut acc = CompensatedSum::new();
        for j in 0..c {
            let p = prob[i * c + j].to_f64();
            let r = if target[i] == j as i64 { p - 1.0 } else { p };
            acc.add_lane(j, r * r); // exact
            s[0][j] = 2.0 * r;
        }
        acc.total_pair()
    }))
}

// ---------------------------------------------------------------------------------------------
// neg_elbo

/// expm1(v) − v ≥ 0 with full relative accuracy: Taylor series for |v| ≤ ¼.
#[inline]
pub(crate) fn expm1_minus_x(v: f64) -> f64 {
    if v.is_nan() {
        return v;
    }
    if v == f64::INFINITY || v == f64::NEG_INFINITY {
        return f64::INFINITY;
    }
    if v.abs() <= 0.25 {
        // Σ_{n≥2} v^n/n!: 16 terms (¼^18/18! < 2^−90)
        let mut s = 0.0;
        let mut f = 1.0;
        let mut coefs = [0.0f64; 17];
        for (n, c) in coefs.iter_mut().enumerate().skip(2) {
            f *= n as f64;
            *c = 1.0 / f;
        }
        for c in coefs[2..].iter().rev() {
            s = s * v + c;
        }
        s * v * v
    } else {
        libm::expm1(v) - v
    }
}

/// `neg_elbo`: x, recon_logits `[rows, d]`, mu, logvar `[rows, k]`; `grads` for recon_logits,
/// mu, logvar. `RowOutput::grads` holds the three in that order.
#[allow(clippy::too_many_arguments)]
pub fn neg_elbo<T: Element, O: Element>(
    x: &[T],
    recon_logits: &[T],
    mu: &[T],
    logvar: &[T],
    rows: usize,
    (d, k): (usize, usize),
    beta: f64,
    ex: &RowExtras<'_, T>,
    grads: [bool; 3],
) -> Result<RowOutput<T, O>, LossError> {
    if !(beta >= 0.0 && beta.is_finite()) {
        return Err(LossError::invalid(format!(
            "param beta={beta:?} is outside its domain (float >= 0)"
        )));
    }
    check_matrix("x", x.len(), rows, d, "D", false)?;
    check_matrix("recon_logits", recon_logits.len(), rows, d, "D", false)?;
    check_matrix("mu", mu.len(), rows, k, "K", false)?;
    check_matrix("logvar", logvar.len(), rows, k, "K", false)?;
    let plan = plan_of(rows, ex)?;
    check_range("x", x, d, &plan, "outside [0, 1]", |v| {
        !(0.0..=1.0).contains(&v)
    })?;
    let hb = 0.5 * beta;
    Ok(run_rows(&plan, ex.cotangent, &[d, k, k], &grads, |i, s| {
        let mut acc = CompensatedSum::new();
        for j in 0..d {
            let (xv, z) = (x[i * d + j].to_f64(), recon_logits[i * d + j].to_f64());
            if xv.is_nan() || z.is_nan() {
                acc.add(f64::NAN);
                s[0][j] = f64::NAN;
                continue;
            }
            let b = 1.0 - xv; // exact
            if xv != 0.0 {
                acc.add_lane(j, xv * softplus(-z));
            }
            if b != 0.0 {
                acc.add_lane(j, b * softplus(z));
            }
            s[0][j] = logistic_grad(xv, xv, z); // σ(z) − x
        }
        for j in 0..k {
            if beta == 0.0 {
                s[1][j] = 0.0;
                s[2][j] = 0.0;
                continue;
            }
            let (m, v) = (mu[i * k + j].to_f64(), logvar[i * k + j].to_f64());
            let (m2, m2e) = two_prod(m, m);
            let m2 = if m2.is_finite() { (m2, m2e) } else { (m2, 0.0) };
            let a = pair_scale(hb, m2);
            acc.add_lane(j, a.0);
            acc.add_lane(j, a.1);
            acc.add_lane(j + 1, hb * expm1_minus_x(v));
            s[1][j] = beta * m;
            s[2][j] = hb * libm::expm1(v);
        }
        acc.total_pair()
    }))
}

// ---------------------------------------------------------------------------------------------
// distill_kl

/// One side of a distill_kl row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Nan,
    OneHot(usize),
    Finite(usize),
}

fn side(z: &[f64]) -> Side {
    let mut n_pos = 0;
    let mut k_pos = 0;
    let mut k: Option<usize> = None;
    for (j, &x) in z.iter().enumerate() {
        if x == f64::INFINITY {
            n_pos += 1;
            k_pos = j;
        } else if x > f64::NEG_INFINITY && k.is_none_or(|kk| x > z[kk]) {
            k = Some(j);
        }
    }
    match (n_pos, k) {
        (0, Some(k)) => Side::Finite(k),
        (1, _) => Side::OneHot(k_pos),
        _ => Side::Nan,
    }
}

/// (x_j − x_k)/T as a pair (x_j, x_k finite).
#[inline(always)]
fn scaled_diff(a: f64, b: f64, tau: f64) -> Pair {
    pair_div(two_sum(a, -b), tau)
}

/// e^{hi + lo} = e^hi·(1 + lo) for hi ≤ 0 or small.
#[inline(always)]
fn exp_pair((hi, lo): Pair) -> f64 {
    let e = if hi <= 0.0 {
        exp_nonpos(hi)
    } else {
        libm::exp(hi)
    };
    if lo == 0.0 {
        e
    } else {
        e + e * lo
    }
}

/// Probabilities of a side shifted at `k` (classes at −inf get 0), into `p`; returns S (the sum
/// of the others) — for a one-hot side, p is the indicator and S = 0.
fn probs(z: &[f64], sd: Side, tau: f64, e: &mut [f64]) -> f64 {
    match sd {
        Side::Nan => {
            e.fill(f64::NAN);
            0.0
        }
        Side::OneHot(k) => {
            e.fill(0.0);
            e[k] = 1.0;
            0.0
        }
        Side::Finite(k) => {
            let mut s = CompensatedSum::new();
            for (j, (o, &x)) in e.iter_mut().zip(z).enumerate() {
                *o = if x == f64::NEG_INFINITY {
                    0.0
                } else if j == k {
                    1.0
                } else {
                    exp_pair(scaled_diff(x, z[k], tau))
                };
                if j != k {
                    s.add_lane(j, *o);
                }
            }
            s.total()
        }
    }
}

/// Scratch rows of a distill_kl evaluation.
struct DistillScratch {
    t: Vec<f64>,
    s: Vec<f64>,
    ea: Vec<f64>,
    eb: Vec<f64>,
    d: Vec<Pair>,
}

/// What the value pass of a row leaves for the gradient.
struct KlPass {
    value: Pair,
    /// Both sides finite-max with a reference class r (the D-form).
    general: bool,
    /// First = second + a constant (same support): exactly 0.
    same: bool,
    /// Mass of the first distribution where the second has none.
    infinite: bool,
    /// The student shifted at r too (see the module docs), ΔS = S_b − S_a then.
    close: bool,
    delta: f64,
    one_a: f64,
    one_b: f64,
}

/// T²·KL(softmax(a/T) ‖ softmax(b/T)) of one row (a, b without NaN; sides `sa`, `sb` not NaN):
/// the D-form with r the first argmax of a among the classes where both are finite. Leaves in
/// `w`: ea = e^{(a − a_ka)/T} (P's numerators), eb = Q's numerators (shifted at r when
/// `close`, else at kb), d = D.
fn kl_pass(a: &[f64], b: &[f64], sa: Side, sb: Side, tau: f64, w: &mut DistillScratch) -> KlPass {
    let c = a.len();
    let tau2 = tau * tau;
    let pres = |z: &[f64], sd: Side, j: usize| match sd {
        Side::OneHot(k) => j == k,
        _ => z[j] > f64::NEG_INFINITY,
    };
    let infinite = (0..c).any(|j| pres(a, sa, j) && !pres(b, sb, j));
    let mut r: Option<usize> = None;
    for j in 0..c {
        if a[j].is_finite() && b[j].is_finite() && r.is_none_or(|rr| a[j] > a[rr]) {
            r = Some(j);
        }
    }
    let mut out = KlPass {
        value: (f64::INFINITY, 0.0),
        general: false,
        same: false,
        infinite,
        close: false,
        delta: f64::NAN,
        one_a: 1.0,
        one_b: 1.0,
    };
    if let (Side::Finite(ka), Side::Finite(kb), Some(r)) = (sa, sb, r) {
        out.general = true;
        let mut all_zero = true;
        let mut same_support = true;
        for j in 0..c {
            w.d[j] = if a[j].is_finite() && b[j].is_finite() {
                pair_div(sum_exact([a[j], -a[r], -b[j], b[r]]), tau)
            } else {
                (0.0, 0.0)
            };
            all_zero &= w.d[j].0 == 0.0;
            same_support &= pres(a, sa, j) == pres(b, sb, j);
        }
        let ga = scaled_diff(a[ka], a[r], tau);
        let gb = scaled_diff(b[kb], b[r], tau);
        // both sides within T of their value at r: shift both there
        out.close = ga.0 <= 1.0 && gb.0 <= 1.0;
        let s_a = probs(
            a,
            if out.close { Side::Finite(r) } else { sa },
            tau,
            &mut w.ea,
        );
        out.one_a = 1.0 + s_a;
        if all_zero && same_support {
            out.same = true;
            out.value = (0.0, 0.0);
            probs(b, sb, tau, &mut w.eb);
            out.one_b = out.one_a;
            return out;
        }
        if out.close {
            // the second side shifted at r too: e^{y_c} = e^{x_c}·e^{−D_c}
            let mut sb_ = CompensatedSum::new();
            let mut ds = CompensatedSum::new();
            for j in (0..c).filter(|&j| j != r) {
                let ey = if b[j] == f64::NEG_INFINITY {
                    0.0
                } else {
                    exp_pair(scaled_diff(b[j], b[r], tau))
                };
                w.eb[j] = ey;
                sb_.add_lane(j, ey);
                let dj = if a[j] == f64::NEG_INFINITY {
                    ey
                } else if b[j] == f64::NEG_INFINITY {
                    -w.ea[j]
                } else if w.d[j].0.abs() <= 1.0 {
                    w.ea[j] * expm1_neg(w.d[j])
                } else {
                    ey - w.ea[j] // a factor e apart at least: no cancellation
                };
                ds.add_lane(j, dj);
            }
            w.eb[r] = 1.0;
            out.one_b = 1.0 + sb_.total();
            out.delta = ds.total();
        } else {
            out.one_b = 1.0 + probs(b, sb, tau, &mut w.eb);
        }
        if !infinite {
            out.value = if out.close {
                close_value(a, b, &w.ea, &w.eb, &w.d, out.one_a, out.delta, tau2)
            } else {
                let l = sum_exact([
                    gb.0,
                    gb.1,
                    libm::log1p(out.one_b - 1.0),
                    -ga.0,
                    -ga.1,
                    -libm::log1p(s_a),
                ]);
                let mut acc = CompensatedSum::new();
                for j in 0..c {
                    if pres(a, sa, j) && w.d[j].0 != 0.0 {
                        let x = pair_scale(w.ea[j] / out.one_a, w.d[j]);
                        acc.add_lane(j, x.0);
                        acc.add_lane(j, x.1);
                    }
                }
                acc.add_lane(0, l.0);
                acc.add_lane(1, l.1);
                pair_scale(tau2, acc.total_pair())
            };
        }
        return out;
    }
    // special rows: a one-hot side, or no class where both are finite
    let s_a = probs(a, sa, tau, &mut w.ea);
    let s_b = probs(b, sb, tau, &mut w.eb);
    out.one_a = 1.0 + s_a;
    out.one_b = 1.0 + s_b;
    if !infinite {
        let (la, lb) = (libm::log1p(s_a), libm::log1p(s_b));
        let ln_p = |j: usize, sd: Side, z: &[f64], lam: f64| -> Option<f64> {
            match sd {
                Side::OneHot(k) => (j == k).then_some(0.0),
                Side::Finite(k) => {
                    (z[j] > f64::NEG_INFINITY).then(|| scaled_diff(z[j], z[k], tau).0 - lam)
                }
                Side::Nan => None,
            }
        };
        let mut acc = CompensatedSum::new();
        for j in 0..c {
            if let (Some(x), Some(y)) = (ln_p(j, sa, a, la), ln_p(j, sb, b, lb)) {
                if x != y {
                    acc.add_lane(j, w.ea[j] / out.one_a * (x - y));
                }
            }
        }
        out.value = pair_scale(tau2, acc.total_pair());
    }
    out
}

/// One distill_kl row: T²·KL and the unscaled gradient ∂/∂student into `g`. The reverse value
/// is the forward one with the roles swapped (so its reference class is the student's).
fn distill_row<T: Element>(
    te: &[T],
    st: &[T],
    tau: f64,
    reverse: bool,
    w: &mut DistillScratch,
    g: &mut [f64],
) -> Pair {
    let c = te.len();
    let mut t = std::mem::take(&mut w.t);
    let mut s = std::mem::take(&mut w.s);
    for j in 0..c {
        t[j] = te[j].to_f64();
        s[j] = st[j].to_f64();
    }
    let out = distill_inner(&t[..c], &s[..c], tau, reverse, w, g);
    w.t = t;
    w.s = s;
    out
}

fn distill_inner(
    t: &[f64],
    s: &[f64],
    tau: f64,
    reverse: bool,
    w: &mut DistillScratch,
    g: &mut [f64],
) -> Pair {
    let c = t.len();
    let nan = (f64::NAN, 0.0);
    if t.iter().chain(s).any(|x| x.is_nan()) {
        g.fill(f64::NAN);
        return nan;
    }
    let (sa, sb) = (side(t), side(s));
    if sa == Side::Nan || sb == Side::Nan {
        g.fill(f64::NAN);
        return nan;
    }
    let pres_t = |j: usize| match sa {
        Side::OneHot(k) => j == k,
        _ => t[j] > f64::NEG_INFINITY,
    };
    let pres_s = |j: usize| match sb {
        Side::OneHot(k) => j == k,
        _ => s[j] > f64::NEG_INFINITY,
    };
    if reverse {
        // KL(Q‖P): first = student
        let kp = kl_pass(s, t, sb, sa, tau, w);
        if kp.infinite {
            reverse_infinite(c, &pres_t, &pres_s, g);
        } else if kp.same || !kp.general {
            g.fill(0.0);
        } else {
            // T·Q_j·(Σ_c Q_c·D_c − D_j) with D = −D^sw (D^sw referenced at the student's r)
            let mut sq = CompensatedSum::new();
            for j in 0..c {
                if pres_s(j) {
                    let x = pair_scale(w.ea[j] / kp.one_a, w.d[j]);
                    sq.add_lane(j, x.0);
                    sq.add_lane(j, x.1);
                }
            }
            let sqd = sq.total_pair();
            for j in 0..c {
                g[j] = if pres_s(j) {
                    let (h, l) = pair_add(w.d[j].0, -sqd.0);
                    tau * (w.ea[j] / kp.one_a) * (h + (l + w.d[j].1 - sqd.1))
                } else {
                    0.0
                };
            }
        }
        return kp.value;
    }
    let kp = kl_pass(t, s, sa, sb, tau, w);
    let (one_a, one_b) = (kp.one_a, kp.one_b);
    if kp.same {
        g.fill(0.0);
    } else if kp.general {
        let den = one_a * one_b;
        for j in 0..c {
            g[j] = if kp.close && t[j].is_finite() && s[j].is_finite() && w.d[j].0.abs() <= 1.0 {
                let num = sum_exact_prod(w.ea[j], expm1_neg(w.d[j]), one_a, kp.delta);
                tau * (num / den)
            } else {
                tau * (w.eb[j] / one_b - w.ea[j] / one_a)
            };
        }
    } else {
        for j in 0..c {
            g[j] = tau
                * match (sa, sb) {
                    (Side::OneHot(k), _) if k == j => -(0..c)
                        .filter(|&i| i != j)
                        .map(|i| w.eb[i] / one_b)
                        .sum::<f64>(),
                    (_, Side::OneHot(k)) if k == j => (0..c)
                        .filter(|&i| i != j)
                        .map(|i| w.ea[i] / one_a)
                        .sum::<f64>(),
                    _ => w.eb[j] / one_b - w.ea[j] / one_a,
                };
        }
    }
    kp.value
}

/// Σ_{n≥2} a_n·x^n by Horner from a_2.
#[inline(always)]
fn series(x: f64, a: impl Fn(usize) -> f64, top: usize) -> f64 {
    let mut s = 0.0;
    for n in (2..=top).rev() {
        s = s * x + a(n);
    }
    s * x * x
}

/// ψ(m) = m − log1p(m) ≥ 0 (m > −1), the series Σ (−1)^n m^n/n for |m| ≤ ¼.
fn psi(m: f64) -> f64 {
    if m.abs() <= 0.25 {
        series(
            m,
            |n| {
                if n % 2 == 0 {
                    1.0 / n as f64
                } else {
                    -1.0 / n as f64
                }
            },
            30,
        )
    } else {
        m - libm::log1p(m)
    }
}

/// The value of a close general row (the oracle's `close_terms`):
/// T²·(Σ P_c·φ(v_c) − ψ(m) + m₀), v = −D, m = ΔS/(1 + S_a).
#[allow(clippy::too_many_arguments)]
fn close_value(
    t: &[f64],
    s: &[f64],
    ea: &[f64],
    eb: &[f64],
    d: &[Pair],
    one_a: f64,
    delta: f64,
    tau2: f64,
) -> Pair {
    let m = delta / one_a;
    let mut acc = CompensatedSum::new();
    let mut m0 = CompensatedSum::new();
    for j in 0..t.len() {
        let (tf, sf) = (t[j] > f64::NEG_INFINITY, s[j] > f64::NEG_INFINITY);
        if tf && sf {
            let (dh, dl) = d[j];
            if dh == 0.0 {
                continue;
            }
            let (vh, vl) = (-dh, -dl);
            let pj = ea[j] / one_a;
            let w = if dh.abs() <= 1.0 {
                // φ(v) + φ′(v)·v_lo, φ′(v) = expm1(v)
                pj * (expm1_minus_x(vh) + libm::expm1(vh) * vl)
            } else {
                (eb[j] - ea[j]) / one_a + pj * dh
            };
            acc.add_lane(j, w);
        } else if sf {
            m0.add_lane(j, eb[j] / one_a);
        }
    }
    let (h, l) = acc.total_pair();
    let (h2, l2) = pair_add(h, m0.total() - psi(m));
    pair_scale(tau2, (h2, l2 + l))
}

/// e^{−(hi + lo)} − 1 for |hi| ≤ 1: expm1(−hi) − lo·e^{−hi}.
#[inline(always)]
fn expm1_neg((hi, lo): Pair) -> f64 {
    let m = libm::expm1(-hi);
    if lo == 0.0 {
        m
    } else {
        m - lo * (1.0 + m)
    }
}

/// a·b·c − d·a with no cancellation loss beyond the final subtraction: a·(b·c − d).
#[inline(always)]
fn sum_exact_prod(a: f64, b: f64, c: f64, d: f64) -> f64 {
    let (p, e) = two_prod(b, c);
    let (h, l) = sum_exact([p, e, -d]);
    a * (h + l)
}

/// The reverse gradient's limits where KL(Q‖P) = +inf (the oracle's rule): Z the classes with
/// Q > 0 = P; 0 where Q = 0; NaN for |Z| ≥ 2; for Z = {c}: −inf at j ≠ c, +inf at c (0 when c
/// is the student's only class).
fn reverse_infinite(
    c: usize,
    pres_t: &dyn Fn(usize) -> bool,
    pres_s: &dyn Fn(usize) -> bool,
    g: &mut [f64],
) {
    let zs: Vec<usize> = (0..c).filter(|&j| pres_s(j) && !pres_t(j)).collect();
    let n_q = (0..c).filter(|&j| pres_s(j)).count();
    for j in 0..c {
        g[j] = if !pres_s(j) {
            0.0
        } else if zs.len() >= 2 {
            f64::NAN
        } else if zs[0] == j {
            if n_q >= 2 {
                f64::INFINITY
            } else {
                0.0
            }
        } else {
            f64::NEG_INFINITY
        };
    }
}

/// `distill_kl` of student and teacher logits `[rows, classes]` at temperature T > 0,
/// forward (KL(teacher ‖ student)) or `reverse`. `grad`: compute ∂/∂student.
#[allow(clippy::too_many_arguments)]
pub fn distill_kl<T: Element, O: Element>(
    student: &[T],
    teacher: &[T],
    rows: usize,
    classes: usize,
    temperature: f64,
    reverse: bool,
    ex: &RowExtras<'_, T>,
    grad: bool,
) -> Result<RowOutput<T, O>, LossError> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(LossError::invalid(format!(
            "param temperature={temperature:?} is outside its domain (float > 0)"
        )));
    }
    let c = classes;
    check_matrix("student", student.len(), rows, c, "C", true)?;
    check_matrix("teacher", teacher.len(), rows, c, "C", true)?;
    let plan = plan_of(rows, ex)?;
    let mut w = DistillScratch {
        t: vec![0.0; c],
        s: vec![0.0; c],
        ea: vec![0.0; c],
        eb: vec![0.0; c],
        d: vec![(0.0, 0.0); c],
    };
    Ok(run_rows(&plan, ex.cotangent, &[c], &[grad], |i, g| {
        let r = i * c..(i + 1) * c;
        distill_row(
            &teacher[r.clone()],
            &student[r],
            temperature,
            reverse,
            &mut w,
            &mut g[0],
        )
    }))
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

/// Evaluate a validated row-wise probabilistic case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    let (weight, mask, cotangent) = extras::<T>(case)?;
    let ex = RowExtras {
        weight: weight.as_deref(),
        mask,
        cotangent: cotangent.as_deref(),
        reduction: case.reduction(),
    };
    let wants = |n: &str| case.grad.iter().any(|g| g == n);
    let n = checked.rows;
    let c = checked.dim("C");
    let flag = |name: &str| matches!(case.params.get(name), Some(ParamValue::Bool(true)));
    let (names, out): (&[&str], RowOutput<T, O>) = match case.loss.as_str() {
        "kl_div" => {
            let (x, t) = (
                req_input::<T>(case, "input")?,
                req_input::<T>(case, "target")?,
            );
            (
                &["input"],
                kl_div(&x, &t, n, c, flag("log_target"), &ex, wants("input"))?,
            )
        }
        "distill_kl" => {
            let (s, t) = (
                req_input::<T>(case, "student")?,
                req_input::<T>(case, "teacher")?,
            );
            let reverse = match case.params.get("direction") {
                None => false,
                Some(ParamValue::Str(d)) if d == "forward" || d == "reverse" => d == "reverse",
                Some(v) => {
                    return Err(LossError::invalid(format!(
                        "param direction={v} is not forward or reverse"
                    )))
                }
            };
            let tau = req_param(case, "temperature")?;
            (
                &["student"],
                distill_kl(&s, &t, n, c, tau, reverse, &ex, wants("student"))?,
            )
        }
        "brier" => {
            let p = req_input::<T>(case, "prob")?;
            let y = int_input(case, "target")?
                .ok_or_else(|| LossError::invalid("input target: expected i64 class ids"))?;
            (&["prob"], brier(&p, y, n, c, &ex, wants("prob"))?)
        }
        "neg_elbo" => {
            let x = req_input::<T>(case, "x")?;
            let z = req_input::<T>(case, "recon_logits")?;
            let mu = req_input::<T>(case, "mu")?;
            let lv = req_input::<T>(case, "logvar")?;
            let beta = req_param(case, "beta")?;
            let g = [wants("recon_logits"), wants("mu"), wants("logvar")];
            let dims = (checked.dim("D"), checked.dim("K"));
            (
                &["recon_logits", "mu", "logvar"],
                neg_elbo(&x, &z, &mu, &lv, n, dims, beta, &ex, g)?,
            )
        }
        other => {
            return Err(LossError::unsupported(format!(
                "no row-wise probabilistic kernel for {other}"
            )))
        }
    };
    let value = Tensor::float(
        O::DTYPE,
        checked.value_shape(case.reduction()),
        out.value.iter().map(|v| v.to_f64()).collect(),
    );
    let mut grad = BTreeMap::new();
    for (name, g) in names.iter().zip(out.grads) {
        if let Some(g) = g {
            let shape = case
                .input(name)
                .map(|t| t.shape.clone())
                .unwrap_or_default();
            grad.insert(
                name.to_string(),
                Tensor::float(T::DTYPE, shape, g.iter().map(|v| v.to_f64()).collect()),
            );
        }
    }
    Ok(Response {
        id: case.id,
        value,
        grad,
    })
}
