//! Bodies of the fuzz targets, as plain functions over bytes.
//!
//! Each `fuzz_targets/<name>.rs` calls one function here; the workspace
//! test `chat-demo/tests/fuzz_corpus.rs` includes these same files and runs
//! every file of `corpus/<name>/` through them on stable Rust, so a crash
//! the fuzzer found and saved becomes a regression test.

pub mod chat;
pub mod storage;
