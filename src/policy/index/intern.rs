//! Interned patterns: each distinct KRN or action pattern is stored once and named by a `u32`.
//! Concrete patterns are looked up by their full text, wildcard patterns `X*` by their prefix `X`,
//! so a query finds the ids of its MatchingKRNs / MatchingActions from slices of its own text,
//! without building strings. Entries are reference-counted and freed when no statement uses them.

use std::sync::Arc;

use rustc_hash::FxHashMap;

#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    /// Concrete patterns by full text.
    exact: FxHashMap<Arc<str>, u32>,
    /// Wildcard patterns `X*` by `X`.
    prefix: FxHashMap<Arc<str>, u32>,
    entries: Vec<Entry>,
    free: Vec<u32>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The exact text, or the prefix of a wildcard; `None` once freed.
    text: Option<Arc<str>>,
    wildcard: bool,
    refs: u32,
}

impl Interner {
    /// The id of `pattern` (canonical text; a trailing `*` marks a wildcard), one more reference.
    pub fn intern(&mut self, pattern: &str) -> u32 {
        let (key, wildcard) = match pattern.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        let map = if wildcard {
            &mut self.prefix
        } else {
            &mut self.exact
        };
        if let Some(&id) = map.get(key) {
            if let Some(e) = self.entries.get_mut(id as usize) {
                e.refs += 1;
            }
            return id;
        }
        let text: Arc<str> = Arc::from(key);
        let entry = Entry {
            text: Some(text.clone()),
            wildcard,
            refs: 1,
        };
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
        map.insert(text, id);
        id
    }

    /// Drops one reference; the entry is freed with the last one.
    pub fn release(&mut self, id: u32) {
        let Some(e) = self.entries.get_mut(id as usize) else {
            return;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return;
        }
        if let Some(text) = e.text.take() {
            let map = if e.wildcard {
                &mut self.prefix
            } else {
                &mut self.exact
            };
            map.remove(&*text);
            self.free.push(id);
        }
    }

    /// The id of a concrete pattern.
    #[inline]
    pub fn exact(&self, text: &str) -> Option<u32> {
        if self.exact.is_empty() {
            return None;
        }
        self.exact.get(text).copied()
    }

    /// The id of the wildcard pattern `prefix*`.
    #[inline]
    pub fn prefix(&self, prefix: &str) -> Option<u32> {
        if self.prefix.is_empty() {
            return None;
        }
        self.prefix.get(prefix).copied()
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len()
    }

    /// Approximate heap use in bytes.
    pub fn heap_bytes(&self) -> usize {
        let map_slot = std::mem::size_of::<(Arc<str>, u32)>() + 1;
        let strings: usize = self
            .entries
            .iter()
            .filter_map(|e| e.text.as_ref())
            .map(|t| 16 + t.len().next_multiple_of(8))
            .sum();
        (self.exact.capacity() + self.prefix.capacity()) * map_slot
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.free.capacity() * 4
            + strings
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
}
