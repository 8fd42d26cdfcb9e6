//! `kernels::vmath`: the certification of `exp` against MPFR, the bit identity of the AVX2 +
//! FMA and the plain paths, and (cross_entropy) results independent of the thread count.

use half::{bf16, f16};
use losscheck::kernels::vmath;
use losscheck::check::vmath_cert::{self, Function};

/// vmath::exp at x within its documented bound (`check::vmath_cert::errors`, the judge of
/// `losscheck exhaustive --function exp`); `worst` keeps the largest error (in u) and its x.
fn check(x: f64, worst: &mut (f64, f64)) {
    let e = vmath_cert::errors(Function::Exp, x, &[vmath::exp(x)])[0];
    assert!(e <= 4.0, "exp({x:e}) = {:e}: error {e:.3}u > 4u (2^-51)", vmath::exp(x));
    if e > worst.0 {
        *worst = (e, x);
    }
}

#[test]
fn exp_certified_dense_sample() {
    let mut worst = (0.0, 0.0);
    let mut s = 0x243f_6a88_85a3_08d3u64;
    // uniform over [−746, 710]
    for _ in 0..1_000_000 {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        check(-746.0 + 1456.0 * u, &mut worst);
    }
    // log-uniform magnitudes (tiny |x| too), both signs
    for _ in 0..500_000 {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        let x = 2f64.powf(-60.0 + 69.5 * u);
        check(if s & 1 == 0 { x } else { -x }, &mut worst);
    }
    eprintln!("dense: worst error {:.3}u at x = {:e}", worst.0, worst.1);
}

#[test]
fn exp_certified_reduction_edges() {
    // x = (k ± ½)·ln 2, where the reduced argument is at ±ln2/2 and k changes, and 64 f64
    // neighbours either side
    let mut worst = (0.0, 0.0);
    let ln2 = std::f64::consts::LN_2;
    for k in -1076i32..=1024 {
        for h in [-0.5f64, 0.5] {
            let c = (k as f64 + h) * ln2;
            let mut x = c;
            for _ in 0..64 {
                x = f64::from_bits(x.to_bits() - 1);
            }
            for _ in 0..129 {
                if (-746.0..=710.0).contains(&x) {
                    check(x, &mut worst);
                }
                x = f64::from_bits(x.to_bits() + 1);
            }
        }
    }
    eprintln!("edges: worst error {:.3}u at x = {:e}", worst.0, worst.1);
}

#[test]
fn exp_certified_every_16_bit_input() {
    // every finite f16 and bf16 value (and so the exp of every 16-bit logit and of its negation)
    let mut worst = (0.0, 0.0);
    for b in 0..=u16::MAX {
        for x in [f16::from_bits(b).to_f64(), bf16::from_bits(b).to_f64()] {
            if x.is_finite() && x.abs() <= 746.0 {
                check(x, &mut worst);
            }
        }
    }
    eprintln!("16-bit: worst error {:.3}u at x = {:e}", worst.0, worst.1);
}

