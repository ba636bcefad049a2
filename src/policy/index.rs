//! The per-tenant policy index and decisions (spec §3.2, DESIGN §3.4, docs/ENGINE_API.md).
//!
//! Every statement of a stored policy is posted under the pairs (action pattern, resource key) it
//! covers, in a hash map keyed by interned ids. A query expands its action into MatchingActions
//! (at most 5) and its resource into MatchingKRNs plus its pools, looks those up, and touches only
//! the statements found there; the principal test is a sorted-set overlap between the statement's
//! principal keys and the ids of the MatchingKRNs of the query's principals. Statements whose
//! action × resource product is large are posted under their resource keys only and test the
//! action on lookup. A statement costs one 28-byte entry, its ids in one per-policy block, and one
//! posting per key; strings are shared by all statements that name them.

mod intern;
mod scan;

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::action::{self, Action};
use super::document::{Effect, PolicyDocument, PolicyKind};
use super::err::IndexError;
use super::krn::{self, Krn};
use intern::Interner;

pub(crate) use scan::scan_policy;

/// Longest policy id, in bytes.
pub const MAX_POLICY_ID_LEN: usize = 1024;

/// Above this many extra postings, a statement is posted by resource only (see the module doc).
const WIDE_SLACK: usize = 64;

/// A policy as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// Opaque to the engine: IAM uses the policy KRN string; base policies use their name.
    pub id: String,
    pub document: PolicyDocument,
    /// Users, groups, roles the policy is attached to.
    pub attached_principals: Vec<Krn>,
    /// Pools (resource groups) the policy is attached to.
    pub attached_pools: Vec<Krn>,
    /// For kind Resource: the one resource it is bound to (ignored for other kinds).
    pub resource: Option<Krn>,
}

