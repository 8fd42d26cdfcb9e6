//! Alternative readings and `batch_variant` (issue 5, items 5 and 2): a subject that follows a
//! known alternative reading of DESIGN.md's policies (check/policies.rs) is reported with that
//! reading's fact and exit 0 — exit 1 under `--strict-policy`; the exact DESIGN.md-following
//! kernels draw nothing, strictly either; a subject wrong by a lot is still `accuracy`; a
//! subject whose `none` rows depend on the batch is caught as `batch_variant`.

use losscheck::check::fuzz::{self, Report, Settings};
use losscheck::check::policies;
use losscheck::check::subject::{FnSubject, Kernels, Subject};
use losscheck::core::{Case, Dtype, ErrorKind, LossError, Reduction, Response, Tensor};

/// The tensor with every component mapped by `f` and rounded to `dtype`.
fn mapped(t: &Tensor, dtype: Dtype, f: &dyn Fn(usize, f64) -> f64) -> Tensor {
    Tensor::float(
        dtype,
        t.shape.clone(),
        (0..t.len())
            .map(|k| dtype.round(f(k, t.get_f64(k))))
            .collect(),
    )
}

/// The kernels' answer with the value and every gradient times `factor` (a mean over another
/// denominator: every component of a `mean` is proportional to 1/D).
fn kernels_times(case: &Case, factor: f64) -> Result<Response, LossError> {
    let mut r = losscheck::kernels::evaluate(case)?;
    r.value = mapped(&r.value, case.out_dtype, &|_, x| x * factor);
    for g in r.grad.values_mut() {
        *g = mapped(g, case.dtype, &|_, x| x * factor);
    }
    Ok(r)
}

fn floats<'a>(case: &'a Case, name: &str) -> Option<&'a [f64]> {
    case.inputs.get(name).and_then(Tensor::f)
}

/// m_i·w_i (1 where absent) per position.
fn mask_weight(case: &Case, n: usize) -> Vec<f64> {
    let m = case.inputs.get("mask").and_then(Tensor::i);
    let w = floats(case, "weight");
    (0..n)
        .map(|i| {
            let mi = m.map_or(1.0, |m| m[i] as f64);
            mi * w.map_or(1.0, |w| w[i])
        })
        .collect()
}

/// `mse` with a weighted `mean` over N′ = Σ m (the unmasked positions) instead of Σ m·w,
/// computed in f64 from the inputs (a zero weight still removes its term) and rounded once.
fn mse_weighted_mean_over_n(case: &Case) -> Result<Response, LossError> {
    losscheck::core::validate(case)?;
    let (p, t) = (
        floats(case, "pred").unwrap(),
        floats(case, "target").unwrap(),
    );
    let mw = mask_weight(case, p.len());
    let counted = case
        .inputs
        .get("mask")
        .and_then(Tensor::i)
        .map_or(p.len(), |m| m.iter().filter(|&&v| v != 0).count());
    if case.reduction() != Reduction::Mean
        || !case.inputs.contains_key("weight")
        || mw.iter().sum::<f64>() == 0.0
    {
        return losscheck::kernels::evaluate(case);
    }
    let cot = floats(case, "cotangent").map_or(1.0, |c| c[0]);
    let n = counted as f64;
    let active = |i: usize| mw[i] != 0.0;
    let value: f64 = (0..p.len())
        .filter(|&i| active(i))
        .map(|i| mw[i] * (p[i] - t[i]) * (p[i] - t[i]))
        .sum::<f64>()
        / n;
    let mut r = losscheck::kernels::evaluate(case)?;
    r.value = mapped(&r.value, case.out_dtype, &|_, _| value);
    for (name, g) in r.grad.iter_mut() {
        let sign = if name == "pred" { 2.0 } else { -2.0 };
        *g = mapped(g, case.dtype, &|i, _| {
            if active(i) && cot != 0.0 {
                sign * mw[i] * (p[i] - t[i]) * cot / n
            } else {
                0.0
            }
        });
    }
    Ok(r)
}

/// PyTorch's kl_div(reduction='mean'): over N·C.
fn kl_div_mean_over_nc(case: &Case) -> Result<Response, LossError> {
    if case.reduction() != Reduction::Mean {
        return losscheck::kernels::evaluate(case);
    }
    let c = *case.inputs["input"].shape.last().unwrap_or(&1);
    kernels_times(case, 1.0 / c.max(1) as f64)
}

