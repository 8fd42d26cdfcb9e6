//! The oracles of `contrastive`, `triplet` and `info_nce` against independent references:
//!
//! - hand-derived facts (a 3-4-5 triplet, identical points, the kinks, a zero embedding,
//!   orthogonal info_nce rows, masks that remove a query and its key, the CLIP form);
//! - the straightforward formulas at 2000 bits (√ of Σ of squares, e^{s/τ} without a shift,
//!   x/max(‖x‖, eps) by plain division) for `none` on random cases: every exact value must lie
//!   in the oracle's enclosure;
//! - the finite-difference cross-check of every gradient (`fd::check_gradients`) on random
//!   cases of every loss, reduction, weight and mask.

use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use losscheck_oracles::evaluate;
use losscheck_oracles::fd::check_gradients;
use rug::Float;

const REF: u32 = 2000;

struct Rng(losscheck_core::rng::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(losscheck_core::rng::SplitMix64::new(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }
    /// A typical f32 value (a few significant bits, sometimes 0).
    fn val(&mut self) -> f64 {
        if self.below(8) == 0 {
            return 0.0;
        }
        let x = (self.unit() * 2.0 - 1.0) * 4.0;
        Dtype::F32.round(x)
    }
}

fn emb(case: &mut Case, name: &str, n: usize, d: usize, data: Vec<f64>) {
    assert_eq!(data.len(), n * d);
    case.inputs
        .insert(name.into(), Tensor::float(case.dtype, vec![n, d], data));
}

fn triplet_case(a: &[f64], p: &[f64], ng: &[f64], d: usize, m: f64, eps: f64) -> Case {
    let n = a.len() / d.max(1);
    let mut c = Case::new("triplet", Dtype::F32).unwrap();
    c.set_reduction(Reduction::None);
    emb(&mut c, "anchor", n, d, a.to_vec());
    emb(&mut c, "positive", n, d, p.to_vec());
    emb(&mut c, "negative", n, d, ng.to_vec());
    c.params.insert("margin".into(), ParamValue::Float(m));
    c.params.insert("eps".into(), ParamValue::Float(eps));
    c.grad = vec!["anchor".into(), "positive".into(), "negative".into()];
    c
}

fn grad(o: &losscheck_oracles::OracleOutput, name: &str) -> Vec<f64> {
    o.grads[name].iter().map(|e| e.rounded).collect()
}

#[test]
fn triplet_hand_facts() {
    // a = (0,0), p = (3,4), n = (0,1), m = 1: l = 5 − 1 + 1 = 5
    let c = triplet_case(&[0.0, 0.0], &[3.0, 4.0], &[0.0, 1.0], 2, 1.0, 0.0);
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 5.0);
    assert_eq!(grad(&o, "positive"), vec![0.6f32 as f64, 0.8f32 as f64]);
    assert_eq!(grad(&o, "negative"), vec![0.0, -1.0]);
    // ∂/∂a = u/dp − v/dn = (−0.6, −0.8) − (0, −1) = (−0.6, 0.2)
    assert_eq!(grad(&o, "anchor"), vec![-0.6f32 as f64, 0.2f32 as f64]);
    // identical anchor and positive: ‖·‖ at 0 takes 0, no NaN; l = 0 − 1 + 2 = 1
    let c = triplet_case(&[1.0, 2.0], &[1.0, 2.0], &[1.0, 3.0], 2, 2.0, 0.0);
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 1.0);
    assert_eq!(grad(&o, "positive"), vec![0.0, 0.0]);
    assert_eq!(grad(&o, "anchor"), vec![0.0, 1.0]);
    assert!(o.kinks.is_empty());
    // eps is added to every coordinate: d(a, a) = eps·√D; a = p = 0, n = 0 too: z = m
    let c = triplet_case(&[0.0; 4], &[0.0; 4], &[0.0; 4], 4, 0.5, 0.25);
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 0.5);
    // the kink z = 0: |u| = 5, |v| = 13, m = 8
    let c = triplet_case(&[0.0, 0.0], &[3.0, 4.0], &[5.0, 12.0], 2, 8.0, 0.0);
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 0.0);
    assert_eq!(grad(&o, "anchor"), vec![0.0, 0.0]);
    assert_eq!(o.kinks.len(), 1);
    assert_eq!(o.kinks[0].members.len(), 6);
    // the other end of the segment is the active gradient: ∂/∂p = −u/dp = (0.6, 0.8)
    let m = o.kinks[0]
        .members
        .iter()
        .find(|m| m.input == "positive" && m.index == 1)
        .unwrap();
    assert_eq!((m.lo.rounded, m.hi.rounded), (0.0, 0.8f32 as f64));
    // one ulp of margin away: no kink, the active branch
    let c = triplet_case(
        &[0.0, 0.0],
        &[3.0, 4.0],
        &[5.0, 12.0],
        2,
        8.0 + 2f64.powi(-40),
        0.0,
    );
    let o = evaluate(&c).unwrap();
    assert!(o.kinks.is_empty());
    assert_eq!(o.value[0].rounded, Dtype::F32.round(2f64.powi(-40)));
}

