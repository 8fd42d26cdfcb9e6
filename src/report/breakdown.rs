//! Breakdown sweeps: per loss and dtype, one input magnitude (the logit scale of a
//! classification loss, the residual of a regression loss, the embedding norm of a contrastive
//! loss, 1/temperature, 1/variance, …) swept over a log grid across the dtype's range, a few
//! seeded cases per point, every subject (the kernels and the zoo entries of that loss) judged
//! on the same cases against the oracle.
//!
//! DESIGN.md's breakdown rule: an implementation *breaks down* on a case when it loses more
//! than half the significand bits ([`Dtype::breakdown_bits`]: f32 > 12, f16 > 5.5, bf16 > 4) in
//! the value or in a gradient — NaN or ±inf where the exact result is finite counts as the full
//! width. Its *breakdown threshold* is the smallest magnitude of the sweep at which it breaks
//! down on some case.
//!
//! Zoo entries whose failure is not an effect of magnitude (denominators, masked or ignored
//! rows, an empty mean, a zero embedding, p = 0) are listed by [`is_magnitude_effect`]; the
//! report shows them by a shrunk counterexample instead of a threshold.

use crate::check::campaign;
use crate::check::subject::Subject;
use losscheck_core::catalogue::{Dims, Domain, InputKind};
use losscheck_core::rng::SplitMix64;
use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use rayon::prelude::*;
use serde_json::{json, Value};

/// How the swept magnitude `m` enters a case.
#[derive(Clone, Copy, Debug)]
pub enum Knob {
    /// These inputs are `m·u`, u uniform in (−1, 1) (`negative`: in (−1, 0], log-probs).
    Scale(&'static [&'static str], bool),
    /// Regression: `pred = target + m·u`, so the residual is about `m`.
    Residual,
    /// A probability input at distance about `1/m` from 0 (half the elements) or 1.
    InvProb(&'static str),
    /// `var = u/m`, u in [½, 1]: the sweep is over the precision 1/var.
    InvVar,
    /// A float param set to `1/m` (rounded to f32): the sweep is over 1/temperature.
    InvParam(&'static str),
}

/// What is swept for one loss.
#[derive(Clone, Copy, Debug)]
pub struct SweepSpec {
    pub loss: &'static str,
    /// The swept quantity, as the report names it.
    pub quantity: &'static str,
    pub knob: Knob,
}

const fn spec(loss: &'static str, quantity: &'static str, knob: Knob) -> SweepSpec {
    SweepSpec {
        loss,
        quantity,
        knob,
    }
}

/// The swept magnitude of every loss of the catalogue.
pub const SPECS: &[SweepSpec] = &[
    spec("mse", "|pred − target|", Knob::Residual),
    spec("mae", "|pred − target|", Knob::Residual),
    spec("huber", "|pred − target|", Knob::Residual),
    spec("quantile", "|pred − target|", Knob::Residual),
    spec("log_cosh", "|pred − target|", Knob::Residual),
    spec("bce", "1/p (p or 1 − p)", Knob::InvProb("prob")),
    spec("bce_logits", "|logit|", Knob::Scale(&["logit"], false)),
    spec(
        "cross_entropy",
        "logit scale",
        Knob::Scale(&["logits"], false),
    ),
    spec("nll", "|log-prob|", Knob::Scale(&["logp"], true)),
    spec("hinge", "|score|", Knob::Scale(&["score"], false)),
    spec(
        "multi_margin",
        "score scale",
        Knob::Scale(&["scores"], false),
    ),
    spec("focal", "|logit|", Knob::Scale(&["logit"], false)),
    spec("gaussian_nll", "1/variance", Knob::InvVar),
    spec("kl_div", "|log q|", Knob::Scale(&["input"], true)),
    spec("distill_kl", "1/temperature", Knob::InvParam("temperature")),
    spec("neg_elbo", "|logvar|", Knob::Scale(&["logvar"], false)),
    spec("brier", "1/p", Knob::InvProb("prob")),
    spec(
        "contrastive",
        "embedding norm",
        Knob::Scale(&["x1", "x2"], false),
    ),
    spec(
        "triplet",
        "embedding norm",
        Knob::Scale(&["anchor", "positive", "negative"], false),
    ),
    spec("info_nce", "1/temperature", Knob::InvParam("temperature")),
    spec(
        "margin_ranking",
        "score scale",
        Knob::Scale(&["s1", "s2"], false),
    ),
    spec(
        "pairwise_logistic",
        "score scale",
        Knob::Scale(&["chosen", "rejected"], false),
    ),
    spec(
        "dpo",
        "|log-prob|",
        Knob::Scale(
            &[
                "policy_chosen",
                "policy_rejected",
                "ref_chosen",
                "ref_rejected",
            ],
            true,
        ),
    ),
];

/// The sweep of `loss`, when the catalogue loss has one.
pub fn spec_of(loss: &str) -> Option<&'static SweepSpec> {
    SPECS.iter().find(|s| s.loss == loss)
}