/// bce's gradient as PyTorch's backward: (p − t)/max(p(1 − p), 1e−12)·m·w·c/D.
fn bce_grad_clamp(case: &Case) -> Result<Response, LossError> {
    let mut r = losscheck::kernels::evaluate(case)?;
    let (p, t) = (
        floats(case, "prob").unwrap(),
        floats(case, "target").unwrap(),
    );
    let mw = mask_weight(case, p.len());
    let d = if case.reduction() == Reduction::Mean {
        mw.iter().sum::<f64>()
    } else {
        1.0
    };
    let cot = floats(case, "cotangent");
    let c = |i: usize| cot.map_or(1.0, |c| if c.len() == 1 { c[0] } else { c[i] });
    if let Some(g) = r.grad.get_mut("prob") {
        *g = mapped(g, case.dtype, &|i, x| {
            let q = p[i] * (1.0 - p[i]);
            if mw[i] == 0.0 || d == 0.0 || q >= 1e-12 {
                x
            } else if p[i] == t[i] || c(i) == 0.0 {
                0.0
            } else {
                (p[i] - t[i]) * mw[i] * c(i) / (1e-12 * d)
            }
        });
    }
    Ok(r)
}

fn settings(losses: &[&str], cases: u64, strict: bool) -> Settings {
    Settings {
        losses: losses.iter().map(|s| s.to_string()).collect(),
        dtypes: vec![Dtype::F32],
        cases,
        strict_policy: strict,
        shrink_iters: 20,
        ..Settings::default()
    }
}

fn facts(r: &Report, name: &str) -> u64 {
    r.campaigns
        .iter()
        .map(|c| c.stats.facts.get(name).copied().unwrap_or(0))
        .sum()
}

/// Follows the reading `fact` on `losses`: reported with the fact and no finding (exit 0), and
/// with `--strict-policy` the fact is the finding (exit 1) and nothing else is.
fn follows(subject: &dyn Subject, losses: &[&str], cases: u64, fact: &str) {
    assert!(policies::reading(fact).is_some(), "{fact} is in READINGS");
    let r = fuzz::check(subject, &settings(losses, cases, false));
    assert!(
        facts(&r, fact) > 0,
        "{fact} never reported:\n{}",
        r.terminal()
    );
    assert_eq!(r.findings(), 0, "{}", r.terminal());
    assert_eq!(r.exit_code(), 0);
    let s = fuzz::check(subject, &settings(losses, cases, true));
    assert_eq!(s.exit_code(), 1, "{}", s.terminal());
    for c in &s.campaigns {
        for k in c.findings.keys() {
            assert_eq!(
                k, fact,
                "strictly, only the fact is a finding: {:?}",
                c.findings
            );
        }
    }
    assert!(s.terminal().contains(fact), "{}", s.terminal());
}

#[test]
fn a_weighted_mean_over_n_is_the_weighted_mean_over_n_fact() {
    let s = FnSubject {
        name: "mean_over_n".into(),
        f: mse_weighted_mean_over_n,
    };
    follows(&s, &["mse"], 400, "weighted_mean_over_n");
}

#[test]
fn pytorchs_kl_div_mean_is_the_kl_div_mean_over_nc_fact() {
    let s = FnSubject {
        name: "kl_mean".into(),
        f: kl_div_mean_over_nc,
    };
    follows(&s, &["kl_div"], 400, "kl_div_mean_over_nc");
}

#[test]
fn pytorchs_bce_gradient_clamp_is_the_bce_grad_clamp_fact() {
    let s = FnSubject {
        name: "bce_clamp".into(),
        f: bce_grad_clamp,
    };
    follows(&s, &["bce"], 600, "bce_grad_clamp");
}

#[test]
fn the_exact_kernels_draw_nothing_even_strictly() {
    let mut st = settings(
        &["mse", "huber", "bce", "kl_div", "cross_entropy", "triplet"],
        300,
        true,
    );
    st.batch_every = 3;
    let r = fuzz::check(&Kernels, &st);
    assert_eq!(r.findings(), 0, "{}", r.terminal());
    assert_eq!(r.exit_code(), 0);
    for c in &r.campaigns {
        assert!(c.stats.facts.is_empty(), "{:?}", c.stats.facts);
    }
}

