//! Scratch: list the oracle errors of a loss's generated cases.
use losscheck::check::campaign::{self, Config};
use losscheck::check::subject::FnSubject;
use losscheck::{Dtype, LossError};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let loss = &args[1];
    let n: u64 = args[2].parse().unwrap();
    let s = FnSubject { name: "none".into(), f: |_: &losscheck::Case| Err(LossError::unsupported("x")) };
    for d in Dtype::ALL {
        let cfg = Config { keep_failures: usize::MAX, ..Config::new(loss, d, n, 1) };
        let st = campaign::run(&cfg, &s, &|| {});
        println!("{loss} {d}: {} cases {:.1}s, hard {}", st.cases, st.seconds, st.hard_cases);
        for f in st.failures.iter().filter(|f| f.verdicts.is_empty() && f.report.error.as_deref().is_some_and(|e| e.starts_with("oracle"))) {
            println!("{d} #{}: {:?}\n{}", f.index, f.report.error, f.case.to_json());
        }
    }
}
