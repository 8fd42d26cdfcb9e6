//! Metamorphic relations of the row-wise probabilistic losses, checked like the others (see the
//! parent module) on a subject and on the oracle, on inputs constructed so that each relation
//! is exact in the reals:
//!
//! - [`kl_log_target_is_kl_on_probabilities`]: `kl_div` with `log_target` on log p equals
//!   `kl_div` on p — with p ∈ {0, 1} (log p ∈ {−inf, 0}, the only values where both are dtype
//!   values), whatever log q holds at p = 0 (−inf, +inf, NaN): value and gradient;
//! - [`distill_t1_is_kl_of_softmaxes`]: `distill_kl` forward at T = 1 equals `kl_div` with input
//!   log_softmax(student) and target softmax(teacher), on rows where both are exact: a student
//!   with one +inf logit (log_softmax ∈ {0, −inf}), a teacher one-hot (+inf) or uniform over
//!   2^j finite equal logits (softmax 2^−j) with −inf elsewhere: the value;
//! - [`brier_is_proper`]: for π with Σπ = 1 exactly (dyadic, drawn by the caller), the
//!   expectation Σ_y π_y·B(p, y) — one `brier` evaluation of C rows (prob p, target y, weight
//!   π_y, `sum`) — is smallest at p = π: no other p the caller draws (π nudged by ulps, random
//!   points, one-hot rows) does better beyond both sides' tolerances; at p = π it is
//!   1 − Σπ² exactly;
//! - [`neg_elbo_zero_latent_is_bce`]: `neg_elbo(x, z, μ = 0, logvar = 0)` equals
//!   Σ_d bce_logits(z, x) (`sum`): the value and ∂/∂recon_logits.

use super::{check_scaled, observe, with_case, Comp, Held, Outcome, Side};
use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};

fn f(case: &Case, name: &str) -> Vec<f64> {
    case.inputs[name]
        .f()
        .map(<[f64]>::to_vec)
        .unwrap_or_default()
}

fn set(case: &mut Case, name: &str, shape: Vec<usize>, v: Vec<f64>) {
    let d = case.dtype;
    case.inputs.insert(name.into(), Tensor::float(d, shape, v));
}

fn reduce(case: &mut Case, r: Reduction) {
    case.params
        .insert("reduction".into(), ParamValue::Str(r.name().into()));
}

/// Compare every value and gradient component of `a` with that of `b` (same shapes), a = b.
fn same_outputs(
    h: &mut Held,
    a: &Case,
    b: &Case,
    grads: &[(&str, &str)],
    side: Side,
) -> Result<(), String> {
    let (oa, ob) = (observe(a, side)?, observe(b, side)?);
    for (k, (x, y)) in oa.value.iter().zip(&ob.value).enumerate() {
        check_scaled(h, a.out_dtype, &format!("value[{k}]"), x, y, 1.0)?;
    }
    for (ga, gb) in grads {
        if let (Some(x), Some(y)) = (oa.grads.get(*ga), ob.grads.get(*gb)) {
            for (k, (p, q)) in x.iter().zip(y).enumerate() {
                check_scaled(h, a.dtype, &format!("grad.{ga}[{k}]"), p, q, 1.0)?;
            }
        }
    }
    Ok(())
}

/// `kl_div` base case → (log_target case, probability case) with p ∈ {0, 1} chosen from the
/// base target (p ≥ ½ → 1).
pub fn kl_log_target_is_kl_on_probabilities(base: &Case, side: Side) -> Outcome {
    let mut p = base.clone();
    p.params
        .insert("log_target".into(), ParamValue::Bool(false));
    let t: Vec<f64> = f(base, "target")
        .iter()
        .map(|&x| if x >= 0.5 { 1.0 } else { 0.0 })
        .collect();
    let shape = base.inputs["target"].shape.clone();
    set(&mut p, "target", shape.clone(), t.clone());
    let mut l = p.clone();
    l.params.insert("log_target".into(), ParamValue::Bool(true));
    let lt = t
        .iter()
        .map(|&x| if x == 1.0 { 0.0 } else { f64::NEG_INFINITY })
        .collect();
    set(&mut l, "target", shape, lt);
    let mut h = Held::default();
    let r = same_outputs(&mut h, &l, &p, &[("input", "input")], side);
    with_case(
        r,
        "kl_div log_target vs probabilities",
        &[("log", &l), ("prob", &p)],
    )
    .map(|_| h)
}

