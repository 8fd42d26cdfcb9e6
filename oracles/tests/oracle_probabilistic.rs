//! The row-wise probabilistic oracles (`kl_div`, `distill_kl`, `neg_elbo`, `brier`): hand facts,
//! the gradients against high-precision finite differences, and the values against the naive
//! textbook formulas evaluated independently at 2000 bits (plain MPFR, no interval code).

use losscheck_core::rng::SplitMix64;
use losscheck_core::{Case, Dtype, ParamValue, Tensor};
use losscheck_oracles::evaluate;
use losscheck_oracles::fd::check_gradients;
use rug::ops::Pow;
use rug::Float;

fn case(loss: &str, d: Dtype, reduction: &str, params: &[(&str, ParamValue)]) -> Case {
    let mut c = Case::new(loss, d).unwrap();
    c.params
        .insert("reduction".into(), ParamValue::Str(reduction.into()));
    for (k, v) in params {
        c.params.insert(k.to_string(), v.clone());
    }
    c.grad = c.spec().grads.iter().map(|s| s.to_string()).collect();
    c
}

fn put(c: &mut Case, name: &str, shape: &[usize], v: Vec<f64>) {
    let d = c.dtype;
    c.inputs
        .insert(name.into(), Tensor::float(d, shape.to_vec(), v));
}

fn value(c: &Case) -> Vec<f64> {
    evaluate(c)
        .unwrap()
        .value
        .iter()
        .map(|e| e.rounded)
        .collect()
}

fn grad(c: &Case, name: &str) -> Vec<f64> {
    evaluate(c).unwrap().grads[name]
        .iter()
        .map(|e| e.rounded)
        .collect()
}

const INF: f64 = f64::INFINITY;

#[test]
fn kl_div_hand_facts() {
    // p = [½, ½], log q = [0, 0]: Σ ½·ln ½ = −ln 2; ∂/∂lq = −p
    let mut c = case("kl_div", Dtype::F32, "sum", &[]);
    put(&mut c, "input", &[1, 2], vec![0.0, 0.0]);
    put(&mut c, "target", &[1, 2], vec![0.5, 0.5]);
    assert_eq!(value(&c), vec![-std::f32::consts::LN_2 as f64]);
    assert_eq!(grad(&c, "input"), vec![-0.5, -0.5]);
    // 0·log 0 = 0 also where log q = −inf (and +inf, NaN): the term is absent
    put(&mut c, "input", &[1, 3], vec![0.0, -INF, f64::NAN]);
    put(&mut c, "target", &[1, 3], vec![1.0, 0.0, 0.0]);
    assert_eq!(value(&c), vec![0.0]);
    assert_eq!(grad(&c, "input"), vec![-1.0, 0.0, 0.0]);
    // p > 0 at log q = −inf: +inf; a NaN log q at p > 0 propagates
    put(&mut c, "target", &[1, 3], vec![0.5, 0.5, 0.0]);
    assert_eq!(value(&c), vec![INF]);
    put(&mut c, "input", &[1, 3], vec![0.0, f64::NAN, -INF]);
    assert!(value(&c)[0].is_nan());
    // log_target: target = input gives exactly 0; −inf targets are absent
    let mut c = case(
        "kl_div",
        Dtype::Bf16,
        "none",
        &[("log_target", ParamValue::Bool(true))],
    );
    put(&mut c, "input", &[2, 2], vec![-0.5, -3.0, -INF, -1.0]);
    put(&mut c, "target", &[2, 2], vec![-0.5, -3.0, -INF, -1.0]);
    assert_eq!(value(&c), vec![0.0, 0.0]);
    // batchmean: Σ / N (rows)
    let mut c = case("kl_div", Dtype::F32, "mean", &[]);
    put(&mut c, "input", &[2, 1], vec![-1.0, -3.0]);
    put(&mut c, "target", &[2, 1], vec![1.0, 1.0]);
    assert_eq!(value(&c), vec![2.0]);
    assert_eq!(grad(&c, "input"), vec![-0.5, -0.5]);
}

