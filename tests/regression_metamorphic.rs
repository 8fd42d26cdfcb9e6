//! Metamorphic relations of the regression family (`check::metamorphic`), each checked on the
//! kernels **and** on the oracle, on a few hundred cases drawn by proptest from the generators'
//! regimes (every regime but long batches) over the five losses × three dtypes. A failure is
//! shrunk by proptest to a minimal case, printed as JSON with the relation's description of
//! the break.
//!
//! Each test also asserts that its relation was not vacuous: on both sides, some components were
//! actually compared.
//!
//! `LOSSCHECK_MM_CASES` scales the cases per relation (default 500); `LOSSCHECK_SEED` changes
//! the seed.

use losscheck::check::gen::values;
use losscheck::check::metamorphic::{self as mm, Outcome, Side};
use losscheck::check::subject::Kernels;
use losscheck::check::suite;
use losscheck::{Case, Dtype};
use proptest::prelude::*;

static LOSSES: [&str; 5] = ["mse", "mae", "huber", "quantile", "log_cosh"];

fn cases() -> u32 {
    suite::mm_cases(500)
}

fn small_cases(loss: &'static str, dtype: Dtype) -> BoxedStrategy<Case> {
    suite::mm_small_cases(loss, dtype)
}

fn loss_dtype() -> BoxedStrategy<(&'static str, Dtype)> {
    suite::mm_loss_dtype(&LOSSES)
}

fn any_case() -> BoxedStrategy<Case> {
    suite::mm_any_case(&LOSSES)
}

/// Rows to append: anything — NaN, ±inf, the max, edges, typical values.
fn tail(dtype: Dtype) -> BoxedStrategy<Vec<Vec<f64>>> {
    let v = prop_oneof![3 => values::poison(dtype), 2 => values::edge_or_inf(dtype), 1 => values::typical(dtype, -4, 4)];
    proptest::collection::vec((v.clone(), v).prop_map(|(a, b)| vec![a, b]), 1..=8).boxed()
}

fn check<T: std::fmt::Debug>(
    name: &str,
    strategy: BoxedStrategy<T>,
    relation: impl Fn(&T, Side) -> Outcome,
    describe: impl Fn(&T) -> String,
) {
    suite::mm_check(name, cases(), strategy, relation, describe)
}

fn json(c: &Case) -> String {
    c.to_json().to_string()
}

#[test]
fn mean_is_sum_over_denominator() {
    check(
        "mean_is_sum_over_denominator",
        any_case(),
        mm::mean_is_sum_over_denominator,
        json,
    );
}

#[test]
fn masked_append_is_inert() {
    let s = loss_dtype()
        .prop_flat_map(|(l, d)| (small_cases(l, d), tail(d)))
        .boxed();
    check(
        "masked_append_is_inert",
        s,
        |(c, t), side| mm::masked_append_is_inert(c, t, side),
        |(c, t)| format!("{} tail {t:?}", json(c)),
    );
}

#[test]
fn zero_weight_append_is_inert() {
    let s = loss_dtype()
        .prop_flat_map(|(l, d)| (small_cases(l, d), tail(d)))
        .boxed();
    check(
        "zero_weight_append_is_inert",
        s,
        |(c, t), side| mm::zero_weight_append_is_inert(c, t, side),
        |(c, t)| format!("{} tail {t:?}", json(c)),
    );
}

#[test]
fn unit_weights_are_no_weights() {
    check(
        "unit_weights_are_no_weights",
        any_case(),
        mm::unit_weights_are_no_weights,
        json,
    );
}

#[test]
fn permutation_permutes_output_and_gradient() {
    let s = (any_case(), any::<u64>()).boxed();
    check(
        "permutation_permutes",
        s,
        |(c, seed), side| mm::permutation_permutes(c, *seed, side),
        |(c, seed)| format!("{} seed {seed}", json(c)),
    );
}

#[test]
fn concatenation_combines_sums_and_means() {
    let s = loss_dtype()
        .prop_flat_map(|(l, d)| (small_cases(l, d), small_cases(l, d)))
        .boxed();
    check(
        "concatenation_combines",
        s,
        |(a, b), side| mm::concatenation_combines(a, b, side),
        |(a, b)| format!("a {} b {}", json(a), json(b)),
    );
}

#[test]
fn duplication_keeps_mean() {
    check(
        "duplication_keeps_mean",
        any_case(),
        mm::duplication_keeps_mean,
        json,
    );
}

