//! Metamorphic relations (DESIGN.md, "Metamorphic relations") for elementwise losses — the
//! regression family and the elementwise classification losses (`bce`, `bce_logits`, `hinge`,
//! `focal`: integer labels and a broadcast `pos_weight` are handled by the case surgery) —
//! checked on **both** sides: a [`Subject`] (the kernels, or anyone's
//! implementation) and the oracle itself.
//!
//! Each relation takes a base case (plus what it needs: a tail to append, a seed for a
//! permutation, a second batch, a power of two), builds the related cases, evaluates them on a
//! [`Side`], and returns `Ok(Held)` (how many components were compared, how many were not
//! applicable) or `Err(description of the break)`.
//!
//! How a relation is judged:
//!
//! - **exact scalings** (`mean = sum / D` with D a power of two, duplication, weights scaled by
//!   2^k): the related exact results differ by a power of two, so their correct roundings do too
//!   (outside the subnormal range and overflow, where the comparison is skipped). A subject's
//!   two answers must then be within the *sum of both sides' tolerances*, in ulps (ordinal
//!   distance, which a power-of-two scaling preserves): each side's allowance is
//!   `compare::tolerance` plus the conditioning term κ·2⁻⁵³·|exact| (in ulps at R), exactly what
//!   `compare::judge` allows. The oracle's allowance is 0 (1 ulp for a hard case): its rounded
//!   results must satisfy the relation bit for bit.
//! - **policy identities** (appending masked or zero-weight elements holding anything — NaN and
//!   ±inf included —, permuting the batch): the policy says the extra elements contribute
//!   nothing and that terms are independent, so the subject's answers must be **bitwise**
//!   identical (reduced values, the `none` outputs and the gradients, permuted), and the
//!   appended positions' outputs and gradients exactly 0. A permuted *reduced* value may differ
//!   by summation order: it is judged by tolerance.
//! - **concatenation** combines sums exactly and means by their denominators
//!   (M_ab = (D_a·M_a + D_b·M_b)/(D_a + D_b) — what catches double averaging). For the oracle the
//!   combination is computed in interval arithmetic from its enclosures and must intersect the
//!   enclosure of the concatenated case; for a subject, in f64 from its answers, within the sum
//!   of the three answers' error bounds (tolerance·ulp + half an ulp of R each, the combination's
//!   weights applied).

pub mod contrastive;
pub mod multiclass;
pub mod pairwise;
pub mod probabilistic;

use crate::check::compare;
use crate::check::subject::Subject;
use losscheck_core::dtype::pow2;
use losscheck_core::{Case, Data, Dtype, Reduction, Tensor};
use losscheck_oracles::{Exact, Ival};
use std::collections::BTreeMap;

/// Where a relation is checked.
#[derive(Clone, Copy)]
pub enum Side<'a> {
    /// The MPFR oracle's correctly rounded results.
    Oracle,
    /// An implementation under test.
    Subject(&'a dyn Subject),
}

impl Side<'_> {
    pub fn name(&self) -> String {
        match self {
            Side::Oracle => "oracle".into(),
            Side::Subject(s) => s.name(),
        }
    }
}

/// What a relation that held compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Components compared.
    pub compared: usize,
    /// Components where the relation is not exact (subnormal or overflowing results) and was
    /// not judged.
    pub skipped: usize,
}

impl std::ops::AddAssign for Held {
    fn add_assign(&mut self, o: Held) {
        self.compared += o.compared;
        self.skipped += o.skipped;
    }
}

/// The outcome of one relation on one base case.
pub type Outcome = Result<Held, String>;

/// One output component as a side answered it.
#[derive(Clone, Debug)]
pub struct Comp {
    /// The side's answer.
    pub x: f64,
    /// Its allowance in ulps around R (0 for the oracle, 1 for a hard case).
    pub tol: f64,
    /// The oracle's exact result for this component.
    pub exact: Exact,
}

impl Comp {
    /// The exact result is an infinity (a point enclosure at ±inf: not an overflow).
    fn exact_inf(&self) -> bool {
        let e = &self.exact.enclosure;
        e.is_point() && !e.is_finite()
    }
    /// A bound on |x − exact|: tol·ulp(max(|x|, |R|)) + ulp(R)/2.
    fn err_bound(&self, dtype: Dtype) -> f64 {
        let r = self.exact.rounded;
        self.tol * dtype.ulp_at(self.x.abs().max(r.abs())) + dtype.ulp_at(r) / 2.0
    }
}

/// A case as one side answered it, with the oracle's exact results.
#[derive(Clone, Debug)]
pub struct Observed {
    pub value: Vec<Comp>,
    pub grads: BTreeMap<String, Vec<Comp>>,
}

fn hard_tol(e: &Exact) -> f64 {
    if e.hard.is_some() {
        1.0
    } else {
        0.0
    }
}

