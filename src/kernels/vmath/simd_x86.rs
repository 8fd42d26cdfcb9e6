//! [`Lane`] over x86 vector registers: [`F64x4`] (AVX2 + FMA, masks as all-ones / zero lanes)
//! and [`F64x8`] (AVX-512 F + DQ, masks as bit masks). Each method is one IEEE operation (or a
//! comparison, a select, an exponent-bit shift) on every lane, so generic source instantiated
//! with these types performs per lane the operations of its f64 instantiation: the same bits.
//!
//! The methods are `#[inline(always)]` and call the intrinsics without a `target_feature` of
//! their own: they may only be used inside functions compiled with the features (then the
//! intrinsics inline there); anywhere else calling them is undefined behaviour on a CPU
//! without the features, hence the `unsafe` constructor contract below.

use super::{Lane, LaneIo};
use std::arch::x86_64::*;

/// 4 f64 lanes in an AVX2 register. Only for code compiled with `avx2,fma` enabled, run on a
/// CPU that has them.
#[derive(Clone, Copy, Debug)]
pub struct F64x4(pub __m256d);

/// 8 f64 lanes in an AVX-512 register. Only for code compiled with `avx512f,avx512dq`
/// enabled, run on a CPU that has them.
#[derive(Clone, Copy, Debug)]
pub struct F64x8(pub __m512d);

macro_rules! binops {
    ($t:ident, $add:ident, $sub:ident, $mul:ident, $div:ident, $xor:ident, $set1:ident) => {
        impl std::ops::Add for $t {
            type Output = Self;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                // SAFETY: the type's contract (the features are enabled and present).
                $t(unsafe { $add(self.0, o.0) })
            }
        }
        impl std::ops::Sub for $t {
            type Output = Self;
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                // SAFETY: as above.
                $t(unsafe { $sub(self.0, o.0) })
            }
        }
        impl std::ops::Mul for $t {
            type Output = Self;
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                // SAFETY: as above.
                $t(unsafe { $mul(self.0, o.0) })
            }
        }
        impl std::ops::Div for $t {
            type Output = Self;
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                // SAFETY: as above.
                $t(unsafe { $div(self.0, o.0) })
            }
        }
        impl std::ops::Neg for $t {
            type Output = Self;
            #[inline(always)]
            fn neg(self) -> Self {
                // SAFETY: as above. (−x flips the sign bit, NaN included.)
                $t(unsafe { $xor(self.0, $set1(-0.0)) })
            }
        }
    };
}
binops!(F64x4, _mm256_add_pd, _mm256_sub_pd, _mm256_mul_pd, _mm256_div_pd, _mm256_xor_pd, _mm256_set1_pd);
binops!(F64x8, _mm512_add_pd, _mm512_sub_pd, _mm512_mul_pd, _mm512_div_pd, _mm512_xor_pd, _mm512_set1_pd);

// SAFETY (every `unsafe` block below): the type's contract.
impl Lane for F64x4 {
    type Mask = __m256d;
    #[inline(always)]
    fn splat(x: f64) -> Self {
        F64x4(unsafe { _mm256_set1_pd(x) })
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        F64x4(unsafe { _mm256_fmadd_pd(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn abs(self) -> Self {
        F64x4(unsafe { _mm256_andnot_pd(_mm256_set1_pd(-0.0), self.0) })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> __m256d {
        unsafe { _mm256_cmp_pd::<_CMP_LT_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn le(self, o: Self) -> __m256d {
        unsafe { _mm256_cmp_pd::<_CMP_LE_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn ge(self, o: Self) -> __m256d {
        unsafe { _mm256_cmp_pd::<_CMP_GE_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn gt(self, o: Self) -> __m256d {
        unsafe { _mm256_cmp_pd::<_CMP_GT_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn and(a: __m256d, b: __m256d) -> __m256d {
        unsafe { _mm256_and_pd(a, b) }
    }
    #[inline(always)]
    fn select(m: __m256d, a: Self, b: Self) -> Self {
        F64x4(unsafe { _mm256_blendv_pd(b.0, a.0, m) })
    }
    #[inline(always)]
    fn exponent_from_low_bits(self) -> Self {
        unsafe {
            let low = _mm256_and_si256(_mm256_castpd_si256(self.0), _mm256_set1_epi64x(0x7ff));
            F64x4(_mm256_castsi256_pd(_mm256_slli_epi64::<52>(low)))
        }
    }
    #[inline(always)]
    fn shift_to_exponent(self) -> Self {
        unsafe { F64x4(_mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_castpd_si256(self.0)))) }
    }
}

impl Lane for F64x8 {
    type Mask = __mmask8;
    #[inline(always)]
    fn splat(x: f64) -> Self {
        F64x8(unsafe { _mm512_set1_pd(x) })
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        F64x8(unsafe { _mm512_fmadd_pd(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn abs(self) -> Self {
        F64x8(unsafe { _mm512_abs_pd(self.0) })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> __mmask8 {
        unsafe { _mm512_cmp_pd_mask::<_CMP_LT_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn le(self, o: Self) -> __mmask8 {
        unsafe { _mm512_cmp_pd_mask::<_CMP_LE_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn ge(self, o: Self) -> __mmask8 {
        unsafe { _mm512_cmp_pd_mask::<_CMP_GE_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn gt(self, o: Self) -> __mmask8 {
        unsafe { _mm512_cmp_pd_mask::<_CMP_GT_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn and(a: __mmask8, b: __mmask8) -> __mmask8 {
        a & b
    }
    #[inline(always)]
    fn select(m: __mmask8, a: Self, b: Self) -> Self {
        F64x8(unsafe { _mm512_mask_blend_pd(m, b.0, a.0) })
    }
    #[inline(always)]
    fn exponent_from_low_bits(self) -> Self {
        unsafe {
            let low = _mm512_and_si512(_mm512_castpd_si512(self.0), _mm512_set1_epi64(0x7ff));
            F64x8(_mm512_castsi512_pd(_mm512_slli_epi64::<52>(low)))
        }
    }
    #[inline(always)]
    fn shift_to_exponent(self) -> Self {
        unsafe { F64x8(_mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_castpd_si512(self.0)))) }
    }
    /// One `scalef`: self·2^k rounded once, the same bits as the default's two products.
    #[inline(always)]
    fn scale_pow2(self, k: Self, _t: Self) -> Self {
        F64x8(unsafe { _mm512_scalef_pd(self.0, k.0) })
    }
}

impl LaneIo for F64x4 {
    const N: usize = 4;
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        let s = &s[..4];
        F64x4(unsafe { _mm256_loadu_pd(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, d: &mut [f64]) {
        let d = &mut d[..4];
        unsafe { _mm256_storeu_pd(d.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn bits(m: __m256d) -> u32 {
        unsafe { _mm256_movemask_pd(m) as u32 }
    }
}

impl LaneIo for F64x8 {
    const N: usize = 8;
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        let s = &s[..8];
        F64x8(unsafe { _mm512_loadu_pd(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, d: &mut [f64]) {
        let d = &mut d[..8];
        unsafe { _mm512_storeu_pd(d.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn bits(m: __mmask8) -> u32 {
        m as u32
    }
}
