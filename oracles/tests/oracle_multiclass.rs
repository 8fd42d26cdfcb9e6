//! The row-wise classification oracles (`cross_entropy`, `nll`, `multi_margin`) against
//! independent references:
//!
//! - cross_entropy against the naive definition Σ_c a_c·(log Σ_k e^{z_k} − z_c) at 2000 bits
//!   (the logits' spread stays below 700, so the cancellation in LSE − z_c costs < 1100 bits),
//!   a_c = (1−ε)·w_y·[c=y] + (ε/C)·w_c or w_c·((1−ε)·q_c + ε/C) formed directly, and its
//!   gradient A·p_j − a_j with p_j = e^{z_j − LSE}; NC, BTC (every reduction, `sequence_mean`
//!   included) and soft targets, confident rows, huge common offsets, ties, ignored rows (also
//!   with an ignore_index inside [0, C)), class weights (zeros included), label smoothing (0, 1
//!   and between), cotangents;
//! - nll and multi_margin against exact rationals;
//!
//! the reductions are re-derived here (not through the oracle's reducers). The oracle's
//! enclosure must meet the reference's, and where the reference decides its rounding (round.rs
//! on both ends of the reference interval) the oracle's rounded value must be that one.
//! Then: gradients against high-precision finite differences (fd.rs) for all three losses;
//! facts with hand-derived exact values (PROTOCOL.md's example, empty means, zero class
//! weights, extended reals, C = 1, N = 0, the confident row, sequence_mean vs mean, the
//! multi_margin kink groups and an exact bf16 rounding midpoint, nll's irrelevant entries); a
//! performance sanity print.

#![allow(clippy::needless_range_loop)]

use losscheck_core::rng::SplitMix64;
use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use losscheck_oracles::classification::multiclass::MULTI_MARGIN_KINK;
use losscheck_oracles::fd::check_gradients;
use losscheck_oracles::round::round_float;
use losscheck_oracles::{evaluate, Exact, OracleOutput, START_PREC};
use rug::float::Round;
use rug::{Float, Rational};

const REF: u32 = 2000;
const FD_TOL: f64 = 1.0 / (1u64 << 40) as f64;

// ---------------------------------------------------------------------------------------------
// References and checks

/// A reference: an interval [lo, hi] holding the exact value, or an exact special value.
#[derive(Clone, Debug)]
enum Ref {
    Fin(Float, Float),
    Special(f64),
}

impl Ref {
    /// x ± err (x at REF bits).
    fn approx(x: &Float, err: &Float) -> Ref {
        if !x.is_finite() {
            return Ref::Special(x.to_f64());
        }
        Ref::Fin(
            Float::with_val_round(REF + 64, x - err, Round::Down).0,
            Float::with_val_round(REF + 64, x + err, Round::Up).0,
        )
    }
    fn exact(x: &Rational) -> Ref {
        Ref::Fin(
            Float::with_val_round(4000, x, Round::Down).0,
            Float::with_val_round(4000, x, Round::Up).0,
        )
    }
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0) || (a.is_nan() && b.is_nan())
}

/// Check one oracle output against a reference; `false` when the reference cannot decide the
/// rounding (inconclusive).
fn check(e: &Exact, r: &Ref, what: &str) -> bool {
    assert!(e.hard.is_none(), "{what}: a hard case {:?}", e.enclosure);
    match r {
        Ref::Special(x) => {
            assert!(
                same(e.rounded, *x),
                "{what}: got {:e}, expected {x:e} (enclosure {:?})",
                e.rounded,
                e.enclosure
            );
            if x.is_nan() {
                assert!(e.enclosure.is_nan(), "{what}: NaN must be certain");
            }
            true
        }
        Ref::Fin(lo, hi) => {
            assert!(!e.is_nan(), "{what}: NaN, expected {}", lo.to_f64());
            assert!(
                e.enclosure.lo <= *hi && e.enclosure.hi >= *lo,
                "{what}: enclosure {:?} misses the reference [{}, {}]",
                e.enclosure,
                lo.to_f64(),
                hi.to_f64()
            );
            let (a, b) = (round_float(lo, e.dtype), round_float(hi, e.dtype));
            if !same(a, b) {
                return false;
            }
            assert!(
                same(e.rounded, a),
                "{what}: reference rounds to {a:e}, oracle to {:e} ({}; enclosure {:?})",
                e.rounded,
                e.dtype,
                e.enclosure
            );
            true
        }
    }
}

fn assert_value(e: &Exact, want: f64, what: &str) {
    assert!(
        same(e.rounded, want),
        "{what}: got {:e}, expected {want:e} (enclosure {:?})",
        e.rounded,
        e.enclosure
    );
    if want.is_nan() {
        assert!(e.enclosure.is_nan(), "{what}: NaN must be certain");
    }
}

fn assert_exact_zero(e: &Exact, what: &str) {
    assert!(
        e.enclosure.is_point() && e.enclosure.is_zero(),
        "{what}: enclosure {:?} is not exactly 0",
        e.enclosure
    );
}

fn fl(x: f64) -> Float {
    Float::with_val(REF, x)
}

fn q(x: f64) -> Rational {
    Rational::from_f64(x).expect("finite")
}

fn grad<'a>(out: &'a OracleOutput, name: &str) -> &'a [Exact] {
    &out.grads[name]
}

// ---------------------------------------------------------------------------------------------
// Case builders

#[derive(Clone, Debug)]
enum Target {
    Ids(Vec<i64>),
    Soft(Vec<f64>),
}

/// A cross_entropy case: shape [N, C] or [B, T, C].
#[derive(Clone, Debug)]
struct Ce {
    dtype: Dtype,
    out_dtype: Option<Dtype>,
    shape: Vec<usize>,
    logits: Vec<f64>,
    target: Target,
    cw: Option<Vec<f64>>,
    eps: f64,
    ignore: i64,
    red: Reduction,
    cot: Option<Vec<f64>>,
}

impl Ce {
    fn new(shape: &[usize], logits: Vec<f64>, target: Vec<i64>) -> Ce {
        Ce {
            dtype: Dtype::F32,
            out_dtype: None,
            shape: shape.to_vec(),
            logits,
            target: Target::Ids(target),
            cw: None,
            eps: 0.0,
            ignore: -100,
            red: Reduction::Mean,
            cot: None,
        }
    }
    fn c(&self) -> usize {
        *self.shape.last().unwrap()
    }
    fn row_shape(&self) -> Vec<usize> {
        self.shape[..self.shape.len() - 1].to_vec()
    }
    fn rows(&self) -> usize {
        self.row_shape().iter().product()
    }
    fn case(&self) -> Case {
        let d = self.dtype;
        let mut c = Case::new("cross_entropy", d).unwrap();
        c.out_dtype = self.out_dtype.unwrap_or(d);
        c.set_reduction(self.red);
        c.inputs.insert(
            "logits".into(),
            Tensor::float(d, self.shape.clone(), self.logits.clone()),
        );
        match &self.target {
            Target::Ids(t) => c
                .inputs
                .insert("target".into(), Tensor::int(self.row_shape(), t.clone())),
            Target::Soft(t) => c.inputs.insert(
                "target".into(),
                Tensor::float(d, self.shape.clone(), t.clone()),
            ),
        };
        if let Some(w) = &self.cw {
            c.inputs.insert(
                "class_weight".into(),
                Tensor::float(d, vec![self.c()], w.clone()),
            );
        }
        if let Some(cot) = &self.cot {
            let sh = if self.red == Reduction::None {
                self.row_shape()
            } else {
                vec![]
            };
            c.inputs
                .insert("cotangent".into(), Tensor::float(d, sh, cot.clone()));
        }
        c.params
            .insert("label_smoothing".into(), ParamValue::Float(self.eps));
        c.params
            .insert("ignore_index".into(), ParamValue::Int(self.ignore));
        c
    }
    fn w(&self, c: usize) -> f64 {
        self.cw.as_ref().map_or(1.0, |w| w[c])
    }
    fn active(&self, i: usize) -> bool {
        match &self.target {
            Target::Ids(t) => t[i] != self.ignore,
            Target::Soft(_) => true,
        }
    }
    /// The mean's weight of row i.
    fn den_w(&self, i: usize) -> f64 {
        match &self.target {
            Target::Ids(t) => self.w(t[i] as usize),
            Target::Soft(_) => 1.0,
        }
    }
    /// a_c of row i, formed directly at REF bits.
    fn coefs(&self, i: usize) -> Vec<Float> {
        let nc = self.c();
        let eps = fl(self.eps);
        let one_m = Float::with_val(REF, 1 - &eps);
        let eps_c = Float::with_val(REF, &eps / nc as u32);
        (0..nc)
            .map(|c| match &self.target {
                Target::Ids(t) => {
                    let y = t[i] as usize;
                    let mut a = Float::with_val(REF, &eps_c * self.w(c));
                    if c == y {
                        a += Float::with_val(REF, &one_m * self.w(y));
                    }
                    a
                }
                Target::Soft(s) => {
                    let qc = s[i * nc + c];
                    if self.eps == 0.0 && qc == 0.0 || self.w(c) == 0.0 {
                        return Float::new(REF);
                    }
                    let qp = Float::with_val(REF, &one_m * qc) + &eps_c;
                    qp * self.w(c)
                }
            })
            .collect()
    }
}