impl StoredPolicy {
    /// The checks `upsert` makes: the id, the document's own rules, and for a resource policy a
    /// concrete bound resource that every statement resource equals.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.id.is_empty() {
            return Err(IndexError::EmptyId);
        }
        if self.id.len() > MAX_POLICY_ID_LEN {
            return Err(IndexError::IdTooLong {
                id: self.id.clone(),
                max: MAX_POLICY_ID_LEN,
            });
        }
        self.document
            .validate()
            .map_err(|error| IndexError::Invalid {
                id: self.id.clone(),
                error,
            })?;
        if self.document.kind == PolicyKind::Resource {
            let Some(bound) = &self.resource else {
                return Err(IndexError::Unbound(self.id.clone()));
            };
            if bound.is_wildcard() {
                return Err(IndexError::WildcardBound {
                    id: self.id.clone(),
                    resource: bound.to_string(),
                });
            }
            for (statement, st) in self.document.statements.iter().enumerate() {
                if let Some(r) = st.resources.iter().find(|r| *r != bound) {
                    return Err(IndexError::OtherResource {
                        id: self.id.clone(),
                        statement,
                        resource: r.to_string(),
                        bound: bound.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The bound resource when it is a resource key (kind Resource only).
    pub(crate) fn bound(&self) -> Option<&Krn> {
        match self.document.kind {
            PolicyKind::Resource => self.resource.as_ref(),
            _ => None,
        }
    }
}

/// One authorization question.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The caller's principal set, already expanded: user, its groups and their ancestors, roles.
    pub principals: &'a [Krn],
    /// Concrete; a wildcard action decides `ImplicitDeny`.
    pub action: &'a Action,
    /// Concrete; a wildcard resource decides `ImplicitDeny`.
    pub resource: &'a Krn,
    /// Pools the resource is a member of.
    pub resource_pools: &'a [Krn],
}

/// What a decision came to. JSON `"allow"`, `"explicitDeny"`, `"implicitDeny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// A statement that decided: JSON `{"policyID", "statement"}`; `statement` counts from 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reason {
    #[serde(rename = "policyID")]
    pub policy_id: String,
    pub statement: usize,
}

/// An outcome and the statements behind it, sorted by (policy id, statement).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// `ImplicitDeny` without reasons.
    pub fn implicit_deny() -> Decision {
        Decision {
            outcome: Outcome::ImplicitDeny,
            reasons: Vec::new(),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

/// Applying statements found so far, as (policy id, statement index).
#[derive(Debug, Default)]
pub(crate) struct Hits<'a> {
    deny: Vec<(&'a str, usize)>,
    allow: Vec<(&'a str, usize)>,
}

impl<'a> Hits<'a> {
    pub(crate) fn push(&mut self, effect: Effect, policy: &'a str, statement: usize) {
        match effect {
            Effect::Deny => self.deny.push((policy, statement)),
            Effect::Allow => self.allow.push((policy, statement)),
        }
    }

    pub(crate) fn into_decision(self) -> Decision {
        let (outcome, mut list) = if !self.deny.is_empty() {
            (Outcome::ExplicitDeny, self.deny)
        } else if !self.allow.is_empty() {
            (Outcome::Allow, self.allow)
        } else {
            return Decision::implicit_deny();
        };
        list.sort_unstable();
        list.dedup();
        Decision {
            outcome,
            reasons: list
                .into_iter()
                .map(|(id, statement)| Reason {
                    policy_id: id.to_owned(),
                    statement,
                })
                .collect(),
        }
    }
}

/// The statements of one policy slot.
#[derive(Debug, Clone)]
struct PolicySlot {
    id: Arc<str>,
    /// `[statement ids][attached principal ids][pool ids][per statement: actions, resources,
    /// principals]`; id lists sorted and without duplicates.
    data: Box<[u32]>,
    n_stmts: u32,
    n_attached: u32,
    n_pools: u32,
}

impl PolicySlot {
    fn stmt_ids(&self) -> &[u32] {
        self.data.get(..self.n_stmts as usize).unwrap_or(&[])
    }

    fn attached(&self) -> &[u32] {
        let a = self.n_stmts as usize;
        self.data
            .get(a..a + self.n_attached as usize)
            .unwrap_or(&[])
    }

    fn pools(&self) -> &[u32] {
        let a = (self.n_stmts + self.n_attached) as usize;
        self.data.get(a..a + self.n_pools as usize).unwrap_or(&[])
    }
}

/// One indexed statement.
#[derive(Debug, Clone, Copy, Default)]
struct StmtEntry {
    policy: u32,
    /// Index of the statement in its policy.
    index: u32,
    /// Offset of its block in the policy's data.
    at: u32,
    n_actions: u32,
    n_resources: u32,
    n_principals: u32,
    deny: bool,
    wide: bool,
}

impl StmtEntry {
    fn actions<'s>(&self, slot: &'s PolicySlot) -> &'s [u32] {
        let a = self.at as usize;
        slot.data.get(a..a + self.n_actions as usize).unwrap_or(&[])
    }

    fn resources<'s>(&self, slot: &'s PolicySlot) -> &'s [u32] {
        let a = (self.at + self.n_actions) as usize;
        slot.data
            .get(a..a + self.n_resources as usize)
            .unwrap_or(&[])
    }

    fn principals<'s>(&self, slot: &'s PolicySlot) -> &'s [u32] {
        let a = (self.at + self.n_actions + self.n_resources) as usize;
        slot.data
            .get(a..a + self.n_principals as usize)
            .unwrap_or(&[])
    }
}

/// Statement ids by key. A key with one statement stores its id in the map itself; a key with
/// more stores `LIST | n`, `n` naming a list in `lists`. Statement ids stay below `LIST`.
#[derive(Debug, Clone)]
struct Postings<K> {
    map: FxHashMap<K, u32>,
    lists: Vec<Vec<u32>>,
    free_lists: Vec<u32>,
}

const LIST: u32 = 1 << 31;

impl<K> Default for Postings<K> {
    fn default() -> Self {
        Postings {
            map: FxHashMap::default(),
            lists: Vec::new(),
            free_lists: Vec::new(),
        }
    }
}

impl<K: Eq + std::hash::Hash + Copy> Postings<K> {
    #[inline]
    fn get(&self, k: &K) -> &[u32] {
        match self.map.get(k) {
            None => &[],
            Some(v) if v & LIST == 0 => std::slice::from_ref(v),
            Some(v) => self
                .lists
                .get((v & !LIST) as usize)
                .map_or(&[], Vec::as_slice),
        }
    }

