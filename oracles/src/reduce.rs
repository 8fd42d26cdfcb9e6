//! The reduction policies of DESIGN.md for losses whose unreduced output is one term per output
//! element (elementwise losses; row-wise families whose inputs each belong to one row).
//!
//! With mask m, weight w (absent = 1), unreduced terms l_i and cotangent c (absent = 1):
//!
//! - `none`: out_i = m_i·w_i·l_i (exactly 0 at a masked or zero-weight position);
//! - `sum`:  Σ m_i·w_i·l_i;
//! - `mean`: Σ m_i·w_i·l_i / D, D = Σ m_i·w_i; **an empty mean (D exactly 0) is 0**, value and
//!   every gradient;
//! - termwise gradients: ∂/∂x_j = m_j·w_j·∂l_j/∂x_j · c_j / D (D = 1 unless `mean`), so a NaN
//!   term never poisons another component.
//!
//! A row is *active* when m_i = 1 and w_i ≠ 0; inactive rows are never evaluated (a NaN or inf
//! sitting there cannot leak) and contribute exact zeros. Since weights are finite and ≥ 0, D
//! is exactly 0 if and only if no row is active.
//!
//! Usage by a family: create a [`Reducer`], and for each row with [`Reducer::is_active`] compute
//! l_i and pass it to [`Reducer::add_value`]; turn each local derivative ∂l_i/∂x into its
//! gradient component with [`Reducer::grad`]; finally [`Reducer::finish`] gives the value components and κ.

use crate::ival::Ival;
use crate::Inputs;
use losscheck_core::{Case, LossError, Reduction};
use rug::float::Round;
use rug::ops::AddAssignRound;
use rug::Float;

/// The cotangent, as the reduction sees it.
#[derive(Clone, Debug)]
enum Cot {
    /// Absent: 1.
    One,
    /// `sum` / `mean`: one scalar.
    Scalar(Ival),
    /// `none`: one per output element.
    Vector(Vec<Ival>),
}

/// Accumulates the value and scales the gradients of one case at one working precision.
#[derive(Clone, Debug)]
pub struct Reducer {
    reduction: Reduction,
    prec: u32,
    rows: usize,
    active: Vec<bool>,
    n_active: usize,
    weight: Option<Vec<Ival>>,
    cot: Cot,
    /// `mean`: D.
    denom: Option<Ival>,
    sum: Ival,
    /// Upper bound on Σ|a_i| (for κ).
    abs_hi: Float,
    all_nonneg: bool,
    all_nonpos: bool,
    none_values: Vec<Ival>,
}

impl Reducer {
    /// Set up the reduction of `rows` output elements: reads `mask` (i64) from the case and
    /// `weight` and `cotangent` from `inputs` (enclosures; points for exact cases). Shapes are
    /// assumed validated; a length mismatch is an internal error.
    pub fn new(case: &Case, inputs: &Inputs, rows: usize, prec: u32) -> Result<Reducer, LossError> {
        let reduction = case.reduction();
        if reduction == Reduction::SequenceMean {
            return Err(LossError::unsupported(
                "sequence_mean is not an elementwise reduction",
            ));
        }
        let mut active = vec![true; rows];
        if let Some(m) = case.inputs.get("mask") {
            let m = m
                .i()
                .ok_or_else(|| LossError::internal("mask is not an i64 tensor"))?;
            if m.len() != rows {
                return Err(LossError::internal(format!(
                    "mask has {} elements, expected {rows}",
                    m.len()
                )));
            }
            for (a, &v) in active.iter_mut().zip(m) {
                *a &= v != 0;
            }
        }
        let weight = match inputs.get("weight") {
            Some(w) => {
                if w.len() != rows {
                    return Err(LossError::internal(format!(
                        "weight has {} elements, expected {rows}",
                        w.len()
                    )));
                }
                for (a, wi) in active.iter_mut().zip(w) {
                    *a &= !wi.is_zero();
                }
                Some(w.clone())
            }
            None => None,
        };
        let n_active = active.iter().filter(|&&a| a).count();
        let cot = match inputs.get("cotangent") {
            None => Cot::One,
            Some(c) if reduction == Reduction::None => {
                if c.len() != rows {
                    return Err(LossError::internal(format!(
                        "cotangent has {} elements, expected {rows}",
                        c.len()
                    )));
                }
                Cot::Vector(c.clone())
            }
            Some(c) => {
                if c.len() != 1 {
                    return Err(LossError::internal(format!(
                        "cotangent has {} elements, expected 1",
                        c.len()
                    )));
                }
                Cot::Scalar(c[0].clone())
            }
        };
        let denom = match reduction {
            Reduction::None | Reduction::Sum => None,
            _ => {
                if n_active == 0 {
                    None
                } else {
                    let mut d = Ival::zero(prec);
                    match &weight {
                        Some(w) => {
                            for (wi, _) in w.iter().zip(&active).filter(|(_, &a)| a) {
                                d.add_assign(wi);
                            }
                        }
                        None => d = Ival::point(prec, n_active as f64),
                    }
                    Some(d)
                }
            }
        };
        Ok(Reducer {
            reduction,
            prec,
            rows,
            active,
            n_active,
            weight,
            cot,
            denom,
            sum: Ival::zero(prec),
            abs_hi: Float::new(prec),
            all_nonneg: true,
            all_nonpos: true,
            none_values: Vec::new(),
        })
    }

