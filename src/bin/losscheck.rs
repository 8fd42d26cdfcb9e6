//! The `losscheck` command line: `list`, `eval`, `verify`, `report`, `fuzz`, `serve`,
//! `exhaustive`.

use clap::{Args, Parser, Subcommand};
use indicatif::ProgressBar;
use losscheck::check::campaign::{self, Config, Stats};
use losscheck::check::compare;
use losscheck::check::exec::{self, ExecOptions, ExecSubject};
use losscheck::check::exhaustive::{self, write_atomic};
use losscheck::check::fuzz;
use losscheck::check::subject::{Answer, Capabilities, Kernels, Subject};
use losscheck::core::catalogue::{self, Default as PDefault, Dims, InputKind};
use losscheck::core::tensor::encode_f64;
use losscheck::core::{Case, Dtype, Response, Tensor};
use losscheck::oracles::{self, Exact, OracleOutput};
use losscheck::report;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "losscheck",
    version,
    about = "Tells the truth about loss functions: exact (MPFR) oracles, ulp-level verdicts, stability reports.",
    long_about = "losscheck checks machine-learning loss functions against arbitrary-precision oracles.\n\n\
        Every value and gradient is compared with the correctly rounded exact result in its dtype \
        (f32, f16, bf16); errors are measured in ulps and bits (Herbie's log2(1+ulps)); NaN, \
        overflow, underflow and accuracy losses are verdicts.\n\n\
        Exit status: 0 = nothing found, 1 = findings, 2 = usage or set-up error."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the loss catalogue: ids, inputs, params (defaults and domains), gradients.
    List {
        /// Print the catalogue as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate one case (a PROTOCOL.md eval request) exactly and with the built-in kernel.
    ///
    /// Prints one JSON object: `canonical_case` (what was evaluated), `oracle.enclosure`
    /// (rigorous decimal intervals), `oracle.rounded` (the correctly rounded result, shaped like
    /// a PROTOCOL.md response), `kernel` (the built-in kernel's answer or its error) and
    /// `judgement` (ulps, bits and verdict per output).
    ///
    /// With `--exec CMD` or `--subject NAME` the case is sent to that subject instead, and its
    /// answer is printed as `response` next to the oracle's (the replay of a `fuzz` finding).
    Eval {
        /// Read the case from this file instead of stdin.
        #[arg(long)]
        case: Option<PathBuf>,
        /// Print compact JSON on one line (for programs).
        #[arg(long)]
        compact: bool,
        #[command(flatten)]
        target: SubjectArgs,
    },
    /// Run the verification campaign: generated cases per loss × dtype, each judged against the
    /// oracle. With --index, replay one case and print it with its judgement.
    Verify(VerifyArgs),
    /// Write the stability report (reports/REPORT.md, report.json, report.html, plots/*.svg):
    /// the default campaign of the built-in kernels, the zoo baselines, breakdown sweeps and
    /// their error graphs.
    Report(ReportArgs),
    /// Fuzz a loss implementation: a program speaking the exec protocol (PROTOCOL.md), or a
    /// built-in subject. Findings go to DIR/findings.jsonl as they happen (one JSON object a
    /// line, with the case and the command that replays it), a summary to DIR/summary.md and
    /// the terminal; each distinct failure is shrunk to a minimal case.
    ///
    /// Exit status: 0 = nothing found (or only findings the baseline accepts), 1 = findings,
    /// 2 = usage or set-up error (e.g. the command does not start or fails the handshake).
    Fuzz(FuzzArgs),
    /// Serve a built-in subject over the exec protocol on stdin/stdout (PROTOCOL.md's subject
    /// side): `losscheck fuzz --exec 'losscheck serve --subject zoo:NAME'` tests it over exec.
    Serve {
        /// `kernels` or `zoo:NAME`.
        #[arg(long, default_value = "kernels")]
        subject: String,
    },
    /// Exhaustive certificates of the elementwise losses: every bit pattern of the primary input
    /// (the first differentiable one) × a listed set of values of the other inputs and params.
    ///
    /// Each element (reduction `none`, one loss per element) is judged against the MPFR oracle
    /// like any case: value and every gradient, ulps, bits, verdicts. One JSON certificate per
    /// loss × dtype goes to OUT/<loss>-<dtype>.json (written atomically), and OUT/README.md is
    /// rewritten with one line per certificate in OUT. docs/exhaustive.md says what is certified.
    ///
    /// f16 and bf16 (65,536 patterns) run whole, in seconds to about a minute per loss on two
    /// cores. f32 (2^32 patterns) runs only by ranges: `--shard K/N` checks the K-th of N
    /// contiguous ranges and writes OUT/<loss>-f32-shard-K-of-N.json — a long campaign, not CI.
    /// `--shard` also works for 16-bit dtypes.
    ///
    /// `--function F` certifies the kernels' own vectorized math instead (exp, exp_nonpos,
    /// log1p_unit, logistic_parts, logistic_parts_fast, exp32_shift): every input of the dtype in F's domain against MPFR and the
    /// bound F's docs derive, to OUT/vmath/ (f32 with --shard K/N, or --shard 0/1 for all).
    ///
    /// Exit status: 0 = no findings (every bound holds), 1 = findings, 2 = usage error (e.g. a
    /// loss that is not elementwise, or f32 without --shard).
    Exhaustive(ExhaustiveArgs),
    /// Merge the shard files of a sharded report (`losscheck report --shard K/N`, one per
    /// K = 0..N-1, e.g. from a CI matrix or a Slurm array) into the report: the same report
    /// as an unsharded run with the same options, timings aside (the sweeps and the
    /// counterexamples run here). docs/distributed.md.
    ///
    /// Exit status: 0 = no kernel findings, 1 = findings, 2 = a shard missing, repeated or run
    /// with other options.
    Merge(MergeArgs),
}