/// Evaluate a case on a side (the oracle is always evaluated: it gives the tolerances and tells
/// where a relation is exact).
pub fn observe(case: &Case, side: Side) -> Result<Observed, String> {
    let o = losscheck_oracles::evaluate(case).map_err(|e| {
        format!(
            "oracle error on a valid case: {e}\n  case: {}",
            case.to_json()
        )
    })?;
    match side {
        Side::Oracle => Ok(Observed {
            value: o
                .value
                .iter()
                .map(|e| Comp {
                    x: e.rounded,
                    tol: hard_tol(e),
                    exact: e.clone(),
                })
                .collect(),
            grads: o
                .grads
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.iter()
                            .map(|e| Comp {
                                x: e.rounded,
                                tol: hard_tol(e),
                                exact: e.clone(),
                            })
                            .collect(),
                    )
                })
                .collect(),
        }),
        Side::Subject(s) => {
            let r = s.eval(case).map_err(|e| {
                format!(
                    "{} error on a valid case: {e}\n  case: {}",
                    s.name(),
                    case.to_json()
                )
            })?;
            let tol = compare::tolerance(&case.loss, case.out_dtype);
            if r.value.len() != o.value.len() {
                return Err(format!(
                    "{}: value has {} components, expected {}\n  case: {}",
                    s.name(),
                    r.value.len(),
                    o.value.len(),
                    case.to_json()
                ));
            }
            let value = o
                .value
                .iter()
                .enumerate()
                .map(|(k, e)| Comp {
                    x: r.value.get_f64(k),
                    tol: tol.value_ulps
                        + compare::conditioning_ulps(case.out_dtype, e)
                        + hard_tol(e),
                    exact: e.clone(),
                })
                .collect();
            let mut grads = BTreeMap::new();
            for (name, ex) in &o.grads {
                let t = r.grad.get(name).ok_or_else(|| {
                    format!(
                        "{}: missing gradient {name}\n  case: {}",
                        s.name(),
                        case.to_json()
                    )
                })?;
                if t.len() != ex.len() {
                    return Err(format!(
                        "{}: gradient {name} has {} components, expected {}",
                        s.name(),
                        t.len(),
                        ex.len()
                    ));
                }
                grads.insert(
                    name.clone(),
                    ex.iter()
                        .enumerate()
                        .map(|(k, e)| Comp {
                            x: t.get_f64(k),
                            tol: tol.grad_ulps + hard_tol(e),
                            exact: e.clone(),
                        })
                        .collect(),
                );
            }
            Ok(Observed { value, grads })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Case surgery (elementwise cases: every input the same shape; the cotangent the output's
// shape for `none`, [] otherwise).

/// The data inputs of an elementwise case (not weight, mask or cotangent), in name order.
pub fn data_inputs(case: &Case) -> Vec<String> {
    case.inputs
        .keys()
        .filter(|k| !matches!(k.as_str(), "weight" | "mask" | "cotangent"))
        .cloned()
        .collect()
}

fn numel(case: &Case) -> usize {
    data_inputs(case)
        .first()
        .map(|k| case.inputs[k].len())
        .unwrap_or(0)
}

/// The case with a broadcast `pos_weight` ([C] over an elementwise shape [.., C]) expanded to
/// the elementwise shape (the same per-element math); other cases unchanged.
pub fn expand_pos_weight(case: &Case) -> Case {
    let mut c = case.clone();
    let Some(pw) = case.inputs.get("pos_weight") else {
        return c;
    };
    let Some(x) = data_inputs(case)
        .into_iter()
        .find(|k| k != "pos_weight")
        .map(|k| case.inputs[&k].clone())
    else {
        return c;
    };
    if pw.shape == x.shape {
        return c;
    }
    let v = pw.f().unwrap_or(&[]);
    let n = x.len();
    let data: Vec<f64> = if v.is_empty() {
        vec![1.0; n] // C = 0 only with no elements
    } else {
        (0..n).map(|i| v[i % v.len()]).collect()
    };
    c.inputs.insert(
        "pos_weight".into(),
        Tensor::float(case.dtype, x.shape.clone(), data),
    );
    c
}

/// The case with an elementwise `pos_weight` of ones (the same as none) where it has none
/// (`bce_logits` only).
pub fn with_unit_pos_weight(case: &Case) -> Case {
    let mut c = case.clone();
    if case.loss == "bce_logits" && !c.inputs.contains_key("pos_weight") {
        let x = &case.inputs["logit"];
        c.inputs.insert(
            "pos_weight".into(),
            Tensor::float(case.dtype, x.shape.clone(), vec![1.0; x.len()]),
        );
    }
    c
}

/// The case with every elementwise input flattened to 1-D (the cotangent too, for `none`); a
/// broadcast `pos_weight` is expanded first.
pub fn flatten(case: &Case) -> Case {
    let mut c = expand_pos_weight(case);
    let n = numel(case);
    let none = case.reduction() == Reduction::None;
    for (k, t) in c.inputs.iter_mut() {
        if k != "cotangent" || none {
            t.shape = vec![n];
        }
    }
    c
}

/// Add a mask of ones and/or unit weights where absent (1-D cases).
pub fn with_mask_weight(case: &Case, mask: bool, weight: bool) -> Case {
    let mut c = case.clone();
    let n = numel(case);
    let shape = c.inputs[&data_inputs(case)[0]].shape.clone();
    if mask && !c.inputs.contains_key("mask") {
        c.inputs
            .insert("mask".into(), Tensor::int(shape.clone(), vec![1; n]));
    }
    if weight && !c.inputs.contains_key("weight") {
        c.inputs
            .insert("weight".into(), Tensor::float(c.dtype, shape, vec![1.0; n]));
    }
    c
}

fn with_reduction(case: &Case, r: Reduction, scalar_cot: Option<f64>) -> Case {
    let mut c = case.clone();
    let was_none = c.reduction() == Reduction::None;
    c.set_reduction(r);
    if was_none != (r == Reduction::None) {
        c.inputs.remove("cotangent");
        if let (Some(x), false) = (scalar_cot, r == Reduction::None) {
            c.inputs
                .insert("cotangent".into(), Tensor::scalar(c.dtype, x));
        }
    }
    c
}

/// The scalar cotangent of a reduced case (or the first of a `none` one's, or none).
fn scalar_cotangent(case: &Case) -> Option<f64> {
    case.inputs
        .get("cotangent")
        .and_then(|t| t.f())
        .and_then(|v| v.first().copied())
}

fn f(case: &Case, name: &str) -> Vec<f64> {
    case.inputs
        .get(name)
        .and_then(|t| t.f())
        .map(|v| v.to_vec())
        .unwrap_or_default()
}

/// Active positions: mask 1 (or absent) and weight ≠ 0 (or absent).
fn active(case: &Case) -> Vec<bool> {
    let n = numel(case);
    let m = case
        .inputs
        .get("mask")
        .and_then(|t| t.i())
        .map(|v| v.to_vec());
    let w = case
        .inputs
        .get("weight")
        .and_then(|t| t.f())
        .map(|v| v.to_vec());
    (0..n)
        .map(|i| m.as_ref().map_or(true, |m| m[i] != 0) && w.as_ref().map_or(true, |w| w[i] != 0.0))
        .collect()
}

/// D = Σ m·w as an exact enclosure.
fn denominator(case: &Case) -> Ival {
    let prec = 1200; // every sum of f32 values is exact here
    let w = case
        .inputs
        .get("weight")
        .and_then(|t| t.f())
        .map(|v| v.to_vec());
    let mut d = Ival::zero(prec);
    for (i, a) in active(case).into_iter().enumerate() {
        if a {
            d = d.add(&Ival::point(prec, w.as_ref().map_or(1.0, |w| w[i])));
        }
    }
    d
}

fn d_f64(d: &Ival) -> f64 {
    d.mid_f64()
}

/// Concatenate two 1-D cases of the same loss (b takes a's params, reduction, dtypes, grads and
/// scalar cotangent); masks / weights of ones are added where only one side has them.
pub fn concat(a: &Case, b: &Case) -> Case {
    let (a, b) = (flatten(a), flatten(b));
    let mask = a.inputs.contains_key("mask") || b.inputs.contains_key("mask");
    let weight = a.inputs.contains_key("weight") || b.inputs.contains_key("weight");
    let (mut a, mut b) = (a, b);
    if a.inputs.contains_key("pos_weight") || b.inputs.contains_key("pos_weight") {
        a = with_unit_pos_weight(&a);
        b = with_unit_pos_weight(&b);
    }
    let a = with_mask_weight(&a, mask, weight);
    let mut b = with_mask_weight(&b, mask, weight);
    b.params = a.params.clone();
    b.out_dtype = a.out_dtype;
    b.grad = a.grad.clone();
    let none = a.reduction() == Reduction::None;
    if none {
        // b's `none` cotangent: its own if it has one (and a has), else ones.
        let nb = numel(&b);
        match (
            a.inputs.contains_key("cotangent"),
            b.inputs.get("cotangent").filter(|t| t.len() == nb).cloned(),
        ) {
            (true, Some(t)) => {
                b.inputs.insert("cotangent".into(), t);
            }
            (true, None) => {
                b.inputs.insert(
                    "cotangent".into(),
                    Tensor::float(b.dtype, vec![nb], vec![1.0; nb]),
                );
            }
            (false, _) => {
                b.inputs.remove("cotangent");
            }
        }
    }
    let na = numel(&a);
    let nb = numel(&b);
    let mut c = a.clone();
    for (k, ta) in &a.inputs {
        if k == "cotangent" && !none {
            continue;
        }
        let tb = &b.inputs[k];
        let t = match (&ta.data, &tb.data) {
            (Data::F(x), Data::F(y)) => {
                Tensor::float(a.dtype, vec![na + nb], x.iter().chain(y).copied().collect())
            }
            (Data::I(x), Data::I(y)) => {
                Tensor::int(vec![na + nb], x.iter().chain(y).copied().collect())
            }
            _ => panic!("input {k}: mixed tensor kinds"),
        };
        c.inputs.insert(k.clone(), t);
    }
    c
}

/// A 1-D case with `tail` appended (one row per element: a value per data input, in
/// [`data_inputs`] order), each appended element inactive: mask 0 when `masked`, else weight 0.
/// The appended cotangent (`none`) is 1.
pub fn append_inactive(case: &Case, tail: &[Vec<f64>], masked: bool) -> Case {
    let base = with_mask_weight(&flatten(case), masked, !masked);
    let names = data_inputs(&base);
    let k = tail.len();
    let mut t = Case {
        inputs: BTreeMap::new(),
        ..base.clone()
    };
    for (c, name) in names.iter().enumerate() {
        let col: Vec<f64> = tail
            .iter()
            .map(|row| base.dtype.round(row.get(c).copied().unwrap_or(0.0)))
            .collect();
        let tensor = if matches!(base.inputs[name].data, Data::I(_)) {
            // integer labels (hinge's ±1): an inactive position may hold any i64
            Tensor::int(
                vec![k],
                col.iter()
                    .map(|&x| if x.is_nan() { 0 } else { x as i64 })
                    .collect(),
            )
        } else {
            Tensor::float(base.dtype, vec![k], col)
        };
        t.inputs.insert(name.clone(), tensor);
    }
    if masked {
        t.inputs
            .insert("mask".into(), Tensor::int(vec![k], vec![0; k]));
        if base.inputs.contains_key("weight") {
            t.inputs.insert(
                "weight".into(),
                Tensor::float(base.dtype, vec![k], vec![1.0; k]),
            );
        }
    } else {
        t.inputs.insert(
            "weight".into(),
            Tensor::float(base.dtype, vec![k], vec![0.0; k]),
        );
        if base.inputs.contains_key("mask") {
            t.inputs
                .insert("mask".into(), Tensor::int(vec![k], vec![1; k]));
        }
    }
    if base.reduction() == Reduction::None && base.inputs.contains_key("cotangent") {
        t.inputs.insert(
            "cotangent".into(),
            Tensor::float(base.dtype, vec![k], vec![1.0; k]),
        );
    }
    concat(&base, &t)
}

/// A permutation of 0..n from a seed (Fisher–Yates driven by splitmix64).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = crate::check::gen::splitmix64(s);
        let j = (s % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// The case with its elements permuted: element i of the result is element `perm[i]`.
pub fn permute(case: &Case, perm: &[usize]) -> Case {
    let mut c = case.clone();
    let n = numel(case);
    let none = case.reduction() == Reduction::None;
    for (k, t) in c.inputs.iter_mut() {
        if (k == "cotangent" && !none) || t.len() != n {
            continue;
        }
        t.data = match &t.data {
            Data::F(v) => Data::F(perm.iter().map(|&j| v[j]).collect()),
            Data::I(v) => Data::I(perm.iter().map(|&j| v[j]).collect()),
        };
    }
    c
}

/// The case made to have a power-of-two denominator D = Σ m·w: a power of two `m` of its active
/// elements stay active (the rest masked), and when it has weights, every active weight becomes
/// one power of two c (pairs then trade c/4 or c/2 so weights differ but still sum to m·c).
/// Returns the case and D.
pub fn pow2_denominator(case: &Case, trade: bool) -> (Case, f64) {
    let mut c = flatten(case);
    let act = active(&c);
    let v = act.iter().filter(|&&a| a).count();
    if v == 0 {
        return (c, 0.0);
    }
    let m = 1usize << (usize::BITS - 1 - v.leading_zeros());
    let has_w = c.inputs.contains_key("weight");
    let dtype = c.dtype;
    // keep the first m active, mask the others
    let mut keep = act.clone();
    let mut seen = 0;
    for k in keep.iter_mut() {
        if *k {
            seen += 1;
            if seen > m {
                *k = false;
            }
        }
    }
    if v > m {
        c = with_mask_weight(&c, true, false);
        let mask = c.inputs.get_mut("mask").unwrap().i_mut().unwrap();
        for (i, &a) in act.iter().enumerate() {
            if a && !keep[i] {
                mask[i] = 0;
            }
        }
    }
    let mut d = m as f64;
    if has_w {
        let w = f(&c, "weight");
        let first = w
            .iter()
            .zip(&keep)
            .find(|(_, &k)| k)
            .map(|(&x, _)| x)
            .unwrap_or(1.0);
        // c = the power of two at or below the first active weight, kept ≥ 4·min normal so
        // c/4 stays normal, and m·c·1.5 below the max
        let fmt = dtype.format();
        let mut e = if first > 0.0 {
            losscheck_core::dtype::exponent(first)
        } else {
            0
        };
        e = e.clamp(
            fmt.emin + 2,
            fmt.emax - 1 - (usize::BITS - m.leading_zeros()) as i32,
        );
        let cw = pow2(e);
        let wm = c.inputs.get_mut("weight").unwrap().f_mut().unwrap();
        let idx: Vec<usize> = keep
            .iter()
            .enumerate()
            .filter(|(_, &k)| k)
            .map(|(i, _)| i)
            .collect();
        for &i in &idx {
            wm[i] = cw;
        }
        if trade {
            for (p, pair) in idx.chunks(2).enumerate() {
                if pair.len() == 2 {
                    let (x, y) = if p % 2 == 0 { (0.75, 1.25) } else { (1.5, 0.5) };
                    wm[pair[0]] = dtype.round(cw * x);
                    wm[pair[1]] = dtype.round(cw * y);
                }
            }
        }
        d = m as f64 * cw;
    }
    (c, d)
}

/// Multiply every weight (unit weights added if absent) by 2^k, with |k| reduced until every
/// scaled weight is a normal (or zero) finite value of the dtype. Returns the case and the k used.
pub fn scale_weights(case: &Case, k: i32) -> (Case, i32) {
    let c = with_mask_weight(&flatten(case), false, true);
    let w = f(&c, "weight");
    let dtype = c.dtype;
    let ok = |k: i32| {
        w.iter().all(|&x| {
            let y = x * pow2(k);
            x == 0.0
                || (y.is_finite()
                    && y.abs() >= dtype.min_normal()
                    && y <= dtype.max()
                    && dtype.round(y) == y)
        })
    };
    let mut k = k;
    while k != 0 && !ok(k) {
        k -= k.signum();
    }
    let mut out = c.clone();
    let s = pow2(k);
    for x in out.inputs.get_mut("weight").unwrap().f_mut().unwrap() {
        *x *= s;
    }
    (out, k)
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

fn dtype_of(case: &Case, output: &str) -> Dtype {
    if output == "value" {
        case.out_dtype
    } else {
        case.dtype
    }
}

fn show(x: f64) -> String {
    format!("{x:?}")
}

fn same_bits(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// The components of an observation: ("value", comps), ("grad.x", comps) …
fn outputs(o: &Observed) -> Vec<(String, &Vec<Comp>)> {
    let mut v = vec![("value".to_string(), &o.value)];
    for (k, g) in &o.grads {
        v.push((format!("grad.{k}"), g));
    }
    v
}

/// a = s·b exactly in the reals (s a power of two): judged within a.tol + b.tol ulps where the
/// relation survives rounding; NaN must match NaN, exact infinities must match.
fn check_scaled(
    h: &mut Held,
    dtype: Dtype,
    label: &str,
    a: &Comp,
    b: &Comp,
    s: f64,
) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{label}: {} vs {} × {}: {why}",
            show(a.x),
            show(s),
            show(b.x)
        ))
    };
    if a.x.is_nan() || b.x.is_nan() {
        h.compared += 1;
        return if a.x.is_nan() && b.x.is_nan() {
            Ok(())
        } else {
            bad("NaN on one side only")
        };
    }
    if a.exact_inf() || b.exact_inf() {
        h.compared += 1;
        return if a.x == s * b.x {
            Ok(())
        } else {
            bad("exact infinities differ")
        };
    }
    let y = s * b.x;
    let ry = s * b.exact.rounded;
    let outside = |x: f64| {
        !x.is_finite() || (x != 0.0 && x.abs() < dtype.min_normal()) || x.abs() > dtype.max()
    };
    // a rounded 0 stands for an exact 0 only when the enclosure is the point 0 (else: underflow)
    let underflowed = |c: &Comp| c.exact.rounded == 0.0 && !c.exact.enclosure.is_zero();
    // the exact value itself must lie in the normal range: just below the min normal (or above
    // the max) it may round onto the normal grid while its scaled image rounds on a finer one
    let beyond = |c: &Comp| {
        let m = c.exact.magnitude();
        m > dtype.max() || (m != 0.0 && m < dtype.min_normal())
    };
    if outside(a.x)
        || outside(b.x)
        || outside(y)
        || outside(a.exact.rounded)
        || outside(b.exact.rounded)
        || outside(ry)
        || underflowed(a)
        || underflowed(b)
        || beyond(a)
        || beyond(b)
    {
        h.skipped += 1;
        return Ok(());
    }
    h.compared += 1;
    let u = dtype.ulps(a.x, y);
    if u <= a.tol + b.tol {
        Ok(())
    } else {
        bad(&format!("{u} ulps apart, allowed {} + {}", a.tol, b.tol))
    }
}

/// Every output of `a` equals `s` times that of `b`, component by component through `map`
/// (index in a → index in b), for outputs whose scale is `scale(output)`.
fn check_all_scaled(
    h: &mut Held,
    case: &Case,
    oa: &Observed,
    ob: &Observed,
    map: &dyn Fn(usize) -> usize,
    scale: &dyn Fn(&str) -> f64,
) -> Result<(), String> {
    let ob_out: BTreeMap<String, &Vec<Comp>> = outputs(ob).into_iter().collect();
    for (name, ca) in outputs(oa) {
        let Some(cb) = ob_out.get(&name) else {
            continue;
        };
        let dtype = dtype_of(case, &name);
        let s = scale(&name);
        for (i, a) in ca.iter().enumerate() {
            let j = map(i);
            if j >= cb.len() {
                return Err(format!("{name}: no component {j} to compare with [{i}]"));
            }
            check_scaled(h, dtype, &format!("{name}[{i}]"), a, &cb[j], s)?;
        }
    }
    Ok(())
}

fn with_case(r: Result<(), String>, what: &str, cases: &[(&str, &Case)]) -> Outcome {
    r.map(|_| Held::default()).map_err(|e| {
        let mut s = format!("{what}: {e}");
        for (n, c) in cases {
            s += &format!("\n  {n}: {}", c.to_json());
        }
        s
    })
}

// ---------------------------------------------------------------------------------------------
// The relations.

/// **mean = sum / D**, with D = Σ m·w made a power of two ([`pow2_denominator`]): the `mean`
/// value and gradients are the `sum` ones divided by D; an empty mean (D = 0) is 0, value and
/// every gradient.
pub fn mean_is_sum_over_denominator(base: &Case, side: Side) -> Outcome {
    let (c, d) = pow2_denominator(base, true);
    let cot = scalar_cotangent(base);
    let mean = with_reduction(&c, Reduction::Mean, cot);
    let sum = with_reduction(&c, Reduction::Sum, cot);
    let om = observe(&mean, side)?;
    let mut h = Held::default();
    let r = if d == 0.0 {
        // the empty mean: 0 everywhere
        let mut r = Ok(());
        for (name, comps) in outputs(&om) {
            for (i, a) in comps.iter().enumerate() {
                h.compared += 1;
                if a.x != 0.0 {
                    r = Err(format!(
                        "empty mean (D = 0): {name}[{i}] = {} (the policy: 0)",
                        show(a.x)
                    ));
                    break;
                }
            }
        }
        r
    } else {
        let os = observe(&sum, side)?;
        check_all_scaled(&mut h, &mean, &om, &os, &|i| i, &|_| 1.0 / d)
    };
    with_case(
        r,
        &format!("{}: mean ≠ sum / D (D = {d})", side.name()),
        &[("mean case", &mean), ("sum case", &sum)],
    )
    .map(|_| h)
}

fn check_inert(
    h: &mut Held,
    case: &Case,
    o_base: &Observed,
    o_ext: &Observed,
    n: usize,
) -> Result<(), String> {
    let none = case.reduction() == Reduction::None;
    let base_out: BTreeMap<String, &Vec<Comp>> = outputs(o_base).into_iter().collect();
    for (name, ext) in outputs(o_ext) {
        let Some(b) = base_out.get(&name) else {
            continue;
        };
        let is_value = name == "value";
        // the reduced value: one component, identical
        if is_value && !none {
            h.compared += 1;
            if !same_bits(ext[0].x, b[0].x) {
                return Err(format!("value {} became {}", show(b[0].x), show(ext[0].x)));
            }
            continue;
        }
        for i in 0..ext.len() {
            h.compared += 1;
            if i < n {
                if !same_bits(ext[i].x, b[i].x) {
                    return Err(format!(
                        "{name}[{i}]: {} became {}",
                        show(b[i].x),
                        show(ext[i].x)
                    ));
                }
            } else if ext[i].x != 0.0 {
                return Err(format!(
                    "{name}[{i}] (an appended inactive element) is {}, not 0",
                    show(ext[i].x)
                ));
            }
        }
    }
    Ok(())
}

/// **Appending masked elements changes nothing**: the elements of `tail` (anything: NaN, ±inf
/// included) appended with mask 0 leave the reduced value and the base's `none` outputs and
/// gradients bitwise unchanged; the appended outputs and gradients are 0.
pub fn masked_append_is_inert(base: &Case, tail: &[Vec<f64>], side: Side) -> Outcome {
    inert(base, tail, true, side)
}

/// **Appending zero-weight elements changes nothing** (as [`masked_append_is_inert`], with
/// weight 0; the base gets unit weights if it has none).
pub fn zero_weight_append_is_inert(base: &Case, tail: &[Vec<f64>], side: Side) -> Outcome {
    inert(base, tail, false, side)
}

fn inert(base: &Case, tail: &[Vec<f64>], masked: bool, side: Side) -> Outcome {
    let b = with_mask_weight(&flatten(base), masked, !masked);
    let ext = append_inactive(&b, tail, masked);
    let ob = observe(&b, side)?;
    let oe = observe(&ext, side)?;
    let mut h = Held::default();
    let r = check_inert(&mut h, &b, &ob, &oe, numel(&b));
    let what = if masked { "masked" } else { "zero-weight" };
    with_case(
        r,
        &format!(
            "{}: appending {} {what} elements changed the answer",
            side.name(),
            tail.len()
        ),
        &[("base", &b), ("extended", &ext)],
    )
    .map(|_| h)
}

/// **Unit weights are no weights**: a case without weights and the same case with weights of 1
/// agree within both tolerances (exactly for the oracle). The base's zero-weight positions are
/// masked first (what a zero weight means): they may hold anything, e.g. a probability outside
/// [0, 1], which only a zero weight or a mask makes valid.
pub fn unit_weights_are_no_weights(base: &Case, side: Side) -> Outcome {
    let mut b = flatten(base);
    let w0: Vec<bool> = f(&b, "weight").iter().map(|&w| w == 0.0).collect();
    if w0.iter().any(|&z| z) {
        b = with_mask_weight(&b, true, false);
        let m = b.inputs.get_mut("mask").unwrap().i_mut().unwrap();
        for (mi, z) in m.iter_mut().zip(w0) {
            if z {
                *mi = 0;
            }
        }
    }
    b.inputs.remove("weight");
    let w = with_mask_weight(&b, false, true);
    let ob = observe(&b, side)?;
    let ow = observe(&w, side)?;
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, &b, &ow, &ob, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!("{}: unit weights differ from no weights", side.name()),
        &[("unweighted", &b), ("unit weights", &w)],
    )
    .map(|_| h)
}

