//! e^{z − m} in f32 arithmetic, 8 lanes per AVX2 instruction: the exponential of the
//! cross-entropy fast path for f32 logits (`multiclass::ce_row_f32`).
//!
//! # `exp32_shift(z, m)` (z ≤ m, both f32, finite)
//!
//! 1. d + dl = z − m exactly: d = RN(z − m) and dl by Knuth's TwoSum (5 more operations).
//!    Without dl the rounding of z − m alone (up to ½ ulp of d, 2⁻²⁴·|d| relatively in
//!    e^{z−m}: 2⁻¹⁷ for d near −100) would dominate everything below.
//! 2. d is clamped to ≥ −104 and dl dropped there (e^{−104} < 2⁻¹⁵⁰, half the least
//!    subnormal: the result is 0 either way, to the ±2⁻¹⁴⁹ the bound allows there; dl,
//!    up to ½ulp(z), would otherwise carry r far outside the fit).
//! 3. k = round(d·log₂e) by the 1.5·2²³ shift trick (one fma), r = fma(−k, ln2_lo,
//!    fma(−k, ln2_hi, d)) + dl. ln2_hi has 16 significant bits, so k·ln2_hi is exact for
//!    |k| ≤ 151 and d − k·ln2_hi is exact (Sterbenz; the fma rounds an exact value);
//!    |r| ≤ 0.3466 + 2⁻²⁰.
//! 4. e^r ≈ 1 + (r + r²·q(r)), q a degree-4 weighted least-squares fit of (e^r − 1 − r)/r²
//!    on |r| ≤ 0.3476 (coefficients rounded to f32; fit error < 0.064u relatively in e^r,
//!    u = 2⁻²⁴, measured at 20,001 points in 120-bit arithmetic, benches-free script in
//!    docs/exhaustive.md).
//! 5. ·2^{k+64} by exponent bits (exact), then ·2⁻⁶⁴ (exact for normal results, one
//!    rounding into the subnormals otherwise).
//!
//! **Bound** (relative, normal results e^{z−m} ≥ 2⁻¹²⁶), in units of u = 2⁻²⁴: r's roundings
//! (the second fma and the + dl, each ≤ 2⁻²⁶ absolutely since |r| < ½): ≤ 0.5u; the fit
//! 0.064u; q's Horner and r² (damped by r² ≤ 0.121 and |q| ≤ 0.56: ≤ 0.07·6u ≈ 0.42u,
//! generously); x = fma(r², q, r) rounded once (|x| ≤ 0.42: ≤ 2⁻²⁶ absolutely, 0.36u
//! relatively in e^r ≥ 0.707); p = 1 + x rounded once (≤ 2⁻²⁴ absolutely, ≤ 1u
//! relatively). Total < 0.5 + 0.064 + 0.42 + 0.36 + 1 = 2.35u; [`EXP32_BOUND_U`] = 2.5
//! states it with room. Subnormal results: within 2⁻¹⁵⁰ + 2.5u·e^{z−m} absolutely. The
//! certificate (`losscheck exhaustive --function exp32_shift`, every f32 d ∈ [−104, 0] as
//! z = d, m = 0, where dl = 0) and `tests/kernels_simd_exp32.rs` (random pairs (z, m) with
//! dl ≠ 0, against MPFR) check it; the worst measured is in reports/exhaustive/vmath/.
//!
//! Every step is an IEEE operation on f32 (`f32::mul_add` is the correctly rounded fused
//! multiply-add), so the plain path and the AVX2 path give the same bits.

/// [`exp32_shift`]'s relative error bound in units of 2⁻²⁴ (normal results).
pub const EXP32_BOUND_U: f64 = 2.5;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2²³: adding it rounds to an integer.
const SHIFT: f32 = 12_582_912.0;
/// ln 2 to 16 significant bits (0x3f317200) and the rest (0x35bfbe8e).
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// q(r) ≈ (e^r − 1 − r)/r², lowest degree first.
const Q: [f32; 5] = [
    f32::from_bits(0x3eff_fffc),
    f32::from_bits(0x3e2a_aa46),
    f32::from_bits(0x3d2a_adb5),
    f32::from_bits(0x3c09_1ea9),
    f32::from_bits(0x3ab4_3b82),
];
const LIM: f32 = -104.0;
/// 2⁻⁶⁴.
const TWO_M64: f32 = f32::from_bits((127 - 64) << 23);

