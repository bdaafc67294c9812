//! A token bucket: the rate limits on handshakes, WebSocket messages and chat messages.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Allows `burst` events at once, refilled at `per_second`.
///
/// Every WebSocket connection keeps one, so it is kept small: single precision (a token is
/// still a token at any burst a limit would use) and the time of its last use in nanoseconds
/// since the first bucket was made, 24 bytes in all.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f32,
    burst: f32,
    per_second: f32,
    last: u64,
}

/// The fewest entries a sweep of [`sweep_when_grown`] is put off to.
pub(crate) const SWEEP_MIN: usize = 1024;

/// Keeps only the entries `keep` accepts once `map` has grown to `sweep_at`, and puts the next
/// sweep off until what is left has doubled: a table of limits per client then forgets the
/// clients that left (a full bucket holds nothing back), at a constant cost per entry added.
pub(crate) fn sweep_when_grown<K: Eq + Hash, V, S: BuildHasher>(
    map: &mut HashMap<K, V, S>,
    sweep_at: &mut usize,
    keep: impl FnMut(&K, &mut V) -> bool,
) {
    if map.len() >= *sweep_at {
        map.retain(keep);
        *sweep_at = (map.len() * 2).max(SWEEP_MIN);
    }
}

/// What the buckets' times are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from the epoch to `at` (584 years fit).
fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_second: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            burst: burst as f32,
            per_second: per_second.min(f64::from(f32::MAX)) as f32,
            last: since_epoch(Instant::now()),
        }
    }

    /// Whether the bucket has refilled completely by now.
    pub fn is_full(&self) -> bool {
        self.refilled(since_epoch(Instant::now())) >= self.burst
    }

    /// The tokens there are at `now`, never more than the burst.
    fn refilled(&self, now: u64) -> f32 {
        let elapsed = Duration::from_nanos(now.saturating_sub(self.last)).as_secs_f32();
        (self.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_n_at(1, Instant::now())
    }

    /// Takes `n` tokens if there are as many (none otherwise): events that came together.
    pub fn try_take_n(&mut self, n: u32) -> bool {
        self.try_take_n_at(n, Instant::now())
    }

    fn try_take_n_at(&mut self, n: u32, now: Instant) -> bool {
        let now = since_epoch(now);
        self.tokens = self.refilled(now);
        self.last = now;
        let n = n as f32;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full bucket, last used at the instant returned.
    fn bucket(burst: u32, per_second: f64) -> (TokenBucket, Instant) {
        let mut bucket = TokenBucket::new(burst, per_second);
        let t0 = epoch() + Duration::from_secs(1);
        bucket.last = since_epoch(t0);
        (bucket, t0)
    }

    #[test]
    fn burst_then_refill() {
        let (mut bucket, t0) = bucket(3, 10.0);
        assert!((0..3).all(|_| bucket.try_take_n_at(1, t0)));
        assert!(!bucket.try_take_n_at(1, t0));
        assert!(bucket.try_take_n_at(1, t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take_n_at(1, t0 + Duration::from_millis(100)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.try_take_n_at(1, later)));
        assert!(!bucket.try_take_n_at(1, later));
    }

    #[test]
    fn several_at_once_or_none() {
        let (mut bucket, t0) = bucket(5, 10.0);
        assert!(bucket.try_take_n_at(3, t0));
        assert!(!bucket.try_take_n_at(3, t0), "two left");
        assert!(bucket.try_take_n_at(2, t0));
        assert!(bucket.try_take_n_at(0, t0));
        assert!(
            !bucket.try_take_n_at(6, t0 + Duration::from_secs(60)),
            "never past the burst"
        );
    }

    #[test]
    fn no_limit_stays_no_limit() {
        // What tests and unlimited settings use: f64::MAX per second is past f32's range.
        let (mut bucket, t0) = bucket(u32::MAX, f64::MAX);
        assert!((0..1000).all(|_| bucket.try_take_n_at(1, t0)));
        assert!(bucket.try_take_n_at(1, t0 + Duration::from_nanos(1)));
        assert!(bucket.is_full());
    }

    #[test]
    fn refills_by_the_fraction_of_a_token_earned() {
        // One token every 20 ms: 19 ms after a take there is none, at 21 ms there is.
        let (mut bucket, t0) = bucket(1, 50.0);
        assert!(bucket.try_take_n_at(1, t0));
        assert!(!bucket.try_take_n_at(1, t0 + Duration::from_millis(19)));
        assert!(bucket.try_take_n_at(1, t0 + Duration::from_millis(21)));
    }
}
