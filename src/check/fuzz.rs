//! Fuzzing someone else's loss: campaigns of generated cases against any [`Subject`] — a Rust
//! type, a built-in subject, or a program speaking the exec protocol
//! ([`crate::check::exec::ExecSubject`]) — with findings written as they happen, every distinct
//! failure shrunk to a minimal case with a one-line replay command, a summary, and a baseline
//! of accepted findings. `losscheck fuzz` is [`run`] with a terminal progress bar; inside a
//! user's own `#[test]`, [`assert_holds`] is the one call.
//!
//! # From a Rust test
//!
//! ```no_run
//! use losscheck::check::fuzz;
//! use losscheck::check::subject::FnSubject;
//! use losscheck::{Case, Dtype, LossError, Response};
//!
//! // my loss: wraps my implementation as a subject (here: losscheck's own kernels)
//! fn my_mse(case: &Case) -> Result<Response, LossError> {
//!     losscheck::kernels::evaluate(case)
//! }
//! let subject = FnSubject { name: "my_mse".into(), f: my_mse };
//! // 300 generated cases per dtype; panics with each finding and its minimal input
//! fuzz::assert_holds(&subject, "mse", &[Dtype::F32, Dtype::Bf16], 300);
//! ```
//!
//! A subject that supports only part of a loss declares it (wrap it in
//! [`crate::check::subject::Declared`] with [`crate::check::subject::Capabilities`]); campaigns
//! then send only declared combinations.
//!
//! # Gradcheck
//!
//! A loss with no oracle yet, or a subject that runs in f64, can still have its backward
//! checked against a central finite difference of its own forward: [`gradcheck`] /
//! [`assert_gradcheck`] (the `torch.autograd.gradcheck` idea: along random directions,
//! Richardson-extrapolated central differences, kinks detected by one-sided differences that
//! disagree and skipped).
//!
//! # Policies of the fuzzer (decisions where DESIGN.md and PROTOCOL.md are silent)
//!
//! - `accuracy` and `grad_accuracy` are findings only when the bits of error exceed
//!   [`Settings::max_bits`] for the output's dtype (default: DESIGN.md's breakdown rule, half
//!   the significand bits: f32 12, f16 5.5, bf16 4). Every other verdict is a finding as judged.
//! - Facts (`kink_selection`, `nondeterministic`, …) are counted, and are findings only with
//!   [`Settings::strict_policy`]; then the fact's name is the verdict of the finding.
//! - Every [`Settings::repeat_every`]-th case (default 50) is asked twice (`nondeterministic`).
//! - Every [`Settings::batch_every`]-th case (default 50) of a separable loss with reduction
//!   `none` is asked again for a sub-batch of its rows — the first half, at every other probe
//!   the first row alone — whose answer must equal the full batch's on those rows bit for bit
//!   (`batch_variant`).
//! - Every [`Settings::invalid_every`]-th case (default 25) is followed by an invalid variant
//!   of it ([`crate::check::invalid`]: one change DESIGN.md's validation rejects — the kinds of
//!   change taken in turn); an answer with numbers is the `invalid_accepted` fact, an error of
//!   any kind but `unsupported` is a rejection (PyTorch raises, the adapter answers
//!   `internal`), a fault is a finding.
//! - An answer that is a wrong number under DESIGN.md's readings but follows a known
//!   alternative reading (weighted mean over N, `kl_div` mean over N·C, PyTorch's bce gradient
//!   clamp: [`crate::check::policies::READINGS`]) is that reading's fact, not `accuracy`.
//! - findings.jsonl holds at most [`Settings::keep_per_class`] lines (default 20) per loss ×
//!   dtype × verdict, plus one `"minimal": true` line per distinct failure; the counts of all
//!   findings are in summary.md.
//! - A baseline ([`Baseline`]) accepts findings by loss, dtype and verdict; accepted findings
//!   are recorded (`"accepted": true`) and counted but do not make the run fail.

use crate::check::campaign::{self, Config, Outcome, Shard, Stats};
use crate::check::compare::CaseReport;
use crate::check::gen;
use crate::check::subject::Subject;
use losscheck_core::catalogue::{self, Domain, InputKind};
use losscheck_core::rng::SplitMix64;
use losscheck_core::tensor::encode_f64;
use losscheck_core::{Case, Dtype, LossError, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Default cases per loss × dtype (issue 5's budget).
pub const DEFAULT_CASES: u64 = 2_000;

/// DESIGN.md's breakdown rule: more than half the significand bits lost.
pub fn default_max_bits() -> BTreeMap<Dtype, f64> {
    Dtype::ALL
        .iter()
        .map(|&d| (d, d.breakdown_bits()))
        .collect()
}

/// What to fuzz and how.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Losses (empty: every loss the subject supports and the generators cover).
    pub losses: Vec<String>,
    /// Dtypes (empty: every dtype the subject supports).
    pub dtypes: Vec<Dtype>,
    pub cases: u64,
    pub seed: u64,
    /// `accuracy` / `grad_accuracy` stand only above this many bits of error per dtype.
    pub max_bits: BTreeMap<Dtype, f64>,
    /// Facts are findings too.
    pub strict_policy: bool,
    pub baseline: Baseline,
    /// Where to write findings.jsonl, cases/ and summary.md (`None`: nowhere).
    pub out: Option<PathBuf>,
    /// How the replay command names the subject, e.g. `--exec 'python3 my.py'`.
    pub replay_subject: String,
    /// Shrink steps per distinct failure (fewer for faults; see [`shrink_budget`]).
    pub shrink_iters: usize,
    /// Lines per loss × dtype × verdict in findings.jsonl.
    pub keep_per_class: usize,
    /// Ask every k-th case twice (0: never).
    pub repeat_every: u64,
    /// Probe every k-th case of a separable loss with reduction `none` for `batch_variant`
    /// answers (0: never; [`Config::batch_every`]).
    pub batch_every: u64,
    /// Probe every k-th case with an invalid variant of it (`invalid_accepted`; 0: never;
    /// [`Config::invalid_every`]).
    pub invalid_every: u64,
    /// Run only this share of every campaign's cases (`--shard K/N`; docs/distributed.md).
    pub shard: Shard,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            losses: Vec::new(),
            dtypes: Vec::new(),
            cases: DEFAULT_CASES,
            seed: 1,
            max_bits: default_max_bits(),
            strict_policy: false,
            baseline: Baseline::default(),
            out: None,
            replay_subject: String::new(),
            shrink_iters: 500,
            keep_per_class: 20,
            repeat_every: 50,
            batch_every: 50,
            invalid_every: 25,
            shard: Shard::ALL,
        }
    }
}

impl Settings {
    /// The campaign of `loss` × `dtype` under these settings (the fuzzer keeps no failures in
    /// its statistics: it streams them).
    pub fn config(&self, loss: &str, dtype: Dtype) -> Config {
        Config {
            max_bits: self.max_bits.clone(),
            repeat_every: self.repeat_every,
            batch_every: self.batch_every,
            invalid_every: self.invalid_every,
            shard: self.shard,
            keep_failures: 0,
            ..Config::new(loss, dtype, self.cases, self.seed)
        }
    }
}

