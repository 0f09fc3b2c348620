//! `RateLimiter`: a token bucket shared by transfers, e.g. `--max-upload-rate 10MiB`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Limits the bytes per second passing through it; callers wait in [`RateLimiter::take`].
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `bytes_per_sec` must be positive. The bucket holds a tenth of a second of traffic
    /// (at least 64 KiB), so short bursts do not overshoot.
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        RateLimiter {
            rate,
            burst: (rate / 10.0).max(64.0 * 1024.0),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// The limit, in bytes per second.
    pub fn bytes_per_sec(&self) -> u64 {
        self.rate as u64
    }

    /// Waits until `n` bytes may pass. Debt is allowed, so a large `n` waits in proportion.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, last) = *s;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate)
                .min(self.burst)
                - n as f64;
            *s = (tokens, now);
            if tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-tokens / self.rate)
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
}
