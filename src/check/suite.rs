//! The verification suite's shared driver: run the kernels against the oracle on generated
//! cases of one loss in every dtype and, on failure, describe each finding with its replay
//! command and a minimal case (proptest shrinking, then deleting elements and optional inputs
//! while the case still fails the same way). Used by `tests/*_kernels_vs_oracle.rs`.

use crate::check::campaign::{self, Config, Stats};
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

/// The case without element `i` (1-D cases: every input of the elementwise length loses it).
fn without_element(c: &Case, i: usize) -> Option<Case> {
    let x = c.spec().grads[0];
    let t = &c.inputs[x];
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

/// After proptest's shrinking (which cannot delete an element whose position a plan such as
/// "exactly one valid" ties to the length): delete elements one by one, and drop the optional
/// inputs, while the case still fails.
fn minimize(mut c: Case, fails: &mut dyn FnMut(&Case) -> bool) -> Case {
    let mut i = 0;
    while let Some(d) = without_element(&c, i) {
        if fails(&d) {
            c = d;
        } else {
            i += 1;
        }
    }
    for k in ["cotangent", "weight", "mask", "pos_weight"] {
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
        let small = minimize(small, &mut |c| fails_like(c, v));
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
    let cases = campaign::cases_from_env(campaign::DEFAULT_CASES);
    let mut problems = String::new();
    for dtype in Dtype::ALL {
        assert!(
            Kernels.supports(loss, dtype),
            "the kernels do not implement {loss} in {dtype}"
        );
        let cfg = Config::new(loss, dtype, cases, seed());
        let st = campaign::run(&cfg, &Kernels, &|| {});
        eprintln!("{}", campaign::summary_line(&st));
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
