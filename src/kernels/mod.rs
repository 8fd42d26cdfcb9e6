//! Fast kernels: every implemented loss of the catalogue, in f32, f16 and bf16, with analytic
//! gradients.
//!
//! [`evaluate`] is the case-level entry (validation, dispatch by loss id and dtype, tensors in
//! and out); each family module also has a typed API over slices, e.g.
//! [`regression::mse`], [`classification::bce_logits`] or
//! [`classification::multiclass::CrossEntropyArgs`]. Shared reduction, mask, weight and
//! cotangent policy lives in [`reduce`], shared logistic functions (softplus, σ) in [`math`].
//! Kernels compute in f64 and round each output once; they never call the platform libm (the
//! `libm` crate instead), so results are the same bits everywhere.

pub mod classification;
pub mod contrastive;
pub mod math;
pub mod preference;
pub mod probabilistic;
pub mod ranking;
pub mod reduce;
pub mod regression;
pub mod vmath;

use half::{bf16, f16};
use losscheck_core::{catalogue, Case, Checked, Dtype, Element, LossError, Response};

/// Is there a built-in kernel for this loss id?
pub fn implemented(loss: &str) -> bool {
    regression::LOSSES.contains(&loss)
        || classification::LOSSES.contains(&loss)
        || classification::multiclass::LOSSES.contains(&loss)
        || ranking::LOSSES.contains(&loss)
        || preference::LOSSES.contains(&loss)
        || probabilistic::LOSSES.contains(&loss)
        || contrastive::LOSSES.contains(&loss)
}

/// Evaluate a case with the built-in kernels.
///
/// Validates the case (`catalogue::validate`: inputs, dtypes, shapes, params, domains, mask and
/// weight values), then computes the value in `case.out_dtype` (the input dtype, or f32 for
/// 16-bit inputs) with shape `[]` when reduced and the row shape for `none`, and the gradients
/// (in the input dtype, shaped like their inputs) of the inputs listed in `case.grad`.
///
/// Errors: `unsupported` for a loss without a kernel (unknown ids included) and for an
/// `out_dtype` that is neither the input dtype nor f32; `invalid_input` for anything
/// validation rejects, with a message naming the input, the index and the value. Never panics.
pub fn evaluate(case: &Case) -> Result<Response, LossError> {
    if !implemented(&case.loss) {
        return Err(LossError::unsupported(match catalogue::spec(&case.loss) {
            Some(_) => format!("no built-in kernel yet for {}", case.loss),
            None => format!("unknown loss {:?}", case.loss),
        }));
    }
    let checked = catalogue::validate(case)?;
    dispatch(case, &checked)
}

fn dispatch(case: &Case, checked: &Checked) -> Result<Response, LossError> {
    match (case.dtype, case.out_dtype) {
        (Dtype::F32, Dtype::F32) => family::<f32, f32>(case, checked),
        (Dtype::F16, Dtype::F16) => family::<f16, f16>(case, checked),
        (Dtype::F16, Dtype::F32) => family::<f16, f32>(case, checked),
        (Dtype::Bf16, Dtype::Bf16) => family::<bf16, bf16>(case, checked),
        (Dtype::Bf16, Dtype::F32) => family::<bf16, f32>(case, checked),
        (d, o) => Err(LossError::unsupported(format!(
            "out_dtype {o} for {d} inputs (the value is in the input dtype, or f32 for 16-bit inputs)"
        ))),
    }
}

fn family<T: Element, O: Element>(case: &Case, checked: &Checked) -> Result<Response, LossError> {
    if regression::LOSSES.contains(&case.loss.as_str()) {
        regression::evaluate_typed::<T, O>(case, checked)
    } else if classification::LOSSES.contains(&case.loss.as_str()) {
        classification::evaluate_typed::<T, O>(case, checked)
    } else if classification::multiclass::LOSSES.contains(&case.loss.as_str()) {
        classification::multiclass::evaluate_typed::<T, O>(case, checked)
    } else if ranking::LOSSES.contains(&case.loss.as_str()) {
        ranking::evaluate_typed::<T, O>(case, checked)
    } else if preference::LOSSES.contains(&case.loss.as_str()) {
        preference::evaluate_typed::<T, O>(case, checked)
    } else if probabilistic::LOSSES.contains(&case.loss.as_str()) {
        probabilistic::evaluate_typed::<T, O>(case, checked)
    } else if contrastive::LOSSES.contains(&case.loss.as_str()) {
        contrastive::evaluate_typed::<T, O>(case, checked)
    } else {
        Err(LossError::unsupported(format!(
            "no built-in kernel yet for {}",
            case.loss
        )))
    }
}
