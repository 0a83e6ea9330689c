//! The hold's bounds and release order, and a shard's copy part by part.

use std::sync::Mutex;

use super::*;

/// A held event that records its number and how it was released.
fn record(log: &Arc<Mutex<Vec<String>>>, n: usize) -> Held {
    let log = log.clone();
    Box::new(move |release| {
        let how = match release {
            Release::Here => "here".to_string(),
            Release::To { node, epoch } => format!("to {node}@{epoch}"),
            Release::Again => "again".to_string(),
        };
        crate::sync::lock(&log).push(format!("{n} {how}"));
    })
}

#[test]
fn held_events_are_bounded_in_count_and_bytes_and_released_in_order() {
    let state = State::default();
    let log = Arc::new(Mutex::new(Vec::new()));
    // Not moving: runs at once, to be placed again.
    state.hold(7, 0, record(&log, 0)).expect("runs");
    assert_eq!(*crate::sync::lock(&log), ["0 again"]);
    crate::sync::lock(&log).clear();

    assert!(state.begin(1));
    assert!(!state.begin(1), "one move of a shard at a time");
    for n in 0..MAX_HELD {
        state.hold(1, 0, record(&log, n)).expect("room");
    }
    assert_eq!(state.hold(1, 0, record(&log, 0)).err(), Some(MAX_HELD));
    assert!(crate::sync::lock(&log).is_empty(), "nothing ran while held");
    let flipped = Arc::new(Mutex::new(0));
    let held = state.end(
        1,
        Release::To {
            node: "b",
            epoch: 3,
        },
        || {
            *crate::sync::lock(&flipped) = crate::sync::lock(&log).len();
        },
    );
    assert_eq!(held, MAX_HELD);
    let log_now = crate::sync::lock(&log).clone();
    assert_eq!(log_now.len(), MAX_HELD);
    assert_eq!(log_now[0], "0 to b@3");
    assert_eq!(log_now[MAX_HELD - 1], format!("{} to b@3", MAX_HELD - 1));
    assert_eq!(
        *crate::sync::lock(&flipped),
        MAX_HELD,
        "the view flips after the held events went"
    );
    crate::sync::lock(&log).clear();

    // Bytes: a peer's requests past the byte bound are refused.
    assert!(state.begin(2));
    state
        .hold(2, MAX_HELD_BYTES, record(&log, 1))
        .expect("room");
    assert!(state.hold(2, 1, record(&log, 2)).is_err());
    state
        .hold(2, 0, record(&log, 3))
        .expect("local events carry no peer bytes");
    // Placed again: the view flips first (else they would be held again).
    let order = log.clone();
    state.end(2, Release::Again, || {
        crate::sync::lock(&order).push("flip".into())
    });
    assert_eq!(*crate::sync::lock(&log), ["flip", "1 again", "3 again"]);
}

/// A shard whose object holds more than a part: read in parts (the
/// object split across them, its first part clearing and carrying the
/// alarm), written into another store, the copy is key for key the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_copies_part_by_part_into_another_store() {
    use crate::storage::{Store, StoreOptions};
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let from = Store::open(a.path(), &StoreOptions::default()).expect("open");
    let to = Store::open(b.path(), &StoreOptions::default()).expect("open");
    let shards = 4;
    let ids_in = |s: u32| {
        (0u8..=255)
            .map(|n| [n; 32])
            .filter(move |id| shard::shard_of(id, shards) == s)
    };
    let mut in1 = ids_in(1);
    let (big, small) = (in1.next().expect("an id"), in1.next().expect("an id"));
    let other = ids_in(2).next().expect("an id");
    let value = |n: usize| bytes::Bytes::from(vec![0u8; n]);
    let keys: Vec<(Vec<u8>, bytes::Bytes)> = (0..40)
        .map(|k| (format!("k{k:03}").into_bytes(), value(64 * 1024)))
        .collect();
    let batches = vec![
        shard_copy::copy_batch(big, "rooms", Some("big"), true, Some(7), keys.clone()),
        shard_copy::copy_batch(small, "rooms", None, true, None, keys[..1].to_vec()),
        shard_copy::copy_batch(other, "rooms", None, true, None, keys[..1].to_vec()),
    ];
    commit_all(&from, batches).await.expect("written");

    let mut reader = ShardReader::new(from.clone(), 1, shards)
        .await
        .expect("reader");
    let mut parts = Vec::new();
    while let Some(part) = reader.next_part().await.expect("part") {
        parts.push(part);
    }
    assert!(parts.len() >= 3, "2.5 MiB of keys take three parts or more");
    assert_eq!(reader.copied.parts as usize, parts.len());
    assert_eq!((reader.copied.objects, reader.copied.keys), (2, 41));
    let of_big: Vec<&CopiedObject> = parts.iter().flatten().filter(|o| o.id == big).collect();
    assert!(of_big[0].first && of_big[0].alarm == Some(7));
    assert!(of_big[1..].iter().all(|o| !o.first && o.alarm.is_none()));
    assert!(
        parts.iter().flatten().all(|o| o.id != other),
        "only shard 1"
    );
    for part in parts {
        let batches = part
            .into_iter()
            .map(|o| {
                shard_copy::copy_batch(o.id, &o.ns, o.name.as_deref(), o.first, o.alarm, o.keys)
            })
            .collect();
        commit_all(&to, batches).await.expect("copied");
    }
    let all = |s: &Store, id: &[u8; 32]| s.object_page(id, None, usize::MAX).expect("read").keys;
    assert_eq!(all(&to, &big), keys);
    assert_eq!(all(&to, &small), keys[..1].to_vec());
    assert_eq!(to.alarm(&big).expect("alarm"), Some(7));
    assert!(all(&to, &other).is_empty());
    from.writer.close().await;
    to.writer.close().await;
}