/// `distill_kl` base case → (T = 1 forward case, `kl_div` case), rows made exact as in the
/// module docs; `uniform` picks the teacher rows' kind (per row, from its bits).
pub fn distill_t1_is_kl_of_softmaxes(base: &Case, side: Side) -> Outcome {
    let shape = base.inputs["student"].shape.clone();
    let (n, c) = (shape[0], shape[1]);
    if c == 0 {
        return Ok(Held::default());
    }
    let (s0, t0) = (f(base, "student"), f(base, "teacher"));
    let (mut s, mut t) = (s0.clone(), t0.clone());
    let (mut lq, mut p) = (vec![0.0; n * c], vec![0.0; n * c]);
    for i in 0..n {
        let h = (s0[i * c].to_bits() ^ t0[i * c].to_bits().rotate_left(17)) as usize;
        // student: +inf at k (others keep their finite values or −inf)
        let k = h % c;
        for j in 0..c {
            if !s[i * c + j].is_finite() {
                s[i * c + j] = f64::NEG_INFINITY;
            }
            lq[i * c + j] = if j == k { 0.0 } else { f64::NEG_INFINITY };
        }
        s[i * c + k] = f64::INFINITY;
        // teacher: one-hot (+inf at m) or uniform over the first 2^j classes
        if (h >> 8) % 2 == 0 {
            let m = (h >> 12) % c;
            for j in 0..c {
                let x = t[i * c + j];
                t[i * c + j] = if j == m {
                    f64::INFINITY
                } else if x.is_finite() {
                    x
                } else {
                    f64::NEG_INFINITY
                };
                p[i * c + j] = if j == m { 1.0 } else { 0.0 };
            }
        } else {
            let mut w = 1;
            while 2 * w <= c {
                w *= 2;
            }
            let v = if t0[i * c].is_finite() {
                t0[i * c]
            } else {
                0.0
            };
            for j in 0..c {
                t[i * c + j] = if j < w { v } else { f64::NEG_INFINITY };
                p[i * c + j] = if j < w { 1.0 / w as f64 } else { 0.0 };
            }
        }
    }
    let mut a = base.clone();
    a.params
        .insert("temperature".into(), ParamValue::Float(1.0));
    a.params
        .insert("direction".into(), ParamValue::Str("forward".into()));
    set(&mut a, "student", shape.clone(), s);
    set(&mut a, "teacher", shape.clone(), t);
    a.grad.clear();
    let mut b = Case::new("kl_div", base.dtype).map_err(|e| e.message)?;
    b.out_dtype = base.out_dtype;
    b.params = [("reduction".to_string(), base.params["reduction"].clone())]
        .into_iter()
        .collect();
    b.params
        .insert("log_target".into(), ParamValue::Bool(false));
    for k in ["weight", "mask", "cotangent"] {
        if let Some(x) = base.inputs.get(k) {
            b.inputs.insert(k.into(), x.clone());
        }
    }
    set(&mut b, "input", shape.clone(), lq);
    set(&mut b, "target", shape, p);
    let mut h = Held::default();
    let r = same_outputs(&mut h, &a, &b, &[], side);
    with_case(
        r,
        "distill_kl at T = 1 vs kl_div of the softmaxes",
        &[("distill", &a), ("kl_div", &b)],
    )
    .map(|_| h)
}

/// The expectation case: C rows of prob `p`, targets 0..C, weights π, reduction `sum`.
fn expectation_case(dtype: Dtype, out: Dtype, pi: &[f64], p: &[f64]) -> Case {
    let c = pi.len();
    let mut e = Case::new("brier", dtype).expect("brier");
    e.out_dtype = out;
    reduce(&mut e, Reduction::Sum);
    let rows: Vec<f64> = (0..c).flat_map(|_| p.iter().copied()).collect();
    set(&mut e, "prob", vec![c, c], rows);
    set(&mut e, "weight", vec![c], pi.to_vec());
    e.inputs.insert(
        "target".into(),
        Tensor::int(vec![c], (0..c as i64).collect()),
    );
    e
}

