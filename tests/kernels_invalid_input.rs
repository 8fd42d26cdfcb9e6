//! Invalid input to the kernels: an `Err` naming the input, the index and the value — never a
//! panic, never garbage — and odd but valid shapes (N = 0, scalars `[]`, empty `none`).
//!
//! Both entry points are covered: the case-level `kernels::evaluate` (validation by the
//! catalogue) and the typed API of `kernels::regression`.

use half::f16;
use losscheck::core::{ErrorKind, ParamValue, TensorDtype};
use losscheck::kernels::evaluate;
use losscheck::kernels::regression::{huber, mae, mse, quantile, ElementwiseArgs, Output};
use losscheck::{Case, Dtype, LossError, Reduction, Tensor};

const REGRESSION: [&str; 5] = ["mse", "mae", "huber", "quantile", "log_cosh"];

/// A regression case with pred and target of the given shape.
fn case(loss: &str, dtype: Dtype, shape: &[usize], pred: &[f64], target: &[f64]) -> Case {
    let mut c = Case::new(loss, dtype).unwrap();
    c.inputs.insert(
        "pred".into(),
        Tensor::float(dtype, shape.to_vec(), pred.to_vec()),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(dtype, shape.to_vec(), target.to_vec()),
    );
    c
}

fn invalid(r: Result<losscheck::Response, LossError>) -> String {
    match r {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
            e.message
        }
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not mention {w:?}");
    }
}

// ---- case level

#[test]
fn shape_mismatch_names_the_input() {
    for loss in REGRESSION {
        let c = case(loss, Dtype::F32, &[2], &[1.0, 2.0], &[0.0, 0.0]);
        let mut c2 = c.clone();
        c2.inputs.insert(
            "target".into(),
            Tensor::float(Dtype::F32, vec![3], vec![0.0; 3]),
        );
        let m = invalid(evaluate(&c2));
        assert_mentions(&m, &["target", "[3]"]);
        // weight of the wrong shape
        let mut c3 = c.clone();
        c3.inputs.insert(
            "weight".into(),
            Tensor::float(Dtype::F32, vec![2, 1], vec![1.0; 2]),
        );
        assert_mentions(&invalid(evaluate(&c3)), &["weight"]);
    }
}

#[test]
fn bad_weights_name_input_index_and_value() {
    for (w, idx, shown) in [
        (-1.0, 1, "-1"),
        (f64::NAN, 0, "NaN"),
        (f64::INFINITY, 1, "inf"),
    ] {
        for loss in REGRESSION {
            let mut c = case(loss, Dtype::F32, &[2], &[1.0, 2.0], &[0.0, 0.0]);
            let mut data = vec![1.0, 1.0];
            data[idx] = w;
            c.inputs
                .insert("weight".into(), Tensor::float(Dtype::F32, vec![2], data));
            let m = invalid(evaluate(&c));
            assert_mentions(&m, &[&format!("weight[{idx}]"), shown]);
        }
    }
}

#[test]
fn mask_value_two_is_invalid() {
    let mut c = case("mse", Dtype::F16, &[3], &[1.0, 2.0, 3.0], &[0.0; 3]);
    c.inputs
        .insert("mask".into(), Tensor::int(vec![3], vec![1, 2, 0]));
    assert_mentions(&invalid(evaluate(&c)), &["mask[1]", "2"]);
    // a float mask is a dtype error
    c.inputs.insert(
        "mask".into(),
        Tensor::float(Dtype::F16, vec![3], vec![1.0, 1.0, 0.0]),
    );
    assert_mentions(&invalid(evaluate(&c)), &["mask"]);
}

#[test]
fn param_domains() {
    for (loss, name, v) in [
        ("huber", "delta", 0.0),
        ("huber", "delta", -1.0),
        ("huber", "delta", f64::NAN),
        ("huber", "delta", f64::INFINITY),
        ("quantile", "tau", 1.0),
        ("quantile", "tau", 0.0),
        ("quantile", "tau", 1.5),
        ("quantile", "tau", f64::NAN),
    ] {
        let mut c = case(loss, Dtype::F32, &[1], &[1.0], &[0.0]);
        c.params.insert(name.into(), ParamValue::Float(v));
        assert_mentions(&invalid(evaluate(&c)), &[name]);
    }
}

#[test]
fn unknown_input_param_and_grad() {
    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.inputs
        .insert("foo".into(), Tensor::float(Dtype::F32, vec![1], vec![0.0]));
    assert_mentions(&invalid(evaluate(&c)), &["foo"]);

    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.params.insert("delta".into(), ParamValue::Float(1.0));
    assert_mentions(&invalid(evaluate(&c)), &["delta"]);

    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.grad = vec!["weight".into()];
    assert_mentions(&invalid(evaluate(&c)), &["weight"]);

    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.inputs.remove("target");
    assert_mentions(&invalid(evaluate(&c)), &["target"]);
}