#[derive(Args)]
struct ExhaustiveArgs {
    /// Loss id, elementwise (repeatable).
    #[arg(long = "loss", required_unless_present_any = ["all", "functions"])]
    losses: Vec<String>,
    /// Every elementwise loss of the catalogue.
    #[arg(long, conflicts_with = "losses")]
    all: bool,
    /// Instead of a loss, a function of the kernels' own math (`kernels::vmath`): exp,
    /// exp_nonpos, log1p_unit, logistic_parts, logistic_parts_fast, exp32_shift (repeatable). Every input of the dtype in the
    /// function's domain is checked against MPFR and the bound its docs derive; one JSON
    /// certificate per function × dtype goes to OUT/vmath/vmath-<function>-<dtype>.json.
    #[arg(long = "function", conflicts_with_all = ["losses", "all"])]
    functions: Vec<String>,
    /// Dtype: f16, bf16, or f32 with --shard (repeatable; default: f16 and bf16).
    #[arg(long = "dtype")]
    dtypes: Vec<Dtype>,
    /// Check only the K-th of N contiguous ranges of the patterns (0 <= K < N); needed for f32.
    #[arg(long, value_name = "K/N", value_parser = exhaustive::Shard::parse)]
    shard: Option<exhaustive::Shard>,
    /// The subject: `kernels` (the built-in kernels) or `zoo:NAME`.
    #[arg(long, default_value = "kernels")]
    subject: String,
    /// Output directory of the certificates.
    #[arg(long, default_value = "reports/exhaustive")]
    out: PathBuf,
}

