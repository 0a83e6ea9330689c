//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) through the
//! fuzz targets' own bodies (`fuzz/src/`), on stable Rust: every input the
//! fuzzers saved, crashes they found included, is a regression test here.
//! The bodies assert each codec's contract or compare the store with a
//! `BTreeMap` model; see `docs/reliability.md`.

#[allow(unreachable_pub, missing_docs, dead_code)]
#[path = "../../fuzz/src/chat.rs"]
mod chat;
#[allow(unreachable_pub, missing_docs, dead_code)]
#[path = "../../fuzz/src/storage.rs"]
mod storage;

use std::path::PathBuf;

/// Every file of `fuzz/corpus/<target>/`, sorted; fails if there are none
/// (a missing corpus must not pass silently).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("corpus file");
            (path, data)
        })
        .collect()
}

/// Runs `body` on each corpus file of `target`, naming the file on failure.
fn replay(target: &str, body: impl Fn(&[u8])) {
    for (path, data) in corpus(target) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data)));
        if let Err(panic) = result {
            eprintln!("corpus input {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn decode_a() {
    replay("decode_a", chat::decode_a);
}

#[test]
fn decode_b() {
    replay("decode_b", chat::decode_b);
}

#[test]
fn decode_c() {
    replay("decode_c", chat::decode_c);
}

#[test]
fn parse_room() {
    replay("parse_room", chat::parse_room);
}

#[test]
fn attachment() {
    replay("attachment", chat::attachment);
}

#[test]
fn client_ip() {
    replay("client_ip", chat::client_ip);
}

#[test]
fn origin() {
    replay("origin", chat::origin);
}

#[test]
fn cluster_frames() {
    replay("cluster_frames", objects::testing::cluster_frames);
}

#[test]
fn object_id() {
    let h = storage::Harness::new();
    replay("object_id", |data| storage::object_id(&h, data));
    h.shutdown();
}

#[test]
fn list_options() {
    let h = storage::Harness::new();
    replay("list_options", |data| storage::list_options(&h, data));
    h.shutdown();
}

#[test]
fn storage_ops() {
    let h = storage::Harness::new();
    replay("storage_ops", |data| storage::storage_ops(&h, data));
    h.shutdown();
}
