//! `Case::to_json` / `Case::from_json` and the number encoding of PROTOCOL.md ("Tensors and
//! numbers").

use losscheck_core::tensor::{decode_f64, encode_f64};
use losscheck_core::{validate, Case, Dtype, ErrorKind, ParamValue, Reduction, Tensor};
use serde_json::{json, Value};

fn parse(text: &str) -> Result<(Case, Vec<String>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    Case::from_json(&v).map_err(|e| {
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        e.message
    })
}

fn parse_ok(text: &str) -> (Case, Vec<String>) {
    parse(text).unwrap_or_else(|m| panic!("rejected: {m}\n{text}"))
}

fn parse_err(text: &str, needles: &[&str]) -> String {
    match parse(text) {
        Ok((c, _)) => panic!("accepted (expected an error mentioning {needles:?}): {c:?}"),
        Err(m) => {
            for n in needles {
                assert!(m.contains(n), "message {m:?} does not mention {n:?}");
            }
            m
        }
    }
}

fn fdata<'a>(c: &'a Case, name: &str) -> &'a [f64] {
    c.inputs[name]
        .f()
        .unwrap_or_else(|| panic!("{name} is not a float tensor"))
}

fn idata<'a>(c: &'a Case, name: &str) -> &'a [i64] {
    c.inputs[name]
        .i()
        .unwrap_or_else(|| panic!("{name} is not an i64 tensor"))
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Cases equal with floats compared by bits (NaN equal to NaN).
fn assert_same_case(a: &Case, b: &Case) {
    assert_eq!(
        (a.id, &a.loss, a.dtype, a.out_dtype, &a.grad),
        (b.id, &b.loss, b.dtype, b.out_dtype, &b.grad)
    );
    assert_eq!(a.params.len(), b.params.len());
    for (k, v) in &a.params {
        match (v, &b.params[k]) {
            (ParamValue::Float(x), ParamValue::Float(y)) => {
                assert!(same(*x, *y), "param {k}: {x:?} vs {y:?}")
            }
            (x, y) => assert_eq!(x, y, "param {k}"),
        }
    }
    assert_eq!(
        a.inputs.keys().collect::<Vec<_>>(),
        b.inputs.keys().collect::<Vec<_>>()
    );
    for (k, t) in &a.inputs {
        let u = &b.inputs[k];
        assert_eq!((t.dtype, &t.shape), (u.dtype, &u.shape), "input {k}");
        match (t.f(), u.f()) {
            (Some(x), Some(y)) => {
                assert_eq!(x.len(), y.len());
                for (j, (p, q)) in x.iter().zip(y).enumerate() {
                    assert!(same(*p, *q), "input {k}[{j}]: {p:?} vs {q:?}");
                }
            }
            _ => assert_eq!(t.i(), u.i(), "input {k}"),
        }
    }
}

/// Serialise to a line of text and read it back: the same case, and no warnings.
fn round_trip(c: &Case) {
    let text = serde_json::to_string(&c.to_json()).unwrap();
    assert!(!text.contains('\n'));
    let (back, warnings) = parse_ok(&text);
    assert!(
        warnings.is_empty(),
        "warnings on a written case: {warnings:?}"
    );
    assert_same_case(c, &back);
    assert_eq!(
        serde_json::to_string(&back.to_json()).unwrap(),
        text,
        "second round trip differs"
    );
}

// ---------------------------------------------------------------------------------------------

const PROTOCOL_REQUEST: &str = r#"{"op":"eval","id":7,"loss":"cross_entropy","dtype":"f32","out_dtype":"f32",
 "params":{"reduction":"mean","ignore_index":-100,"label_smoothing":0.0},
 "inputs":{"logits":{"dtype":"f32","shape":[2,3],"data":[0.0,0.0,0.0,0.5,-1.0,"inf"]},
           "target":{"dtype":"i64","shape":[2],"data":[1,-100]}},
 "grad":["logits"]}"#;

