//! The `bce_logits` fast element ([`super::bce_fast_element`], with
//! [`vmath::logistic_parts_fast`](crate::kernels::vmath::logistic_parts_fast)) in AVX2 + FMA
//! intrinsics, 4 f64 lanes per vector. Every operation is the one of the generic (plain) source
//! in the same order — IEEE add / sub / mul / div, correctly rounded fma (`vfmadd` and
//! `vfnmadd`: −(k·c) + x rounded once is fma(−k, c, x)), comparisons and selects, exponent bits
//! by integer shifts — so each lane gives the plain path's bits
//! (`tests/kernels_simd_elementwise.rs`, `bce_logits_fast_path_bits`). The one omission:
//! `exp_nonpos`'s clamp at −746, a no-op here (the argument is −|z| ≥ −700 after the domain
//! select).

use crate::kernels::vmath::{LN2_HI, LN2_LO, LN2_TAIL, LOG2E, P_FAST, Q, SHIFT_NONPOS, TWO_M64};
use std::arch::x86_64::*;

/// (l, ∂l/∂z, good-mask as −1/0 lanes) of 4 elements: [`super::bce_fast_element`]'s bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bce_fast4(z: __m256d, t: __m256d) -> (__m256d, __m256d, __m256d) {
    let s = _mm256_set1_pd;
    let (zero, one) = (_mm256_setzero_pd(), s(1.0));
    let sign = s(-0.0);
    // domain: |z| ≤ 700, t ∈ [0, 1] (false for NaN); zz = z there, else +0
    let az = _mm256_andnot_pd(sign, z);
    let ok_in = _mm256_and_pd(
        _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_LE_OQ>(az, s(700.0)),
            _mm256_cmp_pd::<_CMP_GE_OQ>(t, zero),
        ),
        _mm256_cmp_pd::<_CMP_LE_OQ>(t, one),
    );
    let zz = _mm256_and_pd(ok_in, z);
    // e = exp_nonpos(−|zz|)
    let x = _mm256_xor_pd(_mm256_andnot_pd(sign, zz), sign);
    let tt = _mm256_fmadd_pd(x, s(LOG2E), s(SHIFT_NONPOS));
    let k = _mm256_sub_pd(tt, s(SHIFT_NONPOS));
    let r = _mm256_fnmadd_pd(k, s(LN2_LO), _mm256_fnmadd_pd(k, s(LN2_HI), x));
    let mut q = s(Q[9]);
    for &c in Q[..9].iter().rev() {
        q = _mm256_fmadd_pd(q, r, s(c));
    }
    let p = _mm256_fmadd_pd(r, _mm256_fmadd_pd(r, q, one), one);
    let low = _mm256_and_si256(_mm256_castpd_si256(tt), _mm256_set1_epi64x(0x7ff));
    let scale = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(low));
    let e = _mm256_mul_pd(_mm256_mul_pd(p, scale), s(TWO_M64));
    // log1p_split(e)
    let y = _mm256_add_pd(one, e);
    let c = _mm256_sub_pd(e, _mm256_sub_pd(y, one));
    let big = _mm256_cmp_pd::<_CMP_GT_OQ>(y, s(std::f64::consts::SQRT_2));
    let m = _mm256_blendv_pd(y, _mm256_mul_pd(y, s(0.5)), big);
    let f = _mm256_sub_pd(m, one);
    // the one division
    let w = _mm256_add_pd(s(2.0), f);
    let qd = _mm256_div_pd(one, _mm256_mul_pd(y, w));
    let d = _mm256_mul_pd(w, qd);
    let sv = _mm256_mul_pd(f, _mm256_mul_pd(y, qd));
    let s2 = _mm256_mul_pd(sv, sv);
    let mut pp = s(P_FAST[7]);
    for &c in P_FAST[..7].iter().rev() {
        pp = _mm256_fmadd_pd(pp, s2, s(c));
    }
    let s_2 = _mm256_add_pd(sv, sv);
    let ln_m = _mm256_fmadd_pd(_mm256_mul_pd(s_2, s2), pp, s_2);
    // log1p_join
    let cy = _mm256_mul_pd(c, d);
    let small = _mm256_add_pd(ln_m, cy);
    let large = _mm256_add_pd(
        s(std::f64::consts::LN_2),
        _mm256_add_pd(ln_m, _mm256_add_pd(s(LN2_TAIL), cy)),
    );
    let l = _mm256_blendv_pd(small, large, big);
    // logistic_assemble(zz, e, l, d)
    let pos = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(zz, zero), zz);
    let neg = _mm256_and_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(zz, zero), _mm256_xor_pd(zz, sign));
    let ed = _mm256_mul_pd(e, d);
    let nonneg = _mm256_cmp_pd::<_CMP_GE_OQ>(zz, zero);
    let spp = _mm256_add_pd(pos, l);
    let spn = _mm256_add_pd(neg, l);
    let sp = _mm256_blendv_pd(ed, d, nonneg);
    let sn = _mm256_blendv_pd(d, ed, nonneg);
    // bce_fast_element
    let b = _mm256_sub_pd(one, t);
    let v = _mm256_add_pd(_mm256_mul_pd(t, spn), _mm256_mul_pd(b, spp));
    let p2 = _mm256_mul_pd(b, sp);
    let p1 = _mm256_mul_pd(t, sn);
    let g = _mm256_sub_pd(p2, p1);
    let big_enough = _mm256_cmp_pd::<_CMP_GE_OQ>(
        _mm256_andnot_pd(sign, g),
        _mm256_mul_pd(s(super::CANCEL), _mm256_add_pd(p1, p2)),
    );
    (v, g, _mm256_and_pd(ok_in, big_enough))
}

/// [`bce_fast4`] on 8 elements (two independent chains): (l, ∂l/∂z, good) per element.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bce_fast8(zb: &[f64; 8], tb: &[f64; 8]) -> ([f64; 8], [f64; 8], [bool; 8]) {
    let (z0, z1) = (_mm256_loadu_pd(zb.as_ptr()), _mm256_loadu_pd(zb.as_ptr().add(4)));
    let (t0, t1) = (_mm256_loadu_pd(tb.as_ptr()), _mm256_loadu_pd(tb.as_ptr().add(4)));
    let (v0, g0, m0) = bce_fast4(z0, t0);
    let (v1, g1, m1) = bce_fast4(z1, t1);
    let (mut vb, mut gb) = ([0.0f64; 8], [0.0f64; 8]);
    _mm256_storeu_pd(vb.as_mut_ptr(), v0);
    _mm256_storeu_pd(vb.as_mut_ptr().add(4), v1);
    _mm256_storeu_pd(gb.as_mut_ptr(), g0);
    _mm256_storeu_pd(gb.as_mut_ptr().add(4), g1);
    let bits = _mm256_movemask_pd(m0) | (_mm256_movemask_pd(m1) << 4);
    (vb, gb, std::array::from_fn(|k| bits >> k & 1 != 0))
}
