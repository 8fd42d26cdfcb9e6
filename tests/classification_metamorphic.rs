//! Metamorphic relations of the elementwise classification losses (`bce`, `bce_logits`,
//! `hinge`, `focal`; `check::metamorphic`), each checked on the kernels **and** on the oracle,
//! on a few hundred cases drawn by proptest from the generators' regimes (every regime but long
//! batches) over the four losses × three dtypes: the reduction / mask / weight / permutation /
//! concatenation relations of the regression suite (appended masked and zero-weight elements
//! hold NaN, ±inf, anything — hinge's appended labels any i64), and the family's own: focal with
//! γ = 0 is α_t-weighted bce_logits; flipping the labels mirrors the loss; a broadcast
//! pos_weight is its expansion; a pos_weight of ones is none. A failure is shrunk by proptest
//! to a minimal case, printed as JSON with the relation's description of the break.
//!
//! Each test also asserts that its relation was not vacuous: on both sides, some components were
//! actually compared.
//!
//! `LOSSCHECK_MM_CASES` scales the cases per relation (default 300); `LOSSCHECK_SEED` changes
//! the seed.

use losscheck::check::gen::values;
use losscheck::check::metamorphic::{self as mm, Outcome, Side};
use losscheck::check::subject::Kernels;
use losscheck::check::suite;
use losscheck::{Case, Dtype};
use proptest::prelude::*;

static LOSSES: [&str; 4] = ["bce", "bce_logits", "hinge", "focal"];