#[test]
fn protocol_example_request_parses_and_validates() {
    let (c, warnings) = parse_ok(PROTOCOL_REQUEST);
    assert!(warnings.is_empty());
    assert_eq!(
        (c.id, c.loss.as_str(), c.dtype, c.out_dtype),
        (7, "cross_entropy", Dtype::F32, Dtype::F32)
    );
    assert_eq!(c.reduction(), Reduction::Mean);
    assert_eq!(c.params["ignore_index"], ParamValue::Int(-100));
    assert_eq!(c.params["label_smoothing"], ParamValue::Float(0.0));
    assert_eq!(c.inputs["logits"].shape, vec![2, 3]);
    assert_eq!(
        fdata(&c, "logits"),
        &[0.0, 0.0, 0.0, 0.5, -1.0, f64::INFINITY]
    );
    assert_eq!(idata(&c, "target"), &[1, -100]);
    assert_eq!(c.grad, vec!["logits".to_string()]);
    let ch = validate(&c).unwrap();
    assert_eq!((ch.layout, ch.rows), ("NC", 2));
    round_trip(&c);
}

#[test]
fn protocol_example_response_numbers_are_f32_values() {
    // "every f32, f16 and bf16 value is exact in float64, so parsing as float64 and casting gives
    // the exact value": the response's decimals parse to exact f32 values.
    for s in [
        "1.0986123085021973",
        "0.3333333432674408",
        "-0.6666666865348816",
    ] {
        let x = decode_f64(&serde_json::from_str::<Value>(s).unwrap()).unwrap();
        assert!(Dtype::F32.contains(x), "{s} is not an f32 value");
        assert_eq!(serde_json::to_string(&encode_f64(x)).unwrap(), s);
    }
}

