//! `RateLimiter`: a token bucket shared by transfers, e.g. `--max-upload-rate 10MiB`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Limits the bytes per second passing through it; callers wait in [`RateLimiter::take`].
#[derive(Debug)]
pub struct RateLimiter {
    // The limit and the bucket's size live with its tokens: [`RateLimiter::set_bytes_per_sec`]
    // changes them while transfers go on (a node's settings).
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes per second; 0: no limit.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `bytes_per_sec` must be positive. The bucket holds a tenth of a second of traffic
    /// (at least 64 KiB), so short bursts do not overshoot.
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        RateLimiter {
            state: Mutex::new(Bucket {
                rate,
                burst: (rate / 10.0).max(64.0 * 1024.0),
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit, in bytes per second (0: none).
    pub fn bytes_per_sec(&self) -> u64 {
        self.bucket().rate as u64
    }

    /// Changes the limit for the transfers going on and those to come; 0 lifts it (bytes then
    /// pass at once).
    pub fn set_bytes_per_sec(&self, bytes_per_sec: u64) {
        let mut b = self.bucket();
        b.rate = bytes_per_sec as f64;
        b.burst = (b.rate / 10.0).max(64.0 * 1024.0);
        b.tokens = b.tokens.min(b.burst);
    }

    /// Waits until `n` bytes may pass. Debt is allowed, so a large `n` waits in proportion.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut s = self.bucket();
            let now = Instant::now();
            if s.rate <= 0.0 {
                s.last = now;
                return;
            }
            let tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * s.rate)
                .min(s.burst)
                - n as f64;
            (s.tokens, s.last) = (tokens, now);
            if tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-tokens / s.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses a rate such as `10MiB`, `500KiB`, `1.5MB` or `800000` (bytes per second).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 10MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    let v = n * mult;
    if !(1.0..1e15).contains(&v) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_rate("500kB"), Ok(500_000));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000));
        assert_eq!(parse_rate("4096"), Ok(4096));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3 parsecs").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_in_proportion() {
        let r = RateLimiter::new(1024 * 1024);
        let start = Instant::now();
        for _ in 0..10 {
            r.take(256 * 1024).await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((2.3..=2.6).contains(&secs), "{secs}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_changes_while_in_use() {
        let r = RateLimiter::new(1024 * 1024);
        r.set_bytes_per_sec(0);
        let start = Instant::now();
        r.take(100 * 1024 * 1024).await;
        assert_eq!(
            start.elapsed(),
            std::time::Duration::ZERO,
            "no limit: no wait"
        );
        r.set_bytes_per_sec(512 * 1024);
        assert_eq!(r.bytes_per_sec(), 512 * 1024);
        let start = Instant::now();
        for _ in 0..10 {
            r.take(256 * 1024).await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((4.6..=5.2).contains(&secs), "{secs}");
    }
}
