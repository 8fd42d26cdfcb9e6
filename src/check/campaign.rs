//! Campaigns: N generated cases of one loss × dtype, each judged against the oracle, in
//! parallel, aggregated into error statistics (bits of error, verdict counts, facts, the worst
//! case) with a replay command for every finding. Case `k` of a campaign is a function of
//! (seed, loss, dtype, k) alone, so results do not depend on the thread count and any case
//! replays on its own.

use crate::check::compare::{self, CaseReport, Verdict};
use crate::check::gen;
pub use crate::check::shard::Shard;
use crate::check::subject::{Answer, Subject};
use losscheck_core::{Case, Dtype, Response, Tensor};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Default number of cases per loss × dtype in the verification suite (DESIGN: ≥ 20,000).
pub const DEFAULT_CASES: u64 = 20_000;

/// The case count of the default run, scaled by `LOSSCHECK_CASES` (an absolute count) for long
/// campaigns.
pub fn cases_from_env(default: u64) -> u64 {
    std::env::var("LOSSCHECK_CASES")
        .ok()
        .and_then(|s| s.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub loss: String,
    pub dtype: Dtype,
    pub cases: u64,
    pub seed: u64,
    /// Keep at most this many failing cases (the first by index).
    pub keep_failures: usize,
    /// Accuracy threshold per output dtype, in bits: an `accuracy` (`grad_accuracy`) verdict
    /// stands only when the value's (gradients') bits of error exceed it. Empty (the default):
    /// DESIGN.md's accuracy bar alone decides. `losscheck fuzz` sets the breakdown rule.
    pub max_bits: BTreeMap<Dtype, f64>,
    /// Ask every `repeat_every`-th case (indices 0, k, 2k, …) twice and record a
    /// `nondeterministic` fact when the answers differ in any bit; 0 (the default): never.
    pub repeat_every: u64,
    /// Probe every `batch_every`-th case (indices 0, k, 2k, …) of a separable loss with
    /// reduction `none` for `batch_variant` answers: ask a sub-batch of its rows (the first half,
    /// and at every other probe the first row alone) and record the fact when a row's value or
    /// gradient differs in any bit from the full batch's; 0 (the default): never.
    pub batch_every: u64,
    /// Probe every `invalid_every`-th case (indices 0, k, 2k, …) with an invalid variant of it
    /// ([`crate::check::invalid::probe`]): an answer with numbers is the `invalid_accepted`
    /// fact; 0 (the default): never.
    pub invalid_every: u64,
    /// Run only this shard's cases: the indices i with i mod N = K (`--shard K/N`; interleaved,
    /// so every shard gets every regime); [`merge`] combines the shards' [`record`]s.
    pub shard: Shard,
}

impl Config {
    pub fn new(loss: &str, dtype: Dtype, cases: u64, seed: u64) -> Config {
        Config {
            loss: loss.to_string(),
            dtype,
            cases,
            seed,
            keep_failures: 10,
            max_bits: BTreeMap::new(),
            repeat_every: 0,
            batch_every: 0,
            invalid_every: 0,
            shard: Shard::ALL,
        }
    }
}

/// Summary statistics of a sample of bits of error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BitsSummary {
    pub max: f64,
    pub p99: f64,
    pub median: f64,
    pub mean: f64,
}

