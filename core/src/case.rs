//! Cases (PROTOCOL.md's eval requests), responses, reductions, params and errors.

use crate::catalogue::{self, InputKind, ParamKind};
use crate::dtype::Dtype;
use crate::tensor::{decode_f64, encode_f64, Data, Tensor, TensorDtype};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// How per-element (or per-row) losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reduction {
    None,
    Sum,
    Mean,
    /// Only for `cross_entropy` on `[B,T,C]`: the plain average of per-sequence means.
    SequenceMean,
}

impl Reduction {
    pub const ALL: [Reduction; 4] = [
        Reduction::None,
        Reduction::Sum,
        Reduction::Mean,
        Reduction::SequenceMean,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
            Reduction::SequenceMean => "sequence_mean",
        }
    }
    pub fn parse(s: &str) -> Option<Reduction> {
        Reduction::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A param value. Float params are binary64 values.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
    /// An optional param that is absent (`alpha`, `log_floor`: none).
    Null,
}

impl ParamValue {
    pub fn to_json(&self) -> Value {
        match self {
            ParamValue::Float(x) => encode_f64(*x),
            ParamValue::Int(i) => json!(i),
            ParamValue::Bool(b) => json!(b),
            ParamValue::Str(s) => json!(s),
            ParamValue::Null => Value::Null,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Float(x) => Some(*x),
            ParamValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(x) => write!(f, "{x:?}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Str(s) => f.write_str(s),
            ParamValue::Null => f.write_str("none"),
        }
    }
}

/// What kind of failure an error is (PROTOCOL.md's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidInput,
    Unsupported,
    Internal,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error from a kernel, an oracle or case parsing, with a message naming the input, the
/// index and the value where there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct LossError {
    pub kind: ErrorKind,
    pub message: String,
}

