//! Certificates of the kernels' own math ([`kernels::vmath`](crate::kernels::vmath)) against
//! MPFR: every input of a dtype in the function's domain — all 65,536 patterns of f16 and
//! bf16, and f32's 2³² by contiguous ranges (`--shard K/N`) — with each result's error
//! measured at 128 bits and compared with the bound the function's docs derive.
//!
//! | function | domain | bound (u = 2⁻⁵³, relative) |
//! |---|---|---|
//! | `exp` | every finite input | 4u (< 2⁻⁵¹) for results ≥ 2⁻¹⁰²²; below, 2⁻¹⁰⁷⁵ + 4u·eˣ absolute; +inf where eˣ > f64::MAX·(1 + 4u) |
//! | `exp_nonpos` | x ≤ 0 | the same bits as `exp` (and so its bound) |
//! | `log1p_unit` | x ∈ [0, 1] | 12u |
//! | `logistic_parts` | \|z\| ≤ 700 | softplus(±z) 17u, σ(±z) 9u |
//! | `logistic_parts_fast` | \|z\| ≤ 700 | softplus(±z) 56u, σ(±z) 12u (7u on the non-negative side, not checked separately) |
//! | `exp32_shift` | d ∈ [−104, 0] (as z = d, m = 0) | 2.5 units of 2⁻²⁴ for results ≥ 2⁻¹²⁶; below, 2⁻¹⁵⁰ + 2.5·2⁻²⁴·e^d absolute |
//!
//! [`errors`] is the one judge: `tests/kernels_simd*.rs` use it on dense samples and the
//! reduction edges, `losscheck exhaustive --function F` on whole dtypes.
//! docs/exhaustive.md says what is certified and what a shard covers.

use super::exhaustive::fmt_count;
use super::shard::Shard;
use crate::kernels::vmath;
use losscheck_core::Dtype;
use rayon::prelude::*;
use rug::Float;
use serde_json::{json, Value};
use std::time::Instant;

/// 2⁻⁵³.
pub const U: f64 = 1.0 / 9_007_199_254_740_992.0;
const PREC: u32 = 128;

/// A certified function of [`vmath`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Exp,
    ExpNonpos,
    Log1pUnit,
    LogisticParts,
    LogisticPartsFast,
    Exp32Shift,
}

