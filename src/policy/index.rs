//! The per-tenant policy index and decisions (spec §3.2, DESIGN §3.4, docs/ENGINE_API.md).
//!
//! Statements are selected by principal first. Every principal key a statement applies to (its
//! own principals and its policy's attachments, as interned KRN ids, wildcards included) owns a
//! map from resource key (MatchingKRN pattern or pool) to the statements posted there. A query
//! resolves its principal set once to the maps of the keys it matches, then looks its resource
//! keys up in those maps only and tests the action of the few statements found (binary search in
//! the statement's sorted action ids). The work of a decision therefore follows the policies of
//! the principal, not the size of the tenant.
//!
//! A statement with more than [`FANOUT`] principal keys (a policy attached to many principals) is
//! posted once, in a map of its policy, which its principal keys reach through `via`; those
//! statements test the principal on lookup. A statement costs one 20-byte entry, its ids in one
//! per-policy block, and one posting per (principal key, resource key); strings are shared by all
//! statements that name them.
//!
//! Statements with conditions or resource variables are posted like the others (a variable
//! resource under the wildcard pattern of its text before the first `${`) and flagged; only when
//! the index finds a flagged statement does it read its conditions from `extras` and evaluate them
//! against the query's environment.

mod intern;
mod scan;

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::action::{self, Action};
use super::condition::{ConditionCheck, Env, Facts, NoEnv, ResourceCheck};
use super::document::{Effect, PolicyDocument, PolicyKind, Statement};
use super::err::IndexError;
use super::krn::{self, Krn};
use intern::Interner;

pub(crate) use scan::scan_policy;

/// Longest policy id, in bytes.
pub const MAX_POLICY_ID_LEN: usize = 1024;

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
    /// The request context and the metadata that conditions read ([`NoEnv`]: none).
    pub env: &'a dyn Env,
    /// The caller's principal set, already expanded: user, its groups and their ancestors, roles.
    pub principals: &'a [Krn],
    /// Concrete; a wildcard action decides `ImplicitDeny`.
    pub action: &'a Action,
    /// Concrete; a wildcard resource decides `ImplicitDeny`.
    pub resource: &'a Krn,
    /// Pools the resource is a member of.
    pub resource_pools: &'a [Krn],
}

impl<'a> Query<'a> {
    /// A question without request context or metadata.
    pub fn new(
        principals: &'a [Krn],
        action: &'a Action,
        resource: &'a Krn,
        resource_pools: &'a [Krn],
    ) -> Query<'a> {
        Query {
            env: &NoEnv,
            principals,
            action,
            resource,
            resource_pools,
        }
    }

    pub(crate) fn facts(&self) -> Facts<'a> {
        Facts {
            principals: self.principals,
            resource: self.resource,
            env: self.env,
        }
    }
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
    /// The statements with conditions or variables that matched principal, action and resource
    /// key, with what their conditions compared (whether they applied or were skipped), sorted
    /// by (policy id, statement). JSON `checked`, left out when empty.
    #[serde(rename = "checked", default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<StatementCheck>,
}

/// A statement with conditions or variables that the index matched, and why it applied or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatementCheck {
    #[serde(rename = "policyID")]
    pub policy_id: String,
    pub statement: usize,
    pub effect: Effect,
    /// True when its resources and every condition held.
    pub applied: bool,
    /// Each (operator, key) entry of its conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionCheck>,
    /// Its resources with variables, when no resource without variables matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceCheck>,
}

