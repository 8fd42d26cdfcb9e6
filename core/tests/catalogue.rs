//! The catalogue against DESIGN.md's table (typed in here by hand, an independent source), the
//! param domains, and `validate` on every kind of invalid input named in DESIGN.md's "Invalid
//! input" section.

use losscheck_core::catalogue::{self, Structure};
use losscheck_core::{validate, Case, Dtype, ErrorKind, ParamValue, Reduction, Tensor, CATALOGUE};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------
// DESIGN.md's catalogue table, by hand.

use ParamValue::{Bool, Float, Int, Null, Str};

struct Row {
    id: &'static str,
    /// required inputs
    inputs: &'static [&'static str],
    /// optional inputs other than weight, mask and cotangent
    extra_optional: &'static [&'static str],
    grads: &'static [&'static str],
    params: Vec<(&'static str, ParamValue)>,
    /// elementwise (inputs of any shape) or row-wise
    elementwise: bool,
}

fn design_table() -> Vec<Row> {
    let r = |id, inputs, extra_optional, grads, params, elementwise| Row {
        id,
        inputs,
        extra_optional,
        grads,
        params,
        elementwise,
    };
    vec![
        r(
            "mse",
            &["pred", "target"],
            &[],
            &["pred", "target"],
            vec![],
            true,
        ),
        r(
            "mae",
            &["pred", "target"],
            &[],
            &["pred", "target"],
            vec![],
            true,
        ),
        r(
            "huber",
            &["pred", "target"],
            &[],
            &["pred", "target"],
            vec![("delta", Float(1.0))],
            true,
        ),
        r(
            "quantile",
            &["pred", "target"],
            &[],
            &["pred", "target"],
            vec![("tau", Float(0.5))],
            true,
        ),
        r(
            "log_cosh",
            &["pred", "target"],
            &[],
            &["pred", "target"],
            vec![],
            true,
        ),
        r(
            "bce",
            &["prob", "target"],
            &[],
            &["prob"],
            vec![("log_floor", Null)],
            true,
        ),
        r(
            "bce_logits",
            &["logit", "target"],
            &["pos_weight"],
            &["logit"],
            vec![],
            true,
        ),
        r(
            "cross_entropy",
            &["logits", "target"],
            &["class_weight"],
            &["logits"],
            vec![("ignore_index", Int(-100)), ("label_smoothing", Float(0.0))],
            false,
        ),
        r(
            "nll",
            &["logp", "target"],
            &["class_weight"],
            &["logp"],
            vec![("ignore_index", Int(-100))],
            false,
        ),
        r(
            "hinge",
            &["score", "target"],
            &[],
            &["score"],
            vec![("margin", Float(1.0))],
            true,
        ),
        r(
            "multi_margin",
            &["scores", "target"],
            &["class_weight"],
            &["scores"],
            vec![("margin", Float(1.0)), ("p", Int(1))],
            false,
        ),
        r(
            "focal",
            &["logit", "target"],
            &[],
            &["logit"],
            vec![("alpha", Null), ("gamma", Float(2.0))],
            true,
        ),
        r(
            "gaussian_nll",
            &["mean", "target", "var"],
            &[],
            &["mean", "var"],
            vec![("eps", Float(1e-6)), ("full", Bool(false))],
            true,
        ),
        r(
            "kl_div",
            &["input", "target"],
            &[],
            &["input"],
            vec![("log_target", Bool(false))],
            false,
        ),
        r(
            "distill_kl",
            &["student", "teacher"],
            &[],
            &["student"],
            vec![
                ("temperature", Float(1.0)),
                ("direction", Str("forward".into())),
            ],
            false,
        ),
        r(
            "neg_elbo",
            &["x", "recon_logits", "mu", "logvar"],
            &[],
            &["recon_logits", "mu", "logvar"],
            vec![("beta", Float(1.0))],
            false,
        ),
        r("brier", &["prob", "target"], &[], &["prob"], vec![], false),
        r(
            "contrastive",
            &["x1", "x2", "target"],
            &[],
            &["x1", "x2"],
            vec![("margin", Float(1.0))],
            false,
        ),
        r(
            "triplet",
            &["anchor", "positive", "negative"],
            &[],
            &["anchor", "positive", "negative"],
            vec![("margin", Float(1.0)), ("eps", Float(0.0))],
            false,
        ),
        r(
            "info_nce",
            &["query", "key"],
            &[],
            &["query", "key"],
            vec![
                ("temperature", Float(0.07)),
                ("normalize", Bool(true)),
                ("eps", Float(1e-12)),
                ("symmetric", Bool(false)),
            ],
            false,
        ),
        r(
            "margin_ranking",
            &["s1", "s2", "target"],
            &[],
            &["s1", "s2"],
            vec![("margin", Float(0.0))],
            true,
        ),
        r(
            "pairwise_logistic",
            &["chosen", "rejected"],
            &[],
            &["chosen", "rejected"],
            vec![],
            true,
        ),
        r(
            "dpo",
            &[
                "policy_chosen",
                "policy_rejected",
                "ref_chosen",
                "ref_rejected",
            ],
            &[],
            &["policy_chosen", "policy_rejected"],
            vec![("beta", Float(0.1)), ("label_smoothing", Float(0.0))],
            true,
        ),
    ]
}

fn set<'a>(v: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    v.into_iter().collect()
}

#[test]
fn every_design_loss_is_in_the_catalogue_exactly_once_and_nothing_else() {
    let want = set(design_table().iter().map(|r| r.id));
    assert_eq!(want.len(), 23);
    let ids: Vec<&str> = CATALOGUE.iter().map(|s| s.id).collect();
    for id in &ids {
        assert_eq!(
            ids.iter().filter(|x| *x == id).count(),
            1,
            "{id} appears more than once"
        );
    }
    assert_eq!(set(ids.iter().copied()), want);
    assert_eq!(catalogue::ids().count(), 23);
    assert!(catalogue::spec("softmax").is_none());
}

