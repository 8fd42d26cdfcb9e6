//! Oracles of the classification family, row-wise losses: `cross_entropy`, `nll`,
//! `multi_margin`.
//!
//! Per row i (a row of `[N, C]`, or a token of `[B, T, C]`), with exact (point) inputs, z the
//! logits, x the scores, y the target class, w the class weights (1 when absent),
//! ε = label_smoothing, p = softmax(z), LSE = log Σ_k e^{z_k}:
//!
//! | loss | l_i | ∂l_i/∂(logits / logp / scores)_j |
//! |---|---|---|
//! | `cross_entropy` | Σ_c a_c·(LSE − z_c); class ids: a_c = (1−ε)·w_y·[c=y] + (ε/C)·w_c; soft target q: a_c = w_c·((1−ε)·q_c + ε/C) | A·p_j − a_j, A = Σ_c a_c |
//! | `nll` | −w_y·logp_y | −w_y·[j=y] |
//! | `multi_margin` | w_y·Σ_{j≠y} max(0, u_j)^p / C, u_j = m − x_y + x_j | j ≠ y: w_y·p·max(0, u_j)^{p−1}/C; j = y: minus the sum of those |
//!
//! **Cross-entropy without cancellation.** With k* an index of the largest logit and
//! S = Σ_{k≠k*} e^{z_k − z_k*} (ties at the max included, each e^0 = 1), LSE − z_c is
//! (z_k* − z_c) + log1p(S): a sum of non-negative terms, one exp per logit, so a confident row
//! ([12, 0, …, 0], target 0: l = log1p(9e^−12)) keeps its full relative accuracy at the first
//! precision. Coefficients are carried scaled by K = C (K = 1 without smoothing), ã = K·a,
//! which is exactly dyadic, so that the one inexact division comes last:
//! l = (Σ_c ã_c·(z_k* − z_c) + Ã·log1p(S)) / K and, with Z = 1 + S and e_j = e^{z_j − z_k*},
//! ∂l/∂z_j = (Ã·e_j − ã_j·Z) / (K·Z) for j ≠ k*, and (Ã_{≠k*} − ã_k*·S) / (K·Z) at k*, where
//! Ã_{≠k*} = Σ_{c≠k*} ã_c is a sum of non-negative terms (this is where p_k* − 1 = −S/Z would
//! cancel). A gradient that is exactly dyadic (tied logits, C a power of two) thus ends up as a
//! point enclosure instead of straddling a rounding midpoint up to the cap. What can still
//! cancel is intrinsic (a soft target close to softmax(z), smoothing), and precision doubling
//! resolves it. Where S is not exact (some e^{z_k − z_k*} with z_k ≠ z_k*, irrational), every
//! p_j is irrational (Lindemann–Weierstrass) and so is every gradient component: then each
//! component is multiplied by one enclosure of 1/(K·Z·D) computed once per row instead of
//! being divided, which costs nothing in decidability.
//!
//! **Cost.** O(N·C) per evaluation: one exp per logit at the working precision (the shifted
//! exponentials are kept in the gradient's own storage and turned into its components in
//! place), no O(C²) (the sums Ã and Ã_{≠k*} are formed once per row), no copy of the logits.
//!
//! **multi_margin's division last.** The row term is recorded as C·l_i = w_y·Σ_j max(0, u_j)^p
//! and the reducer divides by C once at the end, with D for `mean`
//! ([`Reducer::finish_over`]); gradients go through [`Reducer::grad_quotient`] with the
//! denominator C. Dividing each term by C before its per-row weight multiplies it would leave
//! an exactly dyadic result (w·l with 3 | w's numerator, a rounding midpoint, say) straddled
//! at every precision.
//!
//! **Reductions** (`cross_entropy`, `nll`; `multi_margin` goes through [`Reducer`] with its
//! per-row `weight` and `mask`: active = mask 1 and weight ≠ 0, `mean` = Σ m·w·l / Σ m·w). A
//! row whose class id equals `ignore_index` is inactive: never evaluated, exactly 0 (so a NaN
//! or ±inf sitting there cannot leak), its gradient exactly 0.
//! `sum` = Σ l_i; `mean` = Σ l_i / D with D = Σ w_{y_i} over the active rows (the number of
//! active rows without class weights; the number of rows N for soft targets, which have no
//! ignore); `sequence_mean` (`[B, T, C]` only) averages plainly, over the sequences b whose
//! D_b = Σ_t w_{y_bt} is non-zero, the per-sequence means Σ_t l_bt / D_b. **An empty mean (D, or
//! every D_b, exactly 0) is 0**, value and every gradient; a token of a sequence with D_b = 0
//! contributes nothing either (its smoothing term included). Termwise gradients:
//! ∂/∂z_{i,j} = c·∂l_i/∂z_{i,j} / D (`sequence_mean`: / (D_b·#counted sequences)), c the
//! cotangent (per row for `none`, a scalar otherwise); the products come first and the one
//! division last, as in [`Reducer::grad`], and an exactly-zero derivative or cotangent gives an
//! exact 0 even against an infinite or NaN factor (docs/policies/zero-times-inf.md). κ is
//! Σ|l_i| / |Σ l_i| over the counted rows (1 where all terms have one sign, as for
//! `cross_entropy` and `multi_margin`; `nll` can cancel).
//!
//! **Absent terms.** A coefficient that is exactly 0 makes its term absent: it contributes
//! exactly nothing, even where z_c = −inf. For class ids a_c = 0 iff (c = y and w_y = 0) or
//! (c ≠ y and (ε = 0 or w_c = 0)); for soft targets iff w_c = 0 or (q_c = 0 and ε = 0); with
//! ε = 1 the target q (even a NaN) never enters. A row with no present term at all (w_y = 0
//! and ε = 0, say) is exactly 0 with gradient 0 — whatever its logits hold, NaN included (a
//! zero class weight removes its class's terms and nothing is left) — and still counts as
//! active (it adds w_y = 0 to D; with smoothing it keeps its smoothing term, as PyTorch).
//! `nll`: w_y = 0 gives exactly 0 whatever logp_y is; the entries logp_{i,j}, j ≠ y, never
//! matter. `multi_margin`: w_y = 0 gives exactly 0 whatever the row's scores are.
//!
//! **Extended reals** (`cross_entropy`, a row with a present term). A NaN logit or a NaN
//! coefficient (a NaN soft target entry with w_c ≠ 0 and ε < 1) makes the row NaN, value and
//! every gradient component. Otherwise, with P the +inf logits:
//!
//! - |P| ≥ 2: no limit (p depends on the path) → NaN row;
//! - |P| = 1 at k: p is one-hot at k; l = +inf if some a_c > 0 with c ≠ k, else 0 (the k term
//!   tends to 0); ∂l/∂z_j = A·[j=k] − a_j, finite;
//! - no +inf, every logit −inf: LSE is −inf − (−inf) → NaN row;
//! - else a −inf logit has p = 0 and adds nothing to S; its term, if present, is +inf (so with
//!   ε > 0 and w_c > 0 any −inf logit makes the row +inf, as in PyTorch); its gradient is −a_c.
//!   The gradient stays finite when the value is +inf.
//!
//! `nll`: l = −w_y·logp_y in extended reals (logp_y = ±inf → ∓inf; sums of +inf and −inf rows
//! are NaN); the gradient −w_y at j = y is the limit there too; a NaN logp_y makes the value
//! and that one component NaN (the other components stay exactly 0).
//!
//! `multi_margin`: u_j = (m − x_y) + x_j. A NaN score in a row with C ≥ 2, or an undefined
//! u_j (x_y = x_j = +inf, or x_y = x_j = −inf: inf − inf), makes the row NaN, value and every
//! component. Otherwise u_j = +inf (x_y = −inf, or x_j = +inf) gives the term +inf with
//! derivative 1 (p = 1) or +inf (p = 2, 2·u_j; then ∂/∂x_y = −inf, a sum of non-negative
//! terms without cancellation); u_j = −inf (x_y = +inf, or x_j = −inf) gives 0 and derivative
//! 0. There is no ∞·0: the p = 1 factor max(0, u)^0 is the indicator `[u > 0]` ∈ {0, 1}
//! (never 0·inf), the p = 2 factor 2·max(0, u) is 0 exactly where u ≤ 0, a zero class weight
//! removes the row's terms before any infinity is formed, and a zero cotangent or per-row
//! weight wins as in [`Reducer`]. C = 1 has no term: l = 0 (a NaN x_y enters no term).
//!
//! **Kinks.** `multi_margin` with p = 1 at u_j = 0 exactly (with exact inputs, u_j is the
//! point 0 iff m − x_y + x_j = 0): the Clarke set of max(0, u) at 0 is [0, 1], the selection
//! nearest 0 treats those j as inactive. One [`RawKinkGroup`] ([`MULTI_MARGIN_KINK`]) per row
//! with kinked j whose gradient is requested: each kinked x_j with the segment
//! [0, w_y/C]·s and x_y with [g_y, g_y − k·w_y/C·s] (g_y the selection, k the number of kinked
//! j, s the reducer's scale), all sharing one θ. Shared θ is a documented restriction: the full
//! Clarke set lets each kinked j take its own θ_j (x_y then moving by −Σ_j θ_j·w_y/C·s); a
//! selection with unequal θ_j is judged against the nearest shared-θ point. p = 2 has no kink
//! (the derivative 2·max(0, u) is continuous, 0 at u = 0). `cross_entropy` and `nll` are
//! smooth.
//!
//! **Non-point inputs** (never produced by the driver, which hands exact points; kept rigorous
//! anyway): the cross-entropy shift is the point z_k*.lo (k* the largest lower end), and the
//! k* term gets its own e^{z_k* − z_k*.lo} and expm1; an enclosure with an infinite end that is
//! not a point makes its row the whole line.
//!
//! Params are binary64 values, used exactly.