impl BitsSummary {
    pub fn of(mut v: Vec<f64>) -> BitsSummary {
        if v.is_empty() {
            return BitsSummary::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        BitsSummary {
            max: *v.last().unwrap(),
            p99: q(0.99),
            median: q(0.5),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
    pub fn to_json(&self) -> Value {
        json!({"max": self.max, "p99": self.p99, "median": self.median, "mean": self.mean})
    }
}

/// A case that drew a verdict (or the worst case of the campaign).
#[derive(Clone, Debug)]
pub struct Finding {
    pub index: u64,
    pub verdicts: Vec<Verdict>,
    pub value_bits: f64,
    pub grad_bits: f64,
    pub case: Case,
    pub report: CaseReport,
    /// The command that replays this case.
    pub replay: String,
}

impl Finding {
    pub fn to_json(&self) -> Value {
        let outputs: Vec<Value> = self
            .report
            .outputs
            .iter()
            .map(|o| {
                json!({"output": o.output, "index": o.index, "actual": losscheck_core::tensor::encode_f64(o.actual),
                       "expected": losscheck_core::tensor::encode_f64(o.expected), "ulps": losscheck_core::tensor::encode_f64(o.ulps),
                       "bits": o.bits, "allowed": o.allowed, "verdict": o.verdict.map(|v| v.name())})
            })
            .collect();
        json!({
            "index": self.index, "loss": self.case.loss, "dtype": self.case.dtype.name(),
            "verdicts": self.verdicts.iter().map(|v| v.name()).collect::<Vec<_>>(),
            "bits": {"value": self.value_bits, "grad": self.grad_bits},
            "outputs": outputs, "error": self.report.error,
            "case": self.case.to_json(), "replay": self.replay,
        })
    }
}

/// The result of a campaign.
#[derive(Clone, Debug)]
pub struct Stats {
    pub subject: String,
    pub loss: String,
    pub dtype: Dtype,
    pub seed: u64,
    pub cases: u64,
    /// Cases the subject answered with `unsupported` (coverage, not findings).
    pub unsupported: u64,
    /// Generated cases not sent: outside the subject's declared capabilities (coverage).
    pub skipped: u64,
    /// Cases the oracle could not evaluate (a bug in the generator or the oracle).
    pub oracle_errors: u64,
    pub hard_cases: u64,
    pub value_bits: BitsSummary,
    pub grad_bits: BitsSummary,
    /// Share of cases whose value was correctly rounded in every component.
    pub correctly_rounded: f64,
    pub verdicts: BTreeMap<Verdict, u64>,
    pub facts: BTreeMap<&'static str, u64>,
    /// Invalid-input probes sent ([`Config::invalid_every`]) and, of those, rejected with an
    /// error; the accepted ones are the `invalid_accepted` facts.
    pub invalid_probes: u64,
    pub invalid_rejected: u64,
    /// Cases per generator regime.
    pub regimes: BTreeMap<String, u64>,
    pub failures: Vec<Finding>,
    pub worst: Option<Finding>,
    pub seconds: f64,
    /// Every judged case's bits of error, in index order (what [`merge`] needs to recompute
    /// the summaries of a sharded campaign exactly).
    pub samples: Vec<Sample>,
}

/// One judged case's bits of error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub index: u64,
    pub value_bits: f64,
    /// `None` when the case asked for no gradient.
    pub grad_bits: Option<f64>,
    pub value_correctly_rounded: bool,
}

impl Stats {
    /// No case run yet, of `cfg`'s campaign.
    pub fn empty(cfg: &Config, subject: &str) -> Stats {
        Stats {
            subject: subject.to_string(),
            loss: cfg.loss.clone(),
            dtype: cfg.dtype,
            seed: cfg.seed,
            cases: 0,
        unsupported: 0,
            skipped: 0,
            oracle_errors: 0,
            hard_cases: 0,
            value_bits: BitsSummary::default(),
            grad_bits: BitsSummary::default(),
            correctly_rounded: 0.0,
            verdicts: BTreeMap::new(),
            facts: BTreeMap::new(),
            invalid_probes: 0,
            invalid_rejected: 0,
            regimes: BTreeMap::new(),
            failures: Vec::new(),
            worst: None,
            seconds: 0.0,
            samples: Vec::new(),
        }
    }
    pub fn findings(&self) -> u64 {
        self.verdicts.values().sum()
    }
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject, "loss": self.loss, "dtype": self.dtype.name(), "seed": self.seed,
            "cases": self.cases, "unsupported": self.unsupported, "skipped": self.skipped, "oracle_errors": self.oracle_errors,
            "hard_cases": self.hard_cases,
            "value_bits": self.value_bits.to_json(), "grad_bits": self.grad_bits.to_json(),
            "correctly_rounded": self.correctly_rounded,
            "verdicts": self.verdicts.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "facts": self.facts.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "invalid_probes": self.invalid_probes, "invalid_rejected": self.invalid_rejected,
            "regimes": self.regimes,
            "failures": self.failures.iter().map(Finding::to_json).collect::<Vec<_>>(),
            "worst": self.worst.as_ref().map(Finding::to_json),
            "seconds": self.seconds,
        })
    }
}

/// The command that replays case `index` of a campaign.
pub fn replay_command(loss: &str, dtype: Dtype, seed: u64, index: u64, subject: &str) -> String {
    format!("losscheck verify --subject {subject} --loss {loss} --dtype {dtype} --seed {seed} --index {index}")
}

/// Outcome of one case.
pub struct Outcome {
    pub index: u64,
    /// The case as sent to the subject (restricted to its capabilities).
    pub case: Case,
    pub report: Option<CaseReport>,
    pub oracle_error: Option<String>,
    pub unsupported: bool,
    pub hard: bool,
    /// Not sent: the generated case is outside the subject's declared capabilities (why).
    pub skipped: Option<String>,
    /// The invalid-input probe of this case, when one was sent: `Some(true)` when the subject
    /// rejected it with an error (`invalid_input` or `internal`), `Some(false)` otherwise.
    pub invalid_rejected: Option<bool>,
}

