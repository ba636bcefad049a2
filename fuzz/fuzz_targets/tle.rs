//! Fuzz target: the Avro datum decoder of tenant lifecycle events (what arrives from NATS) and
//! the subject classifier. Input: `<subject>\0<datum>` (without a NUL, all of it is the datum).
//! Nothing may panic; a decoded event survives its own encoding, which is never longer.

#![no_main]

use kaa::clients::tle::{LifecycleEvent, kind_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (subject, datum) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let _ = kind_of(&String::from_utf8_lossy(subject));
    if let Ok(e) = LifecycleEvent::decode(datum) {
        // Avro readers accept overlong varints (Java's does), so the datum need not be
        // canonical; what was decoded must survive our own encoding.
        let canonical = e.encode();
        assert!(canonical.len() <= datum.len());
        assert_eq!(LifecycleEvent::decode(&canonical).ok().as_ref(), Some(&e));
        let _ = e.expired(i64::MAX);
        let _ = e.expired(i64::MIN);
        let _ = e.expired(0);
    }
    if let Ok(e) = LifecycleEvent::decode(data) {
        assert_eq!(LifecycleEvent::decode(&e.encode()).ok().as_ref(), Some(&e));
    }
});
