//! The known alternative readings of DESIGN.md's policies — the one table of them,
//! [`READINGS`]. A subject that follows one of them is reported as following it (a named
//! [`Fact`], a finding only with `--strict-policy`; the empty mean's NaN is the `policy`
//! verdict), not as inaccurate.
//!
//! How an alternative is judged: when a subject's answer fails DESIGN.md's reading with an
//! accuracy-class verdict, [`rejudge`] builds the exact answer under each alternative that
//! applies to the case — from the oracle's own output: the exact mean re-reduced with the
//! alternative denominator (an exact factor D/D′ on every value and termwise gradient
//! enclosure, re-rounded), or the oracle's termwise gradients with PyTorch's clamp
//! substituted through [`losscheck_oracles::reduce::Reducer`] — and judges the answer against
//! it with the same rules and tolerances. An answer within tolerance of one is that reading's
//! fact instead of the verdict. docs/policies/alternative-readings.md.

use crate::check::compare::{self, CaseReport, Fact, Verdict};
use losscheck_core::catalogue::{self, InputKind};
use losscheck_core::{Case, LossError, Reduction, Response, Tensor};
use losscheck_oracles::round::{round_enclosure, Decided};
use losscheck_oracles::{Exact, Ival, OracleOutput};

/// What following a reading draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A finding: the verdict.
    Finding(Verdict),
    /// A fact (a finding only with `--strict-policy`, under the reading's name).
    Fact,
}

/// The exact answer to a case under a reading, from the oracle's output (`None`: the reading
/// does not apply to the case, or coincides with DESIGN.md's there).
pub type AltFn = fn(&Case, &OracleOutput) -> Option<OracleOutput>;

/// How the exact answer under a reading is obtained.
#[derive(Clone, Copy)]
pub enum Judged {
    /// From the oracle's output by [`rejudge`]: `None` when the reading does not apply to the
    /// case (or coincides with DESIGN.md's there).
    Alternative(AltFn),
    /// Elsewhere (named).
    Elsewhere(&'static str),
}

/// One known alternative reading of a policy.
pub struct Reading {
    /// The fact's (or finding's) name.
    pub name: &'static str,
    pub class: Class,
    /// The reading, and where it comes from.
    pub source: &'static str,
    pub judged: Judged,
}

/// Every known alternative reading of DESIGN.md's policies, in the order [`rejudge`] tries
/// them.
pub const READINGS: &[Reading] = &[
    Reading {
        name: "empty_mean_nan",
        class: Class::Finding(Verdict::Policy),
        source: "NaN (0/0) for a mean whose denominator is 0 — PyTorch's cross_entropy with every \
                 target ignored (pytorch/pytorch#70348); DESIGN.md says 0 (Keras/TF's divide_no_nan). \
                 Any answer but 0 to an empty mean is the `policy` verdict.",
        judged: Judged::Elsewhere("check/compare.rs: judge, is_empty_mean"),
    },
    Reading {
        name: "weighted_mean_over_n",
        class: Class::Fact,
        source: "a weighted `mean` divided by the number of positions N′ (unmasked, not ignored; \
                 zero weights counted) instead of Σ m·w: PyTorch's per-element `weight=` of \
                 binary_cross_entropy(_with_logits) (mean(w·l) over every element), Keras' \
                 sample_weight with SUM_OVER_BATCH_SIZE, hand-written class-weighted \
                 cross-entropies; DESIGN.md divides by Σ m·w (Σ w_y for class weights, as PyTorch's \
                 cross_entropy/nll_loss).",
        judged: Judged::Alternative(weighted_mean_over_n),
    },
    Reading {
        name: "kl_div_mean_over_nc",
        class: Class::Fact,
        source: "kl_div's `mean` over the N·C elements: PyTorch's kl_div(reduction='mean') (the \
                 default, documented as not the KL divergence; 'batchmean' is) and optax's \
                 kl_divergence averaged with jnp.mean over every element; DESIGN.md's `mean` is \
                 'batchmean' (over Σ m·w rows).",
        judged: Judged::Alternative(kl_div_mean_over_nc),
    },
    Reading {
        name: "bce_grad_clamp",
        class: Class::Fact,
        source: "bce's gradient as PyTorch's binary_cross_entropy_backward computes it: \
                 (p − t)/max(p·(1 − p), 1e−12) (aten/src/ATen/native/Loss.cpp, EPSILON = 1e−12), \
                 whatever the log floor; DESIGN.md's is the gradient of the (floored) function, \
                 (p − t)/(p·(1 − p)), 0 where a log is clamped, 1 at t = 0, p = 0.",
        judged: Judged::Alternative(bce_grad_clamp),
    },
    Reading {
        name: "var_clamp_gradient",
        class: Class::Fact,
        source: "gaussian_nll's ∂/∂var as the gradient of the clamped function, 0 where var < eps \
                 (torch.clamp(var, min=eps) or jnp.maximum(var, eps) inside autograd; the \
                 FAILURES.md gaussian_nll entries); DESIGN.md's is PyTorch's gaussian_nll_loss, \
                 which clamps var under no_grad: the straight-through ½(1/v′ − (target−mean)²/v′²) \
                 for every var ≥ 0.",
        judged: Judged::Alternative(var_clamp_gradient),
    },
    Reading {
        name: "kink_selection",
        class: Class::Fact,
        source: "at a primitive kink, a Clarke selection other than the kernels' (nearest 0): \
                 PyTorch's sign(0) = 0 for |r|, max's subgradient 0 or 1, … (DESIGN.md: Kinks).",
        judged: Judged::Elsewhere("check/compare.rs: kink_theta"),
    },
    Reading {
        name: "invalid_accepted",
        class: Class::Fact,
        source: "invalid input (DESIGN.md: Invalid input — a class id out of range, a probability \
                 outside [0, 1], a negative weight, a param outside its domain, …) answered with \
                 numbers instead of an error: PyTorch's binary_cross_entropy_with_logits takes \
                 targets outside [0, 1], its mse_loss broadcasts a mismatched target (with a \
                 UserWarning); optax's losses check nothing under jit.",
        judged: Judged::Elsewhere("check/campaign.rs: the invalid_every probe (check/invalid.rs)"),
    },
    Reading {
        name: "nondeterministic",
        class: Class::Fact,
        source: "the same request answered with different bits (atomics in GPU reductions, \
                 thread-count-dependent sums).",
        judged: Judged::Elsewhere("check/campaign.rs: the repeat_every probe"),
    },
    Reading {
        name: "batch_variant",
        class: Class::Fact,
        source: "a separable loss's `none` output for a row (or its gradient) changes when \
                 unrelated rows are added: batch-size-dependent kernels (vectorised or tiled \
                 paths chosen by N, batch-invariance in LLM inference).",
        judged: Judged::Elsewhere("check/campaign.rs: the batch_every probe"),
    },
];

/// The reading named `name`.
pub fn reading(name: &str) -> Option<&'static Reading> {
    READINGS.iter().find(|r| r.name == name)
}