#[test]
fn a_mean_wrong_by_a_lot_is_still_accuracy() {
    let s = FnSubject {
        name: "mean_times_3".into(),
        f: |c: &Case| {
            if c.reduction() == Reduction::Mean {
                kernels_times(c, 3.0)
            } else {
                losscheck::kernels::evaluate(c)
            }
        },
    };
    let r = fuzz::check(&s, &settings(&["mse", "kl_div"], 300, false));
    assert_eq!(r.exit_code(), 1);
    for c in &r.campaigns {
        assert!(
            c.findings.get("accuracy").copied().unwrap_or(0) > 0,
            "{}: {:?}",
            c.stats.loss,
            c.findings
        );
    }
    assert_eq!(facts(&r, "weighted_mean_over_n"), 0);
    assert_eq!(facts(&r, "kl_div_mean_over_nc"), 0);
}

/// The kernels, with 1 ulp added to every finite `none` value component (below the f32 max) when the batch has more than
/// one row: within the accuracy bar, but each row's answer depends on the batch.
fn ulp_when_batched(case: &Case) -> Result<Response, LossError> {
    let mut r = losscheck::kernels::evaluate(case)?;
    if case.reduction() == Reduction::None && r.value.shape.first().is_some_and(|&n| n > 1) {
        r.value = mapped(&r.value, case.out_dtype, &|_, x| {
            let b = (x as f32).to_bits();
            let up = f32::from_bits(if x >= 0.0 { b + 1 } else { b - 1 });
            if up.is_finite() {
                up as f64
            } else {
                x
            }
        });
    }
    Ok(r)
}

#[test]
fn a_batch_dependent_answer_is_batch_variant_and_the_kernels_are_not() {
    let s = FnSubject {
        name: "ulp_when_batched".into(),
        f: ulp_when_batched,
    };
    let losses = ["mse", "cross_entropy", "triplet"];
    let mut st = settings(&losses, 300, false);
    st.batch_every = 3;
    let r = fuzz::check(&s, &st);
    for c in &r.campaigns {
        assert!(
            c.stats.facts.get("batch_variant").copied().unwrap_or(0) > 0,
            "{}: {:?}",
            c.stats.loss,
            c.stats.facts
        );
    }
    assert_eq!(r.findings(), 0, "1 ulp is within the bar: {}", r.terminal());
    st.strict_policy = true;
    let strict = fuzz::check(&s, &st);
    assert_eq!(strict.exit_code(), 1);
    assert!(strict
        .campaigns
        .iter()
        .all(|c| c.findings.contains_key("batch_variant")));
    // the same probes of the kernels: none
    let k = fuzz::check(&Kernels, &st);
    assert_eq!(facts(&k, "batch_variant"), 0, "{}", k.terminal());
    // and no probe without batch_every
    st.batch_every = 0;
    st.strict_policy = false;
    let off = fuzz::check(&s, &st);
    assert_eq!(facts(&off, "batch_variant"), 0);
}

/// The exact answer under `weighted_mean_over_n` is the oracle's terms over N′ (here the
/// value overflows f32 while DESIGN.md's mean does not, and a gradient component that
/// underflows under DESIGN.md's denominator does not), and the subject following it is judged
/// with the fact.
#[test]
fn the_alternative_is_the_oracles_terms_over_the_other_denominator() {
    let j = r#"{"dtype":"f32","grad":["target"],"id":35,"inputs":{"pred":{"data":[1.9045804129809324e-38,-1.710808824200062e-16],"dtype":"f32","shape":[2]},"target":{"data":[-9427090289983488.0,1.714920480944712e-15],"dtype":"f32","shape":[2]},"weight":{"data":[9.425970437018871e+30,0.0066369264386594296],"dtype":"f32","shape":[2]}},"loss":"mse","op":"eval","out_dtype":"f32","params":{"reduction":"mean"}}"#;
    let case = Case::from_json(&serde_json::from_str(j).unwrap())
        .unwrap()
        .0;
    let o = losscheck_oracles::evaluate(&case).unwrap();
    assert!(o.value[0].rounded.is_finite());
    assert_eq!(o.grads["target"][1].rounded, 0.0);
    let alt = policies::alternative("weighted_mean_over_n", &case, &o).expect("applies");
    assert_eq!(alt.value[0].rounded, f64::INFINITY);
    // −2·w₁·r₁/N′, r₁ = pred₁ − target₁
    let (w1, r1) = (
        0.0066369264386594296f64,
        -1.710808824200062e-16 - 1.714920480944712e-15,
    );
    let g1 = alt.grads["target"][1].rounded;
    assert_eq!(g1, (-2.0 * w1 * r1 / 2.0) as f32 as f64);
    assert!(policies::alternative("kl_div_mean_over_nc", &case, &o).is_none());
    let a = mse_weighted_mean_over_n(&case);
    let design = losscheck::check::compare::judge_design(&case, &o, &a);
    assert!(design
        .verdicts
        .contains(&losscheck::check::compare::Verdict::SpuriousInf));
    let r = losscheck::check::compare::judge(&case, &o, &a);
    assert!(r.passed(), "{:?}", r.verdicts);
    assert_eq!(r.facts[0].name, "weighted_mean_over_n");
}