#[test]
fn inputs_grads_and_structure_are_as_the_design_table_says() {
    for row in design_table() {
        let s = catalogue::spec(row.id).unwrap();
        let required = set(s.required_inputs().map(|i| i.name));
        assert_eq!(
            required,
            set(row.inputs.iter().copied()),
            "{}: required inputs",
            row.id
        );
        let weighted = !matches!(row.id, "cross_entropy" | "nll");
        let mut optional = set(row.extra_optional.iter().copied());
        optional.insert("cotangent");
        if weighted {
            optional.insert("weight");
            optional.insert("mask");
        }
        let got_optional = set(s.inputs.iter().filter(|i| i.optional).map(|i| i.name));
        assert_eq!(got_optional, optional, "{}: optional inputs", row.id);
        assert_eq!(s.has_weight_mask(), weighted, "{}", row.id);
        assert_eq!(
            set(s.grads.iter().copied()),
            set(row.grads.iter().copied()),
            "{}: grads",
            row.id
        );
        let want_structure = if row.elementwise {
            Structure::Elementwise
        } else {
            Structure::Rowwise
        };
        assert_eq!(s.structure, want_structure, "{}: structure", row.id);
        // every input of the entry has a shape in every layout (else its shape goes unchecked)
        for layout in s.layouts {
            for i in s.inputs {
                assert!(
                    layout.dims.iter().any(|(n, _)| *n == i.name),
                    "{}: layout {} misses {}",
                    row.id,
                    layout.name,
                    i.name
                );
            }
        }
    }
}

#[test]
fn integer_inputs_are_class_ids_labels_and_masks() {
    // PROTOCOL.md: i64 for class ids, ±1 / {0,1} labels and masks; everything else float.
    let integer = [
        ("cross_entropy", "target"),
        ("nll", "target"),
        ("multi_margin", "target"),
        ("brier", "target"),
        ("hinge", "target"),
        ("margin_ranking", "target"),
        ("contrastive", "target"),
    ];
    for s in CATALOGUE {
        for i in s.inputs {
            let want = i.name == "mask" || integer.contains(&(s.id, i.name));
            assert_eq!(i.kind.is_integer(), want, "{}.{}", s.id, i.name);
        }
    }
}

#[test]
fn params_and_defaults_are_as_the_design_table_says() {
    for row in design_table() {
        let s = catalogue::spec(row.id).unwrap();
        let names = set(s.params.iter().map(|p| p.name));
        assert_eq!(
            names,
            set(row.params.iter().map(|(n, _)| *n)),
            "{}: param names",
            row.id
        );
        let case = Case::new(row.id, Dtype::F32).unwrap();
        assert_eq!(
            case.params.get("reduction"),
            Some(&Str("mean".into())),
            "{}: default reduction",
            row.id
        );
        assert_eq!(case.reduction(), Reduction::Mean);
        assert_eq!(
            case.params.len(),
            row.params.len() + 1,
            "{}: Case::new params",
            row.id
        );
        for (name, want) in &row.params {
            assert_eq!(
                &s.param(name).unwrap().default.to_value(),
                want,
                "{}.{name} default",
                row.id
            );
            assert_eq!(
                case.params.get(*name),
                Some(want),
                "{}.{name} in Case::new",
                row.id
            );
        }
        assert_eq!(
            set(case.grad.iter().map(String::as_str)),
            set(row.grads.iter().copied()),
            "{}: default grad",
            row.id
        );
    }
}

#[test]
fn reductions_are_none_sum_mean_and_sequence_mean_only_for_cross_entropy() {
    for s in CATALOGUE {
        let got: Vec<Reduction> = s.reductions().to_vec();
        if s.id == "cross_entropy" {
            assert_eq!(
                got,
                vec![
                    Reduction::None,
                    Reduction::Sum,
                    Reduction::Mean,
                    Reduction::SequenceMean
                ]
            );
        } else {
            assert_eq!(
                got,
                vec![Reduction::None, Reduction::Sum, Reduction::Mean],
                "{}",
                s.id
            );
        }
    }
    for r in Reduction::ALL {
        assert_eq!(Reduction::parse(r.name()), Some(r));
    }
    assert_eq!(
        Reduction::parse("sequence_mean"),
        Some(Reduction::SequenceMean)
    );
    assert_eq!(Reduction::parse("batchmean"), None);
}

// ---------------------------------------------------------------------------------------------
// Valid cases to start from (N = 2 rows, C = 3, D = 3, K = 2; elementwise shape [2, 3]).

const DT: Dtype = Dtype::F32;

fn f(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::float(DT, shape.to_vec(), data.to_vec())
}
fn i(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::int(shape.to_vec(), data.to_vec())
}

const E6: [f64; 6] = [0.5, -1.0, 2.0, 0.0, -0.0, 3.25];
const P6: [f64; 6] = [0.0, 0.25, 0.5, 0.75, 1.0, 0.125];

fn valid(loss: &str) -> Case {
    let mut c = Case::new(loss, DT).unwrap();
    let e = [2usize, 3];
    let ins: Vec<(&str, Tensor)> = match loss {
        "mse" | "mae" | "huber" | "quantile" | "log_cosh" => {
            vec![("pred", f(&e, &E6)), ("target", f(&e, &P6))]
        }
        "bce" => vec![("prob", f(&e, &P6)), ("target", f(&e, &P6))],
        "bce_logits" | "focal" => vec![("logit", f(&e, &E6)), ("target", f(&e, &P6))],
        "hinge" => vec![
            ("score", f(&e, &E6)),
            ("target", i(&e, &[1, -1, 1, 1, -1, -1])),
        ],
        "margin_ranking" => vec![
            ("s1", f(&e, &E6)),
            ("s2", f(&e, &P6)),
            ("target", i(&e, &[1, -1, 1, 1, -1, -1])),
        ],
        "pairwise_logistic" => vec![("chosen", f(&e, &E6)), ("rejected", f(&e, &P6))],
        "dpo" => vec![
            ("policy_chosen", f(&e, &E6)),
            ("policy_rejected", f(&e, &P6)),
            ("ref_chosen", f(&e, &P6)),
            ("ref_rejected", f(&e, &E6)),
        ],
        "gaussian_nll" => vec![
            ("mean", f(&e, &E6)),
            ("target", f(&e, &P6)),
            ("var", f(&e, &[0.0, 1.0, 2.0, f64::INFINITY, 1e-9, 0.5])),
        ],
        "cross_entropy" => vec![("logits", f(&e, &E6)), ("target", i(&[2], &[2, 0]))],
        "nll" => vec![
            ("logp", f(&e, &[-1.0, -2.0, -0.5, -0.1, -3.0, -1.5])),
            ("target", i(&[2], &[1, 2])),
        ],
        "multi_margin" => vec![("scores", f(&e, &E6)), ("target", i(&[2], &[0, 2]))],
        "kl_div" => vec![
            ("input", f(&e, &[-1.0, -2.0, -0.5, -0.1, -3.0, -1.5])),
            ("target", f(&e, &P6)),
        ],
        "distill_kl" => vec![("student", f(&e, &E6)), ("teacher", f(&e, &P6))],
        "neg_elbo" => vec![
            ("x", f(&e, &P6)),
            ("recon_logits", f(&e, &E6)),
            ("mu", f(&[2, 2], &[0.0, 1.0, -1.0, 0.5])),
            ("logvar", f(&[2, 2], &[0.0, -1.0, 1.0, 0.5])),
        ],
        "brier" => vec![("prob", f(&e, &P6)), ("target", i(&[2], &[0, 2]))],
        "contrastive" => vec![
            ("x1", f(&e, &E6)),
            ("x2", f(&e, &P6)),
            ("target", i(&[2], &[0, 1])),
        ],
        "triplet" => vec![
            ("anchor", f(&e, &E6)),
            ("positive", f(&e, &P6)),
            ("negative", f(&e, &E6)),
        ],
        "info_nce" => vec![("query", f(&e, &E6)), ("key", f(&e, &P6))],
        _ => panic!("no valid case for {loss}"),
    };
    for (n, t) in ins {
        c.inputs.insert(n.to_string(), t);
    }
    c
}

