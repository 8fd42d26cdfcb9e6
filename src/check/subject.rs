//! Subjects: implementations under test. The built-in kernels are one; zoo entries, user types
//! and exec-protocol programs ([`crate::check::exec`]) are others.
//!
//! A subject answers cases ([`Subject::eval`]). It may also declare what it supports
//! ([`Subject::capabilities`], PROTOCOL.md's handshake answer): campaigns then send only
//! declared combinations — every generated case is first *restricted* to the capabilities
//! ([`Capabilities::restrict`]) — and a subject whose answers can fail in ways other than an
//! error response (a child process that crashes, hangs or garbles its output) reports those as
//! a [`Fault`] through [`Subject::answer`].

use crate::check::compare::Verdict;
use losscheck_core::catalogue::{self, ParamKind};
use losscheck_core::{Case, Dtype, LossError, ParamValue, Reduction, Response};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A failure of the subject *as a program*, not an answer: it exited or was killed (`crash`),
/// did not answer in time (`hang`), or wrote something that is not a valid response
/// (`protocol`). Always a finding; it carries the request through the campaign's finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// [`Verdict::Crash`], [`Verdict::Hang`] or [`Verdict::Protocol`].
    pub verdict: Verdict,
    pub message: String,
    /// The tail of the subject's stderr when the fault happened (bounded; may be empty).
    pub stderr: String,
}

/// What a subject made of a case: an answer (a response or an error response), or a fault.
pub type Answer = Result<Result<Response, LossError>, Fault>;

/// An implementation of (some of) the catalogue's losses, judged against the oracle.
///
/// `eval` takes `&self` so a campaign can ask from several threads at once; a subject with
/// state (a child process) keeps it behind a lock.
pub trait Subject: Sync {
    /// A name for reports, e.g. `"kernels"` or `"zoo:naive_log_cosh"`.
    fn name(&self) -> String;
    /// Does the subject implement this loss in this dtype? (Unsupported combinations are
    /// coverage, never findings.)
    fn supports(&self, loss: &str, dtype: Dtype) -> bool {
        if let Some(c) = self.capabilities() {
            return c
                .losses
                .get(loss)
                .is_some_and(|l| l.dtypes.contains(&dtype));
        }
        let _ = (loss, dtype);
        true
    }
    /// Answer one case: the value in `case.out_dtype`, gradients in `case.dtype`.
    fn eval(&self, case: &Case) -> Result<Response, LossError>;
    /// The declared capabilities, when the subject declares any (`None`: everything the
    /// catalogue allows — every reduction, param value, optional input and layout).
    fn capabilities(&self) -> Option<&Capabilities> {
        None
    }
    /// Answer one case, reporting failures of the subject as a program as a [`Fault`]. The
    /// default wraps [`Subject::eval`], which cannot fault.
    fn answer(&self, case: &Case) -> Answer {
        Ok(self.eval(case))
    }
    /// The tail of what the subject wrote to stderr, for reports (subjects that are programs).
    fn stderr_tail(&self) -> Option<String> {
        None
    }
    /// The case as it is sent to this subject: restricted to its capabilities (see
    /// [`Capabilities::restrict`]), or `Err` with the reason when it cannot be.
    fn prepare(&self, case: Case) -> Result<Case, String> {
        match self.capabilities() {
            None => Ok(case),
            Some(c) => c.restrict(case),
        }
    }
}

/// losscheck's own fast kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernels;

impl Subject for Kernels {
    fn name(&self) -> String {
        "kernels".into()
    }
    fn supports(&self, loss: &str, _dtype: Dtype) -> bool {
        crate::kernels::implemented(loss)
    }
    fn eval(&self, case: &Case) -> Result<Response, LossError> {
        crate::kernels::evaluate(case)
    }
}

/// Any function from cases to responses is a subject.
pub struct FnSubject<F> {
    pub name: String,
    pub f: F,
}

