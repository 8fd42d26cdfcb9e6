//! The zoo: known-bad loss implementations that reproduce failures seen in the wild. Each entry
//! names the failure, where it was seen, and the verdict class the harness must give it; the
//! test suite (`tests/zoo_detection.rs`) runs the harness against every entry and asserts that
//! each is flagged with that verdict — detection power is tested, not assumed.
//!
//! Zoo entries compute the way the code they imitate does (in f32, the usual compute type),
//! but like the kernels they never call the platform libm: every result is the same bits
//! everywhere.

pub mod classification;
pub mod contrastive;
pub mod preference;
pub mod probabilistic;
pub mod regression;

use crate::check::compare::{CaseReport, Verdict};
use crate::check::subject::Subject;
use losscheck_core::{catalogue, Case, Dtype, LossError, Reduction, Response, Tensor};

/// One known-bad implementation.
pub struct ZooEntry {
    /// Subject name, used as `zoo:<name>` on the command line.
    pub name: &'static str,
    /// The catalogue loss it implements (badly).
    pub loss: &'static str,
    /// The failure and where it was seen.
    pub failure: &'static str,
    /// The verdict class (or fact) the harness must draw on it.
    pub verdict: Flag,
    /// The dtypes in which the failure shows (it may be correct in others).
    pub dtypes: &'static [Dtype],
    pub eval: fn(&Case) -> Result<Response, LossError>,
}

/// What the harness must draw on a zoo entry: a verdict, or a fact — a known alternative
/// reading (check/policies.rs), a finding under `--strict-policy` (its name is the finding's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    Verdict(Verdict),
    Fact(&'static str),
}

impl Flag {
    pub fn name(self) -> &'static str {
        match self {
            Flag::Verdict(v) => v.name(),
            Flag::Fact(f) => f,
        }
    }
    /// Does the judgement of a case carry this flag?
    pub fn in_report(self, r: &CaseReport) -> bool {
        match self {
            Flag::Verdict(v) => r.verdicts.contains(&v),
            Flag::Fact(f) => r.facts.iter().any(|x| x.name == f),
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every zoo entry.
pub fn entries() -> Vec<&'static ZooEntry> {
    regression::ENTRIES
        .iter()
        .chain(classification::ENTRIES)
        .chain(preference::ENTRIES)
        .chain(probabilistic::ENTRIES)
        .chain(contrastive::ENTRIES)
        .collect()
}

/// The names of the zoo subjects, as `zoo:<name>`.
pub fn names() -> Vec<String> {
    entries()
        .iter()
        .map(|e| format!("zoo:{}", e.name))
        .collect()
}

/// The zoo entry named `zoo:<name>` (or `<name>`).
pub fn entry(name: &str) -> Option<&'static ZooEntry> {
    let n = name.strip_prefix("zoo:").unwrap_or(name);
    entries().into_iter().find(|e| e.name == n)
}

/// A zoo entry as a subject.
pub fn subject(name: &str) -> Option<Box<dyn Subject>> {
    entry(name).map(|e| Box::new(ZooSubject(e)) as Box<dyn Subject>)
}

/// A zoo entry served as a subject: it answers only its own loss.
pub struct ZooSubject(pub &'static ZooEntry);

impl Subject for ZooSubject {
    fn name(&self) -> String {
        format!("zoo:{}", self.0.name)
    }
    fn supports(&self, loss: &str, _dtype: Dtype) -> bool {
        loss == self.0.loss
    }
    fn eval(&self, case: &Case) -> Result<Response, LossError> {
        if case.loss != self.0.loss {
            return Err(LossError::unsupported(format!(
                "zoo:{} implements only {}",
                self.0.name, self.0.loss
            )));
        }
        (self.0.eval)(case)
    }
}

/// How a naive elementwise implementation reduces.
#[derive(Clone, Copy, Default)]
pub(crate) struct Flaws {
    /// Keep the running sum in the input dtype (16-bit sums stall at 2048 and overflow).
    pub accumulate_in_dtype: bool,
    /// Mask by multiplying with 0 instead of skipping (0·NaN = NaN leaks).
    pub mask_by_multiply: bool,
    /// Divide the mean by the element count instead of Σ m·w (padding counted).
    pub mean_over_count: bool,
}

/// A per-element term of a naive elementwise loss: `f(x, t, i, case) -> (loss, dloss/dx)` in
/// f32, x the first differentiable input, t the target (a float, or a ±1 / class label), i
/// the element's index (for broadcast inputs such as `pos_weight`).
pub(crate) type Term = fn(f32, f32, usize, &Case) -> (f32, f32);

/// A naive elementwise loss in f32 — the way most code computes one: the term of every element,
/// then the reduction with `flaws`. A `target` gradient, when asked (regression), is −dloss/dx
/// (every regression loss depends on x − t).
pub(crate) fn naive(case: &Case, f: Term, flaws: Flaws) -> Result<Response, LossError> {
    let spec = case.spec();
    let x = spec.grads[0];
    let xs = float_input(case, x)?;
    let t = case
        .inputs
        .get("target")
        .ok_or_else(|| LossError::invalid("missing input target"))?;
    let sign: Vec<f32> = spec
        .grads
        .iter()
        .map(|g| if *g == "target" { -1.0 } else { 1.0 })
        .collect();
    naive_terms(case, flaws, &|i| {
        let (l, d) = f(xs[i] as f32, t.get_f64(i) as f32, i, case);
        (
            l,
            [sign[0] * d, sign.get(1).map_or(0.0, |s| s * d), 0.0, 0.0],
        )
    })
}

/// A float input's data, or an error naming it.
pub(crate) fn float_input<'a>(case: &'a Case, name: &str) -> Result<&'a [f64], LossError> {
    case.inputs
        .get(name)
        .and_then(Tensor::f)
        .ok_or_else(|| LossError::invalid(format!("missing input {name}")))
}