/// **Permuting the batch permutes the `none` output and the gradient** (bitwise); a reduced
/// value is unchanged within both tolerances (exactly for the oracle).
pub fn permutation_permutes(base: &Case, seed: u64, side: Side) -> Outcome {
    let b = flatten(base);
    let n = numel(&b);
    let perm = permutation(n, seed);
    let p = permute(&b, &perm);
    let ob = observe(&b, side)?;
    let op = observe(&p, side)?;
    let mut h = Held::default();
    let none = b.reduction() == Reduction::None;
    let mut r = Ok(());
    let base_out: BTreeMap<String, &Vec<Comp>> = outputs(&ob).into_iter().collect();
    'outer: for (name, pc) in outputs(&op) {
        let Some(bc) = base_out.get(&name) else {
            continue;
        };
        if name == "value" && !none {
            r = check_scaled(&mut h, b.out_dtype, "value", &pc[0], &bc[0], 1.0);
            if r.is_err() {
                break;
            }
            continue;
        }
        for (i, c) in pc.iter().enumerate() {
            h.compared += 1;
            if !same_bits(c.x, bc[perm[i]].x) {
                r = Err(format!(
                    "{name}[{i}] = {} but the base's [{}] = {}",
                    show(c.x),
                    perm[i],
                    show(bc[perm[i]].x)
                ));
                break 'outer;
            }
        }
    }
    with_case(
        r,
        &format!("{}: permuting the batch", side.name()),
        &[("base", &b), ("permuted", &p)],
    )
    .map(|_| h)
}