#[test]
fn exp_nonpos_is_exp() {
    let mut s = 7u64;
    for _ in 0..1_000_000 {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        let x = -750.0 * u * u;
        assert_eq!(vmath::exp(x).to_bits(), vmath::exp_nonpos(x).to_bits(), "{x:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA vs plain: bit identity.

fn lcg(s: &mut u64) -> f64 {
    *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*s >> 11) as f64 / (1u64 << 53) as f64
}

/// Logit-like values (normal-ish, scaled), with some ±inf / NaN / huge / tiny ones sprinkled.
fn values(n: usize, seed: u64, specials: bool) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let u = lcg(&mut s);
            let v = lcg(&mut s);
            let x = (u - 0.5) * 2f64.powf(-20.0 + 40.0 * v);
            if specials && lcg(&mut s) < 0.01 {
                [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 3e38, -3e38, 1e-40][(lcg(&mut s) * 6.0) as usize]
            } else {
                x
            }
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_and_plain_paths_agree_bitwise() {
    if !vmath::has_avx2_fma() {
        eprintln!("no AVX2 + FMA on this machine: only the plain path exists");
        return;
    }
    for (t, len) in [0usize, 1, 7, 8, 9, 31, 1000, 32_000, 12_345].into_iter().enumerate() {
        let seed = 1000 + t as u64;
        for specials in [false, true] {
            let xs = values(len, seed, specials);
            let z32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
            let zb: Vec<bf16> = xs.iter().map(|&x| bf16::from_f64(x)).collect();
            // widen + max
            let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
            let ra = vmath::widen_max_f32_plain(&z32, &mut a);
            let rb = unsafe { vmath::widen_max_f32_avx2(&z32, &mut b) };
            assert_eq!((nb(ra.0), ra.1), (nb(rb.0), rb.1));
            assert_eq!(bits(&a), bits(&b));
            let ra = vmath::widen_max_bf16_plain(&zb, &mut a);
            let rb = unsafe { vmath::widen_max_bf16_avx2(&zb, &mut b) };
            assert_eq!((nb(ra.0), ra.1), (nb(rb.0), rb.1));
            assert_eq!(bits(&a), bits(&b));
            if len == 0 {
                continue;
            }
            // exp of the shifted row and the sum without the argmax
            let m = xs.iter().cloned().filter(|x| x.is_finite()).fold(f64::MIN, f64::max);
            let k = xs.iter().position(|&x| x == m).unwrap_or(0);
            let (mut ea, mut eb) = (xs.clone(), xs.clone());
            let sa = vmath::exp_shift_sum_except_plain(&mut ea, m, k);
            let sb = unsafe { vmath::exp_shift_sum_except_avx2(&mut eb, m, k) };
            assert_eq!(nb(sa), nb(sb));
            assert_eq!(bits(&ea), bits(&eb));
            // exp over the whole f64 range
            let wide: Vec<f64> = values(len, seed ^ 77, specials).iter().map(|x| x.clamp(-800.0, 800.0) * 0.9).collect();
            vmath::exp_slice_plain(&wide, &mut a);
            unsafe { vmath::exp_slice_avx2(&wide, &mut b) };
            assert_eq!(bits(&a), bits(&b));
            // gradient stores
            let (r, mul) = (0.3 + lcg(&mut 5u64.wrapping_add(t as u64)), 1.0 / 1024.0);
            let (mut ga, mut gb) = (vec![0.0f32; len], vec![0.0f32; len]);
            vmath::scale_to_f32_plain(&ea, r, mul, &mut ga);
            unsafe { vmath::scale_to_f32_avx2(&ea, r, mul, &mut gb) };
            assert_eq!(
                ga.iter().map(|&x| nb(x as f64)).collect::<Vec<_>>(),
                gb.iter().map(|&x| nb(x as f64)).collect::<Vec<_>>()
            );
            let (mut ha, mut hb) = (vec![bf16::ZERO; len], vec![bf16::ZERO; len]);
            vmath::scale_to_bf16_plain(&xs, r, mul, &mut ha);
            unsafe { vmath::scale_to_bf16_avx2(&xs, r, mul, &mut hb) };
            assert_eq!(
                ha.iter().map(|&x| nb(x.to_f64())).collect::<Vec<_>>(),
                hb.iter().map(|&x| nb(x.to_f64())).collect::<Vec<_>>()
            );
        }
    }
}

/// The bits, every NaN as one canonical NaN (IEEE 754 leaves a NaN's sign and payload to
/// the implementation: x86's SSE/AVX default NaN is negative, a software fma's positive).
fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|&x| nb(x)).collect()
}

fn nb(x: f64) -> u64 {
    if x.is_nan() {
        f64::NAN.to_bits()
    } else {
        x.to_bits()
    }
}

// ---------------------------------------------------------------------------------------------
// cross_entropy: the same bits whatever the number of threads.

use losscheck::kernels::classification::multiclass::{CrossEntropyArgs, Output};
use losscheck::Reduction;

fn ce_bits<T: losscheck::Element>(
    z: &[T],
    y: &[i64],
    c: usize,
    r: Reduction,
    smoothing: f64,
    cw: Option<&[T]>,
) -> (Vec<u64>, Vec<u64>) {
    let mut args = CrossEntropyArgs::new(z, y.len(), c)
        .class_ids(y)
        .reduction(r)
        .label_smoothing(smoothing);
    if let Some(w) = cw {
        args = args.class_weight(w);
    }
    let out: Output<T, f32> = args.eval().unwrap();
    (
        out.value.iter().map(|&v| nb(v as f64)).collect(),
        out.grad.unwrap().iter().map(|v| nb(v.to_f64())).collect(),
    )
}

fn ce_inputs<T: losscheck::Element>(n: usize, c: usize, seed: u64) -> (Vec<T>, Vec<i64>, Vec<T>) {
    let mut s = seed;
    let mut z: Vec<T> = (0..n * c)
        .map(|_| {
            // roughly N(0, 3²) by the sum of three uniforms
            let u = lcg(&mut s) + lcg(&mut s) + lcg(&mut s) - 1.5;
            T::from_f64(6.0 * u)
        })
        .collect();
    let y: Vec<i64> = (0..n)
        .map(|i| if i % 17 == 5 { -100 } else { (lcg(&mut s) * c as f64) as i64 })
        .collect();
    // some confident rows, a NaN row, an inf row, a −inf logit
    for i in (0..n).step_by(7) {
        if y[i] >= 0 {
            z[i * c + y[i] as usize] = T::from_f64(40.0);
        }
    }
    z[3 * c + 1] = T::from_f64(f64::NAN);
    z[4 * c + 2] = T::from_f64(f64::INFINITY);
    z[6 * c] = T::from_f64(f64::NEG_INFINITY);
    let w: Vec<T> = (0..c).map(|j| T::from_f64(0.25 + (j % 5) as f64)).collect();
    (z, y, w)
}

