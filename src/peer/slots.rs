//! `UploadSlots`: how many peers are served pieces at once, and a first-come queue for the rest.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A queued connection that has not asked again for this long loses its place.
pub const QUEUE_STALE: Duration = Duration::from_secs(10);

/// Upload slots with a FIFO queue. A connection asks for a slot before each piece; while the
/// slots are taken it is told its place in the queue (and answered `BUSY`); it keeps its slot
/// until it closes.
#[derive(Debug)]
pub struct UploadSlots {
    max: usize,
    stale: Duration,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    holders: Vec<u64>,
    /// Waiting connections and when each last asked.
    queue: VecDeque<(u64, Instant)>,
}

impl UploadSlots {
    pub fn new(max: usize) -> Self {
        Self::with_stale_after(max, QUEUE_STALE)
    }

    /// Like [`UploadSlots::new`], with queued connections losing their place after `stale`.
    pub fn with_stale_after(max: usize, stale: Duration) -> Self {
        UploadSlots {
            max: max.max(1),
            stale,
            state: Mutex::new(SlotState::default()),
        }
    }

    /// `Ok` if connection `id` holds a slot (now or already); else its 1-based queue position.
    pub fn acquire(&self, id: u64) -> Result<(), usize> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.holders.contains(&id) {
            return Ok(());
        }
        let now = Instant::now();
        s.queue
            .retain(|(q, asked)| *q == id || now.duration_since(*asked) < self.stale);
        if s.holders.len() < self.max && s.queue.front().is_none_or(|(f, _)| *f == id) {
            s.queue.pop_front();
            s.holders.push(id);
            return Ok(());
        }
        match s.queue.iter().position(|(q, _)| *q == id) {
            Some(p) => {
                s.queue[p].1 = now;
                Err(p + 1)
            }
            None => {
                s.queue.push_back((id, now));
                Err(s.queue.len())
            }
        }
    }

    /// Connection `id` closed: frees its slot or its place in the queue.
    pub fn release(&self, id: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.holders.retain(|h| *h != id);
        s.queue.retain(|(q, _)| *q != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_come_first_served() {
        let slots = UploadSlots::new(1);
        assert_eq!(slots.acquire(1), Ok(()));
        assert_eq!(slots.acquire(2), Err(1));
        assert_eq!(slots.acquire(3), Err(2));
        slots.release(1);
        assert_eq!(slots.acquire(3), Err(2), "3 waits behind 2");
        assert_eq!(slots.acquire(2), Ok(()));
        assert_eq!(slots.acquire(3), Err(1));
        slots.release(3);
        slots.release(2);
        assert_eq!(slots.acquire(4), Ok(()));
    }

    #[test]
    fn a_queued_connection_that_stops_asking_loses_its_place() {
        let slots = UploadSlots::with_stale_after(1, Duration::from_millis(20));
        assert_eq!(slots.acquire(1), Ok(()));
        assert_eq!(slots.acquire(2), Err(1));
        assert_eq!(slots.acquire(3), Err(2));
        std::thread::sleep(Duration::from_millis(40));
        slots.release(1);
        assert_eq!(slots.acquire(3), Ok(()), "2 stopped asking; 3 is served");
    }
}
