//! Judging a subject's answer against the oracle: DESIGN.md's error measures (ulps against the
//! correctly rounded result R, Herbie's bits), the conditioning allowance, the Clarke rule at
//! kinks, per-component (elementwise) or normwise per-row (row-wise) gradient judgement, and the
//! verdicts. The one tolerance table of the project is [`TOLERANCES`].

use losscheck_core::catalogue::Structure;
use losscheck_core::{Case, Dtype, ErrorKind, LossError, Response};
use losscheck_oracles::{Exact, OracleOutput};
use std::collections::BTreeMap;
use std::fmt;

/// What went wrong with one output component (or with the whole answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// R is not NaN, the subject returned NaN.
    SpuriousNan,
    /// The exact result is undefined (NaN), the subject returned a number.
    MissedNan,
    /// R is finite, the subject returned ±inf.
    SpuriousInf,
    /// R = ±inf (the exact value overflows the dtype), the subject returned a finite number.
    MissedOverflow,
    /// R ≠ 0, the subject returned 0 (and is over tolerance).
    Underflow,
    /// A value component is over tolerance.
    Accuracy,
    /// A gradient component (or row) is over tolerance.
    GradAccuracy,
    /// A metamorphic relation broke.
    Reduction,
    /// NaN (or another non-zero answer) for an empty mean.
    Policy,
    /// The subject failed (an internal error, a crash).
    Crash,
    /// The subject did not answer in time.
    Hang,
    /// The answer is malformed (wrong shape, a number not in the dtype, a missing gradient).
    Protocol,
    /// The subject rejected a valid case as invalid input.
    RejectedValid,
}

impl Verdict {
    pub const ALL: [Verdict; 13] = [
        Verdict::SpuriousNan,
        Verdict::MissedNan,
        Verdict::SpuriousInf,
        Verdict::MissedOverflow,
        Verdict::Underflow,
        Verdict::Accuracy,
        Verdict::GradAccuracy,
        Verdict::Reduction,
        Verdict::Policy,
        Verdict::Crash,
        Verdict::Hang,
        Verdict::Protocol,
        Verdict::RejectedValid,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Verdict::SpuriousNan => "spurious_nan",
            Verdict::MissedNan => "missed_nan",
            Verdict::SpuriousInf => "spurious_inf",
            Verdict::MissedOverflow => "missed_overflow",
            Verdict::Underflow => "underflow",
            Verdict::Accuracy => "accuracy",
            Verdict::GradAccuracy => "grad_accuracy",
            Verdict::Reduction => "reduction",
            Verdict::Policy => "policy",
            Verdict::Crash => "crash",
            Verdict::Hang => "hang",
            Verdict::Protocol => "protocol",
            Verdict::RejectedValid => "rejected_valid",
        }
    }
    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Allowed error, in ulps of the output dtype, before the conditioning term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub value_ulps: f64,
    pub grad_ulps: f64,
}

/// One exception to DESIGN.md's accuracy bar: the loss, the bound and the reason.
#[derive(Clone, Copy, Debug)]
pub struct ToleranceEntry {
    pub loss: &'static str,
    pub value_ulps: f64,
    pub grad_ulps: f64,
    /// The bound as a formula, and why no kernel can do better.
    pub reason: &'static str,
}

