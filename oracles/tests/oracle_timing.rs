//! Cost of `evaluate` for typical regression cases (N = 16) and long batches (N = 2^17).
//! Ignored by default (timing, not correctness): run with
//! `cargo test -p losscheck-oracles --test oracle_timing -- --ignored --nocapture`.

use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use losscheck_oracles::evaluate;
use losscheck_oracles::fd::SplitMix64;
use std::time::Instant;

fn case(loss: &str, d: Dtype, n: usize, red: Reduction, rng: &mut SplitMix64) -> Case {
    let mut c = Case::new(loss, d).unwrap();
    c.set_reduction(red);
    let mut v = || d.round(rng.signed_unit() * 4.0);
    let pred: Vec<f64> = (0..n).map(|_| v()).collect();
    let target: Vec<f64> = (0..n).map(|_| v()).collect();
    let w: Vec<f64> = (0..n).map(|_| d.round(rng.next_f64() * 2.0)).collect();
    c.inputs
        .insert("pred".into(), Tensor::float(d, vec![n], pred));
    c.inputs
        .insert("target".into(), Tensor::float(d, vec![n], target));
    c.inputs
        .insert("weight".into(), Tensor::float(d, vec![n], w));
    if loss == "huber" {
        c.params.insert("delta".into(), ParamValue::Float(1.0));
    }
    c
}

#[test]
#[ignore]
fn evaluate_timings() {
    let mut rng = SplitMix64::new(1);
    // LOSSCHECK_TIMING_LOSS=log_cosh restricts the run to one loss (for profiling)
    let only = std::env::var("LOSSCHECK_TIMING_LOSS").ok();
    for loss in ["mse", "mae", "huber", "quantile", "log_cosh"] {
        if only.as_deref().is_some_and(|o| o != loss) {
            continue;
        }
        for d in [Dtype::F32, Dtype::Bf16] {
            for red in [Reduction::Mean, Reduction::None] {
                let cases: Vec<Case> = (0..200).map(|_| case(loss, d, 16, red, &mut rng)).collect();
                let t = Instant::now();
                let mut prec_sum = 0;
                for c in &cases {
                    prec_sum += evaluate(c).unwrap().precision;
                }
                let per = t.elapsed().as_secs_f64() / cases.len() as f64;
                println!(
                    "{loss:9} {d:5} {red:5} N=16:     {:8.1} µs/case (mean precision {})",
                    per * 1e6,
                    prec_sum / cases.len() as u32
                );
            }
            let big = case(loss, d, 1 << 17, Reduction::Mean, &mut rng);
            let t = Instant::now();
            let out = evaluate(&big).unwrap();
            println!(
                "{loss:9} {d:5} mean  N=2^17:  {:8.1} ms (precision {})",
                t.elapsed().as_secs_f64() * 1e3,
                out.precision
            );
        }
    }
}
