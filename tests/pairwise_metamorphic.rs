//! Metamorphic relations of the pairwise losses (`check::metamorphic::pairwise`), each checked
//! on the kernels **and** on the oracle, on cases drawn by proptest from the generators'
//! regimes (every regime but long batches) × three dtypes: `margin_ranking` antisymmetry (s1 ↔
//! s2 with the target negated) and `pairwise_logistic(c, r)` = `dpo` with zero references and
//! β = 1. A failure is shrunk by proptest to a minimal case, printed as JSON with the break.
//!
//! `LOSSCHECK_MM_CASES` scales the cases per relation (default 500); `LOSSCHECK_SEED` changes
//! the seed.

use losscheck::check::metamorphic::pairwise as pw;
use losscheck::check::suite;

static MARGIN: [&str; 1] = ["margin_ranking"];
static LOGISTIC: [&str; 1] = ["pairwise_logistic"];

fn json(c: &losscheck::Case) -> String {
    c.to_json().to_string()
}

#[test]
fn margin_ranking_is_antisymmetric() {
    suite::mm_check(
        "margin_ranking_is_antisymmetric",
        suite::mm_cases(500),
        suite::mm_any_case(&MARGIN),
        pw::margin_ranking_is_antisymmetric,
        json,
    );
}

#[test]
fn pairwise_logistic_is_dpo_with_zero_reference() {
    suite::mm_check(
        "pairwise_logistic_is_dpo",
        suite::mm_cases(500),
        suite::mm_any_case(&LOGISTIC),
        pw::pairwise_logistic_is_dpo,
        json,
    );
}