/// The naive reference of one finite cross-entropy row: (l, |l| scale, g_j, |g_j| scale).
fn ce_row_ref(z: &[f64], a: &[Float]) -> (Float, Float, Vec<Float>, Vec<Float>) {
    let mut s = Float::new(REF);
    for &zk in z {
        s += fl(zk).exp();
    }
    let lse = s.ln();
    let mut l = Float::new(REF);
    let mut mag = Float::new(REF);
    let mut total = Float::new(REF);
    for (c, ac) in a.iter().enumerate() {
        if ac.is_zero() {
            continue;
        }
        let d = Float::with_val(REF, &lse - z[c]);
        l += Float::with_val(REF, ac * &d);
        mag += Float::with_val(REF, ac * (lse.clone().abs() + z[c].abs()));
        total += ac;
    }
    let mut g = Vec::with_capacity(z.len());
    let mut gm = Vec::with_capacity(z.len());
    for (j, aj) in a.iter().enumerate() {
        let p = Float::with_val(REF, z[j] - &lse).exp();
        let ap = Float::with_val(REF, &total * &p);
        gm.push(Float::with_val(REF, &ap + aj) + 1u32);
        g.push(ap - aj);
    }
    (l, mag + 1u32, g, gm)
}

/// Reference outputs (value components, gradient components) of a CE case with finite logits,
/// the reductions applied here.
fn ce_reference(s: &Ce) -> (Vec<Ref>, Vec<Ref>) {
    let nc = s.c();
    let rows = s.rows();
    let tol = Float::with_val(64, Float::i_exp(1, -1900));
    let mut ls = vec![(Float::new(REF), Float::new(REF)); rows];
    let mut gs = vec![(Float::new(REF), Float::new(REF)); rows * nc];
    for i in (0..rows).filter(|&i| s.active(i)) {
        let a = s.coefs(i);
        let (l, lm, g, gm) = ce_row_ref(&s.logits[i * nc..(i + 1) * nc], &a);
        ls[i] = (l, lm);
        for j in 0..nc {
            gs[i * nc + j] = (g[j].clone(), gm[j].clone());
        }
    }
    // per-row factor of the reduction (0 for rows that do not count)
    let mut factor = vec![Float::new(REF); rows];
    match s.red {
        Reduction::None | Reduction::Sum => {
            for i in (0..rows).filter(|&i| s.active(i)) {
                factor[i] = fl(1.0);
            }
        }
        Reduction::Mean => {
            let mut d = Rational::new();
            for i in (0..rows).filter(|&i| s.active(i)) {
                d += q(s.den_w(i));
            }
            if !d.is_zero() {
                let f = Float::with_val(REF, 1) / Float::with_val(REF, &d);
                for i in (0..rows).filter(|&i| s.active(i)) {
                    factor[i] = f.clone();
                }
            }
        }
        Reduction::SequenceMean => {
            let (b, t) = (s.shape[0], s.shape[1]);
            let mut dens = vec![Rational::new(); b];
            for i in (0..rows).filter(|&i| s.active(i)) {
                dens[i / t] += q(s.den_w(i));
            }
            let nb = dens.iter().filter(|d| !d.is_zero()).count();
            for i in (0..rows).filter(|&i| s.active(i)) {
                let d = &dens[i / t];
                if !d.is_zero() {
                    factor[i] = Float::with_val(REF, 1)
                        / Float::with_val(REF, Rational::from(d * nb as u32));
                }
            }
        }
    }
    let cot = |i: usize| -> f64 {
        match &s.cot {
            None => 1.0,
            Some(c) if s.red == Reduction::None => c[i],
            Some(c) => c[0],
        }
    };
    let err = |m: &Float| Float::with_val(REF, m * &tol);
    let zero_ref = || Ref::Special(0.0);
    let values = if s.red == Reduction::None {
        (0..rows)
            .map(|i| {
                if !s.active(i) {
                    zero_ref()
                } else {
                    Ref::approx(&ls[i].0, &err(&ls[i].1))
                }
            })
            .collect()
    } else {
        let mut v = Float::new(REF);
        let mut m = Float::new(REF);
        for i in 0..rows {
            v += Float::with_val(REF, &ls[i].0 * &factor[i]);
            m += Float::with_val(REF, &ls[i].1 * &factor[i]);
        }
        vec![Ref::approx(
            &v,
            &(err(&m) + Float::with_val(REF, Float::i_exp(1, -1900))),
        )]
    };
    let mut grads = Vec::with_capacity(rows * nc);
    for i in 0..rows {
        let f = Float::with_val(REF, &factor[i] * cot(i));
        for j in 0..nc {
            let (g, gm) = &gs[i * nc + j];
            if f.is_zero() || g.is_zero() {
                grads.push(zero_ref());
            } else {
                let x = Float::with_val(REF, g * &f);
                let m = Float::with_val(REF, gm * f.clone().abs());
                grads.push(Ref::approx(&x, &err(&m)));
            }
        }
    }
    (values, grads)
}

/// Check a CE case against the naive reference; returns (checked, inconclusive).
fn check_ce(s: &Ce) -> (usize, usize) {
    let case = s.case();
    let out = evaluate(&case).unwrap_or_else(|e| panic!("{e}\n{}", case.to_json()));
    let (vals, grads) = ce_reference(s);
    let what = case.to_json().to_string();
    let (mut n, mut inc) = (0, 0);
    assert_eq!(out.value.len(), vals.len(), "{what}");
    for (k, (e, r)) in out.value.iter().zip(&vals).enumerate() {
        n += 1;
        inc += !check(e, r, &format!("value[{k}] of {what}")) as usize;
    }
    let g = grad(&out, "logits");
    assert_eq!(g.len(), grads.len());
    for (k, (e, r)) in g.iter().zip(&grads).enumerate() {
        n += 1;
        inc += !check(e, r, &format!("grad[{k}] of {what}")) as usize;
    }
    (n, inc)
}

// ---------------------------------------------------------------------------------------------
// Random cases

fn pick<T: Copy>(rng: &mut SplitMix64, xs: &[T]) -> T {
    xs[rng.below(xs.len() as u64) as usize]
}

/// A row of C logits in dtype d, by regime: typical, confident, huge offset, ties, integers.
fn logit_row(rng: &mut SplitMix64, d: Dtype, nc: usize, target: usize) -> Vec<f64> {
    let big = if d == Dtype::F16 { 6.0e4 } else { 1.0e6 };
    match rng.below(6) {
        0 | 1 => {
            let scale = 2f64.powi(rng.below(8) as i32 - 3);
            (0..nc)
                .map(|_| d.round(rng.signed_unit() * scale))
                .collect()
        }
        2 => {
            // confident: a dominant logit (at the target or elsewhere)
            let gap = d.round(5.0 + rng.next_f64() * 195.0);
            let k = if rng.below(3) == 0 {
                rng.below(nc as u64) as usize
            } else {
                target
            };
            (0..nc)
                .map(|c| {
                    if c == k {
                        gap
                    } else {
                        d.round(rng.signed_unit() * 0.5)
                    }
                })
                .collect()
        }
        3 => {
            // huge common offset, small spread
            let off = d.round(big * (0.5 + rng.next_f64() * 0.5))
                * if rng.below(2) == 0 { 1.0 } else { -1.0 };
            (0..nc)
                .map(|_| d.round(off + rng.signed_unit() * 64.0))
                .collect()
        }
        4 => {
            let v = d.round(rng.signed_unit() * 10.0);
            (0..nc)
                .map(|_| {
                    if rng.below(4) == 0 {
                        d.round(v + 1.0)
                    } else {
                        v
                    }
                })
                .collect()
        }
        _ => (0..nc).map(|_| rng.below(9) as f64 - 4.0).collect(),
    }
}