/// The exact answer to `case` under the reading `name`, from the oracle's output (`None`: the
/// reading is judged elsewhere, or does not apply to the case).
pub fn alternative(name: &str, case: &Case, oracle: &OracleOutput) -> Option<OracleOutput> {
    match reading(name)?.judged {
        Judged::Alternative(alt) => alt(case, oracle),
        Judged::Elsewhere(_) => None,
    }
}

/// Verdicts that an alternative reading can explain (a wrong number, not a fault).
fn explainable(v: Verdict) -> bool {
    matches!(
        v,
        Verdict::Accuracy
            | Verdict::GradAccuracy
            | Verdict::Underflow
            | Verdict::SpuriousInf
            | Verdict::MissedOverflow
    )
}

/// `rep` is the judgement of `answer` under DESIGN.md's readings. When every verdict in it is
/// a wrong number, judge the answer against each alternative reading that applies, alone and
/// then two together: the first it follows within tolerance replaces `rep`, with the
/// readings' facts.
pub fn rejudge(
    case: &Case,
    oracle: &OracleOutput,
    answer: &Result<Response, LossError>,
    rep: CaseReport,
) -> CaseReport {
    if rep.verdicts.is_empty() || !rep.verdicts.iter().all(|&v| explainable(v)) {
        return rep;
    }
    let alternatives: Vec<(&Reading, AltFn)> = READINGS
        .iter()
        .filter_map(|r| match r.judged {
            Judged::Alternative(f) => Some((r, f)),
            Judged::Elsewhere(_) => None,
        })
        .collect();
    // each alternative alone, then two together, the one earlier in the table applied to the
    // other's exact answer (the denominators rescale whatever they are given: PyTorch's bce
    // with weights follows both the weighted mean over N and the gradient clamp)
    let singles: Vec<Option<OracleOutput>> =
        alternatives.iter().map(|(_, f)| f(case, oracle)).collect();
    let mut tries: Vec<(Vec<&Reading>, OracleOutput)> = Vec::new();
    for (j, inner) in singles.iter().enumerate() {
        let Some(inner) = inner else { continue };
        for (i, (r, f)) in alternatives[..j].iter().enumerate() {
            if singles[i].is_some() {
                if let Some(two) = f(case, inner) {
                    tries.push((vec![r, alternatives[j].0], two));
                }
            }
        }
    }
    let pairs = std::mem::take(&mut tries);
    for ((r, _), one) in alternatives.iter().zip(singles) {
        if let Some(one) = one {
            tries.push((vec![r], one));
        }
    }
    tries.extend(pairs);
    let verdicts = rep
        .verdicts
        .iter()
        .map(|v| v.name())
        .collect::<Vec<_>>()
        .join(", ");
    for (readings, exact) in tries {
        let mut a = compare::judge_design(case, &exact, answer);
        if a.passed() {
            let names: Vec<&str> = readings.iter().map(|r| r.name).collect();
            for (k, r) in readings.iter().enumerate() {
                a.facts.insert(
                    k,
                    Fact {
                        name: r.name,
                        detail: format!(
                            "follows the alternative reading{} `{}`, not DESIGN.md's ({verdicts} under DESIGN.md)",
                            if names.len() > 1 { "s" } else { "" },
                            names.join("` + `")
                        ),
                    },
                );
            }
            return a;
        }
    }
    rep
}

