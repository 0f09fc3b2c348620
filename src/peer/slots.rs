//! `UploadSlots`: how many peers are served pieces at once, and a first-come queue for the rest.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Upload slots with a FIFO queue. A connection asks for a slot before each piece; while the
/// slots are taken it is told its place in the queue (and answered `BUSY`); it keeps its slot
/// until it closes.
#[derive(Debug)]
pub struct UploadSlots {
    max: usize,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    holders: Vec<u64>,
    queue: VecDeque<u64>,
}

impl UploadSlots {
    pub fn new(max: usize) -> Self {
        UploadSlots {
            max: max.max(1),
            state: Mutex::new(SlotState::default()),
        }
    }

    /// `Ok` if connection `id` holds a slot (now or already); else its 1-based queue position.
    pub fn acquire(&self, id: u64) -> Result<(), usize> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.holders.contains(&id) {
            return Ok(());
        }
        if s.holders.len() < self.max && s.queue.front().is_none_or(|f| *f == id) {
            s.queue.pop_front();
            s.holders.push(id);
            return Ok(());
        }
        match s.queue.iter().position(|q| *q == id) {
            Some(p) => Err(p + 1),
            None => {
                s.queue.push_back(id);
                Err(s.queue.len())
            }
        }
    }

    /// Connection `id` closed: frees its slot or its place in the queue.
    pub fn release(&self, id: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.holders.retain(|h| *h != id);
        s.queue.retain(|q| *q != id);
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
}