fn class_weights(rng: &mut SplitMix64, d: Dtype, nc: usize) -> Vec<f64> {
    (0..nc)
        .map(|_| match rng.below(6) {
            0 => 0.0,
            1 => 1.0,
            2 => d.min_subnormal() * (1 + rng.below(4)) as f64,
            3 => d.round(rng.next_f64() * 5.0),
            _ => pick(rng, &[0.5, 2.0, 0.25, 3.0]),
        })
        .collect()
}

fn random_ce(rng: &mut SplitMix64, small: bool) -> Ce {
    let d = Dtype::ALL[rng.below(3) as usize];
    let layout = rng.below(5); // 0..=2 NC, 3 BTC, 4 soft
    let cs: &[usize] = if small {
        &[1, 2, 3, 4, 5]
    } else {
        &[1, 2, 3, 4, 7, 10, 33]
    };
    let nc = pick(rng, cs);
    let (shape, rows) = if layout == 3 {
        let b = 1 + rng.below(3) as usize;
        let t = 1 + rng.below(4) as usize;
        (vec![b, t, nc], b * t)
    } else {
        let n = pick(rng, &[1usize, 2, 3, 5, 8]);
        (vec![n, nc], n)
    };
    let ignore = match rng.below(4) {
        0 => rng.below(nc as u64) as i64, // an ignore index that is a class id
        1 => -1,
        _ => -100,
    };
    let mut ids = Vec::with_capacity(rows);
    let mut logits = Vec::with_capacity(rows * nc);
    for _ in 0..rows {
        let y = rng.below(nc as u64) as usize;
        ids.push(if rng.below(5) == 0 { ignore } else { y as i64 });
        logits.extend(logit_row(rng, d, nc, y));
    }
    let target = if layout == 4 {
        Target::Soft(
            (0..rows * nc)
                .map(|_| match rng.below(4) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => d.round(rng.next_f64()),
                })
                .collect(),
        )
    } else {
        Target::Ids(ids)
    };
    let eps = match rng.below(6) {
        0..=2 => 0.0,
        3 => 1.0,
        _ => d.round(rng.next_f64()),
    } as f32 as f64;
    let reds: &[Reduction] = if layout == 3 {
        &Reduction::ALL
    } else {
        &[Reduction::None, Reduction::Sum, Reduction::Mean]
    };
    let red = pick(rng, reds);
    let cot = (rng.below(3) == 0).then(|| {
        let k = if red == Reduction::None { rows } else { 1 };
        (0..k)
            .map(|_| {
                if rng.below(6) == 0 {
                    0.0
                } else {
                    d.round(rng.signed_unit() * 4.0)
                }
            })
            .collect()
    });
    Ce {
        dtype: d,
        out_dtype: (d != Dtype::F32 && rng.below(2) == 0).then_some(Dtype::F32),
        shape,
        logits,
        target,
        cw: (rng.below(2) == 0).then(|| class_weights(rng, d, nc)),
        eps,
        ignore,
        red,
        cot,
    }
}

#[test]
fn cross_entropy_matches_the_naive_definition_at_2000_bits() {
    let mut rng = SplitMix64::new(0xCE_2000);
    let (mut n, mut inc) = (0, 0);
    for _ in 0..700 {
        let s = random_ce(&mut rng, false);
        let (a, b) = check_ce(&s);
        n += a;
        inc += b;
    }
    eprintln!("cross_entropy: {n} outputs checked, {inc} inconclusive");
    assert!(
        n > 10_000 && inc * 1000 < n,
        "{n} checked, {inc} inconclusive"
    );
}

/// An [N, C] case of `nll` or `multi_margin`.
#[derive(Clone, Debug)]
struct Rw {
    loss: &'static str,
    dtype: Dtype,
    red: Reduction,
    nc: usize,
    x: Vec<f64>,
    ids: Vec<i64>,
    cw: Option<Vec<f64>>,
    weight: Option<Vec<f64>>,
    mask: Option<Vec<i64>>,
    cot: Option<Vec<f64>>,
    params: Vec<(&'static str, ParamValue)>,
}

impl Rw {
    fn random(rng: &mut SplitMix64, loss: &'static str, ncs: &[usize], rows: &[usize]) -> Rw {
        let d = Dtype::ALL[rng.below(3) as usize];
        let nc = pick(rng, ncs);
        let rows = pick(rng, rows);
        let red = pick(rng, &[Reduction::None, Reduction::Sum, Reduction::Mean]);
        let cot = (rng.below(3) == 0).then(|| {
            let k = if red == Reduction::None { rows } else { 1 };
            (0..k).map(|_| d.round(rng.signed_unit() * 3.0)).collect()
        });
        Rw {
            loss,
            dtype: d,
            red,
            nc,
            x: Vec::new(),
            ids: (0..rows).map(|_| rng.below(nc as u64) as i64).collect(),
            cw: (rng.below(2) == 0).then(|| class_weights(rng, d, nc)),
            weight: None,
            mask: None,
            cot,
            params: Vec::new(),
        }
    }
    fn rows(&self) -> usize {
        self.ids.len()
    }
    fn data_name(&self) -> &'static str {
        if self.loss == "nll" {
            "logp"
        } else {
            "scores"
        }
    }
    fn case(&self) -> Case {
        let (d, rows, nc) = (self.dtype, self.rows(), self.nc);
        let mut c = Case::new(self.loss, d).unwrap();
        c.set_reduction(self.red);
        c.inputs.insert(
            self.data_name().into(),
            Tensor::float(d, vec![rows, nc], self.x.clone()),
        );
        c.inputs
            .insert("target".into(), Tensor::int(vec![rows], self.ids.clone()));
        if let Some(w) = &self.cw {
            c.inputs
                .insert("class_weight".into(), Tensor::float(d, vec![nc], w.clone()));
        }
        if let Some(w) = &self.weight {
            c.inputs
                .insert("weight".into(), Tensor::float(d, vec![rows], w.clone()));
        }
        if let Some(m) = &self.mask {
            c.inputs
                .insert("mask".into(), Tensor::int(vec![rows], m.clone()));
        }
        if let Some(v) = &self.cot {
            let sh = if self.red == Reduction::None {
                vec![rows]
            } else {
                vec![]
            };
            c.inputs
                .insert("cotangent".into(), Tensor::float(d, sh, v.clone()));
        }
        for (k, v) in &self.params {
            c.params.insert(k.to_string(), v.clone());
        }
        c
    }
    fn cw(&self, k: usize) -> Rational {
        q(self.cw.as_ref().map_or(1.0, |w| w[k]))
    }
    /// The reduction applied exactly to per-row terms l (already weighted, 0 where inactive)
    /// and per-row local gradients g, with the mean's denominator weights den_w (0 where
    /// inactive); the expected (values, gradients).
    fn reduce(
        &self,
        l: &[Rational],
        g: &[Rational],
        den_w: &[Rational],
    ) -> (Vec<Rational>, Vec<Rational>) {
        let (rows, nc) = (self.rows(), self.nc);
        let mut den = Rational::new();
        for w in den_w {
            den += w;
        }
        let factor = match self.red {
            Reduction::Mean if den.is_zero() => Rational::new(),
            Reduction::Mean => Rational::from(1) / den,
            _ => Rational::from(1),
        };
        let cot = |i: usize| match &self.cot {
            None => Rational::from(1),
            Some(v) if self.red == Reduction::None => q(v[i]),
            Some(v) => q(v[0]),
        };
        let values = if self.red == Reduction::None {
            l.to_vec()
        } else {
            let mut sum = Rational::new();
            for x in l {
                sum += x;
            }
            vec![sum * &factor]
        };
        let grads = (0..rows * nc)
            .map(|k| g[k].clone() * &factor * cot(k / nc))
            .collect();
        (values, grads)
    }
    /// Evaluate and check every output against exact expectations; returns the output.
    fn check_exact(&self, values: &[Rational], grads: &[Rational]) -> OracleOutput {
        let case = self.case();
        let out = evaluate(&case).unwrap_or_else(|e| panic!("{e}\n{}", case.to_json()));
        let what = case.to_json().to_string();
        assert_eq!(out.value.len(), values.len());
        for (k, (e, v)) in out.value.iter().zip(values).enumerate() {
            assert!(check(e, &Ref::exact(v), &format!("value[{k}] of {what}")));
        }
        let og = grad(&out, self.data_name());
        for (k, (e, v)) in og.iter().zip(grads).enumerate() {
            let w = format!("grad[{k}] of {what}");
            assert!(check(e, &Ref::exact(v), &w));
            if v.is_zero() {
                assert_exact_zero(e, &w);
            }
        }
        out
    }
}

