//! The row-wise classification kernels (`cross_entropy`, `nll`, `multi_margin`): invalid input,
//! degenerate shapes, the typed API against the case-level path, 16-bit and autocast dtypes,
//! the policies (empty mean, ignored rows, sequence mean, weights, masks, cotangents), the
//! extended reals, and accuracy — hand-picked values against exact values computed
//! independently (python3's `decimal` at 50 digits, the snippet beside each), and sweeps against
//! a `rug` reference at 300 bits written straight from the definitions (it shares no code with
//! the kernels).

#![allow(clippy::excessive_precision)] // exact decimal expansions of the expected values

use half::{bf16, f16};
use losscheck::core::rng::SplitMix64;
use losscheck::core::{ErrorKind, ParamValue};
use losscheck::kernels::classification::multiclass::{
    self, cross_entropy, multi_margin, nll, CrossEntropyArgs, MultiMarginArgs, NllArgs, Output,
};
use losscheck::kernels::{classification, evaluate, implemented};
use losscheck::{Case, Dtype, Element, LossError, Reduction, Response, Tensor};
use rug::Float;

const P: u32 = 300;
const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

fn cast<T: Element>(xs: &[f64]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f64(x)).collect()
}

fn f64s<T: Element>(xs: &[T]) -> Vec<f64> {
    xs.iter().map(|x| x.to_f64()).collect()
}

fn grad<T: Element, O>(out: &Output<T, O>) -> Vec<f64> {
    f64s(out.grad.as_ref().expect("gradient requested"))
}

/// The correct rounding of a (50-digit decimal, read as the nearest f64) exact value.
fn rn(d: Dtype, x: f64) -> f64 {
    d.round(x)
}

fn err_msg<T, O>(r: Result<Output<T, O>, LossError>) -> String {
    match r {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
            e.message
        }
        Ok(_) => panic!("expected an error"),
    }
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not mention {w:?}");
    }
}

fn ce<'a>(z: &'a [f32], n: usize, c: usize) -> CrossEntropyArgs<'a, f32> {
    CrossEntropyArgs::new(z, n, c)
}

type O32 = Output<f32, f32>;

/// Value and gradient exactly 0, of these lengths.
fn assert_zero(out: &O32, values: usize, grads: usize) {
    assert_eq!(out.value, vec![0.0; values]);
    assert_eq!(out.grad, Some(vec![0.0; grads]));
}

/// Run a generic check for every (input, value) dtype pair: f32 → f32, f16 → f16 / f32,
/// bf16 → bf16 / f32.
macro_rules! every_dtype {
    ($f:ident) => {
        $f::<f32, f32>();
        $f::<f16, f16>();
        $f::<f16, f32>();
        $f::<bf16, bf16>();
        $f::<bf16, f32>();
    };
}

// ---------------------------------------------------------------------------------------------
// Catalogue wiring.

#[test]
fn the_three_ids_are_implemented() {
    assert_eq!(
        multiclass::LOSSES,
        &["cross_entropy", "nll", "multi_margin"]
    );
    assert_eq!(classification::LOSSES.len(), 4);
    for id in multiclass::LOSSES {
        assert!(implemented(id), "{id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid input: an Err naming the input, the index and the value.

#[test]
fn invalid_input_errors_name_input_index_and_value() {
    let z = [0.0f32; 6];
    let ok = [0i64, 1];
    // class ids
    let t = [0i64, 3];
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&t).eval()),
        &["target[1]", "3", "3 classes"],
    );
    let t = [-1i64, 0];
    assert_mentions(
        &err_msg::<_, f32>(nll(&NllArgs::new(&z, 2, 3).class_ids(&t))),
        &["target[0]", "-1"],
    );
    assert_mentions(
        &err_msg::<_, f32>(multi_margin(&MultiMarginArgs::new(&z, 2, 3).class_ids(&t))),
        &["target[0]", "-1"],
    );
    // soft targets
    let q = [0.5f32, 0.5, 0.0, 0.0, 1.5, 0.0];
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).soft(&q).eval()),
        &["target[4]", "1.5"],
    );
    let q = [0.5f32, 0.5, -0.0, 0.0, -0.25, 0.0];
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).soft(&q).eval()),
        &["target[4]", "-0.25"],
    );
    // class weights: negative, NaN, inf, wrong length
    for (bad, shown) in [(-1.0f32, "-1.0"), (NAN, "NaN"), (INF, "inf")] {
        let w = [1.0f32, bad, 1.0];
        let msgs = [
            err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&ok).class_weight(&w).eval()),
            err_msg::<_, f32>(
                NllArgs::new(&z, 2, 3)
                    .class_ids(&ok)
                    .class_weight(&w)
                    .eval(),
            ),
            err_msg::<_, f32>(
                MultiMarginArgs::new(&z, 2, 3)
                    .class_ids(&ok)
                    .class_weight(&w)
                    .eval(),
            ),
        ];
        for m in msgs {
            assert_mentions(&m, &["class_weight[1]", shown]);
        }
    }
    let w = [1.0f32, 1.0];
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&ok).class_weight(&w).eval()),
        &["class_weight", "2", "3"],
    );
    // per-row weight and mask (multi_margin)
    let w = [1.0f32, -2.0];
    assert_mentions(
        &err_msg::<_, f32>(
            MultiMarginArgs::new(&z, 2, 3)
                .class_ids(&ok)
                .weight(&w)
                .eval(),
        ),
        &["weight[1]", "-2"],
    );
    let m = [1i64, 2];
    assert_mentions(
        &err_msg::<_, f32>(
            MultiMarginArgs::new(&z, 2, 3)
                .class_ids(&ok)
                .mask(&m)
                .eval(),
        ),
        &["mask[1]", "2"],
    );
    // params
    for eps in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        assert_mentions(
            &err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&ok).label_smoothing(eps).eval()),
            &["label_smoothing"],
        );
    }
    for p in [0i64, 3, -1] {
        assert_mentions(
            &err_msg::<_, f32>(MultiMarginArgs::new(&z, 2, 3).class_ids(&ok).p(p).eval()),
            &["param p", &p.to_string()],
        );
    }
    for margin in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_mentions(
            &err_msg::<_, f32>(
                MultiMarginArgs::new(&z, 2, 3)
                    .class_ids(&ok)
                    .margin(margin)
                    .eval(),
            ),
            &["margin"],
        );
    }
    // lengths and dims
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 2).class_ids(&ok).eval()),
        &["logits", "6", "2·2"],
    );
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&[0]).eval()),
        &["target", "1", "2"],
    );
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).soft(&[0.0f32; 4]).eval()),
        &["target", "4"],
    );
    assert_mentions(
        &err_msg::<_, f32>(ce(&[], 2, 0).class_ids(&ok).eval()),
        &["C = 0", "2 rows"],
    );
    let cot = [1.0f32, 1.0];
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&ok).cotangent(&cot).eval()),
        &["cotangent", "2"],
    );
    assert_mentions(
        &err_msg::<_, f32>(
            ce(&z, 2, 3)
                .class_ids(&ok)
                .cotangent(&[1.0])
                .reduction(Reduction::None)
                .eval(),
        ),
        &["cotangent", "1", "2"],
    );
    assert_mentions(
        &err_msg::<_, f32>(
            MultiMarginArgs::new(&z, 2, 3)
                .class_ids(&ok)
                .weight(&[1.0])
                .eval(),
        ),
        &["weight", "1"],
    );
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).class_ids(&ok).seq(2, 2).eval()),
        &["[2, 2, 3]", "2 rows"],
    );
    assert_mentions(
        &err_msg::<_, f32>(
            ce(&z, 2, 3)
                .class_ids(&ok)
                .reduction(Reduction::SequenceMean)
                .eval(),
        ),
        &["sequence_mean"],
    );
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).soft(&[0.0; 6]).seq(1, 2).eval()),
        &["soft", "[B, T, C]"],
    );
    assert_mentions(
        &err_msg::<_, f32>(ce(&z, 2, 3).eval()),
        &["target", "missing"],
    );
    assert_mentions(
        &err_msg::<_, f32>(
            NllArgs::new(&z, 2, 3)
                .class_ids(&ok)
                .reduction(Reduction::SequenceMean)
                .eval(),
        ),
        &["sequence_mean"],
    );
    assert_mentions(
        &err_msg::<_, f32>(
            MultiMarginArgs::new(&z, 2, 3)
                .class_ids(&ok)
                .reduction(Reduction::SequenceMean)
                .eval(),
        ),
        &["sequence_mean"],
    );
    // the case level says the same (catalogue::validate)
    let mut c = Case::new("cross_entropy", Dtype::F32).unwrap();
    c.inputs.insert(
        "logits".into(),
        Tensor::float(Dtype::F32, vec![2, 3], vec![0.0; 6]),
    );
    c.inputs
        .insert("target".into(), Tensor::int(vec![2], vec![0, 5]));
    let e = evaluate(&c).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert_mentions(&e.message, &["target[1]", "5"]);
}

