//! The stability report (`losscheck report`): the default campaign of the built-in kernels,
//! the zoo's known-bad implementations as baselines side by side with them, breakdown sweeps
//! ([`breakdown`]) with their SVG error graphs ([`plot`]), and the counterexamples of the zoo
//! entries whose failure is not a magnitude effect — written as `REPORT.md`, `report.json`
//! (schema: docs/report-schema.md), `report.html` ([`html`], self-contained) and
//! `plots/<loss>.svg`, every file atomically.
//!
//! ```no_run
//! use losscheck::report::{self, Options};
//! let mut r = report::run(&Options::quick(1));
//! r.sections.push(report::Section::new("Extra", "More Markdown."));
//! r.write(std::path::Path::new("/tmp/report")).unwrap();
//! ```

pub mod breakdown;
pub mod demos;
pub mod html;
pub mod plot;

use crate::check::campaign::{self, Config, Shard, Stats};
use crate::check::compare::Verdict;
use crate::check::subject::{Kernels, Subject};
use crate::zoo::{self, ZooEntry, ZooSubject};
use breakdown::{Sweep, SweepConfig};
use indicatif::{ProgressBar, ProgressStyle};
use losscheck_core::{catalogue, Case, Dtype};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The `schema` field of `report.json`.
pub const SCHEMA: &str = "losscheck-report/1";

/// Default cases per zoo entry × dtype.
pub const DEFAULT_ZOO_CASES: u64 = 2_000;

/// Cases per loss × dtype of the kernels' campaign in the default report. The report must
/// regenerate in ≤ 10 minutes on 2 cores (issue 6): 5,000 took 118 s for the 69 kernel
/// campaigns (and 34 s for the zoo at 1,000), so 10,000 leaves room for a loaded machine;
/// the verification suite (`./run test`) runs 10,000–20,000 cases per loss × dtype.
/// `LOSSCHECK_CASES` or `--cases` scale it up.
pub const DEFAULT_REPORT_CASES: u64 = 10_000;

/// Write a file atomically: a temporary file in the same directory, then a rename.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}

/// What the report runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Cases per loss × dtype of the kernels' campaign.
    pub cases: u64,
    /// Cases per zoo entry × dtype (0: no zoo baselines).
    pub zoo_cases: u64,
    /// Losses (empty: every loss with a kernel and generators).
    pub losses: Vec<String>,
    /// Dtypes (empty: all three).
    pub dtypes: Vec<Dtype>,
    pub sweep: SweepConfig,
    /// Shrink a counterexample for each zoo entry whose failure is not a magnitude effect.
    pub counterexamples: bool,
    /// Progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// A first look (`--quick`): recorded in the report.
    pub quick: bool,
    /// Run only this share of every campaign's cases ([`run_shard`]; `--shard K/N`).
    pub shard: Shard,
    /// Where each finished campaign's record is written, so that an interrupted run resumes
    /// from it (`--resume`); `None`: no checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Read the campaigns already recorded under [`Options::checkpoint`] instead of re-running
    /// them (a record made with other settings is ignored and its campaign re-run).
    pub resume: bool,
}

impl Options {
    /// The default report: `cases` kernel cases, [`DEFAULT_ZOO_CASES`] per zoo entry, 40-point sweeps.
    pub fn new(seed: u64, cases: u64) -> Options {
        Options {
            seed,
            cases,
            zoo_cases: DEFAULT_ZOO_CASES,
            losses: Vec::new(),
            dtypes: Vec::new(),
            sweep: SweepConfig {
                points: 40,
                cases_per_point: 3,
                seed,
            },
            counterexamples: true,
            progress: true,
            quick: false,
            shard: Shard::ALL,
            checkpoint: None,
            resume: false,
        }
    }
    /// A first look: 500 kernel cases, 200 per zoo entry, 16-point sweeps.
    pub fn quick(seed: u64) -> Options {
        Options {
            zoo_cases: 200,
            sweep: SweepConfig {
                points: 16,
                cases_per_point: 3,
                seed,
            },
            quick: true,
            ..Options::new(seed, 500)
        }
    }
    fn dtypes(&self) -> Vec<Dtype> {
        if self.dtypes.is_empty() {
            Dtype::ALL.to_vec()
        } else {
            self.dtypes.clone()
        }
    }
    /// The losses of the report, in catalogue order.
    pub fn losses(&self) -> Vec<String> {
        catalogue::ids()
            .filter(|l| self.losses.is_empty() || self.losses.iter().any(|x| x == l))
            .filter(|l| crate::kernels::implemented(l) && crate::check::gen::supported(l))
            .map(String::from)
            .collect()
    }
    /// The zoo entries of the report's losses, with the report's dtypes among theirs.
    pub fn zoo(&self) -> Vec<(&'static ZooEntry, Vec<Dtype>)> {
        let (losses, dtypes) = (self.losses(), self.dtypes());
        zoo::entries()
            .into_iter()
            .filter(|e| losses.iter().any(|l| l == e.loss))
            .map(|e| {
                let d: Vec<Dtype> = e
                    .dtypes
                    .iter()
                    .copied()
                    .filter(|d| dtypes.contains(d))
                    .collect();
                (e, d)
            })
            .filter(|(_, d)| !d.is_empty())
            .collect()
    }
}