/// Working precision for the exact factors: above the oracle's, so that a factor's own
/// enclosure is a point (sums of up to 2¹⁷ dtype values) and adds nothing to the width.
fn factor_prec(oracle: &OracleOutput) -> u32 {
    oracle.precision.max(64) + 512
}

/// `e` times the exact factor `f`, re-rounded in its dtype (a rounding the product's enclosure
/// cannot decide counts both neighbours, as a hard case).
fn scaled(e: &Exact, f: &Ival) -> Exact {
    let enclosure = if e.enclosure.is_zero() || e.is_nan() {
        e.enclosure.clone()
    } else {
        e.enclosure.mul(f)
    };
    exact_of(enclosure, e.dtype, e.kappa)
}

/// An enclosure decided in `dtype`.
fn exact_of(enclosure: Ival, dtype: losscheck_core::Dtype, kappa: f64) -> Exact {
    let (rounded, hard) = match round_enclosure(&enclosure, dtype) {
        Decided::One(x) => (x, None),
        Decided::Two(a, b) => (a, Some((a, b))),
    };
    Exact {
        enclosure,
        rounded,
        hard,
        kappa,
        dtype,
    }
}

/// The oracle's output with every value and termwise-gradient component (and every kink
/// segment end) times the exact factor `f`: the same terms reduced over another denominator.
fn rescaled(oracle: &OracleOutput, f: &Ival) -> OracleOutput {
    let mut o = oracle.clone();
    for e in o.value.iter_mut().chain(o.grads.values_mut().flatten()) {
        *e = scaled(e, f);
    }
    for m in o.kinks.iter_mut().flat_map(|g| g.members.iter_mut()) {
        m.lo = scaled(&m.lo, f);
        m.hi = scaled(&m.hi, f);
    }
    o
}

/// Class-id targets with class weights (`cross_entropy`, `nll` with hard targets): the class
/// weights decide the mean's denominator.
fn class_weighted(case: &Case) -> Option<(&[i64], &[f64])> {
    let hard = matches!(
        case.spec().input("target").map(|i| i.kind),
        Some(InputKind::ClassId | InputKind::ClassIdOrSoft)
    ) && matches!(case.loss.as_str(), "cross_entropy" | "nll");
    let t = case.inputs.get("target").and_then(Tensor::i)?;
    let cw = case.inputs.get("class_weight").and_then(Tensor::f)?;
    hard.then_some((t, cw))
}

/// DESIGN.md's weighted `mean` re-reduced over N′, the positions that are not masked and not
/// ignored (zero weights counted): the value and every gradient times D/N′, D = Σ m·w (Σ w_y
/// over non-ignored rows with class weights). Applies to a `mean` with a per-element `weight`
/// or class weights on class-id targets; not to an empty mean (the `policy` verdict).
fn weighted_mean_over_n(case: &Case, oracle: &OracleOutput) -> Option<OracleOutput> {
    if case.reduction() != Reduction::Mean {
        return None;
    }
    let rows = oracle.checked.rows;
    let prec = factor_prec(oracle);
    let mask = case.inputs.get("mask").and_then(Tensor::i);
    let ignored = catalogue::ignore_index(case).and_then(|ii| {
        let t = case.inputs.get("target").and_then(Tensor::i)?;
        Some(t.iter().map(|&y| y == ii).collect::<Vec<_>>())
    });
    let counted: Vec<bool> = (0..rows)
        .map(|i| {
            mask.map_or(true, |m| m.get(i).is_some_and(|&v| v != 0))
                && ignored
                    .as_ref()
                    .map_or(true, |s| !s.get(i).copied().unwrap_or(false))
        })
        .collect();
    let n = counted.iter().filter(|&&c| c).count();
    let mut d = Ival::zero(prec);
    if let Some((t, cw)) = class_weighted(case) {
        for (i, _) in counted.iter().enumerate().filter(|(_, &c)| c) {
            d.add_assign(&Ival::point(prec, *cw.get(usize::try_from(t[i]).ok()?)?));
        }
    } else {
        let w = case.inputs.get("weight").and_then(Tensor::f)?;
        if w.len() != rows {
            return None;
        }
        for (i, _) in counted.iter().enumerate().filter(|(_, &c)| c) {
            d.add_assign(&Ival::point(prec, w[i]));
        }
    }
    if n == 0 || d.is_zero() {
        return None;
    }
    Some(rescaled(oracle, &d.div(&Ival::point(prec, n as f64))))
}

