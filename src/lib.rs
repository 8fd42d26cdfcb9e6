//! # losscheck
//!
//! Fast f32 / f16 / bf16 loss kernels with analytic gradients ([`kernels`]), and — behind the
//! default `harness` feature — the machinery that tells the truth about them and about anyone
//! else's implementation: MPFR oracles (crate `losscheck-oracles`), property-based generators,
//! comparison with ulp / bits-of-error verdicts, metamorphic relations and campaigns
//! ([`check`]), the known-bad implementations of the [`zoo`], and the stability
//! [`report`].
//!
//! The contract (catalogue, policies, error measures) is DESIGN.md; the catalogue lives in
//! [`core::catalogue`].

pub use losscheck_core as core;
pub use losscheck_core::{Case, Dtype, Element, LossError, Reduction, Response, Tensor};

pub mod kernels;

#[cfg(feature = "harness")]
pub mod check;
#[cfg(feature = "harness")]
pub mod report;
#[cfg(feature = "harness")]
pub mod zoo;
#[cfg(feature = "harness")]
pub use losscheck_oracles as oracles;

/// The README's Rust example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
