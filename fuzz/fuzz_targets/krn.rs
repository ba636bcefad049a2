//! Fuzz target: KRN text and KRN ids (base64). Input: `<krn>\n<pattern>` (the second line is
//! optional). Nothing may panic; an accepted KRN round-trips through its canonical text and its
//! id, matches every one of its own matching patterns, and `matches` never panics on any pair.

#![no_main]

use kaa::policy::Krn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));
    let krn = Krn::parse(first);
    if let Ok(k) = &krn {
        assert_eq!(Krn::parse(k.as_str()).ok().as_ref(), Some(k));
        assert_eq!(Krn::from_id(&k.to_id()).ok().as_ref(), Some(k));
        let _ = (
            k.service(),
            k.tenant(),
            k.pool(),
            k.resource_type(),
            k.path(),
            k.id(),
        );
        for p in k.matching_patterns() {
            let pattern = Krn::parse(&p).expect("a matching pattern parses");
            assert!(
                k.matches(&pattern),
                "{k:?} does not match its own pattern {p}"
            );
        }
    }
    if let Ok(k) = Krn::from_id(first) {
        assert_eq!(Krn::from_id(&k.to_id()).ok().as_ref(), Some(&k));
    }
    if let (Ok(k), Ok(p)) = (&krn, Krn::parse(second)) {
        let m = k.matches(&p);
        if !p.is_wildcard() {
            assert_eq!(m, k == &p);
        }
    }
});
