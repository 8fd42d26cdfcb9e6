//! The regression oracles' gradients against high-precision finite differences
//! (`losscheck_oracles::fd::check_gradients`, 3 random directions), on cases from the
//! generators' regimes — typical, bit-uniform, extreme (subnormals, the max, ±inf, NaN in
//! masked positions), masked, weighted, shapes, kinks (switch points, params at their edges) —
//! rather than the oracle suite's own random cases (oracles/tests/oracle_fd.rs), so the
//! gradients are checked where the campaigns look. Every differentiable input's gradient is
//! requested. Long batches are left out (the check evaluates the loss at 1024 bits, 7 times).
//!
//! Bar: relative discrepancy below 2^-64 — the check itself has > 500 bits of agreement
//! (fd.rs), so anything above is a wrong gradient, far below any dtype's ulp.
//! `LOSSCHECK_FD_CASES` scales the cases per loss (default 600).

use losscheck::check::gen::{self, Regime};
use losscheck::{Case, Dtype};
use losscheck_oracles::fd::check_gradients;
use proptest::strategy::{Strategy, ValueTree};
use std::collections::BTreeMap;

const TOL: f64 = 1.0 / (1u128 << 64) as f64;

fn cases() -> u64 {
    std::env::var("LOSSCHECK_FD_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(600)
}

/// Case `k`: dtype by k mod 3, regime by weight (long batches excluded), from its own seeded
/// runner; every gradient requested.
fn case(loss: &str, k: u64) -> (Regime, Case) {
    let dtype = Dtype::ALL[(k % 3) as usize];
    let regimes: Vec<(Regime, u32)> = gen::regimes(loss)
        .iter()
        .copied()
        .filter(|(r, _)| *r != Regime::LongBatch)
        .collect();
    let total: u64 = regimes.iter().map(|&(_, w)| w as u64).sum();
    let mut x = gen::splitmix64(gen::case_hash(0xFD, loss, dtype, k)) % total;
    let mut regime = regimes[0].0;
    for &(r, w) in &regimes {
        if x < w as u64 {
            regime = r;
            break;
        }
        x -= w as u64;
    }
    let mut runner = gen::runner_for(0xFD, loss, dtype, k);
    let mut c = gen::regime_strategy(loss, dtype, regime)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    c.id = k;
    c.grad = c.spec().grads.iter().map(|s| s.to_string()).collect();
    (regime, c)
}

fn run(loss: &str) {
    let mut compared_cases = 0u64;
    let mut comparisons = 0usize;
    let mut worst = 0.0f64;
    let mut by_regime: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    let n = cases();
    for k in 0..n {
        let (regime, c) = case(loss, k);
        let rep = check_gradients(&c, 3, k).unwrap_or_else(|e| {
            panic!(
                "{loss} case {k} ({regime}): check failed: {e}\n{}",
                c.to_json()
            )
        });
        assert!(
            rep.max_rel < TOL,
            "{loss} case {k} ({regime}): oracle gradient vs finite difference: relative discrepancy {:e}: {}\n{}",
            rep.max_rel,
            rep.worst,
            c.to_json()
        );
        worst = worst.max(rep.max_rel);
        compared_cases += (rep.comparisons > 0) as u64;
        comparisons += rep.comparisons;
        let e = by_regime.entry(regime.name()).or_default();
        e.0 += 1;
        e.1 += rep.comparisons;
    }
    eprintln!("{loss}: {compared_cases}/{n} cases compared, {comparisons} comparisons, worst {worst:e}; per regime (cases, comparisons): {by_regime:?}");
    // Most cases have something to compare (not everything masked, infinite or at a kink), and
    // every regime contributed comparisons.
    assert!(
        compared_cases * 2 > n,
        "{loss}: only {compared_cases} of {n} cases compared anything"
    );
    if n >= 300 {
        for (r, (c, m)) in &by_regime {
            assert!(
                *c == 0 || *m > 0,
                "{loss}: regime {r} ({c} cases) compared nothing"
            );
        }
    }
}

#[test]
fn mse_oracle_gradients_match_finite_differences() {
    run("mse");
}

#[test]
fn mae_oracle_gradients_match_finite_differences() {
    run("mae");
}

#[test]
fn huber_oracle_gradients_match_finite_differences() {
    run("huber");
}

#[test]
fn quantile_oracle_gradients_match_finite_differences() {
    run("quantile");
}

#[test]
fn log_cosh_oracle_gradients_match_finite_differences() {
    run("log_cosh");
}