/// The subject of `eval` and `fuzz`.
#[derive(Args, Clone, Default)]
struct SubjectArgs {
    /// A command speaking the exec protocol, run with `sh -c` (e.g. `python3 my_loss.py`).
    #[arg(long, conflicts_with = "subject")]
    exec: Option<String>,
    /// A built-in subject: `kernels` or `zoo:NAME`.
    #[arg(long)]
    subject: Option<String>,
    /// Base of the per-request timeout of an exec subject, in ms (plus 1 µs per byte of
    /// payload).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Child processes of an exec subject answering at once (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Args)]
struct FuzzArgs {
    #[command(flatten)]
    target: SubjectArgs,
    /// Loss id (repeatable; default: every loss the subject supports that has generators).
    #[arg(long = "loss")]
    losses: Vec<String>,
    /// Dtype: f32, f16, bf16 (repeatable; default: every dtype the subject supports).
    #[arg(long = "dtype")]
    dtypes: Vec<Dtype>,
    /// Cases per loss × dtype.
    #[arg(long, default_value_t = fuzz::DEFAULT_CASES)]
    cases: u64,
    /// Campaign seed: the same seed gives the same cases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (findings.jsonl, cases/, summary.md; emptied first).
    #[arg(long, default_value = "fuzz-out")]
    out: PathBuf,
    /// Accuracy findings only above this many bits of error, per dtype: `f16=5.5`
    /// (repeatable; default: half the significand bits, f32=12 f16=5.5 bf16=4).
    #[arg(long = "max-bits", value_name = "DTYPE=BITS", value_parser = parse_max_bits)]
    max_bits: Vec<(Dtype, f64)>,
    /// Facts (kink selection, nondeterministic answers, …) are findings too.
    #[arg(long)]
    strict_policy: bool,
    /// Accepted findings: lines `loss dtype verdict` (`*` = any), or a previous run's
    /// findings.jsonl. Accepted findings are reported but do not fail the run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Run only the K-th of N shares of every campaign (case indices i with i mod N = K); the
    /// shard also writes DIR/shard.json, and `losscheck merge --fuzz DIR0 DIR1 …` combines the
    /// N shards' directories into one (docs/distributed.md).
    #[arg(long, value_name = "K/N", value_parser = exhaustive::Shard::parse)]
    shard: Option<exhaustive::Shard>,
}

fn parse_max_bits(s: &str) -> Result<(Dtype, f64), String> {
    let (d, b) = s
        .split_once('=')
        .ok_or_else(|| format!("expected DTYPE=BITS, e.g. f16=5.5, got {s:?}"))?;
    let d: Dtype = d.trim().parse()?;
    let b: f64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number of bits"))?;
    if b.is_nan() || b < 0.0 {
        return Err(format!("bits must be >= 0, got {b}"));
    }
    Ok((d, b))
}

#[derive(Args, Clone)]
struct CampaignArgs {
    /// Loss id (repeatable; default: every loss with a kernel).
    #[arg(long = "loss")]
    losses: Vec<String>,
    /// Dtype: f32, f16, bf16 (repeatable; default: all three).
    #[arg(long = "dtype")]
    dtypes: Vec<Dtype>,
    /// Cases per loss × dtype (default: 20000 for verify, 10000 for report; or $LOSSCHECK_CASES).
    #[arg(long)]
    cases: Option<u64>,
    /// Campaign seed: the same seed gives the same cases and results.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    campaign: CampaignArgs,
    /// Output directory.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// A first look: 500 kernel cases, 200 per zoo entry, 16-point sweeps (explicit options
    /// still apply).
    #[arg(long)]
    quick: bool,
    /// Cases per zoo entry × dtype (default 2000; 0: no zoo baselines).
    #[arg(long)]
    zoo_cases: Option<u64>,
    /// Points per breakdown sweep (default 40).
    #[arg(long)]
    sweep_points: Option<usize>,
    /// Where the exhaustive certificates are read from (written by `losscheck exhaustive`; the
    /// report does not re-run them).
    #[arg(long, default_value = "reports/exhaustive")]
    certificates: PathBuf,
    /// Run only the K-th of N shares of every campaign (case indices i with i mod N = K) and
    /// write OUT/shard-K-of-N.json instead of the report; `losscheck merge` makes the report
    /// from the N shard files (docs/distributed.md).
    #[arg(long, value_name = "K/N", value_parser = exhaustive::Shard::parse)]
    shard: Option<exhaustive::Shard>,
    /// Continue an interrupted run: campaigns already recorded in OUT/.checkpoint/ (each is
    /// recorded there as it finishes) are read, not re-run. Same options needed; a record made
    /// with other settings is ignored.
    #[arg(long)]
    resume: bool,
    /// An external implementation side by side with the kernels and the zoo: `exec:CMD`, a
    /// program speaking the exec protocol (e.g. `exec:python3 adapters/torch_adapter.py
    /// --device cpu`); repeatable. Each runs every report loss × dtype it declares, with the
    /// zoo's case count; its own tables go to OUT/peers/<name and version>.md and .json.
    #[arg(long = "subject", value_name = "exec:CMD")]
    peers: Vec<String>,
}

#[derive(Args)]
struct MergeArgs {
    /// The shard files of one sharded run (`losscheck report --shard K/N`), all N of them; with
    /// --fuzz, the N output directories of `losscheck fuzz --shard K/N`.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Merge fuzz shards (directories with shard.json and findings.jsonl) instead of report
    /// shards.
    #[arg(long)]
    fuzz: bool,
    /// Output directory of the merged report (default: reports; with --fuzz: fuzz-out).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the exhaustive certificates are read from.
    #[arg(long, default_value = "reports/exhaustive")]
    certificates: PathBuf,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    campaign: CampaignArgs,
    /// The subject: `kernels` (the built-in kernels), `zoo:NAME`, or `exec:CMD` (a program
    /// speaking the exec protocol: the replay of a report peer's case).
    #[arg(long, default_value = "kernels")]
    subject: String,
    /// Replay only case number INDEX of the campaign (needs exactly one --loss and --dtype).
    #[arg(long)]
    index: Option<u64>,
    /// Print the campaign statistics as JSON.
    #[arg(long)]
    json: bool,
}

/// A closed stdout (`losscheck list | head`) ends the program quietly, as it ends other Unix
/// tools, instead of a panic in `println!`: SIGPIPE back to its default action. Only for the
/// commands that start no subject process: the fuzzer and the exec targets must see a dead
/// subject's pipe as an error (EPIPE) and report it, not be killed by it.
fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: sets a signal's disposition, before this program starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Command::List { .. } | Command::Merge(_)) {
        quiet_on_closed_stdout();
    }
    let r = match cli.cmd {
        Command::List { json } => cmd_list(json),
        Command::Eval {
            case,
            compact,
            target,
        } => cmd_eval(case, compact, &target),
        Command::Verify(a) => cmd_verify(a),
        Command::Report(a) => cmd_report(a),
        Command::Fuzz(a) => cmd_fuzz(a),
        Command::Serve { subject } => cmd_serve(&subject),
        Command::Exhaustive(a) => cmd_exhaustive(a),
        Command::Merge(a) => cmd_merge(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("losscheck: {e}");
            ExitCode::from(2)
        }
    }
}

// ------------------------------------------------------------------------------------------
// list

fn dims_text(d: Dims) -> String {
    match d {
        Dims::Elementwise => "*".into(),
        Dims::ElementwiseOrLast => "* | [C]".into(),
        Dims::Named(s) => format!("[{}]", s.join(",")),
    }
}

fn default_text(d: PDefault) -> String {
    match d {
        PDefault::Float(x) => format!("{x}"),
        PDefault::Int(i) => i.to_string(),
        PDefault::Bool(b) => b.to_string(),
        PDefault::Str(s) => s.to_string(),
        PDefault::None => "none".into(),
    }
}

fn kind_text(k: InputKind) -> String {
    match k {
        InputKind::Float(d) => format!("float {d:?}").to_lowercase(),
        InputKind::ClassId => "class id".into(),
        InputKind::ClassIdOrSoft => "class id | soft".into(),
        InputKind::Sign => "±1".into(),
        InputKind::Binary => "0/1".into(),
        InputKind::Mask => "mask 0/1".into(),
    }
}

