//! The row-wise probabilistic kernels — `kl_div`, `distill_kl`, `neg_elbo`, `brier` — against
//! the MPFR oracle: for each loss × {f32, f16, bf16}, `LOSSCHECK_CASES` (default 10,000)
//! generated cases from every regime of `check::gen::probabilistic` (typical, bit-uniform,
//! extreme — classification-extreme logits, ±inf, −inf, probabilities at 0/1 and one ulp
//! away, log-variances whose exponential overflows the dtype, tiny ones —, masked and weighted
//! rows holding poison, degenerate shapes, the cancelling styles — log q = RN(ln p), student =
//! teacher, a few ulps apart or shifted by a constant, temperatures down to 1e−4 —, long
//! batches), each judged by `check::compare::judge` (gradients normwise per row). DESIGN.md's
//! bar: **zero findings**, zero oracle errors, every case supported.
//!
//! A failure prints, per failing (loss, dtype): the verdicts, the first failing cases with the
//! command that replays each, and the first one shrunk to a minimal case (JSON).
//! `LOSSCHECK_SEED` changes the campaign seed (default 1).

use losscheck::check::suite::assert_kernels_match_oracle_with;

/// Cases per loss × dtype in the default run (issue 4's bar: at least 10,000).
const DEFAULT: u64 = 10_000;

#[test]
fn kl_div_kernels_match_oracle() {
    assert_kernels_match_oracle_with("kl_div", DEFAULT);
}

#[test]
fn distill_kl_kernels_match_oracle() {
    assert_kernels_match_oracle_with("distill_kl", DEFAULT);
}

#[test]
fn neg_elbo_kernels_match_oracle() {
    assert_kernels_match_oracle_with("neg_elbo", DEFAULT);
}

#[test]
fn brier_kernels_match_oracle() {
    assert_kernels_match_oracle_with("brier", DEFAULT);
}
