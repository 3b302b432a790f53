//! Recency order of entry ids for LRU eviction: a doubly linked list threaded through a hash
//! map, so insert, touch, remove and pop-oldest are all O(1).

use std::collections::HashMap;

/// Id 0 is never issued, so it marks "no neighbour".
const NONE: u64 = 0;

#[derive(Clone, Copy)]
struct Link {
    older: u64,
    newer: u64,
}

#[derive(Default)]
pub struct RecencyList {
    links: HashMap<u64, Link>,
    oldest: u64,
    newest: u64,
}

impl RecencyList {
    /// An empty list with room for `capacity` ids without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        RecencyList { links: HashMap::with_capacity(capacity), oldest: NONE, newest: NONE }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Adds `id` as the most recently used (moves it there if already present).
    pub fn touch(&mut self, id: u64) {
        debug_assert_ne!(id, NONE);
        if self.newest == id {
            return;
        }
        self.remove(id);
        let link = Link { older: self.newest, newer: NONE };
        if let Some(prev) = self.links.get_mut(&self.newest) {
            prev.newer = id;
        } else {
            self.oldest = id;
        }
        self.newest = id;
        self.links.insert(id, link);
    }

    /// Forgets `id`; returns whether it was present.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(link) = self.links.remove(&id) else { return false };
        match self.links.get_mut(&link.older) {
            Some(older) => older.newer = link.newer,
            None => self.oldest = link.newer,
        }
        match self.links.get_mut(&link.newer) {
            Some(newer) => newer.older = link.older,
            None => self.newest = link.older,
        }
        true
    }

    /// The least recently used id, if any.
    pub fn oldest(&self) -> Option<u64> {
        (self.oldest != NONE).then_some(self.oldest)
    }

    /// Ids from least to most recently used.
    pub fn oldest_first(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.links.len());
        let mut id = self.oldest;
        while id != NONE {
            out.push(id);
            id = self.links[&id].newer;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_moves_to_newest_and_oldest_is_evicted_first() {
        let mut l = RecencyList::default();
        for id in 1..=4 {
            l.touch(id);
        }
        l.touch(2);
        assert_eq!(l.oldest_first(), vec![1, 3, 4, 2]);
        assert!(l.remove(1));
        assert!(!l.remove(1));
        assert_eq!(l.oldest(), Some(3));
        l.remove(2);
        l.remove(3);
        l.remove(4);
        assert_eq!(l.oldest(), None);
        assert_eq!(l.len(), 0);
        l.touch(9);
        assert_eq!(l.oldest_first(), vec![9]);
    }
}