#[test]
fn checks_skip_ignored_masked_and_zero_weight_rows() {
    let z = [0.0f32, 0.0, NAN, NAN];
    // target 7 is the ignore_index: no range error, and the row contributes nothing
    let t = [0i64, 7];
    let out: O32 = ce(&z, 2, 2).class_ids(&t).ignore_index(7).eval().unwrap();
    assert_eq!(out.value, vec![std::f32::consts::LN_2]);
    let out: O32 = NllArgs::new(&z, 2, 2)
        .class_ids(&t)
        .ignore_index(7)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.0]);
    // a masked row may hold any target and any weight; a zero-weight row any target
    let t = [0i64, 99];
    let w = [1.0f32, NAN];
    let m = [1i64, 0];
    let args = MultiMarginArgs::new(&z, 2, 2)
        .class_ids(&t)
        .weight(&w)
        .mask(&m);
    // row 0: max(0, 1 − 0 + 0)/2 = ½
    assert_eq!(args.eval::<f32>().unwrap().value, vec![0.5]);
    let w = [1.0f32, 0.0];
    let t = [0i64, -5];
    let args = MultiMarginArgs::new(&z, 2, 2).class_ids(&t).weight(&w);
    assert_eq!(args.eval::<f32>().unwrap().value, vec![0.5]);
    // class weights belong to every row: always checked
    let cw = [1.0f32, -1.0];
    let t = [0i64, -100];
    assert!(ce(&z, 2, 2)
        .class_ids(&t)
        .class_weight(&cw)
        .eval::<f32>()
        .is_err());
    // NaN in a valid data input is not an error
    let t = [0i64, 1];
    let out: O32 = ce(&z, 2, 2)
        .class_ids(&t)
        .reduction(Reduction::None)
        .eval()
        .unwrap();
    assert!(out.value[1].is_nan());
    // …and a NaN soft target propagates, except with ε = 1, where the target never enters
    let q = [NAN, 0.5, 0.5, 0.5];
    let out: O32 = ce(&[0.0f32; 4], 2, 2)
        .soft(&q)
        .label_smoothing(1.0)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![std::f32::consts::LN_2]);
    assert_eq!(out.grad, Some(vec![0.0; 4]));
    assert!(ce(&[0.0f32; 4], 2, 2).soft(&q).eval::<f32>().unwrap().value[0].is_nan());
}

// ---------------------------------------------------------------------------------------------
// Degenerate shapes: never a panic, the policies hold.

