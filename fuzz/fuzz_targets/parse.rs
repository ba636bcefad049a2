//! Fuzz target: every parser of the policy engine on the same input (KRN text, KRN id, action,
//! policy document, base policy). Nothing may panic; accepted KRNs must round-trip through their
//! canonical text and their base64 id, and accepted documents through their JSON.

#![no_main]

use kaa::policy::{Action, BasePolicy, Krn, PolicyDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(k) = Krn::parse(&text) {
        assert_eq!(Krn::parse(k.as_str()).ok().as_ref(), Some(&k));
        assert_eq!(Krn::from_id(&k.to_id()).ok().as_ref(), Some(&k));
        for p in k.matching_patterns() {
            let parsed = Krn::parse(&p).ok();
            assert_eq!(parsed.as_ref().map(Krn::as_str), Some(p.as_str()));
        }
    }
    if let Ok(k) = Krn::from_id(&text) {
        assert_eq!(Krn::from_id(&k.to_id()).ok().as_ref(), Some(&k));
    }
    if let Ok(a) = Action::parse(&text) {
        assert_eq!(Action::parse(a.as_str()).ok().as_ref(), Some(&a));
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(doc) = PolicyDocument::from_json(&v) {
            assert_eq!(
                PolicyDocument::from_json(&doc.to_json()).ok().as_ref(),
                Some(&doc)
            );
        }
        if let Ok(b) = BasePolicy::from_json(&v) {
            let _ = b.instantiate("t1");
            let _ = b.instantiate(&text);
        }
    }
});
