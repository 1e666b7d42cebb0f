//! The NAT table of one UDP service on one executor: client address to session, kept in
//! order of last activity so that both the idle sweep and eviction take from the front.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A handle to a table entry that stays valid until that entry is removed; a handle to a
/// removed entry is ignored, even after its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    index: usize,
    generation: u64,
}

/// Sessions by client address, least recently active first.
///
/// A slab of slots linked into a list by activity: a lookup is one hash probe, and touching,
/// evicting and expiring are O(1) each, with no allocation once the slab has grown.
pub struct SessionTable<V> {
    slots: Vec<Slot<V>>,
    free: Vec<usize>,
    by_client: HashMap<SocketAddr, usize>,
    /// Least recently active.
    head: Option<usize>,
    /// Most recently active.
    tail: Option<usize>,
    capacity: usize,
    generation: u64,
}

struct Slot<V> {
    client: SocketAddr,
    value: Option<V>,
    last_active: Instant,
    generation: u64,
    previous: Option<usize>,
    next: Option<usize>,
}

impl<V> SessionTable<V> {
    /// An empty table that holds at most `capacity` sessions (at least one).
    pub fn new(capacity: usize) -> SessionTable<V> {
        SessionTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            head: None,
            tail: None,
            capacity: capacity.max(1),
            generation: 0,
        }
    }

    /// The number of sessions.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// True when there is no session.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The session of `client`, marked active at `now`.
    pub fn get(&mut self, client: SocketAddr, now: Instant) -> Option<(SlotId, &V)> {
        let index = *self.by_client.get(&client)?;
        self.move_to_tail(index, now);
        let slot = &self.slots[index];
        let id = SlotId {
            index,
            generation: slot.generation,
        };
        slot.value.as_ref().map(|value| (id, value))
    }

    /// Adds the session of `client`, active at `now`. When the table is full, the session
    /// idle the longest is removed first and returned.
    ///
    /// `client` must not have a session already.
    pub fn insert(
        &mut self,
        client: SocketAddr,
        value: V,
        now: Instant,
    ) -> (SlotId, Option<(SocketAddr, V)>) {
        debug_assert!(!self.by_client.contains_key(&client));
        let evicted = if self.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        self.generation += 1;
        let slot = Slot {
            client,
            value: Some(value),
            last_active: now,
            generation: self.generation,
            previous: None,
            next: None,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.by_client.insert(client, index);
        self.link_tail(index);
        let id = SlotId {
            index,
            generation: self.generation,
        };
        (id, evicted)
    }

    /// Marks the session `id` active at `now`, if it is still in the table.
    pub fn touch(&mut self, id: SlotId, now: Instant) {
        if self.is_current(id) {
            self.move_to_tail(id.index, now);
        }
    }

    /// Removes the session `id`, if it is still in the table.
    pub fn remove(&mut self, id: SlotId) -> Option<(SocketAddr, V)> {
        self.is_current(id).then(|| self.take(id.index))
    }

    /// Removes and returns the sessions idle for `ttl` or longer at `now`, oldest first.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<(SocketAddr, V)> {
        let mut expired = Vec::new();
        while let Some(head) = self.head {
            if now.saturating_duration_since(self.slots[head].last_active) < ttl {
                break;
            }
            expired.push(self.take(head));
        }
        expired
    }

    /// Removes and returns every session, oldest first.
    pub fn drain(&mut self) -> Vec<(SocketAddr, V)> {
        std::iter::from_fn(|| self.pop_oldest()).collect()
    }

    /// When the session idle the longest reaches `ttl`, or `None` when the table is empty.
    pub fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.head.map(|head| self.slots[head].last_active + ttl)
    }

    /// Removes the session idle the longest.
    fn pop_oldest(&mut self) -> Option<(SocketAddr, V)> {
        self.head.map(|head| self.take(head))
    }

    fn is_current(&self, id: SlotId) -> bool {
        self.slots
            .get(id.index)
            .is_some_and(|slot| slot.generation == id.generation && slot.value.is_some())
    }

    fn take(&mut self, index: usize) -> (SocketAddr, V) {
        self.unlink(index);
        let slot = &mut self.slots[index];
        let value = slot.value.take().expect("a linked slot holds a session");
        self.by_client.remove(&slot.client);
        self.free.push(index);
        (slot.client, value)
    }

    fn move_to_tail(&mut self, index: usize, now: Instant) {
        self.slots[index].last_active = now;
        if self.tail != Some(index) {
            self.unlink(index);
            self.link_tail(index);
        }
    }

    fn unlink(&mut self, index: usize) {
        let (previous, next) = (self.slots[index].previous, self.slots[index].next);
        match previous {
            Some(previous) => self.slots[previous].next = next,
            None => self.head = next,
        }
        match next {
            Some(next) => self.slots[next].previous = previous,
            None => self.tail = previous,
        }
        self.slots[index].previous = None;
        self.slots[index].next = None;
    }

    fn link_tail(&mut self, index: usize) {
        self.slots[index].previous = self.tail;
        match self.tail {
            Some(tail) => self.slots[tail].next = Some(index),
            None => self.head = Some(index),
        }
        self.tail = Some(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn clients<V>(expired: &[(SocketAddr, V)]) -> Vec<u16> {
        expired.iter().map(|(client, _)| client.port()).collect()
    }

    #[test]
    fn a_full_table_evicts_the_session_idle_the_longest() {
        let start = Instant::now();
        let mut table = SessionTable::new(3);
        for port in 1..=3 {
            table.insert(client(port), port, start + Duration::from_secs(port.into()));
        }
        // Client 1 is active again: client 2 is now the one idle the longest.
        table.get(client(1), start + Duration::from_secs(4));

        let (_, evicted) = table.insert(client(5), 5, start + Duration::from_secs(5));
        assert_eq!(evicted, Some((client(2), 2)));
        let (_, evicted) = table.insert(client(6), 6, start + Duration::from_secs(6));
        assert_eq!(evicted, Some((client(3), 3)));
        assert_eq!(table.len(), 3);
        assert!(table.get(client(2), start).is_none());
        assert_eq!(table.get(client(1), start).map(|(_, v)| *v), Some(1));
    }

    #[test]
    fn sessions_idle_for_ttl_expire_oldest_first_and_activity_either_way_renews_them() {
        let start = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut table = SessionTable::new(10);
        let (first, _) = table.insert(client(1), 'a', start);
        table.insert(client(2), 'b', start + Duration::from_secs(1));
        table.insert(client(3), 'c', start + Duration::from_secs(2));
        // A reply on session 1 counts as activity just like a datagram from its client.
        table.touch(first, start + Duration::from_secs(3));

        assert_eq!(
            table.next_expiry(ttl),
            Some(start + Duration::from_secs(11))
        );
        assert!(
            table
                .expire(start + Duration::from_secs(10), ttl)
                .is_empty()
        );
        let expired = table.expire(start + Duration::from_secs(12), ttl);
        assert_eq!(clients(&expired), [2, 3]);
        let expired = table.expire(start + Duration::from_secs(13), ttl);
        assert_eq!(clients(&expired), [1]);
        assert!(table.is_empty());
        assert_eq!(table.next_expiry(ttl), None);
    }

    #[test]
    fn a_handle_to_a_removed_session_does_not_reach_the_one_that_reuses_its_slot() {
        let start = Instant::now();
        let mut table = SessionTable::new(1);
        let (old, _) = table.insert(client(1), 1, start);
        assert_eq!(table.remove(old), Some((client(1), 1)));
        let (new, _) = table.insert(client(2), 2, start);

        table.touch(old, start + Duration::from_secs(100));
        assert_eq!(table.remove(old), None);
        assert_eq!(
            clients(&table.expire(start + Duration::from_secs(5), Duration::from_secs(5))),
            [2]
        );
        assert_eq!(table.remove(new), None);
    }
}