#[test]
fn weight_scaling_keeps_mean() {
    let k = prop_oneof![(-12i32..=-1), (1i32..=12)];
    let s = (any_case(), k).boxed();
    check(
        "weight_scaling_keeps_mean",
        s,
        |(c, k), side| mm::weight_scaling_keeps_mean(c, *k, side),
        |(c, k)| format!("{} k {k}", json(c)),
    );
}

/// The relations can fail: a subject that averages twice (mean of the two halves' means) breaks
/// concatenation, and one that lets a masked NaN leak breaks masked appending.
#[test]
fn relations_detect_broken_subjects() {
    use losscheck::check::subject::FnSubject;
    use losscheck::{Reduction, Response, Tensor};
    // mean of means over two halves: wrong whenever the halves' denominators differ
    let double_avg = FnSubject {
        name: "double_averaging".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut r = losscheck::kernels::evaluate(c)?;
            if c.reduction() == Reduction::Mean {
                let n = c.inputs["pred"].len();
                if n >= 2 {
                    let half = |lo: usize, hi: usize| {
                        let mut h = c.clone();
                        for t in h.inputs.values_mut() {
                            if t.len() == n {
                                *t = match &t.data {
                                    losscheck::core::Data::F(v) => {
                                        Tensor::float(c.dtype, vec![hi - lo], v[lo..hi].to_vec())
                                    }
                                    losscheck::core::Data::I(v) => {
                                        Tensor::int(vec![hi - lo], v[lo..hi].to_vec())
                                    }
                                };
                            }
                        }
                        losscheck::kernels::evaluate(&h).map(|r| r.value.get_f64(0))
                    };
                    let m = (half(0, n / 2)? + half(n / 2, n)?) / 2.0;
                    r.value = Tensor::scalar(c.out_dtype, c.out_dtype.round(m));
                }
            }
            Ok(r)
        },
    };
    let mut a = Case::new("mse", Dtype::F32).unwrap();
    a.inputs.insert(
        "pred".into(),
        Tensor::float(Dtype::F32, vec![3], vec![1.0, 2.0, 3.0]),
    );
    a.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::F32, vec![3], vec![0.0, 0.0, 0.0]),
    );
    let mut b = a.clone();
    b.inputs
        .insert("pred".into(), Tensor::float(Dtype::F32, vec![1], vec![5.0]));
    b.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::F32, vec![1], vec![0.0]),
    );
    assert!(mm::concatenation_combines(&a, &b, Side::Subject(&Kernels)).is_ok());
    assert!(mm::concatenation_combines(&a, &b, Side::Oracle).is_ok());
    let e = mm::concatenation_combines(&a, &b, Side::Subject(&double_avg));
    assert!(e.is_err(), "double averaging went unnoticed: {e:?}");

    // a subject that evaluates masked elements too (a NaN there leaks into the sum)
    let leaky = FnSubject {
        name: "leaky_mask".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut u = c.clone();
            u.inputs.remove("mask");
            losscheck::kernels::evaluate(&u)
        },
    };
    let tail = vec![vec![f64::NAN, 0.0]];
    assert!(mm::masked_append_is_inert(&a, &tail, Side::Subject(&Kernels)).is_ok());
    let e = mm::masked_append_is_inert(&a, &tail, Side::Subject(&leaky));
    assert!(e.is_err(), "a leaking masked NaN went unnoticed: {e:?}");

    // a subject whose gradient ignores the permutation (returns it sorted) breaks permutation
    let sorted = FnSubject {
        name: "sorted_grad".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut r = losscheck::kernels::evaluate(c)?;
            for t in r.grad.values_mut() {
                if let Some(v) = t.f_mut() {
                    v.sort_by(f64::total_cmp);
                }
            }
            Ok(r)
        },
    };
    let mut p = a.clone();
    p.inputs.insert(
        "pred".into(),
        Tensor::float(Dtype::F32, vec![4], vec![3.0, -1.0, 2.0, 0.5]),
    );
    p.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::F32, vec![4], vec![0.0; 4]),
    );
    let broke =
        (0..8).any(|seed| mm::permutation_permutes(&p, seed, Side::Subject(&sorted)).is_err());
    assert!(
        broke,
        "a gradient that ignores the permutation went unnoticed"
    );
}
