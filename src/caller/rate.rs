//! Token-bucket rate limiting.

use std::time::Instant;

/// A sustained request rate with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after an idle period.
    pub burst: u32,
}

/// A token bucket: it holds up to `burst` tokens, refills at `per_second`,
/// and each request takes one.
#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// Creates a full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            updated: now,
        }
    }

    /// Takes a token if one is available at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_many(1, now)
    }

    /// Takes `count` tokens if that many are available at `now`, or none.
    /// A count above the burst never succeeds.
    pub fn try_take_many(&mut self, count: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        self.updated = self.updated.max(now);
        let wanted = f64::from(count);
        if self.tokens >= wanted {
            self.tokens -= wanted;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_refills_up_to_burst() {
        let start = Instant::now();
        let limit = RateLimit {
            per_second: 10.0,
            burst: 3,
        };
        let mut bucket = TokenBucket::new(limit, start);
        let taken = (0..4).filter(|_| bucket.try_take(start)).count();
        assert_eq!(taken, 3);
        // Ten seconds refill far more than the burst, which caps the bucket.
        let later = start + Duration::from_secs(10);
        let taken = (0..5).filter(|_| bucket.try_take(later)).count();
        assert_eq!(taken, 3);
        // A tenth of a second refills exactly one token.
        let next = later + Duration::from_millis(100);
        assert!(bucket.try_take(next));
        // A batch takes its whole count or nothing.
        let refilled = next + Duration::from_secs(10);
        assert!(!bucket.try_take_many(4, refilled));
        assert!(bucket.try_take_many(2, refilled));
        assert!(!bucket.try_take_many(2, refilled));
        assert!(bucket.try_take(refilled));
        assert!(!bucket.try_take(refilled));
        assert!(!bucket.try_take(next));
    }
}
