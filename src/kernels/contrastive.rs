//! Contrastive losses: `contrastive`, `triplet`, `info_nce` — row-wise over embeddings [N, D].
//!
//! The typed API is generic over the input element type `T` (`f32`, [`half::f16`],
//! [`half::bf16`]) and the value type `O` (`T`, or `f32` for 16-bit inputs); gradients are in
//! `T`, shaped like their inputs. Reductions, weights, masks, cotangents and the empty-mean
//! rule are [`Plan`]'s (one term per row).
//!
//! Numerics (f64 and double-double, each output rounded once; `libm`, never the platform libm):
//!
//! - Distances. Each difference (x1 − x2, a − p + eps) is an exact pair ([`sum_exact`]); the
//!   squared norm Σ u_k² is accumulated as a pair (TwoProd + TwoSum, relative error about
//!   D·2^−104) and its square root taken as a pair: d is accurate to about 2^−100 relatively,
//!   so `triplet`'s z = dp − dn + m (an exact sum of the five pieces) and `contrastive`'s
//!   m − d keep their sign and their digits however much they cancel. A vector whose largest
//!   component is outside [2^−400, 2^400] is scaled by a power of 2 first (no overflow of the
//!   squares, no underflow).
//! - `triplet`: l = max(0, z); where z > 0, ∂/∂a = u/dp − v/dn (double-double quotients, the
//!   difference rounded once: cancellation-free to about 2^−100), ∂/∂p = −u/dp, ∂/∂n = v/dn;
//!   at a zero norm its derivative is taken as 0 (‖·‖ at 0: the Clarke element nearest 0), at
//!   z ≤ 0 every gradient is 0 (max(0, ·) at 0: likewise). Zero norms and identical points
//!   never make a NaN.
//! - `contrastive`: y = 1: l = ‖w‖², ∂/∂x1 = 2w = −∂/∂x2; y = 0: l = max(0, m − d)², ∂/∂x1 =
//!   −2(m − d)·w/d where m > d, 0 elsewhere and at d = 0.
//! - `info_nce`: the rows with mask 1 (mask 0 removes query i and key i), their raw dot
//!   products q_a·k_b by `matrixmultiply::dgemm` in f64 — each product of two inputs of at
//!   most 24 significant bits is exact in f64, so only the summation rounds (at most
//!   (D − 1)·2^−53·Σ_d|q_d k_d|) — then s_ab = (q_a·k_b)/(ν_a μ_b) with ν = max(‖q‖, eps) (the
//!   norm as a pair, compared with eps exactly; x ≡ x̂ with `normalize` off) and z = s/τ.
//!   Per row (and per column when `symmetric`) the fused log-softmax: j* the largest, e_b =
//!   e^{z_b − z_j*} by [`exp_nonpos`] (never overflows), l = log1p(Σ_{b≠a} e_b) when j* = a (no
//!   cancellation for confident rows), else (z_j* − z_a) + ln Σ e_b; P_ab = e_b/Σ, P_aa − 1 =
//!   −Σ_{b≠a} e_b/Σ. The upstream gradients G·K̂ and Gᵀ·Q̂ are two more dgemms; through the
//!   normalisation (g − x̂(x̂·g))/‖x‖ with a compensated dot, or g/eps on the eps branch (the
//!   Clarke element of max(‖x‖, eps) nearest 0 at ‖x‖ = eps). A zero embedding is defined:
//!   x̂ = 0, gradient g/eps. Error of the logits: about (D + 3)·2^−53·max|s|/τ absolute
//!   (docs/policies/contrastive.md), below every output's half-ulp for the generated cases.
//!
//! Invalid input (lengths, a target other than 0/1 at an unskipped row, a margin or eps that
//! is not finite, eps < 0, temperature ≤ 0, info_nce eps ≤ 0, and the weight / mask /
//! cotangent checks of [`Plan::new`]) is an `Err` naming the input, the index and the value.
//! NaN data propagates. N = 0 and D = 0 are fine. Never panics.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::contrastive::{triplet, RowArgs};
//!
//! // anchor (0, 0), positive (3, 4) (distance 5), negative (0, 1) (distance 1), margin 1:
//! // l = 5 − 1 + 1 = 5; ∂/∂positive = −u/dp = (3, 4)/5
//! let (a, p, n) = ([0.0f32, 0.0], [3.0f32, 4.0], [0.0f32, 1.0]);
//! let out = triplet::<f32, f32>(&RowArgs::new(1, 2), &a, &p, &n, 1.0, 0.0).unwrap();
//! assert_eq!(out.value, vec![5.0]);
//! assert_eq!(out.grads[1], Some(vec![0.6, 0.8]));
//! // identical anchor and positive: the zero norm's derivative is 0, not NaN
//! let out = triplet::<f32, f32>(&RowArgs::new(1, 2), &a, &a, &n, 1.0, 0.0).unwrap();
//! assert_eq!(out.value, vec![0.0]);
//! assert_eq!(out.grads[0], Some(vec![0.0, 0.0]));
//! ```

