//! The report's seed demonstrations (src/report/demos.rs, issue 6 item 7): one test per
//! demonstration, each asserting the property the demonstration shows against a closed form or
//! an f64 computation written here independently of the code under test, and one test of the
//! section in REPORT.md / report.json / report.html and of the plots.

use half::f16;
use losscheck::kernels::classification::{bce_logits, focal, ClassArgs};
use losscheck::report::{self, demos, Options};
use losscheck::{Dtype, Reduction};
use std::collections::BTreeSet;

/// |a − b| ≤ rel·|b| (+ a tiny absolute floor).
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs() + 1e-300
}

/// softmax in f64, written here (not the demos module's).
fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn sigma(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn l2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// A closed form r ↦ (loss, ∂loss/∂pred).
type Closed = Box<dyn Fn(f64) -> (f64, f64)>;

const F32_REL: f64 = 2.0 / (1u64 << 24) as f64; // one f32 rounding, with margin

#[test]
fn robustness_gradients_are_bounded_except_mse_and_match_closed_forms() {
    let d = demos::robustness();
    let r: Vec<f64> = demos::residuals().iter().map(|&x| x as f64).collect();
    assert_eq!(r.len(), 257);
    assert_eq!((r[0], r[256]), (-4.0, 4.0));
    let sign = |x: f64| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let quant = |tau: f64, x: f64| {
        let u = -x; // u = target − pred
        let v = (tau * u).max((tau - 1.0) * u);
        let g = if x > 0.0 {
            1.0 - tau
        } else if x < 0.0 {
            -tau
        } else {
            0.0
        };
        (v, g)
    };
    let closed: Vec<(&str, Closed)> = vec![
        ("mse", Box::new(|x| (x * x, 2.0 * x)) as Closed),
        ("mae", Box::new(move |x: f64| (x.abs(), sign(x)))),
        (
            "huber δ=1",
            Box::new(move |x: f64| {
                if x.abs() <= 1.0 {
                    (0.5 * x * x, x)
                } else {
                    (x.abs() - 0.5, sign(x))
                }
            }),
        ),
        ("quantile τ=0.9", Box::new(move |x| quant(0.9, x))),
        ("quantile τ=0.5", Box::new(move |x| quant(0.5, x))),
        ("log_cosh", Box::new(|x: f64| (x.cosh().ln(), x.tanh()))),
    ];
    for (name, f) in &closed {
        let v = d.ys(0, name);
        let g = d.ys(1, name);
        for (i, &x) in r.iter().enumerate() {
            let (ev, eg) = f(x);
            assert!(
                close(v[i], ev, F32_REL),
                "{name} value at r = {x}: {} vs {ev}",
                v[i]
            );
            assert!(
                close(g[i], eg, F32_REL),
                "{name} grad at r = {x}: {} vs {eg}",
                g[i]
            );
        }
    }
    // bounded gradients: huber, mae, log_cosh by 1, quantile by max(τ, 1 − τ)
    let gmax = |name: &str| d.ys(1, name).iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for name in ["huber δ=1", "mae", "log_cosh"] {
        assert!(gmax(name) <= 1.0, "{name}: {}", gmax(name));
    }
    assert!(gmax("quantile τ=0.9") <= 0.9 && gmax("quantile τ=0.5") <= 0.5);
    // … while mse's grows linearly: ∂l/∂pred = 2r at every residual, 8 at the edge
    let gm = d.ys(1, "mse");
    for (i, &x) in r.iter().enumerate() {
        assert_eq!(gm[i], 2.0 * x);
    }
    assert!(gmax("mse") == 2.0 * demos::ROBUST_R && gmax("mse") > 4.0 * gmax("huber δ=1"));
    // huber is exactly mse/2 inside |r| ≤ δ = 1, and below it outside
    let (hv, mv) = (d.ys(0, "huber δ=1"), d.ys(0, "mse"));
    for (i, &x) in r.iter().enumerate() {
        if x.abs() <= 1.0 {
            assert_eq!(hv[i], mv[i] / 2.0, "r = {x}");
        } else {
            assert!(hv[i] < mv[i] / 2.0, "r = {x}");
        }
    }
}

#[test]
fn masked_mean_per_token_gradient_ratio_is_the_ratio_of_the_denominators() {
    let s = demos::seq_batch();
    // the denominators, from the targets alone: valid tokens, and B · length per sequence
    let valid: Vec<usize> = (0..s.b * s.t).filter(|&r| s.target[r] != -100).collect();
    let n_valid = valid.len() as f64;
    assert_eq!(n_valid, s.lengths.iter().sum::<usize>() as f64);
    let len_of = |row: usize| {
        (0..s.t)
            .filter(|k| s.target[(row / s.t) * s.t + k] != -100)
            .count() as f64
    };
    let b_nonempty = (0..s.b)
        .filter(|i| (0..s.t).any(|k| s.target[i * s.t + k] != -100))
        .count() as f64;
    let gm = demos::seq_grad(&s, Reduction::Mean);
    let gs = demos::seq_grad(&s, Reduction::SequenceMean);
    for row in 0..s.b * s.t {
        let (a, b) = (
            &gm[row * s.c..(row + 1) * s.c],
            &gs[row * s.c..(row + 1) * s.c],
        );
        if s.target[row] == -100 {
            assert!(a.iter().chain(b).all(|&g| g == 0.0), "padding row {row}");
            continue;
        }
        // each gradient is (softmax − onehot) / its denominator
        let z: Vec<f64> = s.logits[row * s.c..(row + 1) * s.c]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let mut d = softmax(&z);
        d[s.target[row] as usize] -= 1.0;
        let (den_m, den_s) = (n_valid, b_nonempty * len_of(row));
        for j in 0..s.c {
            assert!(
                (a[j] - d[j] / den_m).abs() <= 1e-6 * l2(&d) / den_m,
                "row {row}"
            );
            assert!(
                (b[j] - d[j] / den_s).abs() <= 1e-6 * l2(&d) / den_s,
                "row {row}"
            );
        }
        // the ratio of the per-token gradients is the ratio of the denominators
        assert!(
            close(l2(b) / l2(a), den_m / den_s, 1e-6),
            "row {row}: {} vs {}",
            l2(b) / l2(a),
            den_m / den_s
        );
    }
    // the demonstration plots exactly those weights: 1/15 under mean, 1/(B·len) under
    // sequence_mean; the 1-token sequence's token weighs 15/4 = 3.75 times more
    let d = demos::masked_mean();
    let (wm, ws) = (d.ys(0, "mean (token mean)"), d.ys(0, "sequence_mean"));
    assert_eq!(wm.len(), valid.len());
    for (i, &row) in valid.iter().enumerate() {
        assert!(close(wm[i], 1.0 / n_valid, 1e-6), "{}", wm[i]);
        assert!(close(ws[i], 1.0 / (b_nonempty * len_of(row)), 1e-6));
    }
    assert!(close(
        d.number("ratio at length 1"),
        n_valid / b_nonempty,
        1e-6
    ));
    assert!(close(
        d.number("ratio at length 8"),
        n_valid / (8.0 * b_nonempty),
        1e-6
    ));
}

#[test]
fn info_nce_entropy_falls_monotonically_with_the_temperature_and_the_positive_wins() {
    let e = demos::info_nce_batch();
    let taus = demos::temperatures();
    assert!(taus.windows(2).all(|w| w[1] < w[0]) && taus[0] == 1.0);
    assert!((taus[40] - 0.01).abs() < 1e-15);
    // cosine similarities and row softmaxes, computed here
    let unit = |x: &[f32], i: usize| {
        let v: Vec<f64> = x[i * e.d..(i + 1) * e.d]
            .iter()
            .map(|&c| c as f64)
            .collect();
        let n = l2(&v);
        v.into_iter().map(|c| c / n).collect::<Vec<_>>()
    };
    let sim: Vec<Vec<f64>> = (0..e.n)
        .map(|a| {
            (0..e.n)
                .map(|b| {
                    unit(&e.query, a)
                        .iter()
                        .zip(unit(&e.key, b))
                        .map(|(x, y)| x * y)
                        .sum()
                })
                .collect()
        })
        .collect();
    // the positive is every row's most similar key (so the softmax sharpens onto it)
    for (a, row) in sim.iter().enumerate() {
        assert!((0..e.n).all(|b| b == a || row[b] < row[a]), "row {a}");
    }
    let mut prev: Option<Vec<f64>> = None;
    let demo = demos::info_nce_temperature();
    let demo_h = demo.ys(1, "mean over rows");
    let demo_p = demo.ys(0, "mean over rows");
    for (k, &tau) in taus.iter().enumerate() {
        let probs: Vec<Vec<f64>> = sim
            .iter()
            .map(|r| softmax(&r.iter().map(|s| s / tau).collect::<Vec<_>>()))
            .collect();
        let h: Vec<f64> = probs
            .iter()
            .map(|p| {
                -p.iter()
                    .filter(|&&x| x > 0.0)
                    .map(|x| x * x.ln())
                    .sum::<f64>()
            })
            .collect();
        if let Some(ph) = &prev {
            for a in 0..e.n {
                assert!(h[a] <= ph[a] + 1e-12, "row {a}: entropy rose at τ = {tau}");
            }
        }
        // the kernel's positive probability exp(−l_i) is the softmax's diagonal
        let kp = demos::positive_probs(&e, tau);
        for a in 0..e.n {
            assert!(
                (kp[a] - probs[a][a]).abs() <= 1e-5 * probs[a][a].max(1e-3),
                "τ = {tau} row {a}: kernel {} vs {}",
                kp[a],
                probs[a][a]
            );
        }
        let mh = h.iter().sum::<f64>() / e.n as f64;
        assert!(close(demo_h[k], mh, 1e-9), "demo entropy at τ = {tau}");
        assert!(close(demo_p[k], kp.iter().sum::<f64>() / e.n as f64, 1e-12));
        prev = Some(h);
    }
    // at τ = 1 the rows are close to uniform; at τ = 0.01 the positive takes everything
    let ln_n = (e.n as f64).ln();
    assert!(demo_h[0] > 0.8 * ln_n, "{}", demo_h[0]);
    let kp = demos::positive_probs(&e, 0.01);
    assert!(kp.iter().all(|&p| p > 0.999), "{kp:?}");
    assert!(demo_h[40] < 0.01, "{}", demo_h[40]);
    assert!(demo_p[0] < 0.5);
}

#[test]
fn dpo_gradient_is_beta_sigmoid_of_minus_beta_h_and_grows_with_the_reference_margin() {
    let m: Vec<f64> = demos::reference_margins()
        .iter()
        .map(|&x| x as f64)
        .collect();
    let (pc, pr) = (demos::DPO_POLICY.0 as f64, demos::DPO_POLICY.1 as f64);
    let d = demos::dpo_reference();
    for beta in demos::DPO_BETAS {
        let (v, gc, gr) = demos::dpo_curve(beta);
        for (i, &mr) in m.iter().enumerate() {
            let h = (pc - pr) - mr;
            let want = -beta * sigma(-beta * h);
            assert!(
                close(gc[i], want, F32_REL),
                "β {beta} margin {mr}: {} vs {want}",
                gc[i]
            );
            assert_eq!(gr[i], -gc[i]);
            let lv = (1.0 + (-beta * h).exp()).ln();
            assert!(close(v[i], lv, F32_REL), "value β {beta} margin {mr}");
        }
        // |∂l/∂πc| rises strictly with the reference margin (σ is increasing)
        assert!(gc.windows(2).all(|w| w[1].abs() > w[0].abs()), "β {beta}");
        // the plotted line is that gradient's magnitude; β/2 where h = 0
        let plotted = d.ys(0, &format!("β = {beta}"));
        assert!(plotted.iter().zip(&gc).all(|(p, g)| *p == g.abs()));
        let i0 = m.iter().position(|&x| x == pc - pr).unwrap();
        assert!(close(plotted[i0], beta / 2.0, F32_REL));
    }
}

#[test]
fn focal_moves_the_gradient_to_hard_examples_and_gamma_zero_is_alpha_weighted_bce() {
    let b = demos::detection_batch();
    let n = b.logits.len();
    let pos = b.target.iter().filter(|&&t| t == 1.0).count();
    assert_eq!((n, pos), (10_000, 100));
    // BCE's gradient σ(z) − t in closed form: the kernel's shares agree with it
    let closed: Vec<f64> = b
        .logits
        .iter()
        .zip(&b.target)
        .map(|(&z, &t)| sigma(z as f64) - t as f64)
        .collect();
    let (cp, ce, ch) = demos::gradient_shares(&b, &closed);
    let (kp, ke, kh) = demos::gradient_shares(&b, &demos::bce_grad(&b, None));
    assert!(close(kp, cp, 1e-6) && close(ke, ce, 1e-6) && close(kh, ch, 1e-6));
    // focal (γ = 2, α = 0.25) gives the hard examples a larger share, the easy negatives a
    // smaller one, than plain BCE
    let (_, fe, fh) = demos::gradient_shares(&b, &demos::focal_grad(&b, Some(0.25), 2.0));
    assert!(fh > ch, "hard: focal {fh} vs bce {ch}");
    assert!(fe < ce, "easy negatives: focal {fe} vs bce {ce}");
    // plain BCE's gradient is mostly the easy negatives' (the imbalance)
    assert!(ce > ch && ce > cp, "bce shares {cp} {ce} {ch}");
    // focal γ = 0 is α-weighted BCE, element by element: α_t·(σ(z) − t)
    let g0 = focal::<f32, f32>(
        &ClassArgs::new(&b.logits, &b.target).reduction(Reduction::None),
        Some(0.25),
        0.0,
    )
    .unwrap()
    .grad
    .unwrap();
    let alpha_t: Vec<f32> = b
        .target
        .iter()
        .map(|&t| if t == 1.0 { 0.25 } else { 0.75 })
        .collect();
    let wb = bce_logits::<f32, f32>(
        &ClassArgs::new(&b.logits, &b.target)
            .weight(&alpha_t)
            .reduction(Reduction::None),
    )
    .unwrap()
    .grad
    .unwrap();
    for i in 0..n {
        let want = alpha_t[i] as f64 * closed[i];
        assert!(close(g0[i] as f64, want, F32_REL), "focal γ=0 at {i}");
        assert!(close(wb[i] as f64, want, F32_REL), "weighted bce at {i}");
    }
    // the plotted sweep: the hard examples' share grows with γ from γ = 0 to 2
    let d = demos::focal_vs_bce();
    let hard = d.ys(0, "hard examples (p_t < 0.5)");
    let gs = demos::gammas();
    let i2 = gs.iter().position(|&g| g == 2.0).unwrap();
    assert!(hard[..=i2].windows(2).all(|w| w[1] > w[0]), "{hard:?}");
    assert!(close(hard[i2], fh, 1e-12));
}

#[test]
fn multi_term_gradient_norm_is_linear_in_its_weight_and_the_crossover_is_their_ratio() {
    let b = demos::multi_term_batch();
    let k = b.theta.len() as f64;
    // independent closed forms: ∇ mean CE = (softmax − onehot)/N, ∇ mean mse(θ, 0) = 2θ/K
    let mut ga = Vec::new();
    for i in 0..b.n {
        let z: Vec<f64> = b.theta[i * b.c..(i + 1) * b.c]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let mut p = softmax(&z);
        p[b.target[i] as usize] -= 1.0;
        ga.extend(p.into_iter().map(|x| x / b.n as f64));
    }
    let gb1: Vec<f64> = b.theta.iter().map(|&x| 2.0 * x as f64 / k).collect();
    let (na, nb1) = (l2(&ga), l2(&gb1));
    let d = demos::multi_term();
    let lam = demos::lambdas();
    let (ya, yb) = (d.ys(0, "cross_entropy"), d.ys(0, "λ · mse(θ, 0)"));
    for (i, &l) in lam.iter().enumerate() {
        assert!(
            close(ya[i], na, 1e-6),
            "CE norm at λ = {l}: {} vs {na}",
            ya[i]
        );
        // linear in the weight
        assert!(close(yb[i] / l, nb1, 1e-6), "mse norm / λ at λ = {l}");
    }
    // doubling λ doubles the norm (λ = 2^k, an exact scaling in f32)
    assert!(yb.windows(2).all(|w| close(w[1], 2.0 * w[0], 1e-12)));
    let star = na / nb1;
    assert!(close(d.number("λ* (equal norms)"), star, 1e-6));
    for (i, &l) in lam.iter().enumerate() {
        if l < star {
            assert!(ya[i] > yb[i], "below λ* cross-entropy dominates (λ = {l})");
        } else {
            assert!(yb[i] > ya[i], "above λ* the penalty dominates (λ = {l})");
        }
    }
    assert!(
        lam[0] < star && star < lam[lam.len() - 1],
        "λ* inside the grid"
    );
}

#[test]
fn f16_underflow_shares_from_f64_match_the_kernel_and_the_chosen_scale_is_clean() {
    let b = demos::f16_batch();
    // the gradient of the mean, (softmax − onehot)/N, computed here in f64
    let mut g = Vec::new();
    for i in 0..b.n {
        let z: Vec<f64> = b.logits[i * b.c..(i + 1) * b.c]
            .iter()
            .map(|x| x.to_f64())
            .collect();
        let mut p = softmax(&z);
        p[b.target[i] as usize] -= 1.0;
        g.extend(p.into_iter().map(|x| x / b.n as f64));
    }
    assert!(g.iter().all(|&x| x != 0.0));
    let flush = 2f64.powi(-25); // rounds to 0 in f16 (a tie to even at exactly 2^−25)
    let inf = 65520.0; // rounds to inf in f16
    let (rows, window, chosen) = demos::f16_scale_table(&b);
    assert_eq!(rows.len(), 25);
    let mut shares = Vec::new();
    for (k, r) in (0..=24).zip(&rows) {
        assert_eq!(r.log2_scale, k);
        let s = 2f64.powi(k);
        let zeros = g.iter().filter(|x| s * x.abs() <= flush).count();
        let share = zeros as f64 / g.len() as f64;
        // the f64 count agrees with the zeros of the kernel's f16 output
        assert_eq!(r.flushed_kernel, share, "scale 2^{k}");
        let infs = g.iter().filter(|x| s * x.abs() >= inf).count();
        assert_eq!(r.grad_inf, infs, "scale 2^{k}");
        shares.push(share);
    }
    // without scaling, elements flush; the share falls as the scale rises, strictly until 0
    assert!(shares[0] > 0.01, "{}", shares[0]);
    for w in shares.windows(2) {
        assert!(w[1] < w[0] || (w[1] == 0.0 && w[0] == 0.0), "{shares:?}");
    }
    // the chosen scale: no flush and no inf, checked on a fresh kernel call and on the f64 gradient
    let (lo, hi) = window.expect("a clean window");
    let c = chosen.expect("a chosen scale");
    assert!(
        lo <= c && c <= hi && lo > 0 && hi < 24,
        "window 2^{lo}..2^{hi}, chosen 2^{c}"
    );
    let gk = demos::f16_scaled_grad(&b, c);
    assert!(gk.iter().all(|x| *x != f16::ZERO && x.is_finite()));
    let s = 2f64.powi(c);
    assert!(g.iter().all(|x| s * x.abs() > flush && s * x.abs() < inf));
    // just outside the window: a flush below it, an inf above it
    assert!(rows[(lo - 1) as usize].flushed_kernel > 0.0);
    assert!(rows[(hi + 1) as usize].grad_inf > 0);
    // the kernel's f16 gradient at the chosen scale is s·g rounded once
    for (x, &e) in gk.iter().zip(&g) {
        let want = <f16 as losscheck::Element>::from_f64(s * e);
        assert_eq!(*x, want);
    }
}

/// The section in REPORT.md, report.json (documented fields) and report.html, and the plots.
#[test]
fn the_section_is_in_every_writer_and_each_plot_is_well_formed() {
    let mut o = Options::quick(1);
    o.cases = 0;
    o.zoo_cases = 0;
    o.counterexamples = false;
    o.progress = false;
    o.sweep.points = 2;
    o.dtypes = vec![Dtype::F32];
    let all: BTreeSet<&str> = demos::DEMOS
        .iter()
        .flat_map(|d| d.1.iter().copied())
        .collect();
    o.losses = all.iter().map(|s| s.to_string()).collect();
    let t = std::time::Instant::now();
    let r = report::run(&o);
    assert_eq!(r.demos.len(), 7);
    assert!(r.timings.demos < 10.0, "{} s", r.timings.demos);
    let _ = t;
    let names: BTreeSet<&str> = r.demos.iter().map(|d| d.name).collect();
    assert_eq!(names.len(), 7);
    let md = r.markdown();
    let sec = md.find("## Seed demonstrations").expect("section");
    for (i, d) in r.demos.iter().enumerate() {
        assert!(md[sec..].contains(&format!("### {}. {}", i + 1, d.title)));
        assert!(md[sec..].contains(&format!("](plots/demo-{}.svg)", d.name)));
    }
    // plots: one per demonstration, one polyline per line, text labels
    let plots = r.plots();
    for d in &r.demos {
        let svg = &plots[&format!("plots/demo-{}.svg", d.name)];
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        let lines: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .collect();
        let want: usize = d.figure.panels.iter().map(|p| p.lines.len()).sum();
        assert_eq!(lines.len(), want, "{}", d.name);
        for p in &d.figure.panels {
            for l in &p.lines {
                assert!(
                    lines
                        .iter()
                        .any(|n| n.attribute("data-series") == Some(l.name.as_str())),
                    "{}: {}",
                    d.name,
                    l.name
                );
            }
        }
        assert!(!svg.contains("font-face") && !svg.contains("<path"));
        // a `|` in a cell would split it: every row has the header's cells
        assert!(
            d.table.iter().flatten().all(|c| !c.contains('|')),
            "{}",
            d.name
        );
        assert!(
            d.table.iter().all(|r| r.len() == d.table[0].len()),
            "{}",
            d.name
        );
    }
    // html: every plot inline
    let html = r.html();
    assert!(html.contains("<h2>Seed demonstrations</h2>"));
    assert_eq!(html.matches("<svg").count(), r.sweeps.len() + 7);
    // every table row of the Markdown is a row of the HTML (no cell split or lost)
    let md_rows = md
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|-"))
        .count();
    assert_eq!(html.matches("<tr>").count(), md_rows);
    // json: the documented fields of docs/report-schema.md's demos table
    let v = r.to_json();
    let doc = include_str!("../docs/report-schema.md");
    let start = doc
        .find("## Demonstrations (`demos[]`)")
        .expect("schema section");
    let fields: Vec<(&str, &str)> = doc[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((c.get(1)?.strip_prefix('`')?.strip_suffix('`')?, c[2]))
        })
        .collect();
    assert!(fields.len() >= 8);
    let arr = v["demos"].as_array().expect("demos array");
    assert_eq!(arr.len(), 7);
    for d in arr {
        let obj = d.as_object().unwrap();
        for (f, ty) in &fields {
            let x = &obj[*f];
            let ok = match *ty {
                "string" => x.is_string(),
                "object" => x.is_object(),
                "array" => x.is_array(),
                other => panic!("type {other}"),
            };
            assert!(ok, "demos[].{f} should be {ty}");
        }
        assert!(
            obj.keys().all(|k| fields.iter().any(|(f, _)| f == k)),
            "{:?}",
            obj.keys()
        );
    }
    assert_eq!(v["schema"], report::SCHEMA);
    // deterministic: the same demonstrations again
    assert_eq!(demos::run(&o.losses), r.demos);
}