/// Generate, evaluate and judge case `index` (probed when `cfg.repeat_every` and
/// `cfg.batch_every` say so).
pub fn run_one(cfg: &Config, subject: &dyn Subject, index: u64) -> Outcome {
    let case = gen::generate(&cfg.loss, cfg.dtype, cfg.seed, index);
    judge_inner(cfg, case, subject, index, true)
}

/// Evaluate and judge one given case (DESIGN.md's accuracy bar, no repetition).
pub fn judge_case(case: Case, subject: &dyn Subject, index: u64) -> Outcome {
    let cfg = Config::new(&case.loss, case.dtype, 0, 0);
    judge_inner(&cfg, case, subject, index, false)
}

/// Evaluate and judge one given case with a campaign's settings (`max_bits`).
pub fn judge_case_with(cfg: &Config, case: Case, subject: &dyn Subject, index: u64) -> Outcome {
    judge_inner(cfg, case, subject, index, false)
}

/// The report of an answer that is a fault of the subject.
pub fn fault_report(case: &Case, f: &crate::check::subject::Fault) -> CaseReport {
    let mut error = f.message.clone();
    if !f.stderr.trim().is_empty() {
        error += &format!("\nstderr (tail):\n{}", f.stderr.trim_end());
    }
    CaseReport {
        verdicts: vec![f.verdict],
        value_bits: case.out_dtype.bits_cap(),
        grad_bits: case.dtype.bits_cap(),
        error: Some(error),
        ..Default::default()
    }
}

/// The first component of `part` that differs in any bit from the same component of `whole`
/// (NaNs equal whatever their payload); `part` may be a prefix of `whole`.
fn first_difference(whole: &Tensor, part: &Tensor) -> Option<usize> {
    if part.len() > whole.len() {
        return Some(whole.len());
    }
    (0..part.len()).find(|&k| {
        let (p, q) = (whole.get_f64(k), part.get_f64(k));
        !((p.is_nan() && q.is_nan()) || p.to_bits() == q.to_bits())
    })
}

/// Do two answers differ in any bit (NaNs equal whatever their payload)?
fn same_bits(a: &Response, b: &Response) -> bool {
    let t = |x: &Tensor, y: &Tensor| {
        x.shape == y.shape && x.len() == y.len() && first_difference(x, y).is_none()
    };
    t(&a.value, &b.value)
        && a.grad.len() == b.grad.len()
        && a.grad
            .iter()
            .all(|(k, g)| b.grad.get(k).is_some_and(|h| t(g, h)))
}

/// Separable losses: each row's `none` output depends on that row's inputs alone (every
/// elementwise and row-wise loss but `info_nce`, coupled across the batch).
fn separable(case: &Case) -> bool {
    case.reduction() == losscheck_core::Reduction::None && case.loss != "info_nce"
}

/// The case restricted to its first `k` rows (along the leading dim of the first
/// differentiable input: every per-row input is cut, class weights and a broadcast
/// `pos_weight` are kept), with the number of rows of the case; `None` when the case has no
/// leading dim of at least 2 rows or `k` is not in [1, N).
pub fn sub_batch(case: &Case, k: usize) -> Option<(Case, usize)> {
    let x = case.inputs.get(*case.spec().grads.first()?)?;
    let n = *x.shape.first()?;
    if k == 0 || k >= n {
        return None;
    }
    let xshape = x.shape.clone();
    let mut sub = case.clone();
    for (name, t) in sub.inputs.iter_mut() {
        let per_row = t.shape.first() == Some(&n)
            && name != "class_weight"
            && (name != "pos_weight" || t.shape == xshape);
        if !per_row {
            continue;
        }
        let keep = t.len() / n * k;
        match &mut t.data {
            losscheck_core::Data::F(v) => v.truncate(keep),
            losscheck_core::Data::I(v) => v.truncate(keep),
        }
        t.shape[0] = k;
    }
    Some((sub, n))
}

/// Ask `subject` the `probe` request, derived from a case it answered with `first`, and
/// record the fact `name` when `differs` says how the answers disagree — or when it refuses
/// the probe (`Unsupported` too, when `refusal_is_fact`); a fault is a finding of its own.
fn probe(
    report: &mut CaseReport,
    subject: &dyn Subject,
    probe: &Case,
    first: &Response,
    name: &'static str,
    refusal_is_fact: bool,
    differs: &dyn Fn(&Response, &Response) -> Option<String>,
) {
    let fact = match subject.answer(probe) {
        Ok(Ok(second)) => differs(first, &second),
        Ok(Err(e)) if e.kind == losscheck_core::ErrorKind::Unsupported && !refusal_is_fact => None,
        Ok(Err(e)) => Some(format!("answered once, then refused: {e}")),
        Err(f) => {
            // The probe faulted: that is a finding of its own.
            let fr = fault_report(probe, &f);
            for v in fr.verdicts {
                if !report.verdicts.contains(&v) {
                    report.verdicts.push(v);
                }
            }
            report.error = fr.error;
            None
        }
    };
    if let Some(detail) = fact {
        report.facts.push(compare::Fact { name, detail });
    }
}

