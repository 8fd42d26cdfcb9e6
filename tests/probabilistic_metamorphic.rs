//! Metamorphic relations of the row-wise probabilistic losses
//! (`check::metamorphic::probabilistic`), each checked on the kernels **and** on the oracle, on
//! cases drawn by proptest from the generators' regimes (every regime but long batches) × three
//! dtypes: `kl_div` with `log_target` equals `kl_div` on probabilities; `distill_kl` at T = 1
//! equals `kl_div` of log_softmax(student) against softmax(teacher); `brier` is a proper scoring
//! rule (its exact expectation under π — dyadic, Σπ = 1 exactly, drawn by proptest's
//! ChaCha-based RNG — is smallest at p = π); `neg_elbo(x, z, 0, 0)` is Σ_d bce_logits(z, x).
//! A failure is shrunk by proptest to a minimal case, printed as JSON with the break.
//!
//! `LOSSCHECK_MM_CASES` scales the cases per relation (default 200); `LOSSCHECK_SEED` changes
//! the seed.

use losscheck::check::metamorphic::probabilistic as pr;
use losscheck::check::metamorphic::{Outcome, Side};
use losscheck::check::suite;
use losscheck::{Case, Dtype};
use proptest::prelude::*;
use statrs::distribution::{ContinuousCDF, Gamma};

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

static KL: [&str; 1] = ["kl_div"];
static DISTILL: [&str; 1] = ["distill_kl"];
static ELBO: [&str; 1] = ["neg_elbo"];

#[test]
fn kl_div_log_target_equals_probabilities() {
    check(
        "kl_log_target_is_kl_on_probabilities",
        suite::mm_any_case(&KL),
        pr::kl_log_target_is_kl_on_probabilities,
        json,
    );
}

#[test]
fn distill_kl_at_t1_is_kl_div_of_softmaxes() {
    check(
        "distill_t1_is_kl_of_softmaxes",
        suite::mm_any_case(&DISTILL),
        pr::distill_t1_is_kl_of_softmaxes,
        json,
    );
}

#[test]
fn neg_elbo_with_zero_latent_is_bce_logits() {
    check(
        "neg_elbo_zero_latent_is_bce",
        suite::mm_any_case(&ELBO),
        pr::neg_elbo_zero_latent_is_bce,
        json,
    );
}

/// π over C classes: π ~ Dirichlet(α, …, α), α ∈ {0.1, 0.5, 1, 5} (sparse to near-uniform),
/// drawn with `statrs` (Gamma(α, 1) by its inverse CDF at proptest's uniforms, normalised),
/// then put on the grid k_c / 2^m (m ≤ 8, exact in bf16 too) with Σ k_c = 2^m exactly (largest
/// remainders), so π sums to 1 exactly; and other points p to compare: π nudged by one or two
/// ulps per class, random points in [0, 1]^C, one-hot rows.
#[derive(Debug, Clone)]
struct Proper {
    dtype: Dtype,
    out_f32: bool,
    pi: Vec<f64>,
    others: Vec<Vec<f64>>,
}

/// Dirichlet(α·1) through statrs' Gamma quantiles, on the grid k/total with Σk = total.
fn dirichlet_on_grid(alpha: f64, u: &[f64], total: u32) -> Vec<f64> {
    let g = Gamma::new(alpha, 1.0).expect("gamma");
    let x: Vec<f64> = u.iter().map(|&u| g.inverse_cdf(u)).collect();
    let sum: f64 = x.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        let mut one = vec![0.0; u.len()];
        one[0] = 1.0;
        return one;
    }
    let scaled: Vec<f64> = x.iter().map(|v| v / sum * total as f64).collect();
    let mut k: Vec<u32> = scaled.iter().map(|v| v.floor() as u32).collect();
    let mut order: Vec<usize> = (0..u.len()).collect();
    order.sort_by(|&a, &b| {
        (scaled[b] - scaled[b].floor()).total_cmp(&(scaled[a] - scaled[a].floor()))
    });
    let mut left = total - k.iter().sum::<u32>();
    for &c in order.iter().cycle() {
        if left == 0 {
            break;
        }
        k[c] += 1;
        left -= 1;
    }
    k.iter().map(|&x| x as f64 / total as f64).collect()
}

fn proper() -> BoxedStrategy<Proper> {
    (
        proptest::sample::select(Dtype::ALL.to_vec()),
        any::<bool>(),
        1usize..=6,
        3u32..=8,
        proptest::sample::select(vec![0.1f64, 0.5, 1.0, 5.0]),
    )
        .prop_flat_map(|(d, out_f32, c, m, alpha)| {
            let total = 1u32 << m;
            (
                Just((d, out_f32, c, total, alpha)),
                proptest::collection::vec(1e-9f64..1.0 - 1e-9, c),
                proptest::collection::vec(proptest::collection::vec(0.0f64..=1.0, c..=c), 1..=3),
                proptest::collection::vec(-2i64..=2, c..=c),
            )
        })
        .prop_map(|((d, out_f32, c, total, alpha), u, randoms, steps)| {
            let pi = dirichlet_on_grid(alpha, &u, total);
            assert_eq!(pi.iter().sum::<f64>(), 1.0);
            let mut others: Vec<Vec<f64>> = randoms
                .into_iter()
                .map(|p| p.into_iter().map(|x| d.round(x)).collect())
                .collect();
            let nudged: Vec<f64> = pi
                .iter()
                .zip(&steps)
                .map(|(&x, &j)| losscheck::check::gen::values::nudge(d, x, j).clamp(0.0, 1.0))
                .collect();
            others.push(nudged);
            let mut onehot = vec![0.0; c];
            onehot[0] = 1.0;
            others.push(onehot);
            Proper {
                dtype: d,
                out_f32: out_f32 && d.is_16bit(),
                pi,
                others,
            }
        })
        .boxed()
}

#[test]
fn brier_is_a_proper_scoring_rule() {
    check(
        "brier_is_proper",
        proper(),
        |p, side| {
            let out = if p.out_f32 { Dtype::F32 } else { p.dtype };
            pr::brier_is_proper(p.dtype, out, &p.pi, &p.others, side)
        },
        |p| format!("{p:?}"),
    );
}
