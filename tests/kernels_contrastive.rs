//! The contrastive kernels' own tests: hand-derived values (through the typed API and the case
//! API), the kinks and zero vectors (no NaN), info_nce's mask and weight semantics, every
//! dtype and out_dtype, invalid input (an `Err` naming the input, the index and the value),
//! and degenerate shapes (N = 0, D = 0) that must not panic.

use half::{bf16, f16};
use losscheck::kernels::contrastive::{contrastive, info_nce, triplet, InfoNceParams, RowArgs};
use losscheck::kernels::evaluate;
use losscheck::{Case, Dtype, Reduction, Tensor};
use losscheck_core::ParamValue;

#[test]
fn triplet_values_and_gradients() {
    let (a, p, n) = ([0.0f32, 0.0], [3.0f32, 4.0], [0.0f32, 1.0]);
    let out = triplet::<f32, f32>(&RowArgs::new(1, 2), &a, &p, &n, 1.0, 0.0).unwrap();
    assert_eq!(out.value, vec![5.0]);
    assert_eq!(out.grads[0], Some(vec![-0.6, 0.2]));
    assert_eq!(out.grads[1], Some(vec![0.6, 0.8]));
    assert_eq!(out.grads[2], Some(vec![0.0, -1.0]));
    // the kink z = 0 (|u| = 5, |v| = 13, m = 8): value 0, gradients 0
    let out = triplet::<f32, f32>(&RowArgs::new(1, 2), &a, &p, &[5.0, 12.0], 8.0, 0.0).unwrap();
    assert_eq!(out.value, vec![0.0]);
    assert_eq!(out.grads[0], Some(vec![0.0, 0.0]));
    // identical points everywhere: l = m, every gradient 0, nothing NaN
    let z = [0.0f32; 3];
    let out = triplet::<f32, f32>(&RowArgs::new(1, 3), &z, &z, &z, 0.5, 0.0).unwrap();
    assert_eq!(out.value, vec![0.5]);
    for g in &out.grads {
        assert_eq!(g.as_deref(), Some(&[0.0f32; 3][..]));
    }
    // eps on every coordinate: d(a, a) = eps·√D = 0.5 for eps = 0.25, D = 4
    let z4 = [0.0f32; 4];
    let far = [0.0f32, 0.0, 0.0, 10.0];
    let out = triplet::<f32, f32>(&RowArgs::new(1, 4), &z4, &z4, &far, 20.0, 0.25).unwrap();
    let dn = ((0.25f64 * 0.25) * 3.0 + (0.25 - 10.0) * (0.25 - 10.0)).sqrt();
    assert_eq!(out.value, vec![(0.5 - dn + 20.0) as f32]);
    // huge components whose squares overflow f16: the f16 kernel is finite and exact
    let a16: Vec<f16> = [256.0, 300.0].iter().map(|&x| f16::from_f64(x)).collect();
    let z16 = [f16::from_f64(0.0); 2];
    let out = triplet::<f16, f32>(&RowArgs::new(1, 2), &a16, &z16, &a16, 1.0, 0.0).unwrap();
    let want = (256.0f64 * 256.0 + 300.0 * 300.0).sqrt() + 1.0;
    assert_eq!(out.value, vec![want as f32]);
}

#[test]
fn contrastive_values_and_gradients() {
    let args = RowArgs::new(2, 2).reduction(Reduction::None);
    let x1 = [3.0f32, 4.0, 1.0, 1.0];
    let x2 = [0.0f32, 0.0, 1.0, 1.0];
    let out = contrastive::<f32, f32>(&args, &x1, &x2, &[1, 0], 2.0).unwrap();
    // row 0 similar: 25; row 1 dissimilar and identical: m² = 4, gradient 0 (not NaN)
    assert_eq!(out.value, vec![25.0, 4.0]);
    assert_eq!(out.grads[0], Some(vec![6.0, 8.0, 0.0, 0.0]));
    assert_eq!(out.grads[1], Some(vec![-6.0, -8.0, -0.0, -0.0]));
    // dissimilar at d = 5 < m = 7: (7 − 5)² = 4
    let out = contrastive::<f32, f32>(&RowArgs::new(1, 2), &x1[..2], &x2[..2], &[0], 7.0).unwrap();
    assert_eq!(out.value, vec![4.0]);
    assert_eq!(out.grads[0], Some(vec![-2.4, -3.2]));
}

