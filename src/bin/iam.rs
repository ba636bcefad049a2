//! The `iam` binary.
fn main() {}