#[test]
fn wrong_dtypes_and_reductions() {
    // pred in the wrong dtype
    let mut c = case("mae", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.inputs.insert(
        "pred".into(),
        Tensor::float(Dtype::Bf16, vec![1], vec![1.0]),
    );
    assert_mentions(&invalid(evaluate(&c)), &["pred"]);
    // an i64 weight
    let mut c = case("mae", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.inputs
        .insert("weight".into(), Tensor::int(vec![1], vec![1]));
    assert_mentions(&invalid(evaluate(&c)), &["weight"]);
    // sequence_mean is cross_entropy's alone
    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.set_reduction(Reduction::SequenceMean);
    assert_mentions(&invalid(evaluate(&c)), &["sequence_mean"]);
    // a reduced output takes a [] cotangent, not [1]
    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.inputs.insert(
        "cotangent".into(),
        Tensor::float(Dtype::F32, vec![1], vec![1.0]),
    );
    assert_mentions(&invalid(evaluate(&c)), &["cotangent"]);
    // `none` takes the output's shape
    let mut c = case("mse", Dtype::F32, &[2], &[1.0, 2.0], &[0.0; 2]);
    c.set_reduction(Reduction::None);
    c.inputs
        .insert("cotangent".into(), Tensor::scalar(Dtype::F32, 1.0));
    assert_mentions(&invalid(evaluate(&c)), &["cotangent"]);
}

#[test]
fn unknown_and_unimplemented_losses_are_unsupported() {
    let mut c = case("mse", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.loss = "no_such_loss".into();
    assert_eq!(evaluate(&c).unwrap_err().kind, ErrorKind::Unsupported);
    // a catalogue loss without a kernel yet, while one is left (checked before validation)
    if let Some(id) =
        losscheck_core::catalogue::ids().find(|id| !losscheck::kernels::implemented(id))
    {
        let c = Case::new(id, Dtype::F32).unwrap();
        assert_eq!(
            evaluate(&c).unwrap_err().kind,
            ErrorKind::Unsupported,
            "{id}"
        );
    }
}

#[test]
fn out_dtype_other_than_input_or_f32_is_rejected() {
    // The value is in the input dtype, or f32 for 16-bit inputs; anything else is an error
    // (validation calls it invalid input) naming out_dtype.
    for (d, o) in [
        (Dtype::F32, Dtype::F16),
        (Dtype::F32, Dtype::Bf16),
        (Dtype::F16, Dtype::Bf16),
        (Dtype::Bf16, Dtype::F16),
    ] {
        let mut c = case("mse", d, &[1], &[1.0], &[0.0]);
        c.out_dtype = o;
        let e = evaluate(&c).unwrap_err();
        assert_mentions(&e.message, &["out_dtype"]);
    }
}

// ---- odd but valid shapes: no panic, the policies hold

#[test]
fn empty_batch_mean_sum_none() {
    for loss in REGRESSION {
        for dtype in Dtype::ALL {
            for shape in [vec![0], vec![2, 0, 3], vec![0, 4]] {
                for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                    let mut c = case(loss, dtype, &shape, &[], &[]);
                    c.set_reduction(red);
                    let r = evaluate(&c)
                        .unwrap_or_else(|e| panic!("{loss} {dtype} {shape:?} {red}: {e}"));
                    if red == Reduction::None {
                        assert_eq!(r.value.shape, shape);
                        assert!(r.value.is_empty());
                    } else {
                        assert_eq!(r.value.shape, Vec::<usize>::new());
                        // empty mean is zero (PyTorch: nan); empty sum is zero
                        assert_eq!(r.value.f().unwrap(), &[0.0]);
                    }
                    for g in ["pred", "target"] {
                        assert_eq!(r.grad[g].shape, shape);
                        assert!(r.grad[g].is_empty());
                    }
                }
            }
        }
    }
}

#[test]
fn scalar_shape() {
    for loss in REGRESSION {
        for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let mut c = case(loss, Dtype::F32, &[], &[3.0], &[1.0]);
            c.set_reduction(red);
            let r = evaluate(&c).unwrap();
            assert_eq!(r.value.shape, Vec::<usize>::new());
            assert_eq!(r.value.len(), 1);
            assert_eq!(r.grad["pred"].shape, Vec::<usize>::new());
            assert_eq!(r.grad["target"].shape, Vec::<usize>::new());
        }
    }
    // torch.nn.functional.mse_loss(torch.tensor(3.), torch.tensor(1.)) -> 4.
    let r = evaluate(&case("mse", Dtype::F32, &[], &[3.0], &[1.0])).unwrap();
    assert_eq!(r.value.f().unwrap(), &[4.0]);
}

#[test]
fn nd_shapes_are_kept_for_none() {
    let mut c = case(
        "mae",
        Dtype::Bf16,
        &[2, 3],
        &[1.0, -2.0, 3.0, 0.0, 0.5, -0.5],
        &[0.0; 6],
    );
    c.set_reduction(Reduction::None);
    let r = evaluate(&c).unwrap();
    assert_eq!(r.value.shape, vec![2, 3]);
    // torch.nn.functional.l1_loss(torch.tensor([[1.,-2,3],[0,.5,-.5]]), torch.zeros(2,3), reduction='none')
    assert_eq!(r.value.f().unwrap(), &[1.0, 2.0, 3.0, 0.0, 0.5, 0.5]);
    assert_eq!(r.value.dtype, TensorDtype::Float(Dtype::Bf16));
    assert_eq!(r.grad["pred"].shape, vec![2, 3]);
    assert_eq!(
        r.grad["pred"].f().unwrap(),
        &[1.0, -1.0, 1.0, 0.0, 1.0, -1.0]
    );
}

#[test]
fn only_requested_grads_are_returned() {
    let mut c = case("huber", Dtype::F32, &[1], &[1.0], &[0.0]);
    c.grad = vec!["target".into()];
    let r = evaluate(&c).unwrap();
    assert_eq!(r.grad.keys().collect::<Vec<_>>(), vec!["target"]);
    c.grad.clear();
    assert!(evaluate(&c).unwrap().grad.is_empty());
}

// ---- typed API

fn typed_err(r: Result<Output<f32, f32>, LossError>) -> String {
    match r {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
            e.message
        }
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn typed_api_rejects_bad_input() {
    let p = [1.0f32, 2.0, 3.0];
    let t = [0.0f32, 0.0, 0.0];
    let short = [0.0f32, 0.0];
    assert_mentions(
        &typed_err(mse(&ElementwiseArgs::new(&p, &short))),
        &["target", "2", "3"],
    );
    let w = [1.0f32, -0.5, 1.0];
    assert_mentions(
        &typed_err(mse(&ElementwiseArgs::new(&p, &t).weight(&w))),
        &["weight[1]", "-0.5"],
    );
    let w = [1.0f32, 1.0, f32::NAN];
    assert_mentions(
        &typed_err(mae(&ElementwiseArgs::new(&p, &t).weight(&w))),
        &["weight[2]", "NaN"],
    );
    let w = [1.0f32, 1.0];
    assert_mentions(
        &typed_err(mae(&ElementwiseArgs::new(&p, &t).weight(&w))),
        &["weight"],
    );
    let m = [1i64, 0, 2];
    assert_mentions(
        &typed_err(mse(&ElementwiseArgs::new(&p, &t).mask(&m))),
        &["mask[2]", "2"],
    );
    let m = [1i64, 0, -1];
    assert_mentions(
        &typed_err(mse(&ElementwiseArgs::new(&p, &t).mask(&m))),
        &["mask[2]", "-1"],
    );
    let cot = [1.0f32, 1.0];
    assert_mentions(
        &typed_err(mse(&ElementwiseArgs::new(&p, &t).cotangent(&cot))),
        &["cotangent"],
    );
    let args = ElementwiseArgs::new(&p, &t)
        .cotangent(&cot)
        .reduction(Reduction::None);
    assert_mentions(&typed_err(mse(&args)), &["cotangent"]);
    let args = ElementwiseArgs::new(&p, &t).reduction(Reduction::SequenceMean);
    assert_mentions(&typed_err(mse(&args)), &["sequence_mean"]);
    for d in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_mentions(
            &typed_err(huber(&ElementwiseArgs::new(&p, &t), d)),
            &["delta"],
        );
    }
    for tau in [0.0, 1.0, -0.1, 2.0, f64::NAN] {
        assert_mentions(
            &typed_err(quantile(&ElementwiseArgs::new(&p, &t), tau)),
            &["tau"],
        );
    }
}

#[test]
fn typed_api_empty_and_16bit() {
    let e: [f16; 0] = [];
    for red in [Reduction::Mean, Reduction::Sum] {
        let out: Output<f16, f32> = mse(&ElementwiseArgs::new(&e, &e).reduction(red)).unwrap();
        assert_eq!(out.value, vec![0.0f32]);
        assert_eq!(out.grad_pred, Some(vec![]));
    }
    let out: Output<f16, f16> =
        mse(&ElementwiseArgs::new(&e, &e).reduction(Reduction::None)).unwrap();
    assert!(out.value.is_empty());
}