/// The one table of allowed errors beyond DESIGN.md's bar (values 1 ulp for 16-bit outputs,
/// 2 ulps for f32 outputs, plus κ·2⁻⁵³·|exact|; gradients 2 ulps). A family adds its entry
/// here, with the bound and the reason — never to make a failing test pass. `info_nce`'s
/// entry keeps the ulp allowances and states the f64-similarity bound its oracle's κ
/// carries.
pub const TOLERANCES: &[ToleranceEntry] = &[ToleranceEntry {
    loss: "info_nce",
    value_ulps: 1.0,
    grad_ulps: 2.0,
    reason: "gradients: the conditioning term counts each term G_ab·x̂_b (G = ∂/∂s) of the \
             cancelling sums 2(λ + 2N + D + 14) times, λ = 2(D + 3)·max_ab ‖q_a‖‖k_b‖/(ν_a μ_b τ). \
             The N×N similarity and the gradient sums are accumulated in f64 (matrixmultiply), \
             u = 2^−53. Each logit s/τ is off by up to (D + 3)·u·‖q‖‖k‖/(ν μ τ) (D − 1 for the dot \
             product, four for the norms and quotients), so each softmax term P_ab = e^(z_b − top)/S \
             relatively by λ·u (two logits) plus N·u (the sum S) plus 2u (exp, quotient); the \
             coefficient c·cot/den·½/τ and the row + column accumulation add 4u: G_ab is off by \
             (λ + N + 6)·u relatively. Σ_b G_ab·x̂_b adds 2u (x̂), u (product) and N·u (sum); the \
             normalisation's backward (compensated projection, two subtractions, ÷ν) 4u, bounded \
             by D·u for generality: E = (λ + 2N + D + 14)·u·Σ|terms|, a bound growing with D/τ that \
             no f64-similarity kernel beats where a gradient cancels; the allowance is 2E because \
             the kernel returns 0 for a component below E (exact cancellations). Applied through \
             the oracle's κ \
             (oracles/src/contrastive.rs); the ulp allowances are DESIGN.md's; values unaffected. \
             docs/policies/contrastive.md.",
}];

/// The tolerance for a loss with outputs in `out_dtype` (value) and `dtype` (gradients).
pub fn tolerance(loss: &str, out_dtype: Dtype) -> Tolerance {
    let base = Tolerance {
        value_ulps: if out_dtype.is_16bit() { 1.0 } else { 2.0 },
        grad_ulps: 2.0,
    };
    match TOLERANCES.iter().find(|e| e.loss == loss) {
        Some(e) => Tolerance {
            value_ulps: base.value_ulps.max(e.value_ulps),
            grad_ulps: base.grad_ulps.max(e.grad_ulps),
        },
        None => base,
    }
}

/// The judgement of one output tensor (the value, or the gradient of one input).
#[derive(Clone, Debug)]
pub struct OutputJudgement {
    /// `"value"` or `"grad.<input>"`.
    pub output: String,
    /// Index of the worst component (or the first component of the worst row).
    pub index: usize,
    pub actual: f64,
    /// The correctly rounded exact result R at `index` (the chosen selection at a kink).
    pub expected: f64,
    /// Worst error in ulps (∞ for NaN/inf mismatches) and in bits.
    pub ulps: f64,
    pub bits: f64,
    /// The allowance at `index`, in ulps (tolerance + conditioning term).
    pub allowed: f64,
    pub verdict: Option<Verdict>,
    /// Per-component ulps (for small outputs, to print).
    pub component_ulps: Vec<f64>,
}

/// A fact about the subject that is not a finding by default (DESIGN.md's list).
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub name: &'static str,
    pub detail: String,
}

/// Everything learnt from one case.
#[derive(Clone, Debug, Default)]
pub struct CaseReport {
    pub outputs: Vec<OutputJudgement>,
    /// Verdicts (findings), deduplicated, in order of appearance.
    pub verdicts: Vec<Verdict>,
    pub facts: Vec<Fact>,
    /// Bits of error of the value (worst component) and of the gradients (worst over inputs).
    pub value_bits: f64,
    pub grad_bits: f64,
    /// The subject's error message, when it answered with one.
    pub error: Option<String>,
    /// True when the value was correctly rounded everywhere (0 ulps).
    pub value_correctly_rounded: bool,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.verdicts.is_empty()
    }
    fn push(&mut self, v: Verdict) {
        if !self.verdicts.contains(&v) {
            self.verdicts.push(v);
        }
    }
}