fn contrastive_case(x1: &[f64], x2: &[f64], y: &[i64], d: usize, m: f64) -> Case {
    let n = y.len();
    let mut c = Case::new("contrastive", Dtype::F32).unwrap();
    c.set_reduction(Reduction::None);
    emb(&mut c, "x1", n, d, x1.to_vec());
    emb(&mut c, "x2", n, d, x2.to_vec());
    c.inputs
        .insert("target".into(), Tensor::int(vec![n], y.to_vec()));
    c.params.insert("margin".into(), ParamValue::Float(m));
    c.grad = vec!["x1".into(), "x2".into()];
    c
}

#[test]
fn contrastive_hand_facts() {
    // y = 1: ‖(3,4)‖² = 25, ∂/∂x1 = 2w
    let c = contrastive_case(&[3.0, 4.0], &[0.0, 0.0], &[1], 2, 1.0);
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 25.0);
    assert_eq!(grad(&o, "x1"), vec![6.0, 8.0]);
    assert_eq!(grad(&o, "x2"), vec![-6.0, -8.0]);
    // y = 0, d = 5 < m = 7: (7 − 5)² = 4, ∂/∂x1 = −2·2·w/5
    let c = contrastive_case(&[3.0, 4.0], &[0.0, 0.0], &[0], 2, 7.0);
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 4.0);
    assert_eq!(grad(&o, "x1"), vec![Dtype::F32.round(-2.4), -3.2f32 as f64]);
    // y = 0 at d = m exactly: 0, smooth (no kink group); d > m: 0
    for m in [5.0, 4.0] {
        let o = evaluate(&contrastive_case(&[3.0, 4.0], &[0.0, 0.0], &[0], 2, m)).unwrap();
        assert_eq!(o.value[0].rounded, 0.0);
        assert_eq!(grad(&o, "x1"), vec![0.0, 0.0]);
        assert!(o.kinks.is_empty());
    }
    // identical dissimilar points: value m², gradient 0 (‖·‖ at 0), not NaN
    let o = evaluate(&contrastive_case(&[1.5, -2.0], &[1.5, -2.0], &[0], 2, 3.0)).unwrap();
    assert_eq!(o.value[0].rounded, 9.0);
    assert_eq!(grad(&o, "x1"), vec![0.0, 0.0]);
    // y = 1 with a NaN component: value NaN, the other components' gradient 2w
    let o = evaluate(&contrastive_case(
        &[f64::NAN, 1.0],
        &[0.0, 0.0],
        &[1],
        2,
        1.0,
    ))
    .unwrap();
    assert!(o.value[0].is_nan());
    assert!(o.grads["x1"][0].is_nan());
    assert_eq!(o.grads["x1"][1].rounded, 2.0);
}

fn nce_case(q: &[f64], k: &[f64], d: usize, tau: f64, normalize: bool, sym: bool) -> Case {
    let n = q.len() / d.max(1);
    let mut c = Case::new("info_nce", Dtype::F32).unwrap();
    c.set_reduction(Reduction::None);
    emb(&mut c, "query", n, d, q.to_vec());
    emb(&mut c, "key", n, d, k.to_vec());
    c.params
        .insert("temperature".into(), ParamValue::Float(tau));
    c.params
        .insert("normalize".into(), ParamValue::Bool(normalize));
    c.params.insert("symmetric".into(), ParamValue::Bool(sym));
    c.grad = vec!["query".into(), "key".into()];
    c
}

