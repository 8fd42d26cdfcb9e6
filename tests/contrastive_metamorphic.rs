//! Metamorphic relations of `info_nce` (`check::metamorphic::contrastive`), each checked on
//! the kernels **and** on the oracle, on cases drawn by proptest from the generators' regimes
//! (every regime but long batches) × three dtypes: joint permutation of queries and keys, and
//! invariance under scaling normalized embeddings by powers of two. A failure is shrunk by
//! proptest to a minimal case, printed as JSON with the break.
//!
//! `LOSSCHECK_MM_CASES` scales the cases per relation (default 200); `LOSSCHECK_SEED` changes
//! the seed.

use losscheck::check::metamorphic::contrastive as con;
use losscheck::check::suite;
use proptest::prelude::*;

static NCE: [&str; 1] = ["info_nce"];

#[test]
fn info_nce_joint_permutation() {
    suite::mm_check(
        "info_nce joint permutation",
        suite::mm_cases(200),
        (suite::mm_any_case(&NCE), any::<u64>()).boxed(),
        |(c, seed), side| con::joint_permutation_permutes(c, *seed, side),
        |(c, seed)| format!("seed {seed}: {}", c.to_json()),
    );
}

#[test]
fn info_nce_normalized_scaling() {
    suite::mm_check(
        "info_nce scaling by 2^k",
        suite::mm_cases(200),
        (suite::mm_any_case(&NCE), -4i32..=4, -4i32..=4).boxed(),
        |(c, k, j), side| con::normalized_scaling_is_invariant(c, *k, *j, side),
        |(c, k, j)| format!("k {k}, j {j}: {}", c.to_json()),
    );
}