/// ulps from `actual` to the exact result, counting a hard case's two neighbours as correct.
pub fn ulps_to(dtype: Dtype, actual: f64, e: &Exact) -> f64 {
    let mut u = dtype.ulps(actual, e.rounded);
    if let Some((a, b)) = e.hard {
        u = u.min(dtype.ulps(actual, a)).min(dtype.ulps(actual, b));
    }
    u
}

/// The conditioning allowance κ·2⁻⁵³·|exact|, in ulps of the dtype at R.
pub fn conditioning_ulps(dtype: Dtype, e: &Exact) -> f64 {
    if e.kappa <= 1.0 || !e.rounded.is_finite() {
        return 0.0;
    }
    let abs = e.kappa * f64::EPSILON / 2.0 * e.magnitude();
    abs / dtype.ulp_at(e.rounded)
}

/// Classify a component that is over its allowance (or a NaN/inf mismatch).
fn classify(actual: f64, r: f64, exact_nan: bool, is_grad: bool) -> Verdict {
    if exact_nan {
        return Verdict::MissedNan;
    }
    if actual.is_nan() {
        return Verdict::SpuriousNan;
    }
    if r.is_finite() && actual.is_infinite() {
        return Verdict::SpuriousInf;
    }
    if r.is_infinite() && actual.is_finite() {
        return Verdict::MissedOverflow;
    }
    if r != 0.0 && actual == 0.0 {
        return Verdict::Underflow;
    }
    if is_grad {
        Verdict::GradAccuracy
    } else {
        Verdict::Accuracy
    }
}

/// Judge a subject's answer to `case` against the oracle: DESIGN.md's readings first; an
/// answer that is a wrong number there but follows a known alternative reading
/// ([`crate::check::policies::READINGS`]) is that reading's fact instead.
pub fn judge(
    case: &Case,
    oracle: &OracleOutput,
    answer: &Result<Response, LossError>,
) -> CaseReport {
    let rep = judge_design(case, oracle, answer);
    crate::check::policies::rejudge(case, oracle, answer, rep)
}