/// How a sub-batch's answer differs from the full batch's on the rows they share: the first
/// output and component that differs in any bit.
fn batch_difference(full: &Response, sub: &Response, n: usize, k: usize) -> Option<String> {
    let outputs = std::iter::once(("value".to_string(), &full.value, &sub.value)).chain(
        sub.grad
            .iter()
            .filter_map(|(g, t)| Some((format!("grad.{g}"), full.grad.get(g)?, t))),
    );
    for (label, whole, part) in outputs {
        if part.len() != whole.len() / n * k {
            return Some(format!(
                "{label} of the first {k} of {n} rows has {} components, expected {}",
                part.len(),
                whole.len() / n * k
            ));
        }
        if let Some(c) = first_difference(whole, part) {
            return Some(format!(
                "{label}[{c}] is {} in the batch of {n} rows, {} in the batch of its first {k}",
                losscheck_core::tensor::encode_f64(whole.get_f64(c)),
                losscheck_core::tensor::encode_f64(part.get_f64(c))
            ));
        }
    }
    None
}

fn judge_inner(
    cfg: &Config,
    case: Case,
    subject: &dyn Subject,
    index: u64,
    probes: bool,
) -> Outcome {
    let original = subject.capabilities().map(|_| case.clone());
    let case = match subject.prepare(case) {
        Ok(c) => c,
        Err(why) => {
            return Outcome {
                index,
                case: original
                    .unwrap_or_else(|| gen::generate(&cfg.loss, cfg.dtype, cfg.seed, index)),
                report: None,
                oracle_error: None,
                unsupported: false,
                hard: false,
                skipped: Some(why),
                invalid_rejected: None,
            }
        }
    };
    let oracle = match losscheck_oracles::evaluate(&case) {
        Ok(o) => o,
        Err(e) => {
            return Outcome {
                index,
                case,
                report: None,
                oracle_error: Some(e.to_string()),
                unsupported: false,
                hard: false,
                skipped: None,
                invalid_rejected: None,
            };
        }
    };
    let hard = oracle
        .value
        .iter()
        .chain(oracle.grads.values().flatten())
        .any(|e| e.hard.is_some());
    let answer: Answer = subject.answer(&case);
    let unsupported =
        matches!(&answer, Ok(Err(e)) if e.kind == losscheck_core::ErrorKind::Unsupported);
    let mut report = match &answer {
        Ok(a) => compare::judge(&case, &oracle, a),
        Err(f) => fault_report(&case, f),
    };
    // DESIGN.md's breakdown rule (or a user's threshold) for accuracy verdicts.
    if let Some(&mb) = cfg.max_bits.get(&case.out_dtype) {
        if report.value_bits <= mb {
            report.verdicts.retain(|v| *v != Verdict::Accuracy);
        }
    }
    if let Some(&mb) = cfg.max_bits.get(&case.dtype) {
        if report.grad_bits <= mb {
            report.verdicts.retain(|v| *v != Verdict::GradAccuracy);
        }
    }
    let due = |every: u64| probes && every > 0 && index % every == 0;
    if let Ok(Ok(first)) = &answer {
        if due(cfg.repeat_every) {
            probe(
                &mut report,
                subject,
                &case,
                first,
                "nondeterministic",
                true,
                &|a, b| {
                    (!same_bits(a, b))
                        .then(|| "the same request answered twice with different bits".into())
                },
            );
        }
        if due(cfg.batch_every) && separable(&case) {
            // the first half of the rows, and at every other probe the first row alone
            let n = case
                .inputs
                .get(case.spec().grads[0])
                .and_then(|t| t.shape.first().copied())
                .unwrap_or(0);
            let k = if (index / cfg.batch_every) % 2 == 0 {
                n / 2
            } else {
                1
            };
            if let Some((sub, n)) = sub_batch(&case, k) {
                probe(
                    &mut report,
                    subject,
                    &sub,
                    first,
                    "batch_variant",
                    false,
                    &|a, b| batch_difference(a, b, n, k),
                );
            }
        }
    }
    let mut invalid_rejected = None;
    if due(cfg.invalid_every) && !unsupported {
        if let Some(p) = crate::check::invalid::probe(&case, index, cfg.invalid_every) {
            if let Ok(request) = subject.prepare(p.case.clone()) {
                invalid_rejected = invalid_probe(&mut report, subject, &request, &p);
            }
        }
    }
    Outcome {
        index,
        case,
        report: Some(report),
        oracle_error: None,
        unsupported,
        hard,
        skipped: None,
        invalid_rejected,
    }
}