fn cmd_list(as_json: bool) -> Result<ExitCode, String> {
    if as_json {
        let v: Vec<Value> = catalogue::CATALOGUE
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "family": s.family.name(),
                    "structure": format!("{:?}", s.structure).to_lowercase(),
                    "formula": s.formula,
                    "inputs": s.inputs.iter().map(|i| json!({"name": i.name, "kind": kind_text(i.kind), "optional": i.optional, "doc": i.doc})).collect::<Vec<_>>(),
                    "layouts": s.layouts.iter().map(|l| json!({"name": l.name, "dims": l.dims.iter().map(|(n, d)| (n.to_string(), json!(dims_text(*d)))).collect::<Map<_,_>>(), "rows": dims_text(l.rows)})).collect::<Vec<_>>(),
                    "params": s.params.iter().map(|p| json!({"name": p.name, "kind": p.kind.name(), "default": p.default.to_value().to_json(), "domain": p.domain.describe(), "doc": p.doc})).collect::<Vec<_>>(),
                    "reductions": s.reductions().iter().map(|r| r.name()).collect::<Vec<_>>(),
                    "grads": s.grads,
                    "kernel": losscheck::kernels::implemented(s.id),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(v)).unwrap()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<15} {:<44} {:<40} grads",
        "loss", "family", "inputs", "params (default)"
    );
    for s in catalogue::CATALOGUE {
        let inputs: Vec<String> = s
            .inputs
            .iter()
            .filter(|i| !matches!(i.name, "weight" | "mask" | "cotangent"))
            .map(|i| {
                let d = s.layouts[0]
                    .dims
                    .iter()
                    .find(|(n, _)| *n == i.name)
                    .map(|(_, d)| dims_text(*d))
                    .unwrap_or_default();
                format!(
                    "{}{}{}",
                    i.name,
                    if d == "*" { String::new() } else { d },
                    if i.optional { "?" } else { "" }
                )
            })
            .collect();
        let params: Vec<String> = s
            .params
            .iter()
            .map(|p| format!("{}={}", p.name, default_text(p.default)))
            .collect();
        let mark = if losscheck::kernels::implemented(s.id) {
            ""
        } else {
            "  (no kernel yet)"
        };
        println!(
            "{:<18} {:<15} {:<44} {:<40} {}{}",
            s.id,
            s.family.name(),
            inputs.join(" "),
            params.join(" "),
            s.grads.join(","),
            mark
        );
    }
    println!("\n`*`: any shape, the same for every input; `?`: optional. Every loss but cross_entropy and nll also takes weight? and mask?.");
    println!("Reductions: none, sum, mean (default); sequence_mean for cross_entropy on [B,T,C].");
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------------------------
// eval

fn enclosure_json(e: &Exact) -> Value {
    let (lo, hi) = e.enclosure.to_decimal_strings();
    json!([lo, hi])
}

fn rounded_response(case: &Case, o: &OracleOutput) -> Response {
    let value = Tensor::float(
        case.out_dtype,
        o.value_shape.clone(),
        o.value.iter().map(|e| e.rounded).collect(),
    );
    let grad = o
        .grads
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Tensor::float(
                    case.dtype,
                    o.grad_shapes[k].clone(),
                    v.iter().map(|e| e.rounded).collect(),
                ),
            )
        })
        .collect();
    Response {
        id: case.id,
        value,
        grad,
    }
}

fn answer_json(case: &Case, a: &Answer) -> Value {
    match a {
        Ok(Ok(r)) => r.to_json(),
        Ok(Err(e)) => e.to_json(case.id),
        Err(f) => json!({"fault": f.verdict.name(), "message": f.message, "stderr": f.stderr}),
    }
}

fn cmd_eval(
    path: Option<PathBuf>,
    compact: bool,
    target: &SubjectArgs,
) -> Result<ExitCode, String> {
    let text = match &path {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            s
        }
    };
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("the case is not valid JSON: {e}"))?;
    let (case, warnings) = Case::from_json(&v).map_err(|e| e.message)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut out = Map::new();
    out.insert("canonical_case".into(), case.to_json());
    out.insert("warnings".into(), json!(warnings));
    let oracle = oracles::evaluate(&case);
    // The subject: the built-in kernels unless --exec / --subject names another.
    let (key, subject): (&str, Box<dyn Subject>) =
        if target.exec.is_some() || target.subject.is_some() {
            ("response", open_subject(target)?)
        } else {
            ("kernel", Box::new(Kernels))
        };
    if key == "response" {
        out.insert("subject".into(), json!(subject.name()));
    }
    let answer: Answer = subject.answer(&case);
    let kernel_json = answer_json(&case, &answer);
    let kernel = match &answer {
        Ok(a) => a.clone(),
        Err(f) => Err(losscheck::core::LossError::internal(format!(
            "{}: {}",
            f.verdict, f.message
        ))),
    };
    let mut code = ExitCode::SUCCESS;
    match &oracle {
        Err(e) => {
            out.insert("oracle".into(), e.to_json(case.id));
            out.insert(key.into(), kernel_json);
            if e.kind == losscheck::core::ErrorKind::InvalidInput {
                // Invalid input: the kernel must refuse it too.
                let refused =
                    matches!(&kernel, Err(k) if k.kind == losscheck::core::ErrorKind::InvalidInput);
                out.insert(
                    "judgement".into(),
                    json!({"invalid_input": true, "kernel_refused": refused}),
                );
                if !refused {
                    code = ExitCode::from(1);
                }
            }
        }
        Ok(o) => {
            let mut enc = Map::new();
            enc.insert(
                "value".into(),
                Value::Array(o.value.iter().map(enclosure_json).collect()),
            );
            let g: Map<String, Value> = o
                .grads
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Value::Array(v.iter().map(enclosure_json).collect()),
                    )
                })
                .collect();
            enc.insert("grad".into(), Value::Object(g));
            let hard: Vec<Value> = o
                .value
                .iter()
                .enumerate()
                .filter(|(_, e)| e.hard.is_some())
                .map(|(k, e)| json!({"output": "value", "index": k, "neighbours": [encode_f64(e.hard.unwrap().0), encode_f64(e.hard.unwrap().1)]}))
                .collect();
            let kappa = o.value.iter().map(|e| e.kappa).fold(1.0, f64::max);
            out.insert(
                "oracle".into(),
                json!({"enclosure": enc, "rounded": rounded_response(&case, o).to_json(), "precision": o.precision,
                       "hard_cases": hard, "kappa": kappa,
                       "kinks": o.kinks.iter().map(|k| json!({"primitive": k.primitive, "members": k.members.iter().map(|m| json!({"input": m.input, "index": m.index, "lo": encode_f64(m.lo.rounded), "hi": encode_f64(m.hi.rounded)})).collect::<Vec<_>>()})).collect::<Vec<_>>()}),
            );
            out.insert(key.into(), kernel_json);
            let rep = match &answer {
                Ok(a) => compare::judge(&case, o, a),
                Err(f) => campaign::fault_report(&case, f),
            };
            let mut j = Map::new();
            for oj in &rep.outputs {
                j.insert(
                    oj.output.clone(),
                    json!({"ulps": encode_f64(oj.ulps), "bits": oj.bits, "allowed_ulps": oj.allowed, "worst_index": oj.index,
                           "verdict": oj.verdict.map(|v| v.name())}),
                );
            }
            j.insert(
                "verdicts".into(),
                json!(rep.verdicts.iter().map(|v| v.name()).collect::<Vec<_>>()),
            );
            j.insert(
                "facts".into(),
                json!(rep
                    .facts
                    .iter()
                    .map(|f| format!("{}: {}", f.name, f.detail))
                    .collect::<Vec<_>>()),
            );
            if let Some(e) = &rep.error {
                j.insert("error".into(), json!(e));
            }
            out.insert("judgement".into(), Value::Object(j));
            if !rep.verdicts.is_empty() {
                code = ExitCode::from(1);
            }
        }
    }
    let v = Value::Object(out);
    println!("{}", if compact { v.to_string() } else { pretty(&v) });
    Ok(code)
}