/// Judge a subject's answer against `oracle` alone (DESIGN.md's readings, or an alternative
/// reading's exact answer), without trying the alternatives.
pub fn judge_design(
    case: &Case,
    oracle: &OracleOutput,
    answer: &Result<Response, LossError>,
) -> CaseReport {
    let mut rep = CaseReport::default();
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(e.message.clone());
            match e.kind {
                ErrorKind::InvalidInput => rep.push(Verdict::RejectedValid),
                ErrorKind::Internal => rep.push(Verdict::Crash),
                ErrorKind::Unsupported => {}
            }
            rep.value_bits = case.out_dtype.bits_cap();
            rep.grad_bits = case.dtype.bits_cap();
            return rep;
        }
    };
    let tol = tolerance(&case.loss, case.out_dtype);
    let empty_mean = is_empty_mean(case, oracle);

    // ---- value
    if resp.value.shape != oracle.value_shape || resp.value.len() != oracle.value.len() {
        rep.push(Verdict::Protocol);
        rep.error = Some(format!(
            "value has shape {:?}, expected {:?}",
            resp.value.shape, oracle.value_shape
        ));
        rep.value_bits = case.out_dtype.bits_cap();
    } else {
        let actual: Vec<f64> = (0..resp.value.len())
            .map(|k| resp.value.get_f64(k))
            .collect();
        let j = judge_components(
            case.out_dtype,
            "value",
            &actual,
            &oracle.value,
            tol.value_ulps,
            true,
            false,
        );
        rep.value_bits = j.bits;
        rep.value_correctly_rounded = j.ulps == 0.0;
        if let Some(v) = j.verdict {
            // Any wrong answer to an empty mean breaks the empty-mean policy.
            rep.push(if empty_mean { Verdict::Policy } else { v });
        }
        rep.outputs.push(j);
    }

    // ---- gradients
    let rowwise = case.spec().structure == Structure::Rowwise;
    // (input, index) → (kink group, member)
    let mut kink_of: BTreeMap<(&str, usize), (usize, usize)> = BTreeMap::new();
    for (g, kg) in oracle.kinks.iter().enumerate() {
        for (mi, m) in kg.members.iter().enumerate() {
            kink_of.insert((m.input.as_str(), m.index), (g, mi));
        }
    }
    for name in &case.grad {
        let Some(exact) = oracle.grads.get(name) else {
            continue;
        };
        let label = format!("grad.{name}");
        let Some(t) = resp.grad.get(name) else {
            rep.push(Verdict::Protocol);
            rep.error = Some(format!("missing gradient for {name}"));
            continue;
        };
        if t.len() != exact.len() || Some(&t.shape) != oracle.grad_shapes.get(name) {
            rep.push(Verdict::Protocol);
            rep.error = Some(format!(
                "{label} has shape {:?}, expected {:?}",
                t.shape,
                oracle.grad_shapes.get(name)
            ));
            continue;
        }
        let actual: Vec<f64> = (0..t.len()).map(|k| t.get_f64(k)).collect();
        // Components at a kink: replace the reference by the selection nearest the subject's
        // answer (θ shared across the group), and record the selection as a fact.
        let mut expected: Vec<Exact> = exact.clone();
        let mut theta_of: BTreeMap<usize, f64> = BTreeMap::new();
        for (k, e) in expected.iter_mut().enumerate() {
            if let Some(&(g, mi)) = kink_of.get(&(name.as_str(), k)) {
                let theta = *theta_of
                    .entry(g)
                    .or_insert_with(|| kink_theta(case.dtype, &oracle.kinks[g], resp));
                let sel = kink_point(case.dtype, &oracle.kinks[g].members[mi], resp, theta);
                if sel.rounded != e.rounded {
                    let f = Fact {
                        name: "kink_selection",
                        detail: format!(
                            "{} at {label}[{k}]: θ = {theta:.3}",
                            oracle.kinks[g].primitive
                        ),
                    };
                    if !rep.facts.contains(&f) && rep.facts.len() < 8 {
                        rep.facts.push(f);
                    }
                }
                *e = sel;
            }
        }
        let rows = if rowwise { oracle.checked.rows } else { 0 };
        let j = if rowwise && rows > 0 && actual.len() % rows == 0 {
            judge_rows(case.dtype, &label, &actual, &expected, rows, tol.grad_ulps)
        } else {
            judge_components(
                case.dtype,
                &label,
                &actual,
                &expected,
                tol.grad_ulps,
                true,
                true,
            )
        };
        rep.grad_bits = rep.grad_bits.max(j.bits);
        if let Some(v) = j.verdict {
            // Any wrong answer to an empty mean breaks the empty-mean policy.
            rep.push(if empty_mean { Verdict::Policy } else { v });
        }
        rep.outputs.push(j);
    }
    rep
}

/// Is this a mean whose denominator is exactly 0 (all masked / ignored / zero weight / N = 0)?
fn is_empty_mean(case: &Case, oracle: &OracleOutput) -> bool {
    losscheck_core::catalogue::is_empty_mean(case, oracle.checked.rows)
}

/// A subject's gradient answer for `input[idx]`, if it sent one.
fn kink_answer(resp: &Response, input: &str, idx: usize) -> Option<f64> {
    resp.grad
        .get(input)
        .filter(|t| idx < t.len())
        .map(|t| t.get_f64(idx))
}

/// A member's Clarke segment ends as f64 (the enclosures' midpoints: f64's range holds every
/// product of dtype values here, where the dtype-rounded ends may have overflowed to ±inf).
fn kink_ends(m: &losscheck_oracles::KinkMember) -> (f64, f64) {
    (m.lo.enclosure.mid_f64(), m.hi.enclosure.mid_f64())
}