impl Function {
    pub const ALL: [Function; 6] = [
        Function::Exp,
        Function::ExpNonpos,
        Function::Log1pUnit,
        Function::LogisticParts,
        Function::LogisticPartsFast,
        Function::Exp32Shift,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::Exp => "exp",
            Function::ExpNonpos => "exp_nonpos",
            Function::Log1pUnit => "log1p_unit",
            Function::LogisticParts => "logistic_parts",
            Function::LogisticPartsFast => "logistic_parts_fast",
            Function::Exp32Shift => "exp32_shift",
        }
    }

    pub fn parse(s: &str) -> Result<Function, String> {
        Function::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Function::ALL.iter().map(|f| f.name()).collect();
                format!("unknown function {s:?} (one of {})", names.join(", "))
            })
    }

    /// The inputs certified, in words.
    pub fn domain(self) -> &'static str {
        match self {
            Function::Exp => "every finite input",
            Function::ExpNonpos => "x ≤ 0",
            Function::Log1pUnit => "x ∈ [0, 1]",
            Function::LogisticParts | Function::LogisticPartsFast => "|z| ≤ 700",
            Function::Exp32Shift => "d ∈ [−104, 0], as exp32_shift(d, 0)",
        }
    }

    /// What the errors (`worst_u`) measure.
    pub fn measure(self) -> &'static str {
        match self {
            Function::Exp | Function::ExpNonpos => {
                "relative error in u = 2^-53 for results >= 2^-1022; for smaller results 4·|error| / (2^-1075 + 4u·e^x),                  so that 4 is the bound either way (exp_nonpos: also exp's bits, or an infinite error)"
            }
            Function::Exp32Shift => {
                "f32 arithmetic: relative error in units of 2^-24 for results >= 2^-126; for smaller results                  2.5·|error| / (2^-150 + 2.5·2^-24·e^d); measured against f64 exp (error < 2^-52), and against MPFR                  at 128 bits wherever that measure exceeds 1.0"
            }
            _ => "relative error in u = 2^-53 against MPFR at 128 bits",
        }
    }

    pub fn in_domain(self, x: f64) -> bool {
        match self {
            Function::Exp => x.is_finite(),
            Function::ExpNonpos => x <= 0.0 && x.is_finite(),
            Function::Log1pUnit => (0.0..=1.0).contains(&x),
            Function::LogisticParts | Function::LogisticPartsFast => x.abs() <= 700.0,
            Function::Exp32Shift => (-104.0..=0.0).contains(&x),
        }
    }

    /// The unit of the bounds and errors: [`U`] = 2⁻⁵³ (f64 functions), 2⁻²⁴ for the f32
    /// `exp32_shift`.
    pub fn unit(self) -> f64 {
        match self {
            Function::Exp32Shift => 2f64.powi(-24),
            _ => U,
        }
    }

    /// The parts of the result and their bounds, in units of [`unit`](Self::unit).
    pub fn parts(self) -> &'static [(&'static str, f64)] {
        match self {
            Function::Exp => &[("exp", 4.0)],
            Function::ExpNonpos => &[("exp_nonpos", 4.0)],
            Function::Log1pUnit => &[("log1p", 12.0)],
            Function::LogisticParts => &[
                ("softplus(z)", 17.0),
                ("softplus(-z)", 17.0),
                ("sigma(z)", 9.0),
                ("sigma(-z)", 9.0),
            ],
            Function::LogisticPartsFast => {
                const B: (f64, f64, f64) = vmath::LOGISTIC_FAST_BOUND_U;
                &[
                    ("softplus(z)", B.0),
                    ("softplus(-z)", B.0),
                    ("sigma(z)", B.2),
                    ("sigma(-z)", B.2),
                ]
            }
            Function::Exp32Shift => &[("exp32", crate::kernels::vmath::exp32::EXP32_BOUND_U)],
        }
    }

    /// The function at x, one value per part.
    pub fn eval(self, x: f64) -> Vec<f64> {
        match self {
            Function::Exp => vec![vmath::exp(x)],
            Function::ExpNonpos => vec![vmath::exp_nonpos(x)],
            Function::Log1pUnit => vec![vmath::log1p_unit(x)],
            Function::LogisticParts => {
                let (a, b, c, d) = vmath::logistic_parts(x);
                vec![a, b, c, d]
            }
            Function::LogisticPartsFast => {
                let (a, b, c, d) = vmath::logistic_parts_fast(x);
                vec![a, b, c, d]
            }
            Function::Exp32Shift => vec![vmath::exp32::exp32_shift(x as f32, 0.0) as f64],
        }
    }
}

fn exp_exact(x: f64) -> Float {
    Float::with_val(PREC, x).exp()
}

/// |got − exact| / |exact| in units of u (0 when both are 0; inf when only one is).
fn rel_u(got: f64, exact: &Float) -> f64 {
    if *exact == 0 {
        return if got == 0.0 { 0.0 } else { f64::INFINITY };
    }
    if !got.is_finite() {
        return f64::INFINITY;
    }
    let d = Float::with_val(PREC, got) - exact;
    (d / exact).abs().to_f64() / U
}