impl LossError {
    pub fn invalid(message: impl Into<String>) -> LossError {
        LossError {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }
    pub fn unsupported(message: impl Into<String>) -> LossError {
        LossError {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> LossError {
        LossError {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
    /// PROTOCOL.md's error response.
    pub fn to_json(&self, id: u64) -> Value {
        json!({ "id": id, "error": self.message, "kind": self.kind.name() })
    }
}

impl fmt::Display for LossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for LossError {}

/// One evaluation: PROTOCOL.md's eval request. Float inputs hold exact values of `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub id: u64,
    pub loss: String,
    pub dtype: Dtype,
    pub out_dtype: Dtype,
    /// Every param of the loss, `reduction` included.
    pub params: BTreeMap<String, ParamValue>,
    pub inputs: BTreeMap<String, Tensor>,
    /// The inputs whose gradients are wanted.
    pub grad: Vec<String>,
}

impl Case {
    /// A case with every param at its default and no inputs yet.
    pub fn new(loss: &str, dtype: Dtype) -> Result<Case, LossError> {
        let spec = catalogue::spec(loss)
            .ok_or_else(|| LossError::invalid(format!("unknown loss {loss:?}")))?;
        let mut params = BTreeMap::new();
        params.insert("reduction".to_string(), ParamValue::Str("mean".into()));
        for p in spec.params {
            params.insert(p.name.to_string(), p.default.to_value());
        }
        Ok(Case {
            id: 0,
            loss: loss.to_string(),
            dtype,
            out_dtype: dtype,
            params,
            inputs: BTreeMap::new(),
            grad: spec.grads.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn spec(&self) -> &'static catalogue::LossSpec {
        catalogue::spec(&self.loss).expect("case of an unknown loss")
    }

    /// The reduction (`mean` when absent).
    pub fn reduction(&self) -> Reduction {
        match self.params.get("reduction") {
            Some(ParamValue::Str(s)) => Reduction::parse(s).unwrap_or(Reduction::Mean),
            _ => Reduction::Mean,
        }
    }

    pub fn set_reduction(&mut self, r: Reduction) {
        self.params
            .insert("reduction".into(), ParamValue::Str(r.name().into()));
    }

    /// A float param, falling back to the catalogue default; `None` for an absent optional.
    pub fn float_param(&self, name: &str) -> Option<f64> {
        match self.params.get(name) {
            Some(v) => v.as_f64(),
            None => self
                .spec()
                .param(name)
                .and_then(|p| p.default.to_value().as_f64()),
        }
    }

    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.get(name)
    }

    /// The request as PROTOCOL.md writes it.
    pub fn to_json(&self) -> Value {
        let params: Map<String, Value> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let inputs: Map<String, Value> = self
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        json!({
            "op": "eval", "id": self.id, "loss": self.loss,
            "dtype": self.dtype.name(), "out_dtype": self.out_dtype.name(),
            "params": params, "inputs": inputs, "grad": self.grad,
        })
    }

    /// Parse an eval request. Hand-written cases may omit `op`, `id`, `out_dtype`, params
    /// (defaults apply), tensor dtypes (inferred from the catalogue), and `grad` (all
    /// differentiable inputs); float values not in the dtype are rounded and integral floats in
    /// integer tensors accepted — each such repair is reported in the returned warnings.
    pub fn from_json(v: &Value) -> Result<(Case, Vec<String>), LossError> {
        let bad = |m: String| LossError::invalid(m);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("a case must be a JSON object".into()))?;
        if let Some(op) = obj.get("op") {
            if op != "eval" {
                return Err(bad(format!("expected op \"eval\", got {op}")));
            }
        }
        let loss = obj
            .get("loss")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing string field \"loss\"".into()))?;
        let spec = catalogue::spec(loss).ok_or_else(|| {
            bad(format!(
                "unknown loss {loss:?}; `losscheck list` shows the catalogue"
            ))
        })?;
        let dtype_of = |field: &str| -> Result<Option<Dtype>, LossError> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Dtype::parse(s)
                    .map(Some)
                    .ok_or_else(|| bad(format!("{field} {s:?} is not f32, f16 or bf16"))),
                Some(other) => Err(bad(format!("{field} must be a string, got {other}"))),
            }
        };
        let dtype = dtype_of("dtype")?.ok_or_else(|| bad("missing field \"dtype\"".into()))?;
        let mut case = Case::new(loss, dtype)?;
        case.out_dtype = dtype_of("out_dtype")?.unwrap_or(dtype);
        let mut warnings = Vec::new();
        case.id = match obj.get("id") {
            None => 0,
            Some(x) => x
                .as_u64()
                .ok_or_else(|| bad(format!("id must be an unsigned integer, got {x}")))?,
        };
        if let Some(params) = obj.get("params") {
            let params = params
                .as_object()
                .ok_or_else(|| bad("params must be an object".into()))?;
            for (name, pv) in params {
                let value = if name == "reduction" {
                    let s = pv
                        .as_str()
                        .ok_or_else(|| bad(format!("reduction must be a string, got {pv}")))?;
                    Reduction::parse(s).ok_or_else(|| {
                        bad(format!(
                            "reduction {s:?} is not none, sum, mean or sequence_mean"
                        ))
                    })?;
                    ParamValue::Str(s.to_string())
                } else {
                    let p = spec.param(name).ok_or_else(|| {
                        bad(format!(
                            "{loss} has no param {name:?} (params: {})",
                            spec.param_names()
                        ))
                    })?;
                    parse_param(p.kind, name, pv)?
                };
                case.params.insert(name.clone(), value);
            }
        }
        let inputs = obj
            .get("inputs")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("missing object field \"inputs\"".into()))?;
        // An undeclared `cross_entropy` target is soft (float) when it has the logits' rank,
        // class ids (i64) otherwise; a declared dtype decides by itself.
        let rank = |tv: &Value| match tv.get("shape") {
            Some(s) => s.as_array().map(Vec::len),
            None => Some(1),
        };
        let logits_rank = inputs.get("logits").and_then(rank);
        for (name, tv) in inputs {
            let ispec = spec.input(name).ok_or_else(|| {
                bad(format!(
                    "{loss} has no input {name:?} (inputs: {})",
                    spec.input_names()
                ))
            })?;
            let soft = ispec.kind == InputKind::ClassIdOrSoft
                && logits_rank.is_some()
                && rank(tv) == logits_rank;
            let t = parse_tensor(name, tv, dtype, ispec.kind, soft, &mut warnings)?;
            case.inputs.insert(name.clone(), t);
        }
        if let Some(g) = obj.get("grad") {
            let g = g
                .as_array()
                .ok_or_else(|| bad("grad must be an array of input names".into()))?;
            case.grad.clear();
            for x in g {
                let n = x
                    .as_str()
                    .ok_or_else(|| bad(format!("grad entries must be strings, got {x}")))?;
                if !spec.grads.contains(&n) {
                    return Err(bad(format!(
                        "{loss} has no gradient for {n:?} (differentiable: {})",
                        spec.grads.join(", ")
                    )));
                }
                case.grad.push(n.to_string());
            }
        }
        Ok((case, warnings))
    }
}

fn parse_param(kind: ParamKind, name: &str, v: &Value) -> Result<ParamValue, LossError> {
    let bad = || LossError::invalid(format!("param {name}: {v} is not a valid {}", kind.name()));
    Ok(match kind {
        ParamKind::Float => ParamValue::Float(decode_f64(v).ok_or_else(bad)?),
        ParamKind::OptFloat => {
            if v.is_null() || v.as_str() == Some("none") {
                ParamValue::Null
            } else {
                ParamValue::Float(decode_f64(v).ok_or_else(bad)?)
            }
        }
        ParamKind::Int => {
            let x = v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                    .map(|x| x as i64)
            });
            ParamValue::Int(x.ok_or_else(bad)?)
        }
        ParamKind::Bool => ParamValue::Bool(v.as_bool().ok_or_else(bad)?),
        ParamKind::Choice(options) => {
            let s = v.as_str().ok_or_else(bad)?;
            if !options.contains(&s) {
                return Err(LossError::invalid(format!(
                    "param {name}: {s:?} is not one of {}",
                    options.join(", ")
                )));
            }
            ParamValue::Str(s.to_string())
        }
    })
}

