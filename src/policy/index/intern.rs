//! Interned patterns: each distinct KRN or action pattern is stored once and named by a `u32`.
//! Concrete patterns are looked up by their full text, wildcard patterns `X*` by their prefix `X`,
//! so a query finds the ids of its MatchingKRNs / MatchingActions from slices of its own text,
//! without building strings. Entries are reference-counted and freed when no statement uses them.
//!
//! Texts live in one arena string (no allocation and no header per pattern). An open-addressing
//! table of (32-bit hash of (text, wildcard), id) pairs, probed linearly and kept at most half
//! full, finds an id from a text; the text compare settles the rare equal hashes. The arena is
//! compacted when more than half of it is freed text.
//!
//! A query looks up several texts at once (a KRN and its wildcard cuts): [`Interner::find_batch`]
//! takes them in stages (every table slot, then every candidate entry, then every text), so that
//! the reads of one stage, independent of each other, overlap in memory instead of waiting one
//! after the other. On a large index these reads miss the caches, and they are most of a
//! decision's time.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// "No entry".
const NONE: u32 = u32::MAX;

/// Texts looked up together by [`Interner::find_batch`] (longer batches go in several rounds).
const BATCH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    hash: u32,
    /// `NONE`: empty.
    id: u32,
}

const EMPTY: Slot = Slot { hash: 0, id: NONE };