/// PyTorch's `binary_cross_entropy(weight=w, reduction='mean')` on a clamped position follows
/// two readings at once: the weighted mean over N and the gradient clamp — both facts.
#[test]
fn pytorchs_weighted_bce_follows_two_readings_at_once() {
    let j = r#"{"dtype":"f32","grad":["prob"],"id":0,"inputs":{"prob":{"data":[0.0,0.5],"dtype":"f32","shape":[2]},"target":{"data":[1.0,0.0],"dtype":"f32","shape":[2]},"weight":{"data":[2.0,0.5],"dtype":"f32","shape":[2]}},"loss":"bce","op":"eval","out_dtype":"f32","params":{"log_floor":-100.0,"reduction":"mean"}}"#;
    let case = Case::from_json(&serde_json::from_str(j).unwrap())
        .unwrap()
        .0;
    let o = losscheck_oracles::evaluate(&case).unwrap();
    // PyTorch: Σ w·l / N, ∂/∂p = w·(p − t)/max(p(1 − p), 1e−12) / N
    let value = (2.0 * 100.0 + 0.5 * std::f64::consts::LN_2) / 2.0;
    let grad = [-2.0 / 1e-12 / 2.0, 0.5 * 0.5 / 0.25 / 2.0];
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>();
    let answer = Ok(Response {
        id: 0,
        value: Tensor::float(Dtype::F32, vec![], f32s(&[value])),
        grad: [(
            "prob".to_string(),
            Tensor::float(Dtype::F32, vec![2], f32s(&grad)),
        )]
        .into_iter()
        .collect(),
    });
    let design = losscheck::check::compare::judge_design(&case, &o, &answer);
    assert!(!design.passed());
    for one in ["weighted_mean_over_n", "bce_grad_clamp"] {
        let alt = policies::alternative(one, &case, &o).expect("applies");
        assert!(
            !losscheck::check::compare::judge_design(&case, &alt, &answer).passed(),
            "{one} alone does not explain it"
        );
    }
    let r = losscheck::check::compare::judge(&case, &o, &answer);
    assert!(r.passed(), "{:?} {:?}", r.verdicts, r.outputs);
    let names: Vec<&str> = r.facts.iter().map(|f| f.name).collect();
    assert_eq!(names, ["weighted_mean_over_n", "bce_grad_clamp"]);
}

/// A subject without validation: the kernels' answer, or a value of 0 where they reject the
/// case as invalid input.
fn accepts_anything(case: &Case) -> Result<Response, LossError> {
    match losscheck::kernels::evaluate(case) {
        Err(e) if e.kind == ErrorKind::InvalidInput => Ok(Response {
            id: case.id,
            value: Tensor::float(case.out_dtype, vec![], vec![0.0]),
            grad: Default::default(),
        }),
        r => r,
    }
}

#[test]
fn a_subject_that_answers_invalid_input_is_the_invalid_accepted_fact() {
    let s = FnSubject {
        name: "no_validation".into(),
        f: accepts_anything,
    };
    follows(
        &s,
        &["cross_entropy", "bce", "gaussian_nll", "hinge", "huber"],
        200,
        "invalid_accepted",
    );
}