#[test]
fn distill_kl_hand_facts() {
    for dir in ["forward", "reverse"] {
        let p = [
            ("temperature", ParamValue::Float(0.07f32 as f64)),
            ("direction", ParamValue::Str(dir.into())),
        ];
        // student = teacher (+ a constant): exactly 0, value and gradient
        let mut c = case("distill_kl", Dtype::F32, "none", &p);
        put(
            &mut c,
            "student",
            &[2, 3],
            vec![1.0, -2.0, 0.5, 11.0, 8.0, 10.5],
        );
        put(
            &mut c,
            "teacher",
            &[2, 3],
            vec![1.0, -2.0, 0.5, 1.0, -2.0, 0.5],
        );
        assert_eq!(value(&c), vec![0.0, 0.0], "{dir}");
        assert_eq!(grad(&c, "student"), vec![0.0; 6], "{dir}");
        // a −inf entry in both at the same class: still 0
        put(&mut c, "student", &[1, 2], vec![-INF, 3.0]);
        put(&mut c, "teacher", &[1, 2], vec![-INF, 3.0]);
        assert_eq!(value(&c), vec![0.0]);
        // mass where the other has none: +inf
        put(&mut c, "student", &[1, 2], vec![-INF, 3.0]);
        put(&mut c, "teacher", &[1, 2], vec![0.0, 3.0]);
        // forward: +inf; reverse: Q one-hot at 1, T²·(−ln P_1) = T²·log1p(e^{−3/T})
        let v = value(&c)[0];
        if dir == "forward" {
            assert_eq!(v, INF);
        } else {
            let tau = 0.07f32 as f64;
            let want = tau * tau * (-3.0 / tau).exp().ln_1p();
            assert!((v / want - 1.0).abs() < 1e-6, "{v:e} vs {want:e}");
        }
        // two +inf in a row: NaN
        put(&mut c, "teacher", &[1, 2], vec![INF, INF]);
        assert!(value(&c)[0].is_nan());
    }
    // T = 1, C = 2, teacher [0, 0] (P = ½, ½), student [0, ln 3 ≈ f32]: forward gradient Q − P
    let mut c = case(
        "distill_kl",
        Dtype::F32,
        "sum",
        &[("temperature", ParamValue::Float(1.0))],
    );
    put(&mut c, "student", &[1, 2], vec![0.0, 0.0]);
    put(&mut c, "teacher", &[1, 2], vec![INF, 0.0]);
    // P one-hot at 0: KL = −ln Q_0 = ln 2; ∂ = Q − P = [−½, ½]
    assert_eq!(value(&c), vec![std::f32::consts::LN_2 as f64]);
    assert_eq!(grad(&c, "student"), vec![-0.5, 0.5]);
}

#[test]
fn brier_and_neg_elbo_hand_facts() {
    let mut c = case("brier", Dtype::F16, "sum", &[]);
    put(&mut c, "prob", &[1, 2], vec![0.25, 0.75]);
    c.inputs
        .insert("target".into(), Tensor::int(vec![1], vec![1]));
    assert_eq!(value(&c), vec![0.125]);
    assert_eq!(grad(&c, "prob"), vec![0.5, -0.5]);

    let mut c = case(
        "neg_elbo",
        Dtype::F32,
        "sum",
        &[("beta", ParamValue::Float(1.0))],
    );
    put(&mut c, "x", &[1, 1], vec![1.0]);
    put(&mut c, "recon_logits", &[1, 1], vec![0.0]);
    put(&mut c, "mu", &[1, 1], vec![0.0]);
    put(&mut c, "logvar", &[1, 1], vec![0.0]);
    assert_eq!(value(&c), vec![std::f32::consts::LN_2 as f64]);
    assert_eq!(grad(&c, "recon_logits"), vec![-0.5]);
    assert_eq!(grad(&c, "logvar"), vec![0.0]);
    // tiny logvar: ½·(expm1(lv) − lv) ≈ lv²/4 = 2.5e−41 (not 0), ∂/∂lv ≈ lv/2
    let lv = 1e-20f32 as f64;
    put(&mut c, "x", &[1, 0], vec![]);
    put(&mut c, "recon_logits", &[1, 0], vec![]);
    put(&mut c, "logvar", &[1, 1], vec![lv]);
    let v = value(&c)[0];
    assert_eq!(v, Dtype::F32.round(lv * lv / 4.0), "{v:e}");
    assert_eq!(grad(&c, "logvar"), vec![Dtype::F32.round(lv / 2.0)]);
    // β = 0 removes the KL term even at lv = +inf; x = 1, z = +inf: 0
    c.params.insert("beta".into(), ParamValue::Float(0.0));
    put(&mut c, "x", &[1, 1], vec![1.0]);
    put(&mut c, "recon_logits", &[1, 1], vec![INF]);
    put(&mut c, "logvar", &[1, 1], vec![INF]);
    assert_eq!(value(&c), vec![0.0]);
    assert_eq!(grad(&c, "logvar"), vec![0.0]);
    assert_eq!(grad(&c, "recon_logits"), vec![0.0]);
}