/// Send an invalid variant of a case (`request`, made by `p`): an error is right (`invalid_input`
/// as PROTOCOL.md asks, or `internal` — rejected all the same), `unsupported` is coverage, an
/// answer with numbers is the `invalid_accepted` fact, a fault is a finding of its own.
/// Whether the subject rejected it (`None`: `unsupported`).
fn invalid_probe(
    report: &mut CaseReport,
    subject: &dyn Subject,
    request: &Case,
    p: &crate::check::invalid::Probe,
) -> Option<bool> {
    match subject.answer(request) {
        Ok(Err(e)) if e.kind == losscheck_core::ErrorKind::Unsupported => None,
        Ok(Err(_)) => Some(true),
        Ok(Ok(a)) => {
            let value = if a.value.is_empty() {
                "an empty tensor".to_string()
            } else {
                losscheck_core::tensor::encode_f64(a.value.get_f64(0)).to_string()
            };
            report.facts.push(compare::Fact {
                name: "invalid_accepted",
                detail: format!(
                    "accepted invalid input ({}: {}) and answered value[0] = {value}",
                    p.kind.name(),
                    p.what
                ),
            });
            Some(false)
        }
        Err(f) => {
            let fr = fault_report(request, &f);
            for v in fr.verdicts {
                if !report.verdicts.contains(&v) {
                    report.verdicts.push(v);
                }
            }
            report.error = Some(format!(
                "on the invalid variant of this case ({}): {}",
                p.what,
                fr.error.unwrap_or_default()
            ));
            Some(false)
        }
    }
}

/// Run a campaign in parallel. `tick` is called once per finished case (progress bars).
pub fn run(cfg: &Config, subject: &dyn Subject, tick: &(dyn Fn() + Sync)) -> Stats {
    run_with(cfg, subject, &|_| tick())
}

/// Run a campaign in parallel, calling `on_outcome` with every case's outcome as soon as it is
/// judged (from the worker threads; `losscheck fuzz` writes findings there as they happen).
pub fn run_with(
    cfg: &Config,
    subject: &dyn Subject,
    on_outcome: &(dyn Fn(&Outcome) + Sync),
) -> Stats {
    let t0 = Instant::now();
    let done = AtomicU64::new(0);
    let shard = cfg.shard;
    let outcomes: Vec<Outcome> = (0..cfg.cases)
        .into_par_iter()
        .filter(|&k| shard.contains(k))
        .map(|k| {
            let o = run_one(cfg, subject, k);
            done.fetch_add(1, Ordering::Relaxed);
            on_outcome(&o);
            o
        })
        .collect();
    let mut st = Stats::empty(cfg, &subject.name());
    st.cases = outcomes.len() as u64;
    let mut worst_key = (false, f64::NEG_INFINITY);
    for o in outcomes {
        if let Some(r) = gen::regime_of(&cfg.loss, cfg.dtype, cfg.seed, o.index) {
            *st.regimes.entry(r).or_default() += 1;
        }
        if o.skipped.is_some() {
            st.skipped += 1;
            continue;
        }
        if o.hard {
            st.hard_cases += 1;
        }
        if o.oracle_error.is_some() {
            st.oracle_errors += 1;
            if st.failures.len() < cfg.keep_failures {
                st.failures.push(finding_of(cfg, &st.subject, o));
            }
            continue;
        }
        if let Some(rejected) = o.invalid_rejected {
            st.invalid_probes += 1;
            st.invalid_rejected += u64::from(rejected);
        }
        let r = o.report.as_ref().expect("report");
        if o.unsupported {
            st.unsupported += 1;
            continue;
        }
        st.samples.push(Sample {
            index: o.index,
            value_bits: r.value_bits,
            grad_bits: (!r.outputs.iter().all(|x| x.output == "value")).then_some(r.grad_bits),
            value_correctly_rounded: r.value_correctly_rounded,
        });
        for v in &r.verdicts {
            *st.verdicts.entry(*v).or_default() += 1;
        }
        for f in &r.facts {
            *st.facts.entry(f.name).or_default() += 1;
        }
        let key = (!r.verdicts.is_empty(), r.value_bits.max(r.grad_bits));
        let failing = !r.verdicts.is_empty() && st.failures.len() < cfg.keep_failures;
        if (key.0 && !worst_key.0) || (key.0 == worst_key.0 && key.1 > worst_key.1) {
            worst_key = key;
            st.worst = Some(finding_of(cfg, &st.subject, clone_outcome(&o)));
        }
        if failing {
            st.failures.push(finding_of(cfg, &st.subject, o));
        }
    }
    summarize_samples(&mut st);
    st.seconds = t0.elapsed().as_secs_f64();
    st
}