/// A zoo entry's minimal counterexample (entries whose failure is not a magnitude effect).
#[derive(Clone, Debug)]
pub struct Counterexample {
    pub subject: String,
    pub loss: String,
    pub dtype: Dtype,
    pub verdicts: Vec<Verdict>,
    /// The shrunk case (still drawing the first verdict).
    pub case: Case,
    /// Replays the original (unshrunk) case of the campaign.
    pub replay: String,
}

impl Counterexample {
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject, "loss": self.loss, "dtype": self.dtype.name(),
            "verdicts": self.verdicts.iter().map(|v| v.name()).collect::<Vec<_>>(),
            "case": self.case.to_json(), "replay": self.replay,
        })
    }
}

/// An extra Markdown section appended to the report (e.g. exhaustive certificates).
#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    /// Markdown body (the subset [`html`] renders: paragraphs, `- ` lists, tables, code).
    pub markdown: String,
}

impl Section {
    pub fn new(title: &str, markdown: &str) -> Section {
        Section {
            title: title.to_string(),
            markdown: markdown.to_string(),
        }
    }
}

/// Seconds spent per part of the report.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub kernels: f64,
    pub zoo: f64,
    pub sweeps: f64,
    pub counterexamples: f64,
    /// External implementations (`--subject exec:CMD`).
    pub peers: f64,
    /// The seed demonstrations ([`demos`]).
    pub demos: f64,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct Report {
    pub options: Options,
    /// The kernels' campaigns, loss × dtype.
    pub kernels: Vec<Stats>,
    /// The zoo baselines' campaigns, entry × dtype.
    pub zoo: Vec<Stats>,
    /// External implementations side by side (`--subject exec:CMD`), subject × loss × dtype.
    pub peers: Vec<Stats>,
    pub sweeps: Vec<Sweep>,
    pub counterexamples: Vec<Counterexample>,
    pub timings: Timings,
    /// The seed demonstrations ([`demos`]): those whose losses the report covers.
    pub demos: Vec<demos::Demo>,
    /// Extra sections, appended in order.
    pub sections: Vec<Section>,
}

/// A progress bar on stderr when asked and it is a terminal, hidden otherwise.
pub fn progress_bar(show: bool, len: u64, unit: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{eta}}) {{msg}}"
        ))
        .unwrap(),
    );
    b
}

/// Run the campaign of each (subject, loss, dtype) with `cases` cases, behind one progress
/// bar counting `unit`.
fn campaigns(
    jobs: &[(&dyn Subject, String, Dtype)],
    cases: u64,
    opts: &Options,
    unit: &str,
) -> Vec<Stats> {
    campaigns_with(jobs, cases, opts, unit, &BTreeMap::new())
}

/// [`campaigns`] with an accuracy threshold per dtype (peers: DESIGN.md's breakdown rule, as
/// `losscheck fuzz` holds a foreign implementation to).
fn campaigns_with(
    jobs: &[(&dyn Subject, String, Dtype)],
    cases: u64,
    opts: &Options,
    unit: &str,
    max_bits: &BTreeMap<Dtype, f64>,
) -> Vec<Stats> {
    if cases == 0 {
        return Vec::new();
    }
    let share = (0..cases).filter(|&i| opts.shard.contains(i)).count() as u64;
    let bar = progress_bar(opts.progress, share * jobs.len() as u64, unit);
    let all = jobs
        .iter()
        .map(|(subject, loss, dtype)| {
            bar.set_message(format!("{} {loss} {dtype}", subject.name()));
            let cfg = Config {
                max_bits: max_bits.clone(),
                ..campaign_config(opts, loss, *dtype, cases)
            };
            let file = opts
                .checkpoint
                .as_ref()
                .map(|d| d.join(checkpoint_name(&subject.name(), loss, *dtype, opts.shard)));
            let resumed = file
                .as_ref()
                .filter(|_| opts.resume)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|r| campaign::from_record(&cfg, *subject, &r).ok());
            if let Some(st) = resumed {
                bar.inc(share);
                return st;
            }
            let st = campaign::run(&cfg, *subject, &|| bar.inc(1));
            if let Some(f) = &file {
                // a checkpoint that cannot be written costs a resume, not the report
                if let Err(e) = write_atomic(f, &campaign::record(&cfg, &st).to_string()) {
                    bar.println(format!("losscheck: checkpoint not written: {e}"));
                }
            }
            if !bar.is_hidden() {
                bar.println(format!(
                    "{:<40} {}",
                    st.subject,
                    campaign::summary_line(&st)
                ));
            }
            st
        })
        .collect();
    bar.finish_and_clear();
    all
}

/// Every this many cases of a report campaign, an invalid variant of the case is sent too
/// (the `invalid_accepted` fact; [`crate::check::invalid`]).
pub const INVALID_EVERY: u64 = 50;

