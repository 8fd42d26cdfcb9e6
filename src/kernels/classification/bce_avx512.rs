//! The `bce_logits` fast element in AVX-512 (F + DQ) intrinsics, 8 f64 lanes per vector: the
//! operations of [`super::bce_avx2::bce_fast4`] (and so of the generic source,
//! [`super::bce_fast_element`]) in the same order, lane for lane — comparisons give bit masks
//! instead of vector masks, `mask_blend` replaces `blendv`, `maskz_mov` the and with the mask —
//! so each lane gives the plain path's bits (`tests/kernels_simd_elementwise.rs`,
//! `bce_logits_fast_path_bits`, compares all three code generations).

use super::{bce_logits_point, BceFast};
use crate::kernels::reduce::FastScale;
use crate::kernels::vmath::{
    ATANH_SERIES, LN2_HI, LN2_LO, LN2_TAIL, LOG2E, Q, SHIFT_NONPOS, TWO_M64,
};
use std::arch::x86_64::*;

/// (l, ∂l/∂z, good-mask) of 8 elements: [`super::bce_fast_element`]'s bits.
///
/// # Safety
/// The CPU must support AVX-512 F and DQ.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn bce_fast8(z: __m512d, t: __m512d) -> (__m512d, __m512d, __mmask8) {
    let s = _mm512_set1_pd;
    let (zero, one) = (_mm512_setzero_pd(), s(1.0));
    let sign = s(-0.0);
    // domain: |z| ≤ 700, t ∈ [0, 1] (false for NaN); zz = z there, else +0
    let az = _mm512_andnot_pd(sign, z);
    let ok_in = _mm512_cmp_pd_mask::<_CMP_LE_OQ>(az, s(700.0))
        & _mm512_cmp_pd_mask::<_CMP_GE_OQ>(t, zero)
        & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(t, one);
    let zz = _mm512_maskz_mov_pd(ok_in, z);
    // e = exp_nonpos(−|zz|)
    let x = _mm512_or_pd(zz, sign); // −|zz|
    let tt = _mm512_fmadd_pd(x, s(LOG2E), s(SHIFT_NONPOS));
    let k = _mm512_sub_pd(tt, s(SHIFT_NONPOS));
    let r = _mm512_fnmadd_pd(k, s(LN2_LO), _mm512_fnmadd_pd(k, s(LN2_HI), x));
    let mut q = s(Q[9]);
    for &c in Q[..9].iter().rev() {
        q = _mm512_fmadd_pd(q, r, s(c));
    }
    let p = _mm512_fmadd_pd(r, _mm512_fmadd_pd(r, q, one), one);
    let low = _mm512_and_si512(_mm512_castpd_si512(tt), _mm512_set1_epi64(0x7ff));
    let scale = _mm512_castsi512_pd(_mm512_slli_epi64::<52>(low));
    let e = _mm512_mul_pd(_mm512_mul_pd(p, scale), s(TWO_M64));
    // log1p_split(e)
    let y = _mm512_add_pd(one, e);
    let c = _mm512_sub_pd(e, _mm512_sub_pd(y, one));
    let big = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(y, s(std::f64::consts::SQRT_2));
    let m = _mm512_mask_blend_pd(big, y, _mm512_mul_pd(y, s(0.5)));
    let f = _mm512_sub_pd(m, one);
    // the one division
    let w = _mm512_add_pd(s(2.0), f);
    let qd = _mm512_div_pd(one, _mm512_mul_pd(y, w));
    let d = _mm512_mul_pd(w, qd);
    let sv = _mm512_mul_pd(f, _mm512_mul_pd(y, qd));
    let s2 = _mm512_mul_pd(sv, sv);
    let mut pp = s(ATANH_SERIES[7]);
    for &c in ATANH_SERIES[..7].iter().rev() {
        pp = _mm512_fmadd_pd(pp, s2, s(c));
    }
    let s_2 = _mm512_add_pd(sv, sv);
    let ln_m = _mm512_fmadd_pd(_mm512_mul_pd(s_2, s2), pp, s_2);
    // log1p_join
    let cy = _mm512_mul_pd(c, d);
    let small = _mm512_add_pd(ln_m, cy);
    let large = _mm512_add_pd(
        s(std::f64::consts::LN_2),
        _mm512_add_pd(ln_m, _mm512_add_pd(s(LN2_TAIL), cy)),
    );
    let l = _mm512_mask_blend_pd(big, small, large);
    // bce_fast_element
    let nonneg = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(zz, zero);
    let b = _mm512_sub_pd(one, t);
    let v = _mm512_fmadd_pd(
        _mm512_mask_blend_pd(nonneg, t, b),
        _mm512_andnot_pd(sign, zz),
        l,
    );
    let ed = _mm512_mul_pd(e, d);
    let sp = _mm512_mask_blend_pd(nonneg, ed, d);
    let sn = _mm512_mask_blend_pd(nonneg, d, ed);
    let p2 = _mm512_mul_pd(b, sp);
    let p1 = _mm512_mul_pd(t, sn);
    let g = _mm512_sub_pd(p2, p1);
    let big_enough = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(
        _mm512_andnot_pd(sign, g),
        _mm512_mul_pd(s(super::CANCEL), _mm512_add_pd(p1, p2)),
    );
    (v, g, ok_in & big_enough)
}