fn sample_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    // every dtype, special values
    for dt in Dtype::ALL {
        let mut c = Case::new("huber", dt).unwrap();
        c.id = 123_456_789_012;
        let vals = [
            0.0,
            -0.0,
            nan,
            inf,
            -inf,
            dt.max(),
            -dt.min_subnormal(),
            dt.min_normal(),
            dt.round(0.1),
            dt.round(-1.0 / 3.0),
        ];
        c.inputs
            .insert("pred".into(), Tensor::float(dt, vec![2, 5], vals.to_vec()));
        c.inputs.insert(
            "target".into(),
            Tensor::float(dt, vec![2, 5], vals.iter().rev().copied().collect()),
        );
        c.inputs.insert(
            "mask".into(),
            Tensor::int(vec![2, 5], vec![1, 0, 1, 1, 1, 0, 0, 1, 1, 1]),
        );
        c.params.insert("delta".into(), ParamValue::Float(0.1)); // a binary64 param
        if dt.is_16bit() {
            c.out_dtype = Dtype::F32;
        }
        out.push(c);
    }
    // soft cross-entropy, label smoothing, class weights, scalar cotangent
    let mut c = Case::new("cross_entropy", Dtype::Bf16).unwrap();
    c.inputs.insert(
        "logits".into(),
        Tensor::float(Dtype::Bf16, vec![2, 2], vec![1.0, -2.0, 0.5, 3.0]),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::Bf16, vec![2, 2], vec![0.25, 0.75, 1.0, 0.0]),
    );
    c.inputs.insert(
        "class_weight".into(),
        Tensor::float(Dtype::Bf16, vec![2], vec![1.0, 0.5]),
    );
    c.inputs
        .insert("cotangent".into(), Tensor::scalar(Dtype::Bf16, 2.0));
    c.params
        .insert("label_smoothing".into(), ParamValue::Float(0.125));
    out.push(c);
    // BTC with sequence_mean
    let mut c = Case::new("cross_entropy", Dtype::F16).unwrap();
    c.inputs.insert(
        "logits".into(),
        Tensor::float(Dtype::F16, vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]),
    );
    c.inputs
        .insert("target".into(), Tensor::int(vec![1, 2], vec![0, -100]));
    c.set_reduction(Reduction::SequenceMean);
    out.push(c);
    // bools, choices, ints, nulls, an empty grad, N = 0
    let mut c = Case::new("distill_kl", Dtype::F32).unwrap();
    c.params
        .insert("direction".into(), ParamValue::Str("reverse".into()));
    c.params
        .insert("temperature".into(), ParamValue::Float(1e-7));
    c.inputs.insert(
        "student".into(),
        Tensor::float(Dtype::F32, vec![0, 3], vec![]),
    );
    c.inputs.insert(
        "teacher".into(),
        Tensor::float(Dtype::F32, vec![0, 3], vec![]),
    );
    c.grad.clear();
    out.push(c);
    let mut c = Case::new("focal", Dtype::F32).unwrap();
    c.params.insert("alpha".into(), ParamValue::Null);
    c.params.insert("gamma".into(), ParamValue::Float(0.0));
    c.inputs
        .insert("logit".into(), Tensor::scalar(Dtype::F32, -0.0));
    c.inputs
        .insert("target".into(), Tensor::scalar(Dtype::F32, 1.0));
    out.push(c);
    let mut c = Case::new("info_nce", Dtype::F32).unwrap();
    c.params.insert("normalize".into(), ParamValue::Bool(false));
    c.params.insert("symmetric".into(), ParamValue::Bool(true));
    c.inputs.insert(
        "query".into(),
        Tensor::float(
            Dtype::F32,
            vec![1, 2],
            vec![3.4028234663852886e38, 1.401298464324817e-45],
        ),
    );
    c.inputs.insert(
        "key".into(),
        Tensor::float(
            Dtype::F32,
            vec![1, 2],
            vec![-1.1754943508222875e-38, 16777215.0],
        ),
    );
    out.push(c);
    let mut c = Case::new("multi_margin", Dtype::F32).unwrap();
    c.params.insert("p".into(), ParamValue::Int(2));
    c.params.insert("margin".into(), ParamValue::Float(-0.0));
    c.inputs.insert(
        "scores".into(),
        Tensor::float(Dtype::F32, vec![1, 2], vec![0.5, 0.25]),
    );
    c.inputs
        .insert("target".into(), Tensor::int(vec![1], vec![1]));
    out.push(c);
    let mut c = Case::new("bce", Dtype::F16).unwrap();
    c.params
        .insert("log_floor".into(), ParamValue::Float(-100.0));
    c.inputs.insert(
        "prob".into(),
        Tensor::float(Dtype::F16, vec![1], vec![Dtype::F16.next_down(1.0)]),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::F16, vec![1], vec![1.0]),
    );
    out.push(c);
    // invalid values still serialise (fuzz campaigns send them)
    let mut c = Case::new("huber", Dtype::F32).unwrap();
    c.params.insert("delta".into(), ParamValue::Float(f64::NAN));
    c.params
        .insert("reduction".into(), ParamValue::Str("sum".into()));
    c.inputs
        .insert("pred".into(), Tensor::float(Dtype::F32, vec![1], vec![2.0]));
    out.push(c);
    let mut c = Case::new("quantile", Dtype::F32).unwrap();
    c.params
        .insert("tau".into(), ParamValue::Float(f64::NEG_INFINITY));
    out.push(c);
    let mut c = Case::new("bce_logits", Dtype::F32).unwrap();
    c.inputs.insert(
        "logit".into(),
        Tensor::float(Dtype::F32, vec![1, 2], vec![0.5, 0.25]),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::F32, vec![1, 2], vec![0.5, 0.25]),
    );
    c.inputs.insert(
        "pos_weight".into(),
        Tensor::float(Dtype::F32, vec![2], vec![3.0, 0.0]),
    );
    out.push(c);
    out
}

#[test]
fn to_json_and_from_json_round_trip() {
    for c in sample_cases() {
        round_trip(&c);
    }
}