/// The bits summaries and the correctly rounded share, from the samples.
fn summarize_samples(st: &mut Stats) {
    let judged = st.samples.len().max(1) as f64;
    let cr = st.samples.iter().filter(|x| x.value_correctly_rounded).count();
    st.correctly_rounded = cr as f64 / judged;
    st.value_bits = BitsSummary::of(st.samples.iter().map(|x| x.value_bits).collect());
    st.grad_bits = BitsSummary::of(st.samples.iter().filter_map(|x| x.grad_bits).collect());
}

fn clone_outcome(o: &Outcome) -> Outcome {
    Outcome {
        index: o.index,
        case: o.case.clone(),
        report: o.report.clone(),
        oracle_error: o.oracle_error.clone(),
        unsupported: o.unsupported,
        hard: o.hard,
        skipped: o.skipped.clone(),
        invalid_rejected: o.invalid_rejected,
    }
}

/// The finding of a judged case (a failure, the worst case, or an oracle error).
fn finding_of(cfg: &Config, subject: &str, o: Outcome) -> Finding {
    let replay = replay_command(&cfg.loss, cfg.dtype, cfg.seed, o.index, subject);
    match (o.oracle_error, o.report) {
        (None, Some(r)) => Finding {
            index: o.index,
            verdicts: r.verdicts.clone(),
            value_bits: r.value_bits,
            grad_bits: r.grad_bits,
            case: o.case,
            report: r,
            replay,
        },
        (e, _) => Finding {
            index: o.index,
            verdicts: vec![],
            value_bits: f64::NAN,
            grad_bits: f64::NAN,
            case: o.case,
            report: CaseReport {
                error: Some(format!("oracle: {}", e.unwrap_or_default())),
                ..Default::default()
            },
            replay,
        },
    }
}

/// Schema id of [`record`].
pub const RECORD_SCHEMA: &str = "losscheck-campaign-record/1";

/// A campaign's result as a JSON object that [`merge`] reads back: its counters, every judged
/// case's bits ([`Sample`]) and the indices of its kept failures and worst case — not the
/// cases themselves, which [`merge`] regenerates and re-judges from the seed (a record stays
/// small; the shards of a campaign and a checkpoint of `report --resume` are records).
pub fn record(cfg: &Config, st: &Stats) -> Value {
    let counts = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "schema": RECORD_SCHEMA,
        "subject": st.subject, "loss": st.loss, "dtype": st.dtype.name(), "seed": st.seed,
        "campaign_cases": cfg.cases, "shard": cfg.shard.text(), "cases": st.cases,
        "keep_failures": cfg.keep_failures, "repeat_every": cfg.repeat_every,
        "batch_every": cfg.batch_every, "invalid_every": cfg.invalid_every,
        "max_bits": cfg.max_bits.iter().map(|(d, b)| (d.name().to_string(), json!(b))).collect::<serde_json::Map<_, _>>(),
        "unsupported": st.unsupported, "skipped": st.skipped, "oracle_errors": st.oracle_errors,
        "hard_cases": st.hard_cases,
        "verdicts": st.verdicts.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "facts": counts(&st.facts),
        "invalid_probes": st.invalid_probes, "invalid_rejected": st.invalid_rejected,
        "regimes": st.regimes,
        "samples": st.samples.iter().map(|x| json!([x.index, x.value_bits, x.grad_bits, x.value_correctly_rounded])).collect::<Vec<_>>(),
        "failures": st.failures.iter().map(|f| f.index).collect::<Vec<_>>(),
        "worst": st.worst.as_ref().map(|f| json!([f.index, !f.verdicts.is_empty(), f.value_bits.max(f.grad_bits)])),
        "seconds": st.seconds,
    })
}

/// The names a record's counters may hold (facts and verdicts are `&'static str` in
/// [`Stats`]): every verdict and every fact any part of losscheck records.
fn static_name(name: &str) -> Option<&'static str> {
    const FACTS: &[&str] = &["kink_selection", "nondeterministic", "batch_variant"];
    crate::check::policies::READINGS
        .iter()
        .map(|r| r.name)
        .chain(FACTS.iter().copied())
        .find(|&n| n == name)
}

