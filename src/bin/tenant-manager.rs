//! The `tenant-manager` binary.
fn main() {}
