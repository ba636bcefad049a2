//! Fuzz target: actions (`service:entity:verb`, wildcards). Input: `<action>\n<pattern>`.
//! Nothing may panic; an accepted action round-trips, matches each of its matching patterns,
//! and a non-wildcard pattern matches only itself.

#![no_main]

use kaa::policy::Action;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));
    let action = Action::parse(first);
    if let Ok(a) = &action {
        assert_eq!(Action::parse(a.as_str()).ok().as_ref(), Some(a));
        for p in a.matching_patterns() {
            let pattern = Action::parse(&p).expect("a matching pattern parses");
            assert!(
                a.matches(&pattern),
                "{a:?} does not match its own pattern {p}"
            );
        }
    }
    if let (Ok(a), Ok(p)) = (&action, Action::parse(second)) {
        let m = a.matches(&p);
        if !p.is_wildcard() {
            assert_eq!(m, a == &p);
        }
    }
});