fn ok(c: &Case) -> catalogue::Checked {
    match validate(c) {
        Ok(ch) => ch,
        Err(e) => panic!("{}: valid case rejected: {}", c.loss, e.message),
    }
}

/// The error of an invalid case; asserts the kind and that the message contains every needle.
fn err(c: &Case, needles: &[&str]) -> String {
    let e = match validate(c) {
        Ok(_) => panic!(
            "{}: invalid case accepted (expected an error mentioning {needles:?})",
            c.loss
        ),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{}", e.message);
    for n in needles {
        assert!(
            e.message.contains(n),
            "{}: message {:?} does not mention {n:?}",
            c.loss,
            e.message
        );
    }
    e.message
}

fn with(mut c: Case, name: &str, t: Tensor) -> Case {
    c.inputs.insert(name.to_string(), t);
    c
}

fn param(mut c: Case, name: &str, v: ParamValue) -> Case {
    c.params.insert(name.to_string(), v);
    c
}

fn set_f(mut c: Case, name: &str, k: usize, x: f64) -> Case {
    c.inputs.get_mut(name).unwrap().f_mut().unwrap()[k] = x;
    c
}

fn set_i(mut c: Case, name: &str, k: usize, x: i64) -> Case {
    c.inputs.get_mut(name).unwrap().i_mut().unwrap()[k] = x;
    c
}

/// Per-output weight and mask shapes of a loss's valid case.
fn out_shape(loss: &str) -> Vec<usize> {
    if catalogue::spec(loss).unwrap().structure == Structure::Elementwise {
        vec![2, 3]
    } else {
        vec![2]
    }
}

#[test]
fn the_base_cases_are_valid_with_and_without_weight_mask_and_cotangent() {
    for s in CATALOGUE {
        ok(&valid(s.id));
        let sh = out_shape(s.id);
        let n: usize = sh.iter().product();
        for r in s.reductions() {
            let mut c = valid(s.id);
            if *r == Reduction::SequenceMean {
                continue; // needs [B,T,C]: below
            }
            c.set_reduction(*r);
            let cot_shape = if *r == Reduction::None {
                sh.clone()
            } else {
                vec![]
            };
            let cn: usize = cot_shape.iter().product();
            c = with(c, "cotangent", f(&cot_shape, &vec![1.5; cn]));
            if s.has_weight_mask() {
                c = with(c, "weight", f(&sh, &vec![0.5; n]));
                c = with(c, "mask", i(&sh, &vec![1; n]));
            }
            ok(&c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Param domains.

#[test]
fn param_domains_accept_their_edges_and_reject_everything_else() {
    let inf = f64::INFINITY;
    let nan = f64::NAN;
    let tiny = 4.9e-324;
    let below1 = 1.0 - f64::EPSILON / 2.0;
    // (loss, param, valid values, invalid values) — DESIGN.md "Param domains"; every float
    // param is finite.
    let table: Vec<(&str, &str, Vec<f64>, Vec<f64>)> = vec![
        (
            "huber",
            "delta",
            vec![tiny, 1.0, 1e300],
            vec![0.0, -0.0, -1.0, nan, inf, -inf],
        ),
        (
            "quantile",
            "tau",
            vec![tiny, 0.5, below1],
            vec![0.0, 1.0, -0.25, 1.5, nan, inf, -inf],
        ),
        (
            "focal",
            "alpha",
            vec![0.0, 0.25, 1.0],
            vec![-tiny, 1.0 + f64::EPSILON, nan, inf, -inf],
        ),
        (
            "focal",
            "gamma",
            vec![0.0, 2.0, 1e6],
            vec![-tiny, -1.0, nan, inf, -inf],
        ),
        (
            "cross_entropy",
            "label_smoothing",
            vec![0.0, 0.1, 1.0],
            vec![-tiny, 1.0 + f64::EPSILON, nan, inf],
        ),
        (
            "dpo",
            "label_smoothing",
            vec![0.0, 0.25, 0.5],
            vec![-tiny, 0.5 + f64::EPSILON / 2.0, 1.0, nan, inf],
        ),
        (
            "distill_kl",
            "temperature",
            vec![tiny, 1.0, 100.0],
            vec![0.0, -1.0, nan, inf, -inf],
        ),
        (
            "info_nce",
            "temperature",
            vec![tiny, 0.07, 10.0],
            vec![0.0, -0.07, nan, inf],
        ),
        (
            "gaussian_nll",
            "eps",
            vec![tiny, 1e-6, 1.0],
            vec![0.0, -1e-6, nan, inf],
        ),
        (
            "info_nce",
            "eps",
            vec![tiny, 1e-12],
            vec![0.0, -1e-12, nan, inf],
        ),
        ("triplet", "eps", vec![0.0, 1e-6], vec![-tiny, nan, inf]),
        (
            "dpo",
            "beta",
            vec![tiny, 0.1, 1e4],
            vec![0.0, -0.1, nan, inf],
        ),
        (
            "neg_elbo",
            "beta",
            vec![0.0, 1.0, 1e4],
            vec![-tiny, nan, inf],
        ),
        (
            "hinge",
            "margin",
            vec![-1e300, 0.0, 1.0],
            vec![nan, inf, -inf],
        ),
        (
            "multi_margin",
            "margin",
            vec![-1.0, 0.0, 1e300],
            vec![nan, inf, -inf],
        ),
        (
            "contrastive",
            "margin",
            vec![-1.0, 0.0, 2.0],
            vec![nan, inf, -inf],
        ),
        (
            "triplet",
            "margin",
            vec![-1.0, 0.0, 2.0],
            vec![nan, inf, -inf],
        ),
        (
            "margin_ranking",
            "margin",
            vec![-1.0, 0.0, 2.0],
            vec![nan, inf, -inf],
        ),
        (
            "bce",
            "log_floor",
            vec![0.0, -0.0, -100.0, -1e300],
            vec![tiny, 1.0, nan, inf, -inf],
        ),
    ];
    for (loss, name, good, bad) in table {
        for x in good {
            ok(&param(valid(loss), name, Float(x)));
        }
        for x in bad {
            err(&param(valid(loss), name, Float(x)), &[name]);
        }
    }
    // optional floats may be none
    ok(&param(valid("focal"), "alpha", Null));
    ok(&param(valid("bce"), "log_floor", Null));
    // p ∈ {1, 2}
    ok(&param(valid("multi_margin"), "p", Int(1)));
    ok(&param(valid("multi_margin"), "p", Int(2)));
    for p in [0, 3, -1, 100] {
        err(
            &param(valid("multi_margin"), "p", Int(p)),
            &["p", &p.to_string()],
        );
    }
    // choices and booleans
    ok(&param(
        valid("distill_kl"),
        "direction",
        Str("reverse".into()),
    ));
    err(
        &param(valid("distill_kl"), "direction", Str("backward".into())),
        &["direction", "backward"],
    );
    err(
        &param(valid("info_nce"), "normalize", Float(1.0)),
        &["normalize"],
    );
    ok(&param(valid("cross_entropy"), "ignore_index", Int(7)));
    // the error names the value
    err(
        &param(valid("huber"), "delta", Float(-2.5)),
        &["delta", "-2.5"],
    );
    err(
        &param(valid("quantile"), "tau", Float(f64::NAN)),
        &["tau", "NaN"],
    );
    // unknown params
    err(&param(valid("mse"), "delta", Float(1.0)), &["delta"]);
}

#[test]
fn reduction_must_be_one_the_loss_supports() {
    err(
        &param(valid("mse"), "reduction", Str("sequence_mean".into())),
        &["sequence_mean"],
    );
    err(
        &param(
            valid("cross_entropy"),
            "reduction",
            Str("sequence_mean".into()),
        ),
        &["sequence_mean"],
    );
    err(
        &param(valid("mse"), "reduction", Str("avg".into())),
        &["reduction", "avg"],
    );
    err(&param(valid("mse"), "reduction", Int(1)), &["reduction"]);
    for r in ["none", "sum", "mean"] {
        ok(&param(valid("mse"), "reduction", Str(r.into())));
    }
}

#[test]
fn out_dtype_is_the_input_dtype_or_f32() {
    let mut c = valid("mse");
    c.out_dtype = Dtype::F16;
    err(&c, &["out_dtype", "f16"]);
    let mut c = Case::new("mse", Dtype::Bf16).unwrap();
    c.inputs.insert(
        "pred".into(),
        Tensor::float(Dtype::Bf16, vec![2], vec![1.0, 2.0]),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::Bf16, vec![2], vec![1.0, 0.5]),
    );
    ok(&c);
    c.out_dtype = Dtype::F32;
    ok(&c);
    c.out_dtype = Dtype::F16;
    err(&c, &["out_dtype"]);
}

// ---------------------------------------------------------------------------------------------
// Inputs: presence, dtypes, grads.

#[test]
fn missing_unknown_and_wrongly_typed_inputs_are_rejected() {
    let mut c = valid("mse");
    c.inputs.remove("target");
    err(&c, &["target", "missing"]);
    err(&with(valid("mse"), "logits", f(&[2, 3], &E6)), &["logits"]);
    err(
        &with(valid("cross_entropy"), "weight", f(&[2], &[1.0, 1.0])),
        &["weight"],
    );
    err(&with(valid("nll"), "mask", i(&[2], &[1, 1])), &["mask"]);
    // a float input given as i64, an i64 input given as float, a float input in another dtype
    err(
        &with(valid("mse"), "pred", i(&[2, 3], &[1; 6])),
        &["pred", "i64"],
    );
    err(
        &with(valid("hinge"), "target", f(&[2, 3], &[1.0; 6])),
        &["target"],
    );
    err(
        &with(valid("mse"), "mask", f(&[2, 3], &[1.0; 6])),
        &["mask"],
    );
    err(
        &with(
            valid("mse"),
            "pred",
            Tensor::float(Dtype::F16, vec![2, 3], E6.to_vec()),
        ),
        &["pred", "f16"],
    );
    // data length disagreeing with the shape
    let mut t = f(&[2, 3], &E6);
    t.shape = vec![2, 2];
    err(&with(valid("mse"), "pred", t), &["pred"]);
    // gradients only for differentiable inputs
    let mut c = valid("bce");
    c.grad = vec!["target".into()];
    err(&c, &["target"]);
}

// ---------------------------------------------------------------------------------------------
// Shapes.

#[test]
fn elementwise_shape_mismatches_are_rejected_naming_the_input() {
    err(
        &with(valid("mse"), "target", f(&[3, 2], &E6)),
        &["target", "[3, 2]"],
    );
    err(&with(valid("mse"), "target", f(&[6], &E6)), &["target"]);
    err(
        &with(valid("gaussian_nll"), "var", f(&[2, 2], &[1.0; 4])),
        &["var"],
    );
    err(
        &with(valid("hinge"), "target", i(&[3], &[1; 3])),
        &["target"],
    );
    err(
        &with(valid("mse"), "weight", f(&[2], &[1.0; 2])),
        &["weight"],
    );
    err(&with(valid("mse"), "mask", i(&[3, 2], &[1; 6])), &["mask"]);
    err(
        &with(valid("dpo"), "ref_rejected", f(&[2, 3, 1], &E6)),
        &["ref_rejected"],
    );
}

#[test]
fn elementwise_losses_take_any_shape() {
    for s in CATALOGUE
        .iter()
        .filter(|s| s.structure == Structure::Elementwise)
    {
        for shape in [vec![], vec![4], vec![1, 2, 2], vec![0], vec![2, 0, 3]] {
            let n: usize = shape.iter().product();
            let mut c = Case::new(s.id, DT).unwrap();
            for inp in s.required_inputs() {
                let t = if inp.kind.is_integer() {
                    Tensor::int(shape.clone(), vec![1; n])
                } else {
                    Tensor::float(DT, shape.clone(), vec![0.5; n])
                };
                c.inputs.insert(inp.name.into(), t);
            }
            c = with(c, "weight", Tensor::float(DT, shape.clone(), vec![1.0; n]));
            c = with(c, "mask", Tensor::int(shape.clone(), vec![1; n]));
            let ch = ok(&c);
            assert_eq!(ch.row_shape, shape, "{}", s.id);
            assert_eq!(ch.rows, n, "{}", s.id);
            assert!(
                ch.dims.is_empty(),
                "{}: elementwise losses bind no dims",
                s.id
            );
            c.set_reduction(Reduction::None);
            ok(&with(
                c.clone(),
                "cotangent",
                Tensor::float(DT, shape.clone(), vec![1.0; n]),
            ));
            err(
                &with(
                    c,
                    "cotangent",
                    Tensor::float(DT, vec![n + 1], vec![1.0; n + 1]),
                ),
                &["cotangent"],
            );
        }
    }
}

#[test]
fn rowwise_shape_mismatches_are_rejected_naming_the_input() {
    err(
        &with(valid("cross_entropy"), "target", i(&[3], &[0; 3])),
        &["target"],
    );
    err(
        &with(valid("nll"), "target", i(&[2, 1], &[0; 2])),
        &["target"],
    );
    err(
        &with(valid("multi_margin"), "class_weight", f(&[4], &[1.0; 4])),
        &["class_weight"],
    );
    err(
        &with(valid("cross_entropy"), "class_weight", f(&[2], &[1.0; 2])),
        &["class_weight"],
    );
    err(
        &with(valid("kl_div"), "target", f(&[2, 4], &[0.0; 8])),
        &["target"],
    );
    err(
        &with(valid("distill_kl"), "teacher", f(&[3, 2], &E6)),
        &["teacher"],
    );
    err(
        &with(valid("neg_elbo"), "logvar", f(&[2, 3], &E6)),
        &["logvar"],
    );
    err(
        &with(valid("neg_elbo"), "recon_logits", f(&[2, 4], &[0.0; 8])),
        &["recon_logits"],
    );
    err(
        &with(valid("brier"), "target", i(&[3], &[0; 3])),
        &["target"],
    );
    err(
        &with(valid("contrastive"), "x2", f(&[2, 2], &[0.0; 4])),
        &["x2"],
    );
    err(
        &with(valid("contrastive"), "target", i(&[3], &[0; 3])),
        &["target"],
    );
    err(
        &with(valid("triplet"), "negative", f(&[3, 3], &[0.0; 9])),
        &["negative"],
    );
    err(
        &with(valid("info_nce"), "key", f(&[3, 3], &[0.0; 9])),
        &["key"],
    );
    err(
        &with(valid("info_nce"), "weight", f(&[2, 3], &E6)),
        &["weight"],
    );
    err(&with(valid("kl_div"), "mask", i(&[3], &[1; 3])), &["mask"]);
    err(
        &with(valid("triplet"), "query", f(&[2, 3], &E6)),
        &["query"],
    ); // unknown input
       // rank errors
    err(&with(valid("kl_div"), "input", f(&[6], &E6)), &["input"]);
    err(
        &with(valid("info_nce"), "query", f(&[1, 2, 3], &E6)),
        &["query"],
    );
}

#[test]
fn row_shapes_and_dim_bindings() {
    let dims = |ch: &catalogue::Checked| {
        ch.dims
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<Vec<_>>()
    };
    let d = |v: &[(&str, usize)]| {
        v.iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect::<Vec<_>>()
    };
    let ch = ok(&valid("cross_entropy"));
    assert_eq!(
        (ch.layout, ch.row_shape.clone(), ch.rows, ch.soft),
        ("NC", vec![2], 2, false)
    );
    assert_eq!(dims(&ch), d(&[("C", 3), ("N", 2)]));
    assert_eq!(ch.dim("C"), 3);
    let ch = ok(&valid("neg_elbo"));
    assert_eq!(ch.row_shape, vec![2]);
    assert_eq!(dims(&ch), d(&[("D", 3), ("K", 2), ("N", 2)]));
    for loss in ["nll", "multi_margin", "kl_div", "distill_kl", "brier"] {
        let ch = ok(&valid(loss));
        assert_eq!((ch.row_shape.clone(), ch.rows), (vec![2], 2), "{loss}");
        assert_eq!(dims(&ch), d(&[("C", 3), ("N", 2)]), "{loss}");
    }
    for loss in ["contrastive", "triplet", "info_nce"] {
        let ch = ok(&valid(loss));
        assert_eq!(ch.row_shape, vec![2], "{loss}");
        assert_eq!(dims(&ch), d(&[("D", 3), ("N", 2)]), "{loss}");
    }
    let ch = ok(&valid("mse"));
    assert_eq!((ch.row_shape.clone(), ch.rows), (vec![2, 3], 6));
    // neg_elbo with K ≠ D and a single row
    let mut c = Case::new("neg_elbo", DT).unwrap();
    c = with(c, "x", f(&[1, 4], &[0.0, 1.0, 0.5, 0.5]));
    c = with(c, "recon_logits", f(&[1, 4], &[0.0; 4]));
    c = with(c, "mu", f(&[1, 1], &[0.0]));
    c = with(c, "logvar", f(&[1, 1], &[0.0]));
    let ch = ok(&c);
    assert_eq!(dims(&ch), d(&[("D", 4), ("K", 1), ("N", 1)]));
}

#[test]
fn cross_entropy_accepts_the_nc_btc_and_soft_layouts() {
    // [B,T,C] with [B,T] ids
    let logits = f(
        &[2, 2, 3],
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    );
    let mut c = with(valid("cross_entropy"), "logits", logits);
    c = with(c, "target", i(&[2, 2], &[0, 1, 2, -100]));
    c = with(c, "class_weight", f(&[3], &[1.0, 0.5, 2.0]));
    let ch = ok(&c);
    assert_eq!(
        (ch.layout, ch.row_shape.clone(), ch.rows, ch.soft),
        ("BTC", vec![2, 2], 4, false)
    );
    assert_eq!((ch.dim("B"), ch.dim("T"), ch.dim("C")), (2, 2, 3));
    c.set_reduction(Reduction::SequenceMean);
    ok(&c);
    c.set_reduction(Reduction::None);
    ok(&with(c.clone(), "cotangent", f(&[2, 2], &[1.0; 4])));
    err(
        &with(c.clone(), "cotangent", f(&[4], &[1.0; 4])),
        &["cotangent"],
    );
    err(&set_i(c.clone(), "target", 2, 3), &["target[2]", "3"]);
    // BTC with [B] or [B,T,C] integer targets fits no layout
    err(&with(c.clone(), "target", i(&[2], &[0, 1])), &["target"]);
    // soft targets [N,C] (float)
    let c = with(
        valid("cross_entropy"),
        "target",
        f(&[2, 3], &[0.2, 0.3, 0.5, 1.0, 0.0, 0.0]),
    );
    let ch = ok(&c);
    assert_eq!(
        (ch.layout, ch.row_shape.clone(), ch.soft),
        ("soft", vec![2], true)
    );
    ok(&with(c.clone(), "class_weight", f(&[3], &[1.0, 0.0, 2.0])));
    ok(&param(c.clone(), "label_smoothing", Float(0.3)));
    err(&set_f(c.clone(), "target", 4, 1.5), &["target[4]", "1.5"]);
    err(
        &set_f(c.clone(), "target", 0, -0.25),
        &["target[0]", "-0.25"],
    );
    err(
        &set_f(c.clone(), "target", 0, f64::INFINITY),
        &["target[0]", "inf"],
    );
    ok(&set_f(c.clone(), "target", 3, f64::NAN)); // NaN propagates
    let mut s = c.clone();
    s.set_reduction(Reduction::SequenceMean);
    err(&s, &["sequence_mean"]);
    // soft targets in another dtype, or of the wrong shape
    err(
        &with(
            c.clone(),
            "target",
            Tensor::float(Dtype::F16, vec![2, 3], vec![0.0; 6]),
        ),
        &["target"],
    );
    err(&with(c, "target", f(&[2, 2], &[0.5; 4])), &["target"]);
    // integer one-hot [N,C] is not a soft target
    err(
        &with(
            valid("cross_entropy"),
            "target",
            i(&[2, 3], &[0, 1, 0, 1, 0, 0]),
        ),
        &["target"],
    );
}

#[test]
fn sequence_mean_needs_btc_logits() {
    let mut c = valid("cross_entropy");
    c.set_reduction(Reduction::SequenceMean);
    err(&c, &["sequence_mean"]);
    let mut c = valid("nll");
    c.set_reduction(Reduction::SequenceMean);
    err(&c, &["sequence_mean"]);
}

#[test]
fn cotangent_has_the_output_shape_for_none_and_is_a_scalar_otherwise() {
    for s in CATALOGUE {
        let sh = out_shape(s.id);
        let n: usize = sh.iter().product();
        for r in [Reduction::Sum, Reduction::Mean] {
            let mut c = valid(s.id);
            c.set_reduction(r);
            ok(&with(c.clone(), "cotangent", f(&[], &[2.0])));
            err(
                &with(c.clone(), "cotangent", f(&sh, &vec![1.0; n])),
                &["cotangent"],
            );
            err(&with(c, "cotangent", f(&[1], &[1.0])), &["cotangent"]);
        }
        let mut c = valid(s.id);
        c.set_reduction(Reduction::None);
        ok(&with(c.clone(), "cotangent", f(&sh, &vec![1.0; n])));
        err(
            &with(c.clone(), "cotangent", f(&[], &[1.0])),
            &["cotangent"],
        );
        err(
            &with(c, "cotangent", f(&[n, 1], &vec![1.0; n])),
            &["cotangent"],
        );
    }
}

#[test]
fn bce_logits_pos_weight_is_elementwise_or_broadcast_over_the_last_dim() {
    let c = valid("bce_logits"); // [2, 3]
    ok(&with(c.clone(), "pos_weight", f(&[3], &[1.0, 2.0, 0.0])));
    ok(&with(c.clone(), "pos_weight", f(&[2, 3], &[1.0; 6])));
    err(
        &with(c.clone(), "pos_weight", f(&[2], &[1.0; 2])),
        &["pos_weight"],
    );
    err(
        &with(c.clone(), "pos_weight", f(&[1, 3], &[1.0; 3])),
        &["pos_weight"],
    );
    err(
        &with(c.clone(), "pos_weight", f(&[3, 2], &[1.0; 6])),
        &["pos_weight"],
    );
    err(
        &with(c.clone(), "pos_weight", f(&[3], &[1.0, -2.0, 0.0])),
        &["pos_weight[1]", "-2"],
    );
    err(
        &with(c.clone(), "pos_weight", f(&[3], &[1.0, 1.0, f64::NAN])),
        &["pos_weight[2]", "NaN"],
    );
    err(
        &with(
            c,
            "pos_weight",
            f(&[2, 3], &[1.0, 1.0, 1.0, 1.0, f64::INFINITY, 1.0]),
        ),
        &["pos_weight[4]", "inf"],
    );
}

// ---------------------------------------------------------------------------------------------
// Value ranges.

#[test]
fn class_ids_outside_zero_to_c_are_rejected_unless_they_are_ignore_index() {
    for loss in ["cross_entropy", "nll", "multi_margin", "brier"] {
        for bad in [3, -1, 1000, i64::MIN] {
            err(
                &set_i(valid(loss), "target", 1, bad),
                &["target[1]", &bad.to_string(), "3"],
            );
        }
        ok(&set_i(valid(loss), "target", 1, 0));
        ok(&set_i(valid(loss), "target", 1, 2));
    }
    // ignore_index is accepted where the loss has one (default −100, or any other value)
    for loss in ["cross_entropy", "nll"] {
        ok(&set_i(valid(loss), "target", 1, -100));
        let c = param(valid(loss), "ignore_index", Int(7));
        ok(&set_i(c.clone(), "target", 0, 7));
        err(&set_i(c.clone(), "target", 0, -100), &["target[0]", "-100"]);
        // an ignore_index inside [0, C) just ignores that class
        let c = param(valid(loss), "ignore_index", Int(2));
        ok(&set_i(c, "target", 0, 2));
        // all rows ignored is valid (an empty mean)
        let mut c = valid(loss);
        c.inputs.insert("target".into(), i(&[2], &[-100, -100]));
        ok(&c);
    }
    // a case whose params were built without ignore_index still gets the default −100
    let mut c = set_i(valid("nll"), "target", 0, -100);
    c.params.remove("ignore_index");
    ok(&c);
    // losses without ignore_index reject −100
    for loss in ["multi_margin", "brier"] {
        err(
            &set_i(valid(loss), "target", 0, -100),
            &["target[0]", "-100"],
        );
    }
}

#[test]
fn probabilities_and_targets_outside_zero_one_are_rejected() {
    let cases: [(&str, &str); 8] = [
        ("bce", "prob"),
        ("bce", "target"),
        ("bce_logits", "target"),
        ("focal", "target"),
        ("neg_elbo", "x"),
        ("brier", "prob"),
        ("kl_div", "target"),
        ("bce", "target"),
    ];
    for (loss, name) in cases {
        for (k, bad, text) in [
            (1, 1.5, "1.5"),
            (4, -0.125, "-0.125"),
            (0, f64::INFINITY, "inf"),
            (5, f64::NEG_INFINITY, "-inf"),
            (2, 1.0 + f64::EPSILON, "1.0000000000000002"),
        ] {
            err(
                &set_f(valid(loss), name, k, bad),
                &[&format!("{name}[{k}]"), text],
            );
        }
        for good in [0.0, -0.0, 1.0, 1e-300, f64::NAN] {
            ok(&set_f(valid(loss), name, 3, good));
        }
    }
}

#[test]
fn negative_infinite_and_nan_weights_are_rejected() {
    for loss in ["mse", "bce_logits", "info_nce", "kl_div", "multi_margin"] {
        let sh = out_shape(loss);
        let n: usize = sh.iter().product();
        let c = with(valid(loss), "weight", f(&sh, &vec![1.0; n]));
        for (bad, text) in [
            (-1.0, "-1"),
            (-1e-300, "-1e-300"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "NaN"),
        ] {
            err(&set_f(c.clone(), "weight", 1, bad), &["weight[1]", text]);
        }
        ok(&set_f(c.clone(), "weight", 1, 0.0));
        ok(&set_f(c.clone(), "weight", 1, -0.0));
        ok(&set_f(c, "weight", 1, 1e300));
    }
    for loss in ["cross_entropy", "nll", "multi_margin"] {
        let c = with(valid(loss), "class_weight", f(&[3], &[1.0, 0.0, 2.0]));
        ok(&c);
        for (bad, text) in [(-1.0, "-1"), (f64::INFINITY, "inf"), (f64::NAN, "NaN")] {
            err(
                &set_f(c.clone(), "class_weight", 2, bad),
                &["class_weight[2]", text],
            );
        }
    }
}

#[test]
fn mask_values_outside_zero_one_are_rejected() {
    for loss in ["mse", "hinge", "kl_div", "info_nce", "neg_elbo"] {
        let sh = out_shape(loss);
        let n: usize = sh.iter().product();
        let c = with(valid(loss), "mask", i(&sh, &vec![1; n]));
        ok(&set_i(c.clone(), "mask", 1, 0));
        for bad in [2, -1, i64::MAX] {
            err(
                &set_i(c.clone(), "mask", 1, bad),
                &["mask[1]", &bad.to_string()],
            );
        }
    }
}

#[test]
fn labels_outside_their_sets_are_rejected() {
    for loss in ["hinge", "margin_ranking"] {
        for bad in [0, 2, -2] {
            err(
                &set_i(valid(loss), "target", 4, bad),
                &["target[4]", &bad.to_string()],
            );
        }
    }
    for bad in [2, -1] {
        err(
            &set_i(valid("contrastive"), "target", 1, bad),
            &["target[1]", &bad.to_string()],
        );
    }
    ok(&set_i(valid("contrastive"), "target", 1, 0));
}

#[test]
fn kl_div_targets_depend_on_log_target() {
    let lt = param(valid("kl_div"), "log_target", Bool(true));
    let lt = with(
        lt,
        "target",
        f(&[2, 3], &[-1.0, 0.0, -0.0, f64::NEG_INFINITY, -1e300, -0.5]),
    );
    ok(&lt);
    for (bad, text) in [(0.5, "0.5"), (1e-300, "1e-300"), (f64::INFINITY, "inf")] {
        err(&set_f(lt.clone(), "target", 2, bad), &["target[2]", text]);
    }
    ok(&set_f(lt, "target", 2, f64::NAN));
    // without log_target, a log-probability is outside [0, 1]
    err(
        &set_f(valid("kl_div"), "target", 0, -0.5),
        &["target[0]", "-0.5"],
    );
}

#[test]
fn negative_variance_is_rejected() {
    for (bad, text) in [
        (-1.0, "-1"),
        (-1e-300, "-1e-300"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        err(
            &set_f(valid("gaussian_nll"), "var", 2, bad),
            &["var[2]", text],
        );
    }
    for good in [0.0, -0.0, f64::INFINITY, f64::NAN, 1e-300] {
        ok(&set_f(valid("gaussian_nll"), "var", 2, good));
    }
}

#[test]
fn zero_classes_are_valid_only_with_zero_rows() {
    for (loss, x) in [
        ("cross_entropy", "logits"),
        ("nll", "logp"),
        ("multi_margin", "scores"),
    ] {
        let c = with(valid(loss), x, f(&[2, 0], &[]));
        err(&c, &["C"]);
        let c = with(
            with(valid(loss), x, f(&[0, 0], &[])),
            "target",
            i(&[0], &[]),
        );
        let ch = ok(&c);
        assert_eq!((ch.rows, ch.dim("C")), (0, 0), "{loss}");
    }
    for (loss, x, t) in [
        ("kl_div", "input", "target"),
        ("brier", "prob", ""),
        ("distill_kl", "student", "teacher"),
    ] {
        let mut c = with(valid(loss), x, f(&[2, 0], &[]));
        if !t.is_empty() {
            c = with(c, t, f(&[2, 0], &[]));
        }
        err(&c, &["C"]);
    }
    // soft targets and BTC with C = 0
    let c = with(
        with(valid("cross_entropy"), "logits", f(&[2, 0], &[])),
        "target",
        f(&[2, 0], &[]),
    );
    err(&c, &["C"]);
    let c = with(
        with(valid("cross_entropy"), "logits", f(&[2, 1, 0], &[])),
        "target",
        i(&[2, 1], &[-100, -100]),
    );
    err(&c, &["C"]);
    let c = with(
        with(valid("cross_entropy"), "logits", f(&[0, 5, 0], &[])),
        "target",
        i(&[0, 5], &[]),
    );
    ok(&c);
    // N = 0 with C > 0, and C = 1
    ok(&with(
        with(valid("cross_entropy"), "logits", f(&[0, 3], &[])),
        "target",
        i(&[0], &[]),
    ));
    ok(&with(
        with(valid("cross_entropy"), "logits", f(&[2, 1], &[0.0, 1.0])),
        "target",
        i(&[2], &[0, 0]),
    ));
}

#[test]
fn range_checks_skip_masked_zero_weight_and_ignored_positions() {
    // (loss, input, position in the input, bad value, output position it belongs to)
    let floats: [(&str, &str, usize, f64, usize); 7] = [
        ("bce", "prob", 4, 1.5, 4),
        ("bce_logits", "target", 0, -1.0, 0),
        ("gaussian_nll", "var", 5, -2.0, 5),
        ("kl_div", "target", 4, 7.0, 1),
        ("neg_elbo", "x", 1, -3.0, 0),
        ("brier", "prob", 5, 2.0, 1),
        ("focal", "target", 2, f64::INFINITY, 2),
    ];
    for (loss, name, k, bad, row) in floats {
        let sh = out_shape(loss);
        let n: usize = sh.iter().product();
        let c = set_f(valid(loss), name, k, bad);
        err(&c, &[&format!("{name}[{k}]")]);
        let mut mask = vec![1; n];
        mask[row] = 0;
        ok(&with(c.clone(), "mask", i(&sh, &mask)));
        let mut w = vec![1.0; n];
        w[row] = 0.0;
        ok(&with(c.clone(), "weight", f(&sh, &w)));
        // the other rows are still checked
        let mut mask = vec![1; n];
        mask[(row + 1) % n] = 0;
        err(&with(c, "mask", i(&sh, &mask)), &[&format!("{name}[{k}]")]);
    }
    let ints: [(&str, usize, i64, usize); 4] = [
        ("hinge", 3, 0, 3),
        ("margin_ranking", 0, 5, 0),
        ("contrastive", 1, 9, 1),
        ("brier", 0, 3, 0),
    ];
    for (loss, k, bad, row) in ints {
        let sh = out_shape(loss);
        let n: usize = sh.iter().product();
        let c = set_i(valid(loss), "target", k, bad);
        err(&c, &[&format!("target[{k}]")]);
        let mut mask = vec![1; n];
        mask[row] = 0;
        ok(&with(c.clone(), "mask", i(&sh, &mask)));
        let mut w = vec![1.0; n];
        w[row] = 0.0;
        ok(&with(c, "weight", f(&sh, &w)));
    }
    // a masked position may hold anything, its weight and pos_weight included
    let c = with(valid("bce_logits"), "mask", i(&[2, 3], &[1, 1, 0, 1, 1, 1]));
    ok(&with(
        c.clone(),
        "weight",
        f(&[2, 3], &[1.0, 1.0, f64::NAN, 1.0, 1.0, 1.0]),
    ));
    ok(&with(
        c.clone(),
        "weight",
        f(&[2, 3], &[1.0, 1.0, -1.0, 1.0, 1.0, 1.0]),
    ));
    ok(&with(
        c.clone(),
        "pos_weight",
        f(&[2, 3], &[1.0, 1.0, f64::INFINITY, 1.0, 1.0, 1.0]),
    ));
    err(
        &with(
            c.clone(),
            "weight",
            f(&[2, 3], &[1.0, f64::NAN, 1.0, 1.0, 1.0, 1.0]),
        ),
        &["weight[1]"],
    );
    // a broadcast pos_weight belongs to every row: never skipped
    err(
        &with(c.clone(), "pos_weight", f(&[3], &[1.0, 1.0, -1.0])),
        &["pos_weight[2]"],
    );
    // a zero-weight position's pos_weight is not checked either
    let c = with(
        valid("bce_logits"),
        "weight",
        f(&[2, 3], &[1.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
    );
    ok(&with(
        c,
        "pos_weight",
        f(&[2, 3], &[1.0, f64::NAN, 1.0, 1.0, 1.0, 1.0]),
    ));
    let c = with(valid("kl_div"), "mask", i(&[2], &[0, 1]));
    ok(&with(c, "weight", f(&[2], &[f64::INFINITY, 1.0])));
    // ignored rows of cross_entropy / nll: the row holds anything (its logits are not range-checked)
    let c = with(valid("nll"), "target", i(&[2], &[-100, 0]));
    ok(&with(
        c,
        "logp",
        f(&[2, 3], &[f64::NAN, f64::INFINITY, 5.0, -1.0, -1.0, -1.0]),
    ));
}

#[test]
fn nan_in_a_valid_unmasked_data_input_is_accepted() {
    let nan = f64::NAN;
    for (loss, name, k) in [
        ("mse", "pred", 0),
        ("mse", "target", 5),
        ("bce", "prob", 2),
        ("bce", "target", 1),
        ("cross_entropy", "logits", 3),
        ("gaussian_nll", "var", 1),
        ("gaussian_nll", "mean", 1),
        ("kl_div", "input", 0),
        ("kl_div", "target", 0),
        ("neg_elbo", "mu", 3),
        ("brier", "prob", 0),
        ("info_nce", "key", 2),
        ("dpo", "ref_chosen", 4),
        ("triplet", "anchor", 0),
    ] {
        ok(&set_f(valid(loss), name, k, nan));
    }
    // and so are infinities where the domain allows them
    ok(&set_f(
        valid("cross_entropy"),
        "logits",
        0,
        f64::NEG_INFINITY,
    ));
    ok(&set_f(valid("mse"), "pred", 0, f64::INFINITY));
}

#[test]
fn errors_do_not_panic_on_odd_cases() {
    // unknown loss, empty inputs
    let mut c = valid("mse");
    c.loss = "nope".into();
    assert!(validate(&c).is_err());
    let mut c = Case::new("cross_entropy", DT).unwrap();
    assert!(validate(&c).is_err());
    c.inputs.insert("logits".into(), f(&[2, 3], &E6));
    assert!(validate(&c).is_err());
    c.inputs.insert("target".into(), f(&[2], &[0.0, 1.0])); // float ids of the wrong shape for soft
    assert!(validate(&c).is_err());
}