/// exp's error measure at x (results of [`vmath::exp`] or [`vmath::exp_nonpos`]), scaled so
/// that it is ≤ 4 exactly where the documented bound holds: relative in u for results
/// ≥ 2⁻¹⁰²²; for smaller results 4·|got − eˣ| / (2⁻¹⁰⁷⁵ + 4u·eˣ); 0 for +inf where eˣ >
/// f64::MAX·(1 + 4u) (inf otherwise), and 0 for any answer in the sliver just above f64::MAX.
fn exp_error(x: f64, got: f64) -> f64 {
    let exact = exp_exact(x);
    let max = Float::with_val(PREC, f64::MAX);
    if exact > max {
        let lim = Float::with_val(PREC, f64::MAX) * (1.0 + 4.0 * U);
        return if exact <= lim || got == f64::INFINITY { 0.0 } else { f64::INFINITY };
    }
    if exact < f64::MIN_POSITIVE {
        let d = (Float::with_val(PREC, got) - &exact).abs();
        // 2⁻¹⁰⁷⁵ is half the smallest subnormal (not an f64: made in MPFR)
        let half_sub = Float::with_val(PREC, f64::from_bits(1)) / 2u32;
        let lim = Float::with_val(PREC, &exact * (4.0 * U)) + half_sub;
        return 4.0 * (d / lim).to_f64();
    }
    rel_u(got, &exact)
}

/// exp32_shift(z, m)'s error measure (`got` its result as f64), scaled so that it is ≤ B =
/// [`EXP32_BOUND_U`](vmath::exp32::EXP32_BOUND_U) exactly where the documented bound holds:
/// relative in units of 2⁻²⁴ for e^{z−m} ≥ 2⁻¹²⁶, for smaller results
/// B·|got − e^{z−m}| / (2⁻¹⁵⁰ + B·2⁻²⁴·e^{z−m}). A cheap first pass against f64 (`libm::exp`
/// of the f64 difference: a shift below 2⁻²¹ in this measure);
/// MPFR at 128 bits decides wherever the cheap measure exceeds 1.0 (40% of the bound).
pub fn exp32_error(z: f64, m: f64, got: f64) -> f64 {
    let b = vmath::exp32::EXP32_BOUND_U;
    let u24 = 2f64.powi(-24);
    let measure = |exact: f64, diff_abs: f64| {
        if exact >= 2f64.powi(-126) {
            diff_abs / exact / u24
        } else {
            b * diff_abs / (2f64.powi(-150) + b * u24 * exact)
        }
    };
    // z − m in f64 is within 2⁻⁵³·|z − m| ≤ 2⁻⁴⁶ of the exact difference (|z − m| ≤ 104 where
    // it matters), moving e^{z−m} by < 2⁻⁴⁵ relatively: < 2⁻²¹ in this measure
    let exact = libm::exp(z - m);
    let cheap = if got.is_finite() { measure(exact, (got - exact).abs()) } else { f64::INFINITY };
    if cheap <= 1.0 {
        return cheap;
    }
    let e = (Float::with_val(PREC, z) - Float::with_val(PREC, m)).exp();
    let diff = (Float::with_val(PREC, got) - &e).abs();
    if !got.is_finite() {
        return f64::INFINITY;
    }
    let ef = e.to_f64();
    if ef >= 2f64.powi(-126) {
        (diff / &e).to_f64() / u24
    } else {
        let lim = Float::with_val(PREC, &e * (b * u24)) + Float::with_val(PREC, 2f64.powi(-150));
        b * (diff / lim).to_f64()
    }
}

/// The error of each part of `got` (the function's results at x, [`Function::eval`]'s
/// order), in the units of [`Function::parts`]' bounds: part k is within its bound exactly
/// when `errors(..)[k] <= bound`. For `exp_nonpos`, a result that is not `exp`'s bits is an
/// infinite error.
pub fn errors(f: Function, x: f64, got: &[f64]) -> Vec<f64> {
    match f {
        Function::Exp => vec![exp_error(x, got[0])],
        Function::ExpNonpos => {
            if got[0].to_bits() != vmath::exp(x).to_bits() {
                vec![f64::INFINITY]
            } else {
                vec![exp_error(x, got[0])]
            }
        }
        Function::Exp32Shift => vec![exp32_error(x, 0.0, got[0])],
        Function::Log1pUnit => vec![rel_u(got[0], &Float::with_val(PREC, x).ln_1p())],
        Function::LogisticParts | Function::LogisticPartsFast => {
            let z = Float::with_val(PREC, x);
            let softplus = |w: Float| w.exp().ln_1p();
            let sigma = |w: Float| {
                let e = Float::with_val(PREC, (-w).exp());
                Float::with_val(PREC, 1) / (e + 1u32)
            };
            let mz = Float::with_val(PREC, -&z);
            vec![
                rel_u(got[0], &softplus(z.clone())),
                rel_u(got[1], &softplus(mz.clone())),
                rel_u(got[2], &sigma(z)),
                rel_u(got[3], &sigma(mz)),
            ]
        }
    }
}