#[test]
fn to_json_has_protocol_fields() {
    let c = &sample_cases()[1]; // f16 huber with out_dtype f32
    let v = c.to_json();
    assert_eq!(v["op"], "eval");
    assert_eq!(v["id"], 123_456_789_012u64);
    assert_eq!(v["loss"], "huber");
    assert_eq!(v["dtype"], "f16");
    assert_eq!(v["out_dtype"], "f32");
    // every param of the loss is sent, reduction included
    assert_eq!(v["params"], json!({"reduction": "mean", "delta": 0.1}));
    assert_eq!(v["inputs"]["pred"]["dtype"], "f16");
    assert_eq!(v["inputs"]["pred"]["shape"], json!([2, 5]));
    assert_eq!(v["inputs"]["mask"]["dtype"], "i64");
    assert_eq!(
        v["inputs"]["mask"]["data"],
        json!([1, 0, 1, 1, 1, 0, 0, 1, 1, 1])
    );
    assert_eq!(v["grad"], json!(["pred", "target"]));
    let text = serde_json::to_string(&v["inputs"]["pred"]["data"]).unwrap();
    assert_eq!(
        text,
        r#"[0.0,-0.0,"nan","inf","-inf",65504.0,-5.960464477539063e-8,0.00006103515625,0.0999755859375,-0.333251953125]"#
    );
    // optional params that are none are sent as null
    let v = Case::new("focal", Dtype::F32).unwrap().to_json();
    assert_eq!(v["params"]["alpha"], Value::Null);
    assert_eq!(v["params"]["gamma"], json!(2.0));
}

// ---------------------------------------------------------------------------------------------
// Numbers.

/// Significant decimal digits of a JSON number as written.
fn significant_digits(s: &str) -> usize {
    let mantissa = s.trim_start_matches('-').split(['e', 'E']).next().unwrap();
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_start_matches('0').trim_end_matches('0');
    digits.len().max(1)
}

fn check_shortest(x: f64) {
    let s = serde_json::to_string(&encode_f64(x)).unwrap();
    let back: f64 = s.parse().unwrap();
    assert!(same(back, x), "{s} does not round-trip {x:e}");
    assert!(
        same(decode_f64(&serde_json::from_str(&s).unwrap()).unwrap(), x),
        "{s} through serde_json"
    );
    let d = significant_digits(&s);
    if d > 1 {
        // the nearest decimal with one digit fewer (correctly rounded by Rust's formatter) must
        // not round-trip, or `s` was not the shortest
        let shorter = format!("{:.*e}", d - 2, x);
        assert!(
            !same(shorter.parse::<f64>().unwrap(), x),
            "{s} is not the shortest: {shorter} round-trips"
        );
    }
}