/// The point of member m's segment at θ, as the reference for the answer a. f64 cannot hold
/// lo + θ(hi − lo) exactly (θ itself is rounded), so the reference is the point of
/// [x − slack, x + slack] ∩ segment nearest a, with slack = 2⁻⁵⁰·max(|lo|, |hi|): the coupling
/// between members is checked to that relative precision, and an answer on the segment at its
/// own θ is matched exactly.
fn kink_member_point(
    dtype: Dtype,
    m: &losscheck_oracles::KinkMember,
    theta: f64,
    a: Option<f64>,
) -> f64 {
    let (lo, hi) = kink_ends(m);
    let x = lo + theta * (hi - lo);
    let slack = lo.abs().max(hi.abs()) * losscheck_core::dtype::pow2(-50);
    let (smin, smax) = (lo.min(hi), lo.max(hi));
    let (el, eh) = ((x - slack).max(smin), (x + slack).min(smax));
    match a {
        Some(a) if a.is_finite() && el <= eh => dtype.round(a.clamp(el, eh)),
        _ => dtype.round(x),
    }
}

/// Most candidate θ a kink group tries (besides 0, ½ and 1): a group of m members costs
/// O(m) per candidate, and a row of C = 32,000 tied scores is one group.
const MAX_THETA_CANDIDATES: usize = 64;

/// At a kink group, the θ (shared by the group) whose points of the Clarke segments best
/// explain the subject's answers for the whole group: the smallest worst-member error in
/// ulps, over θ ∈ {0, ½, 1} and the θ each member's answer implies (distinct values; beyond
/// [`MAX_THETA_CANDIDATES`] of them, evenly spaced ones — answers that disagree on θ that
/// much are wrong for most of any shared θ anyway).
fn kink_theta(dtype: Dtype, g: &losscheck_oracles::KinkGroup, resp: &Response) -> f64 {
    let mut implied: Vec<f64> = Vec::new();
    for m in &g.members {
        if let Some(a) = kink_answer(resp, &m.input, m.index) {
            let (lo, hi) = kink_ends(m);
            if hi != lo && a.is_finite() && lo.is_finite() && hi.is_finite() {
                implied.push(((a - lo) / (hi - lo)).clamp(0.0, 1.0));
            }
        }
    }
    implied.sort_by(f64::total_cmp);
    implied.dedup();
    if implied.len() > MAX_THETA_CANDIDATES {
        let n = implied.len();
        implied = (0..MAX_THETA_CANDIDATES)
            .map(|i| implied[i * (n - 1) / (MAX_THETA_CANDIDATES - 1)])
            .collect();
    }
    let cost = |theta: f64| -> f64 {
        g.members
            .iter()
            .map(|m| match kink_answer(resp, &m.input, m.index) {
                Some(a) => dtype.ulps(a, kink_member_point(dtype, m, theta, Some(a))),
                None => 0.0,
            })
            .fold(0.0, f64::max)
    };
    let mut best = (f64::INFINITY, 0.5);
    for t in [0.0, 0.5, 1.0].into_iter().chain(implied) {
        let c = cost(t);
        if c < best.0 {
            best = (c, t);
        }
    }
    best.1
}

/// The reference for member `me` of a kink group at the group's θ.
fn kink_point(
    dtype: Dtype,
    me: &losscheck_oracles::KinkMember,
    resp: &Response,
    theta: f64,
) -> Exact {
    let r = kink_member_point(dtype, me, theta, kink_answer(resp, &me.input, me.index));
    let mut e = me.lo.clone();
    e.rounded = r;
    e.hard = None;
    e
}

