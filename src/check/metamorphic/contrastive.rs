//! Metamorphic relations of `info_nce` (the batch-coupled contrastive loss), checked like the
//! others (see the parent module) on a subject and on the oracle:
//!
//! - [`joint_permutation_permutes`]: permuting the rows of query, key, weight, mask (and a
//!   `none` cotangent) together permutes the `none` value and the gradients' rows and keeps a
//!   reduced value — the only permutation DESIGN.md allows for `info_nce` (permuting queries
//!   alone changes which key is the positive);
//! - [`normalized_scaling_is_invariant`]: with `normalize` on, scaling every query by 2^k and
//!   every key by 2^j (exact: no overflow or underflow) leaves the value unchanged and scales
//!   the gradients by 2^−k and 2^−j — for cases whose embeddings all keep ‖x‖ > eps by a wide
//!   margin on both sides (the eps branch does not scale) or are exactly zero (x̂ = 0 either
//!   way: their gradient g/eps is unchanged).

use super::{check_scaled, dtype_of, observe, outputs, with_case, Comp, Held, Outcome, Side};
use crate::check::compare::conditioning_ulps;
use losscheck_core::dtype::pow2;
use losscheck_core::{Case, Data, ParamValue, Reduction, Tensor};

/// Gradient rows are judged normwise (DESIGN.md): a component of row r of `a` may differ from
/// `s` times its image in `b` by (a.tol + b.tol) ulps of the row's largest exact component,
/// plus both conditioning allowances; rows whose exact components are all 0 or subnormal, NaN
/// and infinities component by component ([`check_scaled`]).
fn check_row(
    h: &mut Held,
    dtype: losscheck_core::Dtype,
    label: &str,
    a: &[&Comp],
    b: &[&Comp],
    s: &[f64],
) -> Result<(), String> {
    let m = a.iter().map(|c| c.exact.rounded.abs()).fold(0.0, f64::max);
    // a row below the normal range is compared component by component (where subnormal
    // results are not judged: the relation does not survive rounding there)
    let plain = m < dtype.min_normal()
        || !m.is_finite()
        || a.iter()
            .chain(b)
            .any(|c| !c.x.is_finite() || !c.exact.rounded.is_finite());
    for k in 0..a.len() {
        if plain {
            check_scaled(h, dtype, &format!("{label}[{k}]"), a[k], b[k], s[k])?;
            continue;
        }
        let sub = |x: f64| x != 0.0 && x.abs() < dtype.min_normal();
        if [a[k].exact.rounded, b[k].exact.rounded, a[k].x, b[k].x]
            .into_iter()
            .chain([s[k] * b[k].exact.rounded, s[k] * b[k].x])
            .any(sub)
        {
            // subnormal components: the relation does not survive rounding there
            h.skipped += 1;
            continue;
        }
        h.compared += 1;
        let cond = |c: &Comp| conditioning_ulps(dtype, &c.exact) * dtype.ulp_at(c.exact.rounded);
        let allowed =
            (a[k].tol + b[k].tol) * dtype.ulp_at(m) + cond(a[k]) + cond(b[k]) * s[k].abs();
        let diff = (a[k].x - s[k] * b[k].x).abs();
        if diff > allowed {
            return Err(format!(
                "{label}[{k}]: {:?} vs {} × {:?}: {diff:e} apart, allowed {allowed:e} (normwise)",
                a[k].x, s[k], b[k].x
            ));
        }
    }
    Ok(())
}

fn rows(case: &Case) -> (usize, usize) {
    let q = &case.inputs["query"];
    (q.shape[0], q.shape.get(1).copied().unwrap_or(0))
}

/// The case with its rows permuted: row i of the result is row `perm[i]` of `case`.
pub fn permute_rows(case: &Case, perm: &[usize]) -> Case {
    let (n, _) = rows(case);
    let none = case.reduction() == Reduction::None;
    let mut c = case.clone();
    for (k, t) in c.inputs.iter_mut() {
        if (k == "cotangent" && !none) || t.shape.first() != Some(&n) {
            continue;
        }
        let per = t.len() / n.max(1);
        t.data = match &t.data {
            Data::F(v) => Data::F(
                perm.iter()
                    .flat_map(|&j| v[j * per..(j + 1) * per].to_vec())
                    .collect(),
            ),
            Data::I(v) => Data::I(
                perm.iter()
                    .flat_map(|&j| v[j * per..(j + 1) * per].to_vec())
                    .collect(),
            ),
        };
    }
    c
}