use super::classification::{int_input, req_param};
use super::math::{exp_nonpos, pair_div, pair_scale, round_odd, two_prod, two_sum};
use super::ranking::{bad_param, check_len, extras, req_input, sum_exact, Pair};
use super::reduce::{grad_term, CompensatedSum, Plan};
use losscheck_core::{Case, Checked, Element, LossError, ParamValue, Reduction, Response, Tensor};
use std::collections::BTreeMap;

/// The contrastive losses this module implements.
pub const LOSSES: &[&str] = &["contrastive", "triplet", "info_nce"];

/// Rows, embedding size and the reduction's inputs of a row-wise embedding loss.
#[derive(Clone, Copy, Debug)]
pub struct RowArgs<'a, T: Element> {
    pub rows: usize,
    pub dim: usize,
    /// Per-row weights, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-row mask, 0 or 1 (`info_nce`: removes the row's query and key).
    pub mask: Option<&'a [i64]>,
    /// One per row for `none`, one value for `sum` / `mean`.
    pub cotangent: Option<&'a [T]>,
    pub reduction: Reduction,
    /// Which gradients to compute, in the catalogue's order (unused entries ignored).
    pub want: [bool; 3],
}

impl<'a, T: Element> RowArgs<'a, T> {
    /// `rows` × `dim` embeddings; reduction `mean`; every gradient; nothing else.
    pub fn new(rows: usize, dim: usize) -> Self {
        RowArgs {
            rows,
            dim,
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
            want: [true; 3],
        }
    }
    super::ranking::reduction_builders!();
    pub fn want(mut self, want: [bool; 3]) -> Self {
        self.want = want;
        self
    }
}

/// Value and gradients (in the catalogue's input order; `None` where not asked for).
#[derive(Clone, Debug, PartialEq)]
pub struct Output<T, O> {
    pub value: Vec<O>,
    pub grads: Vec<Option<Vec<T>>>,
}

// ---------------------------------------------------------------------------------------------
// Double-double pieces.

/// √(hi + lo) as a pair (hi + lo ≥ 0).
#[inline]
fn sqrt_pair((hi, lo): Pair) -> Pair {
    if hi <= 0.0 || !hi.is_finite() {
        return (libm::sqrt(hi), 0.0);
    }
    let s = libm::sqrt(hi);
    let (p, e) = two_prod(s, s);
    let r = ((hi - p) - e + lo) / (2.0 * s);
    let (a, b) = two_sum(s, r);
    (a, b)
}

/// (a_hi + a_lo) / (b_hi + b_lo) as a pair (b > 0 finite).
#[inline]
fn div_pair((ah, al): Pair, (bh, bl): Pair) -> Pair {
    let q = ah / bh;
    if !q.is_finite() || q == 0.0 {
        return (q, 0.0);
    }
    let (p, e) = two_prod(q, bh);
    let r = (ah - p) - e + al - q * bl;
    two_sum(q, r / bh)
}

#[inline]
fn pair_sub(a: Pair, b: Pair) -> f64 {
    let (s, e) = two_sum(a.0, -b.0);
    if !s.is_finite() {
        return a.0 - b.0;
    }
    s + (e + (a.1 - b.1))
}

/// Σ_k (hi_k + lo_k)² as a pair: TwoProd of the high parts, 2·hi·lo, compensated.
fn sq_norm(v: &[Pair]) -> Pair {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for &(h, l) in v {
        let (p, e) = two_prod(h, h);
        let (t, e2) = two_sum(s, p);
        s = t;
        c += e2 + e + 2.0 * h * l;
    }
    if !s.is_finite() {
        return (s, 0.0);
    }
    two_sum(s, c)
}

/// Scale `v` by 2^−k so that its largest component is in [2^−400, 2^400] (k = 0 when it is
/// already, or when it is 0 or not finite); returns k.
fn rescale(v: &mut [Pair]) -> i32 {
    let m = v.iter().fold(0.0f64, |m, x| m.max(x.0.abs()));
    if m == 0.0 || !m.is_finite() || (m > 2f64.powi(-400) && m < 2f64.powi(400)) {
        return 0;
    }
    let k = libm::ilogb(m);
    for x in v.iter_mut() {
        *x = (libm::scalbn(x.0, -k), libm::scalbn(x.1, -k));
    }
    k
}

/// ‖v‖ as a pair, with the vector rescaled in place (the direction v/‖v‖ is scale-free) and
/// the true norm as an f64 pair scaled back; also whether v is exactly 0.
fn norm_of(v: &mut [Pair]) -> (Pair, Pair, bool) {
    let k = rescale(v);
    let sq = sq_norm(v);
    let zero = sq.0 == 0.0 && sq.1 == 0.0;
    let n = sqrt_pair(sq);
    let true_n = if k == 0 {
        n
    } else {
        (libm::scalbn(n.0, k), libm::scalbn(n.1, k))
    };
    (n, true_n, zero)
}

