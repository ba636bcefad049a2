//! The pure policy engine: KRNs, actions, policy documents, the per-tenant index and decide().
//! No I/O, no clock, no config.