    fn add(&mut self, k: K, s: u32) {
        use std::collections::hash_map::Entry;
        match self.map.entry(k) {
            Entry::Vacant(e) => {
                e.insert(s);
            }
            Entry::Occupied(mut e) => {
                let v = *e.get();
                if v & LIST == 0 {
                    let list = vec![v, s];
                    let n = match self.free_lists.pop() {
                        Some(n) => {
                            if let Some(slot) = self.lists.get_mut(n as usize) {
                                *slot = list;
                            }
                            n
                        }
                        None => {
                            self.lists.push(list);
                            (self.lists.len() - 1) as u32
                        }
                    };
                    e.insert(LIST | n);
                } else if let Some(list) = self.lists.get_mut((v & !LIST) as usize) {
                    list.push(s);
                }
            }
        }
    }

    fn remove(&mut self, k: K, s: u32) {
        let Some(&v) = self.map.get(&k) else {
            return;
        };
        if v & LIST == 0 {
            if v == s {
                self.map.remove(&k);
            }
            return;
        }
        let n = v & !LIST;
        let Some(list) = self.lists.get_mut(n as usize) else {
            return;
        };
        if let Some(pos) = list.iter().position(|&x| x == s) {
            list.swap_remove(pos);
        }
        match list.as_slice() {
            [] => {
                self.map.remove(&k);
            }
            [only] => {
                let only = *only;
                self.map.insert(k, only);
            }
            _ => return,
        }
        *list = Vec::new();
        self.free_lists.push(n);
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<(K, u32)>() + 1)
            + self.lists.capacity() * std::mem::size_of::<Vec<u32>>()
            + self.lists.iter().map(|l| l.capacity() * 4).sum::<usize>()
            + self.free_lists.capacity() * 4
    }
}

/// Resource key of a KRN pattern (matched by MatchingKRNs) or of a pool (matched by membership).
#[inline]
fn res_key(krn_id: u32, pool: bool) -> u32 {
    krn_id << 1 | u32::from(pool)
}

#[inline]
fn pair_key(action_id: u32, res_key: u32) -> u64 {
    u64::from(action_id) << 32 | u64::from(res_key)
}