#[test]
fn the_kernels_reject_every_invalid_probe() {
    let losses: Vec<&str> = losscheck::core::catalogue::ids().collect();
    let mut st = settings(&losses, 60, true);
    st.invalid_every = 1;
    let r = fuzz::check(&Kernels, &st);
    assert_eq!(r.findings(), 0, "{}", r.terminal());
    let probes: u64 = r.campaigns.iter().map(|c| c.stats.invalid_probes).sum();
    let rejected: u64 = r.campaigns.iter().map(|c| c.stats.invalid_rejected).sum();
    assert!(probes > 20 * r.campaigns.len() as u64, "{probes} probes");
    assert_eq!(rejected, probes);
    assert_eq!(facts(&r, "invalid_accepted"), 0);
}

/// The changes between a case and its probe: inputs whose data or shape differ, params that
/// differ.
fn changes(a: &Case, b: &Case) -> Vec<String> {
    let mut out = Vec::new();
    for (name, t) in &a.inputs {
        let u = &b.inputs[name];
        if t.shape != u.shape {
            out.push(format!("{name}.shape"));
            continue;
        }
        for k in 0..t.len() {
            let (x, y) = (t.get_f64(k), u.get_f64(k));
            if x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()) {
                out.push(format!("{name}[{k}]"));
            }
        }
    }
    for (name, v) in &a.params {
        if b.params.get(name) != Some(v) {
            out.push(format!("param {name}"));
        }
    }
    out
}

#[test]
fn every_invalid_probe_is_one_change_that_validation_rejects_and_every_kind_is_reached() {
    use losscheck::check::gen;
    use losscheck::check::invalid::{self, Kind};
    use std::collections::BTreeSet;
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut per_loss: Vec<(String, BTreeSet<&str>)> = Vec::new();
    for loss in losscheck::core::catalogue::ids() {
        let mut kinds = BTreeSet::new();
        for index in 0..40 {
            let case = gen::generate(loss, Dtype::F16, 7, index);
            if losscheck::core::validate(&case).is_err() {
                continue;
            }
            for kind in Kind::ALL {
                for p in invalid::variants(&case, kind) {
                    assert!(invalid::is_invalid(&p.case), "{loss}: {}", p.what);
                    let c = changes(&case, &p.case);
                    assert_eq!(c.len(), 1, "{loss}: {} changed {c:?}", p.what);
                    assert_eq!(p.kind, kind);
                    kinds.insert(kind.name());
                }
            }
            // the probe a campaign sends is one of the variants
            if let Some(p) = invalid::probe(&case, index, 1) {
                assert!(invalid::is_invalid(&p.case));
            }
        }
        reached.extend(kinds.iter().copied());
        per_loss.push((loss.to_string(), kinds));
    }
    for kind in Kind::ALL {
        assert!(reached.contains(kind.name()), "{} never reached", kind.name());
    }
    let has = |loss: &str, kind: Kind| {
        per_loss
            .iter()
            .any(|(l, k)| l == loss && k.contains(kind.name()))
    };
    assert!(has("cross_entropy", Kind::ClassOutOfRange));
    assert!(has("bce", Kind::OutOfDomain));
    assert!(has("gaussian_nll", Kind::OutOfDomain));
    assert!(has("hinge", Kind::BadLabel));
    assert!(has("huber", Kind::ParamOutOfDomain));
    assert!(has("mse", Kind::ShapeMismatch));
    for (loss, kinds) in &per_loss {
        assert!(
            kinds.contains(Kind::ParamOutOfDomain.name()) || kinds.contains(Kind::ShapeMismatch.name()),
            "{loss}: no probe at all ({kinds:?})"
        );
    }
}

/// gaussian_nll with the clamp differentiated (`torch.clamp(var, min=eps)` inside autograd):
/// ∂/∂var = 0 where var < eps, the kernels' elsewhere.
fn var_clamp_differentiated(case: &Case) -> Result<Response, LossError> {
    let mut r = losscheck::kernels::evaluate(case)?;
    let eps = case.float_param("eps").unwrap();
    let var = floats(case, "var").unwrap().to_vec();
    if let Some(g) = r.grad.get_mut("var") {
        // (a NaN or infinite straight-through gradient is NaN·0 through autograd: kept)
        *g = mapped(g, case.dtype, &|i, x| {
            if var[i] < eps && x.is_finite() {
                0.0
            } else {
                x
            }
        });
    }
    Ok(r)
}

#[test]
fn a_differentiated_var_clamp_is_the_var_clamp_gradient_fact() {
    let s = FnSubject {
        name: "var_clamp".into(),
        f: var_clamp_differentiated,
    };
    follows(&s, &["gaussian_nll"], 600, "var_clamp_gradient");
}