/// One input beyond its bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub x: f64,
    pub part: &'static str,
    pub error_u: f64,
}

/// The result of checking a range of inputs.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub function: Function,
    pub dtype: Dtype,
    pub shard: Shard,
    /// Bit patterns looked at (the shard's range).
    pub patterns: u64,
    /// Of those, the inputs in the function's domain, each checked.
    pub checked: u64,
    /// Per part: (worst error in u, at x).
    pub worst: Vec<(f64, f64)>,
    /// Inputs beyond a bound (count) and the first few, in pattern order.
    pub violations: u64,
    pub examples: Vec<Violation>,
    pub seconds: f64,
}

const EXAMPLES: usize = 16;
const CHUNK: u64 = 1 << 12;

impl Certificate {
    pub fn holds(&self) -> bool {
        self.violations == 0
    }

    /// `exp f32 shard 3/1024: 4,194,304 patterns, 4,194,304 in the domain (every finite
    /// input): worst 1.35u at …, bound 4u holds — 12.3 s`.
    pub fn summary_line(&self) -> String {
        let worst: Vec<String> = self
            .function
            .parts()
            .iter()
            .zip(&self.worst)
            .map(|((name, bound), (e, x))| format!("{name} {e:.2}u at {x:e} (bound {bound}u)"))
            .collect();
        format!(
            "{} {}{}: {} patterns, {} in the domain ({}); worst {}; {} — {:.1} s",
            self.function.name(),
            self.dtype,
            if self.shard.is_all() { String::new() } else { format!(" shard {}", self.shard.text()) },
            fmt_count(self.patterns),
            fmt_count(self.checked),
            self.function.domain(),
            worst.join(", "),
            if self.holds() {
                "every bound holds".to_string()
            } else {
                format!("{} inputs BEYOND a bound", self.violations)
            },
            self.seconds
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "schema": "losscheck-vmath-certificate/1",
            "function": self.function.name(),
            "dtype": self.dtype.name(),
            "shard": self.shard.text(),
            "domain": self.function.domain(),
            "measure": self.function.measure(),
            "patterns": self.patterns,
            "checked": self.checked,
            "parts": self.function.parts().iter().zip(&self.worst).map(|((name, bound), (e, x))| json!({
                "part": name, "bound_u": bound, "worst_u": e, "worst_at": x,
            })).collect::<Vec<_>>(),
            "violations": self.violations,
            "examples": self.examples.iter().map(|v| json!({"x": v.x, "part": v.part, "error_u": v.error_u})).collect::<Vec<_>>(),
            "holds": self.holds(),
            "seconds": (self.seconds * 100.0).round() / 100.0,
            "summary": self.summary_line(),
        })
    }

    /// The file name: `vmath-<function>-<dtype>[-shard-K-of-N].json`.
    pub fn file_name(&self) -> String {
        let shard = if self.shard.is_all() {
            String::new()
        } else {
            format!("-shard-{}-of-{}", self.shard.index, self.shard.count)
        };
        format!("vmath-{}-{}{shard}.json", self.function.name(), self.dtype)
    }
}

struct Partial {
    checked: u64,
    worst: Vec<(f64, f64)>,
    violations: u64,
    examples: Vec<Violation>,
}