use super::{get, wants};
use crate::ival::{Ival, Sign};
use crate::reduce::Reducer;
use crate::{Inputs, Raw, RawKinkGroup};
use losscheck_core::catalogue::ignore_index;
use losscheck_core::{Case, Checked, LossError, Reduction};
use rug::float::Round;
use rug::ops::{AddAssignRound, MulAssignRound, SubAssignRound};
use rug::{Assign, Float};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Primitive name of the `multi_margin` kink groups (p = 1, u_j = 0).
pub const MULTI_MARGIN_KINK: &str = "max(0, m − x_y + x_j) at 0";

/// Evaluate a row-wise classification case at working precision `prec` (see the module docs).
pub fn eval(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    match case.loss.as_str() {
        "cross_entropy" => cross_entropy(case, checked, inputs, prec),
        "nll" => nll(case, checked, inputs, prec),
        "multi_margin" => multi_margin(case, checked, inputs, prec),
        other => Err(LossError::unsupported(format!(
            "no row-wise classification oracle for {other:?}"
        ))),
    }
}

/// The class-id target (i64) of `n` rows.
fn class_ids(case: &Case, n: usize) -> Result<&[i64], LossError> {
    let t = case
        .inputs
        .get("target")
        .ok_or_else(|| LossError::invalid(format!("{}: missing input \"target\"", case.loss)))?;
    let v = t
        .i()
        .ok_or_else(|| LossError::internal(format!("{}: target is not i64", case.loss)))?;
    if v.len() != n {
        return Err(LossError::internal(format!(
            "{}: target has {} elements, expected {n}",
            case.loss,
            v.len()
        )));
    }
    Ok(v)
}

