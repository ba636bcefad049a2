//! Fuzz target: policy documents and base policies as JSON bytes, as the API receives them.
//! Nothing may panic; an accepted document validates and round-trips through its JSON, and a
//! base policy instantiates for any tenant name without panicking.

#![no_main]

use kaa::policy::{BasePolicy, PolicyDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(doc) = PolicyDocument::from_json(&v) {
        let _ = doc.validate();
        let again = PolicyDocument::from_json(&doc.to_json());
        assert_eq!(again.ok().as_ref(), Some(&doc));
    }
    if let Ok(b) = BasePolicy::from_json(&v) {
        let _ = b.instantiate("t1");
        let _ = b.instantiate("");
        let _ = b.instantiate("a/b*c");
    }
});
