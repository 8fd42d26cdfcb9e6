//! The finite-difference cross-check of the regression oracles' gradients: a few hundred seeded
//! random cases per loss (every reduction, weights, masks, cotangents, kinks, non-finite
//! inputs), 3 random directions each, must agree to 2^-40 relative. And the check itself must
//! catch a gradient that is off by 2^-30 relative, or a wrong sign on one input.

use losscheck_core::{Case, Checked, Dtype, LossError, ParamValue, Reduction, Tensor};
use losscheck_oracles::fd::{check_gradients, check_gradients_with, FdReport, SplitMix64};
use losscheck_oracles::{eval_raw, Inputs, Ival, Raw};
use rug::Float;

const TOL: f64 = 1.0 / (1u64 << 40) as f64;

fn value(rng: &mut SplitMix64, d: Dtype, anchor: Option<f64>) -> f64 {
    loop {
        let x = match rng.below(7) {
            0..=2 => d.round(rng.signed_unit() * 2f64.powi(rng.below(12) as i32 - 4)),
            3 => {
                let bits = rng.next_u64() as u32 & if d == Dtype::F32 { u32::MAX } else { 0xFFFF };
                d.from_bits(bits)
            }
            4 => anchor.unwrap_or(0.0),
            5 => match anchor {
                Some(a) if a.is_finite() => d.next_up(a),
                _ => d.min_subnormal(),
            },
            _ => (rng.below(5) as f64) - 2.0,
        };
        if x.is_finite() {
            return x;
        }
    }
}

fn random_case(rng: &mut SplitMix64, loss: &str) -> Case {
    let d = Dtype::ALL[rng.below(3) as usize];
    let n = [1usize, 2, 3, 7, 16][rng.below(5) as usize];
    let mut c = Case::new(loss, d).unwrap();
    let red = [Reduction::None, Reduction::Sum, Reduction::Mean][rng.below(3) as usize];
    c.set_reduction(red);
    let mut pred = Vec::new();
    let mut target = Vec::new();
    for _ in 0..n {
        let p = value(rng, d, None);
        let t = value(rng, d, Some(p));
        pred.push(p);
        target.push(t);
    }
    // sometimes a non-finite input (its components are skipped, the rest still checked)
    if rng.below(6) == 0 {
        let k = rng.below(n as u64) as usize;
        pred[k] = [f64::INFINITY, f64::NEG_INFINITY, f64::NAN][rng.below(3) as usize];
    }
    c.inputs
        .insert("pred".into(), Tensor::float(d, vec![n], pred));
    c.inputs
        .insert("target".into(), Tensor::float(d, vec![n], target));
    if rng.below(2) == 0 {
        let w = (0..n)
            .map(|_| {
                if rng.below(5) == 0 {
                    0.0
                } else {
                    d.round(rng.next_f64() * 3.0)
                }
            })
            .collect();
        c.inputs
            .insert("weight".into(), Tensor::float(d, vec![n], w));
    }
    if rng.below(3) == 0 {
        let m = (0..n).map(|_| (rng.below(4) != 0) as i64).collect();
        c.inputs.insert("mask".into(), Tensor::int(vec![n], m));
    }
    if rng.below(2) == 0 {
        let (k, shape) = if red == Reduction::None {
            (n, vec![n])
        } else {
            (1, vec![])
        };
        let cot = (0..k).map(|_| value(rng, d, None)).collect();
        c.inputs
            .insert("cotangent".into(), Tensor::float(d, shape, cot));
    }
    match loss {
        "huber" => {
            let delta = [
                1.0,
                0.5,
                2f64.powi(rng.below(30) as i32 - 15),
                d.round(rng.next_f64() * 4.0 + 0.01),
            ][rng.below(4) as usize];
            c.params.insert("delta".into(), ParamValue::Float(delta));
        }
        "quantile" => {
            let tau = (1 + rng.below((1 << 24) - 1)) as f64 / (1u64 << 24) as f64;
            c.params.insert("tau".into(), ParamValue::Float(tau));
        }
        _ => {}
    }
    c.grad = match rng.below(4) {
        0 => vec!["pred".into()],
        1 => vec!["target".into()],
        _ => vec!["pred".into(), "target".into()],
    };
    c
}

#[test]
fn oracle_gradients_agree_with_finite_differences() {
    let mut rng = SplitMix64::new(0xFD_2024);
    let mut totals = FdReport::default();
    for loss in ["mse", "mae", "huber", "quantile", "log_cosh"] {
        let mut compared_cases = 0;
        for k in 0..250 {
            let case = random_case(&mut rng, loss);
            let rep =
                check_gradients(&case, 3, k).unwrap_or_else(|e| panic!("{loss} case {k}: {e}"));
            assert!(
                rep.max_rel < TOL,
                "{loss} case {k}: relative discrepancy {:e}: {}\n{}",
                rep.max_rel,
                rep.worst,
                case.to_json()
            );
            compared_cases += (rep.comparisons > 0) as usize;
            totals.comparisons += rep.comparisons;
            totals.zeroed += rep.zeroed;
            totals.skipped += rep.skipped;
        }
        // most cases have something to compare (not all masked, not all at kinks)
        assert!(
            compared_cases > 200,
            "{loss}: only {compared_cases} cases compared"
        );
    }
    assert!(
        totals.comparisons > 3000 && totals.zeroed > 100,
        "{totals:?}"
    );
}