#[test]
fn info_nce_hand_facts() {
    // q = k = (e1, e2), τ = 1: s = I, l_i = ln(1 + e^−1) = 0.31326168751822286
    let c = nce_case(
        &[1.0, 0.0, 0.0, 1.0],
        &[1.0, 0.0, 0.0, 1.0],
        2,
        1.0,
        true,
        false,
    );
    let o = evaluate(&c).unwrap();
    let want = Dtype::F32.round(0.313_261_687_518_222_86);
    assert_eq!(o.value[0].rounded, want);
    assert_eq!(o.value[1].rounded, want);
    // scaling an embedding (normalize on) changes nothing; the same with symmetric: equal
    let c2 = nce_case(
        &[4.0, 0.0, 0.0, 0.5],
        &[1.0, 0.0, 0.0, 8.0],
        2,
        1.0,
        true,
        true,
    );
    let o2 = evaluate(&c2).unwrap();
    assert_eq!(o2.value[0].rounded, want);
    // a zero embedding is defined: q̂ = 0, s_0j = 0, l_0 = ln 2
    let c = nce_case(
        &[0.0, 0.0, 0.0, 1.0],
        &[1.0, 0.0, 0.0, 1.0],
        2,
        1.0,
        true,
        false,
    );
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, Dtype::F32.round(std::f64::consts::LN_2));
    assert!(o.grads["query"].iter().all(|g| !g.is_nan()));
    // mask 0 on row 1 removes query 1 and key 1: row 0 alone, l_0 = 0
    let mut c = nce_case(
        &[1.0, 0.0, 0.0, 1.0],
        &[1.0, 0.0, 0.0, 1.0],
        2,
        1.0,
        true,
        false,
    );
    c.inputs
        .insert("mask".into(), Tensor::int(vec![2], vec![1, 0]));
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, 0.0);
    assert_eq!(o.value[1].rounded, 0.0);
    assert!(o.grads["key"].iter().all(|g| g.rounded == 0.0));
    // weight 0 on row 1 is not a mask: row 0 keeps key 1 in its softmax
    let mut c = nce_case(
        &[1.0, 0.0, 0.0, 1.0],
        &[1.0, 0.0, 0.0, 1.0],
        2,
        1.0,
        true,
        false,
    );
    c.inputs.insert(
        "weight".into(),
        Tensor::float(Dtype::F32, vec![2], vec![1.0, 0.0]),
    );
    let o = evaluate(&c).unwrap();
    assert_eq!(o.value[0].rounded, want);
    assert_eq!(o.value[1].rounded, 0.0);
    // ‖q‖ = eps exactly: a kink group for the query's components
    let mut c = nce_case(
        &[0.375, 0.5, 0.0, 1.0],
        &[1.0, 0.0, 0.0, 1.0],
        2,
        0.5,
        true,
        false,
    );
    c.params.insert("eps".into(), ParamValue::Float(0.625));
    let o = evaluate(&c).unwrap();
    assert_eq!(o.kinks.len(), 1);
    assert_eq!(o.kinks[0].members.len(), 2);
}

// ---- the straightforward formulas at 2000 bits

fn f(x: f64) -> Float {
    Float::with_val(REF, x)
}

fn norm(v: &[f64]) -> Float {
    let mut s = f(0.0);
    for &x in v {
        s += f(x) * f(x);
    }
    s.sqrt()
}

fn assert_in(e: &losscheck_oracles::Exact, x: &Float, what: &str) {
    let tol = Float::with_val(
        REF,
        x.clone().abs() * Float::with_val(REF, Float::i_exp(1, -1900)),
    ) + Float::with_val(REF, Float::i_exp(1, -1900));
    let lo = Float::with_val(REF, &e.enclosure.lo - &tol);
    let hi = Float::with_val(REF, &e.enclosure.hi + &tol);
    assert!(
        lo <= *x && *x <= hi,
        "{what}: {} not in [{}, {}]",
        x.to_f64(),
        e.enclosure.lo.to_f64(),
        e.enclosure.hi.to_f64()
    );
}