#[test]
fn degenerate_shapes_never_panic() {
    let reds = [Reduction::None, Reduction::Sum, Reduction::Mean];
    for red in reds {
        let value_len = |n: usize| if red == Reduction::None { n } else { 1 };
        // N = 0 with C = 0 and with C = 3
        for c in [0usize, 3] {
            let out: O32 = ce(&[], 0, c).class_ids(&[]).reduction(red).eval().unwrap();
            assert_eq!(out.value, vec![0.0; value_len(0)]);
            assert_eq!(out.grad, Some(vec![]));
            let out: O32 = ce(&[], 0, c).soft(&[]).reduction(red).eval().unwrap();
            assert_eq!(out.value, vec![0.0; value_len(0)]);
            let out: O32 = NllArgs::new(&[], 0, c)
                .class_ids(&[])
                .reduction(red)
                .eval()
                .unwrap();
            assert_eq!(out.value, vec![0.0; value_len(0)]);
            let args = MultiMarginArgs::new(&[], 0, c)
                .class_ids(&[])
                .reduction(red);
            let out: O32 = args.weight(&[]).mask(&[]).eval().unwrap();
            assert_eq!(out.value, vec![0.0; value_len(0)]);
        }
        // C = 1: cross-entropy and multi_margin are exactly 0, nll is −w·logp
        let z = [3.0f32, -7.0];
        let t = [0i64, 0];
        for eps in [0.0, 0.5, 1.0] {
            let out: O32 = ce(&z, 2, 1)
                .class_ids(&t)
                .label_smoothing(eps)
                .reduction(red)
                .eval()
                .unwrap();
            assert_zero(&out, value_len(2), 2);
        }
        let out: O32 = ce(&z, 2, 1)
            .soft(&[1.0, 0.5])
            .reduction(red)
            .eval()
            .unwrap();
        assert_zero(&out, value_len(2), 2);
        let out: O32 = MultiMarginArgs::new(&z, 2, 1)
            .class_ids(&t)
            .reduction(red)
            .eval()
            .unwrap();
        assert_zero(&out, value_len(2), 2);
        let out: O32 = NllArgs::new(&z, 2, 1)
            .class_ids(&t)
            .reduction(red)
            .eval()
            .unwrap();
        let expect = match red {
            Reduction::None => vec![-3.0, 7.0],
            Reduction::Sum => vec![4.0],
            _ => vec![2.0],
        };
        assert_eq!(out.value, expect);
    }
    // [B, T, C] with B = 0, with T = 0, and every reduction
    for red in Reduction::ALL {
        for (b, t) in [(0usize, 4usize), (3, 0), (0, 0)] {
            let out: O32 = ce(&[], 0, 5)
                .class_ids(&[])
                .seq(b, t)
                .reduction(red)
                .eval()
                .unwrap();
            let expect = if red == Reduction::None {
                vec![]
            } else {
                vec![0.0]
            };
            assert_eq!(out.value, expect, "{b} {t} {red}");
        }
    }
    // the case level: N = 0 logits [0, 3], [B, T, C] = [2, 0, 3]
    for (shape, tshape) in [(vec![0, 3], vec![0]), (vec![2, 0, 3], vec![2, 0])] {
        for red in Reduction::ALL {
            if red == Reduction::SequenceMean && shape.len() == 2 {
                continue;
            }
            let mut c = Case::new("cross_entropy", Dtype::F16).unwrap();
            c.inputs.insert(
                "logits".into(),
                Tensor::float(Dtype::F16, shape.clone(), vec![]),
            );
            c.inputs
                .insert("target".into(), Tensor::int(tshape.clone(), vec![]));
            c.set_reduction(red);
            let r = evaluate(&c).unwrap();
            assert_eq!(r.grad["logits"].shape, shape);
            if red == Reduction::None {
                assert_eq!(r.value.shape, tshape);
            } else {
                assert_eq!(r.value.f().unwrap(), &[0.0]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The typed API equals the case-level path, bit for bit.

fn bits(xs: &[f64]) -> Vec<u64> {
    xs.iter().map(|x| x.to_bits()).collect()
}

fn same_as_case<T: Element, O: Element>(case: &Case, out: &Output<T, O>, xname: &str) {
    let r: Response = evaluate(case).unwrap();
    assert_eq!(r.value.dtype, losscheck::core::TensorDtype::Float(O::DTYPE));
    assert_eq!(
        bits(r.value.f().unwrap()),
        bits(&f64s(&out.value)),
        "{}",
        case.loss
    );
    let g = &r.grad[xname];
    assert_eq!(g.dtype, losscheck::core::TensorDtype::Float(T::DTYPE));
    assert_eq!(g.shape, case.inputs[xname].shape);
    assert_eq!(bits(g.f().unwrap()), bits(&grad(out)), "{}", case.loss);
}

fn random_row_data(d: Dtype, len: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut r = SplitMix64::new(seed);
    (0..len).map(|_| d.round(scale * r.signed_unit())).collect()
}

fn typed_vs_case<T: Element, O: Element>() {
    let d = T::DTYPE;
    let (n, c) = (6usize, 4usize);
    let z = random_row_data(d, n * c, 6.0, 1);
    let zt: Vec<T> = cast(&z);
    let cw = vec![0.5, 2.0, 0.0, 1.0];
    let cwt: Vec<T> = cast(&cw);
    let ids = vec![0i64, 3, -100, 1, 2, 3];
    for red in Reduction::ALL {
        let cot = if red == Reduction::None {
            random_row_data(d, n, 2.0, 7)
        } else {
            vec![d.round(0.75)]
        };
        let cott: Vec<T> = cast(&cot);
        // cross_entropy, [N, C] and [B, T, C] (2 × 3), class weights, smoothing, cotangent
        for (layout, eps) in [("NC", 0.0), ("NC", 0.25), ("BTC", 0.0), ("BTC", 0.1)] {
            if red == Reduction::SequenceMean && layout == "NC" {
                continue;
            }
            let mut case = Case::new("cross_entropy", d).unwrap();
            case.out_dtype = O::DTYPE;
            let (zs, ts) = if layout == "NC" {
                (vec![n, c], vec![n])
            } else {
                (vec![2, 3, c], vec![2, 3])
            };
            case.inputs
                .insert("logits".into(), Tensor::float(d, zs, z.clone()));
            case.inputs
                .insert("target".into(), Tensor::int(ts.clone(), ids.clone()));
            case.inputs
                .insert("class_weight".into(), Tensor::float(d, vec![c], cw.clone()));
            let cs = if red == Reduction::None { ts } else { vec![] };
            case.inputs
                .insert("cotangent".into(), Tensor::float(d, cs, cot.clone()));
            case.params
                .insert("label_smoothing".into(), ParamValue::Float(eps));
            case.set_reduction(red);
            let mut args = CrossEntropyArgs::new(&zt, n, c)
                .class_ids(&ids)
                .class_weight(&cwt)
                .label_smoothing(eps)
                .cotangent(&cott)
                .reduction(red);
            if layout == "BTC" {
                args = args.seq(2, 3);
            }
            same_as_case(&case, &args.eval::<O>().unwrap(), "logits");
        }
        if red == Reduction::SequenceMean {
            continue;
        }
        // soft targets
        let q: Vec<f64> = random_row_data(d, n * c, 1.0, 3)
            .iter()
            .map(|x| x.abs())
            .collect();
        let qt: Vec<T> = cast(&q);
        let mut case = Case::new("cross_entropy", d).unwrap();
        case.out_dtype = O::DTYPE;
        case.inputs
            .insert("logits".into(), Tensor::float(d, vec![n, c], z.clone()));
        case.inputs
            .insert("target".into(), Tensor::float(d, vec![n, c], q.clone()));
        case.params
            .insert("label_smoothing".into(), ParamValue::Float(0.125));
        case.set_reduction(red);
        let args = CrossEntropyArgs::new(&zt, n, c)
            .soft(&qt)
            .label_smoothing(0.125)
            .reduction(red);
        same_as_case(&case, &args.eval::<O>().unwrap(), "logits");
        // nll
        let mut case = Case::new("nll", d).unwrap();
        case.out_dtype = O::DTYPE;
        case.inputs
            .insert("logp".into(), Tensor::float(d, vec![n, c], z.clone()));
        case.inputs
            .insert("target".into(), Tensor::int(vec![n], ids.clone()));
        case.inputs
            .insert("class_weight".into(), Tensor::float(d, vec![c], cw.clone()));
        case.set_reduction(red);
        let args = NllArgs::new(&zt, n, c)
            .class_ids(&ids)
            .class_weight(&cwt)
            .reduction(red);
        same_as_case(&case, &args.eval::<O>().unwrap(), "logp");
        // multi_margin: weight, mask, p = 2, margin 0.5
        let ids = [0i64, 3, 99, 1, 2, 3];
        let w = vec![1.0, 0.5, 2.0, 0.0, 3.0, 1.0];
        let wt: Vec<T> = cast(&w);
        let m = [1i64, 1, 0, 1, 1, 1];
        let mut case = Case::new("multi_margin", d).unwrap();
        case.out_dtype = O::DTYPE;
        case.inputs
            .insert("scores".into(), Tensor::float(d, vec![n, c], z.clone()));
        case.inputs
            .insert("target".into(), Tensor::int(vec![n], ids.to_vec()));
        case.inputs
            .insert("class_weight".into(), Tensor::float(d, vec![c], cw.clone()));
        case.inputs
            .insert("weight".into(), Tensor::float(d, vec![n], w.clone()));
        case.inputs
            .insert("mask".into(), Tensor::int(vec![n], m.to_vec()));
        case.params.insert("p".into(), ParamValue::Int(2));
        case.params.insert("margin".into(), ParamValue::Float(0.5));
        case.set_reduction(red);
        let args = MultiMarginArgs::new(&zt, n, c)
            .class_ids(&ids)
            .class_weight(&cwt)
            .weight(&wt)
            .mask(&m)
            .p(2)
            .margin(0.5)
            .reduction(red);
        same_as_case(&case, &args.eval::<O>().unwrap(), "scores");
    }
}

#[test]
fn typed_api_equals_case_level_bit_for_bit() {
    every_dtype!(typed_vs_case);
}

#[test]
fn eval_into_reuses_buffers_and_equals_eval() {
    let z1 = random_row_data(Dtype::F32, 12, 5.0, 11);
    let z2 = random_row_data(Dtype::F32, 12, 5.0, 12);
    let (z1, z2): (Vec<f32>, Vec<f32>) = (cast(&z1), cast(&z2));
    let t = [0i64, 2, -100, 1];
    let mut out = O32::default();
    for z in [&z1, &z2, &z1] {
        for red in [Reduction::None, Reduction::Mean] {
            let args = ce(z, 4, 3).class_ids(&t).reduction(red);
            args.eval_into(&mut out).unwrap();
            assert_eq!(out, args.eval::<f32>().unwrap());
        }
    }
    // a buffer of another shape, then an error leaves it unchanged
    let before = out.clone();
    assert!(ce(&z1, 4, 3)
        .class_ids(&[0, 9, 0, 0])
        .eval_into(&mut out)
        .is_err());
    assert_eq!(out, before);
    let args = ce(&z1[..6], 2, 3).class_ids(&t[..2]).grad(false);
    args.eval_into(&mut out).unwrap();
    assert_eq!(out.grad, None);
}

// ---------------------------------------------------------------------------------------------
// 16-bit and autocast.

#[test]
fn sixteen_bit_and_autocast_dtypes_and_shapes() {
    // [B, T, C] = [1, 2, 2] f16 logits, `none`: the value has the row shape [1, 2], in f16 or
    // (autocast) f32; the gradient has the logits' shape, in f16.
    for out_dtype in [Dtype::F16, Dtype::F32] {
        let mut c = Case::new("cross_entropy", Dtype::F16).unwrap();
        c.out_dtype = out_dtype;
        c.inputs.insert(
            "logits".into(),
            Tensor::float(Dtype::F16, vec![1, 2, 2], vec![0.0; 4]),
        );
        c.inputs
            .insert("target".into(), Tensor::int(vec![1, 2], vec![0, 1]));
        c.set_reduction(Reduction::None);
        let r = evaluate(&c).unwrap();
        assert_eq!(r.value.shape, vec![1, 2]);
        assert_eq!(
            r.value.dtype,
            losscheck::core::TensorDtype::Float(out_dtype)
        );
        // ln 2 rounded once to the output dtype
        let ln2 = rn(out_dtype, std::f64::consts::LN_2);
        assert_eq!(r.value.f().unwrap(), &[ln2, ln2]);
        assert_eq!(r.grad["logits"].shape, vec![1, 2, 2]);
        assert_eq!(r.grad["logits"].f().unwrap(), &[-0.5, 0.5, 0.5, -0.5]);
    }
    // bf16 → f32, mean
    let z: Vec<bf16> = cast(&[1.0, 0.0]);
    let out: Output<bf16, f32> = CrossEntropyArgs::new(&z, 1, 2)
        .class_ids(&[1])
        .eval()
        .unwrap();
    // softplus(1) = ln(1 + e) = 1.3132616875182228340489954949678556419152800856704
    assert_eq!(out.value, vec![1.3132616875182228f64 as f32]);
    // p − onehot = [σ(1), σ(−1) − 1] = [σ(1), −σ(1)]; python3:
    //   1/(1 + Decimal(-1).exp()) -> 0.73105857863000487925115924182183627436514464016505
    assert_eq!(
        grad(&out),
        vec![
            rn(Dtype::Bf16, 0.7310585786300049),
            rn(Dtype::Bf16, -0.7310585786300049)
        ]
    );
    // multi_margin and nll in f16 → f32 and f16 → f16
    let x: Vec<f16> = cast(&[0.0, 0.25]);
    let out: Output<f16, f32> = MultiMarginArgs::new(&x, 1, 2)
        .class_ids(&[0])
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.625]); // (1 − 0 + 0.25)/2
    let out: Output<f16, f16> = NllArgs::new(&x, 1, 2).class_ids(&[1]).eval().unwrap();
    assert_eq!(out.value, vec![f16::from_f32(-0.25)]);
}

// ---------------------------------------------------------------------------------------------
// Hand-picked values against exact values.

#[test]
fn confident_row_value_and_gradient_are_exact_in_every_dtype() {
    // [12, 0 × 9], target 0. python3:
    //   from decimal import *; getcontext().prec = 50; s = 9*Decimal(-12).exp()
    //   (1 + s).ln()                 -> 0.000055296382306825522046491253325729293606776252728917
    //   -s/(1 + s)                   -> -0.000055294853490056886099205899409003062592460598104451
    //   Decimal(-12).exp()/(1 + s)   -> 0.0000061438726100063206776895443787781180658289553449390
    // (PyTorch: 15 bits lost in f32, 0 in bf16/f16 — FAILURES.md)
    let v = 5.5296382306825522046491253325729293606776252728917e-5;
    let g0 = -5.5294853490056886099205899409003062592460598104451e-5;
    let g1 = 6.1438726100063206776895443787781180658289553449390e-6;
    fn check<T: Element, O: Element>(v: f64, g0: f64, g1: f64) {
        let mut z = vec![0.0; 10];
        z[0] = 12.0;
        let z: Vec<T> = cast(&z);
        let out: Output<T, O> = CrossEntropyArgs::new(&z, 1, 10)
            .class_ids(&[0])
            .eval()
            .unwrap();
        assert_eq!(f64s(&out.value), vec![rn(O::DTYPE, v)], "{:?}", T::DTYPE);
        let g = grad(&out);
        assert_eq!(g[0], rn(T::DTYPE, g0), "{:?}", T::DTYPE);
        for &gj in &g[1..] {
            assert_eq!(gj, rn(T::DTYPE, g1), "{:?}", T::DTYPE);
        }
    }
    check::<f32, f32>(v, g0, g1);
    check::<f16, f16>(v, g0, g1);
    check::<f16, f32>(v, g0, g1);
    check::<bf16, bf16>(v, g0, g1);
    check::<bf16, f32>(v, g0, g1);
    // the same row shifted by a huge common offset: f32 1e6 + 12 (ulp 1/16 there), f16 4096 + 12
    // (ulp 4): z − m is exact, so nothing changes
    let mut z = vec![1.0e6f32; 10];
    z[0] += 12.0;
    let out: O32 = ce(&z, 1, 10).class_ids(&[0]).eval().unwrap();
    assert_eq!(out.value, vec![v as f32]);
    assert_eq!(grad(&out)[0], rn(Dtype::F32, g0));
    let mut z = vec![f16::from_f32(4096.0); 10];
    z[0] = f16::from_f32(4108.0);
    let out: Output<f16, f32> = CrossEntropyArgs::new(&z, 1, 10)
        .class_ids(&[0])
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![v as f32]);
    assert_eq!(grad(&out)[0], rn(Dtype::F16, g0));
}

#[test]
fn label_smoothing_and_class_weight_hand_values() {
    // z = [1, 0], y = 0, ε = 0.2: a = [0.9, 0.1]; l = LSE − 0.9. python3 (prec 50):
    //   E = Decimal(1).exp(); lse = (E + 1).ln(); lse - Decimal("0.9")
    //     -> 0.41326168751822283404899549496785564191528008567040
    //   E/(E + 1) - Decimal("0.9") -> -0.16894142136999512074884075817816372563485535983495
    let z = [1.0f32, 0.0];
    let out: O32 = ce(&z, 1, 2)
        .class_ids(&[0])
        .label_smoothing(0.2)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.41326168751822283f64 as f32]);
    assert_eq!(
        grad(&out),
        vec![
            rn(Dtype::F32, -0.16894142136999512),
            rn(Dtype::F32, 0.16894142136999512)
        ]
    );
    // class-weighted mean divides by Σ w_y (PyTorch): z = [[1, 0], [0, 1], [2, 0]], y = [0, 0, 1],
    // w = [1, 3]: (softplus(−1) + softplus(1) + 3·softplus(2)) / 5. python3 (prec 50):
    //   sp = lambda x: (1 + Decimal(x).exp()).ln(); (sp(-1) + sp(1) + 3*sp(2))/5
    //     -> 1.6014614816330726314858342818021249156267118719532
    let z = [1.0f32, 0.0, 0.0, 1.0, 2.0, 0.0];
    let t = [0i64, 0, 1];
    let w = [1.0f32, 3.0];
    let out: O32 = ce(&z, 3, 2).class_ids(&t).class_weight(&w).eval().unwrap();
    assert_eq!(out.value, vec![1.6014614816330726f64 as f32]);
    // gradients w_y·(p − onehot)/5, python3: E = Decimal(1).exp(); e2 = Decimal(2).exp()
    //   (E/(E+1) - 1)/5 -> -0.053788284273999024..., (1/(E+1))/5 -> 0.053788284273999024...
    //   (1/(1+E) - 1)/5 -> -0.14621171572600097..., 3*e2/(1+e2)/5 -> 0.52847826...
    assert_eq!(
        out.grad.unwrap(),
        vec![
            -5.3788286e-02,
            5.3788286e-02,
            -1.4621171e-01,
            1.4621171e-01,
            5.2847826e-01,
            -5.2847826e-01
        ]
    );
    // soft targets: z = [0, 0], q = [0.25, 0.75]: l = ln 2, gradient p − q = [0.25, −0.25]
    let out: O32 = cross_entropy(&ce(&[0.0, 0.0], 1, 2).soft(&[0.25, 0.75])).unwrap();
    assert_eq!(out.value, vec![std::f32::consts::LN_2]);
    assert_eq!(out.grad.unwrap(), vec![0.25, -0.25]);
    // soft with class weights: a = w·q = [0.5, 0.75], A = 1.25: gradient A·p − a = [0.125, −0.125]
    let out: O32 = ce(&[0.0, 0.0], 1, 2)
        .soft(&[0.25, 0.75])
        .class_weight(&[2.0, 1.0])
        .reduction(Reduction::Sum)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![(1.25 * std::f64::consts::LN_2) as f32]);
    assert_eq!(out.grad.unwrap(), vec![0.125, -0.125]);
}

