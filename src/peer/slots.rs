//! `UploadSlots`: how many peers are served pieces at once, shared fairly between addresses, and a queue for the rest.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A queued connection that has not asked again for this long loses its place.
pub const QUEUE_STALE: Duration = Duration::from_secs(10);
/// A slot holder that has not asked for a piece for this long (and is not being sent one)
/// loses its slot; its next `GetPiece` queues it again.
pub const SLOT_IDLE: Duration = Duration::from_secs(3);
/// While others wait, a connection that has held its slot this long gives it up at its next
/// `GetPiece` and queues again.
pub const SLOT_TURN: Duration = Duration::from_secs(20);
/// Slots one address holds while connections from other addresses wait. Default: 2.
pub const SLOTS_PER_IP: usize = 2;

/// How the slots are shared.
#[derive(Debug, Clone, Copy)]
pub struct SlotPolicy {
    /// Slots in all.
    pub slots: usize,
    /// Slots one address keeps while connections from other addresses wait.
    pub per_ip: usize,
    /// See [`SLOT_IDLE`].
    pub idle: Duration,
    /// See [`SLOT_TURN`].
    pub turn: Duration,
    /// See [`QUEUE_STALE`].
    pub stale: Duration,
}

impl SlotPolicy {
    /// `slots` slots, the rest at their defaults.
    pub fn new(slots: usize) -> Self {
        SlotPolicy {
            slots,
            per_ip: SLOTS_PER_IP,
            idle: SLOT_IDLE,
            turn: SLOT_TURN,
            stale: QUEUE_STALE,
        }
    }
}

/// Upload slots with a queue. A connection asks for a slot before each piece; while the slots
/// are taken it is told its place in the queue (and answered `BUSY`).
///
/// Fairness: a holder that stops asking loses its slot after [`SLOT_IDLE`]; one that has held
/// its slot for [`SLOT_TURN`] while others wait gives it up; an address holding more than its
/// share ([`SlotPolicy::per_ip`]) gives a slot up at once to a connection from an address that
/// holds less; and waiting connections from such addresses are served before the others.
#[derive(Debug)]
pub struct UploadSlots {
    policy: SlotPolicy,
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    ip: IpAddr,
    /// When it took the slot.
    since: Instant,
    /// When it last asked for a piece, or was last sent one.
    last: Instant,
    /// A piece is being sent to it.
    serving: bool,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    ip: IpAddr,
    asked: Instant,
}

#[derive(Debug, Default)]
struct SlotState {
    holders: Vec<Holder>,
    /// Waiting connections, first come first.
    queue: VecDeque<Waiter>,
}

impl SlotState {
    fn held_by(&self, ip: IpAddr) -> usize {
        self.holders.iter().filter(|h| h.ip == ip).count()
    }

    /// The waiting connections in the order they are served: those from addresses holding
    /// fewer than `per_ip` slots first, each group first come first.
    fn order(&self, per_ip: usize) -> Vec<u64> {
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for w in &self.queue {
            match self.held_by(w.ip) < per_ip {
                true => first.push(w.id),
                false => rest.push(w.id),
            }
        }
        first.extend(rest);
        first
    }
}

impl UploadSlots {
    /// `max` slots with the default policy.
    pub fn new(max: usize) -> Self {
        Self::with_policy(SlotPolicy::new(max))
    }

    /// Like [`UploadSlots::new`], with queued connections losing their place after `stale`.
    pub fn with_stale_after(max: usize, stale: Duration) -> Self {
        Self::with_policy(SlotPolicy {
            stale,
            ..SlotPolicy::new(max)
        })
    }

    /// Slots under `policy`.
    pub fn with_policy(policy: SlotPolicy) -> Self {
        UploadSlots {
            policy: SlotPolicy {
                slots: policy.slots.max(1),
                per_ip: policy.per_ip.max(1),
                ..policy
            },
            state: Mutex::new(SlotState::default()),
        }
    }

