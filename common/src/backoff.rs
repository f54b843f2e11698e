//! The wait before a retry: `base × 2^(n-1)` capped at `max`, with "equal jitter" (half of the
//! wait fixed, half random), so that the retries of many jobs or deliveries that failed at
//! once spread out instead of arriving together. Used by the dispatcher's retry policy and by
//! webhook delivery.

use std::time::Duration;

/// The wait before retry number `n` (1 = the first retry): `base × 2^(n-1)` capped at `max`,
/// then its upper half scaled by `jitter`, a number in `[0, 1)` (values outside are clamped).
/// `n = 0` waits as `n = 1` does. Never overflows: the doubling stops at `max`.
pub fn equal_jitter(base: Duration, max: Duration, n: u32, jitter: f64) -> Duration {
    let full = base.saturating_mul(1u32 << n.saturating_sub(1).min(30)).min(max);
    let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
    full / 2 + (full / 2).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_wait_doubles_within_its_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(equal_jitter(base, max, 1, 1.0), Duration::from_secs(1));
        assert_eq!(equal_jitter(base, max, 3, 1.0), Duration::from_secs(4));
        assert_eq!(equal_jitter(base, max, 3, 0.0), Duration::from_secs(2));
        assert_eq!(equal_jitter(base, max, 20, 0.0), Duration::from_secs(30));
        assert_eq!(equal_jitter(base, max, u32::MAX, 1.0), max);
        assert_eq!(equal_jitter(base, max, 0, 1.0), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn the_wait_is_between_half_the_capped_wait_and_all_of_it(
            base_ms in 0u64..100_000, max_ms in 0u64..10_000_000, n in 0u32..200, jitter in proptest::num::f64::ANY
        ) {
            let (base, max) = (Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let wait = equal_jitter(base, max, n, jitter);
            let full = base.saturating_mul(1u32 << n.saturating_sub(1).min(30)).min(max);
            prop_assert!(wait <= full);
            prop_assert!(wait >= full / 2);
        }
    }
}