fn cases() -> u32 {
    suite::mm_cases(300)
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

/// Rows to append: anything — NaN, ±inf, the max, edges, typical values, probabilities and
/// labels outside their sets — one per data input in name order (bce_logits: logit,
/// pos_weight, target; hinge's labels become i64).
fn tail(dtype: Dtype) -> BoxedStrategy<Vec<Vec<f64>>> {
    let v = prop_oneof![3 => values::poison(dtype), 2 => values::edge_or_inf(dtype), 1 => values::typical(dtype, -4, 4), 1 => Just(1.0), 1 => Just(-1.0)];
    proptest::collection::vec(
        (v.clone(), v.clone(), v).prop_map(|(a, b, c)| vec![a, b, c]),
        1..=8,
    )
    .boxed()
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

/// Cases of one loss (every dtype).
fn cases_of(losses: &'static [&'static str]) -> BoxedStrategy<Case> {
    (
        proptest::sample::select(losses.to_vec()),
        proptest::sample::select(Dtype::ALL.to_vec()),
    )
        .prop_flat_map(|(l, d)| small_cases(l, d))
        .boxed()
}

/// α for the focal relation: none, the ends, short dyadics (exact fallbacks).
fn alpha() -> BoxedStrategy<Option<f64>> {
    proptest::sample::select(vec![
        None,
        Some(0.5),
        Some(0.25),
        Some(0.75),
        Some(0.125),
        Some(0.875),
        Some(0.0),
        Some(1.0),
    ])
    .boxed()
}

#[test]
fn focal_gamma0_is_alpha_weighted_bce() {
    let s = (cases_of(&["focal", "bce_logits"]), alpha()).boxed();
    check(
        "focal_gamma0_is_alpha_weighted_bce",
        s,
        |(c, a), side| mm::focal_gamma0_is_weighted_bce(c, *a, side),
        |(c, a)| format!("{} alpha {a:?}", json(c)),
    );
}

#[test]
fn label_flip_mirrors_the_loss() {
    check(
        "label_flip_mirrors_the_loss",
        any_case(),
        mm::label_flip_symmetry,
        json,
    );
}

#[test]
fn broadcast_pos_weight_is_its_expansion() {
    check(
        "broadcast_pos_weight_is_its_expansion",
        cases_of(&["bce_logits"]),
        mm::broadcast_pos_weight_is_expanded,
        json,
    );
}

#[test]
fn unit_pos_weight_is_none() {
    check(
        "unit_pos_weight_is_none",
        cases_of(&["bce_logits"]),
        mm::unit_pos_weight_is_none,
        json,
    );
}

/// The relations can fail: a focal that ignores α breaks the γ = 0 relation, a hinge that lets
/// a masked NaN (or a garbage label) leak breaks masked appending, a bce_logits that ignores a
/// broadcast pos_weight breaks its expansion, and a gradient that forgets its sign breaks the
/// label flip.
#[test]
fn relations_detect_broken_subjects() {
    use losscheck::check::subject::FnSubject;
    use losscheck::core::ParamValue;
    use losscheck::{Response, Tensor};
    let d = Dtype::F32;
    let mut f = Case::new("focal", d).unwrap();
    f.set_reduction(losscheck::Reduction::Sum);
    f.inputs.insert(
        "logit".into(),
        Tensor::float(d, vec![3], vec![1.5, -2.0, 0.25]),
    );
    f.inputs.insert(
        "target".into(),
        Tensor::float(d, vec![3], vec![1.0, 0.0, 1.0]),
    );
    assert!(mm::focal_gamma0_is_weighted_bce(&f, Some(0.25), Side::Subject(&Kernels)).is_ok());
    assert!(mm::focal_gamma0_is_weighted_bce(&f, Some(0.25), Side::Oracle).is_ok());
    let no_alpha = FnSubject {
        name: "focal_without_alpha".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut u = c.clone();
            u.params.insert("alpha".into(), ParamValue::Null);
            losscheck::kernels::evaluate(&u)
        },
    };
    let e = mm::focal_gamma0_is_weighted_bce(&f, Some(0.25), Side::Subject(&no_alpha));
    assert!(e.is_err(), "a focal ignoring alpha went unnoticed: {e:?}");

    // flipping: a subject whose gradient is |g| breaks the mirror
    let abs_grad = FnSubject {
        name: "abs_grad".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut r = losscheck::kernels::evaluate(c)?;
            for t in r.grad.values_mut() {
                if let Some(v) = t.f_mut() {
                    v.iter_mut().for_each(|x| *x = x.abs());
                }
            }
            Ok(r)
        },
    };
    assert!(mm::label_flip_symmetry(&f, Side::Subject(&Kernels)).is_ok());
    let e = mm::label_flip_symmetry(&f, Side::Subject(&abs_grad));
    assert!(e.is_err(), "a sign-less gradient went unnoticed: {e:?}");

    // hinge: a subject that evaluates masked elements (a NaN score or a label 7 there leaks)
    let mut h = Case::new("hinge", d).unwrap();
    h.inputs
        .insert("score".into(), Tensor::float(d, vec![2], vec![0.5, -3.0]));
    h.inputs
        .insert("target".into(), Tensor::int(vec![2], vec![1, -1]));
    let leaky = FnSubject {
        name: "leaky_mask".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut u = c.clone();
            u.inputs.remove("mask");
            if let Some(t) = u.inputs.get_mut("target").and_then(|t| t.i_mut()) {
                t.iter_mut().for_each(|x| *x = if *x < 0 { -1 } else { 1 });
            }
            losscheck::kernels::evaluate(&u)
        },
    };
    let tail = vec![vec![f64::NAN, 7.0, 0.0]];
    assert!(mm::masked_append_is_inert(&h, &tail, Side::Subject(&Kernels)).is_ok());
    assert!(mm::masked_append_is_inert(&h, &tail, Side::Oracle).is_ok());
    let e = mm::masked_append_is_inert(&h, &tail, Side::Subject(&leaky));
    assert!(e.is_err(), "a leaking masked NaN went unnoticed: {e:?}");

    // bce_logits: a subject that drops a broadcast pos_weight
    let mut b = Case::new("bce_logits", d).unwrap();
    b.set_reduction(losscheck::Reduction::None);
    b.inputs.insert(
        "logit".into(),
        Tensor::float(d, vec![2, 2], vec![0.5, -1.0, 2.0, 0.0]),
    );
    b.inputs.insert(
        "target".into(),
        Tensor::float(d, vec![2, 2], vec![1.0, 1.0, 0.5, 1.0]),
    );
    b.inputs.insert(
        "pos_weight".into(),
        Tensor::float(d, vec![2], vec![4.0, 0.25]),
    );
    let drops = FnSubject {
        name: "drops_broadcast_pos_weight".into(),
        f: |c: &Case| -> Result<Response, losscheck::LossError> {
            let mut u = c.clone();
            if u.inputs
                .get("pos_weight")
                .is_some_and(|p| p.shape.len() == 1 && c.inputs["logit"].shape.len() == 2)
            {
                u.inputs.remove("pos_weight");
            }
            losscheck::kernels::evaluate(&u)
        },
    };
    assert!(mm::broadcast_pos_weight_is_expanded(&b, Side::Subject(&Kernels)).is_ok());
    assert!(mm::broadcast_pos_weight_is_expanded(&b, Side::Oracle).is_ok());
    let e = mm::broadcast_pos_weight_is_expanded(&b, Side::Subject(&drops));
    assert!(
        e.is_err(),
        "a dropped broadcast pos_weight went unnoticed: {e:?}"
    );
}
