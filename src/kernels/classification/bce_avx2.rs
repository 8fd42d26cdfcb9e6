//! The `bce_logits` fast element ([`super::bce_fast_element`], with
//! [`vmath::logistic_fast_core`](crate::kernels::vmath::logistic_fast_core)) in AVX2 + FMA
//! intrinsics, 4 f64 lanes per vector. Every operation is the one of the generic (plain) source
//! in the same order — IEEE add / sub / mul / div, correctly rounded fma (`vfmadd` and
//! `vfnmadd`: −(k·c) + x rounded once is fma(−k, c, x)), comparisons and selects, exponent bits
//! by integer shifts — so each lane gives the plain path's bits
//! (`tests/kernels_simd_elementwise.rs`, `bce_logits_fast_path_bits`). The one omission:
//! `exp_nonpos`'s clamp at −746, a no-op here (the argument is −|z| ≥ −700 after the domain
//! select).

use super::{bce_logits_point, BceFast, BLOCK};
use crate::kernels::reduce::FastScale;
use crate::kernels::vmath::{
    ATANH_SERIES, LN2_HI, LN2_LO, LN2_TAIL, LOG2E, Q, SHIFT_NONPOS, TWO_M64,
};
use std::arch::x86_64::*;

/// (l, ∂l/∂z, good-mask as −1/0 lanes) of 4 elements: [`super::bce_fast_element`]'s bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[cfg(test)]
pub(super) unsafe fn bce_fast4(z: __m256d, t: __m256d) -> (__m256d, __m256d, __m256d) {
    let (zz, ok_in) = domain4(z, t);
    rest4(zz, t, ok_in, exp4(zz))
}

/// The domain test: |z| ≤ 700, t ∈ [0, 1] (false for NaN); (zz, ok_in), zz = z there, else +0.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn domain4(z: __m256d, t: __m256d) -> (__m256d, __m256d) {
    let s = _mm256_set1_pd;
    let az = _mm256_andnot_pd(s(-0.0), z);
    let ok_in = _mm256_and_pd(
        _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_LE_OQ>(az, s(700.0)),
            _mm256_cmp_pd::<_CMP_GE_OQ>(t, _mm256_setzero_pd()),
        ),
        _mm256_cmp_pd::<_CMP_LE_OQ>(t, s(1.0)),
    );
    (_mm256_and_pd(ok_in, z), ok_in)
}

/// e = exp_nonpos(−|zz|), |zz| ≤ 700.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp4(zz: __m256d) -> __m256d {
    let s = _mm256_set1_pd;
    let one = s(1.0);
    let x = _mm256_or_pd(zz, s(-0.0)); // −|zz|
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
    _mm256_mul_pd(_mm256_mul_pd(p, scale), s(TWO_M64))
}

/// The rest of [`bce_fast4`], from [`domain4`]'s and [`exp4`]'s results.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rest4(zz: __m256d, t: __m256d, ok_in: __m256d, e: __m256d) -> (__m256d, __m256d, __m256d) {
    let s = _mm256_set1_pd;
    let (zero, one) = (_mm256_setzero_pd(), s(1.0));
    let sign = s(-0.0);
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
    let mut pp = s(ATANH_SERIES[7]);
    for &c in ATANH_SERIES[..7].iter().rev() {
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
    // bce_fast_element
    let nonneg = _mm256_cmp_pd::<_CMP_GE_OQ>(zz, zero);
    let b = _mm256_sub_pd(one, t);
    let v = _mm256_fmadd_pd(
        _mm256_blendv_pd(t, b, nonneg),
        _mm256_andnot_pd(sign, zz),
        l,
    );
    let ed = _mm256_mul_pd(e, d);
    let sp = _mm256_blendv_pd(ed, d, nonneg);
    let sn = _mm256_blendv_pd(d, ed, nonneg);
    let p2 = _mm256_mul_pd(b, sp);
    let p1 = _mm256_mul_pd(t, sn);
    let g = _mm256_sub_pd(p2, p1);
    let big_enough = _mm256_cmp_pd::<_CMP_GE_OQ>(
        _mm256_andnot_pd(sign, g),
        _mm256_mul_pd(s(super::CANCEL), _mm256_add_pd(p1, p2)),
    );
    (v, g, _mm256_and_pd(ok_in, big_enough))
}