impl Decision {
    /// `ImplicitDeny` without reasons.
    pub fn implicit_deny() -> Decision {
        Decision {
            outcome: Outcome::ImplicitDeny,
            reasons: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// An outcome without reasons.
    pub fn of(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            reasons: Vec::new(),
            checks: Vec::new(),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

/// Where the statements that apply to a query are reported: [`Hits`] keeps them all (for
/// reasons), [`Verdict`] only the outcome.
pub(crate) trait Sink<'a> {
    fn push(&mut self, deny: bool, policy: &'a str, statement: usize);
    /// True once nothing more can change the outcome (an explicit deny, when reasons are not kept).
    fn settled(&self) -> bool {
        false
    }
    /// True when the conditions of the statements found are to be traced.
    fn tracing(&self) -> bool {
        false
    }
    /// A traced statement with conditions or variables.
    fn check(&mut self, _check: StatementCheck) {}
}

/// Applying statements found so far, as (policy id, statement index), and the traces of the
/// statements with conditions.
#[derive(Debug, Default)]
pub(crate) struct Hits<'a> {
    deny: Vec<(&'a str, usize)>,
    allow: Vec<(&'a str, usize)>,
    checks: Vec<StatementCheck>,
}

impl<'a> Sink<'a> for Hits<'a> {
    #[inline]
    fn push(&mut self, deny: bool, policy: &'a str, statement: usize) {
        if deny {
            self.deny.push((policy, statement));
        } else {
            self.allow.push((policy, statement));
        }
    }
}

/// [`Hits`] that also keeps what the conditions of the statements found compared (explanations
/// and simulations).
#[derive(Debug, Default)]
pub(crate) struct Traced<'a>(pub(crate) Hits<'a>);

impl<'a> Sink<'a> for Traced<'a> {
    #[inline]
    fn push(&mut self, deny: bool, policy: &'a str, statement: usize) {
        self.0.push(deny, policy, statement);
    }

    fn tracing(&self) -> bool {
        true
    }

    fn check(&mut self, check: StatementCheck) {
        self.0.checks.push(check);
    }
}

impl Traced<'_> {
    pub(crate) fn into_decision(self) -> Decision {
        self.0.into_decision()
    }
}

impl Hits<'_> {
    pub(crate) fn into_decision(self) -> Decision {
        // A statement found under several keys is traced once: as applied when it applied once.
        let mut checks = self.checks;
        checks.sort_by(|a, b| {
            (&a.policy_id, a.statement, !a.applied).cmp(&(&b.policy_id, b.statement, !b.applied))
        });
        checks.dedup_by(|later, first| {
            later.policy_id == first.policy_id && later.statement == first.statement
        });
        let (outcome, mut list) = if !self.deny.is_empty() {
            (Outcome::ExplicitDeny, self.deny)
        } else if !self.allow.is_empty() {
            (Outcome::Allow, self.allow)
        } else {
            let mut d = Decision::implicit_deny();
            d.checks = checks;
            return d;
        };
        list.sort_unstable();
        list.dedup();
        // A statement that applied through another of its keys is not shown as skipped.
        checks.retain(|c| {
            c.applied
                || list
                    .binary_search(&(c.policy_id.as_str(), c.statement))
                    .is_err()
        });
        Decision {
            checks,
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

/// The outcome alone: no reasons, no allocation.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Verdict(pub(crate) Outcome);

impl Default for Verdict {
    fn default() -> Self {
        Verdict(Outcome::ImplicitDeny)
    }
}

impl Sink<'_> for Verdict {
    #[inline]
    fn push(&mut self, deny: bool, _: &str, _: usize) {
        if deny {
            self.0 = Outcome::ExplicitDeny;
        } else if self.0 == Outcome::ImplicitDeny {
            self.0 = Outcome::Allow;
        }
    }

    #[inline]
    fn settled(&self) -> bool {
        self.0 == Outcome::ExplicitDeny
    }
}

/// A resource of a batch question and the pools it is a member of.
pub trait ResourceRef {
    fn resource(&self) -> &Krn;
    fn pools(&self) -> &[Krn];
}

impl ResourceRef for (Krn, Vec<Krn>) {
    fn resource(&self) -> &Krn {
        &self.0
    }
    fn pools(&self) -> &[Krn] {
        &self.1
    }
}

impl ResourceRef for (&Krn, &[Krn]) {
    fn resource(&self) -> &Krn {
        self.0
    }
    fn pools(&self) -> &[Krn] {
        self.1
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
    /// The map (in `PolicyIndex::maps`) of its statements with many principal keys, or `NONE`.
    map: u32,
    /// The stored version of the policy the statements come from (0: not known).
    version: i64,
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
    /// Offset of its block in the policy's data.
    at: u32,
    /// Index of the statement in its policy.
    index: u16,
    n_actions: u16,
    n_resources: u16,
    n_principals: u16,
    deny: bool,
    /// Posted in its policy's own map (reached through `via`) rather than under each principal key.
    indirect: bool,
    /// Has conditions or variables: [`PolicyIndex::extras`] holds them.
    checked: bool,
}

impl StmtEntry {
    fn actions<'s>(&self, slot: &'s PolicySlot) -> &'s [u32] {
        let a = self.at as usize;
        slot.data.get(a..a + self.n_actions as usize).unwrap_or(&[])
    }

    fn resources<'s>(&self, slot: &'s PolicySlot) -> &'s [u32] {
        let a = self.at as usize + self.n_actions as usize;
        slot.data
            .get(a..a + self.n_resources as usize)
            .unwrap_or(&[])
    }

    fn principals<'s>(&self, slot: &'s PolicySlot) -> &'s [u32] {
        let a = self.at as usize + self.n_actions as usize + self.n_resources as usize;
        slot.data
            .get(a..a + self.n_principals as usize)
            .unwrap_or(&[])
    }
}

