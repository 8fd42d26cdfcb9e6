//! `losscheck-core`: the catalogue (ids, inputs, params and their domains, validation), the
//! dtype layer, and the tensor and case types shared by losscheck's kernels, oracles and
//! harness. No GMP here.

pub mod case;
pub mod catalogue;
pub mod dtype;
pub mod rng;
pub mod tensor;

pub use case::{Case, ErrorKind, LossError, ParamValue, Reduction, Response};
pub use catalogue::{validate, Checked, LossSpec, CATALOGUE};
pub use dtype::{Dtype, Element};
pub use tensor::{Data, Tensor, TensorDtype};