/// The per-element term of an elementwise loss of several inputs: element i's loss and its
/// derivatives by the catalogue's differentiable inputs (`spec.grads`, in order; up to four).
pub(crate) type TermAt<'a> = dyn Fn(usize) -> (f32, [f32; 4]) + 'a;

/// [`naive`] for any elementwise loss: `term(i)` for every element (skipped where the mask or
/// weight is 0, unless `flaws` multiplies), then the reduction with `flaws`.
pub(crate) fn naive_terms(case: &Case, flaws: Flaws, term: &TermAt) -> Result<Response, LossError> {
    let checked = catalogue::validate(case)?;
    let spec = case.spec();
    let xs = float_input(case, spec.grads[0])?;
    let n = xs.len();
    let w = |i: usize| {
        case.inputs
            .get("weight")
            .and_then(Tensor::f)
            .map_or(1.0, |w| w[i] as f32)
    };
    let m = |i: usize| {
        case.inputs
            .get("mask")
            .and_then(Tensor::i)
            .map_or(1.0, |m| m[i] as f32)
    };
    let dt = case.dtype;
    let acc_round = |x: f32| {
        if flaws.accumulate_in_dtype {
            dt.round(x as f64) as f32
        } else {
            x
        }
    };
    let mut terms = vec![0f32; n];
    let mut dterms = vec![[0f32; 4]; n];
    let (mut num, mut den) = (0f32, 0f32);
    for i in 0..n {
        let (mi, wi) = (m(i), w(i));
        if !flaws.mask_by_multiply && (mi == 0.0 || wi == 0.0) {
            continue;
        }
        let (l, d) = term(i);
        terms[i] = mi * wi * l;
        dterms[i] = d.map(|d| mi * wi * d);
        num = acc_round(num + terms[i]);
        den = acc_round(den + mi * wi);
    }
    let reduction = case.reduction();
    if flaws.mean_over_count {
        den = n as f32;
    }
    let cot = case.inputs.get("cotangent").and_then(Tensor::f);
    let (value, scale): (Vec<f64>, f32) = match reduction {
        Reduction::None => (terms.iter().map(|&x| x as f64).collect(), 1.0),
        Reduction::Sum => (vec![num as f64], 1.0),
        _ => (vec![(num / den) as f64], 1.0 / den),
    };
    let out = case.out_dtype;
    let value = Tensor::float(
        out,
        checked.value_shape(reduction),
        value.into_iter().map(|x| out.round(x)).collect(),
    );
    let mut grad = std::collections::BTreeMap::new();
    for name in &case.grad {
        let Some(gi) = spec.grads.iter().position(|g| g == name) else {
            continue;
        };
        let g: Vec<f64> = (0..n)
            .map(|i| {
                let c = match (reduction, cot) {
                    (Reduction::None, Some(c)) => c[i] as f32,
                    (_, Some(c)) => c[0] as f32,
                    _ => 1.0,
                };
                dt.round((dterms[i][gi] * scale * c) as f64)
            })
            .collect();
        grad.insert(
            name.clone(),
            Tensor::float(dt, case.inputs[name].shape.clone(), g),
        );
    }
    Ok(Response {
        id: case.id,
        value,
        grad,
    })
}
