//! A small, deterministic, portable PRNG shared by the oracles' finite-difference checks, the
//! generators' case numbering and the test suites (no `rand` dependency, the same stream on
//! every platform).

/// splitmix64's output function (Steele, Lea, Flood 2014): a fixed, portable 64-bit mixer.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The splitmix64 generator (Steele, Lea, Flood 2014): small, deterministic, seedable.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let z = splitmix64(self.state);
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z
    }

    /// Uniform in [0, 1), a multiple of 2^−53.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (−1, 1), a multiple of 2^−53.
    pub fn signed_unit(&mut self) -> f64 {
        let x = self.next_f64();
        if self.next_u64() & 1 == 0 {
            x
        } else {
            -x
        }
    }

    /// Uniform in [0, n) (n > 0; the modulo bias is negligible for small n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