/// **Concatenating two batches** combines sums exactly (S_ab = S_a + S_b) and means by their
/// denominators (M_ab = (D_a·M_a + D_b·M_b)/(D_a + D_b)); the `none` outputs and the gradients
/// of each part are those of its own batch (scaled by D_a / D_ab for `mean`). `b` takes `a`'s
/// params, reduction and cotangent.
pub fn concatenation_combines(a: &Case, b: &Case, side: Side) -> Outcome {
    let ab = concat(a, b);
    // a and b as they sit inside ab (masks / weights of ones added, b's settings = a's)
    let na = numel(&flatten(a));
    let a1 = part(&ab, 0, na);
    let b1 = part(&ab, na, numel(&ab));
    let (oa, ob, oab) = (
        observe(&a1, side)?,
        observe(&b1, side)?,
        observe(&ab, side)?,
    );
    let mut h = Held::default();
    let split = Split {
        value: na,
        grad: na,
    };
    let dens = (denominator(&a1), denominator(&b1));
    let r = combine(&mut h, &ab, split, dens, &oa, &ob, &oab, side);
    with_case(
        r,
        &format!("{}: concatenating two batches", side.name()),
        &[("a", &a1), ("b", &b1), ("a ++ b", &ab)],
    )
    .map(|_| h)
}