/// Indented JSON with arrays of numbers and strings kept on one line (readable tensors).
fn pretty(v: &Value) -> String {
    fn go(v: &Value, indent: usize, out: &mut String) {
        let pad = "  ".repeat(indent + 1);
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push_str("{\n");
                for (k, (key, val)) in m.iter().enumerate() {
                    out.push_str(&format!("{pad}{}: ", Value::String(key.clone())));
                    go(val, indent + 1, out);
                    out.push_str(if k + 1 < m.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            Value::Array(a)
                if a.iter().any(|x| {
                    x.is_object() || x.is_array() && x.as_array().is_some_and(|y| y.len() > 2)
                }) =>
            {
                out.push_str("[\n");
                for (k, val) in a.iter().enumerate() {
                    out.push_str(&pad);
                    go(val, indent + 1, out);
                    out.push_str(if k + 1 < a.len() { ",\n" } else { "\n" });
                }
                out.push_str(&"  ".repeat(indent));
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    go(v, 0, &mut s);
    s
}

// ------------------------------------------------------------------------------------------
// verify / report

fn subject_named(name: &str) -> Result<Box<dyn Subject>, String> {
    match name {
        "kernels" => Ok(Box::new(Kernels)),
        other => losscheck::zoo::subject(other).ok_or_else(|| {
            format!(
                "unknown subject {other:?}: `kernels`, or a zoo entry ({})",
                losscheck::zoo::names().join(", ")
            )
        }),
    }
}

fn plan(a: &CampaignArgs, subject: &dyn Subject) -> Result<Vec<(String, Dtype)>, String> {
    let losses: Vec<String> = if a.losses.is_empty() {
        catalogue::ids()
            .filter(|l| losscheck::kernels::implemented(l))
            .map(String::from)
            .collect()
    } else {
        for l in &a.losses {
            if catalogue::spec(l).is_none() {
                return Err(format!(
                    "unknown loss {l:?}; `losscheck list` shows the catalogue"
                ));
            }
        }
        a.losses.clone()
    };
    let dtypes = if a.dtypes.is_empty() {
        Dtype::ALL.to_vec()
    } else {
        a.dtypes.clone()
    };
    let mut v = Vec::new();
    for l in &losses {
        if !losscheck::check::gen::supported(l) {
            eprintln!("note: no generators yet for {l}; skipped");
            continue;
        }
        for &d in &dtypes {
            if subject.supports(l, d) {
                v.push((l.clone(), d));
            } else {
                eprintln!(
                    "note: {} does not implement {l} in {d}; skipped",
                    subject.name()
                );
            }
        }
    }
    Ok(v)
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
fn progress_bar(len: u64) -> ProgressBar {
    report::progress_bar(true, len, "cases")
}

fn run_all(a: &CampaignArgs, subject: &dyn Subject) -> Result<Vec<Stats>, String> {
    let cases = a
        .cases
        .unwrap_or_else(|| campaign::cases_from_env(campaign::DEFAULT_CASES));
    let jobs = plan(a, subject)?;
    let bar = progress_bar(cases * jobs.len() as u64);
    let mut all = Vec::new();
    for (loss, dtype) in jobs {
        bar.set_message(format!("{loss} {dtype}"));
        let cfg = Config::new(&loss, dtype, cases, a.seed);
        let st = campaign::run(&cfg, subject, &|| bar.inc(1));
        // On a terminal each campaign's line appears as it ends; the summary on stdout follows.
        if !bar.is_hidden() {
            bar.println(campaign::summary_line(&st));
        }
        all.push(st);
    }
    bar.finish_and_clear();
    Ok(all)
}

/// For each campaign, one finding per distinct verdict, shrunk to a minimal case, with the
/// command that replays the original.
fn print_failures(all: &[Stats], subject: &dyn Subject) {
    for st in all {
        let mut seen = Vec::new();
        for f in &st.failures {
            let key = f.verdicts.first().copied();
            if seen.contains(&key) || seen.len() >= 5 {
                continue;
            }
            seen.push(key);
            let what = if f.verdicts.is_empty() {
                "oracle error".to_string()
            } else {
                f.verdicts
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let cfg = Config::new(&st.loss, st.dtype, st.cases, st.seed);
            let small = campaign::shrink_finding(&cfg, subject, f, 500);
            println!(
                "\n{} {} case {}: {} (value {:.2} bits, grad {:.2} bits){}\n  minimal case: {}\n  replay:       {}",
                st.loss,
                st.dtype,
                f.index,
                what,
                f.value_bits,
                f.grad_bits,
                f.report.error.as_ref().map(|e| format!(" — {e}")).unwrap_or_default(),
                small.to_json(),
                f.replay
            );
        }
    }
}

fn cmd_verify(a: VerifyArgs) -> Result<ExitCode, String> {
    let subject = match a.subject.strip_prefix("exec:") {
        Some(cmd) => open_subject(&SubjectArgs {
            exec: Some(cmd.to_string()),
            subject: None,
            timeout_ms: 10_000,
            workers: None,
        })?,
        None => subject_named(&a.subject)?,
    };
    if let Some(index) = a.index {
        let ([loss], [dtype]) = (a.campaign.losses.as_slice(), a.campaign.dtypes.as_slice()) else {
            return Err("--index needs exactly one --loss and one --dtype".into());
        };
        let cfg = Config::new(loss, *dtype, index + 1, a.campaign.seed);
        let o = campaign::run_one(&cfg, subject.as_ref(), index);
        let case_json = o.case.to_json();
        let mut out = json!({"case": case_json, "replay_eval": "losscheck eval --case FILE (with the case above in FILE)"});
        if let Some(e) = &o.oracle_error {
            out["oracle_error"] = json!(e);
        }
        let mut code = ExitCode::SUCCESS;
        if let Some(r) = &o.report {
            out["verdicts"] = json!(r.verdicts.iter().map(|v| v.name()).collect::<Vec<_>>());
            out["outputs"] = json!(r
                .outputs
                .iter()
                .map(|x| json!({"output": x.output, "index": x.index, "actual": encode_f64(x.actual), "expected": encode_f64(x.expected), "ulps": encode_f64(x.ulps), "bits": x.bits, "verdict": x.verdict.map(|v| v.name())}))
                .collect::<Vec<_>>());
            if !r.verdicts.is_empty() {
                code = ExitCode::from(1);
            }
        }
        println!("{}", pretty(&out));
        return Ok(code);
    }
    let all = run_all(&a.campaign, subject.as_ref())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(all.iter().map(Stats::to_json).collect()))
                .unwrap()
        );
    } else {
        for st in &all {
            println!("{}", campaign::summary_line(st));
        }
        print_failures(&all, subject.as_ref());
    }
    let findings: u64 = all.iter().map(|s| s.findings() + s.oracle_errors).sum();
    println!(
        "\n{} campaigns, {} cases, {} findings",
        all.len(),
        all.iter().map(|s| s.cases).sum::<u64>(),
        findings
    );
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cmd_report(a: ReportArgs) -> Result<ExitCode, String> {
    let c = &a.campaign;
    let mut opts = if a.quick {
        report::Options::quick(c.seed)
    } else {
        report::Options::new(
            c.seed,
            campaign::cases_from_env(report::DEFAULT_REPORT_CASES),
        )
    };
    if let Some(n) = c.cases {
        opts.cases = n;
    }
    if let Some(n) = a.zoo_cases {
        opts.zoo_cases = n;
    }
    if let Some(n) = a.sweep_points {
        opts.sweep.points = n;
    }
    opts.losses = c.losses.clone();
    opts.dtypes = c.dtypes.clone();
    plan(c, &Kernels)?; // validates --loss, notes what is skipped
    let checkpoints = a.out.join(".checkpoint");
    if !a.resume {
        let _ = std::fs::remove_dir_all(&checkpoints);
    }
    opts.checkpoint = Some(checkpoints.clone());
    opts.resume = a.resume;
    if let Some(shard) = a.shard {
        if !a.peers.is_empty() {
            return Err("--subject exec:CMD is not available with --shard (run the peers in an unsharded report)".into());
        }
        opts.shard = shard;
        let doc = report::run_shard(&opts);
        let file = a
            .out
            .join(format!("shard-{}-of-{}.json", shard.index, shard.count));
        report::write_atomic(&file, &(doc.to_string() + "\n"))?;
        let _ = std::fs::remove_dir_all(&checkpoints);
        println!(
            "wrote {} (shard {} of a sharded report: `losscheck merge {}/shard-*-of-{}.json` makes the report)",
            file.display(),
            shard.text(),
            a.out.display(),
            shard.count
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut peers: Vec<Box<dyn Subject>> = Vec::new();
    for p in &a.peers {
        let cmd = p.strip_prefix("exec:").ok_or_else(|| {
            format!("--subject {p:?}: a report peer is exec:CMD (the kernels and the zoo are always in the report)")
        })?;
        peers.push(open_subject(&SubjectArgs {
            exec: Some(cmd.to_string()),
            subject: None,
            timeout_ms: 10_000,
            workers: None,
        })?);
    }
    let peer_refs: Vec<(&dyn Subject, String)> = peers
        .iter()
        .zip(&a.peers)
        .map(|(b, p)| (b.as_ref(), exec::shell_quote(p)))
        .collect();
    let r = report::run_with_peers(&opts, &peer_refs);
    let code = write_report(r, &a.out, &a.certificates)?;
    let _ = std::fs::remove_dir_all(&checkpoints);
    Ok(code)
}

fn cmd_merge(a: MergeArgs) -> Result<ExitCode, String> {
    let read = |p: &PathBuf| -> Result<serde_json::Value, String> {
        let t = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        serde_json::from_str(&t).map_err(|e| format!("{}: not JSON: {e}", p.display()))
    };
    if a.fuzz {
        let out = a.out.clone().unwrap_or_else(|| PathBuf::from("fuzz-out"));
        let shards = a
            .shards
            .iter()
            .map(|d| read(&d.join("shard.json")))
            .collect::<Result<Vec<_>, String>>()?;
        let findings: Vec<PathBuf> = a
            .shards
            .iter()
            .map(|d| d.join("findings.jsonl"))
            .filter(|f| f.exists())
            .collect();
        let r = fuzz::merge(&shards, Some(&out), &findings)?;
        print!("{}", r.terminal());
        return Ok(ExitCode::from(r.exit_code()));
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("reports"));
    let shards = a
        .shards
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, String>>()?;
    let r = report::merge(&shards, true)?;
    write_report(r, &out, &a.certificates)
}

/// Add the certificates, write the report under `out`, print its summary; exit 1 on kernel
/// findings.
fn write_report(
    mut r: report::Report,
    out: &std::path::Path,
    certificates: &std::path::Path,
) -> Result<ExitCode, String> {
    // the committed exhaustive certificates (`losscheck exhaustive`), read, not re-run
    let certs = exhaustive::report_section(certificates);
    if !certs.is_empty() {
        r.sections.push(report::Section::new(
            exhaustive::REPORT_SECTION_TITLE,
            &certs,
        ));
    }
    let vm = losscheck::check::vmath_cert::report_section(&certificates.join("vmath"));
    if !vm.is_empty() {
        r.sections.push(report::Section::new(
            losscheck::check::vmath_cert::REPORT_SECTION_TITLE,
            &vm,
        ));
    }
    let written = r.write(out)?;
    for st in r.kernels.iter().chain(&r.zoo) {
        println!("{:<40} {}", st.subject, campaign::summary_line(st));
    }
    print_failures(&r.kernels, &Kernels);
    for v in report::bar_violations(&r) {
        println!("bar: {v}");
    }
    let t = &r.timings;
    println!(
        "\nseconds: kernels {:.1}, zoo {:.1}, sweeps {:.1}, counterexamples {:.1}",
        t.kernels, t.zoo, t.sweeps, t.counterexamples
    );
    let findings = r.kernel_findings();
    println!(
        "wrote {} files under {}; {} findings (kernels)",
        written.len(),
        out.display(),
        findings
    );
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ------------------------------------------------------------------------------------------
// fuzz / serve

/// The subject named by `--exec` / `--subject` (a set-up error when it does not start).
fn open_subject(t: &SubjectArgs) -> Result<Box<dyn Subject>, String> {
    exec::kill_children_on_signal();
    match (&t.exec, &t.subject) {
        (Some(cmd), _) => {
            let mut o = ExecOptions::new(cmd);
            o.timeout = std::time::Duration::from_millis(t.timeout_ms);
            o.handshake_timeout = o.handshake_timeout.max(o.timeout);
            if let Some(w) = t.workers {
                o.workers = w.max(1);
            }
            let s = ExecSubject::start(o)?;
            for w in s.warnings() {
                eprintln!("warning: {w}");
            }
            Ok(Box::new(s))
        }
        (None, Some(name)) => subject_named(name),
        (None, None) => Err("name the subject: --exec CMD or --subject kernels|zoo:NAME".into()),
    }
}

/// How a replay command names the subject.
fn replay_subject(t: &SubjectArgs) -> String {
    match (&t.exec, &t.subject) {
        (Some(cmd), _) => {
            let mut s = format!("--exec {}", exec::shell_quote(cmd));
            if t.timeout_ms != 10_000 {
                s += &format!(" --timeout-ms {}", t.timeout_ms);
            }
            s
        }
        (None, Some(n)) => format!("--subject {}", exec::shell_quote(n)),
        (None, None) => String::new(),
    }
}

/// indicatif on a terminal, nothing otherwise.
struct Bar(ProgressBar);

impl fuzz::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn campaign(&self, loss: &str, dtype: Dtype) {
        self.0.set_message(format!("{loss} {dtype}"));
    }
    fn tick(&self) {
        self.0.inc(1);
    }
    fn println(&self, line: &str) {
        if !self.0.is_hidden() {
            self.0.println(line);
        }
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn cmd_fuzz(a: FuzzArgs) -> Result<ExitCode, String> {
    exec::kill_children_on_signal();
    let baseline = match &a.baseline {
        Some(p) => fuzz::Baseline::load(p)?,
        None => fuzz::Baseline::default(),
    };
    let mut max_bits = fuzz::default_max_bits();
    for (d, b) in &a.max_bits {
        max_bits.insert(*d, *b);
    }
    let subject = open_subject(&a.target)?;
    let settings = fuzz::Settings {
        losses: a.losses.clone(),
        dtypes: a.dtypes.clone(),
        cases: a.cases,
        seed: a.seed,
        max_bits,
        strict_policy: a.strict_policy,
        baseline,
        out: Some(a.out.clone()),
        replay_subject: replay_subject(&a.target),
        shard: a.shard.unwrap_or(exhaustive::Shard::ALL),
        ..fuzz::Settings::default()
    };
    let (jobs, _) = fuzz::plan(subject.as_ref(), &settings)?;
    if jobs.is_empty() {
        return Err(format!(
            "nothing to fuzz: {} supports none of the requested losses × dtypes that have generators",
            subject.name()
        ));
    }
    let bar = progress_bar(0);
    let mut report = fuzz::run(subject.as_ref(), &settings, &Bar(bar))?;
    // An exec subject's stderr goes into summary.md, and its tail to the terminal on faults.
    let stderr = subject.stderr_tail();
    let faults: u64 = report
        .campaigns
        .iter()
        .flat_map(|c| &c.findings)
        .filter(|(k, _)| matches!(k.as_str(), "crash" | "hang" | "protocol"))
        .map(|(_, n)| n)
        .sum();
    report.stderr = stderr.clone();
    fuzz::rewrite_summary(&mut report)?;
    print!("{}", report.terminal());
    if faults > 0 {
        if let Some(e) = stderr.filter(|e| !e.trim().is_empty()) {
            let lines: Vec<&str> = e.lines().collect();
            println!("\nthe subject's stderr (last lines):");
            for l in &lines[lines.len().saturating_sub(15)..] {
                println!("  {l}");
            }
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn cmd_serve(name: &str) -> Result<ExitCode, String> {
    let subject = subject_named(name)?;
    let caps = match name {
        "kernels" => Capabilities::full(
            "losscheck kernels",
            catalogue::ids().filter(|l| losscheck::kernels::implemented(l)),
        ),
        other => {
            let e =
                losscheck::zoo::entry(other).ok_or_else(|| format!("unknown subject {other:?}"))?;
            Capabilities::full(&format!("zoo:{}", e.name), [e.loss])
        }
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    exec::serve(subject.as_ref(), &caps, stdin.lock(), stdout.lock())
        .map_err(|e| format!("serve: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------------------------
// exhaustive

fn cmd_exhaustive(a: ExhaustiveArgs) -> Result<ExitCode, String> {
    if !a.functions.is_empty() {
        return cmd_exhaustive_vmath(&a);
    }
    let subject = subject_named(&a.subject)?;
    let losses: Vec<String> = if a.all {
        exhaustive::elementwise_losses()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        a.losses.clone()
    };
    let dtypes = if a.dtypes.is_empty() {
        vec![Dtype::F16, Dtype::Bf16]
    } else {
        a.dtypes.clone()
    };
    // every configuration is checked before anything runs
    let mut cfgs = Vec::new();
    for l in &losses {
        for &d in &dtypes {
            cfgs.push(exhaustive::Config::new(l, d, a.shard)?);
        }
    }
    let commit = exhaustive::git_commit(Path::new("."));
    let mut findings = 0;
    for cfg in &cfgs {
        let k = exhaustive::combinations(&cfg.loss, cfg.dtype)?.len() as u64;
        let r = cfg.shard.range(cfg.dtype);
        let bar = progress_bar((r.end - r.start) * k);
        bar.set_message(format!("{} {}", cfg.loss, cfg.dtype));
        let mut cert = exhaustive::run(cfg, subject.as_ref(), &|n| bar.inc(n))?;
        bar.finish_and_clear();
        cert.commit = commit.clone();
        let path = cert.write(&a.out)?;
        println!("{}  [{}]", cert.summary_line(), path.display());
        findings += cert.total.findings();
    }
    write_atomic(&a.out.join("README.md"), &exhaustive::readme(&a.out))?;
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `exhaustive --function F`: certificates of `kernels::vmath` (`check::vmath_cert`).
fn cmd_exhaustive_vmath(a: &ExhaustiveArgs) -> Result<ExitCode, String> {
    use losscheck::check::vmath_cert::{self, Function};
    let functions = a
        .functions
        .iter()
        .map(|f| Function::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let dtypes = if a.dtypes.is_empty() {
        vec![Dtype::F16, Dtype::Bf16]
    } else {
        a.dtypes.clone()
    };
    let shard = a.shard.unwrap_or(exhaustive::Shard::ALL);
    if dtypes.contains(&Dtype::F32) && a.shard.is_none() {
        return Err(
            "f32 has 2^32 patterns (hours of MPFR): give --shard K/N and run the N shards as an array job (docs/distributed.md), or --shard 0/1 for all of it on this machine"
                .into(),
        );
    }
    let dir = a.out.join("vmath");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut bad = 0;
    for &f in &functions {
        for &d in &dtypes {
            let r = shard.range(d);
            let bar = progress_bar(r.end - r.start);
            bar.set_message(format!("{} {d}", f.name()));
            let cert = vmath_cert::run(f, d, shard, &|n| bar.inc(n));
            bar.finish_and_clear();
            let path = dir.join(cert.file_name());
            let text = serde_json::to_string_pretty(&cert.to_json()).map_err(|e| e.to_string())? + "\n";
            write_atomic(&path, &text)?;
            println!("{}  [{}]", cert.summary_line(), path.display());
            bad += cert.violations;
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
