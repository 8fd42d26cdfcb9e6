//! Tensors as they travel in cases: row-major data with a shape and a dtype tag. Float data is
//! held as exact `f64` values of the tensor's dtype; integer data (class ids, ±1 and {0,1}
//! labels, masks) as `i64`.

use crate::dtype::Dtype;
use serde_json::{json, Value};

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorDtype {
    Float(Dtype),
    I64,
}

impl TensorDtype {
    pub fn name(self) -> &'static str {
        match self {
            TensorDtype::Float(d) => d.name(),
            TensorDtype::I64 => "i64",
        }
    }
    pub fn parse(s: &str) -> Option<TensorDtype> {
        if s == "i64" {
            Some(TensorDtype::I64)
        } else {
            Dtype::parse(s).map(TensorDtype::Float)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
}

/// A row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Number of elements of a shape (1 for `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A float tensor; `data` must already hold values of `dtype` (see [`Tensor::float_rounded`]).
    pub fn float(dtype: Dtype, shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        debug_assert_eq!(numel(&shape), data.len());
        Tensor {
            dtype: TensorDtype::Float(dtype),
            shape,
            data: Data::F(data),
        }
    }

    /// A float tensor whose data are rounded to `dtype`; returns how many values moved.
    pub fn float_rounded(dtype: Dtype, shape: Vec<usize>, data: Vec<f64>) -> (Tensor, usize) {
        let mut moved = 0;
        let data = data
            .into_iter()
            .map(|x| {
                let r = dtype.round(x);
                if r.to_bits() != x.to_bits() && !x.is_nan() {
                    moved += 1;
                }
                r
            })
            .collect();
        (Tensor::float(dtype, shape, data), moved)
    }

    pub fn int(shape: Vec<usize>, data: Vec<i64>) -> Tensor {
        debug_assert_eq!(numel(&shape), data.len());
        Tensor {
            dtype: TensorDtype::I64,
            shape,
            data: Data::I(data),
        }
    }

    pub fn scalar(dtype: Dtype, x: f64) -> Tensor {
        Tensor::float(dtype, vec![], vec![x])
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The float data, if this is a float tensor.
    pub fn f(&self) -> Option<&[f64]> {
        match &self.data {
            Data::F(v) => Some(v),
            Data::I(_) => None,
        }
    }

    /// The integer data, if this is an i64 tensor.
    pub fn i(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I(v) => Some(v),
            Data::F(_) => None,
        }
    }

    pub fn f_mut(&mut self) -> Option<&mut Vec<f64>> {
        match &mut self.data {
            Data::F(v) => Some(v),
            Data::I(_) => None,
        }
    }

    pub fn i_mut(&mut self) -> Option<&mut Vec<i64>> {
        match &mut self.data {
            Data::I(v) => Some(v),
            Data::F(_) => None,
        }
    }

    /// Element `k` as f64 (integers converted).
    pub fn get_f64(&self, k: usize) -> f64 {
        match &self.data {
            Data::F(v) => v[k],
            Data::I(v) => v[k] as f64,
        }
    }

    /// PROTOCOL.md's JSON form: `{"dtype", "shape", "data"}`.
    pub fn to_json(&self) -> Value {
        json!({ "dtype": self.dtype.name(), "shape": self.shape, "data": self.data_json() })
    }

    /// The `data` array alone, numbers encoded per PROTOCOL.md.
    pub fn data_json(&self) -> Value {
        match &self.data {
            Data::F(v) => Value::Array(v.iter().map(|&x| encode_f64(x)).collect()),
            Data::I(v) => Value::Array(v.iter().map(|&x| json!(x)).collect()),
        }
    }
}

/// A float as PROTOCOL.md writes it: the shortest decimal that round-trips in float64 (`-0.0`
/// kept), or the strings `"nan"`, `"inf"`, `"-inf"`.
pub fn encode_f64(x: f64) -> Value {
    if x.is_nan() {
        Value::String("nan".into())
    } else if x == f64::INFINITY {
        Value::String("inf".into())
    } else if x == f64::NEG_INFINITY {
        Value::String("-inf".into())
    } else {
        Value::Number(serde_json::Number::from_f64(x).expect("finite"))
    }
}

/// Parse a float written per PROTOCOL.md: a JSON number (the nearest binary64), or one of the
/// strings `"nan"`, `"inf"`, `"-inf"` (also `"NaN"`, `"Infinity"`, `"-Infinity"`).
pub fn decode_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "nan" | "NaN" | "-nan" => Some(f64::NAN),
            "inf" | "Infinity" | "+inf" => Some(f64::INFINITY),
            "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}
