//! The `bce_logits` fast path in AVX2 + FMA, 4 f64 lanes per vector: the generic element
//! ([`super::bce_domain`], [`super::bce_exp`], [`super::bce_rest`]) instantiated on
//! [`F64x4`], whose every method is one IEEE operation (or comparison, select, exponent-bit
//! shift) per lane, so each lane gives the plain path's bits (`tests/kernels_simd_elementwise.rs`,
//! `bce_logits_fast_path_bits`; the unit test
//! `simd_fast_elements_are_the_generic_element_lane_by_lane` compares the f64 lanes). This file
//! holds the loop structure (two passes per block, see [`super::bce_avx512`]), the loads and
//! stores and the exact-path fix-ups; the arithmetic is written once, in the parent module.

use super::{bce_domain, bce_exp, bce_logits_point, bce_rest, BceFast, BLOCK};
use crate::kernels::reduce::FastScale;
use crate::kernels::vmath::simd_x86::F64x4;
use std::arch::x86_64::*;

/// (l, ∂l/∂z, good-mask as −1/0 lanes) of 4 elements: [`super::bce_fast_element`] on
/// [`F64x4`].
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

/// [`super::bce_domain`] on 4 lanes: (zz, ok_in).
#[inline(always)]
unsafe fn domain4(z: __m256d, t: __m256d) -> (__m256d, __m256d) {
    let (zz, ok_in) = bce_domain(F64x4(z), F64x4(t));
    (zz.0, ok_in)
}

/// [`super::bce_exp`] on 4 lanes.
#[inline(always)]
unsafe fn exp4(zz: __m256d) -> __m256d {
    bce_exp(F64x4(zz)).0
}

/// [`super::bce_rest`] on 4 lanes.
#[inline(always)]
unsafe fn rest4(zz: __m256d, t: __m256d, ok_in: __m256d, e: __m256d) -> (__m256d, __m256d, __m256d) {
    let (v, g, ok) = bce_rest(F64x4(zz), F64x4(t), ok_in, F64x4(e));
    (v.0, g.0, ok)
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
