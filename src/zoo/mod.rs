//! The zoo: known-bad loss implementations that reproduce failures seen in the wild. Each entry
//! names the failure, where it was seen, and the verdict class the harness must give it; the
//! test suite (`tests/zoo_detection.rs`) runs the harness against every entry and asserts that
//! each is flagged with that verdict — detection power is tested, not assumed.
//!
//! Zoo entries compute the way the code they imitate does (in f32, the usual compute type),
//! but like the kernels they never call the platform libm: every result is the same bits
//! everywhere.

pub mod regression;

use crate::check::compare::Verdict;
use crate::check::subject::Subject;
use losscheck_core::{Case, Dtype, LossError, Response};

/// One known-bad implementation.
pub struct ZooEntry {
    /// Subject name, used as `zoo:<name>` on the command line.
    pub name: &'static str,
    /// The catalogue loss it implements (badly).
    pub loss: &'static str,
    /// The failure and where it was seen.
    pub failure: &'static str,
    /// The verdict class the harness must draw on it.
    pub verdict: Verdict,
    /// The dtypes in which the failure shows (it may be correct in others).
    pub dtypes: &'static [Dtype],
    pub eval: fn(&Case) -> Result<Response, LossError>,
}

/// Every zoo entry.
pub fn entries() -> Vec<&'static ZooEntry> {
    regression::ENTRIES.iter().collect()
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
