//! Answers of DNS discovery kept until their TTL runs out: positive, negative and failures
//! alike, each with its own lifetime, in a table of bounded size. Pure logic: the caller passes
//! the time, so tests need no clock.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Entries kept at most; enough for every recipient of a busy day, small enough to scan.
pub const CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct Cache<V> {
    entries: HashMap<String, (V, Instant)>,
    capacity: usize,
}

impl<V: Clone> Cache<V> {
    pub fn new(capacity: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value stored for `key`, if it has not expired by `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            _ => None,
        }
    }

    /// Stores `value` for `ttl`; a zero TTL stores nothing. When full, expired entries go first,
    /// then the entry closest to expiry.
    pub fn insert(&mut self, key: String, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            self.entries.remove(&key);
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| *expires > now);
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (value, now + ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn entries_live_exactly_their_ttl() {
        let now = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert("a".into(), 1, 10 * SEC, now);
        cache.insert("b".into(), 2, SEC, now);
        assert_eq!(cache.get("a", now + 9 * SEC), Some(1));
        assert_eq!(cache.get("a", now + 10 * SEC), None);
        assert_eq!(cache.get("b", now + SEC / 2), Some(2));
        assert_eq!(cache.get("b", now + SEC), None);
        assert_eq!(cache.get("c", now), None);
    }

    #[test]
    fn zero_ttl_stores_nothing_and_replaces_an_old_value() {
        let now = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert("a".into(), 1, 10 * SEC, now);
        cache.insert("a".into(), 2, Duration::ZERO, now);
        assert_eq!(cache.get("a", now), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn full_cache_drops_expired_then_soonest_to_expire() {
        let now = Instant::now();
        let mut cache = Cache::new(3);
        cache.insert("short".into(), 1, SEC, now);
        cache.insert("long".into(), 2, 100 * SEC, now);
        cache.insert("mid".into(), 3, 50 * SEC, now);
        // "short" has expired by then and makes room.
        cache.insert("new".into(), 4, 100 * SEC, now + 2 * SEC);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("long", now + 2 * SEC), Some(2));
        // Nothing expired: "mid" is closest to expiry and goes.
        cache.insert("newer".into(), 5, 100 * SEC, now + 3 * SEC);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("mid", now + 3 * SEC), None);
        assert_eq!(cache.get("newer", now + 3 * SEC), Some(5));
        // Replacing an existing key never evicts another.
        cache.insert("long".into(), 6, 100 * SEC, now + 3 * SEC);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("new", now + 3 * SEC), Some(4));
    }
}