/// e^{z − m} for z ≤ m (finite f32), within [`EXP32_BOUND_U`]·2⁻²⁴ relatively (module docs);
/// e^0 = 1 exactly.
#[inline(always)]
pub fn exp32_shift(z: f32, m: f32) -> f32 {
    let d = z - m;
    let bb = d - z;
    let dl = (z - (d - bb)) + (-m - bb);
    // below LIM both parts go: dl can be as large as ½ulp(z) there (z = −f32::MAX,
    // m = 6.7e6 gives dl = −6.7e6), which would carry r far outside the fit
    let (d, dl) = if d < LIM { (LIM, 0.0) } else { (d, dl) };
    let t = d.mul_add(LOG2E, SHIFT);
    let kk = t - SHIFT;
    let r = (-kk).mul_add(LN2_HI, d);
    let r = (-kk).mul_add(LN2_LO, r) + dl;
    let mut q = Q[4];
    for &c in Q[..4].iter().rev() {
        q = q.mul_add(r, c);
    }
    let p = 1.0 + (r * r).mul_add(q, r);
    let scale = f32::from_bits(((kk as i32 + 191) as u32) << 23);
    (p * scale) * TWO_M64
}

/// Lanes of the sums.
const L: usize = 8;

/// The 8 f64 lane accumulators combined in `vmath::lane_sum`'s order.
#[inline(always)]
fn fold(acc: &[f64; L]) -> f64 {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// What one [`exp32_row`] pass returns.
#[derive(Clone, Copy, Debug)]
pub struct RowPass {
    /// s′ = Σ_{j≠k} e_j in f64: lane l takes j ≡ l mod 8 (e_k added as 0), the lanes combined
    /// in a fixed order, then the tail in order.
    pub sp: f64,
    /// max_{j≠k} e_j (0 when C = 1).
    pub e2: f32,
}

/// A row's gradient store: g_j = RN(e_j·ρ) (one IEEE product each, so the same bits on every
/// path), except at the `patch` indices, which get the given values (later pairs win). Done
/// by itself ([`Store::run`]) or during the next row's exponentials ([`exp32_row`]), where
/// the stores overlap the arithmetic. With `stream` (AVX2 path only) the 32-byte-aligned
/// parts of `g` away from the patches are written by non-temporal stores, which skip the
/// read-for-ownership of each line of a gradient far larger than the caches; everything
/// else by ordinary stores to locations the streaming stores do not touch. The caller makes
/// the streaming stores visible to other threads with [`store_fence`] before the gradient is
/// handed on.
#[derive(Debug)]
pub struct Store<'a> {
    pub e: &'a [f32],
    pub rho: f32,
    pub g: &'a mut [f32],
    pub stream: bool,
    pub patch: [(usize, f32); 2],
}

impl Store<'_> {
    /// The stores on their own.
    #[inline]
    pub fn run(self) {
        scale_store_f32(self.e, self.rho, self.g, self.stream, self.patch)
    }

    /// The ordinary stores that [`exp32_row_avx2`]'s loop leaves: g outside the chunks it
    /// covered, then the patches.
    #[inline(always)]
    fn rest(self, covered: std::ops::Range<usize>) {
        let n = self.g.len().min(self.e.len());
        let (a, b) = (covered.start.min(n), covered.end.min(n));
        scale_body(&self.e[..a], self.rho, &mut self.g[..a]);
        scale_body(&self.e[b..n], self.rho, &mut self.g[b..n]);
        for (j, v) in self.patch {
            self.g[j] = v;
        }
    }
}

