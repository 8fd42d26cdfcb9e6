//! Invalid-input probes: a valid case turned into one that DESIGN.md's "Invalid input" section
//! says must be rejected, by one change — a class id out of range, a probability or target
//! outside its set, a negative / NaN / infinite weight, a mask value outside {0, 1}, a label
//! outside {±1} or {0, 1}, a param outside its domain, `log_target` with a target > 0, a shape
//! that fits no layout. A subject that answers such a request with numbers instead of an error
//! follows the `invalid_accepted` reading (a fact, DESIGN.md: a finding only with
//! `--strict-policy`).
//!
//! Every probe is checked by [`catalogue::validate`] — the same validation the kernels and the
//! oracles share — before it is sent: a change that validation would accept (it landed on a
//! masked, ignored or zero-weight position, which range checks skip) is never a probe.
//! docs/policies/alternative-readings.md ("Invalid-input probe").

use losscheck_core::catalogue::{self, Domain, InputKind, ParamDomain, ParamKind};
use losscheck_core::{Case, Data, ErrorKind, ParamValue};

/// One kind of change that makes a case invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A float data input outside its domain (a probability > 1 or < 0, a negative variance,
    /// a `kl_div` log-target > 0).
    OutOfDomain,
    /// A weight, class weight or pos_weight that is negative, NaN or infinite.
    BadWeight,
    /// A class id outside [0, C) that is not `ignore_index`.
    ClassOutOfRange,
    /// A ±1 label that is 0, a {0, 1} label or mask that is 2.
    BadLabel,
    /// A float param outside its domain.
    ParamOutOfDomain,
    /// An input whose shape fits no layout (one element short).
    ShapeMismatch,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::OutOfDomain,
        Kind::BadWeight,
        Kind::ClassOutOfRange,
        Kind::BadLabel,
        Kind::ParamOutOfDomain,
        Kind::ShapeMismatch,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::OutOfDomain => "out_of_domain",
            Kind::BadWeight => "bad_weight",
            Kind::ClassOutOfRange => "class_out_of_range",
            Kind::BadLabel => "bad_label",
            Kind::ParamOutOfDomain => "param_out_of_domain",
            Kind::ShapeMismatch => "shape_mismatch",
        }
    }
}

/// An invalid variant of a case: the request, the kind of change and what it changed.
#[derive(Clone, Debug)]
pub struct Probe {
    pub case: Case,
    pub kind: Kind,
    pub what: String,
}

/// Values outside a float data input's domain (exact in every dtype), or `None` for `Any`.
fn bad_values(domain: Domain, log_target: bool) -> &'static [f64] {
    match domain {
        Domain::Any => &[],
        Domain::UnitInterval => &[1.5, -0.5],
        Domain::NonNegative => &[-1.0],
        Domain::KlTarget if log_target => &[0.5],
        Domain::KlTarget => &[1.5, -0.5],
        Domain::Weight => &[-1.0, f64::NAN, f64::INFINITY],
    }
}

/// A value outside a float param's domain (every float param is finite: the values are).
fn bad_param(domain: ParamDomain) -> Option<f64> {
    match domain {
        ParamDomain::Finite | ParamDomain::Any => None,
        ParamDomain::Positive => Some(0.0),
        ParamDomain::NonNegative => Some(-1.0),
        ParamDomain::NonPositive => Some(1.0),
        ParamDomain::OpenUnit => Some(1.0),
        ParamDomain::ClosedUnit => Some(1.5),
        ParamDomain::Closed(_, hi) => Some(hi + 1.0),
        ParamDomain::OneOf(v) => Some(v.iter().fold(0.0f64, |m, &x| m.max(x)) + 1.0),
    }
}

/// Is `case` invalid input for DESIGN.md (the shared validation rejects it as such)?
pub fn is_invalid(case: &Case) -> bool {
    matches!(catalogue::validate(case), Err(e) if e.kind == ErrorKind::InvalidInput)
}

/// `case` with element `k` of input `name` set to `x`.
fn with_element(case: &Case, name: &str, k: usize, x: Data) -> Case {
    let mut c = case.clone();
    if let Some(t) = c.inputs.get_mut(name) {
        match (&mut t.data, x) {
            (Data::F(v), Data::F(x)) => v[k] = x[0],
            (Data::I(v), Data::I(x)) => v[k] = x[0],
            _ => {}
        }
    }
    c
}

/// The first element of `name` where `value` makes the case invalid, among the first 8 and 8
/// spread over the tensor (range checks skip masked, ignored and zero-weight positions; a
/// validation per candidate keeps a long, mostly masked batch cheap).
fn first_invalid(case: &Case, name: &str, value: Data) -> Option<(Case, usize)> {
    let n = case.inputs.get(name)?.len();
    let mut candidates: Vec<usize> = (0..n.min(8)).chain((1..8).map(|i| i * n / 8)).collect();
    candidates.sort_unstable();
    candidates.dedup();
    candidates.into_iter().filter(|&k| k < n).find_map(|k| {
        let c = with_element(case, name, k, value.clone());
        is_invalid(&c).then_some((c, k))
    })
}

