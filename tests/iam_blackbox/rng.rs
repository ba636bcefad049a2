//! A seeded PRNG (xorshift64), moved by `IAM_BLACKBOX_SEED`.

/// A seed, moved by `IAM_BLACKBOX_SEED` (a number) to explore other worlds; fixed otherwise.
pub(super) fn seed(base: u64) -> u64 {
    let extra = std::env::var("IAM_BLACKBOX_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    base ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// xorshift64: tiny, deterministic, good enough to pick things.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    /// True with `percent` % probability.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(super) fn pick<'a, X>(&mut self, xs: &'a [X]) -> &'a X {
        &xs[self.below(xs.len())]
    }

    /// Between `lo` and `hi` distinct elements of `xs`.
    pub(super) fn some<X: Clone + PartialEq>(&mut self, xs: &[X], lo: usize, hi: usize) -> Vec<X> {
        let n = (lo + self.below(hi - lo + 1)).min(xs.len());
        let mut out: Vec<X> = Vec::new();
        let mut tries = 0;
        while out.len() < n && tries < 10_000 {
            let x = self.pick(xs).clone();
            if !out.contains(&x) {
                out.push(x);
            }
            tries += 1;
        }
        out
    }
}