struct Rng(losscheck_core::rng::SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[test]
fn floats_are_written_as_the_shortest_round_trip_decimal() {
    let mut rng = Rng(losscheck_core::rng::SplitMix64::new(42));
    for _ in 0..20_000 {
        let x = f64::from_bits(rng.next());
        if x.is_finite() {
            check_shortest(x);
        }
        let y = f32::from_bits(rng.next() as u32);
        if y.is_finite() {
            check_shortest(y as f64);
        }
    }
    for b in 0..=0xFFFFu32 {
        for dt in [Dtype::F16, Dtype::Bf16] {
            let x = dt.from_bits(b);
            if x.is_finite() {
                check_shortest(x);
            }
        }
    }
    for x in [
        1.0,
        0.1,
        1e-7,
        1e300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.3333333432674408,
        65504.0,
    ] {
        check_shortest(x);
    }
}

#[test]
fn negative_zero_is_written_as_minus_zero_point_zero_and_read_back() {
    assert_eq!(serde_json::to_string(&encode_f64(-0.0)).unwrap(), "-0.0");
    assert_eq!(serde_json::to_string(&encode_f64(0.0)).unwrap(), "0.0");
    assert_eq!(serde_json::to_string(&encode_f64(1.0)).unwrap(), "1.0");
    for s in ["-0.0", "-0", "-0e0", "-0.0e-5"] {
        let x = decode_f64(&serde_json::from_str(s).unwrap()).unwrap();
        assert!(x == 0.0 && x.is_sign_negative(), "{s} read as {x:?}");
    }
    let (c, _) = parse_ok(
        r#"{"loss":"mse","dtype":"f16","inputs":{"pred":{"data":[-0.0,-0]},"target":{"data":[0.0,0]}}}"#,
    );
    assert!(fdata(&c, "pred")
        .iter()
        .all(|x| *x == 0.0 && x.is_sign_negative()));
    assert!(fdata(&c, "target")
        .iter()
        .all(|x| *x == 0.0 && x.is_sign_positive()));
}

#[test]
fn non_finite_values_are_strings_and_python_spellings_are_accepted() {
    assert_eq!(encode_f64(f64::NAN), json!("nan"));
    assert_eq!(encode_f64(-f64::NAN), json!("nan"));
    assert_eq!(encode_f64(f64::INFINITY), json!("inf"));
    assert_eq!(encode_f64(f64::NEG_INFINITY), json!("-inf"));
    for (s, want) in [
        ("nan", f64::NAN),
        ("NaN", f64::NAN),
        ("inf", f64::INFINITY),
        ("Infinity", f64::INFINITY),
        ("-inf", f64::NEG_INFINITY),
        ("-Infinity", f64::NEG_INFINITY),
    ] {
        let got = decode_f64(&json!(s)).unwrap_or_else(|| panic!("{s:?} not accepted"));
        assert!(same(got, want), "{s:?} read as {got}");
    }
    for bad in ["", "1.5", "infinity", "nope"] {
        assert_eq!(decode_f64(&json!(bad)), None, "{bad:?} accepted");
    }
    assert_eq!(decode_f64(&Value::Null), None);
    assert_eq!(decode_f64(&json!(true)), None);
    assert_eq!(decode_f64(&json!([1.0])), None);
    // in a case
    let (c, w) = parse_ok(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"data":["NaN","Infinity","-Infinity","nan","inf","-inf"]},"target":{"data":[1,2,3,4,5,6]}}}"#,
    );
    assert!(w.is_empty());
    let p = fdata(&c, "pred");
    assert!(p[0].is_nan() && p[3].is_nan());
    assert_eq!(&p[1..3], &[f64::INFINITY, f64::NEG_INFINITY]);
    assert_eq!(&p[4..], &[f64::INFINITY, f64::NEG_INFINITY]);
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"data":["big"]},"target":{"data":[1]}}}"#,
        &["pred", "[0]", "big"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"data":[null]},"target":{"data":[1]}}}"#,
        &["pred", "[0]"],
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases.