// ---------------------------------------------------------------------------------------------
// Random cases: finite differences and the naive formula at 2000 bits.

fn pick<T: Copy>(r: &mut SplitMix64, v: &[T]) -> T {
    v[r.below(v.len() as u64) as usize]
}

fn random_case(r: &mut SplitMix64, loss: &str) -> Case {
    let d = pick(r, &Dtype::ALL);
    let n = 1 + r.below(3) as usize;
    let c = 1 + r.below(4) as usize;
    let red = pick(r, &["none", "sum", "mean"]);
    let mut x = case(loss, d, red, &[]);
    let normal = |r: &mut SplitMix64, s: f64| d.round(r.signed_unit() * s);
    match loss {
        "kl_div" => {
            let lt = r.below(2) == 0;
            x.params.insert("log_target".into(), ParamValue::Bool(lt));
            let t: Vec<f64> = (0..n * c)
                .map(|_| {
                    let p = d.round(r.next_f64());
                    if lt {
                        d.round(p.max(1e-3).ln())
                    } else {
                        p
                    }
                })
                .collect();
            let q = (0..n * c).map(|_| normal(r, 4.0)).collect();
            put(&mut x, "input", &[n, c], q);
            put(&mut x, "target", &[n, c], t);
        }
        "distill_kl" => {
            let tau = pick(r, &[1.0, 0.5, 2.0, 0.07f32 as f64, 10.0]);
            x.params
                .insert("temperature".into(), ParamValue::Float(tau));
            let dir = pick(r, &["forward", "reverse"]);
            x.params
                .insert("direction".into(), ParamValue::Str(dir.into()));
            let t: Vec<f64> = (0..n * c).map(|_| normal(r, 3.0)).collect();
            let s = (0..n * c).map(|_| normal(r, 3.0)).collect();
            put(&mut x, "student", &[n, c], s);
            put(&mut x, "teacher", &[n, c], t);
        }
        "neg_elbo" => {
            let k = r.below(3) as usize;
            x.params.insert(
                "beta".into(),
                ParamValue::Float(pick(r, &[0.0, 1.0, 0.5, 4.0])),
            );
            let xs = (0..n * c).map(|_| d.round(r.next_f64())).collect();
            let zs = (0..n * c).map(|_| normal(r, 5.0)).collect();
            let mu = (0..n * k).map(|_| normal(r, 2.0)).collect();
            let lv = (0..n * k).map(|_| normal(r, 3.0)).collect();
            put(&mut x, "x", &[n, c], xs);
            put(&mut x, "recon_logits", &[n, c], zs);
            put(&mut x, "mu", &[n, k], mu);
            put(&mut x, "logvar", &[n, k], lv);
        }
        _ => {
            let p = (0..n * c).map(|_| d.round(r.next_f64())).collect();
            put(&mut x, "prob", &[n, c], p);
            let y = (0..n).map(|_| r.below(c as u64) as i64).collect();
            x.inputs.insert("target".into(), Tensor::int(vec![n], y));
        }
    }
    if r.below(4) == 0 {
        let w = (0..n).map(|_| d.round(r.next_f64() * 3.0)).collect();
        put(&mut x, "weight", &[n], w);
    }
    x
}

const LOSSES: [&str; 4] = ["kl_div", "distill_kl", "neg_elbo", "brier"];

#[test]
fn gradients_agree_with_finite_differences() {
    let mut r = SplitMix64::new(0x0dd5_4001);
    for loss in LOSSES {
        let mut compared = 0;
        for k in 0..120 {
            let c = random_case(&mut r, loss);
            let rep = check_gradients(&c, 3, k).unwrap_or_else(|e| panic!("{loss} {k}: {e}"));
            assert!(
                rep.max_rel < 2f64.powi(-40),
                "{loss} case {k}: {:e}: {}\n{}",
                rep.max_rel,
                rep.worst,
                c.to_json()
            );
            compared += usize::from(rep.comparisons > 0);
        }
        assert!(compared > 60, "{loss}: only {compared} cases compared");
    }
}

const P: u32 = 2000;

fn f(x: f64) -> Float {
    Float::with_val(P, x)
}