#[test]
fn sequence_mean_is_not_the_token_mean() {
    // B = 2, T = 3, C = 2; token (b, t) has logits [x, 0] and target 0: l = softplus(−x).
    // Sequence 0: x = 0, 1, 2; sequence 1: x = 3, then two padded (ignored) NaN tokens.
    // python3 (prec 50): sp = lambda x: (1 + Decimal(x).exp()).ln()
    //   (sp(0) + sp(-1) + sp(-2) + sp(-3))/4        -> 0.29548105767372067466722008565975665984174873141678
    //   ((sp(0) + sp(-1) + sp(-2))/3 + sp(-3))/2    -> 0.21318315564039446936445536372473443920845970188721
    let z = [
        0.0f32, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, NAN, NAN, INF, INF,
    ];
    let t = [0i64, 0, 0, 0, -100, -100];
    let token: O32 = ce(&z, 6, 2).class_ids(&t).seq(2, 3).eval().unwrap();
    assert_eq!(token.value, vec![0.29548105767372067f64 as f32]);
    let seq: O32 = ce(&z, 6, 2)
        .class_ids(&t)
        .seq(2, 3)
        .reduction(Reduction::SequenceMean)
        .eval()
        .unwrap();
    assert_eq!(seq.value, vec![0.21318315564039447f64 as f32]);
    // gradient of sequence 1's token: (p − onehot)/(den_1·S) = (σ(3) − 1, σ(−3))/2;
    // python3: 1/(1 + Decimal(3).exp()) -> 0.047425873177566780878848151771752201386179432420609
    let g = grad(&seq);
    assert_eq!(g[6], rn(Dtype::F32, -0.04742587317756678 / 2.0));
    assert_eq!(g[7], rn(Dtype::F32, 0.04742587317756678 / 2.0));
    assert_eq!(&g[8..], &[0.0; 4]);
    // the token mean: the same token weighs 1/4
    assert_eq!(grad(&token)[7], rn(Dtype::F32, 0.04742587317756678 / 4.0));
    // a sequence with denominator 0 (all ignored, or all zero-weight with smoothing) is left
    // out of the average; all sequences empty → 0
    let t = [0i64, 0, 0, -100, -100, -100];
    let out: O32 = ce(&z, 6, 2)
        .class_ids(&t)
        .seq(2, 3)
        .reduction(Reduction::SequenceMean)
        .eval()
        .unwrap();
    // python3: (sp(0) + sp(-1) + sp(-2))/3 -> 0.37777895970704687996998480759477888047503776094633
    assert_eq!(out.value, vec![0.37777895970704688f64 as f32]);
    let all_ignored = [-100i64; 6];
    let out: O32 = ce(&z, 6, 2)
        .class_ids(&all_ignored)
        .seq(2, 3)
        .reduction(Reduction::SequenceMean)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(out.grad, Some(vec![0.0; 12]));
}

// ---------------------------------------------------------------------------------------------
// Policies and extended reals.

