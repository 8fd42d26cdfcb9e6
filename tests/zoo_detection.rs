//! Detection power: the harness run against every zoo entry flags it, with the verdict class
//! its doc names, within the default budget, and the counterexample shrinks to a small case
//! that still draws that verdict.

use losscheck::check::campaign::{self, Config};
use losscheck::check::compare;
use losscheck::check::subject::Subject;
use losscheck::zoo::{self, ZooSubject};

/// The default budget per loss and dtype for detection (issue 5's bar: ≤ 2,000).
const BUDGET: u64 = 2_000;

#[test]
fn every_zoo_entry_is_flagged_with_its_verdict_on_a_shrunk_case() {
    let seed = 1;
    let mut report = Vec::new();
    for entry in zoo::entries() {
        let subject = ZooSubject(entry);
        for &dtype in entry.dtypes {
            let cfg = Config {
                keep_failures: usize::MAX,
                ..Config::new(entry.loss, dtype, BUDGET, seed)
            };
            let st = campaign::run(&cfg, &subject, &|| {});
            let hit = st
                .failures
                .iter()
                .find(|f| f.verdicts.contains(&entry.verdict));
            let Some(hit) = hit else {
                panic!(
                    "zoo:{} ({} {dtype}) was not flagged `{}` in {BUDGET} cases; verdicts seen: {:?}",
                    entry.name, entry.loss, entry.verdict, st.verdicts
                );
            };
            // Shrink while the same verdict persists.
            let fails = |c: &losscheck::Case| {
                let o = campaign::judge_case(c.clone(), &subject, 0);
                o.report
                    .is_some_and(|r| r.verdicts.contains(&entry.verdict))
            };
            let mut first = hit.clone();
            first.verdicts = vec![entry.verdict];
            let small = campaign::shrink_finding(&cfg, &subject, &first, 2_000);
            assert!(
                fails(&small),
                "zoo:{}: the shrunk case must still fail",
                entry.name
            );
            let n = small.inputs.values().map(|t| t.numel()).max().unwrap_or(0);
            let original = hit
                .case
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
                "zoo:{} {dtype}: {} on {} elements (from {}): {}",
                entry.name,
                entry.verdict,
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