/// A class id of an active row as an index (validation guarantees the range).
fn class_index(case: &Case, y: i64, c: usize) -> Result<usize, LossError> {
    if y < 0 || y as usize >= c {
        return Err(LossError::internal(format!(
            "{}: class id {y} out of range for {c} classes in an active row",
            case.loss
        )));
    }
    Ok(y as usize)
}

/// The optional class weights ([C]).
fn class_weights(inputs: &Inputs, c: usize) -> Result<Option<&[Ival]>, LossError> {
    match inputs.get("class_weight") {
        None => Ok(None),
        Some(w) if w.len() == c => Ok(Some(w)),
        Some(w) => Err(LossError::internal(format!(
            "class_weight has {} elements, expected {c}",
            w.len()
        ))),
    }
}

/// The family function's answer: the reduction's value components and κ, the gradient of
/// `name` when asked, the kink groups.
fn raw(
    (value, kappa): (Vec<Ival>, Vec<f64>),
    name: &str,
    g: Option<Vec<Ival>>,
    kinks: Vec<RawKinkGroup>,
) -> Raw {
    let mut grads = BTreeMap::new();
    if let Some(g) = g {
        grads.insert(name.to_string(), g);
    }
    Raw {
        value,
        kappa,
        grads,
        kinks,
        ..Raw::default()
    }
}

/// Which rows are active (class id ≠ `ignore_index`) and their class indices (0 where
/// inactive; in range where active, as validated).
fn active_classes(
    case: &Case,
    ids: &[i64],
    nc: usize,
) -> Result<(Vec<bool>, Vec<usize>), LossError> {
    let ii = ignore_index(case);
    let active: Vec<bool> = ids.iter().map(|&y| Some(y) != ii).collect();
    let mut yv = vec![0usize; ids.len()];
    for (i, &y) in ids.iter().enumerate().filter(|&(i, _)| active[i]) {
        yv[i] = class_index(case, y, nc)?;
    }
    Ok((active, yv))
}

// ------------------------------------------------------------------------------- reduction

/// The reduction of `cross_entropy` and `nll` (module docs): `ignore_index` instead of a
/// mask, class-weighted denominators, and `sequence_mean`.
struct RowReduce<'a> {
    reduction: Reduction,
    prec: u32,
    rows: usize,
    /// Does row i enter the result (active, and its mean's denominator non-zero)?
    counted: Vec<bool>,
    /// One per row for `none`, a scalar otherwise; absent: 1.
    cot: Option<&'a [Ival]>,
    /// `sequence_mean`: T (row i belongs to sequence i / T); else 0 (one group).
    seq_len: usize,
    /// Divisor per group: D (`mean`), D_b·#counted sequences (`sequence_mean`); `None` for
    /// `none` / `sum` and for uncounted sequences.
    div: Vec<Option<Ival>>,
    sums: Vec<Ival>,
    /// Upper bounds on Σ|l| per group (for κ).
    abs_hi: Vec<Float>,
    all_nonneg: bool,
    all_nonpos: bool,
    none_values: Vec<Ival>,
}