/// The row values of a case (reduction none, no weight) by the textbook formula at 2000 bits.
fn naive_rows(c: &Case) -> Vec<Float> {
    let g = |name: &str| c.inputs[name].f().unwrap().to_vec();
    let shape = |name: &str| c.inputs[name].shape.clone();
    let softmax = |z: &[f64], tau: f64| -> Vec<Float> {
        let e: Vec<Float> = z.iter().map(|&x| (f(x) / f(tau)).exp()).collect();
        let s = e.iter().fold(Float::new(P), |a, b| a + b);
        e.into_iter().map(|x| x / &s).collect()
    };
    match c.loss.as_str() {
        "kl_div" => {
            let (q, t) = (g("input"), g("target"));
            let w = shape("input")[1];
            let lt = matches!(c.params.get("log_target"), Some(ParamValue::Bool(true)));
            q.chunks(w)
                .zip(t.chunks(w))
                .map(|(q, t)| {
                    let mut s = Float::new(P);
                    for (&q, &t) in q.iter().zip(t) {
                        let (p, lp) = if lt {
                            (f(t).exp(), f(t))
                        } else {
                            (f(t), f(t).ln())
                        };
                        if p != 0 {
                            s += p * (lp - f(q));
                        }
                    }
                    s
                })
                .collect()
        }
        "distill_kl" => {
            let (s, t) = (g("student"), g("teacher"));
            let w = shape("student")[1];
            let tau = c.float_param("temperature").unwrap();
            let rev =
                matches!(c.params.get("direction"), Some(ParamValue::Str(d)) if d == "reverse");
            s.chunks(w)
                .zip(t.chunks(w))
                .map(|(s, t)| {
                    let (q, p) = (softmax(s, tau), softmax(t, tau));
                    let (a, b) = if rev { (q, p) } else { (p, q) };
                    let mut kl = Float::new(P);
                    for (a, b) in a.iter().zip(&b) {
                        kl += Float::with_val(P, a * Float::with_val(P, a / b).ln());
                    }
                    kl * f(tau).pow(2)
                })
                .collect()
        }
        "neg_elbo" => {
            let (x, z, mu, lv) = (g("x"), g("recon_logits"), g("mu"), g("logvar"));
            let (d, k) = (shape("x")[1], shape("mu")[1]);
            let beta = c.float_param("beta").unwrap();
            (0..shape("x")[0])
                .map(|i| {
                    let mut s = Float::new(P);
                    for j in 0..d {
                        let sg = Float::with_val(P, 1)
                            / (Float::with_val(P, 1) + (-f(z[i * d + j])).exp());
                        let (xv, one) = (f(x[i * d + j]), Float::with_val(P, 1));
                        // −x·ln σ − (1 − x)·ln(1 − σ)
                        s -= Float::with_val(P, &xv * Float::with_val(P, sg.ln_ref()));
                        s -= (one.clone() - &xv) * (one - &sg).ln();
                    }
                    for j in 0..k {
                        let (m, v) = (f(mu[i * k + j]), f(lv[i * k + j]));
                        let t = Float::with_val(P, &m * &m) + v.clone().exp() - 1 - v;
                        s += t * f(beta) / 2;
                    }
                    s
                })
                .collect()
        }
        _ => {
            let p = g("prob");
            let w = shape("prob")[1];
            let y = c.inputs["target"].i().unwrap().to_vec();
            p.chunks(w)
                .enumerate()
                .map(|(i, row)| {
                    let mut s = Float::new(P);
                    for (j, &x) in row.iter().enumerate() {
                        let r = f(x) - if y[i] == j as i64 { 1 } else { 0 };
                        s += Float::with_val(P, &r * &r);
                    }
                    s
                })
                .collect()
        }
    }
}

#[test]
fn values_agree_with_the_naive_formula_at_2000_bits() {
    let mut r = SplitMix64::new(0x0dd5_4002);
    for loss in LOSSES {
        for k in 0..200 {
            let mut c = random_case(&mut r, loss);
            c.params
                .insert("reduction".into(), ParamValue::Str("none".into()));
            c.inputs.remove("weight");
            let out = evaluate(&c).unwrap();
            for (i, (e, nv)) in out.value.iter().zip(naive_rows(&c)).enumerate() {
                // the naive value lies in the oracle's enclosure (up to the naive formula's own
                // 2000-bit rounding, far below it)
                let slack = Float::with_val(
                    P,
                    nv.clone().abs() * Float::with_val(P, Float::i_exp(1, -1900)),
                ) + Float::with_val(P, Float::i_exp(1, -1900));
                let lo = Float::with_val(P, &e.enclosure.lo) - &slack;
                let hi = Float::with_val(P, &e.enclosure.hi) + &slack;
                assert!(
                    lo <= nv && nv <= hi,
                    "{loss} case {k} row {i}: naive {} outside [{}, {}]\n{}",
                    nv.to_f64(),
                    e.enclosure.lo.to_f64(),
                    e.enclosure.hi.to_f64(),
                    c.to_json()
                );
            }
        }
    }
}
