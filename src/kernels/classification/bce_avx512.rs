//! The `bce_logits` fast path in AVX-512 (F + DQ), 8 f64 lanes per vector: the generic
//! element ([`super::bce_domain`], [`super::bce_exp`], [`super::bce_rest`]) instantiated on
//! [`F64x8`] (comparisons give bit masks, selects are `mask_blend`, and exp_nonpos's exact
//! p·2^(k+64)·2⁻⁶⁴ is one `scalef`(p, k): the same rounding of the same exact product), so each
//! lane gives the plain path's bits (`tests/kernels_simd_elementwise.rs`,
//! `bce_logits_fast_path_bits`, compares all three code generations; the unit test
//! `simd_fast_elements_are_the_generic_element_lane_by_lane` compares the f64 lanes). This file
//! holds the loop structure, the loads and stores (f32 straight from registers), the prefetches
//! and the exact-path fix-ups.
//!
//! **Two passes per block.** One element's operations form a dependency chain of roughly 200
//! cycles (the exponential's polynomial, the division, the atanh series); with ~80 vector
//! operations per group of 8 the out-of-order window holds only a few groups, so the single
//! loop was bound by latency, not by the execution ports (removing operations did not speed
//! it up; interleaving two groups did not either). Each block therefore runs two loops: the
//! domain test and the exponentials, stored to an L1 buffer, then the domain test again and
//! the rest. Nothing is reordered within an element, so the bits are the same. Measured on a
//! 2-core Xeon VM (16M f32 elements, cache-resident blocks): 56 → 44 ms; three passes (the
//! division apart) were slower (47 ms).

use super::{bce_domain, bce_exp, bce_logits_point, bce_rest, BceFast, BLOCK};
use crate::kernels::reduce::FastScale;
use crate::kernels::vmath::simd_x86::F64x8;
use std::arch::x86_64::*;

/// How far ahead (elements) `groups_f32` prefetches its inputs and the gradient's lines: four
/// blocks (4 KiB of f32). Measured on a 2-core Xeon VM: 16M elements from memory 60 → 51 ms.
const PREFETCH: usize = 4 * BLOCK;

/// (l, ∂l/∂z, good-mask) of 8 elements: [`super::bce_fast_element`] on [`F64x8`].
///
/// # Safety
/// The CPU must support AVX-512 F and DQ.
#[cfg(test)]
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn bce_fast8(z: __m512d, t: __m512d) -> (__m512d, __m512d, __mmask8) {
    let (zz, ok_in) = domain8(z, t);
    rest8(zz, t, ok_in, exp8(zz))
}

/// [`super::bce_domain`] on 8 lanes: (zz, ok_in).
#[inline(always)]
unsafe fn domain8(z: __m512d, t: __m512d) -> (__m512d, __mmask8) {
    let (zz, ok_in) = bce_domain(F64x8(z), F64x8(t));
    (zz.0, ok_in)
}

/// [`super::bce_exp`] on 8 lanes.
#[inline(always)]
unsafe fn exp8(zz: __m512d) -> __m512d {
    bce_exp(F64x8(zz)).0
}

/// [`super::bce_rest`] on 8 lanes.
#[inline(always)]
unsafe fn rest8(zz: __m512d, t: __m512d, ok_in: __mmask8, e: __m512d) -> (__m512d, __m512d, __mmask8) {
    let (v, g, ok) = bce_rest(F64x8(zz), F64x8(t), ok_in, F64x8(e));
    (v.0, g.0, ok)
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
    let len = zb.len().min(tb.len()).min(vb.len()).min(gb.len()).min(BLOCK);
    // pass 1: the exponentials (see the module's note on the two passes)
    let mut eb = [0.0f64; BLOCK];
    let mut j = 0;
    while j + 8 <= len {
        let (zz, _) = domain8(_mm512_loadu_pd(zb.as_ptr().add(j)), _mm512_loadu_pd(tb.as_ptr().add(j)));
        _mm512_storeu_pd(eb.as_mut_ptr().add(j), exp8(zz));
        j += 8;
    }
    let mut acc = _mm512_loadu_pd(lanes.as_ptr());
    let mut j = 0;
    while j + 8 <= len {
        let z = _mm512_loadu_pd(zb.as_ptr().add(j));
        let t = _mm512_loadu_pd(tb.as_ptr().add(j));
        let (zz, ok_in) = domain8(z, t);
        let (mut v, mut g, ok) = rest8(zz, t, ok_in, _mm512_loadu_pd(eb.as_ptr().add(j)));
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
/// wanted); the values added to `lanes`. [`groups`]' bits without its f64 block buffers, and
/// prefetching: the inputs [`PREFETCH`] elements ahead (pass 1), the gradient's lines as
/// much ahead for writing (pass 2). Returns how many elements were done (the tail is the
/// caller's).
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
    let len = z.len().min(t.len()).min(BLOCK);
    let want = !g.is_empty();
    debug_assert!(!want || g.len() >= len);
    let load = |j: usize| {
        let zv = _mm512_cvtps_pd(_mm256_loadu_ps(z.as_ptr().add(j)));
        (zv, _mm512_cvtps_pd(_mm256_loadu_ps(t.as_ptr().add(j))))
    };
    // pass 1: the exponentials
    let mut eb = [0.0f64; BLOCK];
    let mut j = 0;
    while j + 8 <= len {
        if j % 16 == 0 {
            // one 64-byte line of each input per two groups (a prefetch never faults)
            _mm_prefetch::<_MM_HINT_T0>(z.as_ptr().wrapping_add(j + PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(t.as_ptr().wrapping_add(j + PREFETCH).cast());
        }
        let (zv, tv) = load(j);
        let (zz, _) = domain8(zv, tv);
        _mm512_storeu_pd(eb.as_mut_ptr().add(j), exp8(zz));
        j += 8;
    }
    let mut acc = _mm512_loadu_pd(lanes.as_ptr());
    let mut j = 0;
    while j + 8 <= len {
        let (zv, tv) = load(j);
        let (zz, ok_in) = domain8(zv, tv);
        let (mut v, mut gv, ok) = rest8(zz, tv, ok_in, _mm512_loadu_pd(eb.as_ptr().add(j)));
        if ok != 0xff {
            // the rare element near the zero crossing (or out of the domain): exact path
            (v, gv) = fix8((v, gv), ok, (&z[j..j + 8], &t[j..j + 8]));
        }
        if want {
            if j % 16 == 0 {
                _mm_prefetch::<_MM_HINT_ET0>(g.as_ptr().wrapping_add(j + PREFETCH).cast());
            }
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