#[test]
fn empty_mean_is_zero_value_and_gradient() {
    let z = [NAN, INF, -INF, 1.0];
    // every row ignored
    let out: O32 = ce(&z, 2, 2).class_ids(&[-100, -100]).eval().unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0; 4])));
    let out: O32 = NllArgs::new(&z, 2, 2)
        .class_ids(&[-100, -100])
        .eval()
        .unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0; 4])));
    // every target's class weight 0 — even with smoothing (the numerator's smoothing terms
    // are not divided by 0)
    let z = [0.0f32, 1.0, 2.0, 3.0];
    let w = [0.0f32, 5.0];
    let out: O32 = ce(&z, 2, 2)
        .class_ids(&[0, 0])
        .class_weight(&w)
        .label_smoothing(0.5)
        .eval()
        .unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0; 4])));
    // …while `sum` keeps them: (ε/C)·w_1·(LSE − z_1) per row, i.e. 1.25·softplus(−1) twice;
    // python3: 2*Decimal("1.25")*(1 + Decimal(-1).exp()).ln() -> 0.78315421879555708512248873742
    let out: O32 = ce(&z, 2, 2)
        .class_ids(&[0, 0])
        .class_weight(&w)
        .label_smoothing(0.5)
        .reduction(Reduction::Sum)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.78315421879555709f64 as f32]);
    // multi_margin: every row masked / zero weight
    let out: O32 = MultiMarginArgs::new(&[NAN, NAN], 1, 2)
        .class_ids(&[0])
        .mask(&[0])
        .eval()
        .unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0; 2])));
    let out: O32 = MultiMarginArgs::new(&[NAN, NAN], 1, 2)
        .class_ids(&[0])
        .weight(&[0.0])
        .eval()
        .unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0; 2])));
}

#[test]
fn ignored_rows_holding_nan_or_inf_change_nothing() {
    let base = [1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0];
    let t = [2i64, 0];
    for junk in [[NAN, NAN, NAN], [INF, INF, -INF], [-INF, -INF, -INF]] {
        let mut z = base.to_vec();
        z.extend_from_slice(&junk);
        let tt = [2i64, 0, -100];
        for eps in [0.0, 0.3] {
            for red in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                let a: O32 = ce(&base, 2, 3)
                    .class_ids(&t)
                    .label_smoothing(eps)
                    .reduction(red)
                    .eval()
                    .unwrap();
                let b: O32 = ce(&z, 3, 3)
                    .class_ids(&tt)
                    .label_smoothing(eps)
                    .reduction(red)
                    .eval()
                    .unwrap();
                let n = a.value.len();
                assert_eq!(a.value[..], b.value[..n]);
                if red == Reduction::None {
                    assert_eq!(b.value[2], 0.0);
                }
                let (ga, gb) = (a.grad.unwrap(), b.grad.unwrap());
                assert_eq!(ga[..], gb[..6]);
                assert_eq!(gb[6..], [0.0; 3]);
            }
        }
        // nll alike
        let a: O32 = NllArgs::new(&base, 2, 3).class_ids(&t).eval().unwrap();
        let b: O32 = NllArgs::new(&z, 3, 3)
            .class_ids(&[2, 0, -100])
            .eval()
            .unwrap();
        assert_eq!(
            (a.value, &a.grad.unwrap()[..]),
            (b.value, &b.grad.unwrap()[..6])
        );
    }
}

#[test]
fn extended_reals_in_a_row() {
    let none = |z: &[f32], c: usize, t: &[i64], eps: f64| -> O32 {
        ce(z, t.len(), c)
            .class_ids(t)
            .label_smoothing(eps)
            .reduction(Reduction::None)
            .eval()
            .unwrap()
    };
    // two +inf logits: NaN row (value and gradient); the other row is untouched (termwise)
    let out = none(&[INF, INF, 0.0, 0.0, 0.0, 0.0], 3, &[0, 1], 0.0);
    assert!(out.value[0].is_nan() && out.grad.as_ref().unwrap()[..3].iter().all(|g| g.is_nan()));
    // row 1: ln 3; gradient [1/3, 1/3 − 1, 1/3]
    assert_eq!(out.value[1], 1.0986123f32); // ln 3 = 1.0986122886681098...
    assert_eq!(out.grad.unwrap()[3..], [1.0 / 3.0, -2.0 / 3.0, 1.0 / 3.0]);
    // a NaN logit, an all −inf row: NaN
    assert!(none(&[0.0, NAN, 1.0], 3, &[0], 0.0).value[0].is_nan());
    assert!(none(&[-INF, -INF], 2, &[0], 0.0).value[0].is_nan());
    // one +inf logit: p one-hot. At the target: 0 and gradient 0·… = [0, 0, 0]: p − onehot
    let out = none(&[INF, 0.0, -INF], 3, &[0], 0.0);
    assert_eq!(
        (out.value[0], out.grad.unwrap()),
        (0.0, vec![0.0, 0.0, 0.0])
    );
    // elsewhere: +inf, finite gradient [1, −1, 0]
    let out = none(&[INF, 0.0, -INF], 3, &[1], 0.0);
    assert_eq!(
        (out.value[0], out.grad.unwrap()),
        (INF, vec![1.0, -1.0, 0.0])
    );
    // with smoothing every present term counts: +inf, gradient A·onehot − a = [1 − 0.9, −0.1, ... ]
    // (ε = 0.3, C = 3: a = [0.7 + 0.1, 0.1, 0.1])
    let out = none(&[INF, 0.0, 1.0], 3, &[0], 0.3);
    assert_eq!(out.value[0], INF);
    let g = out.grad.unwrap();
    assert_eq!(g, vec![rn(Dtype::F32, 0.2) as f32, -0.1, -0.1]);
    // a −inf target logit: +inf, gradient p − onehot with p_target = 0
    let out = none(&[-INF, 0.0], 2, &[0], 0.0);
    assert_eq!((out.value[0], out.grad.unwrap()), (INF, vec![-1.0, 1.0]));
    // a −inf non-target logit: absent without smoothing (p = 0 there) ...
    let out = none(&[-INF, 0.0, 0.0], 3, &[1], 0.0);
    assert_eq!(out.value[0], std::f32::consts::LN_2);
    assert_eq!(out.grad.unwrap(), vec![0.0, -0.5, 0.5]);
    // ... but with smoothing > 0 the row is +inf (PyTorch: the smoothing term)
    let out = none(&[-INF, 0.0, 0.0], 3, &[1], 1e-3);
    assert_eq!(out.value[0], INF);
    assert!(out.grad.unwrap().iter().all(|g| g.is_finite()));
    // even an ε whose ε/C underflows f64 (DESIGN.md: any ε > 0)
    let out = none(&[-INF, 0.0, 0.0], 3, &[1], 5e-324);
    assert_eq!(out.value[0], INF);
    // a zero class weight at the −inf logit removes its smoothing term
    let out: O32 = ce(&[-INF, 0.0, 0.0], 1, 3)
        .class_ids(&[1])
        .class_weight(&[0.0, 1.0, 1.0])
        .label_smoothing(0.3)
        .eval()
        .unwrap();
    assert!(out.value[0].is_finite());
    // every coefficient 0 (w_y = 0, no smoothing): exactly 0 whatever the logits
    for z in [[NAN, 0.0], [INF, INF], [-INF, -INF]] {
        let out: O32 = ce(&z, 1, 2)
            .class_ids(&[0])
            .class_weight(&[0.0, 1.0])
            .reduction(Reduction::Sum)
            .eval()
            .unwrap();
        assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0; 2])));
    }
    // soft targets: a −inf logit where q = 0 (no smoothing) is absent; where q > 0 it is +inf
    let out: O32 = ce(&[-INF, 0.0], 1, 2).soft(&[0.0, 1.0]).eval().unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0, 0.0])));
    let out: O32 = ce(&[-INF, 0.0], 1, 2).soft(&[0.5, 0.5]).eval().unwrap();
    assert_eq!(out.value, vec![INF]);
    assert_eq!(out.grad, Some(vec![-0.5, 0.5]));
    // a NaN coefficient (soft target) makes the row NaN, infinite logits or not
    for z in [[INF, 0.0], [-INF, 0.0], [1.0, 0.0]] {
        let out: O32 = ce(&z, 1, 2).soft(&[NAN, 0.5]).eval().unwrap();
        assert!(out.value[0].is_nan(), "{z:?}");
        assert!(out.grad.unwrap().iter().all(|g| g.is_nan()), "{z:?}");
    }
}