/// One pass over a finite f32 row z with max m at index k: e_j = [`exp32_shift`](z_j, m) into
/// `out` (when given; e_k = 1), s′ and max_{j≠k} e_j ([`RowPass`]); and, when `prev` is
/// given, that (previous) row's gradient stores, done while this row's exponentials are
/// computed so that its memory traffic overlaps the arithmetic (`prev.e` and `out` are
/// different buffers; any lengths). The row after z in memory is prefetched into L2 meanwhile
/// (a hint: no effect on any result). AVX2 + FMA chosen at run time; the same bits either way.
#[inline]
pub fn exp32_row(z: &[f32], m: f32, k: usize, out: Option<&mut [f32]>, prev: Option<Store<'_>>) -> RowPass {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the features were detected at run time.
        return unsafe { exp32_row_avx512(z, m, k, out, prev) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the features were detected at run time.
        return unsafe { exp32_row_avx2(z, m, k, out, prev) };
    }
    exp32_row_plain(z, m, k, out, prev)
}

/// [`exp32_row`] compiled for the baseline target.
#[doc(hidden)]
#[inline(never)]
pub fn exp32_row_plain(z: &[f32], m: f32, k: usize, mut out: Option<&mut [f32]>, prev: Option<Store<'_>>) -> RowPass {
    let n8 = z.len() / L * L;
    let mut acc = [0.0f64; L];
    let mut mx = [0.0f32; L];
    for i in (0..n8).step_by(L) {
        for l in 0..L {
            let j = i + l;
            let v = exp32_shift(z[j], m);
            if let Some(o) = out.as_deref_mut() {
                o[j] = v;
            }
            let v = if j == k { 0.0 } else { v };
            acc[l] += v as f64;
            mx[l] = if v > mx[l] { v } else { mx[l] };
        }
    }
    if let Some(st) = prev {
        st.rest(0..0);
    }
    tail(z, m, k, out, n8, &acc, &mx)
}

/// The lanes' sums and maxima combined, then the tail j ≥ n8 in order.
#[inline(always)]
fn tail(z: &[f32], m: f32, k: usize, mut out: Option<&mut [f32]>, n8: usize, acc: &[f64; L], mx: &[f32; L]) -> RowPass {
    let mut s = fold(acc);
    let mut e2 = mx.iter().fold(0.0f32, |a, &b| if b > a { b } else { a });
    for j in n8..z.len() {
        let v = exp32_shift(z[j], m);
        if let Some(o) = out.as_deref_mut() {
            o[j] = v;
        }
        if j != k {
            s += v as f64;
            e2 = if v > e2 { v } else { e2 };
        }
    }
    RowPass { sp: s, e2 }
}