impl<F: Fn(&Case) -> Result<Response, LossError> + Sync> Subject for FnSubject<F> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn eval(&self, case: &Case) -> Result<Response, LossError> {
        (self.f)(case)
    }
}

/// A subject with declared capabilities wrapped around another (a user's Rust type that
/// supports only some reductions, params or inputs).
pub struct Declared<S> {
    pub subject: S,
    pub capabilities: Capabilities,
}

impl<S: Subject> Subject for Declared<S> {
    fn name(&self) -> String {
        self.subject.name()
    }
    fn eval(&self, case: &Case) -> Result<Response, LossError> {
        self.subject.eval(case)
    }
    fn capabilities(&self) -> Option<&Capabilities> {
        Some(&self.capabilities)
    }
    fn answer(&self, case: &Case) -> Answer {
        self.subject.answer(case)
    }
    fn stderr_tail(&self) -> Option<String> {
        self.subject.stderr_tail()
    }
}

// ---------------------------------------------------------------------------------------------
// Capabilities (PROTOCOL.md's handshake).

/// Which values of a param a subject accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamCap {
    /// Every value of the param's domain (`"any"`).
    Any,
    /// Only these values (a param absent from the declaration is sent at its default only).
    OneOf(Vec<ParamValue>),
}

/// What a subject supports of one loss.
#[derive(Clone, Debug, PartialEq)]
pub struct LossCaps {
    pub dtypes: Vec<Dtype>,
    /// Output dtypes beyond the input dtype (`f32`: the autocast pattern for 16-bit inputs).
    pub out_dtypes: Vec<Dtype>,
    pub reductions: Vec<Reduction>,
    pub params: BTreeMap<String, ParamCap>,
    /// The optional inputs accepted (`weight`, `mask`, `class_weight`, `pos_weight`,
    /// `cotangent`).
    pub inputs: Vec<String>,
    /// The layouts accepted (catalogue layout names: `NC`, `BTC`, `soft`, …); `None`: all.
    pub shapes: Option<Vec<String>>,
    /// Does the subject compute gradients?
    pub grad: bool,
}

impl LossCaps {
    /// Everything the catalogue allows for `loss`, in every dtype (`None` for an unknown loss).
    pub fn full(loss: &str) -> Option<LossCaps> {
        let spec = catalogue::spec(loss)?;
        Some(LossCaps {
            dtypes: Dtype::ALL.to_vec(),
            out_dtypes: vec![Dtype::F32],
            reductions: spec.reductions().to_vec(),
            params: spec
                .params
                .iter()
                .map(|p| (p.name.to_string(), ParamCap::Any))
                .collect(),
            inputs: spec
                .inputs
                .iter()
                .filter(|i| i.optional)
                .map(|i| i.name.to_string())
                .collect(),
            shapes: None,
            grad: true,
        })
    }
}

/// A subject's declaration: its name and, per loss, what it supports.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    pub name: String,
    pub losses: BTreeMap<String, LossCaps>,
}

/// A small deterministic choice among `n` options, from a case's id and a salt.
fn pick(case: &Case, salt: &str, n: usize) -> usize {
    let h = crate::check::gen::hash_bytes(&[
        &case.id.to_le_bytes(),
        case.loss.as_bytes(),
        salt.as_bytes(),
    ]);
    (h % n.max(1) as u64) as usize
}