/// Zoo entries whose failure is *not* an effect of input magnitude: a denominator, masked or
/// ignored rows, an empty mean, an input exactly at a singular point (+inf, p = 0, a zero or
/// repeated embedding). The report shows these by a counterexample, not a threshold.
pub const NOT_MAGNITUDE: &[&str] = &[
    "mae_mask_by_multiply",
    "huber_mean_over_count",
    "bce_logits_max_form_nan_at_inf",
    "cross_entropy_nan_when_all_ignored",
    "cross_entropy_mean_counts_ignored",
    "cross_entropy_smoothing_counts_ignored",
    "cross_entropy_weighted_mean_over_rows",
    "cross_entropy_ignore_by_multiply",
    "kl_div_plogp",
    "triplet_plain_sqrt",
    "contrastive_plain_sqrt",
    "info_nce_raw_norm",
];

/// Is the zoo entry's failure an effect of magnitude (expected to show as a finite breakdown
/// threshold in its loss's sweep)?
pub fn is_magnitude_effect(zoo_name: &str) -> bool {
    let n = zoo_name.strip_prefix("zoo:").unwrap_or(zoo_name);
    !NOT_MAGNITUDE.contains(&n)
}

/// The log2 range of the swept magnitude in `dtype` for this knob.
pub fn range(knob: Knob, dtype: Dtype) -> (f64, f64) {
    let lo = dtype.min_normal().log2();
    let hi = dtype.max().log2().floor() - 1.0;
    match knob {
        Knob::InvProb(_) => (0.0, -lo),
        // var = u/m reaches the subnormals (f16: var < eps = 1e−6 only there)
        Knob::InvVar => (lo.max(-30.0), -dtype.min_subnormal().log2() - 1.0),
        _ => (lo.max(-30.0), hi),
    }
}

/// `points` log2 magnitudes evenly spread over [`range`] (at least 2).
pub fn grid(knob: Knob, dtype: Dtype, points: usize) -> Vec<f64> {
    let (lo, hi) = range(knob, dtype);
    let n = points.max(2);
    (0..n)
        .map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64)
        .collect()
}

/// Size of a named dimension in sweep cases; `long`: the batch of the `mean` cases (where a
/// sum kept in a 16-bit dtype overflows before the mean does).
fn dim_size(name: &str, long: bool) -> usize {
    match name {
        "N" if long => 16,
        "N" => 4,
        "C" => 5,
        "D" => 4,
        "K" => 3,
        "B" => 2,
        "T" => 2,
        _ => 3,
    }
}

