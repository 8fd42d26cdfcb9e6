//! Distributed and interrupted report campaigns (issue 6, items 6 and 8): the N shards of a
//! report merged equal the unsharded report (timings aside); a shard missing, repeated or run
//! with other options is refused; `--resume` reads the campaigns a checkpoint recorded and
//! re-runs the others, with the same result.

use losscheck::check::campaign::{self, Shard};
use losscheck::check::subject::Kernels;
use losscheck::report::{self, Options};
use losscheck::Dtype;
use serde_json::Value;

fn small() -> Options {
    let mut o = Options::new(3, 240);
    o.zoo_cases = 90;
    o.sweep.points = 6;
    o.losses = vec!["mse".into(), "cross_entropy".into(), "bce".into()];
    o.dtypes = vec![Dtype::F16, Dtype::F32];
    o.progress = false;
    o
}

/// report.json without what legitimately differs between runs (timings, per-campaign seconds
/// are already stripped by the report).
fn comparable(r: &report::Report) -> Value {
    let mut v = r.to_json();
    v.as_object_mut().unwrap().remove("timings");
    v
}

fn shards(o: &Options, n: u64) -> Vec<Value> {
    (0..n)
        .map(|k| {
            let mut s = o.clone();
            s.shard = Shard { index: k, count: n };
            report::run_shard(&s)
        })
        .collect()
}

#[test]
fn merged_shards_equal_the_unsharded_report() {
    let o = small();
    let whole = report::run(&o);
    // the zoo's failures are re-judged from their indices by the merge: there must be some
    assert!(whole.zoo.iter().any(|st| !st.failures.is_empty()));
    let parts = shards(&o, 3);
    let merged = report::merge(&parts, false).expect("merge");
    assert_eq!(comparable(&whole), comparable(&merged));
    assert_eq!(whole.markdown().lines().count(), merged.markdown().lines().count());
    // the shards split the cases: each campaign's share is about a third
    let k0 = &parts[0]["kernels"][0];
    assert_eq!(k0["cases"], 80, "{}", k0["cases"]);
}

#[test]
fn merge_refuses_a_missing_or_repeated_shard_or_other_options() {
    let mut o = small();
    o.losses = vec!["mse".into()];
    o.dtypes = vec![Dtype::F16];
    o.zoo_cases = 0;
    let parts = shards(&o, 2);
    let e = report::merge(&parts[..1], false).unwrap_err();
    assert!(e.contains("shard 1/2 is missing"), "{e}");
    let e = report::merge(&[parts[0].clone(), parts[0].clone()], false).unwrap_err();
    assert!(e.contains("given twice"), "{e}");
    let mut other = o.clone();
    other.seed = 4;
    let mut mixed = vec![parts[0].clone()];
    mixed.extend(shards(&other, 2).into_iter().skip(1));
    let e = report::merge(&mixed, false).unwrap_err();
    assert!(e.contains("different options"), "{e}");
    assert!(report::merge(&parts, false).is_ok());
}

#[test]
fn resume_reads_the_recorded_campaigns_and_reruns_the_others() {
    let dir = std::env::temp_dir().join(format!("losscheck-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = small();
    o.losses = vec!["mse".into(), "bce".into()];
    o.zoo_cases = 0;
    o.checkpoint = Some(dir.clone());
    let first = report::run(&o);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), first.kernels.len(), "one checkpoint per campaign");
    // mark one record (a campaign read back keeps the recorded seconds), delete another (the
    // interrupted campaign: re-run), and make a third with other settings (ignored: re-run)
    let mark = |f: &std::path::Path, edit: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(f, v.to_string()).unwrap();
    };
    mark(&files[0], &|v| v["seconds"] = 12345.0.into());
    std::fs::remove_file(&files[1]).unwrap();
    mark(&files[2], &|v| {
        v["seconds"] = 54321.0.into();
        v["seed"] = 99.into();
    });
    o.resume = true;
    let resumed = report::run(&o);
    let secs: Vec<f64> = resumed.kernels.iter().map(|s| s.seconds).collect();
    assert_eq!(secs.iter().filter(|&&s| s == 12345.0).count(), 1, "{secs:?}");
    assert!(!secs.contains(&54321.0), "a record of other settings was used: {secs:?}");
    assert_eq!(comparable(&first), comparable(&resumed));
    // and the recorded campaign is the same Stats as a fresh run of it
    let st = &first.kernels[0];
    let cfg = report::campaign_config(&o, &st.loss, st.dtype, o.cases);
    let rec = campaign::record(&cfg, st);
    let back = campaign::from_record(&cfg, &Kernels, &rec).unwrap();
    assert_eq!(back.samples, st.samples);
    assert_eq!(back.to_json(), st.to_json());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shards_of_a_campaign_cover_every_case_once() {
    for n in [1u64, 2, 3, 7] {
        for i in 0..100u64 {
            let owners = (0..n)
                .filter(|&k| Shard { index: k, count: n }.contains(i))
                .count();
            assert_eq!(owners, 1);
        }
    }
}

#[test]
fn merged_fuzz_shards_equal_the_unsharded_fuzz_run() {
    use losscheck::check::fuzz::{self, Settings};
    use losscheck::zoo::{self, ZooSubject};
    let subject = ZooSubject(zoo::entry("cross_entropy_naive_softmax").unwrap());
    let base = std::env::temp_dir().join(format!("losscheck-fuzz-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let settings = |shard: Shard, dir: &str| Settings {
        losses: vec!["cross_entropy".into()],
        dtypes: vec![Dtype::F16],
        cases: 240,
        shrink_iters: 40,
        out: Some(base.join(dir)),
        shard,
        ..Settings::default()
    };
    let whole = fuzz::check(&subject, &settings(Shard::ALL, "whole"));
    let mut shards = Vec::new();
    let mut findings = Vec::new();
    for k in 0..3 {
        let dir = format!("shard{k}");
        fuzz::check(&subject, &settings(Shard { index: k, count: 3 }, &dir));
        let d = base.join(&dir);
        shards.push(serde_json::from_str(&std::fs::read_to_string(d.join("shard.json")).unwrap()).unwrap());
        findings.push(d.join("findings.jsonl"));
    }
    let merged = fuzz::merge(&shards, Some(&base.join("merged")), &findings).unwrap();
    assert!(whole.findings() > 0);
    assert_eq!(whole.exit_code(), merged.exit_code());
    for (a, b) in whole.campaigns.iter().zip(&merged.campaigns) {
        assert_eq!(a.findings, b.findings);
        let strip = |st: &campaign::Stats| {
            let mut v = st.to_json();
            for k in ["seconds", "worst", "failures"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(strip(&a.stats), strip(&b.stats));
        let key = |c: &fuzz::CampaignReport| {
            c.distinct
                .iter()
                .map(|d| (d.verdict.clone(), d.first_index, d.count, d.minimal.to_json()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(a), key(b));
    }
    let lines = |d: &std::path::Path| std::fs::read_to_string(d.join("findings.jsonl")).unwrap().lines().count();
    assert_eq!(lines(&base.join("merged")), (0..3).map(|k| lines(&base.join(format!("shard{k}")))).sum::<usize>());
    let _ = std::fs::remove_dir_all(&base);
}
