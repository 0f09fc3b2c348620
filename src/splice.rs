//! Relaying bytes between two connections (docs/PROTOCOL.md §7.10), as the index does and as
//! a member that volunteers as a relay (`share --relay`) does: the bounds on connections at
//! once, in all and per key, the rate cap with each key's share of it, and the splice itself.
//!
//! Nothing here reads what passes: the two peers run their own TLS inside.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::content::Digest;
use crate::rate::RateLimiter;

/// Default of [`SpliceLimits::rate`]: bytes per second across all relayed traffic (10 MiB/s).
pub const RELAY_RATE: u64 = 10 * 1024 * 1024;
/// One key's relayed connections together get at most this share of [`SpliceLimits::rate`]
/// (a quarter), whichever end of them it is: so a few members never take the whole relay.
pub const RELAY_MEMBER_SHARE: u64 = 4;
/// Default of [`SpliceLimits::max_relayed`]: relayed connections at once, in all.
pub const MAX_RELAYED: usize = 256;
/// Default of [`SpliceLimits::max_relayed_per_member`]: relayed connections one key is an end
/// of at once.
pub const MAX_RELAYED_PER_MEMBER: usize = 16;
/// A relayed connection on which no byte passed, either way, for this long is closed.
pub const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Bytes read at once from one end of a splice.
const SPLICE_BUF: usize = 64 * 1024;

/// How much a relay carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceLimits {
    /// Bytes per second across all relayed traffic, 0 for no limit; each key gets at most a
    /// [`RELAY_MEMBER_SHARE`]th of it. Default: [`RELAY_RATE`].
    pub rate: u64,
    /// Default: [`MAX_RELAYED`].
    pub max_relayed: usize,
    /// Default: [`MAX_RELAYED_PER_MEMBER`].
    pub max_relayed_per_member: usize,
}

impl Default for SpliceLimits {
    fn default() -> Self {
        SpliceLimits {
            rate: RELAY_RATE,
            max_relayed: MAX_RELAYED,
            max_relayed_per_member: MAX_RELAYED_PER_MEMBER,
        }
    }
}

/// Why a relayed connection was not reserved: `BUSY`, in the words of this line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceFull {
    /// The relay carries its most connections.
    #[error("the relay carries its most connections ({0}); try again later")]
    All(usize),
    /// One of the two keys is an end of its most relayed connections.
    #[error("{who} has its most relayed connections ({max}); try again later")]
    Member {
        /// Which end, in words ("this key", "peer 7").
        who: String,
        /// The bound.
        max: usize,
    },
}

#[derive(Default)]
struct State {
    relayed: usize,
    members: HashMap<Digest, MemberUse>,
}

/// One key's relayed connections, and the share of the rate they draw from.
struct MemberUse {
    relayed: usize,
    limiter: Option<Arc<RateLimiter>>,
}

struct Inner {
    limits: SpliceLimits,
    rate: Option<Arc<RateLimiter>>,
    state: Mutex<State>,
}

/// A relay's bounds and rate buckets, shared by all its relayed connections. Cheap to clone.
#[derive(Clone)]
pub struct Splicer {
    inner: Arc<Inner>,
}

