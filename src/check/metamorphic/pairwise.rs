//! Metamorphic relations of the pairwise losses (`margin_ranking`, `pairwise_logistic`,
//! `dpo`), checked like the elementwise ones (see the parent module) on a subject and on the
//! oracle. Both are identities of the exact results, so the correct roundings agree bit for
//! bit and a subject's two answers must be within the sum of their tolerances:
//!
//! - [`margin_ranking_is_antisymmetric`]: swapping s1 and s2 and negating the ±1 target leaves
//!   max(0, −y·(s1 − s2) + m) unchanged, value and gradients (∂/∂s1 and ∂/∂s2 swapped);
//! - [`pairwise_logistic_is_dpo`]: softplus(rejected − chosen) is DPO with both reference
//!   log-probs 0, β = 1 and no label smoothing (h = chosen − rejected exactly): value and the
//!   gradients of the chosen and rejected inputs.

use super::{check_all_scaled, observe, with_case, Held, Observed, Outcome, Side};
use losscheck_core::{Case, Data, ParamValue, Tensor};

/// The observation with its gradient outputs renamed through `names` (old → new); others
/// dropped.
fn renamed(o: Observed, names: &[(&str, &str)]) -> Observed {
    let grads = o
        .grads
        .into_iter()
        .filter_map(|(k, v)| {
            names
                .iter()
                .find(|(old, _)| *old == k)
                .map(|(_, new)| (new.to_string(), v))
        })
        .collect();
    Observed {
        value: o.value,
        grads,
    }
}

/// A case's gradient list with its names renamed through `names` (old → new).
fn renamed_grads(grad: &[String], names: &[(&str, &str)]) -> Vec<String> {
    grad.iter()
        .filter_map(|g| {
            names
                .iter()
                .find(|(old, _)| old == g)
                .map(|(_, new)| new.to_string())
        })
        .collect()
}

/// **margin_ranking(s1, s2, y) = margin_ranking(s2, s1, −y)**, the gradients swapped.
pub fn margin_ranking_is_antisymmetric(base: &Case, side: Side) -> Outcome {
    if base.loss != "margin_ranking" {
        return Ok(Held::default());
    }
    let mut swapped = base.clone();
    let (s1, s2) = (base.inputs["s1"].clone(), base.inputs["s2"].clone());
    swapped.inputs.insert("s1".into(), s2);
    swapped.inputs.insert("s2".into(), s1);
    if let Some(t) = swapped.inputs.get_mut("target") {
        match &mut t.data {
            Data::I(v) if v.iter().all(|&y| y == 1 || y == -1) => {
                v.iter_mut().for_each(|y| *y = -*y)
            }
            Data::F(v) if v.iter().all(|y| y.abs() == 1.0) => v.iter_mut().for_each(|y| *y = -*y),
            _ => return Ok(Held::default()), // not a ±1 target: no mirror case
        }
    }
    let swap = [("s1", "s2"), ("s2", "s1")];
    swapped.grad = renamed_grads(&base.grad, &swap);
    let ob = observe(base, side)?;
    let os = renamed(observe(&swapped, side)?, &swap);
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, base, &ob, &os, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!(
            "{}: swapping s1, s2 and negating the target changed the loss",
            side.name()
        ),
        &[("base", base), ("swapped", &swapped)],
    )
    .map(|_| h)
}

/// **pairwise_logistic(c, r) = dpo(πc = c, πr = r, rc = rr = 0, β = 1, ε = 0)**.
pub fn pairwise_logistic_is_dpo(base: &Case, side: Side) -> Outcome {
    if base.loss != "pairwise_logistic" {
        return Ok(Held::default());
    }
    let mut dpo = Case::new("dpo", base.dtype).map_err(|e| e.to_string())?;
    dpo.id = base.id;
    dpo.out_dtype = base.out_dtype;
    let names = [("chosen", "policy_chosen"), ("rejected", "policy_rejected")];
    for (k, t) in &base.inputs {
        let k = names
            .iter()
            .find(|(old, _)| old == k)
            .map_or(k.as_str(), |(_, new)| new);
        dpo.inputs.insert(k.to_string(), t.clone());
    }
    let c = &base.inputs["chosen"];
    let zeros = Tensor::float(base.dtype, c.shape.clone(), vec![0.0; c.numel()]);
    dpo.inputs.insert("ref_chosen".into(), zeros.clone());
    dpo.inputs.insert("ref_rejected".into(), zeros);
    dpo.params = base.params.clone();
    dpo.params.insert("beta".into(), ParamValue::Float(1.0));
    dpo.params
        .insert("label_smoothing".into(), ParamValue::Float(0.0));
    dpo.grad = renamed_grads(&base.grad, &names);
    let back = [("policy_chosen", "chosen"), ("policy_rejected", "rejected")];
    let ob = observe(base, side)?;
    let od = renamed(observe(&dpo, side)?, &back);
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, base, &ob, &od, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!(
            "{}: pairwise_logistic differs from dpo with zero references and β = 1",
            side.name()
        ),
        &[("pairwise_logistic", base), ("dpo", &dpo)],
    )
    .map(|_| h)
}