/// **Joint permutation** of queries and keys (with their weights, masks, cotangents).
pub fn joint_permutation_permutes(base: &Case, seed: u64, side: Side) -> Outcome {
    let (n, d) = rows(base);
    let perm = super::permutation(n, seed);
    let p = permute_rows(base, &perm);
    let ob = observe(base, side)?;
    let op = observe(&p, side)?;
    let none = base.reduction() == Reduction::None;
    let mut h = Held::default();
    let base_out: std::collections::BTreeMap<String, _> = outputs(&ob).into_iter().collect();
    let mut r = Ok(());
    'outer: for (name, pc) in outputs(&op) {
        let Some(bc) = base_out.get(&name) else {
            continue;
        };
        let dtype = dtype_of(&p, &name);
        if name == "value" {
            for (i, c) in pc.iter().enumerate() {
                let j = if none { perm[i] } else { 0 };
                r = check_scaled(&mut h, dtype, &format!("value[{i}]"), c, &bc[j], 1.0);
                if r.is_err() {
                    break 'outer;
                }
            }
            continue;
        }
        let dd = d.max(1);
        for row in 0..pc.len() / dd {
            let a: Vec<&Comp> = pc[row * dd..(row + 1) * dd].iter().collect();
            let b: Vec<&Comp> = bc[perm[row] * dd..(perm[row] + 1) * dd].iter().collect();
            r = check_row(
                &mut h,
                dtype,
                &format!("{name} row {row}"),
                &a,
                &b,
                &vec![1.0; dd],
            );
            if r.is_err() {
                break 'outer;
            }
        }
    }
    with_case(
        r,
        &format!("{}: permuting queries and keys jointly", side.name()),
        &[("base", base), ("permuted", &p)],
    )
    .map(|_| h)
}

/// The case scaled (queries by 2^k, keys by 2^j), or `None` when the relation does not apply
/// (normalize off, a scaled value not exact, a norm within 2^8 of eps on either side).
pub fn scaled(case: &Case, k: i32, j: i32) -> Option<Case> {
    if !matches!(
        case.params.get("normalize"),
        Some(ParamValue::Bool(true)) | None
    ) {
        return None;
    }
    let eps = case.float_param("eps").unwrap_or(1e-12);
    let (n, d) = rows(case);
    let mut c = case.clone();
    for (name, s) in [("query", k), ("key", j)] {
        let t = &case.inputs[name];
        let v = t.f()?;
        let f = pow2(s);
        let mut out = Vec::with_capacity(v.len());
        for i in 0..n {
            let row = &v[i * d..(i + 1) * d];
            let sq: f64 = row.iter().map(|x| x * x).sum();
            let nrm = sq.sqrt();
            if !nrm.is_finite() || (nrm != 0.0 && nrm.min(nrm * f) < eps * 256.0) {
                return None;
            }
            for &x in row {
                let y = case.dtype.round(x * f);
                if !y.is_finite() || y != x * f || (x != 0.0 && y.abs() < case.dtype.min_normal()) {
                    return None;
                }
                out.push(y);
            }
        }
        c.inputs
            .insert(name.into(), Tensor::float(case.dtype, t.shape.clone(), out));
    }
    Some(c)
}

/// **Scaling normalized embeddings by powers of two** is invisible to the value; the gradients
/// scale inversely (rows of zero embeddings: unchanged).
pub fn normalized_scaling_is_invariant(base: &Case, k: i32, j: i32, side: Side) -> Outcome {
    let Some(s) = scaled(base, k, j) else {
        return Ok(Held::default());
    };
    let (_, d) = rows(base);
    let ob = observe(base, side)?;
    let os = observe(&s, side)?;
    let base_out: std::collections::BTreeMap<String, _> = outputs(&ob).into_iter().collect();
    let mut h = Held::default();
    let mut r = Ok(());
    'outer: for (name, sc) in outputs(&os) {
        let Some(bc) = base_out.get(&name) else {
            continue;
        };
        let dtype = dtype_of(&s, &name);
        let input = name.strip_prefix("grad.");
        let Some(inp) = input else {
            for (i, c) in sc.iter().enumerate() {
                r = check_scaled(&mut h, dtype, &format!("value[{i}]"), c, &bc[i], 1.0);
                if r.is_err() {
                    break 'outer;
                }
            }
            continue;
        };
        let v = base.inputs[inp].f().unwrap_or(&[]);
        let dd = d.max(1);
        for row in 0..sc.len() / dd {
            let zero = v[row * d..(row + 1) * d].iter().all(|&x| x == 0.0);
            let f = if zero {
                1.0
            } else {
                pow2(if inp == "query" { -k } else { -j })
            };
            let a: Vec<&Comp> = sc[row * dd..(row + 1) * dd].iter().collect();
            let b: Vec<&Comp> = bc[row * dd..(row + 1) * dd].iter().collect();
            r = check_row(
                &mut h,
                dtype,
                &format!("{name} row {row}"),
                &a,
                &b,
                &vec![f; dd],
            );
            if r.is_err() {
                break 'outer;
            }
        }
    }
    with_case(
        r,
        &format!(
            "{}: scaling queries by 2^{k} and keys by 2^{j} (normalize on)",
            side.name()
        ),
        &[("base", base), ("scaled", &s)],
    )
    .map(|_| h)
}