/// [`exp32_row`] with AVX2 + FMA intrinsics: [`exp32_shift`]'s operations in the same order on
/// 8 lanes, the same sums and maxima as the plain body, the same stored values.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
pub unsafe fn exp32_row_avx2(
    z: &[f32],
    m: f32,
    k: usize,
    mut out: Option<&mut [f32]>,
    prev: Option<Store<'_>>,
) -> RowPass {
    use std::arch::x86_64::*;
    let n8 = z.len() / L * L;
    let ahead = z.as_ptr().wrapping_add(z.len());
    let mv = _mm256_set1_ps(m);
    let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut mx = _mm256_setzero_ps();
    let (kb, ki) = (k / L * L, (k % L) as i32);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // the previous row's stores: chunk i of this loop stores g[off + i .. off + i + 8]
    // (off aligns them to 32 bytes when streaming), streamed unless a patch is in it
    let (mut prev, gn, off, rv) = match prev {
        Some(st) => {
            let gn = st.g.len().min(st.e.len());
            let off = if st.stream { st.g.as_ptr().align_offset(32).min(gn) } else { 0 };
            let rv = _mm256_set1_ps(st.rho);
            (Some(st), gn, off, rv)
        }
        None => (None, 0, 0, _mm256_setzero_ps()),
    };
    let chunk_of = |p: usize| if p >= off { (p - off) / L } else { usize::MAX };
    let (pc0, pc1, stream) = prev.as_ref().map_or((usize::MAX, usize::MAX, false), |st| {
        (chunk_of(st.patch[0].0), chunk_of(st.patch[1].0), st.stream)
    });
    let mut covered = off..off;
    let zp = z.as_ptr();
    for i in (0..n8).step_by(L) {
        if i % 16 == 0 {
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(i).cast::<i8>());
        }
        let mut v = exp8(_mm256_loadu_ps(zp.add(i)), mv);
        if let Some(o) = out.as_deref_mut() {
            _mm256_storeu_ps(o.as_mut_ptr().add(i), v);
        }
        if let Some(st) = prev.as_mut() {
            let j = off + i;
            if j + L <= gn {
                let g = st.g.as_mut_ptr().add(j);
                let w = _mm256_mul_ps(_mm256_loadu_ps(st.e.as_ptr().add(j)), rv);
                let c = i / L;
                if stream && c != pc0 && c != pc1 {
                    _mm256_stream_ps(g, w);
                } else {
                    _mm256_storeu_ps(g, w);
                }
                covered.end = j + L;
            }
        }
        if i == kb {
            // e_k enters the sum and the max as 0
            let at_k = _mm256_cmpeq_epi32(lanes, _mm256_set1_epi32(ki));
            v = _mm256_andnot_ps(_mm256_castsi256_ps(at_k), v);
        }
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)));
        mx = _mm256_max_ps(v, mx);
    }
    if let Some(st) = prev {
        st.rest(covered);
    }
    let mut acc = [0.0f64; L];
    _mm256_storeu_pd(acc.as_mut_ptr(), a0);
    _mm256_storeu_pd(acc.as_mut_ptr().add(4), a1);
    let mut lanes_mx = [0.0f32; L];
    _mm256_storeu_ps(lanes_mx.as_mut_ptr(), mx);
    tail(z, m, k, out, n8, &acc, &lanes_mx)
}