/// Elements [lo, hi) of a 1-D case.
fn part(case: &Case, lo: usize, hi: usize) -> Case {
    let mut c = case.clone();
    let n = numel(case);
    let none = case.reduction() == Reduction::None;
    for (k, t) in c.inputs.iter_mut() {
        if (k == "cotangent" && !none) || t.len() != n {
            continue;
        }
        *t = match &t.data {
            Data::F(v) => Tensor::float(case.dtype, vec![hi - lo], v[lo..hi].to_vec()),
            Data::I(v) => Tensor::int(vec![hi - lo], v[lo..hi].to_vec()),
        };
    }
    c
}

/// An enclosure, its ends rounded to nearest f64 (for messages).
fn show_ival(x: &Ival) -> String {
    format!("[{:e}, {:e}]", x.lo.to_f64(), x.hi.to_f64())
}

fn overlaps(x: &Ival, y: &Ival) -> bool {
    if x.is_nan() || y.is_nan() {
        return x.is_nan() && y.is_nan();
    }
    x.lo <= y.hi && y.lo <= x.hi
}

/// Where a ++ b splits: part a is the first `value` components of a `none` value and the first
/// `grad` components of each gradient.
#[derive(Clone, Copy)]
struct Split {
    value: usize,
    grad: usize,
}

