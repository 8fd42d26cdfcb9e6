//! Exhaustive certificates for the elementwise losses: every bit pattern of the *primary input*
//! (the loss's first differentiable input) × a listed set of values of the other inputs and of
//! the params, each element judged against the oracle with the ordinary judge
//! ([`compare::judge`]) — value and every gradient, reduction `none`, one loss per element.
//!
//! In f16 and bf16 the 65,536 patterns are all checked in one run (well under a minute per loss
//! and dtype on two cores); in f32 the 2³² patterns are split into `N` contiguous ranges
//! ([`Shard`]) checked one at a time — a long campaign, not part of CI.
//!
//! **How it is fast without being weaker.** Elementwise terms are independent, so the patterns
//! of one combination of other values are evaluated as cases of [`CHUNK`] elements (kernel and
//! oracle alike, chunks in parallel with rayon); the oracle's adaptive precision decides each
//! element ([`losscheck_oracles::evaluate_elementwise`]: 64 bits first, doubled — for the
//! undecided elements only — while an output's enclosure does not round to a single dtype
//! value, up to the cap where it is a hard case), and each element is then judged as
//! its own `N = 1` case: the chunk's oracle output and the subject's answer are split into
//! per-element ones and handed to [`compare::judge`] with the element's own case. Correct
//! rounding is unique, so splitting changes no reference value; a chunk the subject or the
//! oracle rejects as a whole is re-run element by element.
//!
//! Patterns of the primary input outside its domain (only `bce`'s `prob` has one: [0, 1]; NaN
//! is in every domain) are invalid input: each is sent alone and must be rejected; one that is
//! accepted is the `invalid_accepted` fact (DESIGN.md: a fact, not a finding).
//!
//! Every NaN bit pattern is checked, but cases carry values as `f64`, so all NaN payloads reach
//! the kernels as the same NaN; the certificate counts them apart (`nan_patterns`).
//!
//! A [`Certificate`] is written as JSON, one per loss × dtype (× shard), to
//! `reports/exhaustive/<loss>-<dtype>.json` ([`Certificate::file_name`]); [`report_section`]
//! and [`readme`] summarise the committed certificates.

use crate::check::compare::{self, CaseReport, Verdict};
use crate::check::subject::Subject;
use losscheck_core::catalogue::{self, Domain, InputKind, LossSpec, Structure};
use losscheck_core::rng::SplitMix64;
use losscheck_core::tensor::{decode_f64, encode_f64};
use losscheck_core::{Case, Dtype, ErrorKind, LossError, ParamValue, Reduction, Response, Tensor};
use losscheck_oracles::{Exact, KinkGroup, OracleOutput};
use rayon::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

/// Elements per case sent to the subject and the oracle.
pub const CHUNK: usize = 1024;

/// How many counterexamples a certificate keeps per verdict (and per fact).
pub const KEEP_EXAMPLES: usize = 3;

/// Blocks a 16-bit certificate reports separately (contiguous pattern ranges of 4,096): a run
/// of `--shard K/16` reproduces block K.
pub const BLOCKS: u64 = 16;

/// The schema tag of a certificate.
pub const SCHEMA: &str = "losscheck-exhaustive/1";

// ---------------------------------------------------------------------------------------------
// What is checked.

/// The first differentiable input of a loss: the one whose bit patterns are enumerated.
pub fn primary_input(spec: &LossSpec) -> &'static str {
    spec.grads[0]
}

/// Is the loss elementwise (and so eligible for an exhaustive certificate)?
pub fn eligible(loss: &str) -> Result<&'static LossSpec, String> {
    let spec = catalogue::spec(loss)
        .ok_or_else(|| format!("unknown loss {loss:?}; `losscheck list` shows the catalogue"))?;
    if spec.structure != Structure::Elementwise {
        return Err(format!(
            "{loss} is not an elementwise loss (its terms couple a row), so it has no exhaustive \
             certificate; elementwise losses: {}",
            elementwise_losses().join(", ")
        ));
    }
    Ok(spec)
}

/// The elementwise losses of the catalogue, in catalogue order.
pub fn elementwise_losses() -> Vec<&'static str> {
    catalogue::CATALOGUE
        .iter()
        .filter(|s| s.structure == Structure::Elementwise)
        .map(|s| s.id)
        .collect()
}

pub use crate::check::shard::Shard;

/// One combination of the other inputs' values and of the params (the primary input takes
/// every pattern). Float values are exact in the dtype; params are binary64.
#[derive(Clone, Debug, PartialEq)]
pub struct Combo {
    /// Other inputs (required and optional) as scalars: float values or i64 labels.
    pub inputs: BTreeMap<String, Scalar>,
    /// Params that differ from the catalogue defaults.
    pub params: BTreeMap<String, ParamValue>,
}

/// One value of an input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F(f64),
    I(i64),
}

impl Scalar {
    fn to_json(self) -> Value {
        match self {
            Scalar::F(x) => encode_f64(x),
            Scalar::I(i) => json!(i),
        }
    }
}