/// [`exp32_row`] with AVX-512 (F + DQ) intrinsics: [`exp32_shift`]'s operations in the same
/// order on 16 lanes ([`exp16`]), the previous row's stores as two 8-lane chunks per step (the
/// chunks, streaming and patches of [`exp32_row_avx2`]), each half of a step added to the 8
/// f64 lane sums in turn (lane l still takes j ≡ l mod 8 in order), the maxima of lanes l and
/// l + 8 combined (a max does not depend on the order); a last group of 8 by [`exp8`]. The
/// same sums, maxima and stored values as the plain body.
///
/// # Safety
/// The CPU must support AVX-512 F and DQ, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
#[inline(never)]
pub unsafe fn exp32_row_avx512(
    z: &[f32],
    m: f32,
    k: usize,
    mut out: Option<&mut [f32]>,
    prev: Option<Store<'_>>,
) -> RowPass {
    use std::arch::x86_64::*;
    const W: usize = 2 * L;
    let (n8, n16) = (z.len() / L * L, z.len() / W * W);
    let ahead = z.as_ptr().wrapping_add(z.len());
    let mv = _mm512_set1_ps(m);
    let mut acc = _mm512_setzero_pd();
    let mut mx = _mm512_setzero_ps();
    let (kb, ki) = (k / W * W, (k % W) as i32);
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let (mut prev, gn, off, rv) = match prev {
        Some(st) => {
            let gn = st.g.len().min(st.e.len());
            let off = if st.stream { st.g.as_ptr().align_offset(32).min(gn) } else { 0 };
            let rv = _mm256_set1_ps(st.rho);
            (Some(st), gn, off, rv)
        }
        None => (None, 0, 0, _mm256_setzero_ps()),
    };
    let chunk_of = |p: usize| if p >= off { (p - off) / L } else { usize::MAX };
    let (pc0, pc1, stream) = prev.as_ref().map_or((usize::MAX, usize::MAX, false), |st| {
        (chunk_of(st.patch[0].0), chunk_of(st.patch[1].0), st.stream)
    });
    let mut covered = off..off;
    // the previous row's chunk c = i / 8: g[off + i .. off + i + 8], as in exp32_row_avx2
    let mut store = |prev: &mut Option<Store<'_>>, i: usize| {
        if let Some(st) = prev.as_mut() {
            let j = off + i;
            if j + L <= gn {
                let g = st.g.as_mut_ptr().add(j);
                let w = _mm256_mul_ps(_mm256_loadu_ps(st.e.as_ptr().add(j)), rv);
                let c = i / L;
                if stream && c != pc0 && c != pc1 {
                    _mm256_stream_ps(g, w);
                } else {
                    _mm256_storeu_ps(g, w);
                }
                covered.end = j + L;
            }
        }
    };
    let zp = z.as_ptr();
    for i in (0..n16).step_by(W) {
        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(i).cast::<i8>());
        let mut v = exp16(_mm512_loadu_ps(zp.add(i)), mv);
        if let Some(o) = out.as_deref_mut() {
            _mm512_storeu_ps(o.as_mut_ptr().add(i), v);
        }
        store(&mut prev, i);
        store(&mut prev, i + L);
        if i == kb {
            // e_k enters the sum and the max as 0
            let at_k = _mm512_cmpeq_epi32_mask(lanes, _mm512_set1_epi32(ki));
            v = _mm512_maskz_mov_ps(!at_k, v);
        }
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))));
        mx = _mm512_max_ps(v, mx);
    }
    let mut lanes_mx = [0.0f32; W];
    _mm512_storeu_ps(lanes_mx.as_mut_ptr(), mx);
    let mut mx8 = [0.0f32; L];
    for l in 0..L {
        let (a, b) = (lanes_mx[l], lanes_mx[l + L]);
        mx8[l] = if a > b { a } else { b };
    }
    let mut sums = [0.0f64; L];
    _mm512_storeu_pd(sums.as_mut_ptr(), acc);
    if n8 > n16 {
        // one group of 8 left before the tail
        let i = n16;
        let v = exp8(_mm256_loadu_ps(zp.add(i)), _mm256_set1_ps(m));
        if let Some(o) = out.as_deref_mut() {
            _mm256_storeu_ps(o.as_mut_ptr().add(i), v);
        }
        store(&mut prev, i);
        let mut va = [0.0f32; L];
        _mm256_storeu_ps(va.as_mut_ptr(), v);
        if k / L * L == i {
            va[k % L] = 0.0;
        }
        for l in 0..L {
            sums[l] += va[l] as f64;
            mx8[l] = if va[l] > mx8[l] { va[l] } else { mx8[l] };
        }
    }
    if let Some(st) = prev {
        st.rest(covered);
    }
    tail(z, m, k, out, n8, &sums, &mx8)
}

