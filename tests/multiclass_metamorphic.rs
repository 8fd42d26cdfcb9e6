//! Metamorphic relations of the row-wise classification losses (`cross_entropy`, `nll`,
//! `multi_margin`; `check::metamorphic::multiclass`), each checked on the kernels **and** on
//! the oracle, on cases drawn by proptest from the generators' regimes (every regime but long
//! batches) × three dtypes: logit shift invariance; smoothing 0 with unit class weights is plain
//! cross-entropy; appended ignored / masked rows holding anything are inert; splitting a batch
//! combines sums and means by their denominators; `sequence_mean` is the mean of the sequences'
//! means (double averaging); `nll` on an exactly rounded log_softmax is cross-entropy. A
//! failure is shrunk by proptest to a minimal case, printed as JSON with the break.
//!
//! `LOSSCHECK_MM_CASES` scales the cases per relation (default 200); `LOSSCHECK_SEED` changes
//! the seed.

use losscheck::check::gen::values;
use losscheck::check::metamorphic::multiclass as mc;
use losscheck::check::metamorphic::{Outcome, Side};
use losscheck::check::suite;
use losscheck::{Case, Dtype};
use proptest::prelude::*;

static LOSSES: [&str; 3] = ["cross_entropy", "nll", "multi_margin"];
static CE: [&str; 1] = ["cross_entropy"];

fn check<T: std::fmt::Debug>(
    name: &str,
    strategy: BoxedStrategy<T>,
    relation: impl Fn(&T, Side) -> Outcome,
    describe: impl Fn(&T) -> String,
) {
    suite::mm_check(name, suite::mm_cases(200), strategy, relation, describe)
}

fn json(c: &Case) -> String {
    c.to_json().to_string()
}

/// Rows to append: C-agnostic rows of anything (NaN, ±inf, the max, edges, typical values).
fn tail(dtype: Dtype) -> BoxedStrategy<Vec<Vec<f64>>> {
    let v = prop_oneof![3 => values::poison(dtype), 2 => values::edge_or_inf(dtype), 1 => values::typical(dtype, -4, 4)];
    proptest::collection::vec(proptest::collection::vec(v, 64..=64), 1..=4).boxed()
}

#[test]
fn logit_shift_leaves_cross_entropy_unchanged() {
    let s = (suite::mm_any_case(&CE), 0i32..=3, any::<bool>()).boxed();
    check(
        "logit_shift_is_invariant",
        s,
        |(c, k, neg), side| mc::logit_shift_is_invariant(c, *k, *neg, side),
        |(c, k, neg)| format!("{} shift 2^{k} ulps, negative {neg}", json(c)),
    );
}

#[test]
fn smoothing_zero_and_unit_class_weights_are_plain() {
    check(
        "plain_is_smoothing0_unit_weights",
        suite::mm_any_case(&LOSSES),
        mc::plain_is_smoothing0_unit_weights,
        json,
    );
}

#[test]
fn ignored_and_masked_rows_holding_anything_are_inert() {
    let s = suite::mm_loss_dtype(&LOSSES)
        .prop_flat_map(|(l, d)| (suite::mm_small_cases(l, d), tail(d)))
        .boxed();
    check(
        "skipped_rows_are_inert",
        s,
        |(c, t), side| mc::skipped_rows_are_inert(c, t, side),
        |(c, t)| format!("{} tail {t:?}", json(c)),
    );
}

#[test]
fn splitting_a_batch_combines_sums_and_means() {
    let s = (suite::mm_any_case(&LOSSES), any::<usize>()).boxed();
    check(
        "rows_concatenate",
        s,
        |(c, k), side| mc::rows_concatenate(c, *k, side),
        |(c, k)| format!("{} split {k}", json(c)),
    );
}

#[test]
fn sequence_mean_is_the_mean_of_sequence_means() {
    check(
        "sequence_mean_is_mean_of_sequences",
        suite::mm_any_case(&CE),
        mc::sequence_mean_is_mean_of_sequences,
        json,
    );
}

#[test]
fn nll_on_log_softmax_is_cross_entropy() {
    check(
        "nll_on_log_softmax_is_cross_entropy",
        suite::mm_any_case(&CE),
        mc::nll_on_log_softmax_is_cross_entropy,
        json,
    );
}