impl<'a> RowReduce<'a> {
    /// `den_w(i)`: the mean's weight of active row i (w_{y_i}; `None` for 1).
    fn new(
        case: &Case,
        checked: &Checked,
        inputs: &'a Inputs,
        prec: u32,
        active: Vec<bool>,
        den_w: impl Fn(usize) -> Option<&'a Ival>,
    ) -> Result<RowReduce<'a>, LossError> {
        let reduction = case.reduction();
        let rows = active.len();
        let cot = inputs.get("cotangent").map(Vec::as_slice);
        if let Some(c) = cot {
            let want = if reduction == Reduction::None {
                rows
            } else {
                1
            };
            if c.len() != want {
                return Err(LossError::internal(format!(
                    "cotangent has {} elements, expected {want}",
                    c.len()
                )));
            }
        }
        let (seq_len, groups) = if reduction == Reduction::SequenceMean {
            (checked.dim("T"), checked.dim("B").max(1))
        } else {
            (0, 1)
        };
        let group = |i: usize| i.checked_div(seq_len).unwrap_or(0);
        let mut counted = active;
        let mut div = vec![None; groups];
        if matches!(reduction, Reduction::Mean | Reduction::SequenceMean) {
            let one = Ival::one(prec);
            let mut dens = vec![Ival::zero(prec); groups];
            let mut nonzero = vec![false; groups];
            for i in (0..rows).filter(|&i| counted[i]) {
                let g = group(i);
                let w = den_w(i).unwrap_or(&one);
                if !w.is_zero() {
                    dens[g].add_assign(w);
                    nonzero[g] = true;
                }
            }
            let n_seq = nonzero.iter().filter(|&&x| x).count();
            for (g, d) in dens.into_iter().enumerate() {
                if nonzero[g] {
                    div[g] = Some(if reduction == Reduction::SequenceMean {
                        d.mul(&Ival::point(prec, n_seq as f64))
                    } else {
                        d
                    });
                }
            }
            for (i, c) in counted.iter_mut().enumerate() {
                *c &= nonzero[group(i)];
            }
        }
        Ok(RowReduce {
            reduction,
            prec,
            rows,
            counted,
            cot,
            seq_len,
            div,
            sums: vec![Ival::zero(prec); groups],
            abs_hi: vec![Float::new(prec); groups],
            all_nonneg: true,
            all_nonpos: true,
            none_values: Vec::new(),
        })
    }

    /// A gradient vector of exact zeros (what uncounted rows keep).
    fn zeros_like(&self, n: usize) -> Vec<Ival> {
        vec![Ival::zero(self.prec); n]
    }

    #[inline]
    fn group(&self, i: usize) -> usize {
        i.checked_div(self.seq_len).unwrap_or(0)
    }

    /// Must row i be evaluated? (Uncounted rows contribute exact zeros.)
    #[inline]
    fn is_counted(&self, i: usize) -> bool {
        self.counted[i]
    }

    #[inline]
    fn cot_at(&self, i: usize) -> Option<&Ival> {
        self.cot.map(|c| {
            if self.reduction == Reduction::None {
                &c[i]
            } else {
                &c[0]
            }
        })
    }

    /// Record l_i of a counted row.
    fn add_value(&mut self, i: usize, l: Ival) {
        debug_assert!(self.counted[i]);
        if self.reduction == Reduction::None {
            if self.none_values.is_empty() {
                self.none_values = vec![Ival::zero(self.prec); self.rows];
            }
            self.none_values[i] = l;
            return;
        }
        let g = self.group(i);
        if !l.is_nan() {
            self.all_nonneg &= l.lo >= 0;
            self.all_nonpos &= l.hi <= 0;
            let (a, b) = (l.lo.as_abs(), l.hi.as_abs());
            let m: &Float = if *a > *b { &a } else { &b };
            self.abs_hi[g].add_assign_round(m, Round::Up);
        }
        self.sums[g].add_assign(&l);
    }

    /// The scale of row i's gradient components: 1 / (den·divisor) (`den`: the local
    /// derivative's denominator, `None` for 1; certainly positive), see [`RowReduce::apply`].
    fn scaler(&self, i: usize, den: Option<&Ival>) -> Scale {
        let d = match (den, &self.div[self.group(i)]) {
            (Some(a), Some(d)) => Some(a.mul(d)),
            (Some(a), None) => Some(a.clone()),
            (None, Some(d)) => Some(d.clone()),
            (None, None) => None,
        };
        let recip = d
            .as_ref()
            .filter(|d| !d.is_point() && d.certainly_pos() && d.is_finite())
            .map(|d| Ival::one(self.prec).div(d));
        Scale { den: d, recip }
    }

    /// The gradient component num·c_i / (den·divisor) of a counted row, for a local derivative
    /// num/den. An exact zero numerator or cotangent gives exactly 0 (even against an infinite
    /// or NaN factor); the products come first. A point divisor is divided by last (see
    /// [`Reducer::grad`]: an exactly dyadic result stays a point); a non-point one is a
    /// cross-entropy normaliser Z = 1 + S with some e^{z_k − z_k*} irrational, where the
    /// quotient is irrational too (Lindemann–Weierstrass) and never a rounding midpoint, so
    /// multiplying by an enclosure of its reciprocal (computed once per row) loses nothing.
    fn apply(&self, i: usize, num: Ival, s: &Scale) -> Ival {
        let mut g = num;
        self.apply_in_place(i, &mut g, s);
        g
    }

    /// [`RowReduce::apply`] in place (no allocation when the factors are points or the scale
    /// is a reciprocal).
    fn apply_in_place(&self, i: usize, g: &mut Ival, s: &Scale) {
        debug_assert!(self.counted[i]);
        let c = self.cot_at(i);
        if g.is_zero() || c.is_some_and(Ival::is_zero) {
            g.lo.assign(0);
            g.hi.assign(0);
            return;
        }
        if let Some(c) = c {
            g.mul_assign(c);
        }
        match (&s.recip, &s.den) {
            (Some(r), _) => mul_pos_assign(g, r),
            (None, Some(d)) => g.div_assign(d),
            (None, None) => {}
        }
    }

    /// [`RowReduce::apply`] with a one-off scale.
    fn grad(&self, i: usize, num: Ival, den: Option<&Ival>) -> Ival {
        let s = self.scaler(i, den);
        self.apply(i, num, &s)
    }

    /// The value components (one per row for `none`, one otherwise) and κ.
    fn finish(self) -> (Vec<Ival>, Vec<f64>) {
        let p = self.prec;
        if self.reduction == Reduction::None {
            let v = if self.none_values.is_empty() {
                vec![Ival::zero(p); self.rows]
            } else {
                self.none_values
            };
            return (v, Vec::new());
        }
        let mut value = Ival::zero(p);
        let mut abs = Float::new(p);
        let mut any = false;
        if self.reduction == Reduction::Sum {
            value = self.sums[0].clone();
            abs = self.abs_hi[0].clone();
            any = true;
        } else {
            for ((s, a), d) in self.sums.iter().zip(&self.abs_hi).zip(&self.div) {
                if let Some(d) = d {
                    value.add_assign(&s.div(d));
                    let q = Float::with_val_round(p, a / &d.lo, Round::Up).0;
                    abs.add_assign_round(&q, Round::Up);
                    any = true;
                }
            }
        }
        if !any {
            // empty mean
            return (vec![Ival::zero(p)], vec![1.0]);
        }
        let kappa = if value.is_nan() || !value.is_finite() || self.all_nonneg || self.all_nonpos {
            1.0
        } else {
            let s = value.abs();
            if s.lo.is_zero() {
                f64::INFINITY
            } else {
                let k = Float::with_val_round(p, &abs / &s.lo, Round::Up).0;
                k.to_f64_round(Round::Up).max(1.0)
            }
        };
        (vec![value], vec![kappa])
    }
}

/// The scale of one row's gradient components ([`RowReduce::scaler`]).
struct Scale {
    /// den·divisor (`None`: 1).
    den: Option<Ival>,
    /// An enclosure of 1/den when den is not a point (positive, finite).
    recip: Option<Ival>,
}