/// `pi`: dtype values ≥ 0 with Σ = 1 exactly; `others`: candidate points (in [0, 1]^C).
pub fn brier_is_proper(
    dtype: Dtype,
    out: Dtype,
    pi: &[f64],
    others: &[Vec<f64>],
    side: Side,
) -> Outcome {
    let mut h = Held::default();
    let best_case = expectation_case(dtype, out, pi, pi);
    let ob = observe(&best_case, side)?;
    let best: &Comp = &ob.value[0];
    // at p = π: Σ_c π_c² − 2Σ π_c² + 1 = 1 − Σπ²
    let want = 1.0 - pi.iter().map(|x| x * x).sum::<f64>();
    let exact = Comp {
        x: out.round(want),
        tol: 0.0,
        exact: best.exact.clone(),
    };
    let r = check_scaled(&mut h, out, "E[B(π, y)]", best, &exact, 1.0);
    with_case(r, "brier at p = π is 1 − Σπ²", &[("case", &best_case)])?;
    for p in others {
        let c = expectation_case(dtype, out, pi, p);
        let o = observe(&c, side)?;
        let x = &o.value[0];
        h.compared += 1;
        let slack = best.err_bound(out) + x.err_bound(out);
        if best.x > x.x + slack {
            return Err(format!(
                "brier is not proper: E[B(π)] = {} > E[B(p)] = {} (slack {slack:e})\n  π case: {}\n  p case: {}",
                best.x,
                x.x,
                best_case.to_json(),
                c.to_json()
            ));
        }
    }
    Ok(h)
}

/// `neg_elbo` base case → μ = 0, logvar = 0, `sum`, against `bce_logits` on the same x and z.
pub fn neg_elbo_zero_latent_is_bce(base: &Case, side: Side) -> Outcome {
    // the active rows only (skipped rows may hold poison), without weight, mask, cotangent
    let n = base.inputs["x"].shape[0];
    let skip = losscheck_core::catalogue::skipped_rows(base, n);
    let mut a = base.clone();
    for k in ["weight", "mask", "cotangent"] {
        a.inputs.remove(k);
    }
    for name in ["x", "recon_logits", "mu", "logvar"] {
        let t = &base.inputs[name];
        let w = t.shape[1];
        let v: Vec<f64> = f(base, name)
            .chunks(w.max(1))
            .take(if w == 0 { 0 } else { n })
            .enumerate()
            .filter(|(i, _)| !skip[*i])
            .flat_map(|(_, r)| r.to_vec())
            .collect();
        let rows = (0..n).filter(|&i| !skip[i]).count();
        set(&mut a, name, vec![rows, w], v);
    }
    reduce(&mut a, Reduction::Sum);
    let ks = a.inputs["mu"].shape.clone();
    let zeros = vec![0.0; ks.iter().product()];
    set(&mut a, "mu", ks.clone(), zeros.clone());
    set(&mut a, "logvar", ks, zeros);
    a.grad = vec!["recon_logits".into()];
    let mut b = Case::new("bce_logits", base.dtype).map_err(|e| e.message)?;
    b.out_dtype = base.out_dtype;
    reduce(&mut b, Reduction::Sum);
    b.inputs
        .insert("logit".into(), a.inputs["recon_logits"].clone());
    b.inputs.insert("target".into(), a.inputs["x"].clone());
    b.grad = vec!["logit".into()];
    let mut h = Held::default();
    let r = same_outputs(&mut h, &a, &b, &[("recon_logits", "logit")], side);
    with_case(
        r,
        "neg_elbo(x, z, 0, 0) vs Σ bce_logits(z, x)",
        &[("neg_elbo", &a), ("bce_logits", &b)],
    )
    .map(|_| h)
}