impl Combo {
    /// `target=0.5, delta=100` (inputs then params).
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = self
            .inputs
            .iter()
            .map(|(k, v)| match v {
                Scalar::F(x) => format!("{k}={x:?}"),
                Scalar::I(i) => format!("{k}={i}"),
            })
            .collect();
        parts.extend(self.params.iter().map(|(k, v)| format!("{k}={v}")));
        parts.join(", ")
    }
    pub fn to_json(&self) -> Value {
        json!({
            "inputs": self.inputs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<Map<_, _>>(),
            "params": self.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<Map<_, _>>(),
        })
    }
}

/// Param settings beyond the defaults checked for each loss ("a couple of extremes"), with
/// extra optional inputs (`pos_weight`) where the loss takes one. Every float is exact in f32.
fn extremes(loss: &str) -> Vec<Vec<(&'static str, Scalar)>> {
    let f = Scalar::F;
    match loss {
        "huber" => vec![vec![("delta", f(0.0078125))], vec![("delta", f(100.0))]],
        "quantile" => vec![
            vec![("tau", f(0.0009765625))],
            vec![("tau", f(0.9990234375))],
            vec![("tau", f(0.25))],
        ],
        "bce" => vec![vec![("log_floor", f(-100.0))]],
        "bce_logits" => vec![vec![("pos_weight", f(3.0))], vec![("pos_weight", f(0.0))]],
        "hinge" => vec![
            vec![("margin", f(0.0))],
            vec![("margin", f(-1.0))],
            vec![("margin", f(100.0))],
        ],
        "focal" => vec![
            vec![("gamma", f(0.0))],
            vec![("gamma", f(0.5))],
            vec![("gamma", f(5.0))],
            vec![("alpha", f(0.25))],
        ],
        "gaussian_nll" => vec![
            vec![("full", Scalar::I(1))],
            vec![("eps", f(0.5))],
            vec![("eps", f(5.960464477539063e-8))],
        ],
        "margin_ranking" => vec![vec![("margin", f(1.0))], vec![("margin", f(-0.5))]],
        "dpo" => vec![
            vec![("beta", f(1.0))],
            vec![("beta", f(0.0009765625))],
            vec![("beta", f(16.0))],
            vec![("label_smoothing", f(0.125))],
            vec![("label_smoothing", f(0.5))],
        ],
        _ => vec![],
    }
}

/// The listed values of one other input: the anchors (0, 1, ½ and one ulp from each, within the
/// input's domain; ±1 for sign labels, 0 and 1 for binary ones; 1 first for a variance), then,
/// when `sample` is set, a few seeded bit-uniform finite values of the dtype in the domain.
fn other_values(
    loss: &str,
    name: &str,
    kind: InputKind,
    dtype: Dtype,
    sample: bool,
) -> Vec<Scalar> {
    let domain = match kind {
        InputKind::Sign => return vec![Scalar::I(1), Scalar::I(-1)],
        InputKind::Binary => return vec![Scalar::I(1), Scalar::I(0)],
        InputKind::Float(d) => d,
        _ => Domain::Any,
    };
    let inside = |x: f64| match domain {
        Domain::UnitInterval => (0.0..=1.0).contains(&x),
        Domain::NonNegative | Domain::Weight => x >= 0.0,
        _ => true,
    };
    let anchors: &[f64] = if domain == Domain::NonNegative {
        &[1.0, 0.0, 0.5]
    } else {
        &[0.0, 1.0, 0.5]
    };
    let mut v: Vec<f64> = Vec::new();
    let add = |x: f64, v: &mut Vec<f64>| {
        if inside(x) && !v.iter().any(|y| y.to_bits() == x.to_bits()) {
            v.push(x);
        }
    };
    for &a in anchors {
        add(a, &mut v);
    }
    for &a in anchors {
        add(dtype.next_down(a), &mut v);
        add(dtype.next_up(a), &mut v);
    }
    if domain == Domain::NonNegative {
        add(f64::INFINITY, &mut v);
    }
    if sample {
        let seed = crate::check::gen::hash_bytes(&[
            b"exhaustive",
            loss.as_bytes(),
            name.as_bytes(),
            dtype.name().as_bytes(),
        ]);
        let mut rng = SplitMix64::new(seed);
        let want = v.len() + 4;
        while v.len() < want {
            let mask = if dtype.width() == 32 {
                u32::MAX as u64
            } else {
                0xffff
            };
            let x = dtype.from_bits((rng.next_u64() & mask) as u32);
            if x.is_finite() {
                // [0, 1] inputs: a random value of the dtype in the unit interval instead
                let x = if domain == Domain::UnitInterval {
                    dtype.round(rng.next_f64())
                } else if domain == Domain::NonNegative {
                    x.abs()
                } else {
                    x
                };
                add(x, &mut v);
            }
        }
    }
    v.into_iter().map(Scalar::F).collect()
}

