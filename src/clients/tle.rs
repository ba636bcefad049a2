//! Tenant Lifecycle Events (Kaa RFC 21/TLE): subjects and the Avro binary datum of the
//! `UpdatedEvent` / `UnregisteredEvent` records (same five fields, in order: `correlationId`
//! string, `timestamp` long, `timeout` long, `tenantId` string, `originatorReplicaId` string).
//! The schema is fixed, so the codec is written out here (zig-zag varints and length-prefixed
//! UTF-8), with golden bytes in the tests.

use thiserror::Error;

/// What happened to the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Updated,
    Unregistered,
}

impl LifecycleKind {
    pub fn event_type(self) -> &'static str {
        match self {
            LifecycleKind::Updated => "updated",
            LifecycleKind::Unregistered => "unregistered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub correlation_id: String,
    /// Unix epoch milliseconds.
    pub timestamp: i64,
    /// Milliseconds after `timestamp` until the event expires; 0 never expires.
    pub timeout: i64,
    pub tenant_id: String,
    pub originator_replica_id: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TleError {
    #[error("tle: the datum ends inside field `{0}`")]
    Truncated(&'static str),
    #[error("tle: field `{0}` is not valid UTF-8")]
    Utf8(&'static str),
    #[error("tle: field `{0}` has a bad length or varint")]
    Malformed(&'static str),
    #[error("tle: {0} bytes follow the record")]
    Trailing(usize),
    #[error("tle: subject `{0}` is not a tenant lifecycle event")]
    Subject(String),
}

/// The subject an originator publishes on.
pub fn subject(originator: &str, kind: LifecycleKind) -> String {
    format!(
        "kaa.v1.events.{originator}.tenant.lifecycle.{}",
        kind.event_type()
    )
}

/// The subscription that receives every originator's tenant lifecycle events.
pub const SUBSCRIPTION: &str = "kaa.v1.events.*.tenant.lifecycle.>";

/// The event type of a received subject (extra tokens after the type are allowed, 3/ISM).
pub fn kind_of(subject: &str) -> Result<LifecycleKind, TleError> {
    let t: Vec<&str> = subject.split('.').collect();
    match t.as_slice() {
        ["kaa", "v1", "events", _, "tenant", "lifecycle", kind, ..] => match *kind {
            "updated" => Ok(LifecycleKind::Updated),
            "unregistered" => Ok(LifecycleKind::Unregistered),
            _ => Err(TleError::Subject(subject.to_string())),
        },
        _ => Err(TleError::Subject(subject.to_string())),
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn long(&mut self, field: &'static str) -> Result<i64, TleError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(TleError::Truncated(field))?;
            self.pos += 1;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(TleError::Malformed(field))
    }

    fn string(&mut self, field: &'static str) -> Result<String, TleError> {
        let len = self.long(field)?;
        let len = usize::try_from(len).map_err(|_| TleError::Malformed(field))?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(TleError::Malformed(field))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(TleError::Truncated(field))?;
        self.pos = end;
        String::from_utf8(bytes.to_vec()).map_err(|_| TleError::Utf8(field))
    }
}

impl LifecycleEvent {
    /// The Avro binary datum (no container, no fingerprint).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.correlation_id.len() + self.tenant_id.len());
        put_string(&mut out, &self.correlation_id);
        put_long(&mut out, self.timestamp);
        put_long(&mut out, self.timeout);
        put_string(&mut out, &self.tenant_id);
        put_string(&mut out, &self.originator_replica_id);
        out
    }

    pub fn decode(datum: &[u8]) -> Result<LifecycleEvent, TleError> {
        let mut r = Reader { buf: datum, pos: 0 };
        let e = LifecycleEvent {
            correlation_id: r.string("correlationId")?,
            timestamp: r.long("timestamp")?,
            timeout: r.long("timeout")?,
            tenant_id: r.string("tenantId")?,
            originator_replica_id: r.string("originatorReplicaId")?,
        };
        if r.pos != datum.len() {
            return Err(TleError::Trailing(datum.len() - r.pos));
        }
        Ok(e)
    }

    /// Whether the event expired at `now_ms` (`timeout` 0 never expires).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.timeout > 0 && now_ms > self.timestamp.saturating_add(self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LifecycleEvent {
        LifecycleEvent {
            correlation_id: "c1".into(),
            timestamp: 1_700_000_000_000,
            timeout: 0,
            tenant_id: "t1".into(),
            originator_replica_id: "r".into(),
        }
    }

    #[test]
    fn golden_bytes() {
        // "c1": len 2 -> zigzag 4; 1700000000000 -> zigzag 3400000000000 as varint;
        // 0 -> 0; "t1": 4 't' '1'; "r": 2 'r'.
        let expected: Vec<u8> = vec![
            0x04, b'c', b'1', 0x80, 0xa0, 0xab, 0xfe, 0xf9, 0x62, 0x00, 0x04, b't', b'1', 0x02,
            b'r',
        ];
        assert_eq!(sample().encode(), expected);
        assert_eq!(LifecycleEvent::decode(&expected).unwrap(), sample());
    }

    #[test]
    fn longs_round_trip_at_the_edges() {
        for v in [0, -1, 1, 63, -64, 64, i64::MAX, i64::MIN] {
            let e = LifecycleEvent {
                timestamp: v,
                timeout: v,
                ..sample()
            };
            assert_eq!(LifecycleEvent::decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn bad_datums_are_errors_not_panics() {
        let good = sample().encode();
        for cut in 0..good.len() {
            assert!(LifecycleEvent::decode(&good[..cut]).is_err());
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            LifecycleEvent::decode(&trailing),
            Err(TleError::Trailing(1))
        );
        assert!(LifecycleEvent::decode(&[0x01]).is_err(), "negative length");
        assert!(
            LifecycleEvent::decode(&[0xff; 12]).is_err(),
            "endless varint"
        );
        assert!(
            LifecycleEvent::decode(&[0x02, 0xff, 0, 0, 0, 0, 0]).is_err(),
            "bad UTF-8"
        );
    }

    #[test]
    fn subjects() {
        assert_eq!(
            subject("tenant-manager", LifecycleKind::Unregistered),
            "kaa.v1.events.tenant-manager.tenant.lifecycle.unregistered"
        );
        assert_eq!(
            kind_of("kaa.v1.events.tm.tenant.lifecycle.updated.extra"),
            Ok(LifecycleKind::Updated)
        );
        assert!(kind_of("kaa.v1.events.tm.tenant.lifecycle.created").is_err());
        assert!(kind_of("kaa.v1.events.tm.endpoint.lifecycle.updated").is_err());
    }

    #[test]
    fn expiry() {
        let e = LifecycleEvent {
            timeout: 1000,
            ..sample()
        };
        assert!(!e.expired(e.timestamp + 1000));
        assert!(e.expired(e.timestamp + 1001));
        assert!(!sample().expired(i64::MAX));
    }
}