#[test]
fn info_nce_values_mask_and_weight() {
    let e = [1.0f32, 0.0, 0.0, 1.0];
    let p = InfoNceParams {
        temperature: 1.0,
        ..InfoNceParams::default()
    };
    let want = 0.313_261_687_518_222_86f64 as f32; // ln(1 + e^−1)
    let out =
        info_nce::<f32, f32>(&RowArgs::new(2, 2).reduction(Reduction::None), &e, &e, p).unwrap();
    assert_eq!(out.value, vec![want, want]);
    // a zero query is defined (q̂ = 0): l = ln 2, finite gradients
    let q = [0.0f32, 0.0, 0.0, 1.0];
    let out =
        info_nce::<f32, f32>(&RowArgs::new(2, 2).reduction(Reduction::None), &q, &e, p).unwrap();
    assert_eq!(out.value[0], std::f32::consts::LN_2);
    assert!(out.grads.iter().flatten().flatten().all(|g| g.is_finite()));
    // mask 0 removes query 1 and key 1: row 0 alone has loss 0
    let m = [1i64, 0];
    let out = info_nce::<f32, f32>(
        &RowArgs::new(2, 2).mask(&m).reduction(Reduction::None),
        &e,
        &e,
        p,
    )
    .unwrap();
    assert_eq!(out.value, vec![0.0, 0.0]);
    // weight 0 is not a mask: row 0 keeps key 1
    let w = [1.0f32, 0.0];
    let out = info_nce::<f32, f32>(
        &RowArgs::new(2, 2).weight(&w).reduction(Reduction::None),
        &e,
        &e,
        p,
    )
    .unwrap();
    assert_eq!(out.value, vec![want, 0.0]);
    // tiny temperature: no overflow (the max shift), l = ln(1 + e^−10^4) rounds to 0
    let p4 = InfoNceParams {
        temperature: 1e-4,
        ..InfoNceParams::default()
    };
    let out = info_nce::<f32, f32>(&RowArgs::new(2, 2), &e, &e, p4).unwrap();
    assert_eq!(out.value, vec![0.0]);
    // a confidently wrong row at τ = 1e−4: l = 2·10^4 (finite)
    let k = [0.0f32, 1.0, 1.0, 0.0];
    let out = info_nce::<f32, f32>(&RowArgs::new(2, 2), &e, &k, p4).unwrap();
    assert!(out.value[0].is_finite() && out.value[0] > 9_000.0);
    // bf16 in, f32 out
    let eb: Vec<bf16> = e.iter().map(|&x| bf16::from_f32(x)).collect();
    let out = info_nce::<bf16, f32>(&RowArgs::new(2, 2), &eb, &eb, p).unwrap();
    assert_eq!(out.value, vec![want]);
}

/// A zero query's gradient is Σ_b G_0b·k̂_b / eps. Keys 1 and 2 are mirror images in their
/// second coordinate with equal coefficients (q̂_0 = 0 makes row 0's softmax uniform), so that
/// coordinate of the gradient is exactly 0 while the first is large; the f64 products do not
/// cancel bit for bit under FMA accumulation, and DESIGN's allowance κ·2⁻⁵³·|exact| accepts only
/// 0 for an exact 0. The kernel decides "below its error bound" per component (the default
/// campaign's info_nce f32 case #2825 was this, with a per-row decision).
#[test]
fn exact_zero_gradient_component_beside_large_ones_is_zero() {
    let q = [0.0f32, 0.0, 0.6, 0.8, 0.8, -0.6];
    let k = [1.0f32, 0.0, 0.7, 0.3, 0.7, -0.3];
    for (tau, eps) in [(1.0, 1e-8), (1e-4, 1e-12), (0.07, 0.5)] {
        let p = InfoNceParams {
            temperature: tau,
            eps,
            ..InfoNceParams::default()
        };
        let args = RowArgs::new(3, 2).reduction(Reduction::Sum);
        let out = info_nce::<f32, f32>(&args, &q, &k, p).unwrap();
        let gq = out.grads[0].as_ref().unwrap();
        assert_eq!(gq[1], 0.0, "τ {tau}, eps {eps}: grad q_0 = {:?}", &gq[..2]);
        assert!(
            gq[0].abs() > 0.1,
            "τ {tau}, eps {eps}: grad q_0 = {:?}",
            &gq[..2]
        );
    }
}