/// The lanes of (v, g) that `ok` leaves out, by the exact path ([`bce_logits_point`]) from the
/// group's inputs `zt` (f64 or f32, converted exactly). Out of line: rare.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn fix8<U: Copy + Into<f64>>(
    (v, g): (__m512d, __m512d),
    ok: __mmask8,
    (z, t): (&[U], &[U]),
) -> (__m512d, __m512d) {
    let (mut va, mut ga) = ([0.0f64; 8], [0.0f64; 8]);
    _mm512_storeu_pd(va.as_mut_ptr(), v);
    _mm512_storeu_pd(ga.as_mut_ptr(), g);
    for k in 0..8 {
        if ok >> k & 1 == 0 {
            let (zk, tk) = (z[k].into(), t[k].into());
            (va[k], ga[k]) = bce_logits_point(zk, tk, tk);
        }
    }
    (_mm512_loadu_pd(va.as_ptr()), _mm512_loadu_pd(ga.as_ptr()))
}

/// [`FastScale::apply`] on 8 lanes: the same bits.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn scale8(scale: FastScale, g: __m512d) -> __m512d {
    match scale {
        FastScale::Mul(s) => _mm512_mul_pd(g, _mm512_set1_pd(s)),
        FastScale::Div(cot, den) => {
            let v = _mm512_div_pd(_mm512_mul_pd(g, _mm512_set1_pd(cot)), _mm512_set1_pd(den));
            let zero = _mm512_setzero_pd();
            _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(g, zero), v, zero)
        }
    }
}

/// The whole groups of 8 of a block (`BceFast::groups_plain`'s bits, in registers): returns
/// how many elements were done (the tail is the caller's).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn groups<T>(
    job: &BceFast<'_, T>,
    (zb, tb): (&[f64], &[f64]),
    (vb, gb): (&mut [f64], &mut [f64]),
    lanes: &mut [f64; 8],
) -> usize {
    let len = zb.len().min(tb.len()).min(vb.len()).min(gb.len());
    let mut acc = _mm512_loadu_pd(lanes.as_ptr());
    let mut j = 0;
    while j + 8 <= len {
        let z = _mm512_loadu_pd(zb.as_ptr().add(j));
        let t = _mm512_loadu_pd(tb.as_ptr().add(j));
        let (mut v, mut g, ok) = bce_fast8(z, t);
        if ok != 0xff {
            // the rare element near the zero crossing (or out of the domain): exact path
            (v, g) = fix8((v, g), ok, (&zb[j..j + 8], &tb[j..j + 8]));
        }
        if job.want {
            _mm512_storeu_pd(gb.as_mut_ptr().add(j), scale8(job.scale, g));
        }
        if job.none {
            _mm512_storeu_pd(vb.as_mut_ptr().add(j), v);
        } else {
            acc = _mm512_add_pd(acc, v);
        }
        j += 8;
    }
    _mm512_storeu_pd(lanes.as_mut_ptr(), acc);
    j
}

/// The whole groups of 8 of a block of f32 inputs whose value is reduced: inputs converted to
/// f64 in registers (exactly), the gradient scaled and rounded to f32 in registers (one
/// rounding to nearest, as `store_f64`) and stored to `g` unless it is empty (no gradient
/// wanted); the values added to `lanes`. [`groups`]' bits without its f64 block buffers.
/// Returns how many elements were done (the tail is the caller's).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn groups_f32(
    scale: FastScale,
    (z, t): (&[f32], &[f32]),
    g: &mut [f32],
    lanes: &mut [f64; 8],
) -> usize {
    let len = z.len().min(t.len());
    let want = !g.is_empty();
    debug_assert!(!want || g.len() == len);
    let mut acc = _mm512_loadu_pd(lanes.as_ptr());
    let mut j = 0;
    while j + 8 <= len {
        let zv = _mm512_cvtps_pd(_mm256_loadu_ps(z.as_ptr().add(j)));
        let tv = _mm512_cvtps_pd(_mm256_loadu_ps(t.as_ptr().add(j)));
        let (mut v, mut gv, ok) = bce_fast8(zv, tv);
        if ok != 0xff {
            // the rare element near the zero crossing (or out of the domain): exact path
            (v, gv) = fix8((v, gv), ok, (&z[j..j + 8], &t[j..j + 8]));
        }
        if want {
            let gs = _mm512_cvtpd_ps(scale8(scale, gv));
            _mm256_storeu_ps(g.as_mut_ptr().add(j), gs);
        }
        acc = _mm512_add_pd(acc, v);
        j += 8;
    }
    _mm512_storeu_pd(lanes.as_mut_ptr(), acc);
    j
}

/// [`bce_fast8`] on arrays (for the lane-by-lane test against the generic element).
///
/// # Safety
/// The CPU must support AVX-512 F and DQ.
#[cfg(test)]
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn fast8_arrays(z: &[f64], t: &[f64]) -> ([f64; 8], [f64; 8], u8) {
    let (v, g, ok) = bce_fast8(_mm512_loadu_pd(z.as_ptr()), _mm512_loadu_pd(t.as_ptr()));
    let (mut va, mut ga) = ([0.0; 8], [0.0; 8]);
    _mm512_storeu_pd(va.as_mut_ptr(), v);
    _mm512_storeu_pd(ga.as_mut_ptr(), g);
    (va, ga, ok)
}
