//! The kernels of `margin_ranking`, `pairwise_logistic` (ranking), `dpo` (preference) and
//! `gaussian_nll` (probabilistic) against the MPFR oracle: for each loss × {f32, f16, bf16},
//! `LOSSCHECK_CASES` (default 20,000) generated cases from every regime of
//! `check::gen::pairwise` (typical, bit-uniform, extreme, masked, weighted, shapes, kinks —
//! the margin_ranking kink, DPO margins at the gradient's zero crossing, variances at eps —,
//! long batches; DPO log-probs around −1e4 with chosen and rejected equal or a few ulps
//! apart, β from 1e−3 to 1e3; variances at 0, at eps and at the dtype max), each judged by
//! `check::compare::judge`. DESIGN.md's bar: values within 1 ulp (16-bit output) / 2 ulps
//! (f32 output) plus the conditioning term, gradients within 2 ulps, no spurious NaN or inf,
//! masked NaN never leaks: **zero findings**, zero oracle errors and every case supported.
//!
//! A failure prints, per failing (loss, dtype): the verdicts, the first failing cases with the
//! command that replays each, and the first one shrunk to a minimal case (JSON).
//! `LOSSCHECK_SEED` changes the campaign seed (default 1, the CLI's default).

use losscheck::check::suite::assert_kernels_match_oracle;

#[test]
fn margin_ranking_kernels_match_oracle() {
    assert_kernels_match_oracle("margin_ranking");
}

#[test]
fn pairwise_logistic_kernels_match_oracle() {
    assert_kernels_match_oracle("pairwise_logistic");
}

#[test]
fn dpo_kernels_match_oracle() {
    assert_kernels_match_oracle("dpo");
}

#[test]
fn gaussian_nll_kernels_match_oracle() {
    assert_kernels_match_oracle("gaussian_nll");
}