fn thread_invariance<T: losscheck::Element>() {
    let (n, c) = (1500, 1500); // 2.25M logits: above the parallel threshold, three rayon tasks
    let (z, y, w) = ce_inputs::<T>(n, c, 99);
    for r in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for (eps, cw) in [(0.0, None), (0.0, Some(&w[..])), (0.1, None)] {
            let mut seen = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let got = pool.install(|| ce_bits(&z, &y, c, r, eps, cw));
                match &seen {
                    None => seen = Some(got),
                    Some(s) => assert!(*s == got, "{:?} {r:?} ε={eps} weights={}: {threads} threads differ from 1", T::DTYPE, cw.is_some()),
                }
            }
        }
    }
}

#[test]
fn cross_entropy_independent_of_thread_count() {
    thread_invariance::<f32>();
    thread_invariance::<bf16>();
    thread_invariance::<f16>();
}

// ---------------------------------------------------------------------------------------------
// `losscheck exhaustive --function F`: the certificate of a range of f32 inputs.

/// One f32 shard of 65,536 patterns per function, each in its domain, and every bound holds:
/// the f32 campaign of `losscheck exhaustive --function F --dtype f32 --shard K/65536`.
#[test]
fn vmath_certificate_of_an_f32_shard_holds() {
    use losscheck::check::shard::Shard;
    use losscheck::Dtype;
    for (f, k) in [
        (Function::Exp, 0xC2C8u64),          // x ∈ [−100, −100.5)
        (Function::Exp, 0x42B1),             // x ∈ [88.5, 89): f32's overflow edge
        (Function::ExpNonpos, 0xC4BA),       // x ∈ [−1488, −1496): the clamp to 0
        (Function::Log1pUnit, 0x3F7F),       // x ∈ [0.996, 1)
        (Function::Log1pUnit, 0x3380),       // x ≈ 6e-8: where 1 + x rounds to 1
        (Function::LogisticParts, 0xC1A0),   // z ∈ [−20, −20.5)
        (Function::LogisticParts, 0x3F80),   // z ∈ [1, 1.0078)
    ] {
        let shard = Shard { index: k, count: 65536 };
        let cert = vmath_cert::run(f, Dtype::F32, shard, &|_| {});
        eprintln!("{}", cert.summary_line());
        assert_eq!(cert.patterns, 65536);
        assert_eq!(cert.checked, 65536, "{}: every pattern of the shard is in the domain", f.name());
        assert!(cert.holds(), "{}", cert.summary_line());
        assert_eq!(cert.to_json()["holds"], true);
        for ((_, bound), (e, _)) in f.parts().iter().zip(&cert.worst) {
            assert!(*e <= *bound && *e > 0.0, "{}: worst {e}u", f.name());
        }
    }
}

/// The judge is not vacuous: a result a few u beyond its bound is caught, part by part.
#[test]
fn vmath_judge_flags_results_beyond_their_bounds() {
    for &x in &[-100.25, -3.0, -1e-3, 0.0, 0.5, 12.0, 700.0] {
        for f in Function::ALL {
            if !f.in_domain(x) {
                continue;
            }
            let u = f.unit();
            let good = f.eval(x);
            let errs = vmath_cert::errors(f, x, &good);
            for (k, &(name, bound)) in f.parts().iter().enumerate() {
                assert!(errs[k] <= bound, "{} {name} at {x}", f.name());
                if good[k] == 0.0 {
                    continue;
                }
                let mut bad = good.clone();
                bad[k] *= 1.0 + 2.0 * bound * u;
                if f == Function::Exp32Shift && good[k] < f32::MIN_POSITIVE as f64 {
                    // subnormal results: the bound is absolute there (2⁻¹⁵⁰ + B·2⁻²⁴·eˣ)
                    bad[k] = good[k] + 2.0 * (2f64.powi(-150) + bound * u * good[k]);
                }
                let e = vmath_cert::errors(f, x, &bad)[k];
                assert!(e > bound, "{} {name} at {x}: perturbed result judged {e}u ≤ {bound}u", f.name());
            }
        }
    }
    // exp_nonpos must be exp's bits, not only within the bound
    let x = -1.5;
    let other = f64::from_bits(vmath::exp(x).to_bits() + 1);
    assert!(vmath_cert::errors(Function::ExpNonpos, x, &[other])[0].is_infinite());
}