/// g ·= r for an enclosure r certainly positive and finite, in place.
fn mul_pos_assign(g: &mut Ival, r: &Ival) {
    if g.is_nan() {
        return;
    }
    let lo_f = if g.lo >= 0 { &r.lo } else { &r.hi };
    let hi_f = if g.hi >= 0 { &r.hi } else { &r.lo };
    g.lo.mul_assign_round(lo_f, Round::Down);
    g.hi.mul_assign_round(hi_f, Round::Up);
}

// ------------------------------------------------------------------------------- cross_entropy

/// The scaled coefficients ã_c = K·a_c of one row (`None`: exactly 0, the term is absent).
enum Coefs<'a> {
    /// Class ids without smoothing: only ã_y = w_y.
    One { y: usize, a: Option<Ival> },
    /// Class ids with smoothing: ã_c = ε·w_c (shared by every row) + [c = y]·C(1−ε)·w_y.
    Smooth {
        base: &'a [Option<Ival>],
        base_total: &'a Ival,
        y: usize,
        /// ã_y.
        at_y: Option<Ival>,
        /// C(1−ε)·w_y, when non-zero.
        extra: Option<Ival>,
    },
    /// Soft targets: ã_c = w_c·(C(1−ε)·q_c + ε) (K = C), or w_c·q_c without smoothing.
    Dense(Vec<Option<Ival>>),
}

impl Coefs<'_> {
    #[inline]
    fn get(&self, c: usize) -> Option<&Ival> {
        match self {
            Coefs::One { y, a } => {
                if c == *y {
                    a.as_ref()
                } else {
                    None
                }
            }
            Coefs::Smooth { base, y, at_y, .. } => {
                if c == *y {
                    at_y.as_ref()
                } else {
                    base[c].as_ref()
                }
            }
            Coefs::Dense(v) => v[c].as_ref(),
        }
    }

    /// Is some term present?
    fn any(&self) -> bool {
        match self {
            Coefs::One { a, .. } => a.is_some(),
            Coefs::Smooth { base, at_y, .. } => at_y.is_some() || base.iter().any(Option::is_some),
            Coefs::Dense(v) => v.iter().any(Option::is_some),
        }
    }

    /// Is a present coefficient NaN?
    fn any_nan(&self) -> bool {
        match self {
            Coefs::Dense(v) => v.iter().flatten().any(Ival::is_nan),
            _ => false,
        }
    }

    /// Is a term other than that of class k present?
    fn any_besides(&self, k: usize, n: usize) -> bool {
        match self {
            Coefs::One { y, a } => a.is_some() && *y != k,
            _ => (0..n).any(|c| c != k && self.get(c).is_some()),
        }
    }

    /// Ã = Σ_c ã_c.
    fn total(&self, prec: u32) -> Ival {
        match self {
            Coefs::One { a, .. } => a.clone().unwrap_or_else(|| Ival::zero(prec)),
            Coefs::Smooth {
                base_total, extra, ..
            } => match extra {
                Some(e) => base_total.add(e),
                None => (*base_total).clone(),
            },
            Coefs::Dense(v) => {
                let mut s = Ival::zero(prec);
                for a in v.iter().flatten() {
                    s.add_assign(a);
                }
                s
            }
        }
    }

    /// Σ_{c≠k} ã_c, a sum of non-negative terms (no subtraction).
    fn total_except(&self, k: usize, n: usize, prec: u32) -> Ival {
        match self {
            Coefs::One { y, a } => match a {
                Some(a) if *y != k => a.clone(),
                _ => Ival::zero(prec),
            },
            _ => {
                let mut s = Ival::zero(prec);
                for c in (0..n).filter(|&c| c != k) {
                    if let Some(a) = self.get(c) {
                        s.add_assign(a);
                    }
                }
                s
            }
        }
    }

    /// Call `f(c, ã_c)` for every present term.
    fn for_each(&self, n: usize, mut f: impl FnMut(usize, &Ival)) {
        match self {
            Coefs::One { y, a } => {
                if let Some(a) = a {
                    f(*y, a)
                }
            }
            _ => {
                for c in 0..n {
                    if let Some(a) = self.get(c) {
                        f(c, a);
                    }
                }
            }
        }
    }
}

/// What a row's logits are, for the extended-real cases.
enum LogitKind {
    /// A NaN logit, two or more +inf, or every logit −inf: no limit.
    Undefined,
    /// A non-point enclosure with an infinite end: could be anything.
    Entire,
    /// Exactly one +inf logit (at k): p is one-hot.
    OnePosInf(usize),
    /// No NaN, no +inf, some finite logit; k* = the largest (lower end).
    Finite(usize),
}

fn classify(z: &[Ival]) -> LogitKind {
    let mut pos = None;
    let mut n_pos = 0;
    let mut kstar: Option<usize> = None;
    let mut entire = false;
    for (k, zk) in z.iter().enumerate() {
        if zk.is_nan() {
            return LogitKind::Undefined;
        }
        if zk.is_finite() {
            let better = match kstar {
                None => true,
                Some(s) => zk.lo > z[s].lo,
            };
            if better {
                kstar = Some(k);
            }
        } else if zk.is_point() {
            if zk.lo.is_sign_positive() {
                n_pos += 1;
                pos = Some(k);
            }
        } else {
            entire = true;
        }
    }
    if entire {
        LogitKind::Entire
    } else if n_pos >= 2 {
        LogitKind::Undefined
    } else if let Some(k) = pos {
        LogitKind::OnePosInf(k)
    } else if let Some(k) = kstar {
        LogitKind::Finite(k)
    } else {
        LogitKind::Undefined
    }
}

