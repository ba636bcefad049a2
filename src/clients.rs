//! Clients of other systems behind small synchronous facades: NATS (events).

pub mod nats;
