//! Detection power: the harness run against every zoo entry flags it, with the verdict class
//! its doc names (or the fact: a known alternative reading, a finding under `--strict-policy`),
//! within the default budget, and the counterexample shrinks to a small case
//! that still draws that verdict.

use losscheck::check::campaign::{self, Config};
use losscheck::check::subject::Subject;
use losscheck::check::{compare, fuzz, policies};
use losscheck::zoo::{self, Flag, ZooSubject};
use std::sync::Mutex;

/// The default budget per loss and dtype for detection (issue 5's bar: ≤ 2,000).
const BUDGET: u64 = 2_000;

#[test]
fn every_zoo_entry_is_flagged_with_its_verdict_on_a_shrunk_case() {
    let seed = 1;
    let mut report = Vec::new();
    for entry in zoo::entries() {
        let subject = ZooSubject(entry);
        let flag = entry.verdict;
        for &dtype in entry.dtypes {
            let cfg = Config {
                keep_failures: usize::MAX,
                ..Config::new(entry.loss, dtype, BUDGET, seed)
            };
            // the first case (lowest index) drawing the entry's verdict or fact
            let first: Mutex<Option<(u64, losscheck::Case)>> = Mutex::new(None);
            let st = campaign::run_with(&cfg, &subject, &|o| {
                if o.report.as_ref().is_some_and(|r| flag.in_report(r)) {
                    let mut f = first.lock().unwrap();
                    if f.as_ref().map_or(true, |(i, _)| o.index < *i) {
                        *f = Some((o.index, o.case.clone()));
                    }
                }
            });
            let Some((index, hit_case)) = first.into_inner().unwrap() else {
                panic!(
                    "zoo:{} ({} {dtype}) was not flagged `{flag}` in {BUDGET} cases; verdicts seen: {:?}, facts: {:?}",
                    entry.name, entry.loss, st.verdicts, st.facts
                );
            };
            // Shrink while the same verdict (fact) persists.
            let fails = |c: &losscheck::Case| {
                let o = campaign::judge_case(c.clone(), &subject, 0);
                o.report.is_some_and(|r| flag.in_report(&r))
            };
            let small =
                campaign::shrink_while(&cfg, &subject, index, 2_000, &mut |r| flag.in_report(r))
                    .unwrap_or_else(|| hit_case.clone());
            assert!(
                fails(&small),
                "zoo:{}: the shrunk case must still fail",
                entry.name
            );
            if let Flag::Fact(name) = flag {
                // a fact is a known alternative reading, and a finding under --strict-policy
                assert!(
                    policies::reading(name).is_some_and(|r| r.class == policies::Class::Fact),
                    "zoo:{}: `{name}` is not a fact of check/policies.rs",
                    entry.name
                );
                let strict = fuzz::check(
                    &subject,
                    &fuzz::Settings {
                        losses: vec![entry.loss.to_string()],
                        dtypes: vec![dtype],
                        cases: index + 1,
                        strict_policy: true,
                        shrink_iters: 0,
                        ..fuzz::Settings::default()
                    },
                );
                assert!(
                    strict.campaigns[0].findings.contains_key(name) && strict.exit_code() == 1,
                    "zoo:{} {dtype}: `{name}` is not a finding under --strict-policy: {:?}",
                    entry.name,
                    strict.campaigns[0].findings
                );
            }
            let n = small.inputs.values().map(|t| t.numel()).max().unwrap_or(0);
            let original = hit_case
                .inputs
                .values()
                .map(|t| t.numel())
                .max()
                .unwrap_or(0);
            assert!(
                n <= original,
                "zoo:{} {dtype}: shrinking grew the case from {original} to {n} elements",
                entry.name
            );
            // The kernels get the shrunk case right: the failure is the zoo entry's, not the judge's.
            let k = campaign::judge_case(small.clone(), &losscheck::check::subject::Kernels, 0);
            assert!(
                k.report.as_ref().is_some_and(compare::CaseReport::passed),
                "the kernels fail the zoo counterexample too: {}",
                small.to_json()
            );
            report.push(format!(
                "zoo:{} {dtype}: {flag} on {} elements (from {}): {}",
                entry.name,
                n,
                original,
                small.to_json()
            ));
            let _ = subject.name();
        }
    }
    for r in &report {
        println!("{r}");
    }
}