/// e^{z − m} for an exact shift m: for a point z whose difference with m is exact (always,
/// once the precision holds both), one exp, rounded down in place, the upper end from the
/// ternary value — no intermediate enclosure.
fn exp_shift(z: &Ival, m: &Float, prec: u32) -> Ival {
    if z.is_point() {
        let (mut d, t) = Float::with_val_round(prec, &z.lo - m, Round::Down);
        if t == Ordering::Equal {
            let te = d.exp_round(Round::Down);
            let mut hi = d.clone();
            if te != Ordering::Equal {
                hi.next_up();
            }
            return Ival { lo: d, hi };
        }
    }
    z.sub(&Ival::from_float(m.clone())).exp()
}

/// g −= a in place, for enclosures with finite ends.
fn sub_assign_finite(g: &mut Ival, a: &Ival) {
    debug_assert!(g.is_finite() && a.is_finite());
    g.lo.sub_assign_round(&a.hi, Round::Down);
    g.hi.sub_assign_round(&a.lo, Round::Up);
}

/// One cross-entropy row from its scaled coefficients (module docs), K the common divisor
/// (`None`: 1): returns l_i and, when `g` is given (the row's C gradient components), writes
/// the scaled gradient components there.
#[allow(clippy::too_many_arguments)]
fn ce_row(
    z: &[Ival],
    coefs: &Coefs,
    k_div: Option<&Ival>,
    red: &RowReduce,
    i: usize,
    g: Option<&mut [Ival]>,
    kap: &mut [f64],
    prec: u32,
) -> Ival {
    let n = z.len();
    if coefs.any_nan() {
        if let Some(g) = g {
            let s = red.scaler(i, None);
            for x in g.iter_mut() {
                *x = red.apply(i, Ival::nan(prec), &s);
            }
        }
        return Ival::nan(prec);
    }
    let div_opt = |x: Ival| match k_div {
        Some(k) => x.div(k),
        None => x,
    };
    match classify(z) {
        LogitKind::Undefined => {
            if let Some(g) = g {
                let s = red.scaler(i, None);
                for x in g.iter_mut() {
                    *x = red.apply(i, Ival::nan(prec), &s);
                }
            }
            Ival::nan(prec)
        }
        LogitKind::Entire => {
            if let Some(g) = g {
                for x in g.iter_mut() {
                    *x = Ival::entire(prec);
                }
            }
            Ival::entire(prec)
        }
        LogitKind::OnePosInf(k) => {
            if let Some(g) = g {
                // (Ã·[j=k] − ã_j) / K
                let s = red.scaler(i, k_div);
                for (j, x) in g.iter_mut().enumerate() {
                    let num = if j == k {
                        coefs.total_except(k, n, prec)
                    } else {
                        match coefs.get(j) {
                            Some(a) => a.neg(),
                            None => continue,
                        }
                    };
                    *x = red.apply(i, num, &s);
                }
            }
            if coefs.any_besides(k, n) {
                Ival::point(prec, f64::INFINITY)
            } else {
                Ival::zero(prec)
            }
        }
        LogitKind::Finite(ks) => {
            let m = &z[ks].lo;
            let mh = Ival::from_float(m.clone());
            // e_k = e^{z_k − m̂} (0 at −inf), S = Σ_{k≠k*} e_k; kept in g while it is needed
            let mut s = Ival::zero(prec);
            let mut no_grad: [Ival; 0] = [];
            let e: &mut [Ival] = match g {
                Some(g) => g,
                None => &mut no_grad,
            };
            let keep = !e.is_empty();
            for (k, zk) in z.iter().enumerate() {
                if k == ks || !zk.is_finite() {
                    continue; // −inf: e = 0 (g starts at exact zeros)
                }
                let ek = exp_shift(zk, m, prec);
                s.add_assign(&ek);
                if keep {
                    e[k] = ek;
                }
            }
            let dks = z[ks].sub(&mh); // exactly 0 for a point
            let (estar, t) = if dks.is_zero() {
                (Ival::one(prec), s.clone())
            } else {
                (dks.exp(), dks.expm1().add(&s))
            };
            let log_z = t.log1p();
            let total = coefs.total(prec);
            // value: (Σ_c ã_c·(m̂ − z_c) + Ã·log1p(T)) / K
            let mut v = Ival::zero(prec);
            coefs.for_each(n, |c, a| {
                if c == ks && dks.is_zero() {
                    return;
                }
                v.add_assign(&a.mul(&mh.sub(&z[c])));
            });
            if !log_z.is_zero() {
                v.add_assign(&total.mul(&log_z));
            }
            let value = div_opt(v);
            if !keep {
                return value;
            }
            let zs = estar.add(&s); // Z = Σ_k e_k
            let kz = match k_div {
                Some(k) => k.mul(&zs),
                None => zs.clone(),
            };
            let s_kz = red.scaler(i, Some(&kz));
            let s_k = red.scaler(i, k_div);
            for (j, x) in e.iter_mut().enumerate() {
                let a = coefs.get(j);
                if j == ks {
                    // (Ã_{≠k*}·e_k* − ã_k*·S) / (K·Z)
                    let mut num = coefs.total_except(ks, n, prec).mul(&estar);
                    if let Some(a) = a {
                        if !s.is_zero() {
                            let t = a.mul(&s);
                            let mags = num.mid_f64().abs() + t.mid_f64().abs();
                            sub_assign_finite(&mut num, &t);
                            kap[j] = kappa_of(mags, &num);
                        }
                    }
                    *x = red.apply(i, num, &s_kz);
                } else if x.is_zero() {
                    // p_j = 0 (a −inf logit): −ã_j / K
                    if let Some(a) = a {
                        *x = red.apply(i, a.neg(), &s_k);
                    }
                } else {
                    // (Ã·e_j − ã_j·Z) / (K·Z), in place over e_j
                    x.mul_assign(&total);
                    if let Some(a) = a {
                        let t = a.mul(&zs);
                        let mags = x.mid_f64().abs() + t.mid_f64().abs();
                        sub_assign_finite(x, &t);
                        kap[j] = kappa_of(mags, x);
                    }
                    red.apply_in_place(i, x, &s_kz);
                }
            }
            value
        }
    }
}