/// "No map / no slot".
const NONE: u32 = u32::MAX;

/// A key with one statement (or slot) stores its id in the map itself; a key with more stores
/// `LIST | n`, `n` naming a list in [`Lists`]. Ids stay below `LIST`.
const LIST: u32 = 1 << 31;

/// Key -> ids, the ids of multi-id keys in a shared [`Lists`].
type KeyMap = FxHashMap<u32, u32>;

/// The posting lists of every [`KeyMap`] of an index.
#[derive(Debug, Clone, Default)]
struct Lists {
    lists: Vec<Vec<u32>>,
    free: Vec<u32>,
}

impl Lists {
    #[inline]
    fn get<'a>(&'a self, map: &'a KeyMap, k: u32) -> &'a [u32] {
        match map.get(&k) {
            None => &[],
            Some(v) if v & LIST == 0 => std::slice::from_ref(v),
            Some(v) => self
                .lists
                .get((v & !LIST) as usize)
                .map_or(&[], Vec::as_slice),
        }
    }

    fn add(&mut self, map: &mut KeyMap, k: u32, s: u32) {
        use std::collections::hash_map::Entry;
        match map.entry(k) {
            Entry::Vacant(e) => {
                e.insert(s);
            }
            Entry::Occupied(mut e) => {
                let v = *e.get();
                if v & LIST == 0 {
                    let list = vec![v, s];
                    let n = match self.free.pop() {
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

    /// Removes one occurrence of `s` under `k`.
    fn remove(&mut self, map: &mut KeyMap, k: u32, s: u32) {
        let Some(&v) = map.get(&k) else {
            return;
        };
        if v & LIST == 0 {
            if v == s {
                map.remove(&k);
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
                map.remove(&k);
            }
            [only] => {
                let only = *only;
                map.insert(k, only);
            }
            _ => return,
        }
        *list = Vec::new();
        self.free.push(n);
    }

    fn heap_bytes(&self) -> usize {
        self.lists.capacity() * std::mem::size_of::<Vec<u32>>()
            + self.lists.iter().map(|l| l.capacity() * 4).sum::<usize>()
            + self.free.capacity() * 4
    }
}

fn map_heap_bytes(m: &KeyMap) -> usize {
    if m.capacity() == 0 {
        0
    } else {
        m.capacity() * (std::mem::size_of::<(u32, u32)>() + 1)
    }
}

/// Resource key of a KRN pattern (matched by MatchingKRNs) or of a pool (matched by membership).
#[inline]
fn res_key(krn_id: u32, pool: bool) -> u32 {
    krn_id << 1 | u32::from(pool)
}

/// Above this many principal keys (its own plus its policy's attachments), a statement is posted
/// once in its policy's map, which the principal keys reach through `via`, instead of once per
/// principal key.
const FANOUT: usize = 8;

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

/// True when the sorted `stmt` list holds one of the (unsorted, few) `keys`.
#[inline]
fn holds_any(stmt: &[u32], keys: &[u32]) -> bool {
    if stmt.len() <= 8 {
        keys.iter().any(|k| stmt.contains(k))
    } else {
        keys.iter().any(|k| stmt.binary_search(k).is_ok())
    }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

/// The statements of one tenant, indexed for decisions.
///
/// Statements are selected by principal first: every principal key (interned KRN id) that some
/// statement applies to owns a map from resource key to the statements posted there
/// (`by_principal`). A query resolves its principal set to those maps once, then looks up its
/// resource keys in each and tests the action of the few statements found.
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
    /// KRN id of a principal key -> its map in `maps` (resource key -> statements), or `NONE`.
    by_principal: Vec<u32>,
    /// Resource key -> statements, per principal key or per policy (indirect statements).
    maps: Vec<KeyMap>,
    free_maps: Vec<u32>,
    /// KRN id of a principal key -> policy slots whose map holds indirect statements it reaches.
    via: KeyMap,
    lists: Lists,
    /// Statement id -> conditions and variables of the statements that have them.
    extras: FxHashMap<u32, Box<Extra>>,
}

/// What a statement with conditions or variables needs beyond its keys.
#[derive(Debug, Clone)]
struct Extra {
    /// Index of the statement in its policy.
    index: usize,
    statement: Statement,
    /// KRN ids of the keys it is posted under for its variable resources only (sorted): a find
    /// under one of them must substitute and match.
    var_keys: Vec<u32>,
}

/// A query resource's keys, or an action's pattern ids, in one index.
type Keys = Vec<u32>;

/// What a principal set reaches in one index: its sorted principal keys and the maps to look
/// resource keys up in (with `true` for policy maps, whose statements need the principal test).
pub(crate) struct Scope<'a> {
    pset: Keys,
    maps: Vec<(&'a KeyMap, bool)>,
}

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
        self.upsert_version(p, 0)
    }

    /// [`PolicyIndex::upsert`] of the policy as stored at `version` (the version a decision
    /// log names for its statements; 0: not known).
    pub fn upsert_version(&mut self, p: StoredPolicy, version: i64) -> Result<(), IndexError> {
        p.validate()?;
        if let Some(slot) = self.by_id.get(p.id.as_str()).copied() {
            self.remove_slot(slot);
        }
        self.insert(&p, version);
        self.revision += 1;
        Ok(())
    }

    /// The stored version of the policy with this id, when it is indexed and its version known.
    pub fn version_of(&self, id: &str) -> Option<i64> {
        let slot = *self.by_id.get(id)?;
        self.policies
            .get(slot as usize)?
            .as_ref()
            .map(|p| p.version)
            .filter(|v| *v > 0)
    }

    /// Upsert without validation, for base policies instantiated for a tenant whose name cannot
    /// stand in a KRN (their allow statements may have lost every resource).
    pub(crate) fn upsert_unchecked(&mut self, p: &StoredPolicy) {
        if let Some(slot) = self.by_id.get(p.id.as_str()).copied() {
            self.remove_slot(slot);
        }
        self.insert(p, 0);
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
            + self.by_principal.capacity() * 4
            + self.maps.capacity() * std::mem::size_of::<KeyMap>()
            + self.maps.iter().map(map_heap_bytes).sum::<usize>()
            + self.free_maps.capacity() * 4
            + map_heap_bytes(&self.via)
            + self.lists.heap_bytes()
            + self.extras.capacity() * (std::mem::size_of::<(u32, Box<Extra>)>() + 1)
            + self.extras.len() * std::mem::size_of::<Extra>()
    }

    /// Statements with conditions or variables.
    pub fn conditional_count(&self) -> usize {
        self.extras.len()
    }

    fn insert(&mut self, p: &StoredPolicy, version: i64) {
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
        let mut extras: Vec<(usize, Extra)> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (index, st) in p.document.statements.iter().enumerate() {
            names.clear();
            names.extend(st.actions.iter().map(Action::as_str));
            names.sort_unstable();
            names.dedup();
            let at = data.len() as u32;
            let acts = sorted(names.iter().map(|a| self.actions.intern(a)).collect());
            let res = if st.templates.is_empty() {
                self.intern_krns(&st.resources, bound)
            } else {
                let mut all = st.resources.clone();
                all.extend(st.templates.iter().map(|t| t.index_key().clone()));
                self.intern_krns(&all, bound)
            };
            if st.is_conditional() {
                // Keys of variable resources that no resource without variables shares.
                let var_keys = sorted(
                    st.templates
                        .iter()
                        .map(|t| t.index_key())
                        .filter(|k| !st.resources.contains(k) && bound != Some(*k))
                        .filter_map(|k| self.krn_id(k))
                        .collect(),
                );
                extras.push((
                    index,
                    Extra {
                        index,
                        statement: st.clone(),
                        var_keys,
                    },
                ));
            }
            let prin = self.intern_krns(&st.principals, None);
            entries.push(StmtEntry {
                policy: slot_id,
                at,
                index: index as u16,
                n_actions: acts.len() as u16,
                n_resources: res.len() as u16,
                n_principals: prin.len() as u16,
                deny: st.effect == Effect::Deny,
                indirect: principal_keys(&prin, &attached).count() > FANOUT,
                checked: st.is_conditional(),
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
            if let Some(pos) = extras.iter().position(|(index, _)| *index == i) {
                let (_, x) = extras.swap_remove(pos);
                self.extras.insert(sid, Box::new(x));
            }
        }
        let mut slot = PolicySlot {
            id: Arc::from(p.id.as_str()),
            data: data.into_boxed_slice(),
            n_stmts: n_stmts as u32,
            n_attached: attached.len() as u32,
            n_pools: pools.len() as u32,
            map: NONE,
            version,
        };
        self.post(slot_id, &mut slot, true);
        self.live_stmts += n_stmts;
        self.by_id.insert(slot.id.clone(), slot_id);
        if let Some(s) = self.policies.get_mut(slot_id as usize) {
            *s = Some(slot);
        }
    }

    /// Adds (`add`) or removes the postings of every statement of `slot`.
    fn post(&mut self, slot_id: u32, slot: &mut PolicySlot, add: bool) {
        let mut via_keys: Vec<u32> = Vec::new();
        let mut keys: Vec<u32> = Vec::new();
        for i in 0..slot.n_stmts as usize {
            let Some(sid) = slot.stmt_ids().get(i).copied() else {
                continue;
            };
            let Some(e) = self.stmts.get(sid as usize).copied() else {
                continue;
            };
            keys.clear();
            keys.extend(e.resources(slot).iter().map(|&r| res_key(r, false)));
            keys.extend(slot.pools().iter().map(|&p| res_key(p, true)));
            if e.indirect {
                via_keys.extend(principal_keys(e.principals(slot), slot.attached()));
                if add && slot.map == NONE {
                    slot.map = self.new_map();
                }
                let m = slot.map;
                for &k in &keys {
                    self.post_one(m, k, sid, add);
                }
                continue;
            }
            for p in principal_keys(e.principals(slot), slot.attached()) {
                let m = match self.by_principal.get(p as usize).copied() {
                    Some(m) if m != NONE => m,
                    _ if add => {
                        let m = self.new_map();
                        if self.by_principal.len() <= p as usize {
                            self.by_principal.resize(p as usize + 1, NONE);
                        }
                        if let Some(x) = self.by_principal.get_mut(p as usize) {
                            *x = m;
                        }
                        m
                    }
                    _ => continue,
                };
                for &k in &keys {
                    self.post_one(m, k, sid, add);
                }
                if !add && self.maps.get(m as usize).is_some_and(KeyMap::is_empty) {
                    self.free_map(m);
                    if let Some(x) = self.by_principal.get_mut(p as usize) {
                        *x = NONE;
                    }
                }
            }
        }
        if !add && slot.map != NONE {
            self.free_map(slot.map);
            slot.map = NONE;
        }
        via_keys.sort_unstable();
        via_keys.dedup();
        for k in via_keys {
            if add {
                self.lists.add(&mut self.via, k, slot_id);
            } else {
                self.lists.remove(&mut self.via, k, slot_id);
            }
        }
    }

    fn post_one(&mut self, map: u32, key: u32, sid: u32, add: bool) {
        if let Some(m) = self.maps.get_mut(map as usize) {
            if add {
                self.lists.add(m, key, sid);
            } else {
                self.lists.remove(m, key, sid);
            }
        }
    }

    fn new_map(&mut self) -> u32 {
        match self.free_maps.pop() {
            Some(m) => m,
            None => {
                self.maps.push(KeyMap::default());
                (self.maps.len() - 1) as u32
            }
        }
    }

    fn free_map(&mut self, m: u32) {
        if let Some(map) = self.maps.get_mut(m as usize) {
            *map = KeyMap::default();
            self.free_maps.push(m);
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
        let Some(mut slot) = self
            .policies
            .get_mut(slot_id as usize)
            .and_then(Option::take)
        else {
            return;
        };
        self.post(slot_id, &mut slot, false);
        for &sid in slot.stmt_ids() {
            let Some(e) = self.stmts.get(sid as usize).copied() else {
                continue;
            };
            for &a in e.actions(&slot) {
                self.actions.release(a);
            }
            for &r in e.resources(&slot).iter().chain(e.principals(&slot)) {
                self.krns.release(r);
            }
            if e.checked {
                self.extras.remove(&sid);
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
        let mut keys: Vec<(&str, bool)> = Vec::with_capacity(principals.len() * 8);
        for (i, p) in principals.iter().enumerate() {
            let s = p.as_str();
            if !p.is_wildcard() {
                keys.push((s, false));
            }
            let earlier = principals.get(..i).unwrap_or(&[]);
            for x in krn::wildcard_prefixes(s) {
                // A cut that an earlier principal's text starts with is one of its cuts too, and
                // so are all the shorter ones: they were looked up already.
                if earlier.iter().any(|e| e.as_str().starts_with(x)) {
                    break;
                }
                keys.push((x, true));
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        self.krns.find_batch(&keys, &mut out);
        sorted(out)
    }

    /// The maps a principal set reaches.
    pub(crate) fn scope(&self, principals: &[Krn]) -> Scope<'_> {
        let pset = self.principal_set(principals);
        let mut maps = Vec::with_capacity(pset.len());
        for &p in &pset {
            if let Some(m) = self
                .by_principal
                .get(p as usize)
                .and_then(|&m| self.maps.get(m as usize))
            {
                maps.push((m, false));
            }
        }
        if !self.via.is_empty() {
            let mut slots: Vec<u32> = Vec::new();
            for &p in &pset {
                slots.extend_from_slice(self.lists.get(&self.via, p));
            }
            for s in sorted(slots) {
                if let Some(m) = self
                    .policies
                    .get(s as usize)
                    .and_then(Option::as_ref)
                    .and_then(|slot| self.maps.get(slot.map as usize))
                {
                    maps.push((m, true));
                }
            }
        }
        Scope { pset, maps }
    }

    /// Appends the ids of MatchingActions; none for a wildcard action.
    fn action_keys_into(&self, a: &Action, out: &mut Keys) {
        if a.is_wildcard() {
            return;
        }
        let s = a.as_str();
        let keys: Vec<(&str, bool)> = std::iter::once((s, false))
            .chain(action::wildcard_prefixes(s).map(|x| (x, true)))
            .collect();
        self.actions.find_batch(&keys, out);
    }

    /// Appends the resource keys of MatchingKRNs and pools; none for a wildcard resource.
    fn resource_keys_into(&self, r: &Krn, pools: &[Krn], out: &mut Keys) {
        if r.is_wildcard() {
            return;
        }
        let s = r.as_str();
        let keys: Vec<(&str, bool)> = std::iter::once((s, false))
            .chain(krn::wildcard_prefixes(s).map(|x| (x, true)))
            .collect();
        let from = out.len();
        self.krns.find_batch(&keys, out);
        for k in out.iter_mut().skip(from) {
            *k = res_key(*k, false);
        }
        out.extend(
            pools
                .iter()
                .filter_map(|p| self.krn_id(p))
                .map(|id| res_key(id, true)),
        );
    }

    /// The id of a KRN as interned (a pattern key, a pool, a principal), by equality.
    fn krn_id(&self, k: &Krn) -> Option<u32> {
        match k.as_str().strip_suffix('*') {
            Some(prefix) => self.krns.prefix(prefix),
            None => self.krns.exact(k.as_str()),
        }
    }

    /// Reports to `sink` the statements of `scope` posted under `resource_keys` whose actions
    /// match `action_keys`, skipping excluded policies. Statements with conditions or variables
    /// are reported when they hold for `facts`.
    #[allow(clippy::too_many_arguments)]
    fn collect<'a, S: Sink<'a>>(
        &'a self,
        scope: &Scope<'a>,
        action_keys: &[u32],
        resource_keys: &[u32],
        exclude: Option<&FxHashSet<u32>>,
        facts: &Facts<'_>,
        sink: &mut S,
    ) {
        if action_keys.is_empty() {
            return;
        }
        for &r in resource_keys {
            for &(map, indirect) in &scope.maps {
                for &sid in self.lists.get(map, r) {
                    let Some((e, slot)) = self.entry(sid) else {
                        continue;
                    };
                    if !holds_any(e.actions(slot), action_keys)
                        || exclude.is_some_and(|x| x.contains(&e.policy))
                    {
                        continue;
                    }
                    if indirect
                        && !intersects(e.principals(slot), &scope.pset)
                        && !intersects(slot.attached(), &scope.pset)
                    {
                        continue;
                    }
                    if e.checked && !self.holds(sid, r, &slot.id, facts, sink) {
                        continue;
                    }
                    sink.push(e.deny, &slot.id, e.index as usize);
                    if sink.settled() {
                        return;
                    }
                }
            }
        }
    }

    /// Whether a statement with conditions or variables, found under resource key `r`, applies.
    fn holds<'a, S: Sink<'a>>(
        &self,
        sid: u32,
        r: u32,
        policy: &str,
        facts: &Facts<'_>,
        sink: &mut S,
    ) -> bool {
        let Some(x) = self.extras.get(&sid) else {
            return true;
        };
        let literal = r & 1 == 1
            || x.var_keys.binary_search(&(r >> 1)).is_err()
            || x.statement
                .resources
                .iter()
                .any(|k| facts.resource.matches(k));
        conditional(&x.statement, literal, facts, sink, policy, x.index)
    }

    fn entry(&self, sid: u32) -> Option<(&StmtEntry, &PolicySlot)> {
        let e = self.stmts.get(sid as usize)?;
        let slot = self.policies.get(e.policy as usize)?.as_ref()?;
        Some((e, slot))
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

    /// [`PolicyIndex::decide`] with [`Decision::checks`]: what the conditions of the statements
    /// found compared.
    pub fn explain(&self, q: &Query) -> Decision {
        let layers = [Layer::new(self)];
        let mut hits = Traced::default();
        decide_into(&layers, &[], q, &mut hits);
        hits.into_decision()
    }

    /// The outcome [`PolicyIndex::decide`] would give, without building its reasons.
    pub fn decide_outcome(&self, q: &Query) -> Outcome {
        let layers = [Layer::new(self)];
        let mut v = Verdict::default();
        decide_into(&layers, &[], q, &mut v);
        v.0
    }

    /// Decisions for every action and resource (`[action][resource]`); `resources` pairs each
    /// resource with its pools. Principals, actions and resources are expanded once each.
    pub fn decide_matrix(
        &self,
        principals: &[Krn],
        actions: &[Action],
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<Vec<Decision>> {
        self.decide_matrix_with(&NoEnv, principals, actions, resources)
    }

    /// [`PolicyIndex::decide_matrix`] with a request context and metadata for conditions.
    pub fn decide_matrix_with(
        &self,
        env: &dyn Env,
        principals: &[Krn],
        actions: &[Action],
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<Vec<Decision>> {
        decisions(matrix(
            &[Layer::new(self)],
            env,
            principals,
            actions,
            resources,
        ))
    }

    /// The outcomes of [`PolicyIndex::decide_matrix`] without their reasons (no allocation per
    /// decision); `resources` may also be borrowed pairs `(&Krn, &[Krn])`.
    pub fn decide_matrix_outcomes<R: ResourceRef>(
        &self,
        principals: &[Krn],
        actions: &[Action],
        resources: &[R],
    ) -> Vec<Vec<Outcome>> {
        self.decide_matrix_outcomes_with(&NoEnv, principals, actions, resources)
    }

    /// [`PolicyIndex::decide_matrix_with`] with [`Decision::checks`].
    pub fn decide_matrix_explained(
        &self,
        env: &dyn Env,
        principals: &[Krn],
        actions: &[Action],
        resources: &[(Krn, Vec<Krn>)],
    ) -> Vec<Vec<Decision>> {
        explained(matrix(
            &[Layer::new(self)],
            env,
            principals,
            actions,
            resources,
        ))
    }

    /// [`PolicyIndex::decide_matrix_outcomes`] with a request context and metadata.
    pub fn decide_matrix_outcomes_with<R: ResourceRef>(
        &self,
        env: &dyn Env,
        principals: &[Krn],
        actions: &[Action],
        resources: &[R],
    ) -> Vec<Vec<Outcome>> {
        outcomes(matrix(
            &[Layer::new(self)],
            env,
            principals,
            actions,
            resources,
        ))
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
        let mut hits = Traced::default();
        decide_into(&layers, &extra, q, &mut hits);
        hits.into_decision()
    }
}

/// Whether a statement with conditions or variables applies, its action and principal having
/// matched: some resource matched without variables (`literal`) or one with them matches once
/// substituted, and every condition holds. A tracing sink gets what was compared.
pub(crate) fn conditional<'a, S: Sink<'a>>(
    st: &Statement,
    literal: bool,
    facts: &Facts<'_>,
    sink: &mut S,
    policy: &str,
    index: usize,
) -> bool {
    if literal && st.conditions.is_empty() {
        // Matched by a resource without variables, and nothing else to check.
        return true;
    }
    if !sink.tracing() {
        return (literal || st.templates.iter().any(|t| t.matches(facts)))
            && st.conditions.hold(facts);
    }
    let mut resources = Vec::new();
    let mut resource_ok = literal;
    if !literal {
        for t in &st.templates {
            let (substituted, note, held) = match t.instantiate(facts) {
                Ok(k) => {
                    let held = facts.resource.matches(&k);
                    (Some(k.to_string()), None, held)
                }
                Err(e) => (None, Some(e), false),
            };
            resource_ok |= held;
            resources.push(ResourceCheck {
                pattern: t.as_str().to_owned(),
                substituted,
                held,
                note,
            });
        }
    }
    let mut conditions = Vec::new();
    let conditions_ok = st.conditions.trace(facts, &mut conditions);
    let applied = resource_ok && conditions_ok;
    sink.check(StatementCheck {
        policy_id: policy.to_owned(),
        statement: index,
        effect: st.effect,
        applied,
        conditions,
        resources,
    });
    applied
}

/// The principal keys of a statement: its own and its policy's attachments (both sorted, without
/// duplicates), merged without duplicates.
fn principal_keys<'s>(own: &'s [u32], attached: &'s [u32]) -> impl Iterator<Item = u32> + 's {
    own.iter().copied().chain(
        attached
            .iter()
            .copied()
            .filter(|a| own.binary_search(a).is_err()),
    )
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

/// Reports to `sink` the statements of every layer and extra policy that apply to `q`.
pub(crate) fn decide_into<'a, S: Sink<'a>>(
    layers: &[Layer<'a>],
    extra: &[&'a StoredPolicy],
    q: &Query,
    sink: &mut S,
) {
    if q.action.is_wildcard() || q.resource.is_wildcard() {
        return;
    }
    let mut acts = Vec::new();
    let mut res = Vec::new();
    for layer in layers {
        let ix = layer.index;
        acts.clear();
        ix.action_keys_into(q.action, &mut acts);
        if acts.is_empty() {
            continue;
        }
        res.clear();
        ix.resource_keys_into(q.resource, q.resource_pools, &mut res);
        if res.is_empty() {
            continue;
        }
        let scope = ix.scope(q.principals);
        let facts = q.facts();
        ix.collect(&scope, &acts, &res, layer.exclude.as_ref(), &facts, sink);
        if sink.settled() {
            return;
        }
    }
    for p in extra {
        scan_policy(p, q, sink);
    }
}

/// The sinks of every (action, resource) pair: `[action][resource]`.
pub(crate) fn matrix<'a, S: Sink<'a> + Default, R: ResourceRef>(
    layers: &[Layer<'a>],
    env: &dyn Env,
    principals: &[Krn],
    actions: &[Action],
    resources: &[R],
) -> Vec<Vec<S>> {
    let mut out: Vec<Vec<S>> = actions
        .iter()
        .map(|_| resources.iter().map(|_| S::default()).collect())
        .collect();
    // The resource keys of every resource, one after the other; `ends[i]` closes resource i's.
    let mut keys: Keys = Vec::new();
    let mut ends: Vec<usize> = Vec::with_capacity(resources.len());
    let mut acts = Vec::new();
    for layer in layers {
        let ix = layer.index;
        let scope = ix.scope(principals);
        if scope.maps.is_empty() {
            continue;
        }
        keys.clear();
        ends.clear();
        for r in resources {
            ix.resource_keys_into(r.resource(), r.pools(), &mut keys);
            ends.push(keys.len());
        }
        for (a, row) in actions.iter().zip(out.iter_mut()) {
            acts.clear();
            ix.action_keys_into(a, &mut acts);
            if acts.is_empty() {
                continue;
            }
            let mut start = 0;
            for ((&end, cell), r) in ends.iter().zip(row.iter_mut()).zip(resources) {
                let res = keys.get(start..end).unwrap_or(&[]);
                start = end;
                if !cell.settled() {
                    let facts = Facts {
                        principals,
                        resource: r.resource(),
                        env,
                    };
                    ix.collect(&scope, &acts, res, layer.exclude.as_ref(), &facts, cell);
                }
            }
        }
    }
    out
}

fn decisions(m: Vec<Vec<Hits<'_>>>) -> Vec<Vec<Decision>> {
    m.into_iter()
        .map(|row| row.into_iter().map(Hits::into_decision).collect())
        .collect()
}

fn explained(m: Vec<Vec<Traced<'_>>>) -> Vec<Vec<Decision>> {
    m.into_iter()
        .map(|row| row.into_iter().map(Traced::into_decision).collect())
        .collect()
}

pub(crate) fn decide_matrix_explained<R: ResourceRef>(
    layers: &[Layer<'_>],
    env: &dyn Env,
    principals: &[Krn],
    actions: &[Action],
    resources: &[R],
) -> Vec<Vec<Decision>> {
    explained(matrix(layers, env, principals, actions, resources))
}

fn outcomes(m: Vec<Vec<Verdict>>) -> Vec<Vec<Outcome>> {
    m.into_iter()
        .map(|row| row.into_iter().map(|v| v.0).collect())
        .collect()
}

pub(crate) fn decide_matrix<R: ResourceRef>(
    layers: &[Layer<'_>],
    env: &dyn Env,
    principals: &[Krn],
    actions: &[Action],
    resources: &[R],
) -> Vec<Vec<Decision>> {
    decisions(matrix(layers, env, principals, actions, resources))
}

pub(crate) fn decide_matrix_outcomes<R: ResourceRef>(
    layers: &[Layer<'_>],
    env: &dyn Env,
    principals: &[Krn],
    actions: &[Action],
    resources: &[R],
) -> Vec<Vec<Outcome>> {
    outcomes(matrix(layers, env, principals, actions, resources))
}

pub(crate) fn allowed_resources<R: ResourceRef>(
    layers: &[Layer<'_>],
    principals: &[Krn],
    action: &Action,
    resources: &[R],
) -> Vec<usize> {
    let rows: Vec<Vec<Verdict>> = matrix(
        layers,
        &NoEnv,
        principals,
        std::slice::from_ref(action),
        resources,
    );
    rows.into_iter()
        .next()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, v)| v.0 == Outcome::Allow)
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
    let resources = [(resource, pools)];
    let rows: Vec<Vec<Verdict>> = matrix(layers, &NoEnv, principals, actions, &resources);
    rows.iter()
        .enumerate()
        .filter(|(_, row)| row.first().is_some_and(|v| v.0 == Outcome::Allow))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests;