fn parse_tensor(
    name: &str,
    v: &Value,
    dtype: Dtype,
    kind: InputKind,
    soft_hint: bool,
    warnings: &mut Vec<String>,
) -> Result<Tensor, LossError> {
    let bad = |m: String| LossError::invalid(format!("input {name}: {m}"));
    let obj = v
        .as_object()
        .ok_or_else(|| bad("must be a tensor object".into()))?;
    let data = obj
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing array field \"data\"".into()))?;
    let shape: Vec<usize> = match obj.get("shape") {
        Some(s) => s
            .as_array()
            .ok_or_else(|| bad("shape must be an array".into()))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|d| d as usize)
                    .ok_or_else(|| bad(format!("bad dimension {d}")))
            })
            .collect::<Result<_, _>>()?,
        None => vec![data.len()],
    };
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows".into()))?;
    if n != data.len() {
        return Err(bad(format!(
            "shape {shape:?} holds {n} elements but data has {}",
            data.len()
        )));
    }
    let declared = match obj.get("dtype") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(TensorDtype::parse(s).ok_or_else(|| bad(format!("unknown dtype {s:?}")))?)
        }
        Some(o) => return Err(bad(format!("dtype must be a string, got {o}"))),
    };
    // Soft cross-entropy targets are float tensors: a declared float dtype (or, undeclared,
    // the logits' rank) makes a `ClassIdOrSoft` input float.
    let want_int = match (kind, declared) {
        (InputKind::ClassIdOrSoft, Some(TensorDtype::Float(_))) => false,
        (InputKind::ClassIdOrSoft, None) => !soft_hint,
        _ => kind.is_integer(),
    };
    let tdtype = declared.unwrap_or(if want_int {
        TensorDtype::I64
    } else {
        TensorDtype::Float(dtype)
    });
    match (tdtype, want_int) {
        (TensorDtype::I64, true) => {
            let mut out = Vec::with_capacity(n);
            let mut repaired = 0;
            for (k, x) in data.iter().enumerate() {
                let i = match x.as_i64() {
                    Some(i) => i,
                    None => match x.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                            repaired += 1;
                            f as i64
                        }
                        _ => return Err(bad(format!("[{k}]={x} is not an integer"))),
                    },
                };
                out.push(i);
            }
            if repaired > 0 {
                warnings.push(format!(
                    "input {name}: {repaired} integral float(s) read as integers"
                ));
            }
            Ok(Tensor::int(shape, out))
        }
        (TensorDtype::Float(d), false) => {
            if d != dtype {
                return Err(bad(format!(
                    "dtype {d} differs from the request's dtype {dtype}"
                )));
            }
            let mut vals = Vec::with_capacity(n);
            for (k, x) in data.iter().enumerate() {
                vals.push(decode_f64(x).ok_or_else(|| bad(format!("[{k}]={x} is not a number")))?);
            }
            let (t, moved) = Tensor::float_rounded(dtype, shape, vals);
            if moved > 0 {
                warnings.push(format!(
                    "input {name}: {moved} value(s) not in {dtype} were rounded to the nearest {dtype} value"
                ));
            }
            Ok(t)
        }
        (TensorDtype::I64, false) => Err(bad(format!("must be a {dtype} tensor, got i64"))),
        (TensorDtype::Float(_), true) => {
            // Integer input written as floats: accept integral values.
            let mut out = Vec::with_capacity(n);
            for (k, x) in data.iter().enumerate() {
                match decode_f64(x) {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => out.push(f as i64),
                    _ => return Err(bad(format!("[{k}]={x} is not an integer"))),
                }
            }
            warnings.push(format!("input {name}: float tensor read as i64"));
            Ok(Tensor::int(shape, out))
        }
    }
}

/// A subject's answer: PROTOCOL.md's eval response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub id: u64,
    /// The value, in the case's `out_dtype`: shape `[]` when reduced.
    pub value: Tensor,
    /// Gradients in the input dtype, one per requested input.
    pub grad: BTreeMap<String, Tensor>,
}

impl Response {
    pub fn to_json(&self) -> Value {
        let shaped = |t: &Tensor| json!({ "shape": t.shape, "data": t.data_json() });
        let grad: Map<String, Value> = self
            .grad
            .iter()
            .map(|(k, t)| (k.clone(), shaped(t)))
            .collect();
        json!({ "id": self.id, "value": shaped(&self.value), "grad": grad })
    }
}

/// Data of a float tensor (panics on an integer tensor: for internal use on validated cases).
pub fn fdata(t: &Tensor) -> &[f64] {
    match &t.data {
        Data::F(v) => v,
        Data::I(_) => panic!("expected a float tensor"),
    }
}