/// Per-component judgement: worst component decides.
fn judge_components(
    dtype: Dtype,
    label: &str,
    actual: &[f64],
    exact: &[Exact],
    tol: f64,
    with_kappa: bool,
    is_grad: bool,
) -> OutputJudgement {
    let mut worst = OutputJudgement {
        output: label.to_string(),
        index: 0,
        actual: actual.first().copied().unwrap_or(0.0),
        expected: exact.first().map(|e| e.rounded).unwrap_or(0.0),
        ulps: 0.0,
        bits: 0.0,
        allowed: tol,
        verdict: None,
        component_ulps: Vec::new(),
    };
    let keep = actual.len() <= 64;
    // The worst component: one over its allowance beats one within; then the larger error.
    let mut worst_key = (false, f64::NEG_INFINITY);
    for (k, (&a, e)) in actual.iter().zip(exact).enumerate() {
        let in_dtype = dtype.contains(a);
        let u = ulps_to(dtype, a, e);
        let allowed = tol
            + if with_kappa {
                conditioning_ulps(dtype, e)
            } else {
                0.0
            };
        if keep {
            worst.component_ulps.push(u);
        }
        let over = !in_dtype || u > allowed;
        let key = (over, u);
        if key.0 > worst_key.0 || (key.0 == worst_key.0 && key.1 > worst_key.1) {
            worst_key = key;
            worst.index = k;
            worst.actual = a;
            worst.expected = e.rounded;
            worst.allowed = allowed;
            worst.verdict = if !in_dtype {
                Some(Verdict::Protocol)
            } else if over {
                Some(classify(a, e.rounded, e.is_nan(), is_grad))
            } else {
                None
            };
        }
        worst.ulps = worst.ulps.max(u);
    }
    worst.bits = dtype.bits(worst.ulps);
    worst
}

/// Normwise per-row judgement for row-wise losses: max_i |g_i − e_i| / ulp(max_i |e_i|) per
/// row (per component where max|e| = 0 or an e is non-finite); the worst row decides.
fn judge_rows(
    dtype: Dtype,
    label: &str,
    actual: &[f64],
    exact: &[Exact],
    rows: usize,
    tol: f64,
) -> OutputJudgement {
    let per = actual.len() / rows;
    let mut worst: Option<OutputJudgement> = None;
    for r in 0..rows {
        let (a, e) = (
            &actual[r * per..(r + 1) * per],
            &exact[r * per..(r + 1) * per],
        );
        let maxe = e.iter().map(|x| x.rounded.abs()).fold(0.0, f64::max);
        let finite = e.iter().all(|x| x.rounded.is_finite());
        let mut j = if maxe == 0.0 || !finite || maxe.is_nan() {
            judge_components(dtype, label, a, e, tol, true, true)
        } else {
            let ulp = dtype.ulp_at(maxe);
            let mut jj = judge_components(dtype, label, a, e, tol, true, true);
            // normwise measure replaces the per-component one when all answers are numbers;
            // a component whose defining sum cancels (κ > 1) is allowed κ·2⁻⁵³·|e| on top
            if a.iter().all(|x| x.is_finite()) && a.iter().all(|&x| dtype.contains(x)) {
                let (mut m, mut idx) = (0.0f64, 0usize);
                for (k, (&x, y)) in a.iter().zip(e).enumerate() {
                    let cond = conditioning_ulps(dtype, y) * dtype.ulp_at(y.rounded);
                    let d = ((x - y.rounded).abs() - cond).max(0.0) / ulp;
                    if d > m {
                        m = d;
                        idx = k;
                    }
                }
                jj.ulps = m;
                jj.bits = dtype.bits(m);
                jj.index = idx;
                jj.actual = a[idx];
                jj.expected = e[idx].rounded;
                jj.verdict = if m > tol {
                    Some(classify(a[idx], e[idx].rounded, false, true))
                } else {
                    None
                };
            }
            jj
        };
        j.index += r * per;
        let replace = match &worst {
            None => true,
            Some(w) => {
                (j.verdict.is_some() && w.verdict.is_none())
                    || (j.verdict.is_some() == w.verdict.is_some() && j.ulps > w.ulps)
            }
        };
        if replace {
            worst = Some(j);
        }
    }
    let mut w = worst.unwrap_or_else(|| judge_components(dtype, label, &[], &[], tol, false, true));
    w.component_ulps.clear();
    w
}
