//! Random helpers shared by the profiles: one reproducible stream per part file, skewed
//! (Zipf-like) key choice, weighted choice, a normal variate, and the fixed clock.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The instant generated data is relative to: 2026-11-01T00:00:00Z, in microseconds.
/// Benchmarks evaluate segments `--as-of` this instant.
pub const AS_OF_MICROS: i64 = 1_793_491_200 * MICROS_PER_SECOND;

/// [`AS_OF_MICROS`] as an RFC 3339 string.
pub const AS_OF_TEXT: &str = "2026-11-01T00:00:00Z";

/// Days from 1970-01-01 to 2026-11-01 (the as-of day).
pub const AS_OF_DAY: i32 = 20_758;

/// Microseconds in a second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The generator of one part: the run's seed, and a stream of its own so that parts can be
/// made in any order (or in parallel) and still give the same bytes.
pub fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A stream number from a kind of work and a part index.
pub fn stream_id(kind: u32, part: usize) -> u64 {
    (u64::from(kind) << 32) | part as u64
}

/// An instant uniformly within the `days` days before [`AS_OF_MICROS`].
pub fn instant_within_days(rng: &mut ChaCha8Rng, days: i64) -> i64 {
    AS_OF_MICROS - rng.random_range(0..days.max(1) * MICROS_PER_DAY)
}

/// A day uniformly within the `days` days before (and including) the as-of day.
pub fn day_within(rng: &mut ChaCha8Rng, days: i32) -> i32 {
    AS_OF_DAY - rng.random_range(0..days.max(1))
}

/// `true` with probability `p`.
pub fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// A standard normal variate (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential variate with the given mean.
pub fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() * mean
}

/// Rounds to cents.
pub fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One of `items`, chosen with probability proportional to its weight.
pub fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut at = rng.random_range(0..total.max(1));
    for (item, weight) in items {
        if at < *weight {
            return item;
        }
        at -= weight;
    }
    &items[items.len() - 1].0
}

/// Skewed choice of a row index in `0..n`: a Zipf-like power law (rank `k` drawn with
/// probability about `1 / k^exponent`) mixed with a uniform share, the ranks scattered over
/// the indexes by a fixed permutation so that heavy keys are not simply the first ones.
#[derive(Debug, Clone)]
pub struct Skewed {
    n: u64,
    exponent: f64,
    uniform_share: f64,
    multiplier: u64,
    offset: u64,
    /// `(n + 1)^(1 - exponent)`, cached.
    top: f64,
}

impl Skewed {
    /// A chooser over `0..n` (n at least 1); choosers with another `salt` scatter their heavy
    /// ranks over other indexes.
    pub fn new(n: u64, exponent: f64, uniform_share: f64, salt: u64) -> Skewed {
        let n = n.max(1);
        let mut multiplier = (mix(0x9E37_79B9_7F4A_7C15 ^ salt) % n).max(1);
        while gcd(multiplier, n) != 1 {
            multiplier += 1;
        }
        let offset = mix(0x5851_F42D_4C95_7F2D ^ salt) % n;
        let top = if (exponent - 1.0).abs() < 1e-9 { ((n + 1) as f64).ln() } else { ((n + 1) as f64).powf(1.0 - exponent) };
        Skewed { n, exponent, uniform_share, multiplier, offset, top }
    }

    /// The rank (0 = heaviest) a draw lands on, before the permutation.
    fn rank(&self, rng: &mut ChaCha8Rng) -> u64 {
        if rng.random::<f64>() < self.uniform_share {
            return rng.random_range(0..self.n);
        }
        let u = rng.random::<f64>();
        let x = if (self.exponent - 1.0).abs() < 1e-9 { (u * self.top).exp() } else { (1.0 + u * (self.top - 1.0)).powf(1.0 / (1.0 - self.exponent)) };
        ((x.floor() as u64).saturating_sub(1)).min(self.n - 1)
    }

    /// A skewed index in `0..n`.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let rank = self.rank(rng);
        ((u128::from(rank) * u128::from(self.multiplier) + u128::from(self.offset)) % u128::from(self.n)) as u64
    }
}

/// A 64-bit mixing function (SplitMix64's finalizer): a fixed, well-spread hash of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` fixed by `(seed, key, salt)`: per-row traits that several
/// generators must agree on without sharing state.
pub fn unit_hash(seed: u64, key: u64, salt: u64) -> f64 {
    (mix(seed ^ mix(key ^ mix(salt))) >> 11) as f64 / (1u64 << 53) as f64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