/// [`FastScale::apply`] on 4 lanes: the same bits.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale4(scale: FastScale, g: __m256d) -> __m256d {
    match scale {
        FastScale::Mul(s) => _mm256_mul_pd(g, _mm256_set1_pd(s)),
        FastScale::Div(cot, den) => {
            let v = _mm256_div_pd(_mm256_mul_pd(g, _mm256_set1_pd(cot)), _mm256_set1_pd(den));
            let zero = _mm256_setzero_pd();
            _mm256_blendv_pd(v, zero, _mm256_cmp_pd::<_CMP_EQ_OQ>(g, zero))
        }
    }
}

/// The whole groups of 8 of a block (`BceFast::groups_plain`'s bits, in registers): returns
/// how many elements were done (the tail is the caller's).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn groups<T>(
    job: &BceFast<'_, T>,
    (zb, tb): (&[f64], &[f64]),
    (vb, gb): (&mut [f64], &mut [f64]),
    lanes: &mut [f64; 8],
) -> usize {
    let len = zb.len().min(tb.len()).min(vb.len()).min(gb.len()).min(BLOCK);
    // pass 1: the exponentials (two passes as in `bce_avx512`: shorter dependency chains)
    let mut eb = [0.0f64; BLOCK];
    let mut j = 0;
    while j + 4 <= len {
        let (zz, _) = domain4(_mm256_loadu_pd(zb.as_ptr().add(j)), _mm256_loadu_pd(tb.as_ptr().add(j)));
        _mm256_storeu_pd(eb.as_mut_ptr().add(j), exp4(zz));
        j += 4;
    }
    let mut acc0 = _mm256_loadu_pd(lanes.as_ptr());
    let mut acc1 = _mm256_loadu_pd(lanes.as_ptr().add(4));
    let mut j = 0;
    while j + 8 <= len {
        let (zp, tp) = (zb.as_ptr().add(j), tb.as_ptr().add(j));
        let (z0, z1) = (_mm256_loadu_pd(zp), _mm256_loadu_pd(zp.add(4)));
        let (t0, t1) = (_mm256_loadu_pd(tp), _mm256_loadu_pd(tp.add(4)));
        let ((zz0, ok0), (zz1, ok1)) = (domain4(z0, t0), domain4(z1, t1));
        let ep = eb.as_ptr().add(j);
        let (mut v0, mut g0, m0) = rest4(zz0, t0, ok0, _mm256_loadu_pd(ep));
        let (mut v1, mut g1, m1) = rest4(zz1, t1, ok1, _mm256_loadu_pd(ep.add(4)));
        let bits = _mm256_movemask_pd(m0) | (_mm256_movemask_pd(m1) << 4);
        if bits != 0xff {
            // the rare element near the zero crossing (or out of the domain): exact path
            let (mut v, mut g) = ([0.0f64; 8], [0.0f64; 8]);
            _mm256_storeu_pd(v.as_mut_ptr(), v0);
            _mm256_storeu_pd(v.as_mut_ptr().add(4), v1);
            _mm256_storeu_pd(g.as_mut_ptr(), g0);
            _mm256_storeu_pd(g.as_mut_ptr().add(4), g1);
            for k in 0..8 {
                if bits >> k & 1 == 0 {
                    (v[k], g[k]) = bce_logits_point(zb[j + k], tb[j + k], tb[j + k]);
                }
            }
            (v0, v1) = (
                _mm256_loadu_pd(v.as_ptr()),
                _mm256_loadu_pd(v.as_ptr().add(4)),
            );
            (g0, g1) = (
                _mm256_loadu_pd(g.as_ptr()),
                _mm256_loadu_pd(g.as_ptr().add(4)),
            );
        }
        if job.want {
            let gp = gb.as_mut_ptr().add(j);
            _mm256_storeu_pd(gp, scale4(job.scale, g0));
            _mm256_storeu_pd(gp.add(4), scale4(job.scale, g1));
        }
        if job.none {
            let vp = vb.as_mut_ptr().add(j);
            _mm256_storeu_pd(vp, v0);
            _mm256_storeu_pd(vp.add(4), v1);
        } else {
            acc0 = _mm256_add_pd(acc0, v0);
            acc1 = _mm256_add_pd(acc1, v1);
        }
        j += 8;
    }
    _mm256_storeu_pd(lanes.as_mut_ptr(), acc0);
    _mm256_storeu_pd(lanes.as_mut_ptr().add(4), acc1);
    j
}
