//! The pure policy engine: KRNs, actions, policy documents, the per-tenant index and decide().
//! No I/O, no clock, no config. The contract is docs/ENGINE_API.md.

mod action;
mod base;
mod condition;
mod document;
mod engine;
mod err;
mod id;
mod index;
mod krn;

pub use action::{ACTION_MAX_LEN, Action};
pub use base::{BasePolicy, TENANT_VARIABLE};
pub use condition::{
    Condition, ConditionCheck, Conditions, Env, GLOBAL_KEYS, Key, MAX_CONDITION_TEXT,
    MAX_CONDITION_VALUES, MAX_CONDITIONS, MapEnv, NoEnv, ResourceCheck, ResourceTemplate,
    check_context_entry, check_context_key, operator_names,
};
pub use document::{
    Effect, MAX_DESCRIPTION_LEN, MAX_ENTRIES, MAX_NAME_LEN, MAX_STATEMENTS, PolicyDocument,
    PolicyKind, Statement,
};
pub use engine::Engine;
pub use err::{
    ActionError, ActionFlaw, IdFlaw, IndexError, KrnError, KrnFlaw, PolicyError, StatementError,
};
pub use index::{
    Decision, MAX_POLICY_ID_LEN, Outcome, PolicyIndex, Query, Reason, ResourceRef, StoredPolicy,
};
pub use krn::{KRN_MAX_LEN, Krn};