    /// Number of output elements.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of active rows (m = 1, w ≠ 0).
    pub fn n_active(&self) -> usize {
        self.n_active
    }

    /// Does row i contribute (m_i = 1 and w_i ≠ 0)? Inactive rows must not be evaluated.
    #[inline]
    pub fn is_active(&self, i: usize) -> bool {
        self.active[i]
    }

    /// The mean's denominator D = Σ m·w (`None` unless `mean` with an active row).
    pub fn denominator(&self) -> Option<&Ival> {
        self.denom.as_ref()
    }

    /// Record the unreduced term l_i of an active row.
    pub fn add_value(&mut self, i: usize, l: Ival) {
        debug_assert!(self.active[i]);
        let mut a = l;
        if let Some(w) = &self.weight {
            a.mul_assign(&w[i]);
        }
        if self.reduction == Reduction::None {
            if self.none_values.is_empty() {
                self.none_values = vec![Ival::zero(self.prec); self.rows];
            }
            self.none_values[i] = a;
            return;
        }
        if !a.is_nan() {
            self.all_nonneg &= a.lo >= 0;
            self.all_nonpos &= a.hi <= 0;
            let (l, h) = (a.lo.as_abs(), a.hi.as_abs());
            let m: &Float = if *l > *h { &l } else { &h };
            self.abs_hi.add_assign_round(m, Round::Up);
        }
        self.sum.add_assign(&a);
    }

    /// The termwise gradient component ∂l_i/∂x · m_i·w_i·c_i / D of an active row, for a local
    /// derivative `dl` = ∂l_i/∂x of an input x of row i.
    ///
    /// The products come first and the division by D last: with point operands every product
    /// becomes exact once the precision suffices, and a correctly rounded quotient that is
    /// representable is exact in both directions — so an exact dyadic result (a rounding
    /// midpoint, say) ends up as a point enclosure instead of straddling itself forever.
    ///
    /// An exact zero factor — a local derivative that is exactly 0 at these inputs, or a zero
    /// cotangent — makes the component exactly 0 even against an infinite factor: the limit of
    /// 0·c as c → ±inf is 0 (docs/policies/zero-times-inf.md). The kernels do the same.
    pub fn grad(&self, i: usize, dl: Ival) -> Ival {
        debug_assert!(self.active[i]);
        let cot_zero = match &self.cot {
            Cot::One => false,
            Cot::Scalar(c) => c.is_zero(),
            Cot::Vector(v) => v[i].is_zero(),
        };
        if dl.is_zero() || cot_zero {
            return Ival::zero(self.prec);
        }
        let mut g = dl;
        if let Some(w) = &self.weight {
            g.mul_assign(&w[i]);
        }
        match &self.cot {
            Cot::One => {}
            Cot::Scalar(c) => g.mul_assign(c),
            Cot::Vector(v) => g.mul_assign(&v[i]),
        }
        if let Some(d) = &self.denom {
            g.div_assign(d);
        }
        g
    }

