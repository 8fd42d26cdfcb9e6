//! `--shard K/N`: one deterministic split of a campaign's work, shared by `report`, `fuzz`
//! and `exhaustive` (docs/distributed.md).

use losscheck_core::Dtype;
use std::ops::Range;

/// The share `K` of `N` of a campaign's work. Generated campaigns (`report`, `fuzz`): the case
/// indices i with i mod N = K ([`Shard::contains`]). Exhaustive campaigns: a contiguous range of
/// the primary input's bit patterns, [⌊K·2ʷ/N⌋, ⌊(K+1)·2ʷ/N⌋), w the dtype's width
/// ([`Shard::range`]). Either way the `N` shards cover the work exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Does this shard run case `index` of a generated campaign? Cases are interleaved: the
    /// shard K/N runs the indices i with i mod N = K, so each shard draws from every regime and
    /// the shards of a campaign take about the same time.
    pub fn contains(self, index: u64) -> bool {
        index % self.count == self.index
    }

    /// The whole pattern space.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parse `K/N` (0 ≤ K < N).
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected K/N (e.g. 3/64), got {s:?}"))?;
        let k: u64 = k
            .trim()
            .parse()
            .map_err(|_| format!("bad shard index {k:?}"))?;
        let n: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad shard count {n:?}"))?;
        if n == 0 || k >= n {
            return Err(format!("shard K/N needs 0 <= K < N, got {k}/{n}"));
        }
        Ok(Shard { index: k, count: n })
    }

    /// The patterns of this shard in `dtype`.
    pub fn range(self, dtype: Dtype) -> Range<u64> {
        let total = 1u64 << dtype.width();
        let at = |k: u64| ((k as u128 * total as u128) / self.count as u128) as u64;
        at(self.index)..at(self.index + 1)
    }

    pub fn is_all(self) -> bool {
        self.count == 1
    }

    /// `K/N`.
    pub fn text(self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

