//! Stored policies as the engine's: the statements document of a record (a fast typed path,
//! the general one for anything unusual) and its index entry with its attachment targets.

use super::directory::is_pool;
use crate::policy::{Action, Effect, Krn, PolicyDocument, PolicyKind, Statement, StoredPolicy};
use crate::storage::PolicyRecord;

/// The statements document of a stored record as the engine's policy document.
pub fn document_of(rec: &PolicyRecord) -> Result<PolicyDocument, String> {
    if let Some(doc) = typed_document(rec) {
        return Ok(doc);
    }
    let statements: serde_json::Value = serde_json::from_str(&rec.statements)
        .map_err(|e| format!("policy `{}`: stored statements unreadable: {e}", rec.krn))?;
    let doc = serde_json::json!({
        "name": rec.name,
        "type": rec.kind,
        "description": rec.description,
        "statements": statements,
    });
    PolicyDocument::from_json(&doc).map_err(|e| format!("policy `{}`: {e}", rec.krn))
}

/// A stored statement as the API writes it (`PolicyDocument::to_json`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredStatement {
    effect: Effect,
    actions: Vec<String>,
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    principals: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// The fast path of [`document_of`]: statements read straight into typed values and each KRN and
/// action parsed once. The document's rules are checked where it is indexed (`upsert`). `None`
/// when anything is unusual; the general path then reads it (and names the error).
fn typed_document(rec: &PolicyRecord) -> Option<PolicyDocument> {
    let kind = match rec.kind.as_str() {
        "identity" => PolicyKind::Identity,
        "resource" => PolicyKind::Resource,
        _ => return None,
    };
    let raw: Vec<StoredStatement> = serde_json::from_str(&rec.statements).ok()?;
    let mut statements = Vec::with_capacity(raw.len());
    for st in raw {
        statements.push(Statement {
            effect: st.effect,
            actions: st
                .actions
                .iter()
                .map(|a| Action::parse(a).ok())
                .collect::<Option<_>>()?,
            resources: st
                .resources
                .unwrap_or_default()
                .iter()
                .map(|r| Krn::parse(r).ok())
                .collect::<Option<_>>()?,
            principals: st
                .principals
                .unwrap_or_default()
                .iter()
                .map(|p| Krn::parse(p).ok())
                .collect::<Option<_>>()?,
            description: st.description,
            templates: Vec::new(),
            conditions: Default::default(),
        });
    }
    let doc = PolicyDocument {
        name: rec.name.clone(),
        kind,
        description: rec.description.clone(),
        statements,
    };
    Some(doc)
}

/// The index entry of a stored record with its attachment targets.
pub(super) fn stored_policy(rec: &PolicyRecord, targets: Vec<Krn>) -> Result<StoredPolicy, String> {
    let document = document_of(rec)?;
    // A pool is an attachment target on both sides: its member resources take the statements
    // (`attached_pools`), and so do its member users and groups, whose principal sets hold the
    // pool (`attached_principals`).
    let attached_pools: Vec<Krn> = targets.iter().filter(|t| is_pool(t)).cloned().collect();
    let attached_principals = targets;
    Ok(StoredPolicy {
        id: rec.krn.clone(),
        document,
        attached_principals,
        attached_pools,
        resource: rec.resource_krn.as_deref().and_then(|r| Krn::parse(r).ok()),
    })
}