impl Splicer {
    /// A relay within `limits`.
    pub fn new(limits: SpliceLimits) -> Splicer {
        Splicer {
            inner: Arc::new(Inner {
                rate: (limits.rate > 0).then(|| Arc::new(RateLimiter::new(limits.rate))),
                limits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The bounds it keeps.
    pub fn limits(&self) -> SpliceLimits {
        self.inner.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Relayed connections now.
    pub fn relayed(&self) -> usize {
        self.state().relayed
    }

    /// Reserves a relayed connection between `a` and `b` when the bounds allow it; `names`
    /// words each end for the refusal. Checked and reserved under one lock: concurrent
    /// reservations cannot pass a bound.
    pub fn reserve(
        &self,
        a: Digest,
        b: Digest,
        names: impl Fn(&Digest) -> String,
    ) -> Result<SpliceSlot, SpliceFull> {
        let limits = self.inner.limits;
        let mut s = self.state();
        if s.relayed >= limits.max_relayed {
            return Err(SpliceFull::All(limits.max_relayed));
        }
        for k in [a, b] {
            if s.members.get(&k).map_or(0, |m| m.relayed) >= limits.max_relayed_per_member {
                return Err(SpliceFull::Member {
                    who: names(&k),
                    max: limits.max_relayed_per_member,
                });
            }
        }
        s.relayed += 1;
        let share = limits.rate / RELAY_MEMBER_SHARE;
        let mut limiters = Vec::new();
        for k in [a, b] {
            let m = s.members.entry(k).or_insert_with(|| MemberUse {
                relayed: 0,
                limiter: (share > 0).then(|| Arc::new(RateLimiter::new(share))),
            });
            m.relayed += 1;
            limiters.extend(m.limiter.clone());
        }
        limiters.extend(self.inner.rate.clone());
        Ok(SpliceSlot {
            splicer: self.clone(),
            keys: [a, b],
            limiters,
        })
    }
}

/// A relayed connection reserved (counted in all and for both keys) until dropped.
pub struct SpliceSlot {
    splicer: Splicer,
    keys: [Digest; 2],
    /// Both keys' shares and the relay's whole rate: every byte takes from each.
    limiters: Vec<Arc<RateLimiter>>,
}

impl Drop for SpliceSlot {
    fn drop(&mut self) {
        let mut s = self.splicer.state();
        s.relayed = s.relayed.saturating_sub(1);
        for k in &self.keys {
            if let Some(m) = s.members.get_mut(k) {
                m.relayed = m.relayed.saturating_sub(1);
                if m.relayed == 0 {
                    s.members.remove(k);
                }
            }
        }
    }
}

/// Splices two connections byte for byte, each end's bytes already read past its last frame
/// first, until both directions end, one fails, nothing passes for [`RELAY_IDLE_TIMEOUT`], or
/// shutdown. Every byte passes the slot's rate limits, then `record`.
pub async fn splice<A, B>(
    slot: SpliceSlot,
    a: (A, BytesMut),
    b: (B, BytesMut),
    record: &(dyn Fn(&[u8]) + Sync),
    shutdown: &CancellationToken,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a.0);
    let (br, bw) = tokio::io::split(b.0);
    let activity = Activity::new();
    let pumps = async {
        tokio::try_join!(
            pump(&slot, ar, bw, a.1, record, &activity, RELAY_IDLE_TIMEOUT),
            pump(&slot, br, aw, b.1, record, &activity, RELAY_IDLE_TIMEOUT),
        )
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = pumps => if let Err(e) = r {
            debug!("relayed connection ended: {e}");
        },
    }
}

/// When a byte last passed, either way: a splice is idle only when neither direction moved.
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long nothing passed either way.
    fn quiet(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    slot: &SpliceSlot,
    mut r: R,
    mut w: W,
    first: BytesMut,
    record: &(dyn Fn(&[u8]) + Sync),
    activity: &Activity,
    idle: Duration,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "relay idle");
    let mut buf = vec![0u8; SPLICE_BUF];
    let mut pending: &[u8] = &first;
    loop {
        if !pending.is_empty() {
            for l in &slot.limiters {
                l.take(pending.len() as u64).await;
            }
            let write = async {
                w.write_all(pending).await?;
                w.flush().await
            };
            tokio::time::timeout(idle, write)
                .await
                .map_err(|_| timed_out())??;
            record(pending);
            activity.touch();
        }
        // A quiet direction waits as long as the other one moves.
        let n = loop {
            let left = idle.saturating_sub(activity.quiet());
            if left.is_zero() {
                return Err(timed_out());
            }
            match tokio::time::timeout(left, r.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(n)) => break n,
                // A TLS stream closed without close_notify: the end of this direction.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break 0,
                Ok(Err(e)) => return Err(e),
            }
        };
        if n == 0 {
            // The other end learns it with a close_notify; the other direction goes on.
            let _ = w.shutdown().await;
            return Ok(());
        }
        pending = &buf[..n];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds hold in all and per key, and a dropped slot frees its place.
    #[test]
    fn reservations_keep_the_bounds() {
        let s = Splicer::new(SpliceLimits {
            rate: 0,
            max_relayed: 3,
            max_relayed_per_member: 2,
        });
        let (a, b, c, d) = (
            Digest([1; 32]),
            Digest([2; 32]),
            Digest([3; 32]),
            Digest([4; 32]),
        );
        let name = |k: &Digest| format!("key {}", k.0[0]);
        let one = s.reserve(a, b, name).unwrap();
        let _two = s.reserve(a, c, name).unwrap();
        let err = s.reserve(a, d, name).err().unwrap();
        assert_eq!(
            err.to_string(),
            "key 1 has its most relayed connections (2); try again later"
        );
        let _three = s.reserve(c, d, name).unwrap();
        assert_eq!(s.reserve(b, d, name).err(), Some(SpliceFull::All(3)));
        drop(one);
        assert_eq!(s.relayed(), 2);
        assert!(s.reserve(b, d, name).is_ok());
    }

    /// A splice whose one direction is quiet stays open while the other moves, and closes
    /// once neither moved for [`RELAY_IDLE_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn idle_means_neither_direction_moved() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = Splicer::new(SpliceLimits::default());
        let slot = s
            .reserve(Digest([1; 32]), Digest([2; 32]), |_| String::new())
            .unwrap();
        let (mut a, a_end) = tokio::io::duplex(1024);
        let (mut b, b_end) = tokio::io::duplex(1024);
        let stop = CancellationToken::new();
        let record = |_: &[u8]| {};
        let spliced = splice(
            slot,
            (a_end, BytesMut::new()),
            (b_end, BytesMut::new()),
            &record,
            &stop,
        );
        tokio::pin!(spliced);
        let started = tokio::time::Instant::now();
        // a → b moves every 100 s for 500 s; b → a never does.
        let traffic = async {
            let mut byte = [0u8; 1];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(100)).await;
                a.write_all(b"x").await.unwrap();
                b.read_exact(&mut byte).await.unwrap();
            }
        };
        tokio::select! {
            () = &mut spliced => panic!("closed while one direction moved"),
            () = traffic => {}
        }
        assert!(started.elapsed() >= Duration::from_secs(500));
        // Now neither moves: closed one idle period after the last byte.
        tokio::time::timeout(RELAY_IDLE_TIMEOUT + Duration::from_secs(5), &mut spliced)
            .await
            .expect("closed once idle");
        assert_eq!(s.relayed(), 0);
    }
}
