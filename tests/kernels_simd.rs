//! `kernels::vmath`: the certification of `exp` against MPFR, the bit identity of the AVX2 +
//! FMA and the plain paths, and (cross_entropy) results independent of the thread count.

use half::{bf16, f16};
use losscheck::kernels::vmath;
use rug::Float;

/// |got − eˣ| / eˣ (exact to 2⁻¹²⁰ or so), and for subnormal results the absolute error in
/// units of 2⁻¹⁰⁷⁵ beyond the relative bound.
fn rel_err(x: f64, got: f64) -> f64 {
    let exact = Float::with_val(192, x).exp();
    let d = Float::with_val(192, got) - &exact;
    (d / &exact).abs().to_f64()
}

/// The certified bound (module docs of `vmath`).
const BOUND: f64 = 4.440_892_098_500_626e-16; // 2⁻⁵¹

fn check(x: f64, worst: &mut (f64, f64)) {
    let got = vmath::exp(x);
    let exact = Float::with_val(192, x).exp();
    if exact > f64::MAX {
        // past ln(f64::MAX) (or within the bound's sliver of it): +inf
        let lim = f64::MAX * (1.0 + BOUND);
        if exact > lim {
            assert_eq!(got, f64::INFINITY, "exp({x:e})");
        }
        return;
    }
    let tiny = f64::MIN_POSITIVE; // 2⁻¹⁰²²
    if exact < tiny {
        // one more rounding into the subnormals: ≤ 2⁻¹⁰⁷⁵ + bound·eˣ absolute
        let d = (Float::with_val(192, got) - &exact).abs();
        let lim = Float::with_val(192, exact.clone() * BOUND) + Float::with_val(192, 2.0f64.powi(-1074)) / 2u32;
        assert!(d <= lim, "exp({x:e}) = {got:e}: subnormal error {d}");
        return;
    }
    assert!(got.is_finite(), "exp({x:e}) = {got}");
    let e = rel_err(x, got);
    assert!(e < BOUND, "exp({x:e}) = {got:e}: relative error {e:e} ≥ 2^-51");
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
    eprintln!("dense: worst relative error {:e} (2^{:.2}) at x = {:e}", worst.0, worst.0.log2(), worst.1);
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
    eprintln!("edges: worst relative error {:e} (2^{:.2}) at x = {:e}", worst.0, worst.0.log2(), worst.1);
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
    eprintln!("16-bit: worst relative error {:e} (2^{:.2}) at x = {:e}", worst.0, worst.0.log2(), worst.1);
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