/// The listed combinations checked for `loss` in `dtype`: (1) each other required input in
/// turn over its listed values ([`other_values`]; the first with a seeded sample too), the
/// others at their first anchor, params at their defaults; (2) each extreme param setting (or
/// optional input) with the first other input at its three first anchors. Deduplicated.
pub fn combinations(loss: &str, dtype: Dtype) -> Result<Vec<Combo>, String> {
    let spec = eligible(loss)?;
    let primary = primary_input(spec);
    let others: Vec<_> = spec
        .required_inputs()
        .filter(|i| i.name != primary)
        .collect();
    let lists: Vec<Vec<Scalar>> = others
        .iter()
        .enumerate()
        .map(|(k, i)| other_values(loss, i.name, i.kind, dtype, k == 0))
        .collect();
    let base: BTreeMap<String, Scalar> = others
        .iter()
        .zip(&lists)
        .map(|(i, l)| (i.name.to_string(), l[0]))
        .collect();
    let mut out: Vec<Combo> = Vec::new();
    let push = |c: Combo, out: &mut Vec<Combo>| {
        if !out.contains(&c) {
            out.push(c);
        }
    };
    for (i, list) in others.iter().zip(&lists) {
        for &x in list {
            let mut inputs = base.clone();
            inputs.insert(i.name.to_string(), x);
            push(
                Combo {
                    inputs,
                    params: BTreeMap::new(),
                },
                &mut out,
            );
        }
    }
    let firsts: Vec<Scalar> = lists
        .first()
        .map(|l| l.iter().take(3).copied().collect())
        .unwrap_or_default();
    for setting in extremes(loss) {
        for &x in &firsts {
            let mut c = Combo {
                inputs: base.clone(),
                params: BTreeMap::new(),
            };
            if let Some(o) = others.first() {
                c.inputs.insert(o.name.to_string(), x);
            }
            for (name, v) in &setting {
                if spec.param(name).is_some() {
                    let pv = match (spec.param(name).unwrap().kind, v) {
                        (catalogue::ParamKind::Bool, Scalar::I(b)) => ParamValue::Bool(*b != 0),
                        (_, Scalar::F(x)) => ParamValue::Float(*x),
                        (_, Scalar::I(i)) => ParamValue::Int(*i),
                    };
                    c.params.insert(name.to_string(), pv);
                } else if spec.input(name).is_some() {
                    c.inputs.insert(name.to_string(), *v);
                } else {
                    return Err(format!("{loss}: no param or input {name:?}"));
                }
            }
            push(c, &mut out);
        }
    }
    if out.is_empty() {
        out.push(Combo {
            inputs: BTreeMap::new(),
            params: BTreeMap::new(),
        });
    }
    Ok(out)
}

/// Is `x` in the domain of the primary input (NaN always is: it propagates)?
fn primary_in_domain(spec: &LossSpec, x: f64) -> bool {
    if x.is_nan() {
        return true;
    }
    match spec.input(primary_input(spec)).map(|i| i.kind) {
        Some(InputKind::Float(Domain::UnitInterval)) => (0.0..=1.0).contains(&x),
        Some(InputKind::Float(Domain::NonNegative)) => x >= 0.0,
        _ => true,
    }
}

/// The case for `combo` with the primary input holding `xs` (reduction `none`, every gradient).
pub fn build_case(loss: &str, dtype: Dtype, combo: &Combo, xs: &[f64]) -> Case {
    let spec = catalogue::spec(loss).expect("known loss");
    let n = xs.len();
    let mut case = Case::new(loss, dtype).expect("known loss");
    case.set_reduction(Reduction::None);
    for (k, v) in &combo.params {
        case.params.insert(k.clone(), v.clone());
    }
    case.inputs.insert(
        primary_input(spec).to_string(),
        Tensor::float(dtype, vec![n], xs.to_vec()),
    );
    for (name, v) in &combo.inputs {
        let t = match *v {
            Scalar::F(x) => Tensor::float(dtype, vec![n], vec![x; n]),
            Scalar::I(i) => Tensor::int(vec![n], vec![i; n]),
        };
        case.inputs.insert(name.clone(), t);
    }
    case
}

// ---------------------------------------------------------------------------------------------
// Splitting a chunk into per-element cases.

/// Element `k` of an elementwise response.
fn element_response(resp: &Response, k: usize) -> Response {
    let one = |t: &Tensor| match t.f() {
        Some(v) => Tensor::float(
            match t.dtype {
                losscheck_core::TensorDtype::Float(d) => d,
                _ => unreachable!(),
            },
            vec![1],
            vec![v[k]],
        ),
        None => t.clone(),
    };
    Response {
        id: resp.id,
        value: one(&resp.value),
        grad: resp.grad.iter().map(|(n, t)| (n.clone(), one(t))).collect(),
    }
}