/// nll: exact rational reference.
#[test]
fn nll_matches_exact_rationals() {
    let mut rng = SplitMix64::new(0x4E11);
    for _ in 0..400 {
        let mut s = Rw::random(&mut rng, "nll", &[1, 2, 3, 6], &[1, 2, 4, 9]);
        let d = s.dtype;
        let ignore = pick(&mut rng, &[-100i64, 0, -1]);
        s.params.push(("ignore_index", ParamValue::Int(ignore)));
        for y in &mut s.ids {
            if rng.below(5) == 0 {
                *y = ignore;
            }
        }
        s.x = (0..s.rows() * s.nc)
            .map(|_| match rng.below(5) {
                0 => d.round(-rng.next_f64() * 100.0),
                1 => d.from_bits(
                    rng.next_u64() as u32 & if d == Dtype::F32 { u32::MAX } else { 0xFFFF },
                ),
                _ => d.round(rng.signed_unit() * 8.0),
            })
            .map(|x| if x.is_finite() { x } else { 1.5 })
            .collect();
        let (rows, nc) = (s.rows(), s.nc);
        let mut l = vec![Rational::new(); rows];
        let mut g = vec![Rational::new(); rows * nc];
        let mut den_w = vec![Rational::new(); rows];
        for i in (0..rows).filter(|&i| s.ids[i] != ignore) {
            let y = s.ids[i] as usize;
            l[i] = -s.cw(y) * q(s.x[i * nc + y]);
            g[i * nc + y] = -s.cw(y);
            den_w[i] = s.cw(y);
        }
        let (values, grads) = s.reduce(&l, &g, &den_w);
        s.check_exact(&values, &grads);
    }
}

/// multi_margin: exact rational reference (value and gradient), kinks included.
#[test]
fn multi_margin_matches_exact_rationals() {
    let mut rng = SplitMix64::new(0x3A_4613);
    let mut kinks = 0;
    for _ in 0..500 {
        let mut s = Rw::random(&mut rng, "multi_margin", &[1, 2, 3, 5], &[1, 2, 4, 7]);
        let d = s.dtype;
        let (rows, nc) = (s.rows(), s.nc);
        let p2 = rng.below(2) == 0;
        let margin = pick(&mut rng, &[1.0, 0.0, 0.5, -0.25, 2.0, 1e-3]);
        s.params.push(("margin", ParamValue::Float(margin)));
        s.params
            .push(("p", ParamValue::Int(if p2 { 2 } else { 1 })));
        s.x = (0..rows * nc)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.below(5) as f64 * 0.5 - 1.0
                } else {
                    d.round(rng.signed_unit() * 3.0)
                }
            })
            .collect();
        // plant kinks: x_j = x_y − m exactly (when representable)
        for i in 0..rows {
            let y = s.ids[i] as usize;
            for j in (0..nc).filter(|&j| j != y) {
                let v = s.x[i * nc + y] - margin;
                if rng.below(4) == 0 && d.round(v) == v {
                    s.x[i * nc + j] = v;
                }
            }
        }
        s.weight = (rng.below(3) == 0).then(|| {
            (0..rows)
                .map(|_| {
                    if rng.below(4) == 0 {
                        0.0
                    } else {
                        d.round(rng.next_f64() * 2.0)
                    }
                })
                .collect()
        });
        s.mask =
            (rng.below(3) == 0).then(|| (0..rows).map(|_| (rng.below(4) != 0) as i64).collect());
        let rw = |i: usize| q(s.weight.as_ref().map_or(1.0, |w| w[i]));
        let active = |i: usize| s.mask.as_ref().map_or(true, |m| m[i] != 0) && !rw(i).is_zero();
        let cq = Rational::from(nc as u32);
        let mut l = vec![Rational::new(); rows];
        let mut g = vec![Rational::new(); rows * nc];
        let mut den_w = vec![Rational::new(); rows];
        let mut kinked_rows = 0;
        for i in (0..rows).filter(|&i| active(i)) {
            let y = s.ids[i] as usize;
            let wy = s.cw(y) * rw(i); // the per-row weight folded in
            den_w[i] = rw(i);
            let mut any_kink = false;
            for j in (0..nc).filter(|&j| j != y) {
                let u = q(margin) - q(s.x[i * nc + y]) + q(s.x[i * nc + j]);
                any_kink |= u.is_zero() && !p2 && !wy.is_zero();
                if u.cmp0().is_gt() {
                    let (t, dj) = if p2 {
                        (u.clone() * &u, Rational::from(2) * &u)
                    } else {
                        (u.clone(), Rational::from(1))
                    };
                    l[i] += t * &wy / &cq;
                    let gj = dj * &wy / &cq;
                    g[i * nc + y] -= &gj;
                    g[i * nc + j] += gj;
                }
            }
            kinked_rows += any_kink as usize;
        }
        let (values, grads) = s.reduce(&l, &g, &den_w);
        let out = s.check_exact(&values, &grads);
        // kink groups: one per active kinked row with the gradient requested (an exactly zero
        // scale still yields the group, its ends zero)
        assert_eq!(out.kinks.len(), kinked_rows, "{}", s.case().to_json());
        assert!(out.kinks.iter().all(|k| k.primitive == MULTI_MARGIN_KINK));
        kinks += kinked_rows;
    }
    assert!(kinks > 30, "only {kinks} kinked rows generated");
}

// ---------------------------------------------------------------------------------------------
// Finite differences

/// The FD check of one case must agree to FD_TOL; did it compare anything?
fn fd_agrees(case: &Case, seed: u64) -> bool {
    let rep = check_gradients(case, 3, seed).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rep.max_rel < FD_TOL,
        "{} case {seed}: {:e}: {}\n{}",
        case.loss,
        rep.max_rel,
        rep.worst,
        case.to_json()
    );
    rep.comparisons > 0
}

#[test]
fn gradients_agree_with_finite_differences() {
    let mut rng = SplitMix64::new(0xFD_CE);
    let mut compared = 0;
    for k in 0..150u64 {
        let mut s = random_ce(&mut rng, true);
        // sometimes a −inf logit (its component is skipped; with smoothing the row is +inf and
        // the reduced value goes through the terms route)
        if rng.below(5) == 0 {
            let j = rng.below(s.logits.len() as u64) as usize;
            s.logits[j] = f64::NEG_INFINITY;
        }
        compared += fd_agrees(&s.case(), k) as usize;
    }
    assert!(
        compared > 100,
        "cross_entropy: only {compared} cases compared"
    );

    let mut compared = 0;
    for k in 0..120u64 {
        for loss in ["nll", "multi_margin"] {
            let mut s = Rw::random(&mut rng, loss, &[1, 2, 3, 4, 5], &[1, 2, 3, 4]);
            let d = s.dtype;
            s.x = (0..s.rows() * s.nc)
                .map(|_| {
                    if rng.below(8) == 0 {
                        0.5
                    } else {
                        d.round(rng.signed_unit() * 4.0)
                    }
                })
                .collect();
            if loss == "nll" {
                for y in &mut s.ids {
                    if rng.below(5) == 0 {
                        *y = -100;
                    }
                }
            } else {
                s.params
                    .push(("p", ParamValue::Int(1 + rng.below(2) as i64)));
                s.params.push((
                    "margin",
                    ParamValue::Float(pick(&mut rng, &[1.0, 0.5, 0.0, 2.0])),
                ));
                if rng.below(2) == 0 {
                    s.weight = Some(
                        (0..s.rows())
                            .map(|_| d.round(rng.next_f64() * 2.0))
                            .collect(),
                    );
                }
            }
            compared += fd_agrees(&s.case(), k) as usize;
        }
    }
    assert!(
        compared > 150,
        "nll/multi_margin: only {compared} cases compared"
    );
}

