//! Exponential backoff with jitter between failed deliveries.
//!
//! The n-th consecutive failure waits a random time in `[d/2, d]` where
//! `d = min(max, initial · 2ⁿ)` ("equal jitter"): it never retries sooner than half the
//! nominal delay, and many shippers that failed together spread out instead of returning in
//! step. The random source is a seeded SplitMix64, so tests can check the exact schedule.

use std::time::Duration;

use crate::config::BackoffPolicy;

/// SplitMix64: small, fast, and good enough for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator seeded from the operating system.
    pub fn from_os() -> Self {
        let mut b = [0u8; 8];
        // Without OS randomness the jitter is merely less random; delivery is unaffected.
        let _ = getrandom::fill(&mut b);
        SplitMix64(u64::from_le_bytes(b))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The retry schedule of one sink.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A schedule for `policy` drawing jitter from `rng`.
    pub fn new(policy: BackoffPolicy, rng: SplitMix64) -> Self {
        Backoff {
            policy,
            failures: 0,
            rng,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Record a failure; how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(32);
        self.failures = self.failures.saturating_add(1);
        let nominal = self
            .policy
            .initial
            .saturating_mul(1u32 << exp.min(31))
            .min(self.policy.max);
        let nanos = nominal.as_nanos() as u64;
        let half = nanos / 2;
        let jitter = if half == 0 {
            0
        } else {
            self.rng.next_u64() % (half + 1)
        };
        Duration::from_nanos(half + jitter)
    }

    /// Record a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    #[test]
    fn doubles_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(policy(), SplitMix64::new(7));
        let mut nominal = Duration::from_millis(100);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= nominal / 2 && d <= nominal,
                "{d:?} outside [{:?}, {nominal:?}]",
                nominal / 2
            );
            nominal = (nominal * 2).min(Duration::from_secs(5));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let run = |seed| {
            let mut b = Backoff::new(policy(), SplitMix64::new(seed));
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(policy(), SplitMix64::new(1));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
    }
}