/// The settings of one of the report's campaigns.
pub fn campaign_config(opts: &Options, loss: &str, dtype: Dtype, cases: u64) -> Config {
    Config {
        keep_failures: 50,
        invalid_every: INVALID_EVERY,
        shard: opts.shard,
        ..Config::new(loss, dtype, cases, opts.seed)
    }
}

/// The checkpoint file of a campaign (under [`Options::checkpoint`]).
fn checkpoint_name(subject: &str, loss: &str, dtype: Dtype, shard: Shard) -> String {
    let safe: String = subject
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    format!("{safe}__{loss}__{dtype}__{}-of-{}.json", shard.index, shard.count)
}

/// Run everything the report shows.
pub fn run(opts: &Options) -> Report {
    run_with_peers(opts, &[])
}

/// Run everything the report shows, with external implementations (`--subject exec:CMD`)
/// side by side: each peer on every report loss × dtype it supports, with the zoo's budget
/// ([`Options::zoo_cases`]) and the breakdown rule as its accuracy threshold, in the error
/// tables, the facts and the breakdown sweeps.
///
/// Each peer comes with how a replay command names it (`'exec:CMD'`): its findings' replay
/// lines use that, its tables its handshake name and version.
pub fn run_with_peers(opts: &Options, peers: &[(&dyn Subject, String)]) -> Report {
    let (kstats, zstats, mut timings) = run_campaigns(opts);
    let t = Instant::now();
    let mut pjobs: Jobs = Vec::new();
    for &(p, _) in peers {
        for l in opts.losses() {
            for d in opts.dtypes() {
                if p.supports(&l, d) {
                    pjobs.push((p, l.clone(), d));
                }
            }
        }
    }
    let max_bits = crate::check::fuzz::default_max_bits();
    let mut pstats = campaigns_with(&pjobs, opts.zoo_cases, opts, "peer cases", &max_bits);
    for st in &mut pstats {
        let replay_name = peers
            .iter()
            .find(|(p, _)| p.name() == st.subject)
            .map_or(st.subject.clone(), |(_, r)| r.clone());
        for f in st.failures.iter_mut().chain(st.worst.as_mut()) {
            f.replay = campaign::replay_command(&st.loss, st.dtype, st.seed, f.index, &replay_name);
        }
    }
    timings.peers = t.elapsed().as_secs_f64();
    let subjects: Vec<&dyn Subject> = peers.iter().map(|(p, _)| *p).collect();
    let mut r = finish_with(opts, kstats, zstats, timings, &subjects);
    r.peers = pstats;
    r
}

/// Campaigns to run: subject, loss, dtype.
type Jobs<'a> = Vec<(&'a dyn Subject, String, Dtype)>;

/// The kernels' and the zoo baselines' campaigns, in report order.
fn jobs<'a>(opts: &Options, kernels: &'a Kernels, zoo_subjects: &'a [ZooSubject]) -> (Jobs<'a>, Jobs<'a>) {
    let mut kjobs: Jobs = Vec::new();
    for l in &opts.losses() {
        for &d in &opts.dtypes() {
            kjobs.push((kernels, l.clone(), d));
        }
    }
    let mut zjobs: Jobs = Vec::new();
    for ((e, ds), s) in opts.zoo().iter().zip(zoo_subjects) {
        for &d in ds {
            zjobs.push((s, e.loss.to_string(), d));
        }
    }
    (kjobs, zjobs)
}

/// The zoo subjects of the report's entries.
fn zoo_subjects(opts: &Options) -> Vec<ZooSubject> {
    opts.zoo().iter().map(|(e, _)| ZooSubject(e)).collect()
}

/// Run the campaigns (the kernels', then the zoo's): the part of the report that `--shard`
/// splits and `--resume` checkpoints.
pub fn run_campaigns(opts: &Options) -> (Vec<Stats>, Vec<Stats>, Timings) {
    let kernels = Kernels;
    let zoo_subjects = zoo_subjects(opts);
    let (kjobs, zjobs) = jobs(opts, &kernels, &zoo_subjects);
    let mut timings = Timings::default();
    let t = Instant::now();
    let kstats = campaigns(&kjobs, opts.cases, opts, "kernel cases");
    timings.kernels = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let zstats = campaigns(&zjobs, opts.zoo_cases, opts, "zoo cases");
    timings.zoo = t.elapsed().as_secs_f64();
    (kstats, zstats, timings)
}

/// Schema id of a shard file (`report --shard K/N`).
pub const SHARD_SCHEMA: &str = "losscheck-report-shard/1";

/// The options a shard file carries, for [`merge`] to rebuild the report's.
fn options_json(o: &Options) -> Value {
    json!({
        "seed": o.seed, "cases": o.cases, "zoo_cases": o.zoo_cases,
        "losses": o.losses, "dtypes": o.dtypes.iter().map(|d| d.name()).collect::<Vec<_>>(),
        "sweep_points": o.sweep.points, "sweep_cases_per_point": o.sweep.cases_per_point,
        "counterexamples": o.counterexamples, "quick": o.quick,
    })
}