#[test]
fn finite_differences_through_the_terms_route() {
    let mut s = Ce::new(
        &[2, 3, 3],
        vec![
            0.5,
            -1.0,
            2.0,
            /**/ f64::NEG_INFINITY,
            0.0,
            1.0,
            /**/ 0.25,
            0.25,
            -3.0, //
            1.0,
            2.0,
            3.0,
            /**/ f64::NAN,
            0.0,
            0.0,
            /**/ -0.5,
            1.5,
            0.0,
        ],
        vec![0, 1, 2, 1, -100, 0],
    );
    s.eps = 0.25;
    s.cw = Some(vec![0.5, 2.0, 1.0]);
    for red in Reduction::ALL {
        s.red = red;
        let case = s.case();
        let out = evaluate(&case).unwrap();
        if red != Reduction::None {
            assert_value(
                &out.value[0],
                f64::INFINITY,
                "the −inf logit with smoothing",
            );
        }
        let rep = check_gradients(&case, 3, 7).unwrap();
        assert!(
            rep.max_rel < FD_TOL && rep.comparisons >= 3,
            "{red}: {rep:?}"
        );
        if red != Reduction::None {
            assert!(rep.worst.contains("terms"), "{}", rep.worst);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Facts with hand-derived values

#[test]
fn protocol_example() {
    // PROTOCOL.md's request: logits [[0, 0, 0], [0.5, −1, inf]], target [1, −100], mean (built
    // here, then through the request JSON and back)
    let s = Ce::new(
        &[2, 3],
        vec![0.0, 0.0, 0.0, 0.5, -1.0, f64::INFINITY],
        vec![1, -100],
    );
    let (case, warnings) = Case::from_json(&s.case().to_json()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let out = evaluate(&case).unwrap();
    assert_value(&out.value[0], 1.0986123085021973, "RN_f32(ln 3)");
    assert_eq!(out.value_shape, Vec::<usize>::new());
    let g = grad(&out, "logits");
    let want = [
        0.3333333432674408,
        -0.6666666865348816,
        0.3333333432674408,
        0.0,
        0.0,
        0.0,
    ];
    for (k, w) in want.iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
    }
    for k in 3..6 {
        assert_exact_zero(&g[k], "ignored row");
    }
}

#[test]
fn all_targets_ignored_is_an_empty_mean() {
    let logits = vec![
        f64::NAN,
        1.0,
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
    ];
    for eps in [0.0, 0.5] {
        for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let mut s = Ce::new(&[2, 3], logits.clone(), vec![-100, -100]);
            s.eps = eps;
            s.red = red;
            s.cw = Some(vec![1.0, 2.0, 3.0]);
            let out = evaluate(&s.case()).unwrap();
            for v in &out.value {
                assert_exact_zero(v, "value");
            }
            for e in grad(&out, "logits") {
                assert_exact_zero(e, "gradient");
            }
        }
    }
    // sequence_mean with every sequence empty; nll likewise
    let mut s = Ce::new(&[2, 1, 3], logits.clone(), vec![-100, -100]);
    s.red = Reduction::SequenceMean;
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "sequence_mean");
    assert!(grad(&out, "logits").iter().all(|e| e.enclosure.is_zero()));
    let mut c = Case::new("nll", Dtype::F32).unwrap();
    c.inputs
        .insert("logp".into(), Tensor::float(Dtype::F32, vec![2, 3], logits));
    c.inputs
        .insert("target".into(), Tensor::int(vec![2], vec![-100, -100]));
    let out = evaluate(&c).unwrap();
    assert_exact_zero(&out.value[0], "nll");
    assert!(grad(&out, "logp").iter().all(|e| e.enclosure.is_zero()));
    // class weights all zero on the targets: the denominator is 0 → empty mean, even though
    // smoothing leaves non-zero terms
    let mut s = Ce::new(&[2, 2], vec![0.0, 1.0, 2.0, 3.0], vec![0, 0]);
    s.cw = Some(vec![0.0, 1.0]);
    s.eps = 0.5;
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "zero denominator");
    assert!(grad(&out, "logits").iter().all(|e| e.enclosure.is_zero()));
}

#[test]
fn zero_class_weight_of_the_target() {
    // rows [0, 0], cw = [0, 1], targets [0, 1], ε = 1/2:
    // row 0: a = [0, 1/4] → l0 = ln2/4, ∇ = (A·p − a) = [1/8, −1/8];
    // row 1: a = [0, 3/4] → l1 = 3ln2/4, ∇ = [3/8, −3/8];
    // mean = (l0 + l1) / (0 + 1) = ln 2.
    let mut s = Ce::new(&[2, 2], vec![0.0, 0.0, 0.0, 0.0], vec![0, 1]);
    s.cw = Some(vec![0.0, 1.0]);
    s.eps = 0.5;
    let out = evaluate(&s.case()).unwrap();
    let ln2 = Float::with_val(200, rug::float::Constant::Log2);
    assert_value(&out.value[0], round_float(&ln2, Dtype::F32), "mean = ln 2");
    let g = grad(&out, "logits");
    for (k, w) in [0.125, -0.125, 0.375, -0.375].iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
        assert!(
            g[k].enclosure.is_point(),
            "dyadic gradients are exact points"
        );
    }
    // without smoothing the row with w_y = 0 is exactly 0 (NaN logits and all), adds 0 to D
    let mut s = Ce::new(&[2, 2], vec![f64::NAN, f64::INFINITY, 0.0, 0.0], vec![0, 1]);
    s.cw = Some(vec![0.0, 2.0]);
    s.red = Reduction::None;
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "w_y = 0 row");
    let two_ln2 = Float::with_val(200, &ln2 * 2u32);
    assert_value(&out.value[1], round_float(&two_ln2, Dtype::F32), "2 ln 2");
    s.red = Reduction::Mean;
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], round_float(&ln2, Dtype::F32), "2 ln 2 / 2");
    let g = grad(&out, "logits");
    for (k, w) in [0.0, 0.0, 0.5, -0.5].iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
    }
    assert_exact_zero(&g[0], "absent row");
}

#[test]
fn negative_infinite_logits() {
    // [0, −inf, 0] target 0: ln 2, gradient [−1/2, 0, 1/2]
    let mut s = Ce::new(&[1, 3], vec![0.0, f64::NEG_INFINITY, 0.0], vec![0]);
    let out = evaluate(&s.case()).unwrap();
    let ln2 = Float::with_val(200, rug::float::Constant::Log2);
    assert_value(&out.value[0], round_float(&ln2, Dtype::F32), "ln 2");
    let g = grad(&out, "logits");
    for (k, w) in [-0.5, 0.0, 0.5].iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
    }
    assert_exact_zero(&g[1], "p = 0 and absent term");
    // with smoothing ε = 0.3: +inf, gradient A·p − a finite: a = [0.7 + 0.1, 0.1, 0.1]
    s.eps = 0.3;
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::INFINITY, "smoothing term at −inf");
    let g = grad(&out, "logits");
    let eps = Rational::from_f64(0.3).unwrap();
    let third = eps.clone() / 3u32;
    let a0 = Rational::from(1) - &eps + &third;
    let half = Rational::from((1, 2));
    let want = [half.clone() - &a0, -third.clone(), half - &third];
    for k in 0..3 {
        assert!(check(&g[k], &Ref::exact(&want[k]), &format!("grad[{k}]")));
    }
    // a −inf target logit: +inf, gradient [A·p − a] = [−1, 1/2, 1/2]
    let s = Ce::new(&[1, 3], vec![f64::NEG_INFINITY, 0.0, 0.0], vec![0]);
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::INFINITY, "−inf target logit");
    let g = grad(&out, "logits");
    for (k, w) in [-1.0, 0.5, 0.5].iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
    }
    // every logit −inf: NaN row
    let s = Ce::new(&[1, 2], vec![f64::NEG_INFINITY; 2], vec![0]);
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::NAN, "all −inf");
    assert!(grad(&out, "logits").iter().all(Exact::is_nan));
}