fn check_chunk(f: Function, dtype: Dtype, lo: u64, hi: u64) -> Partial {
    let parts = f.parts();
    let mut p = Partial {
        checked: 0,
        worst: vec![(0.0, 0.0); parts.len()],
        violations: 0,
        examples: Vec::new(),
    };
    for bits in lo..hi {
        let x = dtype.from_bits(bits as u32);
        if !f.in_domain(x) {
            continue;
        }
        p.checked += 1;
        let errs = errors(f, x, &f.eval(x));
        let mut bad = false;
        for (k, (&e, &(name, bound))) in errs.iter().zip(parts).enumerate() {
            if e > p.worst[k].0 || e.is_nan() {
                p.worst[k] = (e, x);
            }
            if !(e <= bound) {
                bad = true;
                if p.examples.len() < EXAMPLES {
                    p.examples.push(Violation { x, part: name, error_u: e });
                }
            }
        }
        p.violations += bad as u64;
    }
    p
}

/// Check every pattern of `shard`'s range of `dtype` (chunks of 4,096 patterns over rayon's
/// pool, merged in pattern order: the same certificate for any thread count). `progress`
/// is told the patterns done.
pub fn run(f: Function, dtype: Dtype, shard: Shard, progress: &(dyn Fn(u64) + Sync)) -> Certificate {
    let t = Instant::now();
    let r = shard.range(dtype);
    let starts: Vec<u64> = (r.start..r.end).step_by(CHUNK as usize).collect();
    let partials: Vec<Partial> = starts
        .par_iter()
        .map(|&lo| {
            let hi = (lo + CHUNK).min(r.end);
            let p = check_chunk(f, dtype, lo, hi);
            progress(hi - lo);
            p
        })
        .collect();
    let mut cert = Certificate {
        function: f,
        dtype,
        shard,
        patterns: r.end - r.start,
        checked: 0,
        worst: vec![(0.0, 0.0); f.parts().len()],
        violations: 0,
        examples: Vec::new(),
        seconds: 0.0,
    };
    for p in partials {
        cert.checked += p.checked;
        cert.violations += p.violations;
        for (w, pw) in cert.worst.iter_mut().zip(p.worst) {
            if pw.0 > w.0 || pw.0.is_nan() {
                *w = pw;
            }
        }
        let room = EXAMPLES - cert.examples.len();
        cert.examples.extend(p.examples.into_iter().take(room));
    }
    cert.seconds = t.elapsed().as_secs_f64();
    cert
}

/// The title of [`report_section`] in the report.
pub const REPORT_SECTION_TITLE: &str = "Certificates of the kernels' own math";

/// The certificates in `dir` (`reports/exhaustive/vmath`), in file-name order.
pub fn load(dir: &std::path::Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| serde_json::from_str::<Value>(&std::fs::read_to_string(p).ok()?).ok())
        .filter(|v| v["schema"] == "losscheck-vmath-certificate/1")
        .collect()
}

/// The body of a Markdown section: one row per certificate in `dir` (function, dtype, shard,
/// inputs checked, worst error against the bound per part). Empty when there are none.
pub fn report_section(dir: &std::path::Path) -> String {
    let certs = load(dir);
    if certs.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "The vectorized exp, log1p and logistic functions of the fast paths (`kernels::vmath`), every input of the \
         dtype in the function's domain against MPFR at 128 bits, each error against the bound the function's docs \
         derive (`losscheck exhaustive --function F`, docs/exhaustive.md; certificates in `{}`). u = 2^-53.\n\n\
         | function | dtype | patterns | inputs checked | worst error / bound per part | holds |\n|---|---|---|---:|---|---|\n",
        dir.display()
    );
    for v in &certs {
        let parts: Vec<String> = v["parts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        format!(
                            "{} {:.2}u / {}u",
                            p["part"].as_str().unwrap_or("?"),
                            p["worst_u"].as_f64().unwrap_or(f64::NAN),
                            p["bound_u"].as_f64().unwrap_or(f64::NAN)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let shard = v["shard"].as_str().unwrap_or("?");
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            v["function"].as_str().unwrap_or("?"),
            v["dtype"].as_str().unwrap_or("?"),
            if shard == "0/1" { "all".to_string() } else { format!("shard {shard}") },
            fmt_count(v["checked"].as_u64().unwrap_or(0)),
            parts.join("; "),
            if v["holds"] == true { "yes" } else { "**no**" }
        ));
    }
    md
}