/// Shrink steps for a failure of this class: each step of a `hang` costs a timeout, each step
/// of a `crash` a restart of the subject.
pub fn shrink_budget(verdict: &str, base: usize) -> usize {
    match verdict {
        "hang" => base.min(3),
        "crash" => base.min(30),
        "protocol" => base.min(100),
        // probes: a shrunk case is judged without them
        "nondeterministic" | "batch_variant" => 0,
        _ => base,
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline.

/// Accepted findings: lines `loss dtype verdict` (`*` matches anything; `#` starts a comment),
/// or JSON objects with `loss`, `dtype` and `verdict` fields — the lines of a previous run's
/// findings.jsonl.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline {
    pub entries: Vec<(String, String, String)>,
}

impl Baseline {
    pub fn parse(text: &str) -> Result<Baseline, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('{') {
                let v: Value = serde_json::from_str(l)
                    .map_err(|e| format!("baseline line {}: not JSON: {e}", n + 1))?;
                let f = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_str)
                        .map(String::from)
                        .ok_or_else(|| format!("baseline line {}: no string field {k:?}", n + 1))
                };
                entries.push((f("loss")?, f("dtype")?, f("verdict")?));
            } else {
                let w: Vec<&str> = l
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                let [a, b, c] = w.as_slice() else {
                    return Err(format!(
                        "baseline line {}: expected `loss dtype verdict`, got {l:?}",
                        n + 1
                    ));
                };
                entries.push((a.to_string(), b.to_string(), c.to_string()));
            }
        }
        entries.sort();
        entries.dedup();
        Ok(Baseline { entries })
    }
    pub fn load(path: &Path) -> Result<Baseline, String> {
        let t = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the baseline {}: {e}", path.display()))?;
        Baseline::parse(&t)
    }
    pub fn accepts(&self, loss: &str, dtype: Dtype, verdict: &str) -> bool {
        let m = |p: &str, x: &str| p == "*" || p == x;
        self.entries
            .iter()
            .any(|(l, d, v)| m(l, loss) && m(d, dtype.name()) && m(v, verdict))
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

/// One distinct failure of a campaign (per verdict class), with its minimal case.
#[derive(Clone, Debug)]
pub struct Distinct {
    pub loss: String,
    pub dtype: Dtype,
    pub verdict: String,
    /// Cases of the campaign with this verdict.
    pub count: u64,
    /// The first such case.
    pub first_index: u64,
    /// The minimal case (shrunk while the verdict persists; the first case if it did not
    /// shrink or is not shrunk).
    pub minimal: Case,
    pub shrunk: bool,
    /// The judgement of the minimal case: `output[index]: actual …, expected …` lines.
    pub detail: Vec<String>,
    pub error: Option<String>,
    pub value_bits: f64,
    pub grad_bits: f64,
    pub case_file: Option<PathBuf>,
    pub replay: String,
    /// Accepted by the baseline.
    pub accepted: bool,
}

/// One loss × dtype.
#[derive(Clone, Debug)]
pub struct CampaignReport {
    pub stats: Stats,
    /// Findings per verdict (facts included under `--strict-policy`).
    pub findings: BTreeMap<String, u64>,
    /// Of which accepted by the baseline.
    pub accepted: BTreeMap<String, u64>,
    pub distinct: Vec<Distinct>,
}

impl CampaignReport {
    /// Findings not accepted by the baseline.
    pub fn open_findings(&self) -> u64 {
        self.findings
            .iter()
            .map(|(k, n)| n - self.accepted.get(k).copied().unwrap_or(0))
            .sum()
    }
}

/// The result of a fuzz run.
#[derive(Clone, Debug)]
pub struct Report {
    pub subject: String,
    pub settings: Settings,
    pub campaigns: Vec<CampaignReport>,
    /// What was not run and why (no generators, not supported).
    pub notes: Vec<String>,
    /// Files written.
    pub findings_file: Option<PathBuf>,
    pub summary_file: Option<PathBuf>,
    /// The tail of the subject's stderr, when it has one.
    pub stderr: Option<String>,
    pub seconds: f64,
}

impl Report {
    /// Findings not accepted by the baseline.
    pub fn findings(&self) -> u64 {
        self.campaigns
            .iter()
            .map(CampaignReport::open_findings)
            .sum()
    }
    pub fn accepted(&self) -> u64 {
        self.campaigns
            .iter()
            .map(|c| c.accepted.values().sum::<u64>())
            .sum()
    }
    /// 0: nothing found, 1: findings (2, set-up errors, is the caller's).
    pub fn exit_code(&self) -> u8 {
        if self.findings() > 0 {
            1
        } else {
            0
        }
    }
    /// The terminal summary.
    pub fn terminal(&self) -> String {
        render(self, false)
    }
    /// summary.md.
    pub fn markdown(&self) -> String {
        render(self, true)
    }
    /// Panic with the summary when there is any finding (or when nothing was checked).
    pub fn assert_clean(&self) {
        let judged: u64 = self.campaigns.iter().map(|c| judged(&c.stats)).sum();
        if self.campaigns.is_empty() || judged == 0 {
            panic!(
                "losscheck fuzz: nothing was checked for {}:\n{}",
                self.subject,
                self.notes.join("\n")
            );
        }
        if self.findings() > 0 {
            panic!(
                "losscheck fuzz: {} findings for {}\n\n{}",
                self.findings(),
                self.subject,
                self.terminal()
            );
        }
    }
}

fn judged(st: &Stats) -> u64 {
    st.cases - st.skipped - st.unsupported - st.oracle_errors
}

/// Progress callbacks (a terminal bar in the CLI).
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn campaign(&self, _loss: &str, _dtype: Dtype) {}
    fn tick(&self) {}
    fn println(&self, _line: &str) {}
    fn finish(&self) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

// ---------------------------------------------------------------------------------------------
// Running.

/// The campaigns of a run (loss × dtype) and notes about what is left out.
pub type Plan = (Vec<(String, Dtype)>, Vec<String>);

/// The losses × dtypes to run for `subject`, and notes about what is left out.
pub fn plan(subject: &dyn Subject, s: &Settings) -> Result<Plan, String> {
    let mut notes = Vec::new();
    let losses: Vec<String> = if s.losses.is_empty() {
        catalogue::ids()
            .filter(|l| Dtype::ALL.iter().any(|&d| subject.supports(l, d)))
            .filter(|l| {
                let ok = gen::supported(l);
                if !ok {
                    notes.push(format!(
                        "{l}: supported by the subject, but no generators yet; skipped"
                    ));
                }
                ok
            })
            .map(String::from)
            .collect()
    } else {
        for l in &s.losses {
            if catalogue::spec(l).is_none() {
                return Err(format!(
                    "unknown loss {l:?}; `losscheck list` shows the catalogue"
                ));
            }
        }
        let mut v = Vec::new();
        for l in &s.losses {
            if !gen::supported(l) {
                notes.push(format!("{l}: no generators yet; skipped"));
            } else if !v.contains(l) {
                v.push(l.clone());
            }
        }
        v
    };
    let dtypes = if s.dtypes.is_empty() {
        Dtype::ALL.to_vec()
    } else {
        s.dtypes.clone()
    };
    let mut jobs = Vec::new();
    for l in &losses {
        for &d in &dtypes {
            if subject.supports(l, d) {
                jobs.push((l.clone(), d));
            } else if !s.dtypes.is_empty() || !s.losses.is_empty() {
                notes.push(format!(
                    "{l} {d}: not supported by {}; skipped",
                    subject.name()
                ));
            }
        }
    }
    Ok((jobs, notes))
}

/// Writes findings.jsonl and cases/ as findings happen.
struct Sink {
    dir: Option<PathBuf>,
    file: Option<Mutex<std::fs::File>>,
    counter: AtomicU64,
    per_class: Mutex<BTreeMap<(String, Dtype, String), usize>>,
}

impl Sink {
    /// A fresh output directory: findings.jsonl truncated, old cases/*.json removed.
    fn new(dir: Option<&Path>) -> Result<Sink, String> {
        let file = match dir {
            None => None,
            Some(d) => {
                let cases = d.join("cases");
                std::fs::create_dir_all(&cases)
                    .map_err(|e| format!("cannot create {}: {e}", cases.display()))?;
                if let Ok(rd) = std::fs::read_dir(&cases) {
                    for e in rd.flatten() {
                        if e.path().extension().is_some_and(|x| x == "json") {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
                let p = d.join("findings.jsonl");
                Some(Mutex::new(std::fs::File::create(&p).map_err(|e| {
                    format!("cannot create {}: {e}", p.display())
                })?))
            }
        };
        Ok(Sink {
            dir: dir.map(Path::to_path_buf),
            file,
            counter: AtomicU64::new(1),
            per_class: Mutex::new(BTreeMap::new()),
        })
    }
    fn take_slot(&self, loss: &str, dtype: Dtype, verdict: &str, keep: usize) -> bool {
        let mut m = self.per_class.lock().unwrap();
        let n = m
            .entry((loss.to_string(), dtype, verdict.to_string()))
            .or_default();
        *n += 1;
        *n <= keep
    }
    /// Write the case to cases/<n>.json; its path.
    fn write_case(&self, case: &Case) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = dir.join("cases").join(format!("{n}.json"));
        std::fs::write(&p, case.to_json().to_string() + "\n").ok()?;
        Some(p)
    }
    fn line(&self, v: &Value) {
        if let Some(f) = &self.file {
            let mut s = v.to_string();
            s.push('\n');
            let mut f = f.lock().unwrap();
            // one write per line; the file is unbuffered, so a killed run loses nothing written
            let _ = f.write_all(s.as_bytes());
            let _ = f.flush();
        }
    }
}

/// The verdicts (and, strictly, facts) a judged case counts as findings.
fn finding_names(r: &CaseReport, strict: bool) -> Vec<String> {
    let mut v: Vec<String> = r.verdicts.iter().map(|x| x.name().to_string()).collect();
    if strict {
        for f in &r.facts {
            if !v.iter().any(|x| x == f.name) {
                v.push(f.name.to_string());
            }
        }
    }
    v
}

fn outputs_json(r: &CaseReport) -> Vec<Value> {
    r.outputs
        .iter()
        .filter(|o| o.verdict.is_some())
        .map(|o| {
            json!({"output": o.output, "index": o.index, "actual": encode_f64(o.actual),
                   "expected": encode_f64(o.expected), "ulps": encode_f64(o.ulps), "bits": o.bits,
                   "verdict": o.verdict.map(|v| v.name())})
        })
        .collect()
}

fn detail_lines(r: &CaseReport) -> Vec<String> {
    r.outputs
        .iter()
        .filter(|o| o.verdict.is_some())
        .take(4)
        .map(|o| {
            format!(
                "{}[{}]: actual {}, expected {} ({} ulps, {:.2} bits; {})",
                o.output,
                o.index,
                encode_f64(o.actual),
                encode_f64(o.expected),
                encode_f64(o.ulps),
                o.bits,
                o.verdict.map_or("", |v| v.name())
            )
        })
        .collect()
}

/// The replay command of a case file.
pub fn replay_line(case_file: Option<&Path>, replay_subject: &str) -> String {
    let file = case_file.map_or("FILE".to_string(), |p| {
        crate::check::exec::shell_quote(&p.display().to_string())
    });
    let subj = if replay_subject.is_empty() {
        String::new()
    } else {
        format!(" {replay_subject}")
    };
    format!("losscheck eval --case {file}{subj}")
}

#[allow(clippy::too_many_arguments)]
fn finding_json(
    subject: &str,
    s: &Settings,
    cfg: &Config,
    index: u64,
    verdict: &str,
    names: &[String],
    r: &CaseReport,
    case: &Case,
    case_file: Option<&Path>,
    accepted: bool,
    minimal: Option<u64>,
) -> Value {
    json!({
        "subject": subject, "loss": cfg.loss, "dtype": cfg.dtype.name(), "seed": cfg.seed,
        "index": index, "verdict": verdict, "verdicts": names,
        "facts": r.facts.iter().map(|f| format!("{}: {}", f.name, f.detail)).collect::<Vec<_>>(),
        "bits": r.value_bits.max(r.grad_bits), "value_bits": r.value_bits, "grad_bits": r.grad_bits,
        "error": r.error, "outputs": outputs_json(r),
        "case": case.to_json(),
        "case_file": case_file.map(|p| p.display().to_string()),
        "replay": replay_line(case_file, &s.replay_subject),
        "minimal": minimal.is_some(), "shrunk_from": minimal,
        "accepted": accepted, "shard": s.shard.text(),
    })
}

/// Elementwise inputs of a case: every input holding as many elements as the first
/// differentiable one (a broadcast `pos_weight` and a reduced cotangent are not).
fn elementwise_inputs(c: &Case) -> Option<(usize, Vec<String>)> {
    if c.spec().structure != catalogue::Structure::Elementwise {
        return None;
    }
    let x = c.spec().grads.first()?;
    let t = c.inputs.get(*x)?;
    let n = t.len();
    let none = c.reduction() == losscheck_core::Reduction::None;
    let names = c
        .inputs
        .iter()
        .filter(|(k, t)| {
            t.len() == n && t.shape == c.inputs[*x].shape && (k.as_str() != "cotangent" || none)
        })
        .map(|(k, _)| k.clone())
        .collect();
    Some((n, names))
}

/// The case with elements [lo, hi) of every elementwise input removed (flattened to 1-D).
fn without_range(c: &Case, lo: usize, hi: usize) -> Option<Case> {
    let (n, names) = elementwise_inputs(c)?;
    if lo >= hi || hi > n {
        return None;
    }
    let mut d = c.clone();
    for k in &names {
        let t = d.inputs.get_mut(k)?;
        match &mut t.data {
            losscheck_core::Data::F(v) => {
                v.drain(lo..hi);
            }
            losscheck_core::Data::I(v) => {
                v.drain(lo..hi);
            }
        }
        t.shape = vec![n - (hi - lo)];
    }
    Some(d)
}

/// After the generator's shrinking: flatten to 1-D, delete elements (halves, quarters, …, one
/// at a time) and drop optional inputs while `holds` still holds, within `budget` judgements.
fn minimize(
    cfg: &Config,
    subject: &dyn Subject,
    mut c: Case,
    index: u64,
    budget: usize,
    holds: &mut dyn FnMut(&CaseReport) -> bool,
) -> (Case, bool) {
    let mut calls = 0;
    let mut changed = false;
    let mut try_case = |d: Case, calls: &mut usize| -> Option<Case> {
        *calls += 1;
        let o = campaign::judge_case_with(cfg, d, subject, index);
        if o.skipped.is_none() && o.report.as_ref().is_some_and(&mut *holds) {
            Some(o.case)
        } else {
            None
        }
    };
    // flatten
    if let Some((n, _)) = elementwise_inputs(&c) {
        if c.inputs
            .values()
            .any(|t| t.len() == n && t.shape.len() != 1)
            && n > 0
        {
            // deleting an empty range is refused; flatten by deleting nothing from a copy
            let mut d = c.clone();
            let (_, names) = elementwise_inputs(&c).unwrap();
            for k in &names {
                if let Some(t) = d.inputs.get_mut(k) {
                    t.shape = vec![n];
                }
            }
            if calls < budget {
                if let Some(x) = try_case(d, &mut calls) {
                    c = x;
                    changed = true;
                }
            }
        }
    }
    // delete ranges
    if let Some((n, _)) = elementwise_inputs(&c) {
        if c.inputs.values().all(|t| t.shape.len() <= 1) {
            let mut chunk = n.div_ceil(2).max(1);
            let mut n = n;
            loop {
                let mut lo = 0;
                while lo < n && calls < budget {
                    let hi = (lo + chunk).min(n);
                    match without_range(&c, lo, hi).and_then(|d| try_case(d, &mut calls)) {
                        Some(x) => {
                            c = x;
                            n -= hi - lo;
                            changed = true;
                        }
                        None => lo = hi,
                    }
                }
                if chunk == 1 || calls >= budget {
                    break;
                }
                chunk = chunk.div_ceil(2);
            }
        }
    }
    // optional inputs
    for k in ["cotangent", "weight", "mask", "pos_weight", "class_weight"] {
        if calls >= budget || !c.inputs.contains_key(k) {
            continue;
        }
        let mut d = c.clone();
        d.inputs.remove(k);
        if let Some(x) = try_case(d, &mut calls) {
            c = x;
            changed = true;
        }
    }
    (c, changed)
}

/// Run the campaigns. Findings are written (when `settings.out` is set) as they happen.
pub fn run(subject: &dyn Subject, s: &Settings, progress: &dyn Progress) -> Result<Report, String> {
    let t0 = std::time::Instant::now();
    let (jobs, notes) = plan(subject, s)?;
    let sink = Sink::new(s.out.as_deref())?;
    let name = subject.name();
    let share = (0..s.cases).filter(|&i| s.shard.contains(i)).count() as u64;
    progress.start(share * jobs.len() as u64);
    let mut campaigns = Vec::new();
    for (loss, dtype) in jobs {
        progress.campaign(&loss, dtype);
        let cfg = s.config(&loss, dtype);
        // first case per class (lowest index), for shrinking
        let firsts: Mutex<BTreeMap<String, (u64, Case, CaseReport)>> = Mutex::new(BTreeMap::new());
        let counts: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
        let on = |o: &Outcome| {
            progress.tick();
            let Some(r) = &o.report else { return };
            if o.unsupported {
                return;
            }
            let names = finding_names(r, s.strict_policy);
            if names.is_empty() {
                return;
            }
            {
                let mut c = counts.lock().unwrap();
                let mut f = firsts.lock().unwrap();
                for n in &names {
                    *c.entry(n.clone()).or_default() += 1;
                    let e = f.entry(n.clone());
                    match e {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert((o.index, o.case.clone(), r.clone()));
                        }
                        std::collections::btree_map::Entry::Occupied(mut oc) => {
                            if o.index < oc.get().0 {
                                oc.insert((o.index, o.case.clone(), r.clone()));
                            }
                        }
                    }
                }
            }
            let primary = &names[0];
            if !sink.take_slot(&loss, dtype, primary, s.keep_per_class) {
                return;
            }
            let accepted = names.iter().all(|n| s.baseline.accepts(&loss, dtype, n));
            let file = sink.write_case(&o.case);
            sink.line(&finding_json(
                &name,
                s,
                &cfg,
                o.index,
                primary,
                &names,
                r,
                &o.case,
                file.as_deref(),
                accepted,
                None,
            ));
        };
        let stats = campaign::run_with(&cfg, subject, &on);
        let counts = counts.into_inner().unwrap();
        let firsts = firsts.into_inner().unwrap();
        let mut accepted = BTreeMap::new();
        for (k, n) in &counts {
            if s.baseline.accepts(&loss, dtype, k) {
                accepted.insert(k.clone(), *n);
            }
        }
        // one minimal case per distinct failure
        let mut distinct = Vec::new();
        for (verdict, (index, case, rep)) in firsts {
            let is_accepted = s.baseline.accepts(&loss, dtype, &verdict);
            let budget = if is_accepted {
                0
            } else {
                shrink_budget(&verdict, s.shrink_iters)
            };
            let mut last: Option<CaseReport> = None;
            let small = if budget > 0 {
                let vname = verdict.clone();
                let strict = s.strict_policy;
                campaign::shrink_while(&cfg, subject, index, budget, &mut |r| {
                    let ok = finding_names(r, strict).contains(&vname);
                    if ok {
                        last = Some(r.clone());
                    }
                    ok
                })
            } else {
                None
            };
            let (mut minimal, mut shrunk, mut rep) = match (small, last.take()) {
                (Some(c), Some(r)) => {
                    let changed = c != case;
                    (c, changed, r)
                }
                _ => (case, false, rep),
            };
            // then delete elements and optional inputs, with half the budget (none for hangs)
            let budget = if verdict == "hang" { 0 } else { budget / 2 };
            if budget > 0 {
                let vname = verdict.clone();
                let strict = s.strict_policy;
                let mut last: Option<CaseReport> = None;
                let (m, changed) =
                    minimize(&cfg, subject, minimal.clone(), index, budget, &mut |r| {
                        let ok = finding_names(r, strict).contains(&vname);
                        if ok {
                            last = Some(r.clone());
                        }
                        ok
                    });
                if changed {
                    minimal = m;
                    shrunk = true;
                    if let Some(r) = last {
                        rep = r;
                    }
                }
            }
            let file = sink.write_case(&minimal);
            let names = finding_names(&rep, s.strict_policy);
            sink.line(&finding_json(
                &name,
                s,
                &cfg,
                index,
                &verdict,
                &names,
                &rep,
                &minimal,
                file.as_deref(),
                is_accepted,
                Some(index),
            ));
            distinct.push(Distinct {
                loss: loss.clone(),
                dtype,
                count: counts.get(&verdict).copied().unwrap_or(0),
                verdict,
                first_index: index,
                shrunk,
                detail: detail_lines(&rep),
                error: rep.error.clone(),
                value_bits: rep.value_bits,
                grad_bits: rep.grad_bits,
                replay: replay_line(file.as_deref(), &s.replay_subject),
                case_file: file,
                minimal,
                accepted: is_accepted,
            });
        }
        let cr = CampaignReport {
            stats,
            findings: counts,
            accepted,
            distinct,
        };
        progress.println(&campaign_line(&cr));
        campaigns.push(cr);
    }
    progress.finish();
    let mut report = Report {
        subject: name,
        settings: s.clone(),
        campaigns,
        notes,
        findings_file: s.out.as_ref().map(|d| d.join("findings.jsonl")),
        summary_file: s.out.as_ref().map(|d| d.join("summary.md")),
        stderr: None,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if let Some(d) = &s.out {
        write_summary(&mut report, d)?;
        if !s.shard.is_all() {
            let p = d.join("shard.json");
            std::fs::write(&p, shard_json(&report).to_string() + "\n")
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
    }
    Ok(report)
}

/// Schema id of a fuzz shard's `shard.json`.
pub const SHARD_SCHEMA: &str = "losscheck-fuzz-shard/1";

/// What [`merge`] needs of a shard: the settings, and per campaign its record, its finding
/// counts and its distinct failures (with their minimal cases).
fn shard_json(r: &Report) -> Value {
    let s = &r.settings;
    let campaigns: Vec<Value> = r
        .campaigns
        .iter()
        .map(|c| {
            let cfg = s.config(&c.stats.loss, c.stats.dtype);
            let distinct: Vec<Value> = c
                .distinct
                .iter()
                .map(|d| {
                    json!({"loss": d.loss, "dtype": d.dtype.name(), "verdict": d.verdict, "count": d.count,
                           "first_index": d.first_index, "minimal": d.minimal.to_json(), "shrunk": d.shrunk,
                           "detail": d.detail, "error": d.error, "value_bits": d.value_bits, "grad_bits": d.grad_bits,
                           "case_file": d.case_file.as_ref().map(|p| p.display().to_string()),
                           "replay": d.replay, "accepted": d.accepted})
                })
                .collect();
            json!({"record": campaign::record(&cfg, &c.stats), "findings": c.findings,
                   "accepted": c.accepted, "distinct": distinct})
        })
        .collect();
    json!({
        "schema": SHARD_SCHEMA, "subject": r.subject, "shard": s.shard.text(),
        "settings": {"cases": s.cases, "seed": s.seed, "strict_policy": s.strict_policy,
                     "max_bits": s.max_bits.iter().map(|(d, b)| (d.name().to_string(), json!(b))).collect::<serde_json::Map<_, _>>(),
                     "repeat_every": s.repeat_every, "batch_every": s.batch_every, "invalid_every": s.invalid_every,
                     "replay_subject": s.replay_subject},
        "notes": r.notes, "campaigns": campaigns, "seconds": r.seconds,
    })
}

/// `losscheck merge --fuzz`: one fuzz report from the `shard.json` of each of the N shards of a
/// run (`fuzz --shard K/N`, each shard once, the same subject and settings): per campaign the
/// records merged ([`campaign::merge`] without re-judging: the fuzzer keeps no failures in its
/// statistics), finding counts summed, and per verdict the distinct failure of the shard that
/// met it first (lowest case index) — the one an unsharded run would have shrunk. The merged
/// findings.jsonl is the shards' lines concatenated (their case files stay where they are).
pub fn merge(shards: &[Value], out: Option<&Path>, findings: &[PathBuf]) -> Result<Report, String> {
    let first = shards.first().ok_or("no fuzz shard to merge")?;
    for sh in shards {
        if sh["schema"] != SHARD_SCHEMA {
            return Err(format!("not a fuzz shard ({SHARD_SCHEMA}): schema {}", sh["schema"]));
        }
        if sh["settings"] != first["settings"] || sh["subject"] != first["subject"] {
            return Err(format!(
                "shards {} and {} are of different runs (subject or settings differ)",
                first["shard"], sh["shard"]
            ));
        }
    }
    let st = &first["settings"];
    let mut settings = Settings {
        cases: st["cases"].as_u64().ok_or("shard settings lack cases")?,
        seed: st["seed"].as_u64().ok_or("shard settings lack seed")?,
        strict_policy: st["strict_policy"].as_bool().unwrap_or(false),
        repeat_every: st["repeat_every"].as_u64().unwrap_or(0),
        batch_every: st["batch_every"].as_u64().unwrap_or(0),
        invalid_every: st["invalid_every"].as_u64().unwrap_or(0),
        replay_subject: st["replay_subject"].as_str().unwrap_or("").to_string(),
        out: out.map(Path::to_path_buf),
        ..Settings::default()
    };
    settings.max_bits = st["max_bits"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(d, b)| Some((Dtype::parse(d)?, b.as_f64()?)))
        .collect();
    // campaigns in the first shard's order
    let mut campaigns = Vec::new();
    for c in first["campaigns"].as_array().into_iter().flatten() {
        let (loss, dtype) = (&c["record"]["loss"], &c["record"]["dtype"]);
        let parts: Vec<&Value> = shards
            .iter()
            .flat_map(|sh| sh["campaigns"].as_array().into_iter().flatten())
            .filter(|x| &x["record"]["loss"] == loss && &x["record"]["dtype"] == dtype)
            .collect();
        let d = dtype.as_str().and_then(Dtype::parse).ok_or("bad dtype in a shard")?;
        let cfg = Config {
            shard: Shard::ALL,
            ..settings.config(loss.as_str().unwrap_or(""), d)
        };
        let records: Vec<Value> = parts.iter().map(|x| x["record"].clone()).collect();
        let stats = campaign::merge_counts(&cfg, first["subject"].as_str().unwrap_or(""), &records)
            .map_err(|e| format!("{} {}: {e}", cfg.loss, cfg.dtype))?;
        let sum = |key: &str| {
            let mut m: BTreeMap<String, u64> = BTreeMap::new();
            for x in &parts {
                for (k, v) in x[key].as_object().into_iter().flatten() {
                    *m.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
            m
        };
        let (found, accepted) = (sum("findings"), sum("accepted"));
        let mut distinct: BTreeMap<String, Distinct> = BTreeMap::new();
        for x in &parts {
            for v in x["distinct"].as_array().into_iter().flatten() {
                let dd = distinct_of(v)?;
                let keep = distinct
                    .get(&dd.verdict)
                    .map_or(true, |o| dd.first_index < o.first_index);
                if keep {
                    distinct.insert(dd.verdict.clone(), dd);
                }
            }
        }
        let distinct: Vec<Distinct> = distinct
            .into_values()
            .map(|mut dd| {
                dd.count = found.get(&dd.verdict).copied().unwrap_or(dd.count);
                dd
            })
            .collect();
        campaigns.push(CampaignReport { stats, findings: found, accepted, distinct });
    }
    let mut report = Report {
        subject: first["subject"].as_str().unwrap_or("").to_string(),
        settings,
        campaigns,
        notes: first["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        findings_file: out.map(|d| d.join("findings.jsonl")),
        summary_file: out.map(|d| d.join("summary.md")),
        stderr: None,
        seconds: shards.iter().filter_map(|s| s["seconds"].as_f64()).sum(),
    };
    if let Some(d) = out {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        let mut lines = String::new();
        for f in findings {
            lines += &std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        }
        let p = d.join("findings.jsonl");
        std::fs::write(&p, lines).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        write_summary(&mut report, d)?;
    }
    Ok(report)
}

fn distinct_of(v: &Value) -> Result<Distinct, String> {
    let (minimal, _) = Case::from_json(&v["minimal"]).map_err(|e| e.to_string())?;
    Ok(Distinct {
        loss: v["loss"].as_str().unwrap_or("").to_string(),
        dtype: v["dtype"].as_str().and_then(Dtype::parse).ok_or("bad dtype")?,
        verdict: v["verdict"].as_str().unwrap_or("").to_string(),
        count: v["count"].as_u64().unwrap_or(0),
        first_index: v["first_index"].as_u64().unwrap_or(0),
        minimal,
        shrunk: v["shrunk"].as_bool().unwrap_or(false),
        detail: v["detail"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        error: v["error"].as_str().map(String::from),
        value_bits: v["value_bits"].as_f64().unwrap_or(f64::NAN),
        grad_bits: v["grad_bits"].as_f64().unwrap_or(f64::NAN),
        case_file: v["case_file"].as_str().map(PathBuf::from),
        replay: v["replay"].as_str().unwrap_or("").to_string(),
        accepted: v["accepted"].as_bool().unwrap_or(false),
    })
}

fn write_summary(report: &mut Report, dir: &Path) -> Result<(), String> {
    let p = dir.join("summary.md");
    std::fs::write(&p, report.markdown()).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Rewrite summary.md (after adding, e.g., the subject's stderr to the report).
pub fn rewrite_summary(report: &mut Report) -> Result<(), String> {
    if let Some(d) = report.settings.out.clone() {
        write_summary(report, &d)?;
    }
    Ok(())
}

fn fmt_counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per campaign.
pub fn campaign_line(c: &CampaignReport) -> String {
    let st = &c.stats;
    let f = if c.findings.is_empty() {
        "no findings".to_string()
    } else {
        fmt_counts(&c.findings)
    };
    let acc: u64 = c.accepted.values().sum();
    format!(
        "{:<14} {:<5} {:>6} cases {:>6} judged {:>5} unsupported {:>5} skipped  worst bits value {:>5.2} grad {:>5.2}  {}{}",
        st.loss,
        st.dtype.name(),
        st.cases,
        judged(st),
        st.unsupported,
        st.skipped,
        st.value_bits.max,
        st.grad_bits.max,
        f,
        if acc > 0 { format!(" ({acc} accepted by the baseline)") } else { String::new() }
    )
}

/// A case for display: its JSON, or a note pointing at its file when it is long.
fn case_text(c: &Case, file: Option<&Path>, limit: usize) -> String {
    let j = c.to_json().to_string();
    if j.len() <= limit {
        return j;
    }
    let n: usize = c.inputs.values().map(|t| t.len()).max().unwrap_or(0);
    format!(
        "(a case of {n} elements per input, {} bytes of JSON: {})",
        j.len(),
        file.map_or("not written".to_string(), |p| p.display().to_string())
    )
}

/// ", shard K/N of them" (nothing for an unsharded run).
fn shard_text(shard: Shard) -> String {
    if shard.is_all() {
        String::new()
    } else {
        format!(" (this run: shard {} of them)", shard.text())
    }
}

fn render(r: &Report, md: bool) -> String {
    let mut o = String::new();
    let s = &r.settings;
    let mb = s
        .max_bits
        .iter()
        .map(|(d, b)| format!("{d} {b}"))
        .collect::<Vec<_>>()
        .join(", ");
    if md {
        o += &format!("# losscheck fuzz: {}\n\n", r.subject);
        o +=
            &format!(
            "Seed {}, {} cases per loss × dtype{}, accuracy findings above {mb} bits{}; {:.1} s.\n\n",
            s.seed,
            s.cases,
            shard_text(s.shard),
            if s.strict_policy { ", strict policy (facts are findings)" } else { "" },
            r.seconds
        );
        o += "| loss | dtype | cases | judged | unsupported | skipped | invalid probes rejected | worst value bits | worst grad bits | findings | facts |\n";
        o += "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n";
        for c in &r.campaigns {
            let st = &c.stats;
            let facts: BTreeMap<String, u64> =
                st.facts.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            o += &format!(
                "| {} | {} | {} | {} | {} | {} | {}/{} | {:.2} | {:.2} | {} | {} |\n",
                st.loss,
                st.dtype,
                st.cases,
                judged(st),
                st.unsupported,
                st.skipped,
                st.invalid_rejected,
                st.invalid_probes,
                st.value_bits.max,
                st.grad_bits.max,
                if c.findings.is_empty() {
                    "none".into()
                } else {
                    fmt_counts(&c.findings)
                },
                if facts.is_empty() {
                    "–".into()
                } else {
                    fmt_counts(&facts)
                },
            );
        }
        o += "\n`unsupported`: answered `unsupported` (coverage, not findings). `skipped`: generated cases outside the \
              subject's declared capabilities, not sent. `invalid probes rejected`: invalid variants of cases sent \
              (one change DESIGN.md's validation rejects) and answered with an error; the others are the \
              `invalid_accepted` fact.\n";
    } else {
        o += &format!(
            "losscheck fuzz {}: seed {}, {} cases per loss × dtype{}, accuracy findings above {mb} bits{}\n\n",
            r.subject,
            s.seed,
            s.cases,
            shard_text(s.shard),
            if s.strict_policy { ", strict policy" } else { "" }
        );
        for c in &r.campaigns {
            o += &campaign_line(c);
            o.push('\n');
            if !c.stats.facts.is_empty() {
                let facts: BTreeMap<String, u64> = c
                    .stats
                    .facts
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect();
                o += &format!("{:<20} facts: {}\n", "", fmt_counts(&facts));
            }
        }
    }
    if !r.notes.is_empty() {
        o += if md { "\n## Not run\n\n" } else { "\n" };
        for n in &r.notes {
            o += &format!("{}{n}\n", if md { "- " } else { "note: " });
        }
    }
    let oracle_errors: u64 = r.campaigns.iter().map(|c| c.stats.oracle_errors).sum();
    if oracle_errors > 0 {
        o += &format!(
            "\nwarning: the oracle failed on {oracle_errors} generated cases (a losscheck bug, not the subject's; please report it)\n"
        );
    }
    let distinct: Vec<&Distinct> = r.campaigns.iter().flat_map(|c| &c.distinct).collect();
    if !distinct.is_empty() {
        o += if md {
            "\n## Distinct failures\n"
        } else {
            "\ndistinct failures (each with its minimal case and replay):\n"
        };
        for d in distinct {
            let how = if d.shrunk {
                format!("minimal case (shrunk from case {})", d.first_index)
            } else {
                format!("case {} (not shrunk)", d.first_index)
            };
            let acc = if d.accepted {
                " — accepted by the baseline"
            } else {
                ""
            };
            if md {
                o += &format!(
                    "\n### {} {} `{}`: {} cases{acc}\n\n{how}, value {:.2} bits, grad {:.2} bits:\n\n```json\n{}\n```\n\n",
                    d.loss, d.dtype, d.verdict, d.count, d.value_bits, d.grad_bits,
                    case_text(&d.minimal, d.case_file.as_deref(), 20_000)
                );
                for l in &d.detail {
                    o += &format!("- {l}\n");
                }
                if let Some(e) = &d.error {
                    o += &format!("\n```text\n{}\n```\n", e.trim_end());
                }
                o += &format!("\nreplay: `{}`\n", d.replay);
            } else {
                o += &format!(
                    "\n  {} {} {}: {} cases{acc}; {how}, value {:.2} bits, grad {:.2} bits\n    {}\n",
                    d.loss, d.dtype, d.verdict, d.count, d.value_bits, d.grad_bits,
                    case_text(&d.minimal, d.case_file.as_deref(), 1_500)
                );
                for l in &d.detail {
                    o += &format!("    {l}\n");
                }
                if let Some(e) = &d.error {
                    for (k, l) in e.lines().enumerate() {
                        if k >= 12 {
                            o += "    …\n";
                            break;
                        }
                        o += &format!("    {l}\n");
                    }
                }
                o += &format!("    replay: {}\n", d.replay);
            }
        }
    }
    if let Some(e) = &r.stderr {
        if !e.trim().is_empty() && md {
            o += &format!(
                "\n## The subject's stderr (tail)\n\n```text\n{}\n```\n",
                e.trim_end()
            );
        }
    }
    let cases: u64 = r.campaigns.iter().map(|c| c.stats.cases).sum();
    let acc = r.accepted();
    o += &format!(
        "\n{} campaigns, {} cases, {} findings{}{}",
        r.campaigns.len(),
        cases,
        r.findings(),
        if acc > 0 {
            format!(" ({acc} more accepted by the baseline)")
        } else {
            String::new()
        },
        match (&r.findings_file, md) {
            (Some(f), false) => format!(
                "; wrote {} and {}",
                f.display(),
                r.summary_file.as_ref().unwrap().display()
            ),
            _ => String::new(),
        }
    );
    o.push('\n');
    o
}

// ---------------------------------------------------------------------------------------------
// The Rust API.

/// Fuzz `subject` on `loss` in each of `dtypes` with `cases` generated cases per dtype (seed 1,
/// the CLI's defaults otherwise) and panic with a readable report — each distinct finding, its
/// minimal input and what was expected — unless there is none. Meant for a user's `#[test]`.
pub fn assert_holds(subject: &dyn Subject, loss: &str, dtypes: &[Dtype], cases: u64) {
    let s = Settings {
        losses: vec![loss.to_string()],
        dtypes: dtypes.to_vec(),
        cases,
        ..Settings::default()
    };
    check(subject, &s).assert_clean();
}

/// [`run`] with no output files and no progress; panics on a set-up error.
pub fn check(subject: &dyn Subject, s: &Settings) -> Report {
    run(subject, s, &Quiet).unwrap_or_else(|e| panic!("losscheck fuzz: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Gradcheck.

/// A loss computed in f64: the value and gradients at the case's inputs (held exactly as f64)
/// in f64 — the dtype tags of the case are ignored. Gradients follow PROTOCOL.md: of
/// Σ_j c_j·value_j with c the cotangent (ones when absent).
pub trait F64Loss: Sync {
    fn eval_f64(&self, case: &Case) -> Result<Response, LossError>;
}

impl<F: Fn(&Case) -> Result<Response, LossError> + Sync> F64Loss for F {
    fn eval_f64(&self, case: &Case) -> Result<Response, LossError> {
        self(case)
    }
}

/// One gradcheck failure.
#[derive(Clone, Debug)]
pub struct GradFailure {
    pub index: u64,
    /// The case (shrunk while it still fails).
    pub case: Case,
    pub detail: String,
}

/// The result of [`gradcheck`].
#[derive(Clone, Debug, Default)]
pub struct GradcheckReport {
    pub loss: String,
    pub cases: u64,
    /// Directional derivatives compared.
    pub checked: u64,
    /// Directions skipped (kinks, non-finite values, domain edges) and cases the subject refused.
    pub skipped: u64,
    pub failures: Vec<GradFailure>,
}

/// Σ_j c_j·value_j(case).
fn objective(subject: &dyn F64Loss, case: &Case) -> Option<f64> {
    let r = subject.eval_f64(case).ok()?;
    let cot = case
        .inputs
        .get("cotangent")
        .and_then(|t| t.f().map(|v| v.to_vec()));
    let n = r.value.len();
    let mut s = 0.0;
    for j in 0..n {
        let c = match &cot {
            Some(c) if c.len() == n => c[j],
            Some(c) if c.len() == 1 => c[0],
            _ => 1.0,
        };
        s += c * r.value.get_f64(j);
    }
    Some(s)
}

/// Check one case along `dirs` random directions: `Ok(checked)` or `Err(detail)`.
fn gradcheck_case(
    subject: &dyn F64Loss,
    case: &Case,
    dirs: usize,
    seed: u64,
    skipped: &mut u64,
) -> Result<u64, String> {
    let spec = case.spec();
    let r = match subject.eval_f64(case) {
        Ok(r) => r,
        Err(_) => {
            *skipped += 1;
            return Ok(0);
        }
    };
    let Some(s0) = objective(subject, case) else {
        *skipped += 1;
        return Ok(0);
    };
    if !s0.is_finite() {
        *skipped += 1;
        return Ok(0);
    }
    let mut rng = SplitMix64::new(seed);
    let h = 1e-5;
    let mut checked = 0;
    for d in 0..dirs {
        // direction over the differentiable inputs, scaled per component
        let mut dir: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut analytic = 0.0;
        let mut mag = 0.0;
        let mut any = false;
        for g in &case.grad {
            let Some(x) = case.inputs.get(g).and_then(|t| t.f()) else {
                continue;
            };
            let Some(gr) = r.grad.get(g) else {
                return Err(format!("no gradient for {g}"));
            };
            let dom = match spec.input(g).map(|i| i.kind) {
                Some(InputKind::Float(dm)) => dm,
                _ => Domain::Any,
            };
            let mut v = vec![0.0; x.len()];
            for (i, &xi) in x.iter().enumerate() {
                if !xi.is_finite() || i >= gr.len() {
                    continue;
                }
                let u = rng.signed_unit();
                let step = u * xi.abs().max(1.0);
                let reach = 4.0 * h * step.abs();
                let ok = match dom {
                    Domain::Any | Domain::KlTarget => true,
                    Domain::UnitInterval => xi - reach > 0.0 && xi + reach < 1.0,
                    Domain::NonNegative | Domain::Weight => xi - reach > 0.0,
                };
                if ok {
                    v[i] = step;
                    let gi = gr.get_f64(i);
                    analytic += gi * step;
                    mag += (gi * step).abs();
                    any = true;
                }
            }
            dir.insert(g.clone(), v);
        }
        if !any {
            *skipped += 1;
            continue;
        }
        if !analytic.is_finite() {
            return Err(format!(
                "direction {d}: the analytic directional derivative is {analytic}"
            ));
        }
        let at = |t: f64| -> Option<f64> {
            let mut c = case.clone();
            for (g, v) in &dir {
                let x = c
                    .inputs
                    .get_mut(g)
                    .and_then(|t| t.f_mut())
                    .expect("float input");
                for (xi, vi) in x.iter_mut().zip(v) {
                    *xi += t * vi;
                }
            }
            objective(subject, &c)
        };
        let (Some(p1), Some(m1), Some(p2), Some(m2)) = (at(h), at(-h), at(h / 2.0), at(-h / 2.0))
        else {
            *skipped += 1;
            continue;
        };
        if ![p1, m1, p2, m2].iter().all(|x| x.is_finite()) {
            *skipped += 1;
            continue;
        }
        let (dp, dm) = ((p1 - s0) / h, (s0 - m1) / h);
        let d1 = (p1 - m1) / (2.0 * h);
        let d2 = (p2 - m2) / h;
        let numeric = (4.0 * d2 - d1) / 3.0;
        let scale = dp.abs().max(dm.abs()).max(mag);
        let noise = 1e-9 * (s0.abs() + p1.abs() + m1.abs()) / h;
        // a kink (or curvature the step cannot resolve): one-sided differences disagree
        if (dp - dm).abs() > 1e-2 * scale + 10.0 * noise {
            *skipped += 1;
            continue;
        }
        checked += 1;
        let tol = 1e-5 * scale.max(numeric.abs()) + 10.0 * noise;
        if (analytic - numeric).abs() > tol {
            return Err(format!(
                "direction {d}: backward gives {analytic:e}, the central difference of the forward {numeric:e} \
                 (|difference| {:e} > tolerance {tol:e})",
                (analytic - numeric).abs()
            ));
        }
    }
    Ok(checked)
}

/// Check a subject's backward against central finite differences of its own forward, on
/// `cases` generated cases of `loss` (values from the f32 generators, exact in f64; every
/// differentiable input asked), 3 random directions each.
pub fn gradcheck(subject: &dyn F64Loss, loss: &str, cases: u64, seed: u64) -> GradcheckReport {
    let mut rep = GradcheckReport {
        loss: loss.to_string(),
        cases,
        ..Default::default()
    };
    let prep = |mut c: Case| {
        c.grad = c.spec().grads.iter().map(|s| s.to_string()).collect();
        c
    };
    for k in 0..cases {
        let case = prep(gen::generate(loss, Dtype::F32, seed, k));
        let dseed = gen::case_hash(seed, loss, Dtype::F32, k);
        let mut skipped = 0;
        match gradcheck_case(subject, &case, 3, dseed, &mut skipped) {
            Ok(n) => {
                rep.checked += n;
                rep.skipped += skipped;
            }
            Err(detail) => {
                rep.skipped += skipped;
                if rep.failures.len() >= 5 {
                    continue;
                }
                let mut last = detail.clone();
                let mut fails = |c: &Case| {
                    let mut s = 0;
                    match gradcheck_case(subject, &prep(c.clone()), 3, dseed, &mut s) {
                        Err(d) => {
                            last = d;
                            true
                        }
                        Ok(_) => false,
                    }
                };
                let small = prep(gen::shrink(loss, Dtype::F32, seed, k, &mut fails, 300));
                rep.failures.push(GradFailure {
                    index: k,
                    case: small,
                    detail: last,
                });
            }
        }
    }
    rep
}

/// [`gradcheck`] with seed 1; panics with each failure and its (shrunk) case.
pub fn assert_gradcheck(subject: &dyn F64Loss, loss: &str, cases: u64) {
    let rep = gradcheck(subject, loss, cases, 1);
    assert!(
        rep.checked > 0,
        "gradcheck {loss}: no direction could be checked in {cases} cases"
    );
    if !rep.failures.is_empty() {
        let mut s = format!(
            "gradcheck {loss}: {} of {cases} cases fail ({} directions checked, {} skipped)\n",
            rep.failures.len(),
            rep.checked,
            rep.skipped
        );
        for f in &rep.failures {
            s += &format!("\ncase {}: {}\n  {}\n", f.index, f.detail, f.case.to_json());
        }
        panic!("{s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::subject::{FnSubject, Kernels};
    use losscheck_core::Tensor;

    /// An elementwise loss of r = pred − target computed in f64, with DESIGN.md's reductions:
    /// value and termwise gradients (for gradcheck).
    fn f64_elementwise(
        case: &Case,
        l: fn(f64) -> f64,
        dl: fn(f64) -> f64,
    ) -> Result<Response, LossError> {
        let checked = catalogue::validate(case)?;
        let f = |n: &str| case.inputs.get(n).and_then(|t| t.f().map(|v| v.to_vec()));
        let (p, t) = (f("pred").unwrap(), f("target").unwrap());
        let n = p.len();
        let w = f("weight").unwrap_or(vec![1.0; n]);
        let m: Vec<i64> = case
            .inputs
            .get("mask")
            .and_then(|t| t.i().map(|v| v.to_vec()))
            .unwrap_or(vec![1; n]);
        let act: Vec<bool> = (0..n).map(|i| m[i] != 0 && w[i] != 0.0).collect();
        let red = case.reduction();
        let den: f64 = if red == losscheck_core::Reduction::Mean {
            (0..n).filter(|&i| act[i]).map(|i| w[i]).sum()
        } else {
            1.0
        };
        let terms: Vec<f64> = (0..n)
            .map(|i| if act[i] { w[i] * l(p[i] - t[i]) } else { 0.0 })
            .collect();
        let value = match red {
            losscheck_core::Reduction::None => terms,
            _ if den == 0.0 => vec![0.0],
            _ => vec![terms.iter().sum::<f64>() / den],
        };
        let cot = f("cotangent");
        let mut grad = BTreeMap::new();
        for g in &case.grad {
            let s = if g == "target" { -1.0 } else { 1.0 };
            let v = (0..n)
                .map(|i| {
                    if !act[i] || den == 0.0 {
                        return 0.0;
                    }
                    let c = match (&cot, red) {
                        (Some(c), losscheck_core::Reduction::None) => c[i],
                        (Some(c), _) => c[0],
                        _ => 1.0,
                    };
                    s * dl(p[i] - t[i]) * w[i] * c / den
                })
                .collect();
            grad.insert(
                g.clone(),
                Tensor::float(case.dtype, case.inputs[g].shape.clone(), v),
            );
        }
        Ok(Response {
            id: case.id,
            value: Tensor::float(case.out_dtype, checked.value_shape(red), value),
            grad,
        })
    }

    #[test]
    fn assert_holds_passes_the_kernels_and_reports_a_zoo_entry() {
        assert_holds(&Kernels, "huber", &[Dtype::F32, Dtype::Bf16], 120);
        let zoo = crate::zoo::subject("zoo:log_cosh_textbook").unwrap();
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_holds(zoo.as_ref(), "log_cosh", &[Dtype::F32], 150)
        }))
        .expect_err("the zoo entry must fail");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("spurious_inf")
                && msg.contains("minimal case")
                && msg.contains("expected"),
            "{msg}"
        );
        // a subject that does not implement the loss: nothing checked is a failure too
        let none = FnSubject {
            name: "none".into(),
            f: |_: &Case| Err(LossError::unsupported("no")),
        };
        assert!(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_holds(
                &none,
                "cross_entropy",
                &[Dtype::F32],
                5
            )))
            .is_err()
        );
    }

    #[test]
    fn gradcheck_accepts_a_right_backward_and_catches_a_wrong_one() {
        let good = |c: &Case| f64_elementwise(c, |r| r * r, |r| 2.0 * r);
        let rep = gradcheck(&good, "mse", 150, 1);
        assert!(rep.failures.is_empty(), "{:?}", rep.failures);
        assert!(rep.checked > 100, "{rep:?}");
        assert_gradcheck(&good, "mse", 40);
        let cosh = |c: &Case| f64_elementwise(c, |r: f64| r.cosh().ln(), |r: f64| r.tanh());
        assert!(gradcheck(&cosh, "log_cosh", 100, 1).failures.is_empty());
        // a backward off by a factor: caught, and the case shrinks
        let bad = |c: &Case| f64_elementwise(c, |r| r * r, |r| 2.1 * r);
        let rep = gradcheck(&bad, "mse", 60, 1);
        assert!(!rep.failures.is_empty());
        let f = &rep.failures[0];
        assert!(f.detail.contains("backward gives"), "{}", f.detail);
        assert!(
            f.case.inputs["pred"].len()
                <= gen::generate("mse", Dtype::F32, 1, f.index).inputs["pred"].len()
        );
    }

    #[test]
    fn baseline_formats() {
        let b = Baseline::parse(
            "# accepted\nmse f16 accuracy\n* bf16 policy  # any loss\n{\"loss\":\"mae\",\"dtype\":\"f32\",\"verdict\":\"spurious_nan\",\"x\":1}\n",
        )
        .unwrap();
        assert!(b.accepts("mse", Dtype::F16, "accuracy"));
        assert!(!b.accepts("mse", Dtype::F32, "accuracy"));
        assert!(b.accepts("huber", Dtype::Bf16, "policy"));
        assert!(b.accepts("mae", Dtype::F32, "spurious_nan"));
        assert!(Baseline::parse("mse f16").is_err());
    }
}