/// `kl_div`'s `mean` over the N·C elements (PyTorch's `reduction='mean'`) instead of over the
/// rows (`batchmean`): the value and every gradient times 1/C.
fn kl_div_mean_over_nc(case: &Case, oracle: &OracleOutput) -> Option<OracleOutput> {
    if case.loss != "kl_div" || case.reduction() != Reduction::Mean {
        return None;
    }
    let c = *case.inputs.get("input")?.shape.last()?;
    if c <= 1 {
        return None;
    }
    let prec = factor_prec(oracle);
    Some(rescaled(
        oracle,
        &Ival::one(prec).div(&Ival::point(prec, c as f64)),
    ))
}

/// PyTorch's clamp in binary_cross_entropy_backward.
const BCE_GRAD_EPSILON: f64 = 1e-12;

/// `bce`'s gradient with PyTorch's clamp: at every active position with p·(1 − p) < 1e−12 the
/// component (p − t)·m·w·c/(1e−12·D) (through [`Reducer::grad_quotient`], as the oracle
/// scales its own), elsewhere the oracle's. Applies when such a position exists.
///
/// [`Reducer::grad_quotient`]: losscheck_oracles::reduce::Reducer::grad_quotient
fn bce_grad_clamp(case: &Case, oracle: &OracleOutput) -> Option<OracleOutput> {
    if case.loss != "bce" || !case.grad.iter().any(|g| g == "prob") {
        return None;
    }
    let prec = factor_prec(oracle);
    let inputs = losscheck_oracles::point_inputs(case, prec);
    let rows = oracle.checked.rows;
    let red = losscheck_oracles::reduce::Reducer::new(case, &inputs, rows, prec).ok()?;
    let (p, t) = (inputs.get("prob")?, inputs.get("target")?);
    let eps = Ival::point(prec, BCE_GRAD_EPSILON);
    let mut o = oracle.clone();
    let g = o.grads.get_mut("prob")?;
    let mut clamped = Vec::new();
    for i in (0..rows.min(g.len())).filter(|&i| red.is_active(i)) {
        let q = p[i].mul(&Ival::one(prec).sub(&p[i]));
        if q.is_nan() || q.hi >= BCE_GRAD_EPSILON {
            continue;
        }
        g[i] = exact_of(red.grad_quotient(i, p[i].sub(&t[i]), &eps), g[i].dtype, 1.0);
        clamped.push(i);
    }
    // PyTorch's formula has one value at a clamped position: no Clarke segment there
    o.kinks.retain(|k| {
        !k.members
            .iter()
            .any(|m| m.input == "prob" && clamped.contains(&m.index))
    });
    (!clamped.is_empty()).then_some(o)
}

/// `gaussian_nll`'s ∂/∂var with the clamp differentiated: exactly 0 at every active position
/// with var < eps where the straight-through gradient is finite (var = eps is the clamp's
/// kink, whose Clarke segment already holds both readings; a NaN or infinite straight-through
/// gradient stays: autograd's chain rule multiplies it by 0 into NaN), elsewhere the oracle's. Applies when such a position exists.
fn var_clamp_gradient(case: &Case, oracle: &OracleOutput) -> Option<OracleOutput> {
    if case.loss != "gaussian_nll" || !case.grad.iter().any(|g| g == "var") {
        return None;
    }
    let eps = case.float_param("eps")?;
    let var = case.inputs.get("var").and_then(Tensor::f)?;
    let prec = factor_prec(oracle);
    let inputs = losscheck_oracles::point_inputs(case, prec);
    let rows = oracle.checked.rows;
    let red = losscheck_oracles::reduce::Reducer::new(case, &inputs, rows, prec).ok()?;
    let mut o = oracle.clone();
    let g = o.grads.get_mut("var")?;
    let mut clamped = Vec::new();
    for i in (0..rows.min(g.len()).min(var.len())).filter(|&i| red.is_active(i)) {
        let finite = !g[i].is_nan() && g[i].rounded.is_finite();
        if var[i].is_finite() && var[i] < eps && finite && !g[i].enclosure.is_zero() {
            g[i] = exact_of(Ival::zero(prec), g[i].dtype, 1.0);
            clamped.push(i);
        }
    }
    o.kinks.retain(|k| {
        !k.members
            .iter()
            .any(|m| m.input == "var" && clamped.contains(&m.index))
    });
    (!clamped.is_empty()).then_some(o)
}