/// Case `k` at log2 magnitude `e` of the sweep of `s` in `dtype` (seeded by `seed`, the point
/// and `k`): the required inputs of the catalogue's first layout, every param at its default
/// but the swept one, all gradients, reduction `none`, `mean`, `sum` for k = 0, 1, 2 (mod 3).
pub fn sweep_case(s: &SweepSpec, dtype: Dtype, e: f64, seed: u64, k: u64) -> Case {
    let mut case = Case::new(s.loss, dtype).expect("catalogue loss");
    let ls = case.spec();
    let m = e.exp2();
    let mut rng = SplitMix64::new(crate::check::gen::hash_bytes(&[
        s.loss.as_bytes(),
        dtype.name().as_bytes(),
        &seed.to_le_bytes(),
        &e.to_bits().to_le_bytes(),
        &k.to_le_bytes(),
    ]));
    case.id = k;
    case.set_reduction([Reduction::None, Reduction::Mean, Reduction::Sum][(k % 3) as usize]);
    let layout = &ls.layouts[0];
    let long = k % 3 == 1;
    let shape_of = |name: &str| -> Vec<usize> {
        match layout.dims.iter().find(|(n, _)| *n == name).map(|d| d.1) {
            Some(Dims::Named(d)) => d.iter().map(|x| dim_size(x, long)).collect(),
            _ => vec![if long { 64 } else { 8 }],
        }
    };
    let classes = dim_size("C", long) as u64;
    let fit = |x: f64| dtype.round(x.clamp(-dtype.max(), dtype.max()));
    let swept = |name: &str| match s.knob {
        Knob::Scale(names, _) => names.contains(&name),
        Knob::Residual => name == "pred",
        Knob::InvProb(n) => n == name,
        Knob::InvVar => name == "var",
        Knob::InvParam(_) => false,
    };
    let mut floats: Vec<(String, Vec<usize>, Vec<f64>)> = Vec::new();
    for inp in ls.inputs.iter().filter(|i| !i.optional) {
        let shape = shape_of(inp.name);
        let n = losscheck_core::tensor::numel(&shape);
        let t = match inp.kind {
            InputKind::Float(dom) => {
                let data: Vec<f64> = (0..n)
                    .map(|i| {
                        if swept(inp.name) {
                            match s.knob {
                                Knob::Scale(_, neg) => {
                                    let u = rng.signed_unit();
                                    fit(m * if neg { -u.abs() } else { u })
                                }
                                Knob::InvProb(_) => {
                                    let d = (0.5 + 0.5 * rng.next_f64()) / m;
                                    fit(if i % 2 == 0 { d } else { 1.0 - d })
                                }
                                Knob::InvVar => fit((0.5 + 0.5 * rng.next_f64()) / m),
                                // pred: filled in below, once the target is known
                                _ => m * rng.signed_unit(),
                            }
                        } else {
                            match dom {
                                Domain::UnitInterval => match i % 4 {
                                    0 => 0.0,
                                    1 => 1.0,
                                    2 => fit(rng.next_f64()),
                                    _ => fit((-(10.0 + rng.below(10) as f64)).exp2()),
                                },
                                Domain::NonNegative | Domain::Weight => fit(0.5 + rng.next_f64()),
                                Domain::KlTarget => fit(rng.next_f64()),
                                Domain::Any => fit(2.0 * rng.signed_unit()),
                            }
                        }
                    })
                    .collect();
                floats.push((inp.name.to_string(), shape.clone(), data.clone()));
                Tensor::float(dtype, shape, data)
            }
            kind => {
                let data: Vec<i64> = (0..n)
                    .map(|_| match kind {
                        InputKind::ClassId | InputKind::ClassIdOrSoft => rng.below(classes) as i64,
                        InputKind::Sign => {
                            if rng.below(2) == 0 {
                                -1
                            } else {
                                1
                            }
                        }
                        _ => rng.below(2) as i64,
                    })
                    .collect();
                Tensor::int(shape, data)
            }
        };
        case.inputs.insert(inp.name.to_string(), t);
    }
    if let Knob::Residual = s.knob {
        let t = case.inputs["target"].f().unwrap().to_vec();
        let p = case.inputs["pred"].f().unwrap().to_vec();
        let pred: Vec<f64> = t.iter().zip(&p).map(|(t, r)| fit(t + r)).collect();
        let shape = case.inputs["pred"].shape.clone();
        case.inputs
            .insert("pred".into(), Tensor::float(dtype, shape, pred));
    }
    // cross_entropy: row 0 is confident (z_y = m, the other logits 0), where lse − z_y cancels.
    if s.loss == "cross_entropy" {
        let y = case.inputs["target"].i().unwrap()[0] as usize;
        let c = classes as usize;
        let z = case.inputs.get_mut("logits").unwrap().f_mut().unwrap();
        for (j, v) in z.iter_mut().take(c).enumerate() {
            *v = if j == y { fit(m) } else { 0.0 };
        }
    }
    if let Knob::InvParam(p) = s.knob {
        case.params.insert(
            p.to_string(),
            ParamValue::Float(Dtype::F32.round((1.0 / m).min(f32::MAX as f64))),
        );
    }
    // focal: γ < 1 too (where (1 − p_t)^γ has an infinite derivative at p_t = 1).
    if s.loss == "focal" {
        let g = [2.0, 0.5, 1.5][(k % 3) as usize];
        case.params.insert("gamma".into(), ParamValue::Float(g));
    }
    case
}