#[test]
fn hand_written_cases_get_defaults() {
    let (c, w) = parse_ok(
        r#"{"loss":"huber","dtype":"bf16","inputs":{"pred":{"shape":[2],"data":[1,2]},"target":{"data":[0.5,-4]}}}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!((c.id, c.out_dtype), (0, Dtype::Bf16));
    assert_eq!(c.reduction(), Reduction::Mean);
    assert_eq!(c.params["delta"], ParamValue::Float(1.0));
    assert_eq!(c.params.len(), 2);
    assert_eq!(c.grad, vec!["pred".to_string(), "target".to_string()]);
    // omitted tensor dtype: the request's dtype for float inputs, i64 for integer ones; omitted
    // shape: 1-D
    assert_eq!(
        c.inputs["pred"].dtype,
        losscheck_core::TensorDtype::Float(Dtype::Bf16)
    );
    assert_eq!(c.inputs["target"].shape, vec![2]);
    let (c, _) = parse_ok(
        r#"{"loss":"hinge","dtype":"f16","params":{"margin":0.5},"inputs":{"score":{"data":[1.5]},"target":{"data":[-1]}}}"#,
    );
    assert_eq!(c.inputs["target"].dtype, losscheck_core::TensorDtype::I64);
    assert_eq!(idata(&c, "target"), &[-1]);
    assert_eq!(c.params["margin"], ParamValue::Float(0.5));
    validate(&c).unwrap();
    let (c, _) = parse_ok(
        r#"{"loss":"info_nce","dtype":"f32","params":{"symmetric":true},"inputs":{"query":{"shape":[1,1],"data":[1]},"key":{"shape":[1,1],"data":[1]}}}"#,
    );
    assert_eq!(c.params["temperature"], ParamValue::Float(0.07));
    assert_eq!(c.params["normalize"], ParamValue::Bool(true));
    assert_eq!(c.params["symmetric"], ParamValue::Bool(true));
    assert_eq!(c.params["eps"], ParamValue::Float(1e-12));
    // integer-valued JSON numbers for integer params, and floats written as integers
    let (c, _) = parse_ok(
        r#"{"loss":"multi_margin","dtype":"f32","params":{"p":2.0,"margin":2},"inputs":{"scores":{"shape":[1,2],"data":[0,1]},"target":{"data":[0]}}}"#,
    );
    assert_eq!(c.params["p"], ParamValue::Int(2));
    assert_eq!(c.params["margin"], ParamValue::Float(2.0));
    let (c, _) = parse_ok(
        r#"{"loss":"focal","dtype":"f32","params":{"alpha":null},"inputs":{"logit":{"data":[0]},"target":{"data":[1]}}}"#,
    );
    assert_eq!(c.params["alpha"], ParamValue::Null);
    let (c, _) = parse_ok(
        r#"{"loss":"focal","dtype":"f32","params":{"alpha":0.25},"inputs":{"logit":{"data":[0]},"target":{"data":[1]}}}"#,
    );
    assert_eq!(c.params["alpha"], ParamValue::Float(0.25));
}

#[test]
fn values_not_in_the_dtype_are_rounded_with_a_warning() {
    let (c, w) = parse_ok(
        r#"{"loss":"mse","dtype":"f16","inputs":{"pred":{"data":[0.1, 0.5, 1e9, 1e-9]},"target":{"data":[0.25,0,0,0]}}}"#,
    );
    // 0.1 → the nearest f16, 0x2E66 = 1638/16384; 1e9 → inf (overflow); 1e-9 → 0 (below half
    // the min subnormal 2^-25 ≈ 2.98e-8)
    assert_eq!(
        fdata(&c, "pred"),
        &[1638.0 / 16384.0, 0.5, f64::INFINITY, 0.0]
    );
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("pred") && w[0].contains('3') && w[0].contains("f16"),
        "{w:?}"
    );
    // f32 and bf16 too; exact values give no warning
    let (c, w) = parse_ok(
        r#"{"loss":"mse","dtype":"bf16","inputs":{"pred":{"data":[0.1]},"target":{"data":[0.1]}}}"#,
    );
    assert_eq!(fdata(&c, "pred"), &[0.10009765625]);
    assert_eq!(w.len(), 2);
    let (c, w) = parse_ok(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"data":[0.1]},"target":{"data":[0.10000000149011612]}}}"#,
    );
    assert_eq!(fdata(&c, "pred"), &[0.1f32 as f64]);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("pred"));
    // a decimal that is exactly a midpoint of f16 values rounds to even: 1 + 2^-11
    let (c, _) = parse_ok(
        r#"{"loss":"mse","dtype":"f16","inputs":{"pred":{"data":[1.00048828125, 1.0004882812500002]},"target":{"data":[0,0]}}}"#,
    );
    assert_eq!(fdata(&c, "pred"), &[1.0, 1.0009765625]);
}

#[test]
fn integral_floats_in_integer_tensors_are_accepted_with_a_warning() {
    let (c, w) = parse_ok(
        r#"{"loss":"nll","dtype":"f32","inputs":{"logp":{"shape":[2,2],"data":[-1,-2,-3,-4]},"target":{"dtype":"i64","data":[1.0,0,-100.0]}}}"#,
    );
    assert_eq!(idata(&c, "target"), &[1, 0, -100]);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("target"), "{w:?}");
    let (_, w) = parse_ok(
        r#"{"loss":"nll","dtype":"f32","inputs":{"logp":{"shape":[1,2],"data":[-1,-2]},"target":{"dtype":"i64","data":[1]}}}"#,
    );
    assert!(w.is_empty());
    // a mask or label tensor declared float
    let (c, w) = parse_ok(
        r#"{"loss":"hinge","dtype":"f32","inputs":{"score":{"data":[1,2]},"target":{"dtype":"f32","data":[1.0,-1.0]},"mask":{"data":[1.0,0]}}}"#,
    );
    assert_eq!(idata(&c, "target"), &[1, -1]);
    assert_eq!(idata(&c, "mask"), &[1, 0]);
    assert_eq!(w.len(), 2, "{w:?}");
}

