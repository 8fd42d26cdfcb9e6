//! The row-wise classification kernels against the MPFR oracle: for each of `cross_entropy`
//! (class ids on [N,C] and [B,T,C] with `sequence_mean`, soft targets; ignore_index, class
//! weights, label smoothing), `nll` and `multi_margin` (p = 1, 2; class, row weights and masks)
//! × {f32, f16, bf16}, `LOSSCHECK_CASES` (default 20,000) generated cases from every regime of
//! `check::gen::multiclass` (typical, bit-uniform, extreme — logits at the exp edges of the
//! dtype and of the f32 compute type, the dtype max, −inf and +inf entries —, ignore plans,
//! class weights, degenerate shapes, confident / tied / offset rows and margin kinks, long rows
//! up to C = 32,000 and long batches), each judged by `check::compare::judge` — gradients
//! normwise per row. DESIGN.md's bar: **zero findings**, zero oracle errors, every case
//! supported.
//!
//! A failure prints, per failing (loss, dtype): the verdicts, the first failing cases with the
//! command that replays each, and the first one shrunk to a minimal case (JSON).
//! `LOSSCHECK_SEED` changes the campaign seed (default 1, the CLI's default).

use losscheck::check::suite::assert_kernels_match_oracle_with;

/// Cases per loss × dtype in the default run: the 20,000 (`LOSSCHECK_CASES` overrides).
const DEFAULT: u64 = 20_000;

#[test]
fn cross_entropy_kernels_match_oracle() {
    assert_kernels_match_oracle_with("cross_entropy", DEFAULT);
}

#[test]
fn nll_kernels_match_oracle() {
    assert_kernels_match_oracle_with("nll", DEFAULT);
}

#[test]
fn multi_margin_kernels_match_oracle() {
    assert_kernels_match_oracle_with("multi_margin", DEFAULT);
}