    /// Connection `id` from `ip` asks for a piece: `Ok` if it holds a slot (now or already;
    /// it is being sent a piece until [`UploadSlots::sent`]), else its 1-based queue position.
    pub fn acquire(&self, id: u64, ip: IpAddr) -> Result<(), usize> {
        let p = self.policy;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Holders that stopped asking, and waiters that stopped asking, lose their places.
        s.holders
            .retain(|h| h.id == id || h.serving || now.duration_since(h.last) < p.idle);
        s.queue
            .retain(|w| w.id == id || now.duration_since(w.asked) < p.stale);
        if let Some(h) = s.holders.iter_mut().find(|h| h.id == id) {
            h.last = now;
            h.serving = true;
            return Ok(());
        }
        let place = match s.queue.iter().position(|w| w.id == id) {
            Some(i) => {
                s.queue[i].asked = now;
                i
            }
            None => {
                s.queue.push_back(Waiter { id, ip, asked: now });
                s.queue.len() - 1
            }
        };
        let order = s.order(p.per_ip);
        let rank = order.iter().position(|w| *w == id).unwrap_or(place);
        if rank == 0 && s.holders.len() >= p.slots {
            // Full: the slot of a holder over its address's share (if this one's address is
            // under it), else of one whose turn is over, the one that has held longest.
            let mine_under = s.held_by(ip) < p.per_ip;
            let over: Vec<IpAddr> = s
                .holders
                .iter()
                .map(|h| h.ip)
                .filter(|&a| a != ip && s.held_by(a) > p.per_ip)
                .collect();
            let victim = s
                .holders
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    (mine_under && over.contains(&h.ip)) || now.duration_since(h.since) >= p.turn
                })
                .min_by_key(|(_, h)| (h.serving, h.since))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                // It queues again with its next request, behind those waiting now.
                s.holders.swap_remove(i);
            }
        }
        if rank == 0 && s.holders.len() < p.slots {
            s.queue.retain(|w| w.id != id);
            s.holders.push(Holder {
                id,
                ip,
                since: now,
                last: now,
                serving: true,
            });
            return Ok(());
        }
        Err(rank + 1)
    }

    /// The piece asked for by connection `id` has been answered: its idle time starts.
    pub fn sent(&self, id: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = s.holders.iter_mut().find(|h| h.id == id) {
            h.serving = false;
            h.last = Instant::now();
        }
    }

    /// Connection `id` closed: frees its slot or its place in the queue.
    pub fn release(&self, id: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.holders.retain(|h| h.id != id);
        s.queue.retain(|w| w.id != id);
    }

    /// Connections holding a slot now.
    pub fn holders(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holders
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn policy(slots: usize) -> SlotPolicy {
        SlotPolicy {
            per_ip: 100,
            ..SlotPolicy::new(slots)
        }
    }

    #[test]
    fn first_come_first_served() {
        let slots = UploadSlots::new(1);
        assert_eq!(slots.acquire(1, A), Ok(()));
        assert_eq!(slots.acquire(2, A), Err(1));
        assert_eq!(slots.acquire(3, A), Err(2));
        slots.release(1);
        assert_eq!(slots.acquire(3, A), Err(2), "3 waits behind 2");
        assert_eq!(slots.acquire(2, A), Ok(()));
        assert_eq!(slots.acquire(3, A), Err(1));
        slots.release(3);
        slots.release(2);
        assert_eq!(slots.acquire(4, A), Ok(()));
    }

    #[test]
    fn a_queued_connection_that_stops_asking_loses_its_place() {
        let slots = UploadSlots::with_stale_after(1, Duration::from_millis(20));
        assert_eq!(slots.acquire(1, A), Ok(()));
        assert_eq!(slots.acquire(2, A), Err(1));
        assert_eq!(slots.acquire(3, A), Err(2));
        std::thread::sleep(Duration::from_millis(40));
        slots.release(1);
        assert_eq!(slots.acquire(3, A), Ok(()), "2 stopped asking; 3 is served");
    }

    #[test]
    fn a_holder_that_stops_asking_loses_its_slot_but_not_while_it_is_sent_a_piece() {
        let slots = UploadSlots::with_policy(SlotPolicy {
            idle: Duration::from_millis(30),
            ..policy(1)
        });
        assert_eq!(slots.acquire(1, A), Ok(()));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            slots.acquire(2, A),
            Err(1),
            "1 is still being sent its piece"
        );
        slots.sent(1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(slots.acquire(2, A), Ok(()), "1 stopped asking");
        slots.sent(2);
        assert_eq!(slots.acquire(1, A), Err(1), "1 queues again");
    }

    #[test]
    fn a_holder_gives_its_slot_up_after_its_turn_only_when_others_wait() {
        let slots = UploadSlots::with_policy(SlotPolicy {
            turn: Duration::from_millis(30),
            ..policy(1)
        });
        assert_eq!(slots.acquire(1, A), Ok(()));
        slots.sent(1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(slots.acquire(1, A), Ok(()), "nobody waits: it keeps it");
        slots.sent(1);
        assert_eq!(slots.acquire(2, A), Ok(()), "2 waits: 1's turn is over");
        assert_eq!(slots.acquire(1, A), Err(1));
    }

    #[test]
    fn an_address_over_its_share_gives_a_slot_up_to_another_address() {
        let slots = UploadSlots::with_policy(SlotPolicy {
            per_ip: 2,
            ..SlotPolicy::new(4)
        });
        for id in 1..=4 {
            assert_eq!(slots.acquire(id, A), Ok(()), "free slots go to anyone");
        }
        assert_eq!(slots.acquire(5, A), Err(1));
        assert_eq!(
            slots.acquire(10, B),
            Ok(()),
            "B holds none: it is served at once"
        );
        assert_eq!(slots.acquire(11, B), Ok(()), "and a second");
        assert_eq!(
            slots.acquire(12, B),
            Err(2),
            "B has its share now; 5 is ahead"
        );
        assert_eq!(slots.holders(), 4);
        assert_eq!(slots.acquire(1, A), Err(3), "A's first two gave theirs up");
        assert_eq!(slots.acquire(2, A), Err(4));
        for (id, ip) in [(3, A), (4, A), (10, B), (11, B)] {
            assert_eq!(slots.acquire(id, ip), Ok(()));
        }
    }
}