fn encode(x: f64) -> String {
    losscheck_core::tensor::encode_f64(x).to_string()
}

/// Every invalid variant of `case` of the given kind (at most one per input or param and bad
/// value), each rejected by [`catalogue::validate`]. Empty when the kind does not apply.
pub fn variants(case: &Case, kind: Kind) -> Vec<Probe> {
    let spec = case.spec();
    let mut out = Vec::new();
    let mut push = |c: Case, what: String| out.push(Probe { case: c, kind, what });
    let log_target = matches!(case.params.get("log_target"), Some(ParamValue::Bool(true)));
    match kind {
        Kind::OutOfDomain | Kind::BadWeight => {
            for (name, t) in &case.inputs {
                let Some(ispec) = spec.input(name) else { continue };
                let domain = match ispec.kind {
                    InputKind::Float(d) => d,
                    // soft cross-entropy targets are probabilities
                    InputKind::ClassIdOrSoft if matches!(t.data, Data::F(_)) => {
                        Domain::UnitInterval
                    }
                    _ => continue,
                };
                if (domain == Domain::Weight) != (kind == Kind::BadWeight) {
                    continue;
                }
                for &x in bad_values(domain, log_target) {
                    if let Some((c, k)) = first_invalid(case, name, Data::F(vec![x])) {
                        push(c, format!("{name}[{k}] = {}", encode(x)));
                    }
                }
            }
        }
        Kind::ClassOutOfRange | Kind::BadLabel => {
            let classes = catalogue::validate(case)
                .ok()
                .map(|ch| ch.dim("C") as i64)
                .unwrap_or(0);
            for (name, t) in &case.inputs {
                let Some(ispec) = spec.input(name) else { continue };
                if !matches!(t.data, Data::I(_)) {
                    continue;
                }
                let values: Vec<i64> = match (ispec.kind, kind) {
                    (InputKind::ClassId | InputKind::ClassIdOrSoft, Kind::ClassOutOfRange) => {
                        let ii = catalogue::ignore_index(case);
                        [classes, -1, classes + 7]
                            .into_iter()
                            .filter(|&y| Some(y) != ii)
                            .take(2)
                            .collect()
                    }
                    (InputKind::Sign, Kind::BadLabel) => vec![0],
                    (InputKind::Binary | InputKind::Mask, Kind::BadLabel) => vec![2],
                    _ => continue,
                };
                for y in values {
                    if let Some((c, k)) = first_invalid(case, name, Data::I(vec![y])) {
                        push(c, format!("{name}[{k}] = {y}"));
                    }
                }
            }
        }
        Kind::ParamOutOfDomain => {
            for p in spec.params {
                if !matches!(p.kind, ParamKind::Float | ParamKind::OptFloat) {
                    continue;
                }
                let Some(x) = bad_param(p.domain) else { continue };
                let mut c = case.clone();
                c.params.insert(p.name.to_string(), ParamValue::Float(x));
                if is_invalid(&c) {
                    push(c, format!("param {} = {}", p.name, encode(x)));
                }
            }
        }
        Kind::ShapeMismatch => {
            // one element short on a non-primary input (the primary one fixes the shape)
            for (name, t) in case.inputs.iter() {
                if name == spec.grads.first().copied().unwrap_or("") || t.shape.is_empty() {
                    continue;
                }
                let w = *t.shape.last().expect("shape");
                if w == 0 {
                    continue;
                }
                // drop the last element of every row along the last dim
                fn cut<X: Copy>(v: &[X], w: usize) -> Vec<X> {
                    v.chunks(w).flat_map(|r| r[..w - 1].iter().copied()).collect()
                }
                let mut c = case.clone();
                let u = c.inputs.get_mut(name).expect("input");
                *u.shape.last_mut().expect("shape") = w - 1;
                u.data = match &u.data {
                    Data::F(v) => Data::F(cut(v, w)),
                    Data::I(v) => Data::I(cut(v, w)),
                };
                if is_invalid(&c) {
                    let shape = format!("{:?}", c.inputs[name].shape);
                    push(c, format!("{name} of shape {shape} (one element short)"));
                    break;
                }
            }
        }
    }
    out
}

/// The invalid probe for case `index` of a campaign probed every `every` cases: the kinds
/// taken in turn (probe k tries kind k mod 6 first, then the next ones), the variants of the
/// kind in turn as well — so a campaign reaches every kind and every input that can be made
/// invalid. `None` when no change makes the case invalid.
pub fn probe(case: &Case, index: u64, every: u64) -> Option<Probe> {
    let k = (index / every.max(1)) as usize;
    (0..Kind::ALL.len()).find_map(|j| {
        let kind = Kind::ALL[(k + j) % Kind::ALL.len()];
        let mut v = variants(case, kind);
        if v.is_empty() {
            return None;
        }
        let pick = (k / Kind::ALL.len()) % v.len();
        Some(v.swap_remove(pick))
    })
}