#[test]
fn positive_infinite_logits() {
    // two +inf: NaN row (value, gradient); the other row unaffected
    let mut s = Ce::new(
        &[2, 3],
        vec![f64::INFINITY, 0.0, f64::INFINITY, 0.0, 0.0, 0.0],
        vec![0, 0],
    );
    s.red = Reduction::None;
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::NAN, "two +inf");
    let ln3 = Float::with_val(200, 3).ln();
    assert_value(&out.value[1], round_float(&ln3, Dtype::F32), "ln 3");
    let g = grad(&out, "logits");
    assert!(g[..3].iter().all(Exact::is_nan));
    assert!(g[3..].iter().all(|e| !e.is_nan()));
    // one +inf at the target: 0, gradient 0
    let s = Ce::new(
        &[1, 3],
        vec![1.0, f64::INFINITY, f64::NEG_INFINITY],
        vec![1],
    );
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "+inf at the target");
    for e in grad(&out, "logits") {
        assert_exact_zero(e, "one-hot p at the target");
    }
    // one +inf elsewhere: +inf, gradient [j=k] − [j=y] = [0, −1, 1]
    let s = Ce::new(&[1, 3], vec![1.0, 2.0, f64::INFINITY], vec![1]);
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::INFINITY, "+inf elsewhere");
    let g = grad(&out, "logits");
    for (k, w) in [0.0, -1.0, 1.0].iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
    }
    // with smoothing, even +inf at the target: +inf (the smoothing terms of the other classes)
    let mut s = Ce::new(&[1, 2], vec![f64::INFINITY, 0.0], vec![0]);
    s.eps = 0.5;
    let out = evaluate(&s.case()).unwrap();
    assert_value(
        &out.value[0],
        f64::INFINITY,
        "smoothing with +inf at the target",
    );
    let g = grad(&out, "logits");
    // A = 1, a = [3/4, 1/4]: [1 − 3/4, −1/4]
    assert_value(&g[0], 0.25, "grad[0]");
    assert_value(&g[1], -0.25, "grad[1]");
    // a NaN logit anywhere: NaN row
    let s = Ce::new(&[1, 3], vec![0.0, f64::NAN, 1.0], vec![0]);
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::NAN, "NaN logit");
    assert!(grad(&out, "logits").iter().all(Exact::is_nan));
}

#[test]
fn one_class_and_no_rows() {
    for eps in [0.0, 0.25, 1.0] {
        let mut s = Ce::new(&[3, 1], vec![5.0, -7.5, f64::INFINITY], vec![0, 0, 0]);
        s.eps = eps;
        s.red = Reduction::None;
        let out = evaluate(&s.case()).unwrap();
        for v in &out.value {
            assert_exact_zero(v, "C = 1");
        }
        for e in grad(&out, "logits") {
            assert_exact_zero(e, "C = 1 gradient");
        }
    }
    // soft target, C = 1
    let mut s = Ce::new(&[2, 1], vec![3.0, -1.0], vec![]);
    s.target = Target::Soft(vec![1.0, 0.5]);
    s.eps = 0.1;
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "soft C = 1");
    // N = 0
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let mut s = Ce::new(&[0, 4], vec![], vec![]);
        s.red = red;
        let out = evaluate(&s.case()).unwrap();
        if red == Reduction::None {
            assert!(out.value.is_empty());
            assert_eq!(out.value_shape, vec![0]);
        } else {
            assert_exact_zero(&out.value[0], "N = 0");
        }
        assert!(grad(&out, "logits").is_empty());
    }
    let mut s = Ce::new(&[0, 0], vec![], vec![]);
    s.red = Reduction::Mean;
    assert_exact_zero(&evaluate(&s.case()).unwrap().value[0], "N = 0, C = 0");
}

#[test]
fn confident_row_is_decided_at_the_start_precision() {
    let mut logits = vec![0.0; 10];
    logits[0] = 12.0;
    let s = Ce::new(&[1, 10], logits, vec![0]);
    let out = evaluate(&s.case()).unwrap();
    // log1p(9·e^−12), independently at 300 bits
    let x = Float::with_val(300, -12).exp() * 9u32;
    let want = round_float(&x.ln_1p(), Dtype::F32);
    assert_value(&out.value[0], want, "log1p(9e^-12)");
    assert_eq!(out.precision, START_PREC, "decided at the first precision");
    // its gradient: p_0 − 1 = −9e^−12/(1 + 9e^−12), p_j = e^−12/(1 + 9e^−12)
    let g = grad(&out, "logits");
    let e12 = Float::with_val(300, -12).exp();
    let z = Float::with_val(300, &e12 * 9u32) + 1u32;
    let g0 = -Float::with_val(300, &e12 * 9u32) / &z;
    let gj = Float::with_val(300, &e12 / &z);
    assert_value(&g[0], round_float(&g0, Dtype::F32), "grad[0]");
    for k in 1..10 {
        assert_value(&g[k], round_float(&gj, Dtype::F32), "grad[j]");
    }
    // far more confident: [1e4, 0, …] — still decided without trouble, value ≈ 9e^−10000
    let mut logits = vec![0.0; 10];
    logits[0] = 1.0e4;
    let s = Ce::new(&[1, 10], logits, vec![0]);
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], 0.0, "underflows to 0 in f32");
    assert!(
        out.value[0].enclosure.lo > 0,
        "but the enclosure is positive"
    );
    assert!(out.value.iter().all(|e| e.hard.is_none()));
    assert!(
        out.precision <= 2 * START_PREC,
        "precision {}",
        out.precision
    );
}

#[test]
fn huge_common_offset_is_shift_invariant() {
    // logits 1e6 + [0, 1, 2] vs [0, 1, 2]: the same value and gradient
    let base = vec![0.0, 1.0, 2.0];
    let off: Vec<f64> = base.iter().map(|x| x + 1.0e6).collect();
    let a = evaluate(&Ce::new(&[1, 3], base, vec![1]).case()).unwrap();
    let b = evaluate(&Ce::new(&[1, 3], off, vec![1]).case()).unwrap();
    assert!(same(a.value[0].rounded, b.value[0].rounded));
    for (x, y) in grad(&a, "logits").iter().zip(grad(&b, "logits")) {
        assert!(same(x.rounded, y.rounded));
    }
    assert_eq!(b.precision, START_PREC);
}

#[test]
fn sequence_mean_is_not_the_token_mean() {
    // B = 3, T = 3, C = 2. Sequence 0: three tokens [0, 0] → ln 2 each. Sequence 1: one token
    // [0, −inf] target 0 → exactly 0, then two padding tokens (ignored, holding NaN / inf).
    // Sequence 2: all padding. Token mean: (3 ln 2 + 0)/4; sequence_mean: (ln 2 + 0)/2.
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let logits = vec![
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0, //
        0.0,
        f64::NEG_INFINITY,
        nan,
        inf,
        inf,
        inf, //
        nan,
        nan,
        inf,
        0.0,
        1.0,
        2.0,
    ];
    let ids = vec![0, 1, 0, 0, -100, -100, -100, -100, -100];
    let ln2 = Float::with_val(200, rug::float::Constant::Log2);
    let mut s = Ce::new(&[3, 3, 2], logits, ids);
    s.red = Reduction::Mean;
    let out = evaluate(&s.case()).unwrap();
    let m = Float::with_val(200, &ln2 * 3u32) / 4u32;
    assert_value(
        &out.value[0],
        round_float(&m, Dtype::F32),
        "token mean 3 ln2 / 4",
    );
    let g = grad(&out, "logits");
    let want_mean = [-0.125, 0.125, 0.125, -0.125, -0.125, 0.125, 0.0, 0.0];
    for (k, w) in want_mean.iter().enumerate() {
        assert_value(&g[k], *w, &format!("mean grad[{k}]"));
    }
    s.red = Reduction::SequenceMean;
    let out = evaluate(&s.case()).unwrap();
    let sm = Float::with_val(200, &ln2 / 2u32);
    assert_value(
        &out.value[0],
        round_float(&sm, Dtype::F32),
        "sequence mean ln2 / 2",
    );
    let g = grad(&out, "logits");
    // seq 0: (p − onehot)/(3·2)
    let r = Rational::from((1, 12));
    let want = [
        -r.clone(),
        r.clone(),
        r.clone(),
        -r.clone(),
        -r.clone(),
        r.clone(),
    ];
    for (k, w) in want.iter().enumerate() {
        assert!(check(
            &g[k],
            &Ref::exact(w),
            &format!("sequence_mean grad[{k}]")
        ));
    }
    for k in 6..18 {
        assert_exact_zero(&g[k], "seq 1 (p one-hot at the target) and padding");
    }
    // with a cotangent 2: everything doubles
    s.cot = Some(vec![2.0]);
    let out = evaluate(&s.case()).unwrap();
    assert_value(
        &grad(&out, "logits")[0],
        round_float(&Float::with_val(64, -1.0 / 6.0), Dtype::F32),
        "cot",
    );
    // none: shape [B, T]
    s.red = Reduction::None;
    s.cot = None;
    let out = evaluate(&s.case()).unwrap();
    assert_eq!(out.value_shape, vec![3, 3]);
    assert_value(&out.value[0], round_float(&ln2, Dtype::F32), "token 0");
    assert_exact_zero(&out.value[3], "token [0, −inf] target 0");
    for k in 4..9 {
        assert_exact_zero(&out.value[k], "padding");
    }
}