fn case(loss: &str, n: usize, d: usize) -> Case {
    let mut c = Case::new(loss, Dtype::F32).unwrap();
    let names: &[&str] = match loss {
        "triplet" => &["anchor", "positive", "negative"],
        "contrastive" => &["x1", "x2"],
        _ => &["query", "key"],
    };
    for nm in names {
        c.inputs.insert(
            nm.to_string(),
            Tensor::float(Dtype::F32, vec![n, d], vec![0.5; n * d]),
        );
    }
    if loss == "contrastive" {
        c.inputs
            .insert("target".into(), Tensor::int(vec![n], vec![0; n]));
    }
    c.grad = names.iter().map(|s| s.to_string()).collect();
    c
}

#[test]
fn degenerate_shapes_never_panic() {
    for loss in ["triplet", "contrastive", "info_nce"] {
        for (n, d) in [(0, 0), (0, 3), (3, 0), (1, 1)] {
            for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                let mut c = case(loss, n, d);
                c.set_reduction(r);
                let resp = evaluate(&c).unwrap_or_else(|e| panic!("{loss} [{n},{d}] {r}: {e}"));
                if r == Reduction::Mean && n == 0 {
                    assert_eq!(
                        resp.value.f().unwrap(),
                        &[0.0][..],
                        "{loss}: empty mean is 0"
                    );
                }
                for t in resp.grad.values() {
                    assert!(
                        t.f().unwrap().iter().all(|x| x.is_finite()),
                        "{loss} [{n},{d}]"
                    );
                }
            }
        }
    }
}

#[test]
fn invalid_input_names_input_index_and_value() {
    // temperature ≤ 0
    let mut c = case("info_nce", 2, 2);
    c.params
        .insert("temperature".into(), ParamValue::Float(0.0));
    let e = evaluate(&c).unwrap_err().to_string();
    assert!(e.contains("temperature"), "{e}");
    // mismatched D between query and key
    let mut c = case("info_nce", 2, 2);
    c.inputs.insert(
        "key".into(),
        Tensor::float(Dtype::F32, vec![2, 3], vec![0.0; 6]),
    );
    let e = evaluate(&c).unwrap_err().to_string();
    assert!(e.contains("key") && e.contains('D'), "{e}");
    // mismatched N in triplet
    let mut c = case("triplet", 2, 2);
    c.inputs.insert(
        "negative".into(),
        Tensor::float(Dtype::F32, vec![3, 2], vec![0.0; 6]),
    );
    let e = evaluate(&c).unwrap_err().to_string();
    assert!(e.contains("negative") && e.contains('N'), "{e}");
    // a contrastive target outside {0, 1}
    let mut c = case("contrastive", 3, 1);
    c.inputs
        .insert("target".into(), Tensor::int(vec![3], vec![0, 1, 2]));
    let e = evaluate(&c).unwrap_err().to_string();
    assert!(e.contains("target[2]=2"), "{e}");
    // ... but a masked one is skipped
    c.inputs
        .insert("mask".into(), Tensor::int(vec![3], vec![1, 1, 0]));
    assert!(evaluate(&c).is_ok());
    // triplet eps < 0, info_nce eps ≤ 0
    let mut c = case("triplet", 1, 1);
    c.params.insert("eps".into(), ParamValue::Float(-1.0));
    assert!(evaluate(&c).unwrap_err().to_string().contains("eps"));
    let mut c = case("info_nce", 1, 1);
    c.params.insert("eps".into(), ParamValue::Float(0.0));
    assert!(evaluate(&c).unwrap_err().to_string().contains("eps"));
    // the typed API checks lengths itself
    let e = triplet::<f32, f32>(
        &RowArgs::new(2, 2),
        &[0.0; 4],
        &[0.0; 4],
        &[0.0; 3],
        1.0,
        0.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("negative"), "{e}");
    let e = info_nce::<f32, f32>(
        &RowArgs::new(1, 1),
        &[0.0],
        &[0.0],
        InfoNceParams {
            temperature: -1.0,
            ..InfoNceParams::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("temperature=-1.0"), "{e}");
}