    /// [`Reducer::grad`] for a local derivative given as a quotient num/den: the component
    /// num·m_i·w_i·c_i / (den·D), with the one division last, so that a result that is exactly
    /// dyadic (say bce's (p − t)/(p(1 − p)) times a weight that cancels the odd factors of the
    /// denominator) ends up as a point enclosure instead of straddling a rounding midpoint at
    /// every precision. An exact zero numerator or cotangent gives exactly 0, as in
    /// [`Reducer::grad`]; `den` must be certainly non-zero.
    pub fn grad_quotient(&self, i: usize, num: Ival, den: &Ival) -> Ival {
        debug_assert!(self.active[i]);
        let cot_zero = match &self.cot {
            Cot::One => false,
            Cot::Scalar(c) => c.is_zero(),
            Cot::Vector(v) => v[i].is_zero(),
        };
        if num.is_zero() || cot_zero {
            return Ival::zero(self.prec);
        }
        let mut g = num;
        if let Some(w) = &self.weight {
            g.mul_assign(&w[i]);
        }
        match &self.cot {
            Cot::One => {}
            Cot::Scalar(c) => g.mul_assign(c),
            Cot::Vector(v) => g.mul_assign(&v[i]),
        }
        match &self.denom {
            Some(d) => g.div(&den.mul(d)),
            None => g.div(den),
        }
    }

    /// A gradient vector of exact zeros (what inactive positions get).
    pub fn zeros(&self, n: usize) -> Vec<Ival> {
        vec![Ival::zero(self.prec); n]
    }

    /// [`Reducer::finish`] for terms recorded as `den`·l_i, with `den` a denominator common to
    /// every term (certainly non-zero; e.g. `multi_margin`'s C): each value component is
    /// divided by `den` once — together with D for `mean`, as D·den — so that a result that is
    /// exactly dyadic (a rounding midpoint, say) ends up as a point enclosure, where dividing
    /// each term by `den` first and multiplying by its weight afterwards would straddle it at
    /// every precision. κ is unchanged by the common factor.
    pub fn finish_over(self, den: &Ival) -> (Vec<Ival>, Vec<f64>) {
        let none = self.reduction == Reduction::None;
        let empty = self.n_active == 0;
        let total = self.denom.as_ref().map(|d| d.mul(den));
        let (mut values, kappa) = Reducer {
            denom: None,
            ..self
        }
        .finish();
        if none {
            for v in &mut values {
                if !v.is_zero() {
                    *v = v.div(den);
                }
            }
        } else if !empty {
            values[0] = values[0].div(total.as_ref().unwrap_or(den));
        }
        (values, kappa)
    }

    /// The value components (one per output element for `none`, one otherwise) and κ per
    /// component (empty for `none`, where every κ is 1).
    pub fn finish(self) -> (Vec<Ival>, Vec<f64>) {
        if self.reduction == Reduction::None {
            let v = if self.none_values.is_empty() {
                vec![Ival::zero(self.prec); self.rows]
            } else {
                self.none_values
            };
            return (v, Vec::new());
        }
        if self.n_active == 0 {
            return (vec![Ival::zero(self.prec)], vec![1.0]);
        }
        let kappa =
            if self.sum.is_nan() || !self.sum.is_finite() || self.all_nonneg || self.all_nonpos {
                1.0
            } else {
                // κ = Σ|a| / |Σ a|, bounded above: Σ|a|.hi / |S|.lo.
                let s = self.sum.abs();
                if s.lo.is_zero() {
                    f64::INFINITY
                } else {
                    let k = Float::with_val_round(self.prec, &self.abs_hi / &s.lo, Round::Up).0;
                    k.to_f64_round(Round::Up).max(1.0)
                }
            };
        let value = match &self.denom {
            Some(d) => self.sum.div(d),
            None => self.sum,
        };
        (vec![value], vec![kappa])
    }
}
