//! Interned patterns: each distinct KRN or action pattern is stored once and named by a `u32`.
//! Concrete patterns are looked up by their full text, wildcard patterns `X*` by their prefix `X`,
//! so a query finds the ids of its MatchingKRNs / MatchingActions from slices of its own text,
//! without building strings. Entries are reference-counted and freed when no statement uses them.
//!
//! Texts live in one arena string (no allocation and no header per pattern); a map from a 32-bit
//! hash of (text, wildcard) to the first id of that hash, and a chain through the entries for the
//! rare ids that share a hash, find an id from a text. The arena is compacted when more than half
//! of it is freed text.

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};

/// "No entry".
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    /// Hash of (text, wildcard) -> first entry with that hash.
    heads: FxHashMap<u32, u32>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// The texts of the live entries (and freed text until the next compaction).
    arena: String,
    dead: usize,
    live: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u32,
    len: u32,
    /// References; 0 once freed.
    refs: u32,
    /// Next entry with the same hash, or `NONE`.
    next: u32,
    wildcard: bool,
}

fn hash(text: &str, wildcard: bool) -> u32 {
    let mut h = FxHasher::default();
    h.write(text.as_bytes());
    h.write_u8(u8::from(wildcard));
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

impl Interner {
    fn text(&self, e: &Entry) -> &str {
        let a = e.at as usize;
        self.arena.get(a..a + e.len as usize).unwrap_or("")
    }

    fn find(&self, key: &str, wildcard: bool, h: u32) -> Option<u32> {
        let mut id = *self.heads.get(&h)?;
        while let Some(e) = self.entries.get(id as usize) {
            if e.wildcard == wildcard && self.text(e) == key {
                return Some(id);
            }
            id = e.next;
        }
        None
    }

    /// The id of `pattern` (canonical text; a trailing `*` marks a wildcard), one more reference.
    pub fn intern(&mut self, pattern: &str) -> u32 {
        let (key, wildcard) = match pattern.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        let h = hash(key, wildcard);
        if let Some(id) = self.find(key, wildcard, h) {
            if let Some(e) = self.entries.get_mut(id as usize) {
                e.refs += 1;
            }
            return id;
        }
        let entry = Entry {
            at: self.arena.len() as u32,
            len: key.len() as u32,
            refs: 1,
            next: self.heads.get(&h).copied().unwrap_or(NONE),
            wildcard,
        };
        self.arena.push_str(key);
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.entries.get_mut(id as usize) {
                    *slot = entry;
                }
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.heads.insert(h, id);
        self.live += 1;
        id
    }

    /// Drops one reference; the entry is freed with the last one.
    pub fn release(&mut self, id: u32) {
        let Some(e) = self.entries.get_mut(id as usize) else {
            return;
        };
        if e.refs == 0 {
            return;
        }
        e.refs -= 1;
        if e.refs > 0 {
            return;
        }
        let e = *e;
        // Unlink it from its hash chain.
        let h = hash(self.text(&e), e.wildcard);
        if self.heads.get(&h) == Some(&id) {
            if e.next == NONE {
                self.heads.remove(&h);
            } else {
                self.heads.insert(h, e.next);
            }
        } else {
            let mut cur = self.heads.get(&h).copied().unwrap_or(NONE);
            while let Some(c) = self.entries.get(cur as usize).copied() {
                if c.next == id {
                    if let Some(x) = self.entries.get_mut(cur as usize) {
                        x.next = e.next;
                    }
                    break;
                }
                cur = c.next;
            }
        }
        if let Some(x) = self.entries.get_mut(id as usize) {
            x.next = NONE;
        }
        self.free.push(id);
        self.live -= 1;
        self.dead += e.len as usize;
        if self.dead > 4096 && self.dead * 2 > self.arena.len() {
            self.compact();
        }
    }

    /// Rewrites the arena with the live texts only.
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.dead);
        for e in self.entries.iter_mut().filter(|e| e.refs > 0) {
            let a = e.at as usize;
            let text = self.arena.get(a..a + e.len as usize).unwrap_or("");
            e.at = arena.len() as u32;
            arena.push_str(text);
        }
        self.arena = arena;
        self.dead = 0;
    }

    /// The id of a concrete pattern.
    #[inline]
    pub fn exact(&self, text: &str) -> Option<u32> {
        if self.live == 0 {
            return None;
        }
        self.find(text, false, hash(text, false))
    }

    /// The id of the wildcard pattern `prefix*`.
    #[inline]
    pub fn prefix(&self, prefix: &str) -> Option<u32> {
        if self.live == 0 {
            return None;
        }
        self.find(prefix, true, hash(prefix, true))
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Approximate heap use in bytes.
    pub fn heap_bytes(&self) -> usize {
        let map_slot = std::mem::size_of::<(u32, u32)>() + 1;
        let heads = if self.heads.capacity() == 0 {
            0
        } else {
            self.heads.capacity() * map_slot
        };
        heads
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.free.capacity() * 4
            + self.arena.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_and_frees() {
        let mut i = Interner::default();
        let a = i.intern("krn:iam:kaa::user/bob");
        let b = i.intern("krn:iam:kaa::user/*");
        let a2 = i.intern("krn:iam:kaa::user/bob");
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(i.exact("krn:iam:kaa::user/bob"), Some(a));
        assert_eq!(i.prefix("krn:iam:kaa::user/"), Some(b));
        assert_eq!(i.exact("krn:iam:kaa::user/"), None);
        assert_eq!(i.len(), 2);
        i.release(a);
        assert_eq!(i.exact("krn:iam:kaa::user/bob"), Some(a));
        i.release(a);
        assert_eq!(i.exact("krn:iam:kaa::user/bob"), None);
        assert_eq!(i.len(), 1);
        // The freed id is reused.
        let c = i.intern("*");
        assert_eq!(c, a);
        assert_eq!(i.prefix(""), Some(c));
        i.release(b);
        i.release(c);
        assert_eq!(i.len(), 0);
        // Releasing more than was taken is harmless.
        i.release(c);
        i.release(99);
        assert!(i.heap_bytes() > 0);
    }

    #[test]
    fn many_entries_compaction_and_reuse() {
        let mut i = Interner::default();
        let names: Vec<String> = (0..20_000)
            .map(|n| format!("krn:iam:t::user/u{n}"))
            .collect();
        let ids: Vec<u32> = names.iter().map(|n| i.intern(n)).collect();
        let w = i.intern("krn:iam:t::user/*");
        assert_eq!(i.len(), 20_001);
        for (n, id) in names.iter().zip(&ids) {
            assert_eq!(i.exact(n), Some(*id));
            assert_eq!(i.prefix(n), None);
        }
        // Free three in four: the arena is compacted, the rest is still found.
        let before = i.arena.len();
        for (k, id) in ids.iter().enumerate() {
            if k % 4 != 0 {
                i.release(*id);
            }
        }
        assert_eq!(i.len(), 5_001);
        assert!(i.arena.len() < before / 2, "{} of {before}", i.arena.len());
        for (k, (n, id)) in names.iter().zip(&ids).enumerate() {
            assert_eq!(i.exact(n), (k % 4 == 0).then_some(*id), "{n}");
        }
        assert_eq!(i.prefix("krn:iam:t::user/"), Some(w));
        // Same text as exact and as wildcard prefix are distinct entries.
        let x = i.intern("krn:iam:t::user/");
        assert_ne!(x, w);
        assert_eq!(i.exact("krn:iam:t::user/"), Some(x));
        // Freed ids are reused and found again.
        let again = i.intern(&names[0]);
        assert_eq!(i.exact(&names[0]), Some(again));
    }

    #[test]
    fn hash_chains_survive_unlinking() {
        // Two texts whose 32-bit hashes collide share one chain.
        let mut seen: FxHashMap<u32, String> = FxHashMap::default();
        let (x, y) = (0u32..)
            .find_map(|n| {
                let t = format!("krn:iam:t::user/u{n}");
                let h = hash(&t, false);
                seen.insert(h, t.clone()).map(|prev| (prev, t))
            })
            .unwrap();
        let mut i = Interner::default();
        let a = i.intern(&x);
        let b = i.intern(&y);
        assert_ne!(a, b);
        assert_eq!(i.heads.len(), 1);
        assert_eq!((i.exact(&x), i.exact(&y)), (Some(a), Some(b)));
        i.release(a); // not the head
        assert_eq!((i.exact(&x), i.exact(&y)), (None, Some(b)));
        let a = i.intern(&x); // now the head
        assert_eq!((i.exact(&x), i.exact(&y)), (Some(a), Some(b)));
        i.release(a);
        assert_eq!((i.exact(&x), i.exact(&y)), (None, Some(b)));
        i.release(b);
        assert!(i.heads.is_empty());
        assert_eq!(i.len(), 0);
    }
}