fn cross_entropy(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let rows = checked.rows;
    let nc = checked.dim("C");
    let logits = get(case, inputs, "logits", rows * nc)?;
    let cw = class_weights(inputs, nc)?;
    let eps_f = case.float_param("label_smoothing").unwrap_or(0.0);
    let smooth = eps_f != 0.0;
    let want = wants(case, "logits");
    let one = Ival::one(prec);
    let eps = Ival::point(prec, eps_f);
    let c_iv = Ival::point(prec, nc as f64);
    // C·(1 − ε): the scaled coefficient of the (hard or soft) target term
    let c_one_m_eps = c_iv.mul(&one.sub(&eps));
    let k_div = smooth.then(|| c_iv.clone());
    let w_of = |c: usize| -> &Ival { cw.map_or(&one, |w| &w[c]) };

    let soft: Option<&[Ival]> = if checked.soft {
        Some(get(case, inputs, "target", rows * nc)?)
    } else {
        None
    };
    let ids: Option<&[i64]> = if checked.soft {
        None
    } else {
        Some(class_ids(case, rows)?)
    };
    let (active, yv) = match ids {
        Some(t) => active_classes(case, t, nc)?,
        None => (vec![true; rows], vec![0; rows]), // soft targets: no ignore
    };
    let mut red = RowReduce::new(case, checked, inputs, prec, active, |i| {
        if ids.is_some() {
            cw.map(|w| &w[yv[i]])
        } else {
            None
        }
    })?;

    // ε·w_c, shared by every class-id row when smoothing
    let (base, base_total): (Vec<Option<Ival>>, Ival) = if smooth && ids.is_some() {
        let b: Vec<Option<Ival>> = (0..nc)
            .map(|c| {
                let w = w_of(c);
                (!w.is_zero()).then(|| eps.mul(w))
            })
            .collect();
        let mut t = Ival::zero(prec);
        for x in b.iter().flatten() {
            t.add_assign(x);
        }
        (b, t)
    } else {
        (Vec::new(), Ival::zero(prec))
    };

    let mut g = if want {
        red.zeros_like(rows * nc)
    } else {
        Vec::new()
    };
    let mut kap = if want {
        vec![1.0; rows * nc]
    } else {
        Vec::new()
    };
    for i in 0..rows {
        if !red.is_counted(i) {
            continue;
        }
        let coefs = match soft {
            None => {
                let y = yv[i];
                let wy = w_of(y);
                if !smooth {
                    Coefs::One {
                        y,
                        a: (!wy.is_zero()).then(|| wy.clone()),
                    }
                } else {
                    let extra =
                        (!wy.is_zero() && !c_one_m_eps.is_zero()).then(|| c_one_m_eps.mul(wy));
                    let at_y = match (&base[y], &extra) {
                        (Some(b), Some(e)) => Some(b.add(e)),
                        (Some(b), None) => Some(b.clone()),
                        (None, Some(e)) => Some(e.clone()),
                        (None, None) => None,
                    };
                    Coefs::Smooth {
                        base: &base,
                        base_total: &base_total,
                        y,
                        at_y,
                        extra,
                    }
                }
            }
            Some(q) => {
                let qrow = &q[i * nc..(i + 1) * nc];
                Coefs::Dense(
                    (0..nc)
                        .map(|c| {
                            let w = w_of(c);
                            if w.is_zero() {
                                return None;
                            }
                            let qc = &qrow[c];
                            if !smooth {
                                return (!qc.is_zero()).then(|| w.mul(qc));
                            }
                            let t = if c_one_m_eps.is_zero() {
                                eps.clone()
                            } else {
                                c_one_m_eps.mul(qc).add(&eps)
                            };
                            Some(t.mul(w))
                        })
                        .collect(),
                )
            }
        };
        if !coefs.any() {
            // no term present: exactly 0, gradient exactly 0
            red.add_value(i, Ival::zero(prec));
            continue;
        }
        let z = &logits[i * nc..(i + 1) * nc];
        let gi = want.then(|| &mut g[i * nc..(i + 1) * nc]);
        let ki = if want {
            &mut kap[i * nc..(i + 1) * nc]
        } else {
            &mut kap[..0]
        };
        let l = ce_row(z, &coefs, k_div.as_ref(), &red, i, gi, ki, prec);
        red.add_value(i, l);
    }
    let mut out = raw(red.finish(), "logits", want.then_some(g), Vec::new());
    if want {
        out.grad_kappa.insert("logits".to_string(), kap);
    }
    Ok(out)
}

/// κ = (|a| + |b|) / |a − b| of a gradient numerator a − b (`mags` = |a| + |b|), from f64
/// midpoints: the cancellation of A·p_j − a_j, which limits any finite-precision kernel
/// (DESIGN.md's conditioning rule); 1 where nothing cancels or the result is 0 or undefined.
fn kappa_of(mags: f64, diff: &Ival) -> f64 {
    let d = diff.mid_f64().abs();
    if d > 0.0 && d.is_finite() && mags.is_finite() {
        (mags / d).max(1.0)
    } else {
        1.0
    }
}

// ------------------------------------------------------------------------------- nll