/// Judge a ++ b against its parts a and b, whose mean denominators are `da` and `db`.
#[allow(clippy::too_many_arguments)]
fn combine(
    h: &mut Held,
    ab: &Case,
    split: Split,
    (da, db): (Ival, Ival),
    oa: &Observed,
    ob: &Observed,
    oab: &Observed,
    side: Side,
) -> Result<(), String> {
    let red = ab.reduction();
    let d = da.add(&db);
    let (da64, db64, d64) = (d_f64(&da), d_f64(&db), d_f64(&d));
    let oracle = matches!(side, Side::Oracle);
    // value
    if red != Reduction::None {
        let (va, vb, vab) = (&oa.value[0], &ob.value[0], &oab.value[0]);
        let label = if red == Reduction::Sum { "sum" } else { "mean" };
        if red == Reduction::Mean && d64 == 0.0 {
            h.compared += 1;
            if vab.x != 0.0 {
                return Err(format!("empty mean of a ++ b is {}", show(vab.x)));
            }
        } else if oracle {
            let comb = if red == Reduction::Sum {
                va.exact.enclosure.add(&vb.exact.enclosure)
            } else {
                va.exact
                    .enclosure
                    .mul(&da)
                    .add(&vb.exact.enclosure.mul(&db))
                    .div(&d)
            };
            h.compared += 1;
            if !overlaps(&comb, &vab.exact.enclosure) {
                return Err(format!(
                    "{label}: enclosure of a ++ b {} misses the combination of a's and b's {} (D_a = {da64}, D_b = {db64})",
                    show_ival(&vab.exact.enclosure),
                    show_ival(&comb)
                ));
            }
        } else {
            let (wa, wb) = if red == Reduction::Sum {
                (1.0, 1.0)
            } else {
                (da64 / d64, db64 / d64)
            };
            let dt = ab.out_dtype;
            let nan_in = (va.x.is_nan() && wa != 0.0) || (vb.x.is_nan() && wb != 0.0);
            let finite = [va, vb, vab]
                .iter()
                .all(|c| c.x.is_finite() && c.exact.rounded.is_finite());
            if nan_in {
                h.compared += 1;
                if !vab.x.is_nan() {
                    return Err(format!(
                        "{label}: a or b is NaN but a ++ b is {}",
                        show(vab.x)
                    ));
                }
            } else if finite {
                let comb = wa * va.x + wb * vb.x;
                let bound = vab.err_bound(dt)
                    + wa * va.err_bound(dt)
                    + wb * vb.err_bound(dt)
                    + comb.abs() * pow2(-48);
                h.compared += 1;
                if (vab.x - comb).abs() > bound {
                    return Err(format!(
                        "{label}: a ++ b gives {} but the combination of a ({}) and b ({}) is {} (D_a = {da64}, D_b = {db64}); |difference| {} > bound {}",
                        show(vab.x), show(va.x), show(vb.x), show(comb), (vab.x - comb).abs(), bound
                    ));
                }
            } else {
                h.skipped += 1;
            }
        }
    } else {
        for (i, c) in oab.value.iter().enumerate() {
            let (src, j) = if i < split.value {
                (&oa.value, i)
            } else {
                (&ob.value, i - split.value)
            };
            check_scaled(h, ab.out_dtype, &format!("value[{i}]"), c, &src[j], 1.0)?;
        }
    }
    // gradients: part a's components are a's gradient times D_a / D (mean), or a's (sum, none)
    for (name, gab) in &oab.grads {
        let (Some(ga), Some(gb)) = (oa.grads.get(name), ob.grads.get(name)) else {
            continue;
        };
        for (i, c) in gab.iter().enumerate() {
            let (src, j, dpart) = if i < split.grad {
                (ga, i, &da)
            } else {
                (gb, i - split.grad, &db)
            };
            let s = &src[j];
            let label = format!("grad.{name}[{i}]");
            if red != Reduction::Mean {
                check_scaled(h, ab.dtype, &label, c, s, 1.0)?;
                continue;
            }
            if d64 == 0.0 {
                h.compared += 1;
                if c.x != 0.0 {
                    return Err(format!("{label} of an empty mean is {}", show(c.x)));
                }
                continue;
            }
            if oracle {
                let comb = s.exact.enclosure.mul(dpart).div(&d);
                h.compared += 1;
                if !overlaps(&comb, &c.exact.enclosure) {
                    return Err(format!(
                        "{label}: enclosure {} misses the part's gradient × D_part / D = {}",
                        show_ival(&c.exact.enclosure),
                        show_ival(&comb)
                    ));
                }
            } else {
                let w = d_f64(dpart) / d64;
                let dt = ab.dtype;
                if s.x.is_nan() || c.x.is_nan() {
                    h.compared += 1;
                    if s.x.is_nan() != c.x.is_nan() {
                        return Err(format!(
                            "{label}: {} in a ++ b, {} in its own batch",
                            show(c.x),
                            show(s.x)
                        ));
                    }
                } else if [s, c]
                    .iter()
                    .all(|x| x.x.is_finite() && x.exact.rounded.is_finite())
                {
                    let comb = s.x * w;
                    let bound = c.err_bound(dt) + w * s.err_bound(dt) + comb.abs() * pow2(-48);
                    h.compared += 1;
                    if (c.x - comb).abs() > bound {
                        return Err(format!("{label}: {} in a ++ b, but {} × D_part/D ({w}) = {} in its own batch; |difference| {} > bound {bound}", show(c.x), show(s.x), show(comb), (c.x - comb).abs()));
                    }
                } else {
                    h.skipped += 1;
                }
            }
        }
    }
    Ok(())
}

