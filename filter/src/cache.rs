//! A bounded least-recently-used map, O(1) per operation (hash map into a slab with an
//! intrusive doubly linked list). Used per worker for verified tokens, keyed by the token text
//! itself (`Rc<str>`): a lookup hashes the token with hashbrown's fast hasher (foldhash; its
//! seed is not random in a wasm build, which is safe here because only tokens whose signature
//! verified are ever inserted, so callers cannot choose colliding keys) and compares it in full
//! on a hit: a hit costs no cryptographic hash and no two tokens can share an entry. Also used
//! for introspection answers, keyed by the token's SHA-256 (any caller can add those). Nothing
//! is allocated until the first insert.

use hashbrown::HashMap;
use std::borrow::Borrow;
use std::hash::Hash;

const NIL: usize = usize::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    prev: usize,
    next: usize,
}

/// A bounded LRU map. Capacity 0 disables caching (every `get` misses).
pub struct Lru<K, V> {
    map: HashMap<K, usize>,
    nodes: Vec<Node<K, V>>,
    head: usize, // most recently used
    tail: usize, // least recently used
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub fn new(capacity: usize) -> Self {
        Lru { map: HashMap::new(), nodes: Vec::new(), head: NIL, tail: NIL, capacity }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        if prev != NIL {
            self.nodes[prev].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next].prev = prev;
        } else {
            self.tail = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// Looks up and marks as most recently used.
    pub fn get<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_front(i);
        Some(&self.nodes[i].value)
    }

    /// Inserts or replaces, evicting the least recently used entry when full.
    pub fn put(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&i) = self.map.get(&key) {
            self.nodes[i].value = value;
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(Node { key: key.clone(), value, prev: NIL, next: NIL });
            self.nodes.len() - 1
        } else {
            let victim = self.tail;
            self.unlink(victim);
            let old = std::mem::replace(&mut self.nodes[victim].key, key.clone());
            // A removed entry's slot keeps its old key; that key may live again elsewhere.
            if self.map.get(&old) == Some(&victim) {
                self.map.remove(&old);
            }
            self.nodes[victim].value = value;
            victim
        };
        self.map.insert(key, i);
        self.push_front(i);
    }

    /// Removes an entry (its slot is reused by a later insert once it reaches the tail).
    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Some(i) = self.map.remove(key) {
            // Move the slot to the tail so it is the next one reused.
            self.unlink(i);
            self.nodes[i].prev = self.tail;
            self.nodes[i].next = NIL;
            if self.tail != NIL {
                self.nodes[self.tail].next = i;
            } else {
                self.head = i;
            }
            self.tail = i;
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.nodes.clear();
        self.head = NIL;
        self.tail = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = Lru::new(2);
        c.put(1, "a");
        c.put(2, "b");
        assert_eq!(c.get(&1), Some(&"a"));
        c.put(3, "c"); // evicts 2
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(&"a"));
        assert_eq!(c.get(&3), Some(&"c"));
        c.remove(&1);
        c.put(4, "d"); // reuses 1's slot, 3 stays
        assert_eq!(c.get(&3), Some(&"c"));
        assert_eq!(c.get(&4), Some(&"d"));
        assert_eq!(c.len(), 2);
        let mut z: Lru<u8, u8> = Lru::new(0);
        z.put(1, 1);
        assert_eq!(z.get(&1), None);
    }

    proptest! {
        #[test]
        fn behaves_like_a_model(ops in proptest::collection::vec((0u8..3, 0u8..16), 0..300), cap in 1usize..6) {
            let mut c = Lru::new(cap);
            let mut model: Vec<(u8, u32)> = Vec::new(); // front = most recent
            for (step, (op, k)) in ops.into_iter().enumerate() {
                let v = step as u32;
                match op {
                    0 => {
                        c.put(k, v);
                        model.retain(|(mk, _)| *mk != k);
                        model.insert(0, (k, v));
                        model.truncate(cap);
                    }
                    1 => {
                        let got = c.get(&k).copied();
                        let want = model.iter().position(|(mk, _)| *mk == k).map(|p| {
                            let e = model.remove(p);
                            model.insert(0, e);
                            e.1
                        });
                        prop_assert_eq!(got, want);
                    }
                    _ => {
                        c.remove(&k);
                        model.retain(|(mk, _)| *mk != k);
                    }
                }
                prop_assert_eq!(c.len(), model.len());
                prop_assert!(c.len() <= cap);
            }
        }
    }
}