fn nll(case: &Case, checked: &Checked, inputs: &Inputs, prec: u32) -> Result<Raw, LossError> {
    let rows = checked.rows;
    let nc = checked.dim("C");
    let logp = get(case, inputs, "logp", rows * nc)?;
    let cw = class_weights(inputs, nc)?;
    let ids = class_ids(case, rows)?;
    let want = wants(case, "logp");
    let (active, yv) = active_classes(case, ids, nc)?;
    let mut red = RowReduce::new(case, checked, inputs, prec, active, |i| {
        cw.map(|w| &w[yv[i]])
    })?;
    let one = Ival::one(prec);
    let mut g = if want {
        red.zeros_like(rows * nc)
    } else {
        Vec::new()
    };
    for i in 0..rows {
        if !red.is_counted(i) {
            continue;
        }
        let y = yv[i];
        let wy = cw.map_or(&one, |w| &w[y]);
        if wy.is_zero() {
            red.add_value(i, Ival::zero(prec));
            continue;
        }
        let x = &logp[i * nc + y];
        let l = wy.mul(x).neg();
        red.add_value(i, l);
        if want {
            let num = if x.is_nan() {
                Ival::nan(prec)
            } else {
                wy.neg()
            };
            g[i * nc + y] = red.grad(i, num, None);
        }
    }
    Ok(raw(red.finish(), "logp", want.then_some(g), Vec::new()))
}

// ------------------------------------------------------------------------------- multi_margin

fn multi_margin(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let rows = checked.rows;
    let nc = checked.dim("C");
    let scores = get(case, inputs, "scores", rows * nc)?;
    let cw = class_weights(inputs, nc)?;
    let ids = class_ids(case, rows)?;
    let want = wants(case, "scores");
    let margin = Ival::point(
        prec,
        case.float_param("margin")
            .ok_or_else(|| LossError::invalid("multi_margin: missing param margin"))?,
    );
    let p2 = match case.float_param("p") {
        Some(1.0) => false,
        Some(2.0) => true,
        other => {
            return Err(LossError::invalid(format!(
                "multi_margin: p = {other:?} is not 1 or 2"
            )))
        }
    };
    let one = Ival::one(prec);
    let c_iv = Ival::point(prec, nc as f64);
    let mut red = Reducer::new(case, inputs, rows, prec)?;
    let mut g = if want {
        red.zeros(rows * nc)
    } else {
        Vec::new()
    };
    let mut kinks = Vec::new();
    // per row: the derivative factors d_j = p·max(0, u_j)^{p−1} and the kinked j
    let mut d: Vec<Ival> = Vec::new();
    let mut kinked: Vec<usize> = Vec::new();
    for i in 0..rows {
        if !red.is_active(i) {
            continue;
        }
        let y = class_index(case, ids[i], nc)?;
        let wy = cw.map_or(&one, |w| &w[y]);
        if wy.is_zero() || nc < 2 {
            red.add_value(i, Ival::zero(prec));
            continue;
        }
        let x = &scores[i * nc..(i + 1) * nc];
        let base = margin.sub(&x[y]); // m − x_y
        let mut sum = Ival::zero(prec);
        let mut dsum = Ival::zero(prec);
        let mut undefined = false;
        d.clear();
        kinked.clear();
        for (j, xj) in x.iter().enumerate() {
            if j == y {
                d.push(Ival::zero(prec));
                continue;
            }
            let u = base.add(xj);
            let zero = Ival::zero(prec);
            let (term, dj) = match u.sign() {
                Sign::Undefined => {
                    undefined = true;
                    break;
                }
                Sign::Negative => (zero.clone(), zero),
                Sign::Zero => {
                    if !p2 {
                        kinked.push(j);
                    }
                    (zero.clone(), zero)
                }
                Sign::Positive => {
                    if p2 {
                        (u.sqr(), u.mul_2si(1))
                    } else {
                        (u, one.clone())
                    }
                }
                Sign::Straddles => {
                    let up = u.max(&zero);
                    if p2 {
                        (up.sqr(), up.mul_2si(1))
                    } else {
                        (up, one.hull(&zero))
                    }
                }
            };
            sum.add_assign(&term);
            if want {
                dsum.add_assign(&dj);
                d.push(dj);
            }
        }
        if undefined {
            red.add_value(i, Ival::nan(prec));
            if want {
                for j in 0..nc {
                    g[i * nc + j] = red.grad(i, Ival::nan(prec));
                }
            }
            continue;
        }
        // l = w_y·Σ / C: recorded as C·l, the division by C last (Reducer::finish_over)
        red.add_value(i, wy.mul(&sum));
        if !want {
            continue;
        }
        for (j, dj) in d.iter().enumerate() {
            if j != y {
                g[i * nc + j] = red.grad_quotient(i, wy.mul(dj), &c_iv);
            }
        }
        let gy_num = wy.mul(&dsum).neg();
        if !kinked.is_empty() {
            let mut members = Vec::with_capacity(kinked.len() + 1);
            for &j in &kinked {
                members.push((
                    "scores".to_string(),
                    i * nc + j,
                    Ival::zero(prec),
                    red.grad_quotient(i, wy.clone(), &c_iv),
                ));
            }
            let k = Ival::point(prec, kinked.len() as f64);
            let hi_num = gy_num.sub(&wy.mul(&k));
            members.push((
                "scores".to_string(),
                i * nc + y,
                red.grad_quotient(i, gy_num.clone(), &c_iv),
                red.grad_quotient(i, hi_num, &c_iv),
            ));
            kinks.push(RawKinkGroup {
                primitive: MULTI_MARGIN_KINK,
                members,
            });
        }
        g[i * nc + y] = red.grad_quotient(i, gy_num, &c_iv);
    }
    Ok(raw(
        red.finish_over(&c_iv),
        "scores",
        want.then_some(g),
        kinks,
    ))
}