/// [`exp8`] on 16 lanes: the same operations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
unsafe fn exp16(z: std::arch::x86_64::__m512, m: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let d = _mm512_sub_ps(z, m);
    let bb = _mm512_sub_ps(d, z);
    let nm = _mm512_xor_ps(m, _mm512_set1_ps(-0.0));
    let dl = _mm512_add_ps(_mm512_sub_ps(z, _mm512_sub_ps(d, bb)), _mm512_sub_ps(nm, bb));
    let lim = _mm512_set1_ps(LIM);
    // the plain clamp (LIM, 0) where d < LIM, for every non-NaN d (d = −∞ included)
    let dl = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(d, lim), dl);
    let d = _mm512_max_ps(d, lim);
    let sh = _mm512_set1_ps(SHIFT);
    let t = _mm512_fmadd_ps(d, _mm512_set1_ps(LOG2E), sh);
    let kk = _mm512_sub_ps(t, sh);
    let r = _mm512_fnmadd_ps(kk, _mm512_set1_ps(LN2_HI), d);
    let r = _mm512_add_ps(_mm512_fnmadd_ps(kk, _mm512_set1_ps(LN2_LO), r), dl);
    let mut q = _mm512_set1_ps(Q[4]);
    for &c in Q[..4].iter().rev() {
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(c));
    }
    let x = _mm512_fmadd_ps(_mm512_mul_ps(r, r), q, r);
    let p = _mm512_add_ps(_mm512_set1_ps(1.0), x);
    let ki = _mm512_cvtps_epi32(kk);
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(ki, _mm512_set1_epi32(191)));
    _mm512_mul_ps(_mm512_mul_ps(p, _mm512_castsi512_ps(bits)), _mm512_set1_ps(TWO_M64))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp8(z: std::arch::x86_64::__m256, m: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let d = _mm256_sub_ps(z, m);
    let bb = _mm256_sub_ps(d, z);
    let nm = _mm256_xor_ps(m, _mm256_set1_ps(-0.0));
    let dl = _mm256_add_ps(_mm256_sub_ps(z, _mm256_sub_ps(d, bb)), _mm256_sub_ps(nm, bb));
    let lim = _mm256_set1_ps(LIM);
    // the plain clamp (LIM, 0) where d < LIM, for every non-NaN d (d = −∞ included)
    let dl = _mm256_and_ps(dl, _mm256_cmp_ps::<_CMP_GE_OQ>(d, lim));
    let d = _mm256_max_ps(d, lim);
    let sh = _mm256_set1_ps(SHIFT);
    let t = _mm256_fmadd_ps(d, _mm256_set1_ps(LOG2E), sh);
    let kk = _mm256_sub_ps(t, sh);
    let r = _mm256_fnmadd_ps(kk, _mm256_set1_ps(LN2_HI), d);
    let r = _mm256_add_ps(_mm256_fnmadd_ps(kk, _mm256_set1_ps(LN2_LO), r), dl);
    let mut q = _mm256_set1_ps(Q[4]);
    for &c in Q[..4].iter().rev() {
        q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(c));
    }
    let x = _mm256_fmadd_ps(_mm256_mul_ps(r, r), q, r);
    let p = _mm256_add_ps(_mm256_set1_ps(1.0), x);
    let ki = _mm256_cvtps_epi32(kk);
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(ki, _mm256_set1_epi32(191)));
    _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), _mm256_set1_ps(TWO_M64))
}

/// (max, index k of its first occurrence, every value finite) of a non-empty f32 row; the max
/// ignores NaN and is returned as z_k (so a max of zero has the sign of the first zero,
/// whatever order the lanes were combined in). For a row that is not finite only the flag
/// is meant. AVX2 chosen at run time (the same answer either way).
#[inline]
pub fn max_first_f32(z: &[f32]) -> (f32, usize, bool) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the features were detected at run time.
        return unsafe { max_first_f32_avx512(z) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the features were detected at run time.
        return unsafe { max_first_f32_avx2(z) };
    }
    max_first_f32_plain(z)
}

#[inline(always)]
fn max_first_body(z: &[f32]) -> (f32, usize, bool) {
    let mut acc = [f32::NEG_INFINITY; L];
    let mut chk = [0.0f32; L];
    let n8 = z.len() / L * L;
    for i in (0..n8).step_by(L) {
        for l in 0..L {
            let x = z[i + l];
            acc[l] = if x > acc[l] { x } else { acc[l] };
            chk[l] += x * 0.0; // ±0 while finite, NaN after an inf or a NaN
        }
    }
    let (m, fin) = max_fold(&acc, &chk, &z[n8..]);
    let k = first_eq(z, m).unwrap_or(0);
    (z[k], k, fin)
}

/// The lanes' max (`>`, lane 0 first) and finiteness test, then the tail's.
#[inline(always)]
fn max_fold(acc: &[f32; L], chk: &[f32; L], tail: &[f32]) -> (f32, bool) {
    let mut m = f32::NEG_INFINITY;
    let mut c = 0.0f32;
    for l in 0..L {
        m = if acc[l] > m { acc[l] } else { m };
        c += chk[l];
    }
    for &x in tail {
        m = if x > m { x } else { m };
        c += x * 0.0;
    }
    (m, c == 0.0)
}

/// [`max_first_f32`] compiled for the baseline target.
#[doc(hidden)]
#[inline(never)]
pub fn max_first_f32_plain(z: &[f32]) -> (f32, usize, bool) {
    max_first_body(z)
}