/// `report --shard K/N`: this shard's share of every campaign, as one JSON document of
/// campaign records (no report: [`merge`] makes it from all N shards).
pub fn run_shard(opts: &Options) -> Value {
    let (kstats, zstats, timings) = run_campaigns(opts);
    let record = |st: &Stats, cases: u64| {
        campaign::record(&campaign_config(opts, &st.loss, st.dtype, cases), st)
    };
    json!({
        "schema": SHARD_SCHEMA,
        "shard": opts.shard.text(),
        "options": options_json(opts),
        "kernels": kstats.iter().map(|st| record(st, opts.cases)).collect::<Vec<_>>(),
        "zoo": zstats.iter().map(|st| record(st, opts.zoo_cases)).collect::<Vec<_>>(),
        "seconds": {"kernels": timings.kernels, "zoo": timings.zoo},
    })
}

/// `losscheck merge`: the report from the N shard files of one sharded run (each shard once,
/// all made with the same options): every campaign's records merged
/// ([`campaign::merge`], equal to the unsharded campaign), then the sweeps and counterexamples,
/// which are run here. The report equals the unsharded run's, timings aside.
pub fn merge(shards: &[Value], progress: bool) -> Result<Report, String> {
    let first = shards.first().ok_or("no shard to merge")?;
    for s in shards {
        if s["schema"] != SHARD_SCHEMA {
            return Err(format!("not a report shard ({SHARD_SCHEMA}): schema {}", s["schema"]));
        }
        if s["options"] != first["options"] {
            return Err(format!(
                "shards {} and {} were run with different options: {} vs {}",
                first["shard"], s["shard"], first["options"], s["options"]
            ));
        }
    }
    let o = &first["options"];
    let u = |k: &str| o[k].as_u64().ok_or_else(|| format!("shard options lack {k}"));
    let mut opts = Options::new(u("seed")?, u("cases")?);
    opts.zoo_cases = u("zoo_cases")?;
    opts.sweep.points = u("sweep_points")? as usize;
    opts.sweep.cases_per_point = u("sweep_cases_per_point")?;
    opts.counterexamples = o["counterexamples"].as_bool().unwrap_or(true);
    opts.quick = o["quick"].as_bool().unwrap_or(false);
    opts.progress = progress;
    opts.losses = o["losses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    opts.dtypes = o["dtypes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            v.as_str()
                .and_then(Dtype::parse)
                .ok_or_else(|| format!("bad dtype {v} in the shard options"))
        })
        .collect::<Result<_, _>>()?;
    let kernels = Kernels;
    let zoo_subjects = zoo_subjects(&opts);
    let (kjobs, zjobs) = jobs(&opts, &kernels, &zoo_subjects);
    let mut timings = Timings::default();
    for s in shards {
        timings.kernels += s["seconds"]["kernels"].as_f64().unwrap_or(0.0);
        timings.zoo += s["seconds"]["zoo"].as_f64().unwrap_or(0.0);
    }
    let merged = |part: &str, jobs: &[(&dyn Subject, String, Dtype)], cases: u64| {
        if cases == 0 {
            return Ok(Vec::new());
        }
        jobs.iter()
            .map(|(subject, loss, dtype)| {
                let name = subject.name();
                let records: Vec<Value> = shards
                    .iter()
                    .flat_map(|s| s[part].as_array().into_iter().flatten())
                    .filter(|r| r["subject"] == name.as_str() && r["loss"] == loss.as_str() && r["dtype"] == dtype.name())
                    .cloned()
                    .collect();
                let cfg = Config {
                    shard: Shard::ALL,
                    ..campaign_config(&opts, loss, *dtype, cases)
                };
                campaign::merge(&cfg, *subject, &records)
                    .map_err(|e| format!("{name} {loss} {dtype}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let kstats = merged("kernels", &kjobs, opts.cases)?;
    let zstats = merged("zoo", &zjobs, opts.zoo_cases)?;
    Ok(finish(&opts, kstats, zstats, timings))
}

/// The rest of the report, from the campaigns' results: the breakdown sweeps and the
/// counterexamples.
pub fn finish(opts: &Options, kstats: Vec<Stats>, zstats: Vec<Stats>, timings: Timings) -> Report {
    finish_with(opts, kstats, zstats, timings, &[])
}

fn finish_with(
    opts: &Options,
    kstats: Vec<Stats>,
    zstats: Vec<Stats>,
    mut timings: Timings,
    peers: &[&dyn Subject],
) -> Report {
    let losses = opts.losses();
    let dtypes = opts.dtypes();
    let kernels = Kernels;
    let zoo_entries = opts.zoo();
    let zoo_subjects = zoo_subjects(opts);

    // 3. the breakdown sweeps
    let t = Instant::now();
    let per_loss: Vec<(String, Box<breakdown::Subjects>)> = losses
        .iter()
        .map(|l| {
            let mut v: Vec<(&dyn Subject, Vec<Dtype>)> = vec![(&kernels, dtypes.clone())];
            for &p in peers {
                let ds: Vec<Dtype> = dtypes.iter().copied().filter(|&d| p.supports(l, d)).collect();
                if !ds.is_empty() {
                    v.push((p, ds));
                }
            }
            for ((e, ds), s) in zoo_entries.iter().zip(&zoo_subjects) {
                if e.loss == l {
                    v.push((s, ds.clone()));
                }
            }
            (l.clone(), v.into_boxed_slice())
        })
        .collect();
    let total: u64 = per_loss
        .iter()
        .map(|(_, s)| breakdown::sweep_points(s, opts.sweep))
        .sum();
    let bar = progress_bar(opts.progress, total, "sweep points");
    let sweeps: Vec<Sweep> = per_loss
        .iter()
        .filter_map(|(l, subjects)| {
            bar.set_message(l.clone());
            breakdown::sweep(l, subjects, opts.sweep, &|| bar.inc(1))
        })
        .collect();
    bar.finish_and_clear();
    timings.sweeps = t.elapsed().as_secs_f64();

    // 4. counterexamples of the zoo entries that fail other than by magnitude
    let t = Instant::now();
    let mut counterexamples = Vec::new();
    if opts.counterexamples {
        for ((e, _), s) in zoo_entries.iter().zip(&zoo_subjects) {
            if breakdown::is_magnitude_effect(e.name) {
                continue;
            }
            let name = s.name();
            let hit = zstats
                .iter()
                .filter(|st| st.subject == name)
                .find_map(|st| {
                    let f = st
                        .failures
                        .iter()
                        .find(|f| matches!(e.verdict, crate::zoo::Flag::Verdict(v) if f.verdicts.contains(&v)))
                        .or_else(|| st.failures.iter().find(|f| !f.verdicts.is_empty()))?;
                    Some((st, f))
                });
            if let Some((st, f)) = hit {
                let cfg = Config::new(&st.loss, st.dtype, st.cases, st.seed);
                let small = campaign::shrink_finding(&cfg, s, f, 300);
                let verdicts = campaign::judge_case(small.clone(), s, f.index)
                    .report
                    .map(|r| r.verdicts)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| f.verdicts.clone());
                counterexamples.push(Counterexample {
                    subject: name,
                    loss: st.loss.clone(),
                    dtype: st.dtype,
                    verdicts,
                    case: small,
                    replay: f.replay.clone(),
                });
            }
        }
    }
    timings.counterexamples = t.elapsed().as_secs_f64();

    // 5. the seed demonstrations
    let t = Instant::now();
    let demos = demos::run(&losses);
    timings.demos = t.elapsed().as_secs_f64();

    Report {
        options: opts.clone(),
        kernels: kstats,
        zoo: zstats,
        peers: Vec::new(),
        sweeps,
        counterexamples,
        timings,
        demos,
        sections: Vec::new(),
    }
}

/// A threshold as the report writes it.
fn threshold_text(t: Option<f64>) -> String {
    match t {
        Some(e) => breakdown::magnitude_text(e),
        None => "none within the dtype's range".into(),
    }
}

/// A violation of the report's bar: a magnitude-effect zoo entry without a finite threshold
/// where the kernel has none, or a kernel that breaks down.
pub fn bar_violations(r: &Report) -> Vec<String> {
    let mut v = Vec::new();
    for sw in &r.sweeps {
        let kernel = |d: Dtype| {
            sw.series
                .iter()
                .find(|s| s.subject == "kernels" && s.dtype == d)
                .and_then(|s| s.threshold())
        };
        for s in &sw.series {
            if s.subject == "kernels" {
                if let Some(t) = s.threshold() {
                    v.push(format!(
                        "kernels break down on {} {} at {}",
                        sw.loss,
                        s.dtype,
                        breakdown::magnitude_text(t)
                    ));
                }
            } else if breakdown::is_magnitude_effect(&s.subject) {
                match (s.threshold(), kernel(s.dtype)) {
                    (Some(_), None) => {}
                    (t, k) => v.push(format!(
                        "{} on {} {}: threshold {}, kernels {}",
                        s.subject,
                        sw.loss,
                        s.dtype,
                        threshold_text(t),
                        threshold_text(k)
                    )),
                }
            }
        }
    }
    v
}

/// `s` cut to at most `n` characters, marked when cut.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        None => s.to_string(),
        Some((i, _)) => format!("{}… (cut; the whole case is in report.json)", &s[..i]),
    }
}

fn bits_row(st: &Stats) -> String {
    let f = if st.verdicts.is_empty() && st.oracle_errors == 0 {
        "none".to_string()
    } else {
        campaign::verdict_counts(st)
    };
    format!(
        "{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}% | {}",
        st.cases,
        st.value_bits.max,
        st.value_bits.p99,
        st.value_bits.median,
        st.grad_bits.max,
        st.grad_bits.p99,
        st.grad_bits.median,
        100.0 * st.correctly_rounded,
        f
    )
}

fn facts_text(st: &Stats) -> String {
    if st.facts.is_empty() {
        "—".into()
    } else {
        st.facts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Report {
    /// Findings of the kernels (verdicts and oracle errors).
    pub fn kernel_findings(&self) -> u64 {
        self.kernels
            .iter()
            .map(|s| s.findings() + s.oracle_errors)
            .sum()
    }

    /// The zoo entry's failure text, when the subject is one.
    fn failure(subject: &str) -> Option<&'static str> {
        zoo::entry(subject).map(|e| e.failure)
    }

    /// `REPORT.md`.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut md = String::new();
        md.push_str("# losscheck stability report\n\n");
        md.push_str(&format!(
            "Subjects: the built-in kernels and, as baselines, the zoo's known-bad implementations. Seed {}, {} cases per loss × dtype \
             for the kernels, {} per zoo entry × dtype{}. Regenerate with `./run report` (or `losscheck report --seed {}`). Errors are in \
             bits (Herbie's log2(1 + ulps)) against the correctly rounded exact result from the MPFR oracle; the accuracy bar is \
             1 ulp (16-bit outputs) / 2 ulps (f32 outputs) for values and 2 ulps for gradients. **Breakdown** (DESIGN.md): more \
             than half the significand bits lost (f32 > 12, f16 > 5.5, bf16 > 4 bits), NaN or ±inf where the exact result is \
             finite included.\n\n",
            o.seed,
            o.cases,
            o.zoo_cases,
            if o.quick { " (`--quick`: a first look, coarse sweeps)" } else { "" },
            o.seed
        ));
        if !self.peers.is_empty() {
            let mut names: Vec<&str> = self.peers.iter().map(|s| s.subject.as_str()).collect();
            names.dedup();
            md.push_str(&format!(
                "Peers side by side (`--subject exec:CMD`): {} — {} cases per loss × dtype each supports, judged by the \
                 breakdown rule (as `losscheck fuzz` judges a foreign implementation); their own tables are in `peers/`.\n\n",
                names.join(", "),
                o.zoo_cases
            ));
        }
        let t = &self.timings;
        md.push_str(&format!(
            "Seconds: kernels' campaign {:.1}, zoo baselines {:.1}, breakdown sweeps {:.1} ({} points × {} cases per subject × dtype), counterexamples {:.1}, seed demonstrations {:.1}{}.\n\n",
            t.kernels, t.zoo, t.sweeps, o.sweep.points, o.sweep.cases_per_point, t.counterexamples, t.demos,
            if self.peers.is_empty() { String::new() } else { format!(", peers {:.1}", t.peers) }
        ));
        md.push_str("## Kernels: error per loss × dtype\n\n");
        md.push_str("| loss | dtype | cases | value bits max | p99 | median | grad bits max | p99 | median | correctly rounded | findings | hard cases |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
        for st in &self.kernels {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                st.loss,
                st.dtype,
                bits_row(st),
                st.hard_cases
            ));
        }
        md.push_str("\n## Breakdown thresholds\n\n");
        md.push_str(
            "Per loss, one input magnitude swept over a log grid across each dtype's range (a few seeded cases per point, the same \
             cases for every subject); the threshold is the smallest magnitude at which the subject breaks down. Zoo entries marked \
             † fail other than by magnitude: see their counterexamples below.\n\n",
        );
        let viol = bar_violations(self);
        if viol.is_empty() {
            md.push_str("Bar: every magnitude-effect zoo entry has a finite threshold where the kernels have none, and the kernels hold across every sweep.\n\n");
        } else {
            md.push_str("Bar **not met**:\n\n");
            for v in &viol {
                md.push_str(&format!("- {v}\n"));
            }
            md.push('\n');
        }
        let all_dtypes = o.dtypes();
        for sw in &self.sweeps {
            md.push_str(&format!(
                "### {} — {}\n\n| subject | {} |\n|---|{}\n",
                sw.loss,
                sw.quantity,
                all_dtypes
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(" | "),
                "---|".repeat(all_dtypes.len())
            ));
            let mut subjects: Vec<&str> = sw.series.iter().map(|s| s.subject.as_str()).collect();
            subjects.dedup();
            for subj in subjects {
                let mark = if subj != "kernels" && !breakdown::is_magnitude_effect(subj) {
                    " †"
                } else {
                    ""
                };
                let cells: Vec<String> = all_dtypes
                    .iter()
                    .map(|d| {
                        sw.series
                            .iter()
                            .find(|s| s.subject == subj && s.dtype == *d)
                            .map_or("—".to_string(), |s| threshold_text(s.threshold()))
                    })
                    .collect();
                md.push_str(&format!("| {subj}{mark} | {} |\n", cells.join(" | ")));
            }
            md.push_str(&format!(
                "\n![{} error graph](plots/{}.svg)\n\n",
                sw.loss, sw.loss
            ));
        }

        md.push_str("## Counterexamples (zoo entries that fail other than by magnitude)\n\n");
        if self.counterexamples.is_empty() {
            md.push_str("None shrunk in this run.\n\n");
        }
        for c in &self.counterexamples {
            md.push_str(&format!(
                "- **{}** ({} {}): {} — {}\n  minimal case: `{}`\n  replay: `{}`\n",
                c.subject,
                c.loss,
                c.dtype,
                c.verdicts
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                Report::failure(&c.subject).unwrap_or(""),
                clip(&c.case.to_json().to_string(), 600),
                c.replay
            ));
        }

        md.push_str("\n## Error per loss × dtype × subject\n\n");
        md.push_str("The kernels' campaign side by side with the zoo baselines (each on its own dtypes). Worst cases replay with the command listed under each table.\n\n");
        for l in o.losses() {
            let rows: Vec<&Stats> = self
                .kernels
                .iter()
                .chain(&self.peers)
                .chain(&self.zoo)
                .filter(|s| s.loss == l)
                .collect();
            if rows.is_empty() {
                continue;
            }
            md.push_str(&format!("### {l}\n\n| subject | dtype | cases | value bits max | p99 | median | grad bits max | p99 | median | correctly rounded | verdicts |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"));
            for st in &rows {
                md.push_str(&format!(
                    "| {} | {} | {} |\n",
                    st.subject,
                    st.dtype,
                    bits_row(st)
                ));
            }
            md.push('\n');
            for st in &rows {
                if let Some(w) = &st.worst {
                    md.push_str(&format!(
                        "- worst of {} {}: case {} (value {:.2} bits, grad {:.2} bits{}) — `{}`\n",
                        st.subject,
                        st.dtype,
                        w.index,
                        w.value_bits,
                        w.grad_bits,
                        if w.verdicts.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; {}",
                                w.verdicts
                                    .iter()
                                    .map(|v| v.name())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        },
                        w.replay
                    ));
                }
            }
            md.push('\n');
        }

        md.push_str("## Policies and facts per subject\n\n");
        md.push_str(&format!(
            "Per subject, over all its campaigns: the invalid-input probes (every {}th case is followed by an invalid \
             variant of it — a class id out of range, a probability outside [0, 1], a negative weight, a param outside its \
             domain, a shape one element short — that must be rejected with an error; one answered with numbers is the \
             `invalid_accepted` fact), the empty means answered with anything but 0 (the `policy` verdict), and the \
             campaigns with facts.\n\n| subject | invalid input rejected / probed | empty mean (`policy`) | campaigns with facts |\n|---|---:|---:|---:|\n",
            INVALID_EVERY
        ));
        let mut per: Vec<(&str, u64, u64, u64, u64)> = Vec::new();
        for st in self.kernels.iter().chain(&self.peers).chain(&self.zoo) {
            let policy = st.verdicts.get(&Verdict::Policy).copied().unwrap_or(0);
            let with_facts = u64::from(!st.facts.is_empty());
            match per.iter_mut().find(|p| p.0 == st.subject) {
                Some(p) => {
                    p.1 += st.invalid_rejected;
                    p.2 += st.invalid_probes;
                    p.3 += policy;
                    p.4 += with_facts;
                }
                None => per.push((&st.subject, st.invalid_rejected, st.invalid_probes, policy, with_facts)),
            }
        }
        for (subject, rejected, probed, policy, facts) in per {
            md.push_str(&format!("| {subject} | {rejected} / {probed} | {policy} | {facts} |\n"));
        }
        md.push('\n');
        md.push_str("Facts are not findings (DESIGN.md): kink selections, clamps, denominators the policy allows, …, counted over the campaign's cases.\n\n| subject | loss | dtype | facts |\n|---|---|---|---|\n");
        for st in self.kernels.iter().chain(&self.peers).chain(&self.zoo) {
            if !st.facts.is_empty() {
                md.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    st.subject,
                    st.loss,
                    st.dtype,
                    facts_text(st)
                ));
            }
        }
        md.push_str("\nZoo entries (what each imitates):\n\n");
        for (e, ds) in o.zoo() {
            md.push_str(&format!(
                "- **zoo:{}** ({}; {}; expected flag `{}`): {}\n",
                e.name,
                e.loss,
                ds.iter().map(|d| d.name()).collect::<Vec<_>>().join(", "),
                e.verdict.name(),
                e.failure
            ));
        }

        md.push_str("\n## Cases per generator regime\n\n");
        for st in self.kernels.iter().filter(|s| s.dtype == all_dtypes[0]) {
            md.push_str(&format!(
                "- {}: {}\n",
                st.loss,
                st.regimes
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.demos.is_empty() {
            md.push_str(&format!(
                "\n## {}\n\n{}\n",
                demos::SECTION_TITLE,
                demos::markdown(&self.demos).trim_end()
            ));
        }
        for s in &self.sections {
            md.push_str(&format!("\n## {}\n\n{}\n", s.title, s.markdown.trim_end()));
        }
        md
    }

    /// `report.json` (docs/report-schema.md).
    pub fn to_json(&self) -> Value {
        let o = &self.options;
        let strip = |s: &Stats| {
            let mut v = s.to_json();
            v.as_object_mut().unwrap().remove("seconds");
            v
        };
        let mut breakdown = Vec::new();
        for sw in &self.sweeps {
            for s in &sw.series {
                breakdown.push(json!({
                    "loss": sw.loss, "subject": s.subject, "dtype": s.dtype.name(),
                    "threshold_log2": s.threshold(),
                    "magnitude_effect": s.subject == "kernels" || breakdown::is_magnitude_effect(&s.subject),
                }));
            }
        }
        json!({
            "schema": SCHEMA,
            "seed": o.seed,
            "subject": "kernels",
            "options": {
                "cases": o.cases, "zoo_cases": o.zoo_cases, "quick": o.quick,
                "sweep_points": o.sweep.points, "sweep_cases_per_point": o.sweep.cases_per_point,
            },
            "timings": {
                "kernels": self.timings.kernels, "zoo": self.timings.zoo,
                "sweeps": self.timings.sweeps, "counterexamples": self.timings.counterexamples,
                "peers": self.timings.peers,
                "demos": self.timings.demos,
            },
            "campaigns": self.kernels.iter().map(strip).collect::<Vec<_>>(),
            // the zoo's failures are thousands of cases: kept are the worst case and the
            // counterexample
            "zoo_campaigns": self.zoo.iter().map(|s| { let mut v = strip(s); v["failures"] = json!([]); v }).collect::<Vec<_>>(),
            "peer_campaigns": self.peers.iter().map(strip).collect::<Vec<_>>(),
            "sweeps": self.sweeps.iter().map(|s| { let mut v = s.to_json(); v.as_object_mut().unwrap().remove("seconds"); v }).collect::<Vec<_>>(),
            "breakdown": breakdown,
            "bar_violations": bar_violations(self),
            "counterexamples": self.counterexamples.iter().map(Counterexample::to_json).collect::<Vec<_>>(),
            "demos": self.demos.iter().map(demos::Demo::to_json).collect::<Vec<_>>(),
            "sections": self.sections.iter().map(|s| json!({"title": s.title, "markdown": s.markdown})).collect::<Vec<_>>(),
        })
    }

    /// The plots, `plots/<loss>.svg` → SVG.
    pub fn plots(&self) -> BTreeMap<String, String> {
        self.sweeps
            .iter()
            .map(|s| (format!("plots/{}.svg", s.loss), plot::svg(s)))
            .chain(self.demos.iter().map(|d| (d.plot_path(), d.svg())))
            .collect()
    }

    /// `report.html`: the Markdown with the plots inline.
    pub fn html(&self) -> String {
        let inline: BTreeMap<String, String> = self
            .plots()
            .into_iter()
            .map(|(k, v)| (k, v.replace(r#" xmlns="http://www.w3.org/2000/svg""#, "")))
            .collect();
        html::page("losscheck stability report", &self.markdown(), &inline)
    }

    /// Write REPORT.md, report.json, report.html and `plots/<loss>.svg` under `dir`, each
    /// atomically; returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut written = Vec::new();
        // each peer's own results, under its name and version
        let mut peers: BTreeMap<&str, Vec<&Stats>> = BTreeMap::new();
        for st in &self.peers {
            peers.entry(st.subject.as_str()).or_default().push(st);
        }
        for (name, stats) in peers {
            let safe: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' })
                .collect();
            let mut md = format!(
                "# {name} — losscheck report, seed {}\n\n| loss | dtype | cases | value bits max | p99 | median | grad bits max | p99 | median | correctly rounded | verdicts |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
                self.options.seed
            );
            for st in &stats {
                md.push_str(&format!("| {} | {} | {} |\n", st.loss, st.dtype, bits_row(st)));
            }
            md.push('\n');
            for st in &stats {
                for f in &st.failures {
                    md.push_str(&format!(
                        "- {} {} case {}: {} — `{}`\n",
                        st.loss,
                        st.dtype,
                        f.index,
                        f.verdicts.iter().map(|v| v.name()).collect::<Vec<_>>().join(", "),
                        f.replay
                    ));
                }
            }
            let json = json!({"subject": name, "seed": self.options.seed,
                              "campaigns": stats.iter().map(|s| s.to_json()).collect::<Vec<_>>()});
            for (p, text) in [
                (dir.join("peers").join(format!("{safe}.md")), md),
                (dir.join("peers").join(format!("{safe}.json")), serde_json::to_string_pretty(&json).unwrap() + "\n"),
            ] {
                write_atomic(&p, &text)?;
                written.push(p);
            }
        }
        for (rel, svg) in self.plots() {
            let p = dir.join(rel);
            write_atomic(&p, &svg)?;
            written.push(p);
        }
        let files = [
            ("REPORT.md", self.markdown()),
            (
                "report.json",
                serde_json::to_string_pretty(&self.to_json()).unwrap() + "\n",
            ),
            ("report.html", self.html()),
        ];
        for (name, text) in files {
            let p = dir.join(name);
            write_atomic(&p, &text)?;
            written.push(p);
        }
        Ok(written)
    }
}
