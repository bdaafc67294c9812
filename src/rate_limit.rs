//! A token bucket: the rate limits on handshakes, WebSocket messages and chat messages.

use std::time::Instant;

/// Allows `burst` events at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_second: f64) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second,
            last: Instant::now(),
        }
    }

    /// Whether the bucket has refilled completely (as of its last use).
    pub fn is_full(&self) -> bool {
        let elapsed = Instant::now().saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.per_second >= self.burst
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
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        let n = f64::from(n);
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
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let mut bucket = TokenBucket::new(3, 10.0);
        let t0 = bucket.last;
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
        let mut bucket = TokenBucket::new(5, 10.0);
        let t0 = bucket.last;
        assert!(bucket.try_take_n_at(3, t0));
        assert!(!bucket.try_take_n_at(3, t0), "two left");
        assert!(bucket.try_take_n_at(2, t0));
        assert!(bucket.try_take_n_at(0, t0));
        assert!(
            !bucket.try_take_n_at(6, t0 + Duration::from_secs(60)),
            "never past the burst"
        );
    }
}