#[test]
fn cotangents_scale_the_gradient() {
    let z = [0.0f32, 0.0, NAN, NAN, 0.0, 0.0];
    let t = [0i64, 1, 1];
    // per-row cotangent for `none`: 0 zeroes the NaN row's gradient, a NaN only its own row
    let cot = [2.0f32, 0.0, NAN];
    let out: O32 = ce(&z, 3, 2)
        .class_ids(&t)
        .cotangent(&cot)
        .reduction(Reduction::None)
        .eval()
        .unwrap();
    let g = out.grad.unwrap();
    assert_eq!(g[..4], [-1.0, 1.0, 0.0, 0.0]);
    assert!(g[4].is_nan() && g[5].is_nan());
    assert!(out.value[1].is_nan()); // the value does not see the cotangent
                                    // scalar cotangent for `sum`
    let z = [0.0f32, 0.0];
    let out: O32 = ce(&z, 1, 2)
        .class_ids(&[0])
        .cotangent(&[-4.0])
        .reduction(Reduction::Sum)
        .eval()
        .unwrap();
    assert_eq!(out.grad.unwrap(), vec![2.0, -2.0]);
    // zero scalar cotangent: gradient 0 everywhere, value unchanged
    let z = [0.0f32, 0.0, NAN, 1.0];
    let out: O32 = ce(&z, 2, 2)
        .class_ids(&[0, 1])
        .cotangent(&[0.0])
        .reduction(Reduction::Sum)
        .eval()
        .unwrap();
    assert!(out.value[0].is_nan());
    assert_eq!(out.grad.unwrap(), vec![0.0; 4]);
}

// ---------------------------------------------------------------------------------------------
// nll and multi_margin.

#[test]
fn nll_values_weights_and_infinities() {
    let logp = [-0.5f32, -INF, NAN, -2.0, INF, -1.0];
    // class ids [0, 1, 0] over [3, 2]: −logp = [0.5, 2, −inf]
    let t = [0i64, 1, 0];
    let out: O32 = NllArgs::new(&logp, 3, 2)
        .class_ids(&t)
        .reduction(Reduction::None)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.5, 2.0, -INF]);
    assert_eq!(out.grad.unwrap(), vec![-1.0, 0.0, 0.0, -1.0, -1.0, 0.0]);
    // a zero class weight: exactly 0 even at ±inf / NaN; mean divides by Σ w_y = 0.5 + 0.5
    let t = [1i64, 0, 0];
    let w = [0.5f32, 0.0];
    let out: O32 = NllArgs::new(&logp, 3, 2)
        .class_ids(&t)
        .class_weight(&w)
        .eval()
        .unwrap();
    // rows: w_1 = 0 at −inf → 0; 0.5·NaN → NaN (NaN data propagates, its gradient component
    // too); 0.5·(−inf)
    assert!(out.value[0].is_nan());
    let g = out.grad.unwrap();
    assert!(g[2].is_nan());
    assert_eq!([g[0], g[1], g[3], g[4], g[5]], [0.0, 0.0, 0.0, -0.5, 0.0]);
    let logp = [-0.5f32, -INF, -3.0, -2.0];
    let out: O32 = NllArgs::new(&logp, 2, 2)
        .class_ids(&[0, 1])
        .class_weight(&[0.5, 0.0])
        .eval()
        .unwrap();
    // (0.5·0.5 + 0)/(0.5 + 0) = 0.5
    assert_eq!(out.value, vec![0.5]);
    assert_eq!(out.grad.unwrap(), vec![-1.0, 0.0, 0.0, 0.0]);
    // plain mean over three rows: gradient −1/3 (one rounding)
    let logp = [-1.0f32, -2.0, -3.0];
    let out: O32 = NllArgs::new(&logp, 3, 1)
        .class_ids(&[0, 0, 0])
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![2.0]);
    assert_eq!(out.grad.unwrap(), vec![(-1.0f64 / 3.0) as f32; 3]);
}