/// **Duplicating a batch keeps `mean`** (and doubles `sum`; the `none` outputs repeat): value
/// and gradients of a ++ a against a's — mean gradients halve, each copy's term having half the
/// weight.
pub fn duplication_keeps_mean(base: &Case, side: Side) -> Outcome {
    let a = flatten(base);
    let aa = concat(&a, &a);
    let n = numel(&a);
    let (oa, oaa) = (observe(&a, side)?, observe(&aa, side)?);
    let mut h = Held::default();
    let red = a.reduction();
    let r = check_all_scaled(&mut h, &aa, &oaa, &oa, &|i| i % n.max(1), &|out| match (
        red,
        out == "value",
    ) {
        (Reduction::Sum, true) => 2.0,
        (Reduction::Mean, false) => 0.5,
        _ => 1.0,
    });
    with_case(
        r,
        &format!("{}: duplicating the batch", side.name()),
        &[("a", &a), ("a ++ a", &aa)],
    )
    .map(|_| h)
}

/// **Scaling the weights by 2^k leaves `mean` unchanged** (value and gradients), scales `sum`
/// and the `none` outputs, and the gradients of both, by 2^k. `k` is reduced toward 0 until
/// every scaled weight stays normal and finite.
pub fn weight_scaling_keeps_mean(base: &Case, k: i32, side: Side) -> Outcome {
    let a = with_mask_weight(&flatten(base), false, true);
    let (s, k) = scale_weights(&a, k);
    if k == 0 {
        return Ok(Held {
            compared: 0,
            skipped: 1,
        });
    }
    let (oa, os) = (observe(&a, side)?, observe(&s, side)?);
    let mut h = Held::default();
    let red = a.reduction();
    let f = if red == Reduction::Mean { 1.0 } else { pow2(k) };
    let r = check_all_scaled(&mut h, &s, &os, &oa, &|i| i, &|_| f);
    with_case(
        r,
        &format!("{}: weights × 2^{k}", side.name()),
        &[("a", &a), ("scaled", &s)],
    )
    .map(|_| h)
}

// ---------------------------------------------------------------------------------------------
// Relations of the elementwise classification losses.

/// Is `x` (an exact enclosure) a value of `dtype`? Returns it.
fn exact_in(dtype: Dtype, x: &Ival) -> Option<f64> {
    if !x.is_point() {
        return None;
    }
    let v = x.mid_f64();
    (v.is_finite() && dtype.contains(v) && x.contains_f64(v)).then_some(v)
}

/// w·α_t with α_t = α·t + (1 − α)·(1 − t), when it is exactly a value of `dtype`.
fn weighted_alpha(dtype: Dtype, w: f64, alpha: f64, t: f64) -> Option<f64> {
    let p = 1200;
    let (a, t) = (Ival::point(p, alpha), Ival::point(p, t));
    let one = Ival::one(p);
    let at = a.mul(&t).add(&one.sub(&a).mul(&one.sub(&t)));
    exact_in(dtype, &Ival::point(p, w).mul(&at))
}

fn set_f(case: &mut Case, name: &str, v: Vec<f64>) {
    let t = case.inputs.get_mut(name).unwrap();
    *t = Tensor::float(case.dtype, t.shape.clone(), v);
}

/// **Focal with γ = 0 is α-weighted BCE**: focal(z, t; α, γ = 0) with weights w equals
/// bce_logits(z, t) with weights w·α_t, α_t = α·t + (1 − α)(1 − t) (w itself when α is none) —
/// value (`none`, `sum`; `mean` as the BCE `sum` over the focal denominator D = Σ m·w, made a
/// power of two) and gradient, within both sides' tolerances (exactly for the oracle).
///
/// `base` is a focal or bce_logits case (its pos_weight dropped, its params replaced). The
/// construction keeps the relation exact: where w·α_t is not a dtype value the target is made
/// hard (α_t ∈ {α, 1 − α}), then (sum / none) the weight 1; where α_t = 0 a non-finite logit
/// (0·inf: the limit 0 against the policy's 0, and NaN against 0) becomes 0, and a NaN target
/// (α_t NaN) becomes 0. `alpha` should be a short dyadic (k/8) so that the fallbacks are exact.
pub fn focal_gamma0_is_weighted_bce(base: &Case, alpha: Option<f64>, side: Side) -> Outcome {
    use losscheck_core::ParamValue;
    let mut f = flatten(base);
    f.inputs.remove("pos_weight");
    f.loss = "focal".into();
    let red = base.reduction();
    f.params.retain(|k, _| k == "reduction");
    f.params.insert(
        "alpha".into(),
        alpha.map_or(ParamValue::Null, ParamValue::Float),
    );
    f.params.insert("gamma".into(), ParamValue::Float(0.0));
    f.grad.retain(|g| g == "logit");
    let (mut f, d) = if red == Reduction::Mean {
        pow2_denominator(&f, false)
    } else {
        (f, 1.0)
    };
    let dtype = f.dtype;
    let n = numel(&f);
    let act = active(&f);
    let had_w = f.inputs.contains_key("weight");
    let mut w = if had_w {
        self::f(&f, "weight")
    } else {
        vec![1.0; n]
    };
    let mut z = self::f(&f, "logit");
    let mut t = self::f(&f, "target");
    let mut wb = w.clone();
    if let Some(a) = alpha {
        for i in 0..n {
            if !act[i] {
                continue; // masked / zero weight: left as they are (poison included)
            }
            if t[i].is_nan() {
                t[i] = 0.0;
            }
            let mut p = weighted_alpha(dtype, w[i], a, t[i]);
            if p.is_none() {
                t[i] = t[i].round();
                p = weighted_alpha(dtype, w[i], a, t[i]);
            }
            if p.is_none() && red != Reduction::Mean {
                w[i] = 1.0;
                p = weighted_alpha(dtype, 1.0, a, t[i]);
            }
            let Some(p) = p else {
                return Ok(Held {
                    compared: 0,
                    skipped: 1,
                });
            };
            if p == 0.0 && !z[i].is_finite() {
                z[i] = 0.0;
            }
            wb[i] = p;
        }
    }
    set_f(&mut f, "logit", z);
    set_f(&mut f, "target", t);
    if had_w {
        set_f(&mut f, "weight", w);
    }
    let mut b = f.clone();
    b.loss = "bce_logits".into();
    b.params.retain(|k, _| k == "reduction");
    if red == Reduction::Mean {
        b.set_reduction(Reduction::Sum);
    }
    if alpha.is_some() || had_w {
        b.inputs
            .insert("weight".into(), Tensor::float(dtype, vec![n], wb));
    }
    let (of, ob) = (observe(&f, side)?, observe(&b, side)?);
    let mut h = Held::default();
    let s = if red == Reduction::Mean && d != 0.0 {
        1.0 / d
    } else {
        1.0
    };
    let r = check_all_scaled(&mut h, &f, &of, &ob, &|i| i, &|_| s);
    with_case(
        r,
        &format!(
            "{}: focal (γ = 0, α = {alpha:?}) ≠ α_t-weighted bce_logits{}",
            side.name(),
            if red == Reduction::Mean {
                format!(" (mean = BCE sum / D, D = {d})")
            } else {
                String::new()
            }
        ),
        &[("focal", &f), ("bce_logits", &b)],
    )
    .map(|_| h)
}

