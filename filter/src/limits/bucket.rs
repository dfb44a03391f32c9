//! One token bucket, as Kafka's quotas account: a request always passes and is charged in full,
//! and a bucket in debt tells how long the client must wait for it to be paid back. Pure
//! arithmetic on a small state, so that any store (this VM, Envoy's shared data) can keep it.

/// A rate and the burst allowed above it, in units (bytes, requests, partitions) per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The longest a client is held for one charge, as a broker caps its throttle time (its quota
/// window). A debt larger than this is kept (and paid back by later waits), up to
/// [`MAX_DEBT_SECONDS`] of the rate.
pub const MAX_DELAY_MS: u32 = 30_000;
/// The most debt a bucket keeps, in seconds of its rate: one huge request cannot lock a client
/// out for longer than this.
pub const MAX_DEBT_SECONDS: f64 = 60.0;

/// A bucket's state: tokens (negative: debt) at `at_ns`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketState {
    pub tokens: f64,
    pub at_ns: u64,
}

/// What one charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// How long the client must wait, in milliseconds (0: it is within its rate).
    pub delay_ms: u32,
    /// How long it would have had to wait before this charge (the debt others ran up).
    pub owed_ms: u32,
}

impl BucketState {
    /// A bucket seen for the first time: full.
    pub fn new(rate: &Rate, now_ns: u64) -> Self {
        Self {
            tokens: rate.burst,
            at_ns: now_ns,
        }
    }

    /// Refill up to `now_ns`, take `amount`, and say how long until the bucket is out of debt.
    /// A clock that goes backwards refills nothing (the state keeps its later time).
    pub fn charge(&mut self, rate: &Rate, amount: f64, now_ns: u64) -> Charged {
        let per_second = sane(rate.per_second);
        let burst = sane(rate.burst);
        let elapsed_s = now_ns.saturating_sub(self.at_ns) as f64 / 1e9;
        self.at_ns = self.at_ns.max(now_ns);
        let refilled = sane(self.tokens) + elapsed_s * per_second;
        let floor = -(per_second * MAX_DEBT_SECONDS);
        let before = refilled.min(burst);
        self.tokens = (before - sane(amount)).max(floor);
        Charged {
            delay_ms: delay_ms(self.tokens, per_second),
            owed_ms: delay_ms(before, per_second),
        }
    }

    /// 16 bytes, for a shared store: tokens then time, little-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        let (t, a) = b.split_at_mut(8);
        t.copy_from_slice(&self.tokens.to_le_bytes());
        a.copy_from_slice(&self.at_ns.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let tokens = f64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let at_ns = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Self {
            tokens: sane(tokens),
            at_ns,
        })
    }
}

/// Rates and amounts are validated finite and non-negative at configure time; a NaN or
/// infinity from anywhere else (a corrupt shared entry) counts as zero, never poisons a bucket.
fn sane(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fn delay_ms(tokens: f64, per_second: f64) -> u32 {
    if tokens >= 0.0 || per_second <= 0.0 {
        return 0;
    }
    let ms = (-tokens / per_second * 1000.0).ceil();
    if ms >= f64::from(MAX_DELAY_MS) {
        MAX_DELAY_MS
    } else {
        ms as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn burst_then_debt_then_refill() {
        let r = rate(1000.0, 500.0);
        let mut b = BucketState::new(&r, 0);
        assert_eq!(b.charge(&r, 500.0, 0).delay_ms, 0);
        // 250 over: a quarter of a second to pay back.
        assert_eq!(b.charge(&r, 250.0, 0).delay_ms, 250);
        // Half a second later the debt is paid and 250 are back.
        assert_eq!(b.charge(&r, 250.0, S / 2).delay_ms, 0);
        assert_eq!(b.tokens, 0.0);
        // Refill never passes the burst.
        assert_eq!(b.charge(&r, 0.0, 100 * S).delay_ms, 0);
        assert_eq!(b.tokens, 500.0);
    }

    #[test]
    fn the_average_rate_holds_whatever_the_request_sizes() {
        // A client that waits as told gets the rate, not more.
        let r = rate(1_000_000.0, 1_000_000.0);
        let mut b = BucketState::new(&r, 0);
        let mut now = 0u64;
        let mut sent = 0.0;
        while now < 20 * S {
            let amount = 300_000.0;
            sent += amount;
            let d = b.charge(&r, amount, now);
            now += u64::from(d.delay_ms) * 1_000_000 + 1;
        }
        let achieved = (sent - 1_000_000.0) / (now as f64 / 1e9);
        assert!((0.95e6..=1.05e6).contains(&achieved), "{achieved}");
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let r = rate(100.0, 100.0);
        let mut b = BucketState::new(&r, 10 * S);
        assert_eq!(b.charge(&r, 200.0, 10 * S).delay_ms, 1000);
        assert_eq!(b.charge(&r, 0.0, 5 * S).delay_ms, 1000);
        assert_eq!(b.at_ns, 10 * S);
        assert_eq!(b.charge(&r, 0.0, 10 * S + S / 2).delay_ms, 500);
    }

    #[test]
    fn zero_huge_and_broken_values_never_overflow() {
        let r = rate(0.0, 0.0);
        let mut b = BucketState::new(&r, 0);
        assert_eq!(b.charge(&r, 1e300, u64::MAX).delay_ms, 0);
        let r = rate(f64::MAX, f64::MAX);
        let mut b = BucketState::new(&r, 0);
        assert_eq!(b.charge(&r, f64::MAX, u64::MAX).delay_ms, 0);
        let r = rate(1.0, 1.0);
        let mut b = BucketState::new(&r, u64::MAX);
        let d = b.charge(&r, u64::MAX as f64, 0);
        assert_eq!(d.delay_ms, MAX_DELAY_MS);
        assert_eq!(b.tokens, -MAX_DEBT_SECONDS);
        let mut b = BucketState {
            tokens: f64::NAN,
            at_ns: 0,
        };
        assert_eq!(b.charge(&r, f64::INFINITY, S).delay_ms, 0);
        assert!(b.tokens.is_finite());
    }

    #[test]
    fn bytes_round_trip() {
        let b = BucketState {
            tokens: -12.5,
            at_ns: 77,
        };
        assert_eq!(BucketState::from_bytes(&b.to_bytes()), Some(b));
        assert_eq!(BucketState::from_bytes(&[1, 2, 3]), None);
    }
}
