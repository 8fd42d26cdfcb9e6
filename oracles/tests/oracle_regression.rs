//! The regression oracles (`mse`, `mae`, `huber`, `quantile`, `log_cosh`) against independent
//! references:
//!
//! - mse / mae / huber / quantile are rational functions of the exact inputs: the value and
//!   every termwise gradient are computed here with `rug::Rational`, exactly, and the oracle's
//!   `Exact.rounded` is checked to be the correctly rounded value by comparing distances to the
//!   dtype neighbours (core's `next_up` / `next_down`, i.e. the `half` crate — not round.rs);
//!   the enclosure must contain the rational value.
//! - log_cosh against ln((e^r + e^−r)/2) and tanh r = (e^r − e^−r)/(e^r + e^−r) at 2000 bits.
//! - policies: empty mean, masked NaN/inf, zero weights, kink groups, extended reals,
//!   autocast output dtype, and a case that needs more than the starting precision.

use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use losscheck_oracles::round::{round_enclosure, Decided};
use losscheck_oracles::{evaluate, Exact, OracleOutput, START_PREC};
use rug::{Float, Rational};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Helpers

struct SplitMix(losscheck_core::rng::SplitMix64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn q(x: f64) -> Rational {
    Rational::from_f64(x).expect("finite")
}

#[derive(Clone, Default)]
struct Spec {
    loss: &'static str,
    dtype: Option<Dtype>,
    out_dtype: Option<Dtype>,
    shape: Option<Vec<usize>>,
    pred: Vec<f64>,
    target: Vec<f64>,
    weight: Option<Vec<f64>>,
    mask: Option<Vec<i64>>,
    cot: Option<Vec<f64>>,
    reduction: Option<Reduction>,
    params: Vec<(&'static str, f64)>,
    grad: Option<Vec<&'static str>>,
}

fn build(s: &Spec) -> Case {
    let d = s.dtype.unwrap_or(Dtype::F32);
    let mut c = Case::new(s.loss, d).unwrap();
    c.out_dtype = s.out_dtype.unwrap_or(d);
    let shape = s.shape.clone().unwrap_or_else(|| vec![s.pred.len()]);
    let red = s.reduction.unwrap_or(Reduction::Mean);
    c.set_reduction(red);
    c.inputs.insert(
        "pred".into(),
        Tensor::float(d, shape.clone(), s.pred.clone()),
    );
    c.inputs.insert(
        "target".into(),
        Tensor::float(d, shape.clone(), s.target.clone()),
    );
    if let Some(w) = &s.weight {
        c.inputs
            .insert("weight".into(), Tensor::float(d, shape.clone(), w.clone()));
    }
    if let Some(m) = &s.mask {
        c.inputs
            .insert("mask".into(), Tensor::int(shape.clone(), m.clone()));
    }
    if let Some(cot) = &s.cot {
        let sh = if red == Reduction::None {
            shape.clone()
        } else {
            vec![]
        };
        c.inputs
            .insert("cotangent".into(), Tensor::float(d, sh, cot.clone()));
    }
    for (k, v) in &s.params {
        c.params.insert(k.to_string(), ParamValue::Float(*v));
    }
    if let Some(g) = &s.grad {
        c.grad = g.iter().map(|x| x.to_string()).collect();
    }
    c
}

/// Is `r` (an exact value of `d`, or ±inf) the correctly rounded value of every real in
/// [x − err, x + err]? `None` when that interval touches a rounding boundary (inconclusive).
fn rounds_to(x: &Rational, err: &Rational, r: f64, d: Dtype) -> Option<bool> {
    if r.is_nan() || !d.contains(r) {
        return Some(false);
    }
    let max = d.max();
    let big = q(2f64.powi(d.format().emax + 1)); // the virtual neighbour above max
    let half_ulp_max = (big.clone() - q(max)) / 2u32;
    // The rounding cell of r: (lo, hi) with inclusive ends where r wins the tie.
    let (lo, lo_incl, hi, hi_incl): (Option<Rational>, bool, Option<Rational>, bool) =
        if r == f64::INFINITY {
            (Some(q(max) + half_ulp_max.clone()), true, None, false)
        } else if r == f64::NEG_INFINITY {
            (None, false, Some(-(q(max) + half_ulp_max.clone())), true)
        } else {
            let even = d.to_bits(r) & 1 == 0;
            let up = if r == max {
                big.clone()
            } else {
                q(d.next_up(r))
            };
            let down = if r == -max {
                -big.clone()
            } else {
                q(d.next_down(r))
            };
            let rr = q(r);
            (
                Some((down + rr.clone()) / 2u32),
                even,
                Some((rr + up) / 2u32),
                even,
            )
        };
    let a = x.clone() - err;
    let b = x.clone() + err;
    let inside = |v: &Rational| -> Option<bool> {
        let above_lo = match &lo {
            None => Some(true),
            Some(l) if v > l => Some(true),
            Some(l) if v == l => Some(lo_incl),
            Some(_) => Some(false),
        };
        let below_hi = match &hi {
            None => Some(true),
            Some(h) if v < h => Some(true),
            Some(h) if v == h => Some(hi_incl),
            Some(_) => Some(false),
        };
        Some(above_lo? && below_hi?)
    };
    let (ia, ib) = (inside(&a)?, inside(&b)?);
    if ia && ib {
        Some(true)
    } else if err.is_zero() {
        Some(false)
    } else {
        // the interval crosses or lies beyond the cell: wrong unless it only touches a boundary
        let crosses = |v: &Option<Rational>| v.as_ref().is_some_and(|c| &a <= c && c <= &b);
        if crosses(&lo) || crosses(&hi) {
            None
        } else {
            Some(false)
        }
    }
}

fn assert_exact_rational(e: &Exact, x: &Rational, what: &str) {
    let ok = rounds_to(x, &Rational::new(), e.rounded, e.dtype);
    assert_eq!(
        ok,
        Some(true),
        "{what}: exact {} rounded to {:e} in {}",
        x.to_f64(),
        e.rounded,
        e.dtype
    );
    assert!(
        e.hard.is_none(),
        "{what}: a rational result can never be a hard case"
    );
    assert!(
        !e.enclosure.is_nan() && e.enclosure.lo <= *x && *x <= e.enclosure.hi,
        "{what}: enclosure {:?} misses {}",
        e.enclosure,
        x.to_f64()
    );
}

fn assert_nan(e: &Exact, what: &str) {
    assert!(
        e.rounded.is_nan() && e.enclosure.is_nan(),
        "{what}: expected NaN, got {:e} {:?}",
        e.rounded,
        e.enclosure
    );
}

fn assert_value(e: &Exact, want: f64, what: &str) {
    assert!(
        e.rounded.to_bits() == want.to_bits() || (e.rounded == 0.0 && want == 0.0),
        "{what}: got {:e}, expected {want:e} (enclosure {:?})",
        e.rounded,
        e.enclosure
    );
}

// ---------------------------------------------------------------------------------------------
// The rational reference

/// l(r) and dl/dr (the selection 0 at a kink) and whether r is at a kink.
fn rational_loss(
    loss: &str,
    r: &Rational,
    params: &BTreeMap<&str, Rational>,
) -> (Rational, Rational, bool) {
    let zero = Rational::new();
    let sign = Rational::from(r.cmp0() as i32);
    match loss {
        "mse" => (r.clone() * r, r.clone() * 2u32, false),
        "mae" => (r.clone().abs(), sign, r.is_zero()),
        "huber" => {
            let d = &params["delta"];
            if r.clone().abs() <= *d {
                (r.clone() * r / 2u32, r.clone(), false)
            } else {
                (
                    d.clone() * (r.clone().abs() - d.clone() / 2u32),
                    d.clone() * sign,
                    false,
                )
            }
        }
        "quantile" => {
            let t = &params["tau"];
            let u = -r.clone();
            let a = t.clone() * &u;
            let b = (t.clone() - 1u32) * &u;
            let l = if a > b { a } else { b };
            let g = match r.cmp0() {
                std::cmp::Ordering::Greater => Rational::from(1) - t,
                std::cmp::Ordering::Less => -t.clone(),
                std::cmp::Ordering::Equal => zero,
            };
            (l, g, r.is_zero())
        }
        _ => unreachable!(),
    }
}

struct Reference {
    value: Vec<Rational>,
    grads: BTreeMap<String, Vec<Rational>>,
    /// (index, coefficient c = w·cot/D) of active elements at a kink.
    kinks: Vec<(usize, Rational)>,
}

fn rational_reference(s: &Spec, case: &Case) -> Reference {
    let n = s.pred.len();
    let params: BTreeMap<&str, Rational> = s.params.iter().map(|(k, v)| (*k, q(*v))).collect();
    let red = case.reduction();
    let w = |i: usize| s.weight.as_ref().map_or(Rational::from(1), |w| q(w[i]));
    let active = |i: usize| {
        s.mask.as_ref().map_or(true, |m| m[i] != 0)
            && s.weight.as_ref().map_or(true, |w| w[i] != 0.0)
    };
    let d: Rational = (0..n)
        .filter(|&i| active(i))
        .map(w)
        .fold(Rational::new(), |a, b| a + b);
    let empty = d.is_zero();
    let cot = |i: usize| match &s.cot {
        None => Rational::from(1),
        Some(c) if red == Reduction::None => q(c[i]),
        Some(c) => q(c[0]),
    };
    let mut terms = vec![Rational::new(); n];
    let mut gp = vec![Rational::new(); n];
    let mut kinks = Vec::new();
    for i in 0..n {
        if !active(i) {
            continue;
        }
        let r = q(s.pred[i]) - q(s.target[i]);
        let (l, g, kink) = rational_loss(s.loss, &r, &params);
        terms[i] = w(i) * l;
        let mut c = w(i) * cot(i);
        if red == Reduction::Mean {
            c /= &d;
        }
        gp[i] = g * &c;
        if kink {
            kinks.push((i, c));
        }
    }
    let value = match red {
        Reduction::None => terms,
        Reduction::Sum => vec![terms.into_iter().fold(Rational::new(), |a, b| a + b)],
        _ => {
            if empty {
                vec![Rational::new()]
            } else {
                vec![terms.into_iter().fold(Rational::new(), |a, b| a + b) / &d]
            }
        }
    };
    let gt: Vec<Rational> = gp.iter().map(|g| -g.clone()).collect();
    let mut grads = BTreeMap::new();
    for g in &case.grad {
        grads.insert(g.clone(), if g == "pred" { gp.clone() } else { gt.clone() });
    }
    Reference {
        value,
        grads,
        kinks,
    }
}

fn check_against_rational(s: &Spec, what: &str) -> OracleOutput {
    let case = build(s);
    let out = evaluate(&case).unwrap_or_else(|e| panic!("{what}: {e}"));
    let re = rational_reference(s, &case);
    assert_eq!(out.value.len(), re.value.len(), "{what}: value length");
    for (k, (e, x)) in out.value.iter().zip(&re.value).enumerate() {
        assert_exact_rational(e, x, &format!("{what}: value[{k}]"));
        assert_eq!(e.dtype, case.out_dtype);
        assert_eq!(
            e.kappa, 1.0,
            "{what}: regression terms are >= 0, nothing cancels"
        );
    }
    let expected_shape = if case.reduction() == Reduction::None {
        case.inputs["pred"].shape.clone()
    } else {
        vec![]
    };
    assert_eq!(out.value_shape, expected_shape, "{what}: value shape");
    assert_eq!(
        out.grads.keys().collect::<Vec<_>>(),
        re.grads.keys().collect::<Vec<_>>(),
        "{what}: grads present"
    );
    for (name, g) in &out.grads {
        assert_eq!(
            out.grad_shapes[name], case.inputs[name].shape,
            "{what}: grad shape of {name}"
        );
        for (j, (e, x)) in g.iter().zip(&re.grads[name]).enumerate() {
            assert_exact_rational(e, x, &format!("{what}: grad {name}[{j}]"));
            assert_eq!(e.dtype, case.dtype);
        }
    }
    // kink groups: one per active element at a kink, members as requested, coupled ends.
    let want_members: Vec<&str> = ["pred", "target"]
        .into_iter()
        .filter(|n| case.grad.iter().any(|g| g == n))
        .collect();
    let expected_groups: Vec<&(usize, Rational)> = if want_members.is_empty() {
        vec![]
    } else {
        re.kinks.iter().collect()
    };
    assert_eq!(
        out.kinks.len(),
        expected_groups.len(),
        "{what}: number of kink groups"
    );
    for (kg, (i, c)) in out.kinks.iter().zip(expected_groups) {
        let (klo, khi, prim) = match s.loss {
            "mae" => (Rational::from(-1), Rational::from(1), "|r| at 0"),
            "quantile" => {
                let t = q(s.params.iter().find(|p| p.0 == "tau").unwrap().1);
                (-t.clone(), Rational::from(1) - t, "quantile at u = 0")
            }
            other => panic!("{what}: unexpected kink group for {other}"),
        };
        assert_eq!(kg.primitive, prim);
        assert_eq!(
            kg.members.len(),
            want_members.len(),
            "{what}: members of the group at {i}"
        );
        for (m, name) in kg.members.iter().zip(&want_members) {
            assert_eq!(
                (m.input.as_str(), m.index),
                (*name, *i),
                "{what}: member identity"
            );
            let sgn = if *name == "pred" {
                Rational::from(1)
            } else {
                Rational::from(-1)
            };
            assert_exact_rational(
                &m.lo,
                &(klo.clone() * c * &sgn),
                &format!("{what}: kink {name}[{i}] lo"),
            );
            assert_exact_rational(
                &m.hi,
                &(khi.clone() * c * &sgn),
                &format!("{what}: kink {name}[{i}] hi"),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Random cases

fn random_value(rng: &mut SplitMix, d: Dtype, anchor: Option<f64>) -> f64 {
    loop {
        let x = match rng.below(8) {
            0 | 1 => d.round((rng.unit() * 8.0 - 4.0) * 2f64.powi(rng.below(5) as i32 - 2)),
            2 => {
                // bit-uniform over the dtype's patterns (Herbie's sampling)
                let bits = rng.next() as u32 & if d == Dtype::F32 { u32::MAX } else { 0xFFFF };
                d.from_bits(bits)
            }
            3 => (rng.below(5) as f64) - 2.0,
            4 => anchor.unwrap_or(0.0), // a kink: pred == target
            5 => match anchor {
                // a few ulps from the anchor
                Some(a) if a.is_finite() => {
                    let mut x = a;
                    for _ in 0..=rng.below(3) {
                        x = if rng.chance(0.5) {
                            d.next_up(x)
                        } else {
                            d.next_down(x)
                        };
                    }
                    x
                }
                _ => d.min_subnormal(),
            },
            6 => {
                let m = [d.max(), d.min_normal(), d.min_subnormal(), d.epsilon()]
                    [rng.below(4) as usize];
                if rng.chance(0.5) {
                    m
                } else {
                    -m
                }
            }
            _ => d.round(rng.unit() * 2f64.powi(rng.below(40) as i32 - 20)),
        };
        if x.is_finite() {
            return x;
        }
    }
}

fn random_spec(rng: &mut SplitMix, loss: &'static str) -> Spec {
    let d = Dtype::ALL[rng.below(3) as usize];
    let n = [0usize, 1, 2, 3, 5, 8, 16, 33][rng.below(8) as usize];
    let mut pred = Vec::with_capacity(n);
    let mut target = Vec::with_capacity(n);
    for _ in 0..n {
        let p = random_value(rng, d, None);
        pred.push(p);
        target.push(random_value(rng, d, Some(p)));
    }
    let reduction = [Reduction::None, Reduction::Sum, Reduction::Mean][rng.below(3) as usize];
    let weight = rng.chance(0.5).then(|| {
        (0..n)
            .map(|_| match rng.below(6) {
                0 => 0.0,
                1 => d.min_subnormal(),
                2 => d.max() / 4.0,
                _ => d.round(rng.unit() * 4.0),
            })
            .collect()
    });
    let mask = rng
        .chance(0.4)
        .then(|| (0..n).map(|_| (rng.below(4) != 0) as i64).collect());
    let cot = rng.chance(0.5).then(|| {
        let k = if reduction == Reduction::None { n } else { 1 };
        (0..k)
            .map(|_| {
                if rng.chance(0.1) {
                    0.0
                } else {
                    random_value(rng, d, None)
                }
            })
            .collect()
    });
    let mut params = Vec::new();
    match loss {
        "huber" => {
            let delta = match rng.below(4) {
                0 => 1.0,
                1 => 0.5,
                2 => (rng.unit() * 10.0) as f32 as f64 + f32::MIN_POSITIVE as f64,
                _ => 2f64.powi(rng.below(120) as i32 - 60),
            };
            params.push(("delta", delta));
        }
        "quantile" => {
            let tau = (1 + rng.below((1 << 24) - 1)) as f64 / (1u64 << 24) as f64;
            params.push(("tau", if rng.chance(0.2) { 0.5 } else { tau }));
        }
        _ => {}
    }
    let grad = match rng.below(5) {
        0 => vec!["pred"],
        1 => vec!["target"],
        2 => vec![],
        _ => vec!["pred", "target"],
    };
    let out_dtype = (d.is_16bit() && rng.chance(0.3)).then_some(Dtype::F32);
    Spec {
        loss,
        dtype: Some(d),
        out_dtype,
        pred,
        target,
        weight,
        mask,
        cot,
        reduction: Some(reduction),
        params,
        grad: Some(grad),
        ..Spec::default()
    }
}

#[test]
fn rational_losses_are_correctly_rounded_on_random_cases() {
    let mut rng = SplitMix(losscheck_core::rng::SplitMix64::new(0x5EED_0001));
    let mut kink_groups = 0;
    let mut overflowed = 0;
    for loss in ["mse", "mae", "huber", "quantile"] {
        for k in 0..1500 {
            let s = random_spec(&mut rng, loss);
            let out = check_against_rational(&s, &format!("{loss} case {k}"));
            kink_groups += out.kinks.len();
            overflowed += out.value.iter().filter(|e| e.rounded.is_infinite()).count();
        }
    }
    // the generator reaches kinks and overflowing results (the checks above covered them)
    assert!(kink_groups > 100, "only {kink_groups} kink groups");
    assert!(overflowed > 10, "only {overflowed} overflowing values");
}

#[test]
fn multidimensional_shapes_keep_their_shape() {
    let s = Spec {
        loss: "huber",
        shape: Some(vec![2, 3]),
        pred: vec![0.0, 1.0, -2.0, 3.5, 10.0, -0.25],
        target: vec![0.5, 1.0, 2.0, -3.5, 0.0, 0.25],
        reduction: Some(Reduction::None),
        params: vec![("delta", 1.5)],
        ..Spec::default()
    };
    let out = check_against_rational(&s, "huber [2,3]");
    assert_eq!(out.value_shape, vec![2, 3]);
    assert_eq!(out.grad_shapes["pred"], vec![2, 3]);
}

// ---------------------------------------------------------------------------------------------
// log_cosh against an independent 2000-bit formula

const REF: u32 = 2000;

fn ref_log_cosh(r: &Float) -> Float {
    if r.clone().abs() < 1e8 {
        // ln((e^r + e^−r)/2), straight from the definition
        let e = Float::with_val(REF, r.exp_ref());
        let em = Float::with_val(REF, (-r.clone()).exp_ref());
        Float::with_val(REF, (e + em) / 2u32).ln()
    } else {
        // beyond MPFR's exp range: ln cosh r = |r| + ln((1 + e^{−2|r|})/2)
        let a = r.clone().abs();
        let t = Float::with_val(REF, (-Float::with_val(REF, &a * 2u32)).exp_ref());
        a + Float::with_val(REF, (t + 1u32) / 2u32).ln()
    }
}

fn ref_tanh(r: &Float) -> Float {
    // sign(r)·(1 − e^{−2|r|})/(1 + e^{−2|r|})
    let a = r.clone().abs();
    let t = Float::with_val(REF, (-Float::with_val(REF, &a * 2u32)).exp_ref());
    let v = Float::with_val(
        REF,
        &(Float::with_val(REF, 1) - &t) / &(Float::with_val(REF, 1) + &t),
    );
    if r.is_sign_negative() {
        -v
    } else {
        v
    }
}

fn assert_close_rounding(e: &Exact, y: &Float, what: &str) -> bool {
    // y carries a relative error below 2^-1600 (2000 bits, minus at most ~300 lost to the
    // cancellation in cosh r − 1 for r ≥ 2^-149); accept when every real within that bound
    // rounds to e.rounded; report inconclusive (false) when the bound touches a boundary.
    let x = y.to_rational().expect("finite reference");
    let err = x.clone().abs() >> 1600u32;
    // rigour: the enclosure must contain the exact value (within the reference's error)
    let (lo, hi) = (x.clone() - &err, x.clone() + &err);
    assert!(
        e.enclosure.lo <= hi && e.enclosure.hi >= lo,
        "{what}: enclosure {:?} misses the reference {}",
        e.enclosure,
        y.to_f64()
    );
    match rounds_to(&x, &err, e.rounded, e.dtype) {
        Some(true) => true,
        Some(false) => panic!(
            "{what}: reference {} but oracle rounded to {:e} ({})",
            y.to_f64(),
            e.rounded,
            e.dtype
        ),
        None => false,
    }
}

#[test]
fn log_cosh_matches_the_definition_at_2000_bits() {
    let mut rng = SplitMix(losscheck_core::rng::SplitMix64::new(0x5EED_0002));
    let mut inconclusive = 0;
    let mut checked = 0;
    for k in 0..1500 {
        let s = random_spec(&mut rng, "log_cosh");
        let case = build(&s);
        let out = evaluate(&case).unwrap();
        let n = s.pred.len();
        let red = case.reduction();
        let active = |i: usize| {
            s.mask.as_ref().map_or(true, |m| m[i] != 0)
                && s.weight.as_ref().map_or(true, |w| w[i] != 0.0)
        };
        let w = |i: usize| Float::with_val(REF, s.weight.as_ref().map_or(1.0, |w| w[i]));
        let d = (0..n)
            .filter(|&i| active(i))
            .fold(Float::new(REF), |a, i| a + w(i));
        let cot = |i: usize| {
            Float::with_val(
                REF,
                match &s.cot {
                    None => 1.0,
                    Some(c) if red == Reduction::None => c[i],
                    Some(c) => c[0],
                },
            )
        };
        let mut terms = vec![Float::new(REF); n];
        let mut g = vec![Float::new(REF); n];
        for i in 0..n {
            if !active(i) {
                continue;
            }
            let r = Float::with_val(
                REF,
                &Float::with_val(REF, s.pred[i]) - &Float::with_val(REF, s.target[i]),
            );
            terms[i] = w(i) * ref_log_cosh(&r);
            let mut c = w(i) * cot(i);
            if red == Reduction::Mean {
                c /= &d;
            }
            g[i] = ref_tanh(&r) * c;
        }
        let values: Vec<Float> = match red {
            Reduction::None => terms,
            _ => {
                let sum = terms.into_iter().fold(Float::new(REF), |a, b| a + b);
                vec![if red == Reduction::Mean && !d.is_zero() {
                    sum / &d
                } else {
                    sum
                }]
            }
        };
        for (j, (e, y)) in out.value.iter().zip(&values).enumerate() {
            checked += 1;
            if !assert_close_rounding(e, y, &format!("log_cosh case {k} value[{j}]")) {
                inconclusive += 1;
            }
        }
        for (name, ge) in &out.grads {
            for (j, e) in ge.iter().enumerate() {
                let y = if name == "pred" {
                    g[j].clone()
                } else {
                    -g[j].clone()
                };
                checked += 1;
                if !assert_close_rounding(e, &y, &format!("log_cosh case {k} grad {name}[{j}]")) {
                    inconclusive += 1;
                }
            }
        }
        assert!(out.kinks.is_empty());
    }
    assert!(checked > 10_000, "{checked}");
    assert!(inconclusive <= 2, "{inconclusive} inconclusive comparisons");
}

#[test]
fn log_cosh_at_the_extremes() {
    // tiny r: ln cosh r = r²/2 − r⁴/12 + … ; huge r: |r| − ln 2.
    for (p, t, d) in [
        (2f64.powi(-149), 0.0, Dtype::F32),
        (2f64.powi(-24), 0.0, Dtype::F16),
        (1e-20, 1e-20 * (1.0 + 2f64.powi(-23)), Dtype::F32),
        (3.4028234663852886e38, -3.4028234663852886e38, Dtype::F32),
        (65504.0, -65504.0, Dtype::F16),
        (-3.3895313892515355e38, 1.0, Dtype::Bf16),
        (88.0, 0.0, Dtype::F32),
    ] {
        let s = Spec {
            loss: "log_cosh",
            dtype: Some(d),
            pred: vec![d.round(p)],
            target: vec![d.round(t)],
            reduction: Some(Reduction::Sum),
            ..Spec::default()
        };
        let out = evaluate(&build(&s)).unwrap();
        let r = Float::with_val(
            REF,
            &Float::with_val(REF, d.round(p)) - &Float::with_val(REF, d.round(t)),
        );
        assert!(assert_close_rounding(
            &out.value[0],
            &ref_log_cosh(&r),
            &format!("log_cosh({p:e} − {t:e}) {d}")
        ));
        assert!(assert_close_rounding(
            &out.grads["pred"][0],
            &ref_tanh(&r),
            &format!("tanh({p:e} − {t:e}) {d}")
        ));
    }
    // 2^-149 in f32: ln cosh = 2^-299 − … rounds to 0, and the gradient is exactly r's rounding
    let s = Spec {
        loss: "log_cosh",
        pred: vec![2f64.powi(-149)],
        target: vec![0.0],
        reduction: Some(Reduction::Sum),
        ..Spec::default()
    };
    let out = evaluate(&build(&s)).unwrap();
    assert_value(&out.value[0], 0.0, "ln cosh 2^-149 underflows");
    assert!(
        out.value[0].enclosure.certainly_pos(),
        "but the exact value is positive"
    );
    assert_value(&out.grads["pred"][0], 2f64.powi(-149), "tanh 2^-149");
}

// ---------------------------------------------------------------------------------------------
// Policies

const LOSSES: [&str; 5] = ["mse", "mae", "huber", "quantile", "log_cosh"];

fn assert_exact_zero(e: &Exact, what: &str) {
    assert!(
        e.enclosure.is_point() && e.enclosure.is_zero(),
        "{what}: enclosure {:?} is not exactly 0",
        e.enclosure
    );
    assert_value(e, 0.0, what);
}

#[test]
fn empty_mean_is_exactly_zero_value_and_gradients() {
    let nasty = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 3.0];
    for loss in LOSSES {
        for d in Dtype::ALL {
            // all masked (NaN and inf in the masked positions), all zero weights, N = 0
            let variants = [
                Spec {
                    loss,
                    dtype: Some(d),
                    pred: nasty.clone(),
                    target: vec![1.0, f64::INFINITY, f64::INFINITY, 2.0],
                    mask: Some(vec![0; 4]),
                    ..Spec::default()
                },
                Spec {
                    loss,
                    dtype: Some(d),
                    pred: nasty.clone(),
                    target: vec![0.0, 1.0, f64::NAN, 2.0],
                    weight: Some(vec![0.0; 4]),
                    cot: Some(vec![f64::INFINITY]),
                    ..Spec::default()
                },
                Spec {
                    loss,
                    dtype: Some(d),
                    pred: vec![],
                    target: vec![],
                    cot: Some(vec![f64::NAN]),
                    ..Spec::default()
                },
                Spec {
                    loss,
                    dtype: Some(d),
                    pred: nasty.clone(),
                    target: nasty.clone(),
                    mask: Some(vec![0, 1, 0, 0]),
                    weight: Some(vec![1.0, 0.0, 2.0, 0.0]),
                    ..Spec::default()
                },
            ];
            for (k, mut s) in variants.into_iter().enumerate() {
                for red in [Reduction::Mean, Reduction::Sum] {
                    s.reduction = Some(red);
                    if loss == "huber" {
                        s.params = vec![("delta", 0.75)];
                    }
                    let out = evaluate(&build(&s))
                        .unwrap_or_else(|e| panic!("{loss} {d} variant {k}: {e}"));
                    let what = format!("{loss} {d} {red} variant {k}");
                    assert_eq!(out.value.len(), 1);
                    assert_exact_zero(&out.value[0], &format!("{what}: value"));
                    for (name, g) in &out.grads {
                        assert_eq!(g.len(), s.pred.len());
                        for (j, e) in g.iter().enumerate() {
                            assert_exact_zero(e, &format!("{what}: grad {name}[{j}]"));
                        }
                    }
                    assert!(out.kinks.is_empty());
                }
                // none: every output 0
                s.reduction = Some(Reduction::None);
                s.cot = None;
                let out = evaluate(&build(&s)).unwrap();
                for e in &out.value {
                    assert_exact_zero(e, &format!("{loss} {d} none variant {k}"));
                }
            }
        }
    }
}

#[test]
fn masked_and_zero_weight_nan_inf_change_nothing() {
    let mut rng = SplitMix(losscheck_core::rng::SplitMix64::new(0x5EED_0003));
    for loss in LOSSES {
        for k in 0..60 {
            let mut s = random_spec(&mut rng, loss);
            s.shape = None;
            let d = s.dtype.unwrap();
            let base = evaluate(&build(&s)).unwrap();
            // append junk that must be ignored: masked, or zero-weight
            let junk = [
                (f64::NAN, 1.0),
                (f64::INFINITY, f64::INFINITY),
                (f64::NEG_INFINITY, 0.0),
                (5.0, f64::NAN),
                (d.max(), -d.max()),
            ];
            let n0 = s.pred.len();
            let mut t = s.clone();
            let use_weight = t.weight.is_some() || rng.chance(0.5);
            if use_weight && t.weight.is_none() {
                t.weight = Some(vec![1.0; n0]);
            }
            for (p, tg) in junk {
                t.pred.push(p);
                t.target.push(tg);
                let by_weight = use_weight && (t.mask.is_none() || rng.chance(0.5));
                if let Some(w) = &mut t.weight {
                    w.push(if by_weight { 0.0 } else { 1.0 });
                }
                if !by_weight {
                    t.mask.get_or_insert_with(|| vec![1; n0]);
                }
                if let Some(m) = &mut t.mask {
                    m.push(if by_weight { 1 } else { 0 });
                }
                if let (Some(c), Some(Reduction::None)) = (&mut t.cot, t.reduction) {
                    c.push(f64::NAN);
                }
            }
            let out = evaluate(&build(&t)).unwrap_or_else(|e| panic!("{loss} case {k}: {e}"));
            let what = format!("{loss} case {k}");
            let bits = |e: &Exact| e.rounded.to_bits();
            if s.reduction == Some(Reduction::None) {
                assert_eq!(out.value.len(), n0 + junk.len());
                for j in 0..n0 {
                    assert_eq!(
                        bits(&out.value[j]),
                        bits(&base.value[j]),
                        "{what}: value[{j}]"
                    );
                }
                for e in &out.value[n0..] {
                    assert_exact_zero(e, &format!("{what}: masked output"));
                }
            } else {
                assert_eq!(
                    bits(&out.value[0]),
                    bits(&base.value[0]),
                    "{what}: reduced value"
                );
            }
            for (name, g) in &out.grads {
                for j in 0..n0 {
                    assert_eq!(
                        bits(&g[j]),
                        bits(&base.grads[name][j]),
                        "{what}: grad {name}[{j}]"
                    );
                }
                for e in &g[n0..] {
                    assert_exact_zero(e, &format!("{what}: masked grad"));
                }
            }
            assert_eq!(out.kinks.len(), base.kinks.len(), "{what}: kink groups");
        }
    }
}

#[test]
fn kink_groups_for_mae_and_quantile() {
    // elements 0 and 2 at r = 0; element 3 at r = 0 but masked; element 4 at r = 0, zero weight
    let pred = vec![1.0, 2.0, -3.0, 4.0, 0.5];
    let target = vec![1.0, 5.0, -3.0, 4.0, 0.5];
    for (loss, params) in [("mae", vec![]), ("quantile", vec![("tau", 0.125)])] {
        for grad in [vec!["pred", "target"], vec!["pred"], vec!["target"], vec![]] {
            let s = Spec {
                loss,
                pred: pred.clone(),
                target: target.clone(),
                weight: Some(vec![2.0, 1.0, 0.5, 1.0, 0.0]),
                mask: Some(vec![1, 1, 1, 0, 1]),
                cot: Some(vec![-3.0]),
                reduction: Some(Reduction::Mean),
                params: params.clone(),
                grad: Some(grad.clone()),
                ..Spec::default()
            };
            let out = check_against_rational(&s, &format!("{loss} kinks {grad:?}"));
            let n_groups = if grad.is_empty() { 0 } else { 2 };
            assert_eq!(out.kinks.len(), n_groups);
            // D = 2 + 1 + 0.5 = 3.5; c = w·cot/D = 2·(−3)/3.5 at element 0
            if let Some(kg) = out.kinks.first() {
                let m = &kg.members[0];
                assert_eq!(m.index, 0);
                let c = 2.0 * -3.0 / 3.5;
                let (lo, hi) = if loss == "mae" {
                    (-c, c)
                } else {
                    (-0.125 * c, 0.875 * c)
                };
                let sgn = if m.input == "pred" { 1.0 } else { -1.0 };
                assert!(
                    (m.lo.rounded - sgn * lo).abs() < 1e-6
                        && (m.hi.rounded - sgn * hi).abs() < 1e-6,
                    "{loss}: {} {} vs {lo} {hi}",
                    m.lo.rounded,
                    m.hi.rounded
                );
                // the selection nearest 0 is 0
                assert_value(&out.grads[&m.input][0], 0.0, "selection at the kink");
            }
        }
    }
    // huber, mse and log_cosh have no kinks at r = 0
    for loss in ["huber", "mse", "log_cosh"] {
        let s = Spec {
            loss,
            pred: pred.clone(),
            target: target.clone(),
            ..Spec::default()
        };
        assert!(evaluate(&build(&s)).unwrap().kinks.is_empty());
    }
}

#[test]
fn extended_reals_limits_and_undefined_results() {
    let inf = f64::INFINITY;
    let nan = f64::NAN;
    // (loss, params, pred, target, value, grad pred, grad target); NaN = undefined
    let table: Vec<(&str, Vec<(&'static str, f64)>, f64, f64, f64, f64, f64)> = vec![
        ("mse", vec![], inf, 1.0, inf, inf, -inf),
        ("mse", vec![], -inf, 1.0, inf, -inf, inf),
        ("mse", vec![], 1.0, -inf, inf, inf, -inf),
        ("mse", vec![], inf, -inf, inf, inf, -inf),
        ("mse", vec![], inf, inf, nan, nan, nan),
        ("mae", vec![], inf, 1.0, inf, 1.0, -1.0),
        ("mae", vec![], 1.0, inf, inf, -1.0, 1.0),
        ("mae", vec![], -inf, -inf, nan, nan, nan),
        ("huber", vec![("delta", 0.5)], inf, 3.0, inf, 0.5, -0.5),
        ("huber", vec![("delta", 0.5)], -inf, 3.0, inf, -0.5, 0.5),
        ("huber", vec![("delta", 0.5)], inf, inf, nan, nan, nan),
        // quantile: u = target − pred; l = max(τu, (τ−1)u); ∂/∂pred = 1 − τ if u < 0, −τ if u > 0
        ("quantile", vec![("tau", 0.25)], inf, 0.0, inf, 0.75, -0.75),
        ("quantile", vec![("tau", 0.25)], -inf, 0.0, inf, -0.25, 0.25),
        ("quantile", vec![("tau", 0.25)], 0.0, inf, inf, -0.25, 0.25),
        ("quantile", vec![("tau", 0.25)], -inf, -inf, nan, nan, nan),
        ("log_cosh", vec![], inf, 0.0, inf, 1.0, -1.0),
        ("log_cosh", vec![], 0.0, inf, inf, -1.0, 1.0),
        ("log_cosh", vec![], -inf, 5.0, inf, -1.0, 1.0),
        ("log_cosh", vec![], -inf, -inf, nan, nan, nan),
    ];
    for (loss, params, p, t, v, gp, gt) in table {
        for nan_input in [false, true] {
            let (p, t, v, gp, gt) = if nan_input {
                (nan, t, nan, nan, nan)
            } else {
                (p, t, v, gp, gt)
            };
            let s = Spec {
                loss,
                pred: vec![p, 1.0],
                target: vec![t, 0.5],
                reduction: Some(Reduction::None),
                params: params.clone(),
                ..Spec::default()
            };
            let out = evaluate(&build(&s)).unwrap();
            let what = format!("{loss}({p}, {t})");
            for (e, want, part) in [
                (&out.value[0], v, "value"),
                (&out.grads["pred"][0], gp, "grad pred"),
                (&out.grads["target"][0], gt, "grad target"),
            ] {
                if want.is_nan() {
                    assert_nan(e, &format!("{what} {part}"));
                } else {
                    assert_value(e, want, &format!("{what} {part}"));
                    assert!(
                        e.enclosure.is_point(),
                        "{what} {part}: a limit at inf is exact"
                    );
                }
            }
            // the finite element next to it is untouched (termwise)
            assert!(out.value[1].rounded.is_finite() && out.grads["pred"][1].rounded.is_finite());
        }
    }
}

#[test]
fn reduced_infinite_and_nan_terms() {
    // mean with an inf term is inf, with a NaN term NaN; the other gradients stay exact
    for (bad, want) in [(f64::INFINITY, f64::INFINITY), (f64::NAN, f64::NAN)] {
        let s = Spec {
            loss: "mse",
            pred: vec![bad, 3.0, 0.5],
            target: vec![0.0, 1.0, 1.0],
            weight: Some(vec![1.0, 2.0, 4.0]),
            reduction: Some(Reduction::Mean),
            ..Spec::default()
        };
        let out = evaluate(&build(&s)).unwrap();
        if want.is_nan() {
            assert_nan(&out.value[0], "mean with a NaN term");
            assert_nan(&out.grads["pred"][0], "grad of the NaN term");
        } else {
            assert_value(&out.value[0], want, "mean with an inf term");
            assert_value(&out.grads["pred"][0], f64::INFINITY, "grad of the inf term");
        }
        // D = 7: grad pred[1] = 2·2·(3 − 1)/7 = 8/7, pred[2] = 4·2·(0.5 − 1)/7 = −4/7
        assert_exact_rational(
            &out.grads["pred"][1],
            &Rational::from((8, 7)),
            "termwise grad 1",
        );
        assert_exact_rational(
            &out.grads["pred"][2],
            &Rational::from((-4, 7)),
            "termwise grad 2",
        );
        assert_exact_rational(
            &out.grads["target"][2],
            &Rational::from((4, 7)),
            "termwise grad target 2",
        );
    }
    // a zero cotangent against an infinite local derivative: the zero factor wins (the limit
    // of 0·2(p − t) as p → inf is 0; docs/policies/zero-times-inf.md)
    let s = Spec {
        loss: "mse",
        pred: vec![f64::INFINITY, 2.0],
        target: vec![0.0, 0.0],
        cot: Some(vec![0.0]),
        reduction: Some(Reduction::Sum),
        ..Spec::default()
    };
    let out = evaluate(&build(&s)).unwrap();
    assert_value(&out.value[0], f64::INFINITY, "sum with an inf term");
    assert_exact_zero(
        &out.grads["pred"][0],
        "zero cotangent times an infinite derivative",
    );
    assert_exact_zero(&out.grads["pred"][1], "zero cotangent, finite term");
    // an infinite cotangent
    let s = Spec {
        loss: "mae",
        pred: vec![1.0, 2.0],
        target: vec![0.0, 2.0],
        cot: Some(vec![f64::NEG_INFINITY]),
        reduction: Some(Reduction::Sum),
        ..Spec::default()
    };
    let out = evaluate(&build(&s)).unwrap();
    assert_value(&out.grads["pred"][0], f64::NEG_INFINITY, "−inf cotangent");
    // at the kink the selection 0 meets the infinite cotangent: the exact zero wins (the
    // limit of 0·c as c → inf is 0; docs/policies/zero-times-inf.md)
    assert_exact_zero(
        &out.grads["pred"][1],
        "kink selection 0 times an infinite cotangent",
    );
}

#[test]
fn finite_results_overflowing_the_dtype_round_to_inf() {
    // (300 − (−300))² = 360000 > f16 max: exact finite, rounded inf; an f32 output holds it.
    for (out_dtype, want) in [(None, f64::INFINITY), (Some(Dtype::F32), 360000.0)] {
        let s = Spec {
            loss: "mse",
            dtype: Some(Dtype::F16),
            out_dtype,
            pred: vec![300.0],
            target: vec![-300.0],
            reduction: Some(Reduction::Sum),
            ..Spec::default()
        };
        let out = evaluate(&build(&s)).unwrap();
        assert_value(&out.value[0], want, "mse overflow");
        assert!(out.value[0].enclosure.is_finite());
        // the gradient 2·600 = 1200 is an f16 value
        assert_value(&out.grads["pred"][0], 1200.0, "mse grad");
    }
}

#[test]
fn autocast_value_is_decided_in_f32() {
    // mean of (1/3)-ish values: decided in f32 for an f16 case with out_dtype f32
    let s = Spec {
        loss: "mae",
        dtype: Some(Dtype::F16),
        out_dtype: Some(Dtype::F32),
        pred: vec![1.0, 0.0, 0.0],
        target: vec![0.0, 0.0, 0.0],
        ..Spec::default()
    };
    let out = check_against_rational(&s, "autocast");
    assert_eq!(out.value[0].dtype, Dtype::F32);
    assert_value(&out.value[0], (1.0f32 / 3.0) as f64, "1/3 in f32");
    assert_eq!(out.grads["pred"][0].dtype, Dtype::F16);
    let (lo, hi) = out.value[0].enclosure.to_decimal_strings();
    assert!(
        lo.starts_with("3.33333333333333333") && hi.starts_with("3.33333333333333333"),
        "{lo} {hi}"
    );
    assert!(lo.ends_with("e-1") && hi.ends_with("e-1"), "{lo} {hi}");
}

#[test]
fn a_case_needing_more_than_the_starting_precision() {
    // sum of |r| = (1 + 2^-24) + 2^-149: 1 + 2^-24 is the midpoint of 1 and 1 + 2^-23 in f32;
    // the tiny second term breaks the tie upward, but only 150 bits see it.
    let s = Spec {
        loss: "mae",
        pred: vec![1.0, 2f64.powi(-149)],
        target: vec![-2f64.powi(-24), 0.0],
        reduction: Some(Reduction::Sum),
        grad: Some(vec![]),
        ..Spec::default()
    };
    let case = build(&s);
    // at the starting precision the enclosure straddles the midpoint: undecided
    let checked = losscheck_core::validate(&case).unwrap();
    let raw = losscheck_oracles::eval_raw(
        &case,
        &checked,
        &losscheck_oracles::point_inputs(&case, START_PREC),
        START_PREC,
    )
    .unwrap();
    assert!(
        matches!(
            round_enclosure(&raw.value[0], Dtype::F32),
            Decided::Two(_, _)
        ),
        "{:?}",
        raw.value[0]
    );
    let out = check_against_rational(&s, "needs 150 bits");
    assert!(
        out.precision > START_PREC && out.precision >= 150,
        "decided at {} bits",
        out.precision
    );
    assert_value(&out.value[0], 1.0 + 2f64.powi(-23), "tie broken upward");
    // without the tiny term the exact midpoint is a point and ties to even at 64 bits
    let s2 = Spec {
        pred: vec![1.0, 0.0],
        target: vec![-2f64.powi(-24), 0.0],
        ..s
    };
    let out = check_against_rational(&s2, "exact tie");
    assert_eq!(out.precision, START_PREC);
    assert_value(&out.value[0], 1.0, "exact midpoint ties to even");
}

#[test]
fn params_are_used_exactly() {
    // delta = 0.1 (the binary64 nearest 0.1) and r = 0.1f32 > delta: the linear branch, exactly
    let r = 0.1f32 as f64; // 0.100000001490116…
    let s = Spec {
        loss: "huber",
        pred: vec![r],
        target: vec![0.0],
        reduction: Some(Reduction::Sum),
        params: vec![("delta", 0.1)],
        ..Spec::default()
    };
    let out = check_against_rational(&s, "huber delta 0.1");
    // the gradient is delta itself (linear branch), rounded to f32
    assert_value(&out.grads["pred"][0], 0.1f32 as f64, "clamp at delta");
    // tau tiny: 1 − τ is not exact at the working precision, still decided
    let s = Spec {
        loss: "quantile",
        pred: vec![2.0],
        target: vec![1.0],
        reduction: Some(Reduction::Sum),
        params: vec![("tau", 2f64.powi(-1000))],
        ..Spec::default()
    };
    let out = check_against_rational(&s, "quantile tau 2^-1000");
    assert_value(&out.grads["pred"][0], 1.0, "1 − 2^-1000 rounds to 1");
}

#[test]
fn invalid_cases_are_errors_not_panics() {
    let s = Spec {
        loss: "huber",
        pred: vec![1.0],
        target: vec![0.0],
        params: vec![("delta", -1.0)],
        ..Spec::default()
    };
    assert!(evaluate(&build(&s)).is_err());
    let s = Spec {
        loss: "quantile",
        pred: vec![1.0],
        target: vec![0.0],
        params: vec![("tau", 1.0)],
        ..Spec::default()
    };
    assert!(evaluate(&build(&s)).is_err());
    let s = Spec {
        loss: "mse",
        pred: vec![1.0],
        target: vec![0.0],
        weight: Some(vec![-1.0]),
        ..Spec::default()
    };
    assert!(evaluate(&build(&s)).is_err());
    let mut c = build(&Spec {
        loss: "mse",
        pred: vec![1.0, 2.0],
        target: vec![0.0, 0.0],
        ..Spec::default()
    });
    c.inputs.insert(
        "target".into(),
        Tensor::float(Dtype::F32, vec![1], vec![0.0]),
    );
    assert!(evaluate(&c).is_err());
}