/// The campaign's settings a record was made with, for `cfg` to match.
fn check_settings(cfg: &Config, r: &Value) -> Result<(), String> {
    let u = |k: &str| r[k].as_u64();
    let same = r["loss"] == cfg.loss.as_str()
        && r["dtype"] == cfg.dtype.name()
        && u("seed") == Some(cfg.seed)
        && u("campaign_cases") == Some(cfg.cases)
        && u("keep_failures") == Some(cfg.keep_failures as u64)
        && u("repeat_every") == Some(cfg.repeat_every)
        && u("batch_every") == Some(cfg.batch_every)
        && u("invalid_every") == Some(cfg.invalid_every);
    if !same {
        return Err(format!(
            "record of {} {} (seed {}, {} cases) was made with other settings than this campaign's ({} {}, seed {}, {} cases)",
            r["loss"], r["dtype"], r["seed"], r["campaign_cases"], cfg.loss, cfg.dtype, cfg.seed, cfg.cases
        ));
    }
    Ok(())
}

/// Combine records of one campaign — its N shards, each once, or a single whole-campaign record
/// (a checkpoint) — into the campaign's [`Stats`], equal to what an unsharded run gives (the
/// counters summed, the bits summaries recomputed from every sample, the first
/// `keep_failures` failures by index and the worst case regenerated and re-judged by
/// `subject`), `seconds` summed.
pub fn merge(cfg: &Config, subject: &dyn Subject, records: &[Value]) -> Result<Stats, String> {
    combine(cfg, subject, records, true)
}

/// One record read back as its [`Stats`] (a checkpoint of `report --resume`, or a shard's
/// share alone), its failures and worst case re-judged; `cfg` is the record's campaign
/// (its shard included).
pub fn from_record(cfg: &Config, subject: &dyn Subject, record: &Value) -> Result<Stats, String> {
    if record["shard"] != cfg.shard.text().as_str() {
        return Err(format!("record of shard {}, not {}", record["shard"], cfg.shard.text()));
    }
    combine(cfg, subject, std::slice::from_ref(record), false)
}

/// The N shards' records of one campaign combined without re-judging anything: counters and
/// bits summaries as [`merge`]'s, no failures and no worst case (the fuzzer's statistics keep
/// none; its findings are in its own files).
pub fn merge_counts(cfg: &Config, subject: &str, records: &[Value]) -> Result<Stats, String> {
    combine_parts(cfg, subject, records, true).map(|(st, _, _)| st)
}

fn combine(cfg: &Config, subject: &dyn Subject, records: &[Value], whole: bool) -> Result<Stats, String> {
    let name = subject.name();
    let (mut st, failures, worst) = combine_parts(cfg, &name, records, whole)?;
    let rejudge = |index: u64| finding_of(cfg, &name, run_one(cfg, subject, index));
    st.failures = failures.par_iter().map(|&i| rejudge(i)).collect();
    st.worst = worst.map(rejudge);
    Ok(st)
}