/// The chunk's oracle output split into one output per element (kink groups go with the element
/// all their members belong to).
fn split_oracle(o: OracleOutput, n: usize) -> Vec<OracleOutput> {
    let mut checked = o.checked.clone();
    checked.row_shape = vec![1];
    checked.rows = 1;
    let mut kinks: Vec<Vec<KinkGroup>> = vec![Vec::new(); n];
    for mut g in o.kinks {
        let k = g.members.first().map(|m| m.index).unwrap_or(0);
        debug_assert!(g.members.iter().all(|m| m.index == k));
        for m in &mut g.members {
            m.index = 0;
        }
        kinks[k].push(g);
    }
    let mut grads: Vec<BTreeMap<String, Vec<Exact>>> = vec![BTreeMap::new(); n];
    for (name, v) in o.grads {
        for (k, e) in v.into_iter().enumerate() {
            grads[k].insert(name.clone(), vec![e]);
        }
    }
    let shapes: BTreeMap<String, Vec<usize>> =
        o.grad_shapes.keys().map(|k| (k.clone(), vec![1])).collect();
    o.value
        .into_iter()
        .zip(grads)
        .zip(kinks)
        .map(|((v, g), kg)| OracleOutput {
            value_shape: vec![1],
            value: vec![v],
            grads: g,
            grad_shapes: shapes.clone(),
            kinks: kg,
            precision: o.precision,
            checked: checked.clone(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// One kept counterexample.
#[derive(Clone, Debug)]
pub struct Example {
    /// Position in the run: (combination, pattern); the smallest are kept.
    pub combo: usize,
    pub pattern: u64,
    pub verdicts: Vec<String>,
    /// The element's worst output (`value`, `grad.<input>`), the answer, R, ulps.
    pub output: String,
    pub actual: f64,
    pub expected: f64,
    pub ulps: f64,
    pub case: Value,
}

impl Example {
    /// An example without a judged output (an invalid input accepted, an oracle error).
    fn bare(combo: usize, pattern: u64, verdicts: Vec<String>, case: &Case) -> Example {
        Example {
            combo,
            pattern,
            verdicts,
            output: String::new(),
            actual: f64::NAN,
            expected: f64::NAN,
            ulps: f64::NAN,
            case: case.to_json(),
        }
    }

    fn to_json(&self, dtype: Dtype, combos: &[Combo]) -> Value {
        let case = serde_json::to_string(&self.case).unwrap();
        json!({
            "combination": self.combo,
            "others": combos[self.combo].label(),
            "pattern": format!("{:#0w$x}", self.pattern, w = dtype.width() as usize / 4 + 2),
            "input": encode_f64(dtype.from_bits(self.pattern as u32)),
            "verdicts": self.verdicts,
            "output": self.output, "actual": encode_f64(self.actual),
            "expected": encode_f64(self.expected), "ulps": encode_f64(self.ulps),
            "case": self.case,
            "replay": format!("echo {} | losscheck eval", crate::check::exec::shell_quote(&case)),
        })
    }
}

/// Counts and maxima over a set of elements (mergeable: chunks are reduced in any order).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Elements judged (valid patterns × combinations).
    pub checked: u64,
    /// Invalid patterns of the primary input sent alone: rejected / accepted.
    pub invalid_rejected: u64,
    pub invalid_accepted: u64,
    pub nan_patterns: u64,
    pub value_max_ulps: f64,
    /// Worst over every gradient component.
    pub grad_max_ulps: f64,
    pub grad_max_ulps_by_input: BTreeMap<String, f64>,
    pub value_correctly_rounded: u64,
    pub grad_correctly_rounded: u64,
    /// Value and every gradient correctly rounded.
    pub all_correctly_rounded: u64,
    /// Elements with an output the oracle could not decide at its precision cap (both
    /// neighbours count as correct there).
    pub hard: u64,
    /// Elements with findings, and findings per verdict (an element may count in several).
    pub elements_with_findings: u64,
    pub verdicts: BTreeMap<Verdict, u64>,
    pub facts: BTreeMap<String, u64>,
    /// Oracle errors (an element the oracle could not evaluate: a bug of the harness).
    pub oracle_errors: u64,
    pub examples: BTreeMap<String, Vec<Example>>,
}

fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

impl Tally {
    /// Merge `o` into `self`.
    pub fn merge(&mut self, o: Tally) {
        self.checked += o.checked;
        self.invalid_rejected += o.invalid_rejected;
        self.invalid_accepted += o.invalid_accepted;
        self.nan_patterns += o.nan_patterns;
        self.value_max_ulps = max_nan(self.value_max_ulps, o.value_max_ulps);
        self.grad_max_ulps = max_nan(self.grad_max_ulps, o.grad_max_ulps);
        for (k, v) in o.grad_max_ulps_by_input {
            let e = self.grad_max_ulps_by_input.entry(k).or_insert(0.0);
            *e = max_nan(*e, v);
        }
        self.value_correctly_rounded += o.value_correctly_rounded;
        self.grad_correctly_rounded += o.grad_correctly_rounded;
        self.all_correctly_rounded += o.all_correctly_rounded;
        self.hard += o.hard;
        self.elements_with_findings += o.elements_with_findings;
        for (k, v) in o.verdicts {
            *self.verdicts.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.facts {
            *self.facts.entry(k).or_insert(0) += v;
        }
        self.oracle_errors += o.oracle_errors;
        for (k, v) in o.examples {
            let e = self.examples.entry(k).or_default();
            e.extend(v);
            e.sort_by_key(|x| (x.combo, x.pattern));
            e.truncate(KEEP_EXAMPLES);
        }
    }

    /// Findings: elements with a verdict, plus oracle errors.
    pub fn findings(&self) -> u64 {
        self.elements_with_findings + self.oracle_errors
    }

    fn example(&mut self, key: String, ex: impl FnOnce() -> Example) {
        let e = self.examples.entry(key).or_default();
        if e.len() < KEEP_EXAMPLES {
            e.push(ex());
        }
    }

    /// Record one judged element.
    fn record(
        &mut self,
        combo: usize,
        pattern: u64,
        o: &OracleOutput,
        rep: &CaseReport,
        case: impl FnOnce() -> Case,
    ) {
        self.checked += 1;
        let mut grad_cr = true;
        for j in &rep.outputs {
            if j.output == "value" {
                self.value_max_ulps = max_nan(self.value_max_ulps, j.ulps);
                if j.ulps == 0.0 {
                    self.value_correctly_rounded += 1;
                }
            } else {
                self.grad_max_ulps = max_nan(self.grad_max_ulps, j.ulps);
                let name = j.output.trim_start_matches("grad.").to_string();
                let e = self.grad_max_ulps_by_input.entry(name).or_insert(0.0);
                *e = max_nan(*e, j.ulps);
                grad_cr &= j.ulps == 0.0;
            }
        }
        let value_cr = rep.value_correctly_rounded;
        if grad_cr {
            self.grad_correctly_rounded += 1;
        }
        if grad_cr && value_cr {
            self.all_correctly_rounded += 1;
        }
        if o.value
            .iter()
            .chain(o.grads.values().flatten())
            .any(|e| e.hard.is_some())
        {
            self.hard += 1;
        }
        for f in &rep.facts {
            *self.facts.entry(f.name.to_string()).or_insert(0) += 1;
        }
        if rep.verdicts.is_empty() {
            return;
        }
        self.elements_with_findings += 1;
        for &v in &rep.verdicts {
            *self.verdicts.entry(v).or_insert(0) += 1;
        }
        let worst = rep
            .outputs
            .iter()
            .find(|j| j.verdict.is_some())
            .or(rep.outputs.first());
        let ex = || Example {
            combo,
            pattern,
            verdicts: rep.verdicts.iter().map(|v| v.name().to_string()).collect(),
            output: worst.map(|j| j.output.clone()).unwrap_or_default(),
            actual: worst.map(|j| j.actual).unwrap_or(f64::NAN),
            expected: worst.map(|j| j.expected).unwrap_or(f64::NAN),
            ulps: worst.map(|j| j.ulps).unwrap_or(f64::NAN),
            case: case().to_json(),
        };
        let key = rep.verdicts[0].name().to_string();
        self.example(key, ex);
    }

    fn to_json(&self, dtype: Dtype, combos: &[Combo]) -> Value {
        json!({
            "inputs_checked": self.checked,
            "nan_patterns": self.nan_patterns,
            "invalid_rejected": self.invalid_rejected,
            "invalid_accepted": self.invalid_accepted,
            "value": {"max_ulps": encode_f64(self.value_max_ulps), "max_bits": dtype.bits(self.value_max_ulps),
                      "correctly_rounded": self.value_correctly_rounded},
            "grad": {"max_ulps": encode_f64(self.grad_max_ulps), "max_bits": dtype.bits(self.grad_max_ulps),
                     "correctly_rounded": self.grad_correctly_rounded,
                     "max_ulps_by_input": self.grad_max_ulps_by_input.iter().map(|(k, v)| (k.clone(), encode_f64(*v))).collect::<Map<_, _>>()},
            "all_correctly_rounded": self.all_correctly_rounded,
            "hard_cases": self.hard,
            "elements_with_findings": self.elements_with_findings,
            "findings": self.verdicts.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<Map<_, _>>(),
            "oracle_errors": self.oracle_errors,
            "facts": self.facts.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(),
            "examples": self.examples.iter().map(|(k, v)| (k.clone(), Value::Array(v.iter().map(|e| e.to_json(dtype, combos)).collect()))).collect::<Map<_, _>>(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Running.

/// What to check.
#[derive(Clone, Debug)]
pub struct Config {
    pub loss: String,
    pub dtype: Dtype,
    pub shard: Shard,
}

impl Config {
    /// A 16-bit dtype may run whole; f32 needs a shard (2³² patterns: a long campaign).
    pub fn new(loss: &str, dtype: Dtype, shard: Option<Shard>) -> Result<Config, String> {
        eligible(loss)?;
        let shard = match (dtype, shard) {
            (Dtype::F32, None) => return Err(
                "f32 has 2^32 patterns: run it by ranges with --shard K/N (e.g. --shard 0/4096; \
                     each of the N shards is a separate certificate) — a long campaign, not CI"
                    .into(),
            ),
            (_, s) => s.unwrap_or(Shard::ALL),
        };
        Ok(Config {
            loss: loss.to_string(),
            dtype,
            shard,
        })
    }
}

/// The result of an exhaustive run.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub loss: String,
    pub dtype: Dtype,
    pub shard: Shard,
    pub patterns: Range<u64>,
    pub subject: String,
    pub combos: Vec<Combo>,
    pub total: Tally,
    /// Per block of patterns ([`BLOCKS`] blocks for a whole 16-bit run; one otherwise).
    pub blocks: Vec<(Range<u64>, Tally)>,
    pub seconds: f64,
    /// losscheck version and the commit of the code (with `-dirty` for local changes).
    pub version: String,
    pub commit: String,
}

/// Judge one chunk: `combo`'s patterns `pats`.
fn run_chunk(
    cfg: &Config,
    spec: &LossSpec,
    subject: &dyn Subject,
    ci: usize,
    combo: &Combo,
    pats: Range<u64>,
) -> Tally {
    let mut t = Tally::default();
    let dtype = cfg.dtype;
    let mut valid: Vec<(u64, f64)> = Vec::with_capacity(pats.clone().count());
    for p in pats {
        let x = dtype.from_bits(p as u32);
        if x.is_nan() {
            t.nan_patterns += 1;
        }
        if primary_in_domain(spec, x) {
            valid.push((p, x));
        } else {
            let case = build_case(&cfg.loss, dtype, combo, &[x]);
            match subject.eval(&case) {
                Err(e) if e.kind == ErrorKind::InvalidInput => t.invalid_rejected += 1,
                _ => {
                    t.invalid_accepted += 1;
                    *t.facts.entry("invalid_accepted".into()).or_insert(0) += 1;
                    t.example("invalid_accepted".into(), || {
                        Example::bare(ci, p, vec![], &case)
                    });
                }
            }
        }
    }
    if valid.is_empty() {
        return t;
    }
    let xs: Vec<f64> = valid.iter().map(|v| v.1).collect();
    let case = build_case(&cfg.loss, dtype, combo, &xs);
    let oracle = losscheck_oracles::evaluate_elementwise(&case);
    let answer = subject.eval(&case);
    match (oracle, answer) {
        (Ok(o), Ok(resp))
            if resp.value.len() == xs.len() && resp.grad.values().all(|g| g.len() == xs.len()) =>
        {
            // The judge reads of the case only what all elements share (loss, dtypes, gradients
            // asked, reduction `none`): one template serves every element, and an element's own
            // case is built only for a counterexample.
            let template = build_case(&cfg.loss, dtype, combo, &xs[..1]);
            for (k, ok) in split_oracle(o, xs.len()).into_iter().enumerate() {
                let rep = compare::judge(&template, &ok, &Ok(element_response(&resp, k)));
                t.record(ci, valid[k].0, &ok, &rep, || {
                    build_case(&cfg.loss, dtype, combo, &xs[k..k + 1])
                });
            }
        }
        _ => {
            // The chunk as a whole was rejected (or the answer is malformed): element by element.
            for &(p, x) in &valid {
                let one = build_case(&cfg.loss, dtype, combo, &[x]);
                judge_alone(&mut t, ci, p, &one, subject);
            }
        }
    }
    t
}

/// Judge one element as its own case.
fn judge_alone(t: &mut Tally, ci: usize, p: u64, case: &Case, subject: &dyn Subject) {
    match losscheck_oracles::evaluate(case) {
        Ok(o) => {
            let answer: Result<Response, LossError> = subject.eval(case);
            let rep = compare::judge(case, &o, &answer);
            t.record(ci, p, &o, &rep, || case.clone());
        }
        Err(e) => {
            t.checked += 1;
            t.oracle_errors += 1;
            t.example("oracle_error".into(), || {
                Example::bare(ci, p, vec![format!("oracle error: {}", e.message)], case)
            });
        }
    }
}

/// Run the exhaustive check of `subject` (`progress` is called with the number of elements
/// done, from any thread).
pub fn run(
    cfg: &Config,
    subject: &dyn Subject,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Certificate, String> {
    let spec = eligible(&cfg.loss)?;
    let combos = combinations(&cfg.loss, cfg.dtype)?;
    let patterns = cfg.shard.range(cfg.dtype);
    let started = Instant::now();
    // blocks: BLOCKS equal ranges of the whole space for a whole 16-bit run, else the shard
    let blocks: Vec<Range<u64>> = if cfg.shard.is_all() && cfg.dtype.is_16bit() {
        (0..BLOCKS)
            .map(|k| {
                Shard {
                    index: k,
                    count: BLOCKS,
                }
                .range(cfg.dtype)
            })
            .collect()
    } else {
        vec![patterns.clone()]
    };
    let mut jobs: Vec<(usize, usize, Range<u64>)> = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        for ci in 0..combos.len() {
            let mut s = b.start;
            while s < b.end {
                let e = (s + CHUNK as u64).min(b.end);
                jobs.push((bi, ci, s..e));
                s = e;
            }
        }
    }
    let per_block: Vec<Tally> = jobs
        .par_iter()
        .map(|(bi, ci, r)| {
            let t = run_chunk(cfg, spec, subject, *ci, &combos[*ci], r.clone());
            progress(r.end - r.start);
            (*bi, t)
        })
        .fold(
            || vec![Tally::default(); blocks.len()],
            |mut acc, (bi, t)| {
                acc[bi].merge(t);
                acc
            },
        )
        .reduce(
            || vec![Tally::default(); blocks.len()],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.merge(y);
                }
                a
            },
        );
    let mut total = Tally::default();
    for b in &per_block {
        total.merge(b.clone());
    }
    Ok(Certificate {
        loss: cfg.loss.clone(),
        dtype: cfg.dtype,
        shard: cfg.shard,
        patterns,
        subject: subject.name(),
        combos,
        total,
        blocks: blocks.into_iter().zip(per_block).collect(),
        seconds: started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: String::new(),
    })
}

/// The commit of the working tree at `dir` (`git describe --always --dirty`, local changes to
/// `reports/` ignored), or `unknown`.
pub fn git_commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!reports",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

impl Certificate {
    /// Total patterns × combinations (valid and invalid patterns alike).
    pub fn inputs_enumerated(&self) -> u64 {
        (self.patterns.end - self.patterns.start) * self.combos.len() as u64
    }

    /// Is every value and every gradient correctly rounded, with no finding, on every input?
    pub fn all_correctly_rounded(&self) -> bool {
        let t = &self.total;
        t.findings() == 0 && t.all_correctly_rounded == t.checked && t.invalid_accepted == 0
    }

    /// `mse-f16.json`, or `mse-f32-shard-3-of-4096.json`.
    pub fn file_name(&self) -> String {
        if self.shard.is_all() {
            format!("{}-{}.json", self.loss, self.dtype)
        } else {
            format!(
                "{}-{}-shard-{}-of-{}.json",
                self.loss, self.dtype, self.shard.index, self.shard.count
            )
        }
    }

    /// The certificate's one-line human summary.
    pub fn summary_line(&self) -> String {
        let t = &self.total;
        let shard = if self.shard.is_all() {
            String::new()
        } else {
            format!(
                " shard {}/{} (patterns {:#x}..{:#x})",
                self.shard.index, self.shard.count, self.patterns.start, self.patterns.end
            )
        };
        let n = fmt_count(self.patterns.end - self.patterns.start);
        let k = self.combos.len();
        let head = format!("{} {}{shard}", self.loss, self.dtype);
        let invalid = if t.invalid_rejected + t.invalid_accepted > 0 {
            format!(
                "; {} patterns outside the input's domain: {} rejected as invalid input, {} accepted",
                fmt_count(t.invalid_rejected + t.invalid_accepted),
                fmt_count(t.invalid_rejected),
                fmt_count(t.invalid_accepted)
            )
        } else {
            String::new()
        };
        // hard cases (either neighbour counts, DESIGN.md) are said with the sentence
        let hard = if t.hard > 0 {
            format!(
                "; {} hard cases, where either neighbour counts",
                fmt_count(t.hard)
            )
        } else {
            String::new()
        };
        let invalid = hard + &invalid;
        if self.all_correctly_rounded() && t.invalid_rejected == 0 {
            format!(
                "{head}: correctly rounded on all {n} × {k} inputs (value and gradients){invalid} — {:.1} s",
                self.seconds
            )
        } else if self.all_correctly_rounded() {
            // some patterns are not inputs of the loss: the sentence counts the valid ones
            format!(
                "{head}: correctly rounded on all {} valid inputs of the {n} × {k} (value and \
                 gradients){invalid} — {:.1} s",
                fmt_count(t.checked),
                self.seconds
            )
        } else {
            format!(
                "{head}: {n} × {k} inputs ({} judged); value max {} ulps, gradients max {} ulps; \
                 {:.4}% correctly rounded (value and gradients); findings: {}{invalid} — {:.1} s",
                fmt_count(t.checked),
                fmt_ulps(t.value_max_ulps),
                fmt_ulps(t.grad_max_ulps),
                100.0 * t.all_correctly_rounded as f64 / t.checked.max(1) as f64,
                findings_text(t),
                self.seconds
            )
        }
    }

    pub fn to_json(&self) -> Value {
        let spec = catalogue::spec(&self.loss).unwrap();
        json!({
            "schema": SCHEMA,
            "loss": self.loss, "dtype": self.dtype.name(), "subject": self.subject,
            "primary_input": primary_input(spec),
            "patterns": {"start": self.patterns.start, "end": self.patterns.end,
                         "shard": format!("{}/{}", self.shard.index, self.shard.count)},
            "reduction": "none", "out_dtype": self.dtype.name(),
            "combinations": self.combos.iter().map(Combo::to_json).collect::<Vec<_>>(),
            "inputs_enumerated": self.inputs_enumerated(),
            "summary": self.summary_line(),
            "correctly_rounded_everywhere": self.all_correctly_rounded(),
            "total": self.total.to_json(self.dtype, &self.combos),
            "blocks": self.blocks.iter().map(|(r, t)| {
                let mut v = t.to_json(self.dtype, &self.combos);
                let o = v.as_object_mut().unwrap();
                o.remove("examples");
                o.insert("start".into(), json!(r.start));
                o.insert("end".into(), json!(r.end));
                v
            }).collect::<Vec<_>>(),
            "tolerance": {"value_ulps": compare::tolerance(&self.loss, self.dtype).value_ulps,
                          "grad_ulps": compare::tolerance(&self.loss, self.dtype).grad_ulps},
            "version": self.version, "commit": self.commit,
            "seconds": (self.seconds * 100.0).round() / 100.0,
        })
    }

    /// Write the certificate to `dir/<file_name>` atomically (a temporary file, then a rename).
    pub fn write(&self, dir: &Path) -> Result<std::path::PathBuf, String> {
        let path = dir.join(self.file_name());
        write_atomic(
            &path,
            &(serde_json::to_string_pretty(&self.to_json()).unwrap() + "\n"),
        )?;
        Ok(path)
    }
}

pub use crate::report::write_atomic;

pub(crate) fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_ulps(u: f64) -> String {
    if u.is_infinite() {
        "∞".into()
    } else {
        format!("{u}")
    }
}

fn findings_text(t: &Tally) -> String {
    let mut parts: Vec<String> = t
        .verdicts
        .iter()
        .map(|(k, v)| format!("{} {}", k.name(), fmt_count(*v)))
        .collect();
    if t.oracle_errors > 0 {
        parts.push(format!("oracle_error {}", t.oracle_errors));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// Summaries of committed certificates.

/// The certificates (parsed JSON) in `dir`, sorted by file name.
pub fn load_certificates(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if v["schema"] == SCHEMA {
                out.push((name, v));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The title of [`report_section`] in the report.
pub const REPORT_SECTION_TITLE: &str = "Exhaustive 16-bit certificates";

/// The body (no heading: [`REPORT_SECTION_TITLE`]) of a Markdown section summarising the
/// certificates committed in `dir` (e.g. `reports/exhaustive`): a table of loss, dtype, inputs
/// checked, max ulps of value and gradients, the correctly rounded share and the findings.
/// Empty when there are none.
pub fn report_section(dir: &Path) -> String {
    let certs = load_certificates(dir);
    if certs.is_empty() {
        return String::new();
    }
    let mut md = String::new();
    md.push_str(&format!(
        "Every bit pattern of the primary input × the listed values of the other inputs and params, \
         value and gradients of the built-in kernels judged elementwise against the oracle \
         (`losscheck exhaustive`, docs/exhaustive.md; certificates in `{}`).\n\n",
        dir.display()
    ));
    md.push_str("| loss | dtype | patterns | inputs checked | value max ulps | grad max ulps | correctly rounded | findings |\n");
    md.push_str("|---|---|---|---:|---:|---:|---:|---|\n");
    for (_, v) in &certs {
        let t = &v["total"];
        let checked = t["inputs_checked"].as_u64().unwrap_or(0);
        let cr = t["all_correctly_rounded"].as_u64().unwrap_or(0);
        let ulps = |x: &Value| fmt_ulps(decode_f64(x).unwrap_or(f64::NAN));
        let findings: Vec<String> = t["findings"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k} {}", fmt_count(n.as_u64().unwrap_or(0))))
                    .collect()
            })
            .unwrap_or_default();
        let share = if checked > 0 && cr == checked {
            "100%".to_string()
        } else {
            format!("{:.4}%", 100.0 * cr as f64 / checked.max(1) as f64)
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            v["loss"].as_str().unwrap_or("?"),
            v["dtype"].as_str().unwrap_or("?"),
            v["patterns"]["shard"]
                .as_str()
                .map(|s| if s == "0/1" {
                    "all".to_string()
                } else {
                    format!("shard {s}")
                })
                .unwrap_or_default(),
            fmt_count(checked),
            ulps(&t["value"]["max_ulps"]),
            ulps(&t["grad"]["max_ulps"]),
            share,
            if findings.is_empty() {
                "none".to_string()
            } else {
                findings.join(", ")
            }
        ));
    }
    md
}

/// `reports/exhaustive/README.md`: one human line per certificate in `dir`.
pub fn readme(dir: &Path) -> String {
    let mut md = String::from(
        "# Exhaustive certificates\n\n\
         One JSON certificate per elementwise loss × dtype: every bit pattern of the loss's primary \
         input × the listed values of its other inputs and params, value and gradients of the \
         built-in kernels judged against the MPFR oracle (reduction `none`, one loss per element). \
         What is certified and how to regenerate: docs/exhaustive.md \
         (`losscheck exhaustive --all --dtype f16 --dtype bf16`).\n\n",
    );
    for (name, v) in load_certificates(dir) {
        md.push_str(&format!(
            "- [{name}]({name}): {}\n",
            v["summary"].as_str().unwrap_or("?")
        ));
    }
    md
}