#[test]
fn soft_targets() {
    // q = [1/2, 1/2] on [0, 0]: l = ln 2, gradient p − q = 0 exactly
    let mut s = Ce::new(&[1, 2], vec![0.0, 0.0], vec![]);
    s.target = Target::Soft(vec![0.5, 0.5]);
    let out = evaluate(&s.case()).unwrap();
    let ln2 = Float::with_val(200, rug::float::Constant::Log2);
    assert_value(&out.value[0], round_float(&ln2, Dtype::F32), "ln 2");
    for e in grad(&out, "logits") {
        assert_exact_zero(e, "p = q");
    }
    // a zero target entry at a −inf logit is absent (ε = 0); with ε > 0 it is +inf
    s.logits = vec![0.0, f64::NEG_INFINITY];
    s.target = Target::Soft(vec![1.0, 0.0]);
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "q = 0 at −inf");
    s.eps = 0.5;
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], f64::INFINITY, "smoothing at −inf");
    // soft mean divides by N (no ignore); a NaN target entry makes its row NaN unless its class
    // weight is 0 or ε = 1
    let mut s = Ce::new(&[2, 2], vec![0.0, 0.0, 0.0, 0.0], vec![]);
    s.target = Target::Soft(vec![1.0, 0.0, f64::NAN, 1.0]);
    s.red = Reduction::None;
    let out = evaluate(&s.case()).unwrap();
    assert_value(&out.value[0], round_float(&ln2, Dtype::F32), "row 0");
    assert_value(&out.value[1], f64::NAN, "NaN target entry");
    s.cw = Some(vec![0.0, 1.0]);
    let out = evaluate(&s.case()).unwrap();
    assert_exact_zero(&out.value[0], "only class 0, weight 0");
    assert_value(
        &out.value[1],
        round_float(&ln2, Dtype::F32),
        "NaN entry has weight 0",
    );
    s.cw = None;
    s.eps = 1.0;
    s.red = Reduction::Mean;
    let out = evaluate(&s.case()).unwrap();
    // ε = 1: q′ = 1/2 everywhere: each row ln 2, mean over N = 2 rows
    assert_value(
        &out.value[0],
        round_float(&ln2, Dtype::F32),
        "ε = 1 ignores q",
    );
}

#[test]
fn nll_facts() {
    let mk = |logp: Vec<f64>, rows: usize, ids: Vec<i64>, red: Reduction| {
        let nc = logp.len() / rows.max(1);
        let mut c = Case::new("nll", Dtype::F32).unwrap();
        c.set_reduction(red);
        c.inputs.insert(
            "logp".into(),
            Tensor::float(Dtype::F32, vec![rows, nc], logp),
        );
        c.inputs
            .insert("target".into(), Tensor::int(vec![rows], ids));
        c
    };
    // NaN and inf in non-target entries never matter
    let c = mk(
        vec![f64::NAN, -1.5, f64::INFINITY],
        1,
        vec![1],
        Reduction::Mean,
    );
    let out = evaluate(&c).unwrap();
    assert_value(&out.value[0], 1.5, "−logp_y");
    let g = grad(&out, "logp");
    assert_exact_zero(&g[0], "non-target");
    assert_value(&g[1], -1.0, "−w_y");
    assert_exact_zero(&g[2], "non-target");
    // zero class weight: exactly 0 even with NaN at the target; adds 0 to D
    let mut c = mk(
        vec![f64::NAN, 0.0, -2.0, -4.0],
        2,
        vec![0, 1],
        Reduction::Mean,
    );
    c.inputs.insert(
        "class_weight".into(),
        Tensor::float(Dtype::F32, vec![2], vec![0.0, 0.5]),
    );
    let out = evaluate(&c).unwrap();
    assert_value(&out.value[0], 4.0, "(0 + 0.5·4) / (0 + 0.5)");
    let g = grad(&out, "logp");
    for (k, w) in [0.0, 0.0, 0.0, -1.0].iter().enumerate() {
        assert_value(&g[k], *w, &format!("grad[{k}]"));
    }
    // a NaN at the target: NaN value, NaN in that component only
    let c = mk(vec![1.0, f64::NAN], 1, vec![1], Reduction::None);
    let out = evaluate(&c).unwrap();
    assert_value(&out.value[0], f64::NAN, "NaN at the target");
    let g = grad(&out, "logp");
    assert_exact_zero(&g[0], "other entry");
    assert!(g[1].is_nan());
    // ±inf: −w·(+inf) = −inf; +inf and −inf rows together: NaN
    let c = mk(vec![f64::INFINITY], 1, vec![0], Reduction::Sum);
    assert_value(
        &evaluate(&c).unwrap().value[0],
        f64::NEG_INFINITY,
        "logp = +inf",
    );
    let c = mk(
        vec![f64::INFINITY, f64::NEG_INFINITY],
        2,
        vec![0, 0],
        Reduction::Sum,
    );
    let out = evaluate(&c).unwrap();
    assert_value(&out.value[0], f64::NAN, "−inf + inf");
    assert_value(&grad(&out, "logp")[0], -1.0, "the gradient is still −w_y");
    // κ: terms 3 and −2 cancel: κ = 5
    let c = mk(vec![-3.0, 2.0], 2, vec![0, 0], Reduction::Sum);
    let out = evaluate(&c).unwrap();
    assert_value(&out.value[0], 1.0, "3 − 2");
    assert!(
        (out.value[0].kappa - 5.0).abs() < 1e-12,
        "κ = {}",
        out.value[0].kappa
    );
}

fn mm_case(x: Vec<f64>, rows: usize, ids: Vec<i64>, p: i64, margin: f64) -> Case {
    let nc = x.len() / rows;
    let mut c = Case::new("multi_margin", Dtype::F32).unwrap();
    c.set_reduction(Reduction::Sum);
    c.inputs.insert(
        "scores".into(),
        Tensor::float(Dtype::F32, vec![rows, nc], x),
    );
    c.inputs
        .insert("target".into(), Tensor::int(vec![rows], ids));
    c.params.insert("p".into(), ParamValue::Int(p));
    c.params.insert("margin".into(), ParamValue::Float(margin));
    c
}