/// The combined counters and samples, the failures' indices (the first `keep_failures`) and
/// the worst case's index.
fn combine_parts(
    cfg: &Config,
    name: &str,
    records: &[Value],
    whole: bool,
) -> Result<(Stats, Vec<u64>, Option<u64>), String> {
    let first = records.first().ok_or("no record to merge")?;
    let count = Shard::parse(first["shard"].as_str().unwrap_or(""))?.count;
    let mut seen = vec![false; count as usize];
    let mut st = Stats::empty(cfg, name);
    let mut failures: Vec<u64> = Vec::new();
    let mut worst: Option<(bool, f64, u64)> = None;
    for r in records {
        if r["schema"] != RECORD_SCHEMA {
            return Err(format!("not a campaign record ({RECORD_SCHEMA}): schema {}", r["schema"]));
        }
        if r["subject"] != name {
            return Err(format!("record of subject {} merged as {name}", r["subject"]));
        }
        check_settings(cfg, r)?;
        let shard = Shard::parse(r["shard"].as_str().unwrap_or(""))?;
        if shard.count != count {
            return Err(format!(
                "{} {}: shards of {} and of {count} mixed",
                cfg.loss, cfg.dtype, shard.count
            ));
        }
        if std::mem::replace(&mut seen[shard.index as usize], true) {
            return Err(format!("{} {}: shard {} given twice", cfg.loss, cfg.dtype, shard.text()));
        }
        let u = |k: &str| r[k].as_u64().unwrap_or(0);
        st.cases += u("cases");
        st.unsupported += u("unsupported");
        st.skipped += u("skipped");
        st.oracle_errors += u("oracle_errors");
        st.hard_cases += u("hard_cases");
        st.invalid_probes += u("invalid_probes");
        st.invalid_rejected += u("invalid_rejected");
        st.seconds += r["seconds"].as_f64().unwrap_or(0.0);
        for (k, v) in r["verdicts"].as_object().into_iter().flatten() {
            let verdict = Verdict::parse(k).ok_or_else(|| format!("unknown verdict {k:?}"))?;
            *st.verdicts.entry(verdict).or_default() += v.as_u64().unwrap_or(0);
        }
        for (k, v) in r["facts"].as_object().into_iter().flatten() {
            let fact = static_name(k).ok_or_else(|| format!("unknown fact {k:?}"))?;
            *st.facts.entry(fact).or_default() += v.as_u64().unwrap_or(0);
        }
        for (k, v) in r["regimes"].as_object().into_iter().flatten() {
            *st.regimes.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
        for x in r["samples"].as_array().into_iter().flatten() {
            let bad = || format!("bad sample {x}");
            st.samples.push(Sample {
                index: x[0].as_u64().ok_or_else(bad)?,
                value_bits: x[1].as_f64().ok_or_else(bad)?,
                grad_bits: x[2].as_f64(),
                value_correctly_rounded: x[3].as_bool().ok_or_else(bad)?,
            });
        }
        failures.extend(r["failures"].as_array().into_iter().flatten().filter_map(Value::as_u64));
        // the worst case: failing before passing, then the most bits, then the lowest index
        // (what the unsharded run's scan in index order keeps)
        if let (Some(i), Some(f), Some(b)) =
            (r["worst"][0].as_u64(), r["worst"][1].as_bool(), r["worst"][2].as_f64())
        {
            let better = worst.map_or(true, |(wf, wb, wi)| {
                (f, b) > (wf, wb) || ((f, b) == (wf, wb) && i < wi)
            });
            if better {
                worst = Some((f, b, i));
            }
        }
    }
    if let Some(k) = seen.iter().position(|&s| !s).filter(|_| whole) {
        return Err(format!(
            "{} {}: shard {k}/{count} is missing",
            cfg.loss, cfg.dtype
        ));
    }
    st.samples.sort_by_key(|x| x.index);
    summarize_samples(&mut st);
    failures.sort_unstable();
    failures.dedup();
    failures.truncate(cfg.keep_failures);
    Ok((st, failures, worst.map(|(_, _, i)| i)))
}

/// Shrink a finding's case (fewer elements, simpler values) while it still draws its first
/// verdict; at most `max_iters` shrink steps. Judged with the campaign's settings, and the
/// result is the case as sent to the subject (restricted to its capabilities).
pub fn shrink_finding(cfg: &Config, subject: &dyn Subject, f: &Finding, max_iters: usize) -> Case {
    let Some(&v) = f.verdicts.first() else {
        return f.case.clone();
    };
    shrink_while(cfg, subject, f.index, max_iters, &mut |r| {
        r.verdicts.contains(&v)
    })
    .unwrap_or_else(|| f.case.clone())
}

/// Shrink case `index` of a campaign while `holds` holds for its judgement (with the
/// campaign's settings). Returns the case as sent to the subject; `None` when the property
/// does not hold on the case itself.
pub fn shrink_while(
    cfg: &Config,
    subject: &dyn Subject,
    index: u64,
    max_iters: usize,
    holds: &mut dyn FnMut(&CaseReport) -> bool,
) -> Option<Case> {
    let mut any = false;
    let mut fails = |c: &Case| {
        let mut c = c.clone();
        c.id = index;
        let ok = judge_case_with(cfg, c, subject, index)
            .report
            .is_some_and(|r| holds(&r));
        any |= ok;
        ok
    };
    let small = gen::shrink(&cfg.loss, cfg.dtype, cfg.seed, index, &mut fails, max_iters);
    if !any {
        return None;
    }
    Some(subject.prepare(small.clone()).unwrap_or(small))
}

/// The verdict counts as `accuracy: 3, policy: 1`.
pub fn verdict_counts(st: &Stats) -> String {
    st.verdicts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A one-line human summary of a campaign.
pub fn summary_line(st: &Stats) -> String {
    let verdicts = if st.verdicts.is_empty() {
        "no findings".to_string()
    } else {
        verdict_counts(st)
    };
    format!(
        "{:<14} {:<5} {:>7} cases  value bits max {:>5.2} p99 {:>5.2}  grad bits max {:>5.2}  CR {:>6.2}%  {}{}  ({:.1}s)",
        st.loss,
        st.dtype.name(),
        st.cases,
        st.value_bits.max,
        st.value_bits.p99,
        st.grad_bits.max,
        100.0 * st.correctly_rounded,
        verdicts,
        if st.oracle_errors > 0 { format!(", {} oracle errors", st.oracle_errors) } else { String::new() },
        st.seconds
    )
}