/// (x, 1 − x) for x ∈ [0, 1], both exact in `dtype`: x itself when x ≥ ½ (Sterbenz), else x
/// replaced by 1 − RN(1 − x).
fn flip_pair(dtype: Dtype, x: f64) -> (f64, f64) {
    if !(0.0..=1.0).contains(&x) {
        return (x, x);
    }
    if x >= 0.5 {
        (x, 1.0 - x)
    } else {
        let y = dtype.round(1.0 - x);
        (1.0 - y, y)
    }
}

/// **Flipping the label mirrors the loss**: hinge (t, s) → (−t, −s); bce (p, t) → (1 − p, 1 − t);
/// bce_logits (z, t) → (−z, 1 − t) (pos_weight dropped); focal (z, t, α) → (−z, 1 − t, 1 − α):
/// the value is unchanged and the gradient negated, within both sides' tolerances (exactly for
/// the oracle). Probabilities, targets and α below ½ are first moved to 1 − RN(1 − x) so that
/// both sides hold exact values; inactive positions keep their poison.
pub fn label_flip_symmetry(base: &Case, side: Side) -> Outcome {
    use losscheck_core::ParamValue;
    let mut a = flatten(base);
    a.inputs.remove("pos_weight");
    let dtype = a.dtype;
    let n = numel(&a);
    let act = active(&a);
    let mut b = a.clone();
    match a.loss.as_str() {
        "hinge" => {
            let s = self::f(&a, "score");
            set_f(&mut b, "score", s.iter().map(|x| -x).collect());
            let t = b.inputs.get_mut("target").unwrap().i_mut().unwrap();
            for i in 0..n {
                if act[i] {
                    t[i] = -t[i];
                }
            }
        }
        "bce" | "bce_logits" | "focal" => {
            let (xa, xb): (Vec<f64>, Vec<f64>) = if a.loss == "bce" {
                self::f(&a, "prob")
                    .iter()
                    .zip(&act)
                    .map(|(&p, &on)| if on { flip_pair(dtype, p) } else { (p, p) })
                    .unzip()
            } else {
                self::f(&a, "logit").iter().map(|&z| (z, -z)).unzip()
            };
            let (ta, tb): (Vec<f64>, Vec<f64>) = self::f(&a, "target")
                .iter()
                .zip(&act)
                .map(|(&t, &on)| if on { flip_pair(dtype, t) } else { (t, t) })
                .unzip();
            let x = if a.loss == "bce" { "prob" } else { "logit" };
            set_f(&mut a, x, xa);
            set_f(&mut b, x, xb);
            set_f(&mut a, "target", ta);
            set_f(&mut b, "target", tb);
            if let Some(al) = a.float_param("alpha").filter(|_| a.loss == "focal") {
                let (aa, ab) = flip_pair(Dtype::F32, al);
                a.params.insert("alpha".into(), ParamValue::Float(aa));
                b.params.insert("alpha".into(), ParamValue::Float(ab));
            }
        }
        _ => {
            return Ok(Held {
                compared: 0,
                skipped: 1,
            })
        }
    }
    let (oa, ob) = (observe(&a, side)?, observe(&b, side)?);
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, &a, &oa, &ob, &|i| i, &|out| {
        if out == "value" {
            1.0
        } else {
            -1.0
        }
    });
    with_case(
        r,
        &format!("{}: flipping the labels", side.name()),
        &[("base", &a), ("flipped", &b)],
    )
    .map(|_| h)
}

/// **A broadcast pos_weight is its expansion**: a [C] pos_weight over [.., C] logits and the
/// same weights repeated over every row give the same value and gradient, within both sides'
/// tolerances (exactly for the oracle). Cases without a broadcast pos_weight are skipped.
pub fn broadcast_pos_weight_is_expanded(base: &Case, side: Side) -> Outcome {
    let e = expand_pos_weight(base);
    if e == *base {
        return Ok(Held {
            compared: 0,
            skipped: 1,
        });
    }
    let (ob, oe) = (observe(base, side)?, observe(&e, side)?);
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, base, &ob, &oe, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!("{}: broadcast pos_weight vs its expansion", side.name()),
        &[("broadcast", base), ("expanded", &e)],
    )
    .map(|_| h)
}

/// **A pos_weight of ones is no pos_weight** (bce_logits), within both sides' tolerances
/// (exactly for the oracle).
pub fn unit_pos_weight_is_none(base: &Case, side: Side) -> Outcome {
    if base.loss != "bce_logits" {
        return Ok(Held {
            compared: 0,
            skipped: 1,
        });
    }
    let mut a = base.clone();
    a.inputs.remove("pos_weight");
    let u = with_unit_pos_weight(&a);
    let (oa, ou) = (observe(&a, side)?, observe(&u, side)?);
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, &a, &oa, &ou, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!("{}: unit pos_weight vs none", side.name()),
        &[("no pos_weight", &a), ("unit pos_weight", &u)],
    )
    .map(|_| h)
}