/// [`max_first_f32`] compiled with AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
pub unsafe fn max_first_f32_avx2(z: &[f32]) -> (f32, usize, bool) {
    use std::arch::x86_64::*;
    let n8 = z.len() / L * L;
    let zp = z.as_ptr();
    // four independent chains (the max and the finiteness test do not depend on the order,
    // so the answer is the plain body's): one chain is bound by the 4-cycle latency of
    // vmaxps / vaddps, four keep up with L2
    let mut acc = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
    let mut chk = [_mm256_setzero_ps(); 4];
    let zero = _mm256_setzero_ps();
    let n32 = n8 / (4 * L) * (4 * L);
    for i in (0..n32).step_by(4 * L) {
        for u in 0..4 {
            let x = _mm256_loadu_ps(zp.add(i + u * L));
            acc[u] = _mm256_max_ps(x, acc[u]); // x > acc ? x : acc, as the plain body
            chk[u] = _mm256_add_ps(chk[u], _mm256_mul_ps(x, zero));
        }
    }
    for i in (n32..n8).step_by(L) {
        let x = _mm256_loadu_ps(zp.add(i));
        acc[0] = _mm256_max_ps(x, acc[0]);
        chk[0] = _mm256_add_ps(chk[0], _mm256_mul_ps(x, zero));
    }
    let acc = _mm256_max_ps(_mm256_max_ps(acc[0], acc[1]), _mm256_max_ps(acc[2], acc[3]));
    let chk = _mm256_add_ps(_mm256_add_ps(chk[0], chk[1]), _mm256_add_ps(chk[2], chk[3]));
    let (mut a, mut c) = ([0.0f32; L], [0.0f32; L]);
    _mm256_storeu_ps(a.as_mut_ptr(), acc);
    _mm256_storeu_ps(c.as_mut_ptr(), chk);
    let (m, fin) = max_fold(&a, &c, &z[n8..]);
    let mv = _mm256_set1_ps(m);
    for i in (0..n8).step_by(L) {
        let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_loadu_ps(zp.add(i)), mv));
        if hit != 0 {
            let k = i + hit.trailing_zeros() as usize;
            return (z[k], k, fin);
        }
    }
    let k = first_eq(&z[n8..], m).map_or(0, |p| n8 + p);
    (z[k], k, fin)
}

/// [`max_first_f32`] with AVX-512 (16 lanes, four chains): the lanes l and l + 8 are combined
/// first (a max and a finiteness test do not depend on the order), then as
/// [`max_first_f32_avx2`]; the same answer.
///
/// # Safety
/// The CPU must support AVX-512 F and DQ, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
#[inline(never)]
pub unsafe fn max_first_f32_avx512(z: &[f32]) -> (f32, usize, bool) {
    use std::arch::x86_64::*;
    const W: usize = 2 * L;
    let n8 = z.len() / L * L;
    let zp = z.as_ptr();
    let mut acc = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
    let mut chk = [_mm512_setzero_ps(); 4];
    let zero = _mm512_setzero_ps();
    let n64 = n8 / (4 * W) * (4 * W);
    for i in (0..n64).step_by(4 * W) {
        for u in 0..4 {
            let x = _mm512_loadu_ps(zp.add(i + u * W));
            acc[u] = _mm512_max_ps(x, acc[u]); // x > acc ? x : acc, as the plain body
            chk[u] = _mm512_add_ps(chk[u], _mm512_mul_ps(x, zero));
        }
    }
    let acc = _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]));
    let chk = _mm512_add_ps(_mm512_add_ps(chk[0], chk[1]), _mm512_add_ps(chk[2], chk[3]));
    // 16 lanes to 8, then the rest of the whole groups of 8 on 8 lanes
    let half = |v: __m512, hi: bool| {
        let d = _mm512_castps_pd(v);
        _mm256_castpd_ps(if hi { _mm512_extractf64x4_pd::<1>(d) } else { _mm512_castpd512_pd256(d) })
    };
    let mut acc8 = _mm256_max_ps(half(acc, false), half(acc, true));
    let mut chk8 = _mm256_add_ps(half(chk, false), half(chk, true));
    for i in (n64..n8).step_by(L) {
        let x = _mm256_loadu_ps(zp.add(i));
        acc8 = _mm256_max_ps(x, acc8);
        chk8 = _mm256_add_ps(chk8, _mm256_mul_ps(x, _mm256_setzero_ps()));
    }
    let (mut a, mut c) = ([0.0f32; L], [0.0f32; L]);
    _mm256_storeu_ps(a.as_mut_ptr(), acc8);
    _mm256_storeu_ps(c.as_mut_ptr(), chk8);
    let (m, fin) = max_fold(&a, &c, &z[n8..]);
    let mv = _mm512_set1_ps(m);
    let n16 = z.len() / W * W;
    for i in (0..n16).step_by(W) {
        let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_loadu_ps(zp.add(i)), mv);
        if hit != 0 {
            let k = i + hit.trailing_zeros() as usize;
            return (z[k], k, fin);
        }
    }
    let k = first_eq(&z[n16..], m).map_or(0, |p| n16 + p);
    (z[k], k, fin)
}

