//! The verification suite's shared driver: run the kernels against the oracle on generated
//! cases of one loss in every dtype and, on failure, describe each finding with its replay
//! command and a minimal case (proptest shrinking, then deleting elements and optional inputs
//! while the case still fails the same way). Used by `tests/*_kernels_vs_oracle.rs`.

use crate::check::campaign::{self, Config, Finding, Stats};
use crate::check::compare;
use crate::check::gen;
use crate::check::subject::{Kernels, Subject};
use losscheck_core::{Case, Data, Dtype, Reduction};

/// The campaign seed: `LOSSCHECK_SEED`, default 1 (the CLI's default).
pub fn seed() -> u64 {
    std::env::var("LOSSCHECK_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// Does the case still fail the way a finding did (same first verdict, or an oracle error)?
fn fails_like(case: &Case, verdict: Option<compare::Verdict>) -> bool {
    match losscheck_oracles::evaluate(case) {
        Err(_) => verdict.is_none(),
        Ok(o) => {
            let rep = compare::judge(case, &o, &Kernels.eval(case));
            match verdict {
                Some(v) => rep.verdicts.contains(&v),
                None => false,
            }
        }
    }
}

/// The case without element `i` (1-D cases: every input of the elementwise length loses it;
/// [N, C] row-wise cases: every input with N leading rows loses row i).
fn without_element(c: &Case, i: usize) -> Option<Case> {
    let x = c.spec().grads[0];
    let t = &c.inputs[x];
    if t.shape.len() == 2 && c.spec().structure == losscheck_core::catalogue::Structure::Rowwise {
        return without_row(c, i);
    }
    let n = t.len();
    if t.shape.len() != 1 || i >= n {
        return None;
    }
    let none = c.reduction() == Reduction::None;
    let mut d = c.clone();
    for (k, t) in d.inputs.iter_mut() {
        if t.shape.len() != 1 || t.len() != n || (k == "cotangent" && !none) {
            continue;
        }
        match &mut t.data {
            Data::F(v) => {
                v.remove(i);
            }
            Data::I(v) => {
                v.remove(i);
            }
        }
        t.shape = vec![n - 1];
    }
    Some(d)
}

/// The [N, C] case without row `i` (class weights and a reduced cotangent stay).
fn without_row(c: &Case, i: usize) -> Option<Case> {
    let n = c.inputs[c.spec().grads[0]].shape[0];
    if i >= n {
        return None;
    }
    let none = c.reduction() == Reduction::None;
    let mut d = c.clone();
    for (k, t) in d.inputs.iter_mut() {
        if t.shape.first() != Some(&n) || k == "class_weight" || (k == "cotangent" && !none) {
            continue;
        }
        let per = t.len() / n;
        match &mut t.data {
            Data::F(v) => {
                v.drain(i * per..(i + 1) * per);
            }
            Data::I(v) => {
                v.drain(i * per..(i + 1) * per);
            }
        }
        t.shape[0] = n - 1;
    }
    Some(d)
}

/// After proptest's shrinking (which cannot delete an element whose position a plan such as
/// "exactly one valid" ties to the length): delete elements one by one, and drop the optional
/// inputs, while the case still fails.
fn minimize(mut c: Case, fails: &mut dyn FnMut(&Case) -> bool) -> Case {
    let mut i = 0;
    // one deletion at a time is quadratic: only for cases that are already small
    let small = c.inputs.values().map(|t| t.numel()).max().unwrap_or(0) <= 4096;
    while let Some(d) = small.then(|| without_element(&c, i)).flatten() {
        if fails(&d) {
            c = d;
        } else {
            i += 1;
        }
    }
    for k in ["cotangent", "weight", "mask", "pos_weight", "class_weight"] {
        if c.inputs.contains_key(k) {
            let mut d = c.clone();
            d.inputs.remove(k);
            if fails(&d) {
                c = d;
            }
        }
    }
    c
}

fn describe(st: &Stats) -> String {
    let mut s = format!("{}\n", campaign::summary_line(st));
    for f in st.failures.iter().take(5) {
        let what = if f.verdicts.is_empty() {
            f.report.error.clone().unwrap_or_default()
        } else {
            f.verdicts
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let regime = gen::regime_of(&st.loss, st.dtype, st.seed, f.index).unwrap_or_default();
        s += &format!(
            "  case {} ({regime}): {what}\n    replay: {}\n",
            f.index, f.replay
        );
        for o in f
            .report
            .outputs
            .iter()
            .filter(|o| o.verdict.is_some())
            .take(3)
        {
            s += &format!(
                "    {}[{}]: actual {:?}, expected {:?}, {} ulps (allowed {})\n",
                o.output, o.index, o.actual, o.expected, o.ulps, o.allowed
            );
        }
    }
    // one minimal case per distinct first verdict (oracle errors: the first one)
    let mut shown: Vec<Option<compare::Verdict>> = Vec::new();
    for f in &st.failures {
        let v = f.verdicts.first().copied();
        if shown.contains(&v) {
            continue;
        }
        shown.push(v);
        let small = gen::shrink(
            &st.loss,
            st.dtype,
            st.seed,
            f.index,
            &mut |c| fails_like(c, v),
            2000,
        );
        // deleting elements one by one: within the same time budget
        let deadline = std::time::Instant::now() + gen::shrink_budget();
        let small = minimize(small, &mut |c| {
            std::time::Instant::now() < deadline && fails_like(c, v)
        });
        s += &format!(
            "  minimal case for {} (shrunk from case {}):\n{}\n",
            v.map_or("an oracle error", |v| v.name()),
            f.index,
            small.to_json()
        );
        if let Ok(o) = losscheck_oracles::evaluate(&small) {
            let rep = compare::judge(&small, &o, &Kernels.eval(&small));
            for j in rep.outputs.iter().filter(|o| o.verdict.is_some()) {
                s += &format!(
                    "    {}[{}]: actual {:?}, expected {:?}, {} ulps (allowed {}) -> {:?}\n",
                    j.output, j.index, j.actual, j.expected, j.ulps, j.allowed, j.verdict
                );
            }
        }
    }
    s
}

/// The verification suite's check for one loss: `LOSSCHECK_CASES` (default 20,000) generated
/// cases per dtype judged against the oracle; panics with the findings (verdicts, replay
/// commands, a minimal case) unless there are none, no oracle errors and no unsupported cases.
pub fn assert_kernels_match_oracle(loss: &str) {
    assert_kernels_match_oracle_with(loss, campaign::DEFAULT_CASES)
}

/// [`assert_kernels_match_oracle`] with another default case count (`LOSSCHECK_CASES` still
/// overrides it).
pub fn assert_kernels_match_oracle_with(loss: &str, default_cases: u64) {
    assert_kernels_match_oracle_known(loss, default_cases, &[])
}

/// [`assert_kernels_match_oracle_with`] with a list of **known failures**: (dtype, case index)
/// of the default campaign (seed 1, `default_cases`) that are open bugs, reported on stderr
/// and not failing the test — any other finding fails it. With the default seed and count,
/// each listed case must still be a finding, so a fix shows up as a failure to update the list
/// (libm's test crate keeps such lists; each entry belongs in the closing notes until fixed).
pub fn assert_kernels_match_oracle_known(loss: &str, default_cases: u64, known: &[(Dtype, u64)]) {
    let cases = campaign::cases_from_env(default_cases);
    let default_run = cases == default_cases && seed() == 1;
    let mut problems = String::new();
    for dtype in Dtype::ALL {
        assert!(
            Kernels.supports(loss, dtype),
            "the kernels do not implement {loss} in {dtype}"
        );
        let cfg = Config {
            keep_failures: 10 + known.len(),
            ..Config::new(loss, dtype, cases, seed())
        };
        let mut st = campaign::run(&cfg, &Kernels, &|| {});
        eprintln!("{}", campaign::summary_line(&st));
        let is_known = |i: u64| known.contains(&(dtype, i));
        for &(d, i) in known.iter().filter(|(d, _)| *d == dtype) {
            match st.failures.iter().find(|f| f.index == i) {
                Some(f) => eprintln!(
                    "known failure {loss} {d} case {i}: {:?}\n  replay: {}",
                    f.verdicts, f.replay
                ),
                None if default_run => {
                    problems += &format!(
                        "{loss} {d}: known failure case {i} no longer fails: take it off the list\n"
                    )
                }
                None => {}
            }
        }
        // the known ones out of the counts
        let gone: Vec<Finding> = st
            .failures
            .iter()
            .filter(|f| is_known(f.index))
            .cloned()
            .collect();
        st.failures.retain(|f| !is_known(f.index));
        for f in &gone {
            for v in &f.verdicts {
                if let Some(n) = st.verdicts.get_mut(v) {
                    *n -= 1;
                }
            }
        }
        st.verdicts.retain(|_, n| *n > 0);
        // Every regime of the loss ran (a regime that never fires is a generator bug).
        if cases >= 5_000 {
            for (r, w) in gen::regimes(loss) {
                if *w >= 10 && !st.regimes.contains_key(r.name()) {
                    problems += &format!("{loss} {dtype}: regime {} generated no case\n", r.name());
                }
            }
        }
        if st.findings() > 0 || st.oracle_errors > 0 || st.unsupported > 0 {
            problems += &describe(&st);
            if st.unsupported > 0 {
                problems += &format!("  {} cases answered `unsupported`\n", st.unsupported);
            }
        }
    }
    assert!(problems.is_empty(), "findings for {loss}:\n{problems}");
}

// ---------------------------------------------------------------------------------------------
// The metamorphic suites' driver (tests/*_metamorphic.rs).

/// Cases per relation: `LOSSCHECK_MM_CASES`, else `default`.
pub fn mm_cases(default: u32) -> u32 {
    std::env::var("LOSSCHECK_MM_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// A proptest runner for relation `name`: ChaCha seeded by (`LOSSCHECK_SEED`, name), `cases`
/// cases, no failure persistence, up to 2,000 shrink steps.
pub fn mm_runner(name: &str, cases: u32) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config as PConfig, RngAlgorithm, TestRng, TestRunner};
    let mut bytes = [0u8; 32];
    let h = gen::hash_bytes(&[&seed().to_le_bytes(), name.as_bytes()]);
    for (i, c) in bytes.chunks_mut(8).enumerate() {
        c.copy_from_slice(&gen::splitmix64(h ^ i as u64).to_le_bytes());
    }
    let config = PConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..PConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Cases of one loss × dtype from every regime but long batches.
pub fn mm_small_cases(loss: &'static str, dtype: Dtype) -> proptest::strategy::BoxedStrategy<Case> {
    use proptest::strategy::{Strategy, Union};
    Union::new_weighted(
        gen::regimes(loss)
            .iter()
            .filter(|(r, _)| *r != gen::Regime::LongBatch)
            .map(|&(r, w)| (w, gen::regime_strategy(loss, dtype, r)))
            .collect(),
    )
    .boxed()
}

/// (loss, dtype) over `losses` × every dtype.
pub fn mm_loss_dtype(
    losses: &'static [&'static str],
) -> proptest::strategy::BoxedStrategy<(&'static str, Dtype)> {
    use proptest::strategy::Strategy;
    (
        proptest::sample::select(losses.to_vec()),
        proptest::sample::select(Dtype::ALL.to_vec()),
    )
        .boxed()
}

/// Small cases of any of `losses` in any dtype.
pub fn mm_any_case(losses: &'static [&'static str]) -> proptest::strategy::BoxedStrategy<Case> {
    use proptest::strategy::Strategy;
    mm_loss_dtype(losses)
        .prop_flat_map(|(l, d)| mm_small_cases(l, d))
        .boxed()
}

/// Run a relation on both sides (the kernels, the oracle) for every input `strategy` draws
/// (`cases` of them, `mm_runner(name)`); fail with the minimal input after shrinking and the
/// break; then require that both sides compared something (a relation must not be vacuous).
pub fn mm_check<T: std::fmt::Debug>(
    name: &str,
    cases: u32,
    strategy: proptest::strategy::BoxedStrategy<T>,
    relation: impl Fn(&T, crate::check::metamorphic::Side) -> crate::check::metamorphic::Outcome,
    describe: impl Fn(&T) -> String,
) {
    use crate::check::metamorphic::{Held, Side};
    use proptest::test_runner::{TestCaseError, TestError};
    let totals = std::sync::Mutex::new([Held::default(), Held::default()]);
    let mut run = mm_runner(name, cases);
    let result = run.run(&strategy, |input| {
        for (k, side) in [Side::Subject(&Kernels), Side::Oracle]
            .into_iter()
            .enumerate()
        {
            match relation(&input, side) {
                Ok(h) => totals.lock().unwrap()[k] += h,
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "{e}\n  input: {}",
                        describe(&input)
                    )))
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, _)) => {
            panic!("{name} broke (minimal input after shrinking):\n{reason}")
        }
        Err(e) => panic!("{name}: {e}"),
    }
    let t = totals.into_inner().unwrap();
    eprintln!(
        "{name}: kernels compared {} (skipped {}), oracle compared {} (skipped {})",
        t[0].compared, t[0].skipped, t[1].compared, t[1].skipped
    );
    assert!(
        t[0].compared > 0 && t[1].compared > 0,
        "{name} compared nothing: {t:?}"
    );
}