// ---------------------------------------------------------------------------------------------
// The row driver.

/// Drive a per-row kernel through the plan: `kernel(i, g)` fills g[k][0..dim] with ∂l_i/∂x_k
/// (every k it computes; the wanted ones are used) and returns l_i as a pair. Skipped rows are
/// never evaluated and get 0; the empty mean is 0; gradients termwise c·g·cot/den; the value
/// rounded once (to odd in f64, then to `O`).
fn run_rows<T: Element, O: Element, const K: usize>(
    plan: &Plan<'_, T>,
    cotangent: Option<&[T]>,
    dim: usize,
    want: [bool; K],
    mut kernel: impl FnMut(usize, &mut [Vec<f64>; K]) -> Pair,
) -> Output<T, O> {
    let n = plan.len();
    let none = plan.reduction() == Reduction::None;
    let den = plan.denom();
    let zero_t = T::from_f64(0.0);
    let mut grads: Vec<Vec<T>> = (0..K)
        .map(|k| {
            if want[k] {
                vec![zero_t; n * dim]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut value = Vec::new();
    if plan.is_empty_mean() {
        value.resize(plan.value_len(), O::from_f64(0.0));
    } else {
        let cot = |j: usize| match cotangent {
            None => 1.0,
            Some(c) if none => c[j].to_f64(),
            Some(c) => c[0].to_f64(),
        };
        let mut scratch: [Vec<f64>; K] = std::array::from_fn(|_| vec![0.0; dim]);
        let mut acc = CompensatedSum::new();
        for j in 0..n {
            let c = plan.coef(j);
            if c == 0.0 {
                if none {
                    value.push(O::from_f64(0.0));
                }
                continue;
            }
            for s in scratch.iter_mut() {
                s.iter_mut().for_each(|x| *x = 0.0);
            }
            let l = kernel(j, &mut scratch);
            let t = if c == 1.0 { l } else { pair_scale(c, l) };
            let t = if t.0.is_finite() { t } else { (t.0, 0.0) };
            if none {
                value.push(O::from_f64(round_odd(t.0, t.1)));
            } else {
                acc.add_lane(j, t.0);
                acc.add_lane(j, t.1);
            }
            let cj = cot(j);
            for k in 0..K {
                if want[k] {
                    for (o, &g) in grads[k][j * dim..(j + 1) * dim].iter_mut().zip(&scratch[k]) {
                        *o = T::from_f64(grad_term(c, g, cj, den));
                    }
                }
            }
        }
        if !none {
            value.push(reduced_value(plan, &acc));
        }
    }
    output(value, grads, &want)
}

/// The reduced value Σ (pairs in `acc`), divided by the denominator for `mean`, rounded once.
fn reduced_value<T: Element, O: Element>(plan: &Plan<'_, T>, acc: &CompensatedSum) -> O {
    let t = acc.total_pair();
    let (hi, lo) = if plan.reduction() == Reduction::Mean {
        pair_div(t, plan.denom())
    } else {
        t
    };
    O::from_f64(round_odd(hi, lo))
}

/// The output with the gradients that were asked for.
fn output<T, O>(value: Vec<O>, grads: Vec<Vec<T>>, want: &[bool]) -> Output<T, O> {
    Output {
        value,
        grads: grads
            .into_iter()
            .enumerate()
            .map(|(k, g)| want[k].then_some(g))
            .collect(),
    }
}

fn plan_of<'a, T: Element>(args: &RowArgs<'a, T>) -> Result<Plan<'a, T>, LossError> {
    Plan::new(
        args.rows,
        args.weight,
        args.mask,
        args.cotangent,
        args.reduction,
    )
}

fn check_emb<T>(name: &str, x: &[T], args_rows: usize, dim: usize) -> Result<(), LossError> {
    let want = args_rows.checked_mul(dim).ok_or_else(|| {
        LossError::invalid(format!("input {name}: [{args_rows}, {dim}] is too large"))
    })?;
    if x.len() != want {
        return Err(LossError::invalid(format!(
            "input {name}: {} elements, expected N·D = {args_rows}·{dim} = {want}",
            x.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// triplet

/// z = dp − dn + m with dp − dn formed as (‖u‖² − ‖v‖²)/(dp + dn), ‖u‖² − ‖v‖² = Σ (n − p)·(u
/// + v) summed as pairs (u + v = 2a − p − n + 2eps, n − p exact): the cancellation between
/// dp and dn happens in exact differences, not between two rounded norms, so z's sign is
/// right unless |z| < about 2^−100·(|m| + Σ|(n − p)(u + v)|/(dp + dn)). Falls back to
/// dp − dn + m where that form is not finite.
fn triplet_z<T: Element>(a: &[T], p: &[T], n: &[T], eps: f64, dp: Pair, dn: Pair, m: f64) -> Pair {
    let plain = || sum_exact([dp.0, dp.1, -dn.0, -dn.1, m]);
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for k in 0..a.len() {
        let (ak, pk, nk) = (a[k].to_f64(), p[k].to_f64(), n[k].to_f64());
        let w = sum_exact([nk, -pk]);
        let t = sum_exact([2.0 * ak, -pk, -nk, 2.0 * eps]);
        let (x, e) = two_prod(w.0, t.0);
        let (y, e2) = two_sum(s, x);
        s = y;
        c += e2 + e + w.0 * t.1 + w.1 * t.0;
    }
    let num = two_sum(s, c);
    let den = sum_exact([dp.0, dn.0, dp.1, dn.1]);
    if !(num.0.is_finite() && den.0.is_finite()) {
        return plain();
    }
    if den.0 == 0.0 {
        return (m, 0.0);
    }
    let q = div_pair(num, den);
    if !q.0.is_finite() {
        return plain();
    }
    sum_exact([q.0, q.1, m])
}

/// Are u and v (pairs, both non-zero) positive multiples of each other, exactly? Tested as
/// u_j·v_k = v_j·u_k (TwoProd, exact) against the largest |v_k|, for vectors held in single
/// f64s (a low part anywhere: not tested, false), or by sign for D = 1.
fn same_direction(u: &[Pair], v: &[Pair]) -> bool {
    if u.len() == 1 {
        // D = 1: the unit vectors are the signs
        return u[0].0 != 0.0 && (u[0].0 > 0.0) == (v[0].0 > 0.0) && v[0].0 != 0.0;
    }
    if u.iter().chain(v).any(|x| x.1 != 0.0 || !x.0.is_finite()) {
        return false;
    }
    let mut k = 0;
    for j in 0..v.len() {
        if v[j].0.abs() > v[k].0.abs() {
            k = j;
        }
    }
    let (uk, vk) = (u[k].0, v[k].0);
    if vk == 0.0 || uk == 0.0 || (uk > 0.0) != (vk > 0.0) {
        return false;
    }
    u.iter()
        .zip(v)
        .all(|(uj, vj)| two_prod(uj.0, vk) == two_prod(vj.0, uk))
}

/// Triplet margin loss: l = max(0, ‖a − p + eps‖ − ‖a − n + eps‖ + margin) per row (PyTorch's
/// `triplet_margin_loss` with `pairwise_distance`'s eps added to every coordinate; eps ≥ 0).
/// Gradients for anchor, positive, negative (`args.want`). Errors (never panics) on lengths,
/// a margin or eps that is not finite or eps < 0, and the weight / mask / cotangent checks.
pub fn triplet<T: Element, O: Element>(
    args: &RowArgs<'_, T>,
    anchor: &[T],
    positive: &[T],
    negative: &[T],
    margin: f64,
    eps: f64,
) -> Result<Output<T, O>, LossError> {
    if !margin.is_finite() {
        return Err(bad_param("margin", margin, "finite float"));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(bad_param("eps", eps, "finite float >= 0"));
    }
    let (n, d) = (args.rows, args.dim);
    check_emb("anchor", anchor, n, d)?;
    check_emb("positive", positive, n, d)?;
    check_emb("negative", negative, n, d)?;
    let plan = plan_of(args)?;
    let mut u = vec![(0.0, 0.0); d];
    let mut v = vec![(0.0, 0.0); d];
    Ok(run_rows(&plan, args.cotangent, d, args.want, |i, g| {
        for k in 0..d {
            let a = anchor[i * d + k].to_f64();
            u[k] = sum_exact([a, -positive[i * d + k].to_f64(), eps]);
            v[k] = sum_exact([a, -negative[i * d + k].to_f64(), eps]);
        }
        let (dps, dp, zp) = norm_of(&mut u);
        let (dns, dn, zn) = norm_of(&mut v);
        let z = triplet_z(
            &anchor[i * d..(i + 1) * d],
            &positive[i * d..(i + 1) * d],
            &negative[i * d..(i + 1) * d],
            eps,
            dp,
            dn,
            margin,
        );
        if z.0.is_nan() {
            for gk in g.iter_mut() {
                gk.iter_mut().for_each(|x| *x = f64::NAN);
            }
            return (f64::NAN, 0.0);
        }
        if z.0 <= 0.0 {
            return (0.0, 0.0);
        }
        // u ∥ v in the same direction: u/dp − v/dn is exactly 0
        let parallel = !zp && !zn && same_direction(&u, &v);
        for k in 0..d {
            let uu = if zp { (0.0, 0.0) } else { div_pair(u[k], dps) };
            let vv = if zn { (0.0, 0.0) } else { div_pair(v[k], dns) };
            // below the double-double's resolution (about 2^−104·(|uu| + |vv|)) the difference
            // is noise of unknown sign: 0, within κ·2^−53·|exact| of any exact value there
            let diff = pair_sub(uu, vv);
            let floor = 2f64.powi(-98) * (uu.0.abs() + vv.0.abs());
            g[0][k] = if parallel || diff.abs() <= floor {
                0.0
            } else {
                diff
            };
            g[1][k] = -(uu.0 + uu.1);
            g[2][k] = vv.0 + vv.1;
        }
        z
    }))
}

// ---------------------------------------------------------------------------------------------
// contrastive

/// Contrastive loss (Hadsell et al.): l = y·d² + (1 − y)·max(0, margin − d)², d = ‖x1 − x2‖,
/// y ∈ {0, 1} (1 = similar, i64). Gradients for x1, x2 (`args.want[0..2]`). Errors (never
/// panics) on lengths, a target other than 0/1 at an unskipped row, a margin that is not
/// finite, and the weight / mask / cotangent checks.
pub fn contrastive<T: Element, O: Element>(
    args: &RowArgs<'_, T>,
    x1: &[T],
    x2: &[T],
    target: &[i64],
    margin: f64,
) -> Result<Output<T, O>, LossError> {
    if !margin.is_finite() {
        return Err(bad_param("margin", margin, "finite float"));
    }
    let (n, d) = (args.rows, args.dim);
    check_emb("x1", x1, n, d)?;
    check_emb("x2", x2, n, d)?;
    let plan = plan_of(args)?;
    check_len("target", target.len(), n, "x1's rows")?;
    for (j, &y) in target.iter().enumerate() {
        if y != 0 && y != 1 && plan.coef(j) != 0.0 {
            return Err(LossError::invalid(format!(
                "input target[{j}]={y} is not 0 or 1"
            )));
        }
    }
    let mut w = vec![(0.0, 0.0); d];
    let want = [args.want[0], args.want[1]];
    Ok(run_rows(&plan, args.cotangent, d, want, |i, g| {
        for k in 0..d {
            w[k] = sum_exact([x1[i * d + k].to_f64(), -x2[i * d + k].to_f64()]);
        }
        if target[i] == 1 {
            let q = sq_norm(&w);
            for k in 0..d {
                let x = 2.0 * (w[k].0 + w[k].1);
                g[0][k] = x;
                g[1][k] = -x;
            }
            return q;
        }
        let (ds, dd, zero) = norm_of(&mut w);
        if dd.0.is_nan() {
            for gk in g.iter_mut() {
                gk.iter_mut().for_each(|x| *x = f64::NAN);
            }
            return (f64::NAN, 0.0);
        }
        let t = sum_exact([margin, -dd.0, -dd.1]);
        if margin <= 0.0 || t.0 <= 0.0 {
            return (0.0, 0.0);
        }
        if !zero {
            // −2t·w/d, with w and d on the same (rescaled) scale
            let f = div_pair((-2.0 * t.0, -2.0 * t.1), ds);
            for k in 0..d {
                let (p, e) = two_prod(f.0, w[k].0);
                let x = p + (e + f.0 * w[k].1 + f.1 * w[k].0);
                g[0][k] = x;
                g[1][k] = -x;
            }
        }
        let (p, e) = two_prod(t.0, t.0);
        if !p.is_finite() {
            return (p, 0.0);
        }
        two_sum(p, e + 2.0 * t.0 * t.1)
    }))
}

// ---------------------------------------------------------------------------------------------
// info_nce

/// Params of `info_nce`.
#[derive(Clone, Copy, Debug)]
pub struct InfoNceParams {
    pub temperature: f64,
    pub normalize: bool,
    pub eps: f64,
    pub symmetric: bool,
}

impl Default for InfoNceParams {
    fn default() -> Self {
        InfoNceParams {
            temperature: 0.07,
            normalize: true,
            eps: 1e-12,
            symmetric: false,
        }
    }
}

/// C = A·Bᵀ for row-major A [m, k], B [n, k] (C [m, n]), in f64 by `matrixmultiply`.
fn gemm_abt(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // SAFETY: a is m×k row-major (strides k, 1), b read as k×n through strides (1, k), c m×n
    // row-major; all slices have exactly those lengths.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

/// C = A·B for row-major A [m, k], B [k, n]; `at`: A is given as its transpose [k, m].
fn gemm_ab(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, at: bool) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    let (rsa, csa) = if at { (1, m as isize) } else { (k as isize, 1) };
    // SAFETY: strides describe a (m×k, or its transpose k×m), b k×n row-major, c m×n row-major.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

/// One embedding's floor ν = max(‖x‖, eps) and branch (true: the norm).
fn floor_norm(x: &[f64], eps: f64) -> (f64, bool) {
    let mut v: Vec<Pair> = x.iter().map(|&c| (c, 0.0)).collect();
    let (_, n, _) = norm_of(&mut v);
    if n.0.is_nan() {
        return (f64::NAN, true);
    }
    let norm_branch = n.0 > eps || (n.0 == eps && n.1 > 0.0);
    if norm_branch {
        (n.0 + n.1, true)
    } else {
        (eps, false)
    }
}

/// Σ a_k b_k compensated (TwoProd + TwoSum), rounded once.
fn dot2(a: &[f64], b: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (p, e) = two_prod(x, y);
        let (t, e2) = two_sum(s, p);
        s = t;
        c += e + e2;
    }
    if !s.is_finite() {
        return a.iter().zip(b).map(|(x, y)| x * y).sum();
    }
    s + c
}

/// InfoNCE / NT-Xent: l_i = −log softmax_j(s_ij/τ) at j = i over the rows with mask 1, s =
/// q̂·k̂ᵀ (x̂ = x / max(‖x‖, eps) with `normalize`); `symmetric` averages it with the loss over
/// keys (CLIP). A mask 0 removes query i and key i; weight i scales row i's loss only.
/// Gradients for query, key (`args.want[0..2]`). Errors (never panics) on lengths, a
/// temperature or eps that is not finite and > 0, and the weight / mask / cotangent checks.
pub fn info_nce<T: Element, O: Element>(
    args: &RowArgs<'_, T>,
    query: &[T],
    key: &[T],
    params: InfoNceParams,
) -> Result<Output<T, O>, LossError> {
    let InfoNceParams {
        temperature: tau,
        normalize,
        eps,
        symmetric,
    } = params;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(bad_param("temperature", tau, "finite float > 0"));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(bad_param("eps", eps, "finite float > 0"));
    }
    let (n, d) = (args.rows, args.dim);
    check_emb("query", query, n, d)?;
    check_emb("key", key, n, d)?;
    let plan = plan_of(args)?;
    let want = [args.want[0], args.want[1]];
    let zero_t = T::from_f64(0.0);
    let mut grads: Vec<Vec<T>> = (0..2)
        .map(|k| {
            if want[k] {
                vec![zero_t; n * d]
            } else {
                Vec::new()
            }
        })
        .collect();
    let none = plan.reduction() == Reduction::None;
    let den = plan.denom();
    if plan.is_empty_mean() {
        return Ok(output(
            vec![O::from_f64(0.0); plan.value_len()],
            grads,
            &want,
        ));
    }
    let present: Vec<usize> = match args.mask {
        Some(m) => (0..n).filter(|&i| m[i] != 0).collect(),
        None => (0..n).collect(),
    };
    let nk = present.len();
    let gather = |x: &[T]| -> Vec<f64> {
        let mut out = Vec::with_capacity(nk * d);
        for &i in &present {
            out.extend(x[i * d..(i + 1) * d].iter().map(|v| v.to_f64()));
        }
        out
    };
    let qm = gather(query);
    let km = gather(key);
    let floors = |m: &[f64]| -> Vec<(f64, bool)> {
        (0..nk)
            .map(|a| {
                if normalize {
                    floor_norm(&m[a * d..(a + 1) * d], eps)
                } else {
                    (1.0, false)
                }
            })
            .collect()
    };
    let qf = floors(&qm);
    let kf = floors(&km);
    let raw = gemm_abt(&qm, &km, nk, nk, d);
    let z: Vec<f64> = (0..nk * nk)
        .map(|ab| {
            let (a, b) = (ab / nk, ab % nk);
            raw[ab] / qf[a].0 / kf[b].0 / tau
        })
        .collect();
    let cot = |j: usize| match args.cotangent {
        None => 1.0,
        Some(c) if none => c[j].to_f64(),
        Some(c) => c[0].to_f64(),
    };
    let half = if symmetric { 0.5 } else { 1.0 };
    let mut gm = vec![0.0f64; nk * nk];
    let mut e = vec![0.0f64; nk];
    let mut row_values = vec![0.0f64; nk];
    // the log-softmax of line a (a row of z, or a column), accumulating its gradient into gm
    let mut line = |a: usize, col: bool, coef: f64, gm: &mut [f64]| -> f64 {
        let at = |b: usize| if col { z[b * nk + a] } else { z[a * nk + b] };
        let mut js = a;
        let mut any_nan = false;
        for b in 0..nk {
            let x = at(b);
            any_nan |= x.is_nan();
            if x > at(js) {
                js = b;
            }
        }
        if any_nan {
            if coef != 0.0 {
                for b in 0..nk {
                    let idx = if col { b * nk + a } else { a * nk + b };
                    gm[idx] = f64::NAN;
                }
            }
            return f64::NAN;
        }
        let top = at(js);
        let (mut s, mut s_off) = (0.0f64, 0.0f64);
        for b in 0..nk {
            e[b] = if b == js {
                1.0
            } else {
                exp_nonpos(at(b) - top)
            };
            s += e[b];
            if b != a {
                s_off += e[b];
            }
        }
        let l = if js == a {
            libm::log1p(s_off)
        } else {
            (top - at(a)) + libm::log(s)
        };
        if coef != 0.0 {
            for b in 0..nk {
                let p = if b == a { -(s_off / s) } else { e[b] / s };
                if p != 0.0 {
                    let idx = if col { b * nk + a } else { a * nk + b };
                    gm[idx] += coef * p * half / tau;
                }
            }
        }
        l
    };
    for a in 0..nk {
        let i = present[a];
        let c = plan.coef(i);
        if c == 0.0 {
            continue;
        }
        let cj = cot(i);
        // the coefficient of ∂l_i: c·cot/den (0 for a zero cotangent: no gradient term)
        let coef = if cj == 0.0 { 0.0 } else { c * cj / den };
        let mut l = line(a, false, coef, &mut gm);
        if symmetric {
            l = 0.5 * (l + line(a, true, coef, &mut gm));
        }
        row_values[a] = l;
    }
    // value
    let mut value = Vec::new();
    if none {
        value = vec![O::from_f64(0.0); n];
        for a in 0..nk {
            let i = present[a];
            let c = plan.coef(i);
            if c != 0.0 {
                value[i] = O::from_f64(c * row_values[a]);
            }
        }
    } else {
        let mut acc = CompensatedSum::new();
        for a in 0..nk {
            let c = plan.coef(present[a]);
            if c != 0.0 {
                let (p, er) = pair_scale(c, (row_values[a], 0.0));
                acc.add_lane(a, p);
                acc.add_lane(a, er);
            }
        }
        value.push(reduced_value(&plan, &acc));
    }
    // gradients: ∂/∂q̂ = G·K̂, ∂/∂k̂ = Gᵀ·Q̂, then through the normalisation
    let unit = |m: &[f64], f: &[(f64, bool)]| -> Vec<f64> {
        (0..nk * d).map(|ac| m[ac] / f[ac / d.max(1)].0).collect()
    };
    let (qh, kh) = (unit(&qm, &qf), unit(&km, &kf));
    // The a-priori error bound E of each gradient component: (λ + 2N + D + 14)·2^−53·(its
    // absolute terms), λ = 2(D + 3)·max ‖q‖‖k‖/(ν μ τ) (derivation: the tolerance table's
    // info_nce entry, check::compare::TOLERANCES, which allows 2E). An exact 0 admits no
    // other answer (the allowance κ·2^−53·|exact| is relative), and the ulp distance from 0 to
    // a small x counts every float below x, so 0 is no safe answer for a small non-zero x
    // either. Hence: a row whose every component is below its E is rounding noise (a colinear
    // batch) and is returned as 0; a row with only some components below E (an exact zero
    // beside large components: mirrored keys with equal coefficients, a zero query's
    // Σ_b G_ab·k̂_b/eps) has its sums redone compensated, and a component is 0 only where the
    // compensated sum vanishes to its own resolution.
    let ratio = |m: &[f64], f: &[(f64, bool)]| -> f64 {
        (0..nk)
            .map(|a| {
                let sq: f64 = m[a * d..(a + 1) * d].iter().map(|x| x * x).sum();
                libm::sqrt(sq) / f[a].0
            })
            .fold(0.0, f64::max)
    };
    let lambda = 2.0 * (d as f64 + 3.0) * ratio(&qm, &qf) * ratio(&km, &kf) / tau;
    let resolution = (2.0 * nk as f64 + d as f64 + 14.0 + lambda) * 2f64.powi(-53);
    let abs = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.abs()).collect() };
    let gm_abs = abs(&gm);
    for k in 0..2 {
        if !want[k] {
            continue;
        }
        let (up, up_abs, me, fl) = if k == 0 {
            (
                gemm_ab(&gm, &kh, nk, d, nk, false),
                gemm_ab(&gm_abs, &abs(&kh), nk, d, nk, false),
                &qh,
                &qf,
            )
        } else {
            (
                gemm_ab(&gm, &qh, nk, d, nk, true),
                gemm_ab(&gm_abs, &abs(&qh), nk, d, nk, true),
                &kh,
                &kf,
            )
        };
        // the other side's unit vectors, and G's entry for (row a, other b)
        let other = if k == 0 { &kh } else { &qh };
        let g_at = |a: usize, b: usize| {
            if k == 0 {
                gm[a * nk + b]
            } else {
                gm[b * nk + a]
            }
        };
        let mut row = vec![0.0f64; d];
        let mut below = vec![false; d];
        for a in 0..nk {
            let i = present[a];
            let ga = &up_abs[a * d..(a + 1) * d];
            let xh = &me[a * d..(a + 1) * d];
            let xga: f64 = xh.iter().zip(ga).map(|(x, y)| x.abs() * y).sum();
            let (nu, norm_branch) = fl[a];
            let project = normalize && norm_branch;
            // r_c = (g_c − x̂_c·(x̂·g))/ν on the norm branch, g_c/ν otherwise; and its terms
            let finish = |g: &[f64], out: &mut [f64]| {
                let proj = if project { dot2(xh, g) } else { 0.0 };
                for c in 0..d {
                    out[c] = if proj != 0.0 {
                        let (p, e) = two_prod(xh[c], proj);
                        ((g[c] - p) - e) / nu
                    } else {
                        g[c] / nu
                    };
                }
            };
            let terms = |c: usize| {
                if project {
                    (ga[c] + xh[c].abs() * xga) / nu
                } else {
                    ga[c] / nu
                }
            };
            finish(&up[a * d..(a + 1) * d], &mut row);
            for c in 0..d {
                below[c] = row[c].abs() <= resolution * terms(c);
            }
            if below.iter().all(|&b| b) {
                // the whole row is rounding noise (a colinear batch, …): 0
                row.iter_mut().for_each(|r| *r = 0.0);
            } else if below.iter().any(|&b| b) {
                // Some components are below E beside larger ones: redo the row's sums
                // Σ_b G_ab·x̂_b compensated (TwoProd + TwoSum). An exact cancellation between
                // terms of equal size (G_ab·x̂_b = −G_ac·x̂_c, e.g. mirrored keys with equal
                // coefficients) then gives 0; a component that is small but accurately
                // computed (a projection that cancels, which the compensated projection
                // resolves) keeps its value. Rare: only rows with such components pay.
                let g2: Vec<f64> = (0..d)
                    .map(|c| {
                        let gs: Vec<f64> = (0..nk).map(|b| g_at(a, b)).collect();
                        let xs: Vec<f64> = (0..nk).map(|b| other[b * d + c]).collect();
                        dot2(&gs, &xs)
                    })
                    .collect();
                let mut row2 = vec![0.0f64; d];
                finish(&g2, &mut row2);
                // dot2's own error is below γ_n²·Σ|terms| with γ_n ≈ n·2^−53
                let floor = ((nk + d + 4) as f64 * 2f64.powi(-53)).powi(2);
                for c in 0..d {
                    if below[c] {
                        row[c] = if row2[c].abs() <= floor * terms(c) {
                            0.0
                        } else {
                            row2[c]
                        };
                    }
                }
            }
            for c in 0..d {
                grads[k][i * d + c] = T::from_f64(row[c]);
            }
        }
    }
    Ok(output(value, grads, &want))
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

fn bool_param(case: &Case, name: &str, default: bool) -> bool {
    match case.params.get(name) {
        Some(ParamValue::Bool(b)) => *b,
        _ => default,
    }
}

/// Evaluate a validated contrastive case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    let names: &[&str] = match case.loss.as_str() {
        "contrastive" => &["x1", "x2"],
        "triplet" => &["anchor", "positive", "negative"],
        "info_nce" => &["query", "key"],
        other => {
            return Err(LossError::unsupported(format!(
                "no contrastive kernel for {other}"
            )))
        }
    };
    let xs: Vec<Vec<T>> = names
        .iter()
        .map(|nm| req_input::<T>(case, nm))
        .collect::<Result<_, _>>()?;
    let (weight, mask, cotangent) = extras::<T>(case)?;
    let wants = |n: &str| case.grad.iter().any(|g| g == n);
    let mut want = [false; 3];
    for (k, nm) in names.iter().enumerate() {
        want[k] = wants(nm);
    }
    let args = RowArgs {
        rows: checked.rows,
        dim: checked.dim("D"),
        weight: weight.as_deref(),
        mask,
        cotangent: cotangent.as_deref(),
        reduction: case.reduction(),
        want,
    };
    let out: Output<T, O> = match case.loss.as_str() {
        "contrastive" => {
            let target = int_input(case, "target")?
                .ok_or_else(|| LossError::invalid("input target: expected an i64 tensor of 0/1"))?;
            contrastive(&args, &xs[0], &xs[1], target, req_param(case, "margin")?)?
        }
        "triplet" => triplet(
            &args,
            &xs[0],
            &xs[1],
            &xs[2],
            req_param(case, "margin")?,
            req_param(case, "eps")?,
        )?,
        _ => info_nce(
            &args,
            &xs[0],
            &xs[1],
            InfoNceParams {
                temperature: req_param(case, "temperature")?,
                normalize: bool_param(case, "normalize", true),
                eps: req_param(case, "eps")?,
                symmetric: bool_param(case, "symmetric", false),
            },
        )?,
    };
    let value = Tensor::float(
        O::DTYPE,
        checked.value_shape(case.reduction()),
        out.value.iter().map(|v| v.to_f64()).collect(),
    );
    let mut grad = BTreeMap::new();
    for (k, g) in out.grads.into_iter().enumerate() {
        if let Some(g) = g {
            let shape = case.inputs[names[k]].shape.clone();
            grad.insert(
                names[k].to_string(),
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