/// The first j with z_j = m.
#[inline(always)]
fn first_eq(z: &[f32], m: f32) -> Option<usize> {
    z.iter().position(|&x| x == m)
}

/// g_j = RN(e_j·ρ) (8 lanes; the same bits on every path: one IEEE product each), except at
/// the `patch` indices, which get the given values instead (later pairs win). With `stream`
/// (AVX2 path only) the aligned parts of `g` are written by non-temporal stores, which skip
/// the read-for-ownership of each line of a gradient far larger than the caches; the patches
/// are ordinary stores to locations the streaming stores do not touch, and the caller makes
/// the stores visible to other threads with [`store_fence`] before the gradient is handed on.
#[inline]
pub fn scale_store_f32(e: &[f32], rho: f32, g: &mut [f32], stream: bool, patch: [(usize, f32); 2]) {
    let g = &mut g[..e.len()];
    #[cfg(target_arch = "x86_64")]
    if stream && super::has_avx2_fma() {
        let (a, b) = (patch[0].0.min(patch[1].0), patch[0].0.max(patch[1].0));
        // SAFETY: the features were detected at run time.
        unsafe {
            let n = e.len();
            scale_stream_avx2(&e[..a.min(n)], rho, &mut g[..a.min(n)]);
            if a + 1 <= b.min(n) {
                scale_stream_avx2(&e[a + 1..b], rho, &mut g[a + 1..b]);
            }
            if b + 1 <= n {
                scale_stream_avx2(&e[b + 1..], rho, &mut g[b + 1..]);
            }
        }
        for (j, v) in patch {
            g[j] = v;
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the features were detected at run time.
        unsafe { scale_avx2(e, rho, g) };
    } else {
        scale_body(e, rho, g);
    }
    #[cfg(not(target_arch = "x86_64"))]
    scale_body(e, rho, g);
    for (j, v) in patch {
        g[j] = v;
    }
}

/// Orders this thread's non-temporal stores ([`scale_store_f32`] with `stream`) before its
/// later stores (an `sfence`; nothing off x86-64).
#[inline]
pub fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence is part of SSE, which every x86-64 CPU has.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

#[inline(always)]
fn scale_body(e: &[f32], rho: f32, g: &mut [f32]) {
    for (o, &x) in g.iter_mut().zip(e) {
        *o = x * rho;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn scale_avx2(e: &[f32], rho: f32, g: &mut [f32]) {
    scale_body(e, rho, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn scale_stream_avx2(e: &[f32], rho: f32, g: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = g.len().min(e.len());
    let head = (g.as_ptr().align_offset(32)).min(n);
    scale_body(&e[..head], rho, &mut g[..head]);
    let rv = _mm256_set1_ps(rho);
    let (gp, ep) = (g.as_mut_ptr(), e.as_ptr());
    let mut j = head;
    while j + L <= n {
        _mm256_stream_ps(gp.add(j), _mm256_mul_ps(_mm256_loadu_ps(ep.add(j)), rv));
        j += L;
    }
    scale_body(&e[j..n], rho, &mut g[j..n]);
}