#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    /// Open addressing, linear probing; a power of two long, at most half full.
    slots: Vec<Slot>,
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
    hash: u32,
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

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Is `id` the entry of (`key`, `wildcard`)?
    fn is(&self, id: u32, key: &str, wildcard: bool) -> bool {
        self.entries.get(id as usize).is_some_and(|e| {
            e.wildcard == wildcard && e.len as usize == key.len() && self.text(e) == key
        })
    }

    /// The id of (`key`, `wildcard`), probing from the home slot of `h`.
    fn find(&self, key: &str, wildcard: bool, h: u32) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let s = *self.slots.get(i)?;
            if s.id == NONE {
                return None;
            }
            if s.hash == h && self.is(s.id, key, wildcard) {
                return Some(s.id);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot index holding `id` (whose hash is `h`).
    fn slot_of(&self, id: u32, h: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let s = *self.slots.get(i)?;
            if s.id == NONE {
                return None;
            }
            if s.id == id {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut i = slot.hash as usize & mask;
        while let Some(s) = self.slots.get_mut(i) {
            if s.id == NONE {
                *s = slot;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Room for one more entry at most half full.
    fn reserve_one(&mut self) {
        if (self.live + 1) * 2 <= self.slots.len() {
            return;
        }
        let n = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        for s in old.into_iter().filter(|s| s.id != NONE) {
            self.place(s);
        }
    }

    /// Empties slot `i`, moving later slots of its probe run back so that every entry stays
    /// reachable from its home slot (deletion without tombstones).
    fn unplace(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let Some(s) = self.slots.get(j).copied() else {
                break;
            };
            if s.id == NONE {
                break;
            }
            let home = s.hash as usize & mask;
            // `s` may stay where it is when its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                if let Some(x) = self.slots.get_mut(i) {
                    *x = s;
                }
                i = j;
            }
        }
        if let Some(x) = self.slots.get_mut(i) {
            *x = EMPTY;
        }
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
        self.reserve_one();
        let entry = Entry {
            at: self.arena.len() as u32,
            len: key.len() as u32,
            refs: 1,
            hash: h,
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
        self.place(Slot { hash: h, id });
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
        if let Some(i) = self.slot_of(id, e.hash) {
            self.unplace(i);
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

    /// The ids of the patterns `keys` names (`(text, true)`: the wildcard pattern `text*`), each
    /// found one pushed to `out` in the order of `keys`. The same as [`Interner::exact`] and
    /// [`Interner::prefix`] one after the other, with the memory reads of the lookups overlapped.
    pub fn find_batch(&self, keys: &[(&str, bool)], out: &mut Vec<u32>) {
        if self.live == 0 || self.slots.is_empty() {
            return;
        }
        let mask = self.mask();
        for chunk in keys.chunks(BATCH) {
            let mut hashes = [0u32; BATCH];
            let mut first = [EMPTY; BATCH];
            // Stage 1: every home slot (independent reads).
            for ((h, f), (k, w)) in hashes.iter_mut().zip(first.iter_mut()).zip(chunk) {
                *h = hash(k, *w);
                *f = self.slots.get(*h as usize & mask).copied().unwrap_or(EMPTY);
            }
            // Stage 2: every candidate entry's length and kind (independent reads).
            let mut cand = [NONE; BATCH];
            let mut fits = [false; BATCH];
            for n in 0..chunk.len() {
                let (Some(f), Some(h), Some((k, w))) = (first.get(n), hashes.get(n), chunk.get(n))
                else {
                    continue;
                };
                if f.id != NONE && f.hash == *h {
                    cand[n] = f.id;
                    fits[n] = self
                        .entries
                        .get(f.id as usize)
                        .is_some_and(|e| e.wildcard == *w && e.len as usize == k.len());
                }
            }
            // Stage 3: the texts, and the rare probe past the home slot.
            for n in 0..chunk.len() {
                let (Some(f), Some(h), Some((k, w))) = (first.get(n), hashes.get(n), chunk.get(n))
                else {
                    continue;
                };
                if f.id == NONE {
                    continue;
                }
                let id = cand[n];
                if fits[n] && self.is(id, k, *w) {
                    out.push(id);
                } else if let Some(id) = self.find(k, *w, *h) {
                    out.push(id);
                }
            }
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Approximate heap use in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
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
        let mut seen: rustc_hash::FxHashMap<u32, String> = Default::default();
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
        assert_eq!(i.slots.iter().filter(|s| s.id != NONE).count(), 2);
        assert_eq!((i.exact(&x), i.exact(&y)), (Some(a), Some(b)));
        i.release(a); // not the head
        assert_eq!((i.exact(&x), i.exact(&y)), (None, Some(b)));
        let a = i.intern(&x); // now the head
        assert_eq!((i.exact(&x), i.exact(&y)), (Some(a), Some(b)));
        i.release(a);
        assert_eq!((i.exact(&x), i.exact(&y)), (None, Some(b)));
        i.release(b);
        assert!(i.slots.iter().all(|s| s.id == NONE));
        assert_eq!(i.len(), 0);
    }

    /// Random interns and releases against a plain map: every text is found exactly while it
    /// is live, one by one and in batches, whatever the probe runs and deletions did.
    #[test]
    fn agrees_with_a_map_under_random_interns_and_releases() {
        use std::collections::HashMap;
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let texts: Vec<String> = (0..3000)
            .map(|n| {
                if n % 3 == 0 {
                    format!("krn:iam:t::user/o{}/", n % 50)
                } else {
                    format!("krn:iam:t::user/o{}/u{n}", n % 50)
                }
            })
            .collect();
        let mut i = Interner::default();
        let mut model: HashMap<(String, bool), (u32, u32)> = HashMap::new();
        for step in 0..40_000 {
            let t = &texts[(next() % texts.len() as u64) as usize];
            let wildcard = next() % 2 == 0;
            let key = (t.clone(), wildcard);
            if next() % 3 != 0 {
                let pattern = if wildcard { format!("{t}*") } else { t.clone() };
                let id = i.intern(&pattern);
                let e = model.entry(key).or_insert((id, 0));
                assert_eq!(e.0, id, "step {step}");
                e.1 += 1;
            } else if let Some(e) = model.get_mut(&key) {
                i.release(e.0);
                e.1 -= 1;
                if e.1 == 0 {
                    model.remove(&key);
                }
            }
            if step % 997 == 0 {
                let keys: Vec<(&str, bool)> = texts
                    .iter()
                    .flat_map(|t| [(t.as_str(), false), (t.as_str(), true)])
                    .collect();
                let mut batch = Vec::new();
                i.find_batch(&keys, &mut batch);
                let mut one_by_one = Vec::new();
                for (k, w) in &keys {
                    let found = if *w { i.prefix(k) } else { i.exact(k) };
                    let expected = model.get(&(k.to_string(), *w)).map(|e| e.0);
                    assert_eq!(found, expected, "step {step}: {k} {w}");
                    one_by_one.extend(found);
                }
                assert_eq!(batch, one_by_one, "step {step}");
                assert_eq!(i.len(), model.len());
            }
        }
    }
}
