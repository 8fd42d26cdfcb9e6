//! The kernels of `contrastive`, `triplet` and `info_nce` against the MPFR oracle: for each
//! loss × {f32, f16, bf16}, `LOSSCHECK_CASES` (default 10,000 — see `DEFAULT`) generated cases
//! from every regime of `check::gen::contrastive` (typical, bit-uniform, extreme — zero
//! vectors, subnormal components, components ≈ 256 whose squares overflow f16, the edge
//! palette —, masks that remove info_nce's query and key together, zero / tiny / huge
//! weights, N = 0, D = 0, D = 1, identical, near and colinear embeddings, the kinks: z = 0 of
//! triplet, d = m of contrastive, ‖x‖ = eps of info_nce; temperatures down to 1e−4, normalize
//! and symmetric both ways, long batches), each judged by `check::compare::judge` (gradients
//! normwise per row). DESIGN.md's bar: **zero findings**, zero oracle errors, every case
//! supported.
//!
//! A failure prints, per failing (loss, dtype): the verdicts, the first failing cases with the
//! command that replays each, and the first one shrunk to a minimal case (JSON).
//! `LOSSCHECK_SEED` changes the campaign seed (default 1, the CLI's default).

use losscheck::check::suite::assert_kernels_match_oracle_with;

/// Cases per loss × dtype in the default run (issue 4's bar: at least 10,000).
const DEFAULT: u64 = 10_000;

#[test]
fn triplet_kernels_match_oracle() {
    assert_kernels_match_oracle_with("triplet", DEFAULT);
}

#[test]
fn contrastive_kernels_match_oracle() {
    assert_kernels_match_oracle_with("contrastive", DEFAULT);
}

#[test]
fn info_nce_kernels_match_oracle() {
    assert_kernels_match_oracle_with("info_nce", DEFAULT);
}