/// True when two sorted id lists share an element.
fn intersects(a: &[u32], b: &[u32]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if large.len() <= 8 {
        return small.iter().any(|x| large.contains(x));
    }
    small.iter().any(|x| large.binary_search(x).is_ok())
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

/// The statements of one tenant, indexed for decisions.
#[derive(Debug, Clone, Default)]
pub struct PolicyIndex {
    revision: u64,
    krns: Interner,
    actions: Interner,
    policies: Vec<Option<PolicySlot>>,
    free_policies: Vec<u32>,
    by_id: FxHashMap<Arc<str>, u32>,
    stmts: Vec<StmtEntry>,
    free_stmts: Vec<u32>,
    live_stmts: usize,
    /// (action pattern, resource key) -> statements.
    pairs: Postings<u64>,
    /// resource key -> statements whose actions are tested on lookup.
    wide: Postings<u32>,
}

/// A query resource's keys, or an action's pattern ids, in one index.
type Keys = Vec<u32>;

impl PolicyIndex {
    pub fn new() -> PolicyIndex {
        PolicyIndex::default()
    }

    /// Number of changes made so far.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn policy_count(&self) -> usize {
        self.by_id.len()
    }

    pub fn statement_count(&self) -> usize {
        self.live_stmts
    }

    /// Distinct interned patterns (KRNs and actions) in use.
    pub fn pattern_count(&self) -> usize {
        self.krns.len() + self.actions.len()
    }

    /// True when a policy with this id is stored.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Adds the policy, or replaces the one with the same id. Invalid policies leave the index
    /// unchanged.
    pub fn upsert(&mut self, p: StoredPolicy) -> Result<(), IndexError> {
        p.validate()?;
        if let Some(slot) = self.by_id.get(p.id.as_str()).copied() {
            self.remove_slot(slot);
        }
        self.insert(&p);
        self.revision += 1;
        Ok(())
    }

    /// Upsert without validation, for base policies instantiated for a tenant whose name cannot
    /// stand in a KRN (their allow statements may have lost every resource).
    pub(crate) fn upsert_unchecked(&mut self, p: &StoredPolicy) {
        if let Some(slot) = self.by_id.get(p.id.as_str()).copied() {
            self.remove_slot(slot);
        }
        self.insert(p);
        self.revision += 1;
    }

    /// Removes the policy with this id; false (and no change) when there is none.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.by_id.get(id).copied() {
            Some(slot) => {
                self.remove_slot(slot);
                self.revision += 1;
                true
            }
            None => false,
        }
    }

    /// Approximate heap use in bytes (for capacity planning and benchmarks).
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Option<PolicySlot>>();
        let policies: usize = self
            .policies
            .iter()
            .flatten()
            .map(|p| p.data.len() * 4 + 16 + p.id.len().next_multiple_of(8))
            .sum();
        self.krns.heap_bytes()
            + self.actions.heap_bytes()
            + self.policies.capacity() * slot
            + policies
            + self.free_policies.capacity() * 4
            + self.by_id.capacity() * (std::mem::size_of::<(Arc<str>, u32)>() + 1)
            + self.stmts.capacity() * std::mem::size_of::<StmtEntry>()
            + self.free_stmts.capacity() * 4
            + self.pairs.heap_bytes()
            + self.wide.heap_bytes()
    }

    fn insert(&mut self, p: &StoredPolicy) {
        let n_stmts = p.document.statements.len();
        let attached = self.intern_krns(&p.attached_principals, None);
        let pools = self.intern_krns(&p.attached_pools, None);

        let mut data: Vec<u32> =
            Vec::with_capacity(n_stmts + attached.len() + pools.len() + 4 * n_stmts);
        data.resize(n_stmts, 0);
        data.extend_from_slice(&attached);
        data.extend_from_slice(&pools);

        let slot_id = match self.free_policies.pop() {
            Some(s) => s,
            None => {
                self.policies.push(None);
                (self.policies.len() - 1) as u32
            }
        };
        let bound = p.bound();
        let mut entries = Vec::with_capacity(n_stmts);
        for (index, st) in p.document.statements.iter().enumerate() {
            let mut action_names: Vec<&str> = st.actions.iter().map(Action::as_str).collect();
            action_names.sort_unstable();
            action_names.dedup();
            let at = data.len() as u32;
            let acts = sorted(
                action_names
                    .iter()
                    .map(|a| self.actions.intern(a))
                    .collect(),
            );
            let res = self.intern_krns(&st.resources, bound);
            let prin = self.intern_krns(&st.principals, None);
            let n_keys = res.len() + pools.len();
            let wide = acts.len() > 1 && acts.len() * n_keys > n_keys + WIDE_SLACK;
            entries.push(StmtEntry {
                policy: slot_id,
                index: index as u32,
                at,
                n_actions: acts.len() as u32,
                n_resources: res.len() as u32,
                n_principals: prin.len() as u32,
                deny: st.effect == Effect::Deny,
                wide,
            });
            data.extend_from_slice(&acts);
            data.extend_from_slice(&res);
            data.extend_from_slice(&prin);
        }
        for (i, entry) in entries.into_iter().enumerate() {
            let sid = match self.free_stmts.pop() {
                Some(s) => {
                    if let Some(e) = self.stmts.get_mut(s as usize) {
                        *e = entry;
                    }
                    s
                }
                None => {
                    self.stmts.push(entry);
                    (self.stmts.len() - 1) as u32
                }
            };
            if let Some(d) = data.get_mut(i) {
                *d = sid;
            }
        }
        let slot = PolicySlot {
            id: Arc::from(p.id.as_str()),
            data: data.into_boxed_slice(),
            n_stmts: n_stmts as u32,
            n_attached: attached.len() as u32,
            n_pools: pools.len() as u32,
        };
        for &sid in slot.stmt_ids() {
            let Some(e) = self.stmts.get(sid as usize).copied() else {
                continue;
            };
            for_each_key(&e, &slot, |key| match key {
                Key::Pair(k) => self.pairs.add(k, sid),
                Key::Wide(k) => self.wide.add(k, sid),
            });
        }
        self.live_stmts += n_stmts;
        self.by_id.insert(slot.id.clone(), slot_id);
        if let Some(s) = self.policies.get_mut(slot_id as usize) {
            *s = Some(slot);
        }
    }

    /// Interns each distinct KRN of `list` (and `extra`) once; the sorted ids.
    fn intern_krns(&mut self, list: &[Krn], extra: Option<&Krn>) -> Vec<u32> {
        let mut names: Vec<&str> = list.iter().chain(extra).map(Krn::as_str).collect();
        names.sort_unstable();
        names.dedup();
        sorted(names.into_iter().map(|k| self.krns.intern(k)).collect())
    }

    fn remove_slot(&mut self, slot_id: u32) {
        let Some(slot) = self
            .policies
            .get_mut(slot_id as usize)
            .and_then(Option::take)
        else {
            return;
        };
        for &sid in slot.stmt_ids() {
            let Some(e) = self.stmts.get(sid as usize).copied() else {
                continue;
            };
            for_each_key(&e, &slot, |key| match key {
                Key::Pair(k) => self.pairs.remove(k, sid),
                Key::Wide(k) => self.wide.remove(k, sid),
            });
            for &a in e.actions(&slot) {
                self.actions.release(a);
            }
            for &r in e.resources(&slot).iter().chain(e.principals(&slot)) {
                self.krns.release(r);
            }
            if let Some(entry) = self.stmts.get_mut(sid as usize) {
                *entry = StmtEntry::default();
            }
            self.free_stmts.push(sid);
        }
        for &k in slot.attached().iter().chain(slot.pools()) {
            self.krns.release(k);
        }
        self.live_stmts = self.live_stmts.saturating_sub(slot.n_stmts as usize);
        self.by_id.remove(&*slot.id);
        self.free_policies.push(slot_id);
    }

    // ----- queries -----

    /// The ids of the MatchingKRNs of every principal, sorted.
    pub(crate) fn principal_set(&self, principals: &[Krn]) -> Keys {
        let mut out = Vec::with_capacity(principals.len() * 4);
        for p in principals {
            let s = p.as_str();
            if !p.is_wildcard() {
                out.extend(self.krns.exact(s));
            }
            out.extend(krn::wildcard_prefixes(s).filter_map(|x| self.krns.prefix(x)));
        }
        sorted(out)
    }

    /// The ids of MatchingActions; empty for a wildcard action.
    pub(crate) fn action_keys(&self, a: &Action) -> Keys {
        if a.is_wildcard() {
            return Vec::new();
        }
        let s = a.as_str();
        let mut out = Vec::with_capacity(5);
        out.extend(self.actions.exact(s));
        out.extend(action::wildcard_prefixes(s).filter_map(|x| self.actions.prefix(x)));
        out
    }

    /// The resource keys of MatchingKRNs and pools; empty for a wildcard resource.
    pub(crate) fn resource_keys(&self, r: &Krn, pools: &[Krn]) -> Keys {
        if r.is_wildcard() {
            return Vec::new();
        }
        let s = r.as_str();
        let mut out = Vec::with_capacity(8 + pools.len());
        out.extend(self.krns.exact(s).map(|id| res_key(id, false)));
        out.extend(
            krn::wildcard_prefixes(s)
                .filter_map(|x| self.krns.prefix(x))
                .map(|id| res_key(id, false)),
        );
        out.extend(
            pools
                .iter()
                .filter_map(|p| self.krn_id(p))
                .map(|id| res_key(id, true)),
        );
        out
    }

    /// The id of a KRN as interned (a pattern key, a pool, a principal), by equality.
    fn krn_id(&self, k: &Krn) -> Option<u32> {
        match k.as_str().strip_suffix('*') {
            Some(prefix) => self.krns.prefix(prefix),
            None => self.krns.exact(k.as_str()),
        }
    }

    /// Candidate statements for an action and a resource (may repeat).
    fn candidates(&self, action_keys: &[u32], resource_keys: &[u32], out: &mut Vec<u32>) {
        if action_keys.is_empty() {
            return;
        }
        for &r in resource_keys {
            for &a in action_keys {
                out.extend_from_slice(self.pairs.get(&pair_key(a, r)));
            }
            if !self.wide.is_empty() {
                for &sid in self.wide.get(&r) {
                    let hit = self.entry(sid).is_some_and(|(e, slot)| {
                        let acts = e.actions(slot);
                        action_keys.iter().any(|a| acts.binary_search(a).is_ok())
                    });
                    if hit {
                        out.push(sid);
                    }
                }
            }
        }
    }

    fn entry(&self, sid: u32) -> Option<(&StmtEntry, &PolicySlot)> {
        let e = self.stmts.get(sid as usize)?;
        let slot = self.policies.get(e.policy as usize)?.as_ref()?;
        Some((e, slot))
    }

    /// Adds the applying statements among the candidates to `hits`, skipping excluded policies.
    /// `pset` is computed on first need.
    fn apply<'a>(
        &'a self,
        cands: &mut Vec<u32>,
        principals: &[Krn],
        pset: &mut Option<Keys>,
        exclude: Option<&FxHashSet<u32>>,
        hits: &mut Hits<'a>,
    ) {
        if cands.is_empty() {
            return;
        }
        cands.sort_unstable();
        cands.dedup();
        let pset = pset.get_or_insert_with(|| self.principal_set(principals));
        for &sid in cands.iter() {
            let Some((e, slot)) = self.entry(sid) else {
                continue;
            };
            if exclude.is_some_and(|x| x.contains(&e.policy)) {
                continue;
            }
            if intersects(e.principals(slot), pset) || intersects(slot.attached(), pset) {
                let effect = if e.deny { Effect::Deny } else { Effect::Allow };
                hits.push(effect, &slot.id, e.index as usize);
            }
        }
        cands.clear();
    }

    /// The slots of the stored policies with these ids.
    fn slots_of<'s>(&self, ids: impl Iterator<Item = &'s str>) -> FxHashSet<u32> {
        ids.filter_map(|id| self.by_id.get(id).copied()).collect()
    }

    pub fn decide(&self, q: &Query) -> Decision {
        let layers = [Layer::new(self)];
        let mut hits = Hits::default();
        decide_into(&layers, &[], q, &mut hits);
        hits.into_decision()
    }

    /// Decisions for every action and resource (`[action][resource]`); `resources` pairs each
    /// resource with its pools. Principals, actions and resources are expanded once each.
    pub fn decide_matrix(
        &self,
        principals: &[Krn],
        actions: &[Action],
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<Vec<Decision>> {
        matrix(&[Layer::new(self)], principals, actions, resources)
    }

    /// Indexes of the resources on which `action` is allowed.
    pub fn allowed_resources(
        &self,
        principals: &[Krn],
        action: &Action,
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<usize> {
        allowed_resources(&[Layer::new(self)], principals, action, resources)
    }

    /// Indexes of the actions allowed on `resource`.
    pub fn allowed_actions(
        &self,
        principals: &[Krn],
        actions: &[Action],
        resource: &Krn,
        pools: &[Krn],
    ) -> Vec<usize> {
        allowed_actions(&[Layer::new(self)], principals, actions, resource, pools)
    }

    /// The decision the index would give with the policies `remove` names taken out and `add`
    /// upserted (in order), without changing it. Added policies are used as given: validate them
    /// first with [`StoredPolicy::validate`].
    pub fn simulate(&self, q: &Query, add: &[StoredPolicy], remove: &[&str]) -> Decision {
        let (layer, extra) = simulated(self, add, remove);
        let layers = [layer];
        let mut hits = Hits::default();
        decide_into(&layers, &extra, q, &mut hits);
        hits.into_decision()
    }
}

/// The layer of `index` with `remove` and the ids of `add` excluded, and the added policies
/// (the last one of each id).
pub(crate) fn simulated<'a>(
    index: &'a PolicyIndex,
    add: &'a [StoredPolicy],
    remove: &[&str],
) -> (Layer<'a>, Vec<&'a StoredPolicy>) {
    let exclude = index.slots_of(
        remove
            .iter()
            .copied()
            .chain(add.iter().map(|p| p.id.as_str())),
    );
    let mut extra: Vec<&StoredPolicy> = Vec::with_capacity(add.len());
    for (i, p) in add.iter().enumerate() {
        if !add[i + 1..].iter().any(|later| later.id == p.id) {
            extra.push(p);
        }
    }
    (
        Layer {
            index,
            exclude: Some(exclude),
        },
        extra,
    )
}