#[test]
fn multi_margin_kink_groups() {
    // scores [1, 0, 0.5], target 0, m = 1: u = [·, 0, 0.5]; p = 1: l = 0.5/3,
    // selection ∇ = [−1/3, 0, 1/3]; kink group: x_1 ∈ [0, 1/3], x_0 ∈ [−1/3, −2/3], shared θ
    let c = mm_case(vec![1.0, 0.0, 0.5], 1, vec![0], 1, 1.0);
    let out = evaluate(&c).unwrap();
    let third = Rational::from((1, 3));
    assert!(check(
        &out.value[0],
        &Ref::exact(&Rational::from((1, 6))),
        "l"
    ));
    let g = grad(&out, "scores");
    assert!(check(&g[0], &Ref::exact(&-third.clone()), "x_y"));
    assert_exact_zero(&g[1], "kinked x_1: the selection nearest 0");
    assert!(check(&g[2], &Ref::exact(&third), "x_2"));
    assert_eq!(out.kinks.len(), 1);
    let kg = &out.kinks[0];
    assert_eq!(kg.primitive, MULTI_MARGIN_KINK);
    assert_eq!(kg.members.len(), 2);
    let m1 = kg
        .members
        .iter()
        .find(|m| m.index == 1)
        .expect("x_1 in the group");
    let m0 = kg
        .members
        .iter()
        .find(|m| m.index == 0)
        .expect("x_y in the group");
    assert_exact_zero(&m1.lo, "x_1 at θ = 0");
    assert!(check(
        &m1.hi,
        &Ref::exact(&Rational::from((1, 3))),
        "x_1 at θ = 1"
    ));
    assert!(check(
        &m0.lo,
        &Ref::exact(&Rational::from((-1, 3))),
        "x_y at θ = 0"
    ));
    assert!(check(
        &m0.hi,
        &Ref::exact(&Rational::from((-2, 3))),
        "x_y at θ = 1"
    ));
    assert_eq!(m0.input, "scores");
    // p = 2: no kink; l = 0.25/3, ∇ = [−1/3, 0, 1/3]
    let c = mm_case(vec![1.0, 0.0, 0.5], 1, vec![0], 2, 1.0);
    let out = evaluate(&c).unwrap();
    assert!(out.kinks.is_empty());
    assert!(check(
        &out.value[0],
        &Ref::exact(&Rational::from((1, 12))),
        "l p=2"
    ));
    // two kinked classes in a row share one group; x_y's segment spans k = 2
    let c = mm_case(vec![2.0, 1.0, 1.0, -5.0], 1, vec![0], 1, 1.0);
    let out = evaluate(&c).unwrap();
    assert_eq!(out.kinks.len(), 1);
    assert_eq!(out.kinks[0].members.len(), 3);
    let m0 = out.kinks[0].members.iter().find(|m| m.index == 0).unwrap();
    assert_exact_zero(&m0.lo, "x_y: no active class");
    assert_value(&m0.hi, -0.5, "−2/4");
    // no gradient requested: no kink group
    let mut c = mm_case(vec![1.0, 0.0, 0.5], 1, vec![0], 1, 1.0);
    c.grad.clear();
    assert!(evaluate(&c).unwrap().kinks.is_empty());
}

#[test]
fn multi_margin_exact_midpoint_is_decided() {
    // bf16, row 0: y = 2, u = [2.65625, 6.59375], l = 0.25·9.25/3, times the row weight
    // 1.6875 = 27/16: exactly 1.30078125, halfway between the bf16 values 1.296875 and
    // 1.3046875. The division by C must come last (after the weight), or the enclosure
    // straddles the midpoint at every precision.
    let mut c = mm_case(
        vec![-1.0, 2.9375, -2.65625, -2.546875, -2.40625, 0.1220703125],
        2,
        vec![2, 2],
        1,
        1.0,
    );
    let d = Dtype::Bf16;
    c.dtype = d;
    c.out_dtype = d;
    for t in c.inputs.values_mut() {
        if t.f().is_some() {
            t.dtype = losscheck_core::TensorDtype::Float(d);
        }
    }
    c.inputs.insert(
        "class_weight".into(),
        Tensor::float(d, vec![3], vec![3.6734198463196485e-40, 0.0, 0.25]),
    );
    c.inputs.insert(
        "weight".into(),
        Tensor::float(d, vec![2], vec![1.6875, 1.3046875]),
    );
    c.set_reduction(Reduction::None);
    let out = evaluate(&c).unwrap();
    assert!(
        out.value[0].enclosure.is_point(),
        "{:?}",
        out.value[0].enclosure
    );
    assert_value(&out.value[0], 1.296875, "ties to even");
    assert!(out.value.iter().all(|e| e.hard.is_none()));
    c.set_reduction(Reduction::Mean);
    let out = evaluate(&c).unwrap();
    assert!(out.value[0].hard.is_none());
}

#[test]
fn multi_margin_extended_reals() {
    let inf = f64::INFINITY;
    // x_y = −inf: +inf; gradient p = 1: x_j → 1/C, x_y → −(C−1)/C
    let out = evaluate(&mm_case(vec![f64::NEG_INFINITY, 0.0], 1, vec![0], 1, 1.0)).unwrap();
    assert_value(&out.value[0], inf, "x_y = −inf");
    let g = grad(&out, "scores");
    assert_value(&g[0], -0.5, "x_y");
    assert_value(&g[1], 0.5, "x_j");
    // p = 2: gradient ±inf
    let out = evaluate(&mm_case(vec![f64::NEG_INFINITY, 0.0], 1, vec![0], 2, 1.0)).unwrap();
    assert_value(&out.value[0], inf, "x_y = −inf, p = 2");
    let g = grad(&out, "scores");
    assert_value(&g[0], -inf, "x_y");
    assert_value(&g[1], inf, "x_j");
    // x_y = +inf, x_j finite: 0, gradient 0
    let out = evaluate(&mm_case(vec![inf, 3.0, -inf], 1, vec![0], 2, 1.0)).unwrap();
    assert_exact_zero(&out.value[0], "x_y = +inf");
    assert!(grad(&out, "scores").iter().all(|e| e.enclosure.is_zero()));
    // inf − inf: NaN row
    for x in [
        vec![inf, inf, 0.0],
        vec![-inf, -inf, 0.0],
        vec![0.0, f64::NAN, 0.0],
    ] {
        let out = evaluate(&mm_case(x.clone(), 1, vec![0], 1, 1.0)).unwrap();
        assert_value(&out.value[0], f64::NAN, &format!("{x:?}"));
        assert!(grad(&out, "scores").iter().all(Exact::is_nan));
    }
    // x_j = +inf: +inf
    let out = evaluate(&mm_case(vec![0.0, inf], 1, vec![0], 1, 1.0)).unwrap();
    assert_value(&out.value[0], inf, "x_j = +inf");
    // class weight 0: exactly 0 whatever the scores
    let mut c = mm_case(vec![f64::NAN, inf, 0.0, 1.0], 2, vec![0, 1], 1, 1.0);
    c.inputs.insert(
        "class_weight".into(),
        Tensor::float(Dtype::F32, vec![2], vec![0.0, 1.0]),
    );
    let out = evaluate(&c).unwrap();
    // row 1: x = [0, 1], y = 1: u_0 = 1 − 1 + 0 = 0 → kink, l = 0
    assert_exact_zero(&out.value[0], "zero class weight row + kinked row");
    let g = grad(&out, "scores");
    assert!(g.iter().all(|e| e.enclosure.is_zero()));
    assert_eq!(out.kinks.len(), 1, "the kink of row 1");
    // C = 1: no terms, 0 (even for a NaN score)
    let out = evaluate(&mm_case(vec![f64::NAN, 2.0], 2, vec![0, 0], 1, 1.0)).unwrap();
    assert_exact_zero(&out.value[0], "C = 1");
    // masked rows hold anything
    let mut c = mm_case(vec![f64::NAN, inf, 0.0, 3.0], 2, vec![7, 1], 1, 1.0);
    c.inputs
        .insert("mask".into(), Tensor::int(vec![2], vec![0, 1]));
    c.set_reduction(Reduction::Mean);
    let out = evaluate(&c).unwrap();
    // row 1: y = 1, u_0 = 1 − 3 + 0 < 0 → 0
    assert_exact_zero(&out.value[0], "masked NaN row");
}

// ---------------------------------------------------------------------------------------------
// Performance

#[test]
fn large_vocabulary_is_fast() {
    let mut rng = SplitMix64::new(32000);
    let (n, nc) = (4usize, 32000usize);
    let logits: Vec<f64> = (0..n * nc)
        .map(|_| Dtype::F32.round(rng.signed_unit() * 8.0))
        .collect();
    let ids: Vec<i64> = (0..n).map(|_| rng.below(nc as u64) as i64).collect();
    for eps in [0.0, 0.1] {
        let mut s = Ce::new(&[n, nc], logits.clone(), ids.clone());
        s.eps = eps;
        let case = s.case();
        let t = std::time::Instant::now();
        let out = evaluate(&case).unwrap();
        let dt = t.elapsed();
        eprintln!(
            "cross_entropy [4, 32000] ε = {eps}: {dt:?} (precision {}, value {})",
            out.precision, out.value[0].rounded
        );
        assert_eq!(grad(&out, "logits").len(), n * nc);
    }
}