#[test]
fn non_integral_values_in_integer_tensors_are_rejected() {
    for data in [
        "[1.5, 0]",
        r#"["nan", 0]"#,
        r#"["inf", 0]"#,
        "[1e300, 0]",
        "[true, 0]",
    ] {
        let text = format!(
            r#"{{"loss":"nll","dtype":"f32","inputs":{{"logp":{{"shape":[2,2],"data":[-1,-2,-3,-4]}},"target":{{"dtype":"i64","data":{data}}}}}}}"#
        );
        parse_err(&text, &["target", "[0]"]);
    }
    parse_err(
        r#"{"loss":"hinge","dtype":"f32","inputs":{"score":{"data":[1]},"target":{"data":[0.5]}}}"#,
        &["target", "0.5"],
    );
    parse_err(
        r#"{"loss":"hinge","dtype":"f32","inputs":{"score":{"data":[1]},"target":{"dtype":"f32","data":[0.5]}}}"#,
        &["target", "0.5"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"data":[1]},"target":{"data":[1]},"mask":{"data":[0.5]}}}"#,
        &["mask", "0.5"],
    );
}

#[test]
fn soft_cross_entropy_targets_are_read_as_floats() {
    // declared float
    let (c, w) = parse_ok(
        r#"{"loss":"cross_entropy","dtype":"f32","inputs":{"logits":{"dtype":"f32","shape":[2,2],"data":[0,1,2,3]},"target":{"dtype":"f32","shape":[2,2],"data":[0.25,0.75,1.0,0.0]}}}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(fdata(&c, "target"), &[0.25, 0.75, 1.0, 0.0]);
    let ch = validate(&c).unwrap();
    assert!(ch.soft);
    round_trip(&c);
    // dtype omitted: a target with the logits' rank is a soft target, one rank less class ids
    let (c, _) = parse_ok(
        r#"{"loss":"cross_entropy","dtype":"f16","inputs":{"logits":{"shape":[2,2],"data":[0,1,2,3]},"target":{"shape":[2,2],"data":[0.5,0.5,1,0]}}}"#,
    );
    assert_eq!(
        c.inputs["target"].dtype,
        losscheck_core::TensorDtype::Float(Dtype::F16)
    );
    assert!(validate(&c).unwrap().soft);
    let (c, _) = parse_ok(
        r#"{"loss":"cross_entropy","dtype":"f16","inputs":{"logits":{"shape":[2,2],"data":[0,1,2,3]},"target":{"data":[1,0]}}}"#,
    );
    assert_eq!(idata(&c, "target"), &[1, 0]);
    let (c, _) = parse_ok(
        r#"{"loss":"cross_entropy","dtype":"f32","inputs":{"logits":{"shape":[1,2,2],"data":[0,1,2,3]},"target":{"shape":[1,2],"data":[1,-100]}}}"#,
    );
    assert_eq!(idata(&c, "target"), &[1, -100]);
    assert_eq!(validate(&c).unwrap().layout, "BTC");
    // declared i64 stays class ids
    let (c, _) = parse_ok(
        r#"{"loss":"cross_entropy","dtype":"f32","inputs":{"logits":{"shape":[1,2],"data":[0,1]},"target":{"dtype":"i64","data":[1]}}}"#,
    );
    assert_eq!(idata(&c, "target"), &[1]);
    // soft targets in a dtype other than the request's
    parse_err(
        r#"{"loss":"cross_entropy","dtype":"f32","inputs":{"logits":{"shape":[1,2],"data":[0,1]},"target":{"dtype":"f16","shape":[1,2],"data":[0.5,0.5]}}}"#,
        &["target", "f16"],
    );
}

#[test]
fn unknown_loss_input_param_and_bad_reduction_are_rejected_readably() {
    let m = parse_err(
        r#"{"loss":"mse2","dtype":"f32","inputs":{}}"#,
        &["mse2", "unknown loss"],
    );
    assert!(m.len() < 200);
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"prediction":{"data":[1]},"target":{"data":[1]}}}"#,
        &["prediction", "pred, target"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","params":{"delta":1},"inputs":{"pred":{"data":[1]},"target":{"data":[1]}}}"#,
        &["delta", "mse"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","params":{"reduction":"avg"},"inputs":{"pred":{"data":[1]},"target":{"data":[1]}}}"#,
        &["reduction", "avg"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","params":{"reduction":1},"inputs":{"pred":{"data":[1]},"target":{"data":[1]}}}"#,
        &["reduction"],
    );
    parse_err(
        r#"{"loss":"huber","dtype":"f32","params":{"delta":"big"},"inputs":{"pred":{"data":[1]},"target":{"data":[1]}}}"#,
        &["delta", "big"],
    );
    parse_err(
        r#"{"loss":"info_nce","dtype":"f32","params":{"normalize":1},"inputs":{"query":{"shape":[1,1],"data":[1]},"key":{"shape":[1,1],"data":[1]}}}"#,
        &["normalize"],
    );
    parse_err(
        r#"{"loss":"distill_kl","dtype":"f32","params":{"direction":"sideways"},"inputs":{}}"#,
        &["direction", "sideways", "forward"],
    );
    parse_err(
        r#"{"loss":"multi_margin","dtype":"f32","params":{"p":1.5},"inputs":{}}"#,
        &["p", "1.5"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f64","inputs":{}}"#,
        &["dtype", "f64"],
    );
    parse_err(r#"{"loss":"mse","inputs":{}}"#, &["dtype"]);
    parse_err(
        r#"{"loss":"mse","dtype":"f32","out_dtype":"f8","inputs":{}}"#,
        &["out_dtype", "f8"],
    );
    parse_err(r#"{"dtype":"f32","inputs":{}}"#, &["loss"]);
    parse_err(r#"{"loss":"mse","dtype":"f32"}"#, &["inputs"]);
    parse_err(
        r#"{"op":"hello","loss":"mse","dtype":"f32","inputs":{}}"#,
        &["op", "hello"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","id":-1,"inputs":{}}"#,
        &["id"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"dtype":"f16","data":[1]}}}"#,
        &["pred", "f16"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"dtype":"float","data":[1]}}}"#,
        &["pred", "float"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"shape":[2,2],"data":[1,2,3]}}}"#,
        &["pred", "3"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"shape":[-1],"data":[]}}}"#,
        &["pred"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":{"shape":[2]}}}"#,
        &["pred", "data"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","inputs":{"pred":[1,2]}}"#,
        &["pred"],
    );
    parse_err(
        r#"{"loss":"bce","dtype":"f32","grad":["target"],"inputs":{"prob":{"data":[0.5]},"target":{"data":[1]}}}"#,
        &["target", "prob"],
    );
    parse_err(
        r#"{"loss":"mse","dtype":"f32","grad":"pred","inputs":{}}"#,
        &["grad"],
    );
    parse_err("[1, 2]", &["object"]);
    let e = Case::new("nope", Dtype::F32).unwrap_err();
    assert!(e.message.contains("nope"));
}

#[test]
fn parse_errors_become_protocol_error_responses() {
    let e = Case::from_json(
        &json!({"loss": "mse", "dtype": "f32", "params": {"reduction": "avg"}, "inputs": {}}),
    )
    .unwrap_err();
    let r = e.to_json(9);
    assert_eq!(r["id"], 9);
    assert_eq!(r["kind"], "invalid_input");
    assert!(r["error"].as_str().unwrap().contains("avg"));
}