/// An index taking part in a decision, minus some of its policies.
#[derive(Debug)]
pub(crate) struct Layer<'a> {
    pub index: &'a PolicyIndex,
    pub exclude: Option<FxHashSet<u32>>,
}

impl<'a> Layer<'a> {
    pub(crate) fn new(index: &'a PolicyIndex) -> Layer<'a> {
        Layer {
            index,
            exclude: None,
        }
    }
}

/// Adds to `hits` the statements of every layer and extra policy that apply to `q`.
pub(crate) fn decide_into<'a>(
    layers: &[Layer<'a>],
    extra: &[&'a StoredPolicy],
    q: &Query,
    hits: &mut Hits<'a>,
) {
    if q.action.is_wildcard() || q.resource.is_wildcard() {
        return;
    }
    let mut cands = Vec::new();
    for layer in layers {
        let ix = layer.index;
        let acts = ix.action_keys(q.action);
        if acts.is_empty() {
            continue;
        }
        let res = ix.resource_keys(q.resource, q.resource_pools);
        ix.candidates(&acts, &res, &mut cands);
        ix.apply(
            &mut cands,
            q.principals,
            &mut None,
            layer.exclude.as_ref(),
            hits,
        );
    }
    for p in extra {
        scan_policy(p, q, hits);
    }
}

pub(crate) fn matrix<'a>(
    layers: &[Layer<'a>],
    principals: &[Krn],
    actions: &[Action],
    resources: &[(Krn, Vec<Krn>)],
) -> Vec<Vec<Decision>> {
    let mut out: Vec<Vec<Hits<'a>>> = actions
        .iter()
        .map(|_| resources.iter().map(|_| Hits::default()).collect())
        .collect();
    let mut cands = Vec::new();
    for layer in layers {
        let ix = layer.index;
        let mut pset = None;
        let res_keys: Vec<Keys> = resources
            .iter()
            .map(|(r, pools)| ix.resource_keys(r, pools))
            .collect();
        for (a, row) in actions.iter().zip(out.iter_mut()) {
            let acts = ix.action_keys(a);
            if acts.is_empty() {
                continue;
            }
            for ((keys, (r, _)), cell) in res_keys.iter().zip(resources).zip(row.iter_mut()) {
                if r.is_wildcard() {
                    continue;
                }
                ix.candidates(&acts, keys, &mut cands);
                ix.apply(
                    &mut cands,
                    principals,
                    &mut pset,
                    layer.exclude.as_ref(),
                    cell,
                );
            }
        }
    }
    out.into_iter()
        .map(|row| row.into_iter().map(Hits::into_decision).collect())
        .collect()
}

pub(crate) fn allowed_resources(
    layers: &[Layer<'_>],
    principals: &[Krn],
    action: &Action,
    resources: &[(Krn, Vec<Krn>)],
) -> Vec<usize> {
    let rows = matrix(layers, principals, std::slice::from_ref(action), resources);
    rows.into_iter()
        .next()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_allowed())
        .map(|(i, _)| i)
        .collect()
}

pub(crate) fn allowed_actions(
    layers: &[Layer<'_>],
    principals: &[Krn],
    actions: &[Action],
    resource: &Krn,
    pools: &[Krn],
) -> Vec<usize> {
    let resources = [(resource.clone(), pools.to_vec())];
    matrix(layers, principals, actions, &resources)
        .iter()
        .enumerate()
        .filter(|(_, row)| row.first().is_some_and(Decision::is_allowed))
        .map(|(i, _)| i)
        .collect()
}

enum Key {
    Pair(u64),
    Wide(u32),
}

/// Every posting key of a statement.
fn for_each_key(e: &StmtEntry, slot: &PolicySlot, mut f: impl FnMut(Key)) {
    let keys = e
        .resources(slot)
        .iter()
        .map(|&r| res_key(r, false))
        .chain(slot.pools().iter().map(|&p| res_key(p, true)));
    if e.wide {
        keys.for_each(|k| f(Key::Wide(k)));
    } else {
        for k in keys {
            for &a in e.actions(slot) {
                f(Key::Pair(pair_key(a, k)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