/// One point of a sweep for one subject: the worst over its cases.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// log2 of the swept magnitude.
    pub log2: f64,
    pub value_bits: f64,
    pub grad_bits: f64,
    /// Did some case break down (DESIGN.md's rule)?
    pub broke: bool,
    /// Cases judged (oracle errors and `unsupported` answers are not).
    pub cases: u32,
}

/// One subject × dtype along a sweep.
#[derive(Clone, Debug)]
pub struct Series {
    pub subject: String,
    pub dtype: Dtype,
    pub points: Vec<Point>,
}

impl Series {
    /// The breakdown threshold: the smallest magnitude (log2) at which it breaks down; `None`
    /// when it holds across the dtype's range.
    pub fn threshold(&self) -> Option<f64> {
        self.points.iter().find(|p| p.broke).map(|p| p.log2)
    }
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject, "dtype": self.dtype.name(),
            "threshold_log2": self.threshold(),
            "points": self.points.iter().map(|p| json!({
                "log2": p.log2, "value_bits": p.value_bits, "grad_bits": p.grad_bits,
                "broke": p.broke, "cases": p.cases})).collect::<Vec<_>>(),
        })
    }
}

/// The sweep of one loss: every subject × dtype on the same cases.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub loss: String,
    pub quantity: String,
    pub series: Vec<Series>,
    pub seconds: f64,
}

impl Sweep {
    pub fn to_json(&self) -> Value {
        json!({
            "loss": self.loss, "quantity": self.quantity, "seconds": self.seconds,
            "series": self.series.iter().map(Series::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Does this judgement break down under DESIGN.md's rule?
pub fn breaks_down(case: &Case, value_bits: f64, grad_bits: f64) -> bool {
    value_bits > case.out_dtype.breakdown_bits() || grad_bits > case.dtype.breakdown_bits()
}

/// Sweep settings.
#[derive(Clone, Copy, Debug)]
pub struct SweepConfig {
    pub points: usize,
    pub cases_per_point: u64,
    pub seed: u64,
}

/// The subjects of a sweep, each with its dtypes.
pub type Subjects<'a> = [(&'a dyn Subject, Vec<Dtype>)];

/// Sweep `loss` for every (subject, dtypes) pair, in parallel over the points.
pub fn sweep(
    loss: &str,
    subjects: &Subjects,
    cfg: SweepConfig,
    tick: &(dyn Fn() + Sync),
) -> Option<Sweep> {
    let s = spec_of(loss)?;
    let t0 = std::time::Instant::now();
    let mut jobs = Vec::new();
    for (si, (_, dtypes)) in subjects.iter().enumerate() {
        for &d in dtypes {
            for e in grid(s.knob, d, cfg.points) {
                jobs.push((si, d, e));
            }
        }
    }
    let points: Vec<Point> = jobs
        .par_iter()
        .map(|&(si, d, e)| {
            let subject = subjects[si].0;
            let mut p = Point {
                log2: e,
                value_bits: 0.0,
                grad_bits: 0.0,
                broke: false,
                cases: 0,
            };
            for k in 0..cfg.cases_per_point {
                let case = sweep_case(s, d, e, cfg.seed, k);
                let o = campaign::judge_case(case, subject, k);
                let Some(r) = o.report.filter(|_| !o.unsupported) else {
                    continue;
                };
                p.cases += 1;
                p.value_bits = p.value_bits.max(r.value_bits);
                p.grad_bits = p.grad_bits.max(r.grad_bits);
                p.broke |= breaks_down(&o.case, r.value_bits, r.grad_bits);
            }
            tick();
            p
        })
        .collect();
    let mut it = points.into_iter();
    let mut series = Vec::new();
    for (subject, dtypes) in subjects {
        for &d in dtypes {
            series.push(Series {
                subject: subject.name(),
                dtype: d,
                points: it.by_ref().take(cfg.points.max(2)).collect(),
            });
        }
    }
    Some(Sweep {
        loss: loss.to_string(),
        quantity: s.quantity.to_string(),
        series,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The number of points [`sweep`] evaluates (for progress bars).
pub fn sweep_points(subjects: &Subjects, cfg: SweepConfig) -> u64 {
    subjects.iter().map(|(_, d)| d.len() as u64).sum::<u64>() * cfg.points.max(2) as u64
}

/// A magnitude as text: `2^6.5 (≈ 90.5)`.
pub fn magnitude_text(log2: f64) -> String {
    format!("2^{log2:.1} (≈ {:.3e})", log2.exp2())
}
