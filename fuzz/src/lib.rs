//! The fuzzed pipeline: bytes → decode → import → shape inference → planning → run (when the
//! plan is small). Kept in a library so the target stays one line.

include!("harness.rs");