#[test]
fn hand_made_cases_use_every_route() {
    let f32c = |loss: &str, red: Reduction, pred: Vec<f64>, target: Vec<f64>| {
        let mut c = Case::new(loss, Dtype::F32).unwrap();
        c.set_reduction(red);
        let n = pred.len();
        c.inputs
            .insert("pred".into(), Tensor::float(Dtype::F32, vec![n], pred));
        c.inputs
            .insert("target".into(), Tensor::float(Dtype::F32, vec![n], target));
        c
    };
    // scalar route (finite mean), with a kink at element 1 that must be skipped
    let c = f32c(
        "mae",
        Reduction::Mean,
        vec![1.5, 2.0, -3.0],
        vec![0.25, 2.0, 1.0],
    );
    let rep = check_gradients(&c, 3, 1).unwrap();
    assert_eq!(rep.comparisons, 3);
    assert_eq!(
        rep.zeroed,
        3 * 2,
        "pred[1] and target[1] at the kink, per direction"
    );
    assert!(rep.max_rel < TOL, "{rep:?}");
    // terms route: an inf term makes the mean inf; the other components are still checked
    let c = f32c(
        "log_cosh",
        Reduction::Mean,
        vec![f64::INFINITY, 0.5, -2.0],
        vec![0.0, 0.25, 3.0],
    );
    let rep = check_gradients(&c, 3, 2).unwrap();
    assert_eq!(rep.comparisons, 3);
    assert!(rep.max_rel < TOL, "{rep:?}");
    assert!(rep.worst.contains("terms"), "{}", rep.worst);
    // components route (none): one comparison per touched finite component
    let c = f32c(
        "huber",
        Reduction::None,
        vec![0.5, 4.0, f64::NAN],
        vec![0.0, -1.0, 0.0],
    );
    let rep = check_gradients(&c, 2, 3).unwrap();
    assert_eq!(rep.comparisons, 2 * 2);
    assert!(rep.max_rel < TOL, "{rep:?}");
    // huber exactly at the junction |r| = δ (C¹ there): still agrees
    let mut c = f32c("huber", Reduction::Sum, vec![1.5, -0.5], vec![0.5, 0.5]);
    c.params.insert("delta".into(), ParamValue::Float(1.0));
    let rep = check_gradients(&c, 3, 4).unwrap();
    assert!(rep.max_rel < TOL && rep.comparisons == 3, "{rep:?}");
}

/// eval_raw with every gradient scaled by (1 + 2^-30).
fn slightly_wrong(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let mut raw = eval_raw(case, checked, inputs, prec)?;
    let f = Float::with_val(prec, 1) + Float::with_val(prec, Float::i_exp(1, -30));
    for g in raw.grads.values_mut() {
        for x in g.iter_mut() {
            *x = x.mul(&Ival::from_float(f.clone()));
        }
    }
    Ok(raw)
}

/// eval_raw with the target gradient's sign flipped.
fn wrong_sign(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    let mut raw = eval_raw(case, checked, inputs, prec)?;
    if let Some(g) = raw.grads.get_mut("target") {
        for x in g.iter_mut() {
            *x = x.neg();
        }
    }
    Ok(raw)
}

#[test]
fn the_check_detects_wrong_gradients() {
    let mut rng = SplitMix64::new(77);
    let mut detected = 0;
    let mut flipped = 0;
    let mut tried = 0;
    for loss in ["mse", "huber", "log_cosh", "quantile", "mae"] {
        for k in 0..20 {
            let mut case = random_case(&mut rng, loss);
            case.grad = vec!["pred".into(), "target".into()];
            let honest = check_gradients(&case, 3, k).unwrap();
            if honest.comparisons == 0 {
                continue;
            }
            tried += 1;
            // (a case whose compared derivatives are all 0, or cancel between pred and target,
            // can hide a scaled gradient: hence a rate, not every case)
            let bad = check_gradients_with(&case, 3, k, &slightly_wrong).unwrap();
            detected += (bad.max_rel > TOL) as usize;
            let bad = check_gradients_with(&case, 3, k, &wrong_sign).unwrap();
            flipped += (bad.max_rel > 0.1) as usize;
        }
    }
    assert!(tried > 50, "{tried}");
    assert!(
        detected as f64 > 0.8 * tried as f64,
        "detected {detected} of {tried}"
    );
    assert!(
        flipped as f64 > 0.8 * tried as f64,
        "sign flips detected {flipped} of {tried}"
    );
}
