//! Subjects: implementations under test. The built-in kernels are one; zoo entries, user types
//! and exec-protocol programs are others.

use losscheck_core::{Case, Dtype, LossError, Response};

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
        let _ = (loss, dtype);
        true
    }
    /// Answer one case: the value in `case.out_dtype`, gradients in `case.dtype`.
    fn eval(&self, case: &Case) -> Result<Response, LossError>;
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