#[test]
fn values_match_the_plain_formulas_at_2000_bits() {
    let mut rng = Rng::new(0xC0_4);
    for t in 0..150 {
        let n = 1 + rng.below(4) as usize;
        let d = 1 + rng.below(5) as usize;
        let a: Vec<f64> = (0..n * d).map(|_| rng.val()).collect();
        let p: Vec<f64> = (0..n * d).map(|_| rng.val()).collect();
        let ng: Vec<f64> = (0..n * d).map(|_| rng.val()).collect();
        let m = Dtype::F32.round(rng.unit() * 4.0 - 1.0);
        let eps = if rng.below(2) == 0 { 0.0 } else { 0.125 };
        // triplet
        let o = evaluate(&triplet_case(&a, &p, &ng, d, m, eps)).unwrap();
        for i in 0..n {
            let u: Vec<f64> = (0..d).map(|k| a[i * d + k] - p[i * d + k] + eps).collect();
            let v: Vec<f64> = (0..d).map(|k| a[i * d + k] - ng[i * d + k] + eps).collect();
            let z = norm(&u) - norm(&v) + f(m);
            let l = if z > 0 { z } else { f(0.0) };
            assert_in(&o.value[i], &l, &format!("triplet case {t} row {i}"));
        }
        // contrastive
        let y: Vec<i64> = (0..n).map(|_| rng.below(2) as i64).collect();
        let o = evaluate(&contrastive_case(&a, &p, &y, d, m.abs())).unwrap();
        for i in 0..n {
            let w: Vec<f64> = (0..d).map(|k| a[i * d + k] - p[i * d + k]).collect();
            let dd = norm(&w);
            let l = if y[i] == 1 {
                Float::with_val(REF, &dd * &dd)
            } else {
                let t = f(m.abs()) - dd;
                let t = if t > 0 { t } else { f(0.0) };
                Float::with_val(REF, &t * &t)
            };
            assert_in(&o.value[i], &l, &format!("contrastive case {t} row {i}"));
        }
        // info_nce, both forms
        let tau = [1.0, 0.5, 0.07f32 as f64, 2.0][rng.below(4) as usize];
        let eps_n = 1e-12;
        let normalize = rng.below(3) != 0;
        let sym = rng.below(2) == 0;
        let o = evaluate(&nce_case(&a, &p, d, tau, normalize, sym)).unwrap();
        let hat = |x: &[f64]| -> Vec<Float> {
            let nn = norm(x);
            let nu = if normalize {
                if nn > eps_n {
                    nn
                } else {
                    f(eps_n)
                }
            } else {
                f(1.0)
            };
            x.iter()
                .map(|&c| Float::with_val(REF, f(c) / &nu))
                .collect()
        };
        let qh: Vec<Vec<Float>> = (0..n).map(|i| hat(&a[i * d..(i + 1) * d])).collect();
        let kh: Vec<Vec<Float>> = (0..n).map(|i| hat(&p[i * d..(i + 1) * d])).collect();
        let s = |i: usize, j: usize| -> Float {
            let mut acc = f(0.0);
            for c in 0..d {
                acc += Float::with_val(REF, &qh[i][c] * &kh[j][c]);
            }
            acc / f(tau)
        };
        for i in 0..n {
            let mut row = f(0.0);
            let mut col = f(0.0);
            for j in 0..n {
                row += s(i, j).exp();
                col += s(j, i).exp();
            }
            let r = row.ln() - s(i, i);
            let l = if sym {
                (r + (col.ln() - s(i, i))) / f(2.0)
            } else {
                r
            };
            assert_in(&o.value[i], &l, &format!("info_nce case {t} row {i}"));
        }
    }
}

// ---- finite differences

const FD_TOL: f64 = 1.0 / (1u64 << 40) as f64;

fn random_policy(rng: &mut Rng, c: &mut Case, n: usize) {
    c.set_reduction([Reduction::None, Reduction::Sum, Reduction::Mean][rng.below(3) as usize]);
    if rng.below(3) == 0 {
        let w: Vec<f64> = (0..n).map(|_| Dtype::F32.round(rng.unit() * 2.0)).collect();
        c.inputs
            .insert("weight".into(), Tensor::float(Dtype::F32, vec![n], w));
    }
    if rng.below(3) == 0 {
        let m: Vec<i64> = (0..n).map(|_| (rng.below(4) != 0) as i64).collect();
        c.inputs.insert("mask".into(), Tensor::int(vec![n], m));
    }
}

#[test]
fn gradients_agree_with_finite_differences() {
    let mut rng = Rng::new(0xFD_C04);
    for loss in ["triplet", "contrastive", "info_nce"] {
        let mut compared = 0;
        for k in 0..120 {
            let n = 1 + rng.below(4) as usize;
            let d = 1 + rng.below(4) as usize;
            let mut x = || -> Vec<f64> { (0..n * d).map(|_| rng.val()).collect() };
            let (a, b, c3) = (x(), x(), x());
            let mut case = match loss {
                "triplet" => triplet_case(&a, &b, &c3, d, 1.0, 0.0),
                "contrastive" => {
                    let y: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
                    contrastive_case(&a, &b, &y, d, 3.0)
                }
                _ => nce_case(&a, &b, d, 0.5, k % 3 != 0, k % 2 == 0),
            };
            random_policy(&mut rng, &mut case, n);
            let rep = check_gradients(&case, 3, k).unwrap_or_else(|e| panic!("{loss} {k}: {e}"));
            assert!(
                rep.max_rel < FD_TOL,
                "{loss} case {k}: {:e}: {}\n{}",
                rep.max_rel,
                rep.worst,
                case.to_json()
            );
            compared += (rep.comparisons > 0) as usize;
        }
        assert!(compared > 60, "{loss}: only {compared} cases compared");
    }
}