#[test]
fn multi_margin_values_kinks_and_cancellation() {
    // p = 2: x = [.1, .2, .4, .8] (f32 values), y = 3: u = 1 − x_3 + x_j, exact in f64 from
    // the f32 values (e.g. u_0 = 1 − 0.800000011920928955078125 + 0.100000001490116119384765625)
    let x = [0.1f32, 0.2, 0.4, 0.8];
    let u: Vec<f64> = (0..3).map(|j| 1.0 - 0.8f32 as f64 + x[j] as f64).collect();
    let out: O32 = MultiMarginArgs::new(&x, 1, 4)
        .class_ids(&[3])
        .p(2)
        .eval()
        .unwrap();
    // each u_j is exact in f64 here (a few bits), Σu² too to ~2^-100
    let s: f64 = u.iter().map(|u| u * u).sum();
    assert_eq!(out.value, vec![(s / 4.0) as f32]);
    let g = out.grad.unwrap();
    assert_eq!(
        g[..3],
        [
            (u[0] / 2.0) as f32,
            (u[1] / 2.0) as f32,
            (u[2] / 2.0) as f32
        ]
    );
    assert_eq!(g[3], (-(u[0] + u[1] + u[2]) / 2.0) as f32);
    // the kink u = 0 with p = 1 takes 0: x = [0, 1], y = 1, margin 1 → u_0 = 0
    let out: O32 = MultiMarginArgs::new(&[0.0, 1.0], 1, 2)
        .class_ids(&[1])
        .eval()
        .unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0, 0.0])));
    // u cancels: margin −2^100, x_y = −2^−100, x_j = 2^100: u = 2^−100 exactly (> 0), where
    // (margin − x_y) + x_j and margin + (x_j − x_y) in plain f64 both give 0 (the kink).
    let x = [2f32.powi(100), -(2f32.powi(-100))];
    let args = MultiMarginArgs::new(&x, 1, 2)
        .class_ids(&[1])
        .margin(-(2f64.powi(100)));
    let out: O32 = args.reduction(Reduction::Sum).eval().unwrap();
    assert_eq!(out.value, vec![2f32.powi(-101)]); // 2^−100 / C
    assert_eq!(out.grad.unwrap(), vec![0.5, -0.5]);
    // and its sign flipped: x_y = +2^−100 → u = −2^−100 < 0: inactive
    let x = [2f32.powi(100), 2f32.powi(-100)];
    let out: O32 = MultiMarginArgs::new(&x, 1, 2)
        .class_ids(&[1])
        .margin(-(2f64.powi(100)))
        .eval()
        .unwrap();
    assert_eq!((out.value, out.grad), (vec![0.0], Some(vec![0.0, 0.0])));
    // p = 2 there: value 2^−200/2 underflows f32, gradient 2u/C = 2^−100 does not
    let x = [2f32.powi(100), -(2f32.powi(-100))];
    let out: O32 = MultiMarginArgs::new(&x, 1, 2)
        .class_ids(&[1])
        .margin(-(2f64.powi(100)))
        .p(2)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(out.grad.unwrap(), vec![2f32.powi(-100), -(2f32.powi(-100))]);
    // a tiny margin against equal scores: u = 1e-30 (plain (m − x_y) + x_j gives 0)
    let out: O32 = MultiMarginArgs::new(&[1.0, 1.0], 1, 2)
        .class_ids(&[0])
        .margin(1e-30)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![5e-31f64 as f32]);
    assert_eq!(out.grad.unwrap(), vec![-0.5, 0.5]);
    // infinities: x_j = +inf → +inf, gradient w/C (p = 1); x_y = +inf → 0
    let out: O32 = MultiMarginArgs::new(&[INF, 0.0, 0.0, INF], 2, 2)
        .class_ids(&[1, 1])
        .reduction(Reduction::None)
        .eval()
        .unwrap();
    assert_eq!(out.value, vec![INF, 0.0]);
    assert_eq!(out.grad.unwrap(), vec![0.5, -0.5, 0.0, 0.0]);
    // a NaN score, or u = inf − inf, makes its row NaN (value and every component); the other
    // row is untouched
    for row in [[0.0, NAN, 0.0], [INF, 0.0, INF]] {
        let mut x = row.to_vec();
        x.extend_from_slice(&[0.0, 0.0, 0.0]);
        let out: O32 = MultiMarginArgs::new(&x, 2, 3)
            .class_ids(&[0, 0])
            .reduction(Reduction::None)
            .eval()
            .unwrap();
        assert!(out.value[0].is_nan());
        let g = out.grad.unwrap();
        assert!(g[..3].iter().all(|g| g.is_nan()), "{g:?}");
        // row 1: u = 1 for j = 1, 2: (1 + 1)/3, gradient [−2/3, 1/3, 1/3]
        assert_eq!(out.value[1], 2.0 / 3.0);
        assert_eq!(g[3..], [-2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
    }
}

#[test]
fn multi_margin_weights_masks_and_class_weights() {
    // rows [0, 0] with targets [0, 1, 0]: every row has one active u = 1, l = w_y·1/2
    let x = [0.0f32, 0.0, 0.0, 0.0, NAN, NAN];
    let t = [0i64, 1, 0];
    let w = [1.0f32, 3.0, 5.0];
    let m = [1i64, 1, 0];
    let args = MultiMarginArgs::new(&x, 3, 2)
        .class_ids(&t)
        .weight(&w)
        .mask(&m);
    // mean = (1·½ + 3·½)/(1 + 3) = ½
    let out: O32 = args.eval().unwrap();
    assert_eq!(out.value, vec![0.5]);
    assert_eq!(
        out.grad.unwrap(),
        vec![-0.125, 0.125, 0.375, -0.375, 0.0, 0.0]
    );
    let out: O32 = args.reduction(Reduction::None).eval().unwrap();
    assert_eq!(out.value, vec![0.5, 1.5, 0.0]);
    // class weights multiply the row (w_y), and the mean still divides by Σ m·w (PyTorch)
    let cw = [2.0f32, 0.0];
    let out: O32 = MultiMarginArgs::new(&x[..4], 2, 2)
        .class_ids(&t[..2])
        .class_weight(&cw)
        .eval()
        .unwrap();
    // rows: 2·½ = 1 and 0 (w_1 = 0): mean over 2 rows = ½
    assert_eq!(out.value, vec![0.5]);
    assert_eq!(out.grad.unwrap(), vec![-0.5, 0.5, 0.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// Accuracy sweeps against a rug reference at 300 bits.

fn fl(x: f64) -> Float {
    Float::with_val(P, x)
}

/// The 300-bit value as an f64 rounded to odd, so that rounding it to a ≤ 24-bit dtype later
/// is the correct rounding of the 300-bit value.
fn odd(x: &Float) -> f64 {
    let t = x.to_f64_round(rug::float::Round::Zero);
    if t.is_finite() && Float::with_val(P, t) != *x {
        f64::from_bits(t.to_bits() | 1)
    } else {
        t
    }
}

/// Σ_c a_c·(LSE(z) − z_c) and A·softmax(z) − a, for a finite row: LSE − z_c written as
/// (m − z_c) + ln(1 + Σ_{j≠k} e^{z_j − m}) (an identity; m = z_k the max).
fn ref_ce(z: &[f64], a: &[Float]) -> (Float, Vec<Float>) {
    let k = (0..z.len()).fold(0, |k, j| if z[j] > z[k] { j } else { k });
    let m = fl(z[k]);
    let mut s = fl(0.0);
    for (j, &x) in z.iter().enumerate() {
        if j != k {
            s += Float::with_val(P, fl(x) - &m).exp();
        }
    }
    let l1p = s.clone().ln_1p();
    let mut v = fl(0.0);
    let mut big_a = fl(0.0);
    for (c, &x) in z.iter().enumerate() {
        big_a += &a[c];
        if a[c] != 0.0 {
            v += Float::with_val(P, &a[c] * (Float::with_val(P, &m - x) + &l1p));
        }
    }
    let den = Float::with_val(P, &s + 1u32);
    let g = z
        .iter()
        .enumerate()
        .map(|(j, &x)| {
            let p = Float::with_val(P, Float::with_val(P, fl(x) - &m).exp() / &den);
            Float::with_val(P, &big_a * p) - &a[j]
        })
        .collect();
    (v, g)
}

/// Normwise gradient error of one row, in ulps of the dtype at max|e| (per component where
/// max|e| = 0).
fn row_grad_ulps(d: Dtype, g: &[f64], e: &[f64]) -> f64 {
    let emax = e.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if emax == 0.0 {
        return g
            .iter()
            .zip(e)
            .map(|(&g, &e)| d.ulps(g, e))
            .fold(0.0, f64::max);
    }
    let err = g
        .iter()
        .zip(e)
        .fold(0.0f64, |m, (&g, &e)| m.max((g - d.round(e)).abs()));
    err / d.ulp_at(emax)
}

#[derive(Clone, Copy, Debug)]
enum Regime {
    Typical,
    Confident,
    Offset,
    Wide,
}

fn sweep<T: Element, O: Element>() {
    let d = T::DTYPE;
    let vbar = if O::DTYPE == Dtype::F32 { 2.0 } else { 1.0 };
    let mut rng = SplitMix64::new(0xC0FFEE ^ d as u64);
    let (mut worst_v, mut worst_g) = (0.0f64, 0.0f64);
    for regime in [
        Regime::Typical,
        Regime::Confident,
        Regime::Offset,
        Regime::Wide,
    ] {
        for case in 0..24 {
            let c = [2usize, 3, 10, 37][case % 4];
            let n = 3;
            let mut z = Vec::with_capacity(n * c);
            for _ in 0..n {
                let offset = match (regime, d) {
                    (Regime::Offset, Dtype::F32) => 1.0e6,
                    (Regime::Offset, Dtype::F16) => 4096.0,
                    (Regime::Offset, _) => 256.0,
                    _ => 0.0,
                };
                let hot = rng.below(c as u64) as usize;
                for j in 0..c {
                    // roughly N(0, 3²): a sum of three uniforms
                    let g3 = 3.0 * (rng.signed_unit() + rng.signed_unit() + rng.signed_unit());
                    let x = match regime {
                        Regime::Typical | Regime::Offset => offset + g3,
                        Regime::Confident => {
                            g3 / 3.0
                                + if j == hot {
                                    8.0 + 60.0 * rng.next_f64()
                                } else {
                                    0.0
                                }
                        }
                        Regime::Wide => 100.0 * rng.signed_unit(),
                    };
                    z.push(d.round(x.clamp(-d.max(), d.max())));
                }
            }
            let zt: Vec<T> = cast(&z);
            let y: Vec<i64> = (0..n).map(|_| rng.below(c as u64) as i64).collect();
            let eps = [0.0, 0.0, 0.1, 1.0][case % 4 / 2 + (case % 3 == 0) as usize];
            let cw: Vec<f64> = (0..c)
                .map(|_| d.round(0.25 + 2.0 * rng.next_f64()))
                .collect();
            let cwt: Vec<T> = cast(&cw);
            let soft = case % 5 == 4;
            let q: Vec<f64> = (0..n * c).map(|_| d.round(rng.next_f64())).collect();
            let qt: Vec<T> = cast(&q);
            let weighted = case % 2 == 1;
            let mut args = CrossEntropyArgs::new(&zt, n, c)
                .label_smoothing(eps)
                .reduction(Reduction::None);
            args = if soft {
                args.soft(&qt)
            } else {
                args.class_ids(&y)
            };
            if weighted {
                args = args.class_weight(&cwt);
            }
            let out: Output<T, O> = args.eval().unwrap();
            let mean: Output<T, O> = args.reduction(Reduction::Mean).grad(false).eval().unwrap();
            let g = grad(&out);
            let mut num = fl(0.0);
            let mut den = fl(0.0);
            for i in 0..n {
                let w = |k: usize| if weighted { fl(cw[k]) } else { fl(1.0) };
                let a: Vec<Float> = (0..c)
                    .map(|k| {
                        let e = Float::with_val(P, fl(eps) / c as u32);
                        let one_m = Float::with_val(P, 1u32 - fl(eps));
                        if soft {
                            let t = Float::with_val(P, one_m * q[i * c + k]) + e;
                            Float::with_val(P, w(k) * t)
                        } else {
                            let mut t = Float::with_val(P, e * w(k));
                            if k == y[i] as usize {
                                t += Float::with_val(P, one_m * w(k));
                            }
                            t
                        }
                    })
                    .collect();
                let (v, ge) = ref_ce(&z[i * c..(i + 1) * c], &a);
                num += &v;
                den += if soft { fl(1.0) } else { w(y[i] as usize) };
                let vu = O::DTYPE.ulps(out.value[i].to_f64(), odd(&v));
                let ge: Vec<f64> = ge.iter().map(odd).collect();
                let gu = row_grad_ulps(d, &g[i * c..(i + 1) * c], &ge);
                assert!(
                    vu <= vbar && gu <= 2.0,
                    "{d} -> {}: {regime:?} case {case} row {i}: value {vu} ulps, grad {gu} ulps\nz = {:?}\ny = {} eps = {eps} soft = {soft} weighted = {weighted}",
                    O::DTYPE,
                    &z[i * c..(i + 1) * c],
                    y[i]
                );
                worst_v = worst_v.max(vu);
                worst_g = worst_g.max(gu);
            }
            let mref = Float::with_val(P, &num / &den);
            let mu = O::DTYPE.ulps(mean.value[0].to_f64(), odd(&mref));
            assert!(
                mu <= vbar,
                "{d}: mean off by {mu} ulps ({regime:?} case {case})"
            );
        }
    }
    eprintln!(
        "{d} -> {}: worst value {worst_v} ulps, worst gradient {worst_g} ulps",
        O::DTYPE
    );
}

#[test]
fn cross_entropy_matches_a_300_bit_reference() {
    every_dtype!(sweep);
}

#[test]
fn a_row_of_32000_classes() {
    // [2, 32000], logits spread ±8 (row 0) and one confident logit (row 1), against the
    // 300-bit reference; the class sums are compensated.
    let c = 32000;
    let mut rng = SplitMix64::new(5);
    let mut z: Vec<f64> = (0..2 * c)
        .map(|_| Dtype::F32.round(8.0 * rng.signed_unit()))
        .collect();
    z[c + 123] = 40.0;
    let zt: Vec<f32> = cast(&z);
    let y = [7i64, 123];
    let out: O32 = ce(&zt, 2, c)
        .class_ids(&y)
        .label_smoothing(0.1)
        .reduction(Reduction::None)
        .eval()
        .unwrap();
    let g = grad(&out);
    for i in 0..2 {
        let a: Vec<Float> = (0..c)
            .map(|k| {
                let mut t = Float::with_val(P, fl(0.1) / c as u32);
                if k == y[i] as usize {
                    t += Float::with_val(P, 1u32 - fl(0.1));
                }
                t
            })
            .collect();
        let (v, ge) = ref_ce(&z[i * c..(i + 1) * c], &a);
        assert!(
            Dtype::F32.ulps(out.value[i] as f64, odd(&v)) <= 2.0,
            "row {i}"
        );
        let ge: Vec<f64> = ge.iter().map(odd).collect();
        let gu = row_grad_ulps(Dtype::F32, &g[i * c..(i + 1) * c], &ge);
        assert!(gu <= 2.0, "row {i}: {gu} ulps");
    }
}

#[test]
fn the_softmax_exponential_is_within_an_ulp_of_exact() {
    // kernels::math::exp_nonpos (IEEE basic operations only) against e^x at 300 bits
    use losscheck::kernels::math::exp_nonpos;
    let mut rng = SplitMix64::new(99);
    let mut worst = 0.0f64;
    for i in 0..20_000 {
        let x = match i % 3 {
            0 => -708.0 * rng.next_f64(),
            1 => -rng.next_f64(),
            _ => -(2f64.powi(-(rng.below(60) as i32))) * rng.next_f64(),
        };
        let exact = Float::with_val(P, fl(x).exp()).to_f64();
        let got = exp_nonpos(x);
        let ulps = (got.to_bits() as i64 - exact.to_bits() as i64).unsigned_abs() as f64;
        worst = worst.max(ulps);
    }
    assert!(worst <= 1.0, "{worst} f64 ulps");
}

fn mm_sweep<T: Element, O: Element>() {
    let d = T::DTYPE;
    let vbar = if O::DTYPE == Dtype::F32 { 2.0 } else { 1.0 };
    let mut rng = SplitMix64::new(0xBEEF ^ d as u64);
    for case in 0..60 {
        let (n, c) = (4usize, [2usize, 3, 7, 20][case % 4]);
        let scale = [1.0, 10.0, 1000.0][case % 3];
        let x: Vec<f64> = (0..n * c)
            .map(|_| d.round(scale * rng.signed_unit()))
            .collect();
        let xt: Vec<T> = cast(&x);
        let y: Vec<i64> = (0..n).map(|_| rng.below(c as u64) as i64).collect();
        let margin = [1.0, 0.1, -0.5, 1e-7][case % 4] * scale;
        let p = 1 + (case % 2) as i64;
        let cw: Vec<f64> = (0..c).map(|_| d.round(2.0 * rng.next_f64())).collect();
        let cwt: Vec<T> = cast(&cw);
        let args = MultiMarginArgs::new(&xt, n, c)
            .class_ids(&y)
            .class_weight(&cwt)
            .margin(margin)
            .p(p)
            .reduction(Reduction::None);
        let out: Output<T, O> = args.eval().unwrap();
        let g = grad(&out);
        for i in 0..n {
            let yi = y[i] as usize;
            let wy = fl(cw[yi]);
            let (mut v, mut dy) = (fl(0.0), fl(0.0));
            let mut e = vec![0.0; c];
            for j in (0..c).filter(|&j| j != yi) {
                let u = Float::with_val(P, fl(margin) - x[i * c + yi]) + x[i * c + j];
                if u > 0.0 {
                    let (t, dj) = if p == 2 {
                        (Float::with_val(P, &u * &u), Float::with_val(P, &u * 2u32))
                    } else {
                        (u.clone(), fl(1.0))
                    };
                    v += t;
                    let gj = Float::with_val(P, &wy * &dj) / c as u32;
                    dy -= &gj;
                    e[j] = odd(&gj);
                }
            }
            e[yi] = odd(&dy);
            let v = Float::with_val(P, &wy * v) / c as u32;
            let vu = O::DTYPE.ulps(out.value[i].to_f64(), odd(&v));
            let gu = row_grad_ulps(d, &g[i * c..(i + 1) * c], &e);
            assert!(
                vu <= vbar && gu <= 2.0,
                "{d}: case {case} row {i}: {vu} / {gu} ulps"
            );
        }
    }
}

#[test]
fn multi_margin_matches_a_300_bit_reference() {
    every_dtype!(mm_sweep);
}

// ---------------------------------------------------------------------------------------------
// Cancelling gradients: A·p_j − a_j ≈ 0 (smoothing on near-uniform rows, a soft target equal
// to the row's own softmax). The f64 formulas would keep only 53 − log2 κ bits; the kernels
// redo such rows in double-double, so every component is accurate to the dtype's rounding,
// without the κ·2⁻⁵³ allowance the judge gives.

fn cancelling_rows<T: Element>() {
    let d = T::DTYPE;
    let mut rng = SplitMix64::new(0xCA11 ^ d as u64);
    for case in 0..60 {
        let c = [2usize, 4, 7, 33][case % 4];
        // spreads from 2^−60 to 2^−8 around a common value (0 or 3)
        let spread = (2.0f64).powi(-8 - (case as i32 * 13) % 53);
        let base = if case % 3 == 0 { 3.0 } else { 0.0 };
        let z: Vec<f64> = (0..c)
            .map(|_| d.round(base + spread * rng.signed_unit()))
            .collect();
        let zt: Vec<T> = cast(&z);
        let y = rng.below(c as u64) as usize;
        let soft = case % 2 == 1;
        let eps = if soft { 0.0 } else { [1.0, 0.5, 0.1][case % 3] };
        // the soft target: the row's own softmax rounded to the dtype
        let q: Vec<f64> = {
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<Float> = z
                .iter()
                .map(|&x| Float::with_val(P, fl(x) - m).exp())
                .collect();
            let s = e.iter().fold(fl(0.0), |s, x| s + x);
            e.iter()
                .map(|x| d.round(odd(&Float::with_val(P, x / &s))))
                .collect()
        };
        let qt: Vec<T> = cast(&q);
        let args = CrossEntropyArgs::new(&zt, 1, c).label_smoothing(eps);
        let ids = [y as i64];
        let args = if soft {
            args.soft(&qt)
        } else {
            args.class_ids(&ids)
        };
        let out: Output<T, T> = args.eval().unwrap();
        let a: Vec<Float> = (0..c)
            .map(|k| {
                let e = Float::with_val(P, fl(eps) / c as u32);
                if soft {
                    fl(q[k])
                } else if k == y {
                    e + Float::with_val(P, 1u32 - fl(eps))
                } else {
                    e
                }
            })
            .collect();
        let (_, ge) = ref_ce(&z, &a);
        for (j, (g, e)) in grad(&out).iter().zip(&ge).enumerate() {
            let u = d.ulps(*g, d.round(odd(e)));
            assert!(
                u <= 1.0,
                "{d}: case {case} component {j}: {g:e} vs exact {:e} ({u} ulps)\nz = {z:?}\ny = {y} eps = {eps} soft = {soft}",
                odd(e)
            );
        }
    }
    // exactly uniform rows: the gradient of a uniform target is exactly 0
    for c in [1usize, 3, 6, 1000] {
        let z: Vec<T> = cast(&vec![-1.0e4; c]);
        let out: Output<T, T> = CrossEntropyArgs::new(&z, 1, c)
            .class_ids(&[0])
            .label_smoothing(1.0)
            .eval()
            .unwrap();
        assert!(
            grad(&out).iter().all(|&g| g == 0.0),
            "{d}: C = {c}: {:?}",
            grad(&out)
        );
    }
}

#[test]
fn cancelling_gradients_are_accurate_per_component() {
    cancelling_rows::<f32>();
    cancelling_rows::<f16>();
    cancelling_rows::<bf16>();
}