impl Capabilities {
    /// Everything the catalogue allows for each of `losses`, in every dtype.
    pub fn full<'a>(name: &str, losses: impl IntoIterator<Item = &'a str>) -> Capabilities {
        Capabilities {
            name: name.to_string(),
            losses: losses
                .into_iter()
                .filter_map(|l| LossCaps::full(l).map(|c| (l.to_string(), c)))
                .collect(),
        }
    }

    /// The handshake answer, as PROTOCOL.md writes it.
    pub fn to_json(&self) -> Value {
        let losses: Map<String, Value> = self
            .losses
            .iter()
            .map(|(id, c)| {
                let params: Map<String, Value> = c
                    .params
                    .iter()
                    .map(|(k, p)| {
                        (
                            k.clone(),
                            match p {
                                ParamCap::Any => json!("any"),
                                ParamCap::OneOf(v) => {
                                    Value::Array(v.iter().map(ParamValue::to_json).collect())
                                }
                            },
                        )
                    })
                    .collect();
                let shapes: Vec<String> = match &c.shapes {
                    Some(s) => s.clone(),
                    None => catalogue::spec(id)
                        .map(|s| s.layouts.iter().map(|l| l.name.to_string()).collect())
                        .unwrap_or_default(),
                };
                (
                    id.clone(),
                    json!({
                        "dtypes": c.dtypes.iter().map(|d| d.name()).collect::<Vec<_>>(),
                        "out_dtypes": c.out_dtypes.iter().map(|d| d.name()).collect::<Vec<_>>(),
                        "reductions": c.reductions.iter().map(|r| r.name()).collect::<Vec<_>>(),
                        "params": params, "inputs": c.inputs, "shapes": shapes, "grad": c.grad,
                    }),
                )
            })
            .collect();
        json!({"protocol": 1, "name": self.name, "losses": losses})
    }

    /// Parse a handshake answer. Returns the capabilities and warnings (unknown losses, params
    /// or inputs are ignored with a warning). Absent fields declare the least: `out_dtypes`
    /// none beyond the input dtype, `reductions` only `mean`, `params` none (defaults only),
    /// `inputs` none, `shapes` every layout, `grad` false.
    pub fn from_json(v: &Value) -> Result<(Capabilities, Vec<String>), String> {
        let obj = v
            .as_object()
            .ok_or("the handshake answer is not a JSON object")?;
        match obj.get("protocol") {
            Some(p) if p.as_u64() == Some(1) => {}
            Some(p) => return Err(format!("unsupported protocol version {p} (expected 1)")),
            None => return Err("the handshake answer has no \"protocol\" field".into()),
        }
        if let Some(e) = obj.get("error") {
            return Err(format!(
                "the subject answered the handshake with an error: {e}"
            ));
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("exec subject")
            .to_string();
        let losses = obj
            .get("losses")
            .and_then(Value::as_object)
            .ok_or("the handshake answer has no \"losses\" object")?;
        let mut warnings = Vec::new();
        let mut out = BTreeMap::new();
        for (id, lv) in losses {
            let Some(spec) = catalogue::spec(id) else {
                warnings.push(format!("unknown loss {id:?} in the handshake; ignored"));
                continue;
            };
            let lo = lv
                .as_object()
                .ok_or_else(|| format!("losses.{id} is not an object"))?;
            let strings = |field: &str| -> Result<Option<Vec<String>>, String> {
                match lo.get(field) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(String::from)
                                .ok_or_else(|| format!("losses.{id}.{field}: {x} is not a string"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Some),
                    Some(o) => Err(format!("losses.{id}.{field} must be an array, got {o}")),
                }
            };
            let dtypes_of = |field: &str| -> Result<Vec<Dtype>, String> {
                strings(field)?
                    .unwrap_or_default()
                    .iter()
                    .map(|s| {
                        Dtype::parse(s).ok_or_else(|| {
                            format!("losses.{id}.{field}: {s:?} is not f32, f16 or bf16")
                        })
                    })
                    .collect()
            };
            let dtypes = dtypes_of("dtypes")?;
            if dtypes.is_empty() {
                warnings.push(format!("{id}: no dtypes declared; nothing will be sent"));
            }
            let out_dtypes = dtypes_of("out_dtypes")?;
            let reductions = match strings("reductions")? {
                None => vec![Reduction::Mean],
                Some(v) => v
                    .iter()
                    .map(|s| {
                        Reduction::parse(s)
                            .filter(|r| spec.reductions().contains(r))
                            .ok_or_else(|| {
                                format!("losses.{id}.reductions: {s:?} is not a reduction of {id}")
                            })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let mut params = BTreeMap::new();
            if let Some(pv) = lo.get("params") {
                let pm = pv
                    .as_object()
                    .ok_or_else(|| format!("losses.{id}.params must be an object"))?;
                for (pname, cap) in pm {
                    let Some(ps) = spec.param(pname) else {
                        if pname != "reduction" {
                            warnings.push(format!("{id} has no param {pname:?}; ignored"));
                        }
                        continue;
                    };
                    let c = match cap {
                        Value::String(s) if s == "any" => ParamCap::Any,
                        Value::Array(vals) => ParamCap::OneOf(
                            vals.iter()
                                .map(|x| param_value(ps.kind, x).ok_or_else(|| {
                                    format!("losses.{id}.params.{pname}: {x} is not a {}", ps.kind.name())
                                }))
                                .collect::<Result<_, _>>()?,
                        ),
                        other => {
                            return Err(format!(
                                "losses.{id}.params.{pname} must be \"any\" or a list of values, got {other}"
                            ))
                        }
                    };
                    params.insert(pname.clone(), c);
                }
            }
            let mut inputs = Vec::new();
            for i in strings("inputs")?.unwrap_or_default() {
                match spec.input(&i) {
                    Some(s) if s.optional => inputs.push(i),
                    Some(_) => {} // a required input: always sent
                    None => warnings.push(format!("{id} has no input {i:?}; ignored")),
                }
            }
            let shapes = strings("shapes")?;
            if let Some(sh) = &shapes {
                for s in sh {
                    if !spec.layouts.iter().any(|l| l.name == s) {
                        warnings.push(format!(
                            "{id} has no layout {s:?} (layouts: {})",
                            spec.layouts
                                .iter()
                                .map(|l| l.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
            let grad = match lo.get("grad") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(o) => return Err(format!("losses.{id}.grad must be true or false, got {o}")),
            };
            out.insert(
                id.clone(),
                LossCaps {
                    dtypes,
                    out_dtypes,
                    reductions,
                    params,
                    inputs,
                    shapes,
                    grad,
                },
            );
        }
        Ok((Capabilities { name, losses: out }, warnings))
    }

    /// Restrict a generated case to what the subject declared, deterministically:
    /// an undeclared output dtype becomes the input dtype; without `grad` no gradient is asked;
    /// an undeclared param is set to its default, a param value outside a declared list is
    /// replaced by one of the list; undeclared optional inputs are dropped; an undeclared
    /// reduction is replaced by a declared one (a cotangent whose shape no longer fits is
    /// dropped). `Err` when the loss or dtype is not declared, when no reduction is, when the
    /// layout is not declared, or when dropping an input made the case invalid (values that
    /// were valid only because they were masked or had zero weight).
    pub fn restrict(&self, mut case: Case) -> Result<Case, String> {
        let caps = self
            .losses
            .get(&case.loss)
            .ok_or_else(|| format!("{} is not declared", case.loss))?;
        if !caps.dtypes.contains(&case.dtype) {
            return Err(format!("{} is not declared in {}", case.loss, case.dtype));
        }
        let spec = case.spec();
        let mut changed = false;
        if case.out_dtype != case.dtype && !caps.out_dtypes.contains(&case.out_dtype) {
            case.out_dtype = case.dtype;
            changed = true;
        }
        if !caps.grad && !case.grad.is_empty() {
            case.grad.clear();
        }
        for p in spec.params {
            let cur = case.params.get(p.name).cloned();
            let want = match caps.params.get(p.name) {
                None => Some(p.default.to_value()),
                Some(ParamCap::Any) => None,
                Some(ParamCap::OneOf(list)) if list.is_empty() => Some(p.default.to_value()),
                Some(ParamCap::OneOf(list)) => {
                    if cur.as_ref().is_some_and(|c| list.contains(c)) {
                        None
                    } else {
                        Some(list[pick(&case, p.name, list.len())].clone())
                    }
                }
            };
            if let Some(w) = want {
                if cur.as_ref() != Some(&w) {
                    case.params.insert(p.name.to_string(), w);
                    changed = true;
                }
            }
        }
        let drop: Vec<String> = case
            .inputs
            .keys()
            .filter(|k| spec.input(k).is_some_and(|i| i.optional) && !caps.inputs.contains(k))
            .cloned()
            .collect();
        for k in drop {
            case.inputs.remove(&k);
            changed = true;
        }
        let r = case.reduction();
        if !caps.reductions.contains(&r) {
            if caps.reductions.is_empty() {
                return Err(format!("{}: no reduction declared", case.loss));
            }
            let nr = caps.reductions[pick(&case, "reduction", caps.reductions.len())];
            case.set_reduction(nr);
            if (r == Reduction::None) != (nr == Reduction::None) {
                case.inputs.remove("cotangent");
            }
            changed = true;
        }
        if changed || caps.shapes.is_some() {
            let checked = catalogue::validate(&case)
                .map_err(|e| format!("outside the declared capabilities: {}", e.message))?;
            if let Some(sh) = &caps.shapes {
                if !sh.iter().any(|s| s == checked.layout) {
                    return Err(format!("layout {} is not declared", checked.layout));
                }
            }
        }
        Ok(case)
    }
}

/// A param value of a declared list.
fn param_value(kind: ParamKind, v: &Value) -> Option<ParamValue> {
    Some(match kind {
        ParamKind::Float => ParamValue::Float(losscheck_core::tensor::decode_f64(v)?),
        ParamKind::OptFloat => {
            if v.is_null() || v.as_str() == Some("none") {
                ParamValue::Null
            } else {
                ParamValue::Float(losscheck_core::tensor::decode_f64(v)?)
            }
        }
        ParamKind::Int => ParamValue::Int(v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                .map(|x| x as i64)
        })?),
        ParamKind::Bool => ParamValue::Bool(v.as_bool()?),
        ParamKind::Choice(c) => {
            let s = v.as_str()?;
            if !c.contains(&s) {
                return None;
            }
            ParamValue::Str(s.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trips_and_restricts() {
        let caps = Capabilities::full("kernels", ["mse", "bce"]);
        let (back, w) = Capabilities::from_json(&caps.to_json()).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(back.losses["mse"].reductions, caps.losses["mse"].reductions);
        assert_eq!(back.losses["bce"].params, caps.losses["bce"].params);

        let v: Value = serde_json::from_str(
            r#"{"protocol":1,"name":"t","losses":{"bce":{"dtypes":["f32"],"reductions":["sum"],
                "params":{"log_floor":[-100]},"inputs":[],"grad":false}}}"#,
        )
        .unwrap();
        let (c, _) = Capabilities::from_json(&v).unwrap();
        let mut case = Case::new("bce", Dtype::F32).unwrap();
        case.inputs.insert(
            "prob".into(),
            losscheck_core::Tensor::float(Dtype::F32, vec![2], vec![0.5, 0.25]),
        );
        case.inputs.insert(
            "target".into(),
            losscheck_core::Tensor::float(Dtype::F32, vec![2], vec![1.0, 0.0]),
        );
        case.inputs.insert(
            "weight".into(),
            losscheck_core::Tensor::float(Dtype::F32, vec![2], vec![1.0, 2.0]),
        );
        let r = c.restrict(case.clone()).unwrap();
        assert_eq!(r.reduction(), Reduction::Sum);
        assert!(r.grad.is_empty());
        assert!(!r.inputs.contains_key("weight"));
        assert_eq!(r.params["log_floor"], ParamValue::Float(-100.0));
        let mut f16 = case;
        f16.dtype = Dtype::F16;
        assert!(c.restrict(f16).is_err());
    }
}
