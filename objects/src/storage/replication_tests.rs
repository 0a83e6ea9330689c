//! The writer's side of replication with a stand-in hook: labels stored
//! with their group, answers held until the hook gives them, labels given
//! back when a group fails, received groups and copies applied with their
//! labels.

use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::storage::StoreOptions;
use crate::storage::shard_copy::copy_batch;

/// Shard = the id's first byte; shard 1 is led here (labelled), others
/// not. Records what it is told; holds the answers it gets.
#[derive(Default)]
struct Hook {
    next: Mutex<u64>,
    log: Mutex<Vec<String>>,
    held: Mutex<Vec<Reply>>,
}

impl Replicate for Hook {
    fn shard(&self, id: &[u8; 32]) -> u32 {
        u32::from(id[0])
    }
    fn label(&self, shard: u32) -> Option<Mark> {
        (shard == 1).then(|| {
            let mut n = crate::sync::lock(&self.next);
            *n += 1;
            Mark { epoch: 7, seq: *n }
        })
    }
    fn retract(&self, shard: u32, mark: Mark) {
        *crate::sync::lock(&self.next) -= 1;
        crate::sync::lock(&self.log).push(format!("retract {shard} {}", mark.seq));
    }
    fn committed(&self, shard: u32, mark: Mark, batches: &[&Batch]) {
        crate::sync::lock(&self.log).push(format!(
            "committed {shard} {} ({} batches)",
            mark.seq,
            batches.len()
        ));
    }
    fn durable(&self, shard: u32, seq: u64, replies: Vec<Reply>) {
        crate::sync::lock(&self.log).push(format!("durable {shard} {seq}"));
        crate::sync::lock(&self.held).extend(replies);
    }
}

fn put(id: u8, key: &str, value: &str) -> Batch {
    copy_batch(
        [id; 32],
        "ns",
        None,
        false,
        None,
        vec![(key.as_bytes().to_vec(), Bytes::from(value.to_string()))],
    )
}

/// Waits until the writer has done everything queued before.
async fn barrier(store: &Store) {
    let done = store.writer.reserve().await.expect("place").send_barrier();
    done.await.expect("answer").expect("barrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_labelled_held_and_applied_with_their_labels() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
    let hook = std::sync::Arc::new(Hook::default());
    let dyn_hook: std::sync::Arc<dyn Replicate> = hook.clone();
    assert!(store.replication.set(dyn_hook).is_ok());

    // A batch of a shard not led here is answered once durable.
    let other = store
        .writer
        .reserve()
        .await
        .expect("place")
        .send(put(2, "k", "a"));
    other.await.expect("answer").expect("durable");
    // A led shard's batch: labelled in its transaction, handed on, and
    // answered only when the hook releases it.
    let mut led = store
        .writer
        .reserve()
        .await
        .expect("place")
        .send(put(1, "k", "b"));
    barrier(&store).await;
    let labels = store.labels().expect("labels");
    assert_eq!(labels.get(&1), Some(&Mark { epoch: 7, seq: 1 }));
    assert_eq!(labels.get(&2), None, "unlabelled");
    for _ in 0..100 {
        if !crate::sync::lock(&hook.held).is_empty() {
            break;
        }
        // The writer answers after its sync, on its own thread.
        barrier(&store).await;
    }
    assert!(led.try_recv().is_err(), "held by replication");
    let replies = std::mem::take(&mut *crate::sync::lock(&hook.held));
    assert_eq!(replies.len(), 1);
    for r in replies {
        let _ = r.send(Ok(()));
    }
    led.await.expect("answer").expect("released");
    assert_eq!(
        *crate::sync::lock(&hook.log),
        ["committed 1 1 (1 batches)", "durable 1 1"]
    );

    // A group whose transaction fails gives its label back.
    let too_big = copy_batch(
        [1; 32],
        "ns",
        None,
        false,
        None,
        vec![(vec![b'x'; 4000], Bytes::from("v"))],
    );
    let failed = store.writer.reserve().await.expect("place").send(too_big);
    assert!(
        failed.await.expect("answer").is_err(),
        "a key over LMDB's limit"
    );
    assert!(
        crate::sync::lock(&hook.log)
            .iter()
            .any(|l| l == "retract 1 2"),
        "{:?}",
        crate::sync::lock(&hook.log)
    );
    assert_eq!(
        store.labels().expect("labels").get(&1).map(|m| m.seq),
        Some(1)
    );

    // A follower's received group and a learner's copy carry their own
    // labels; the copy replaces what the store held of its shard.
    let got = store
        .writer
        .reserve()
        .await
        .expect("place")
        .send_received(Received {
            shard: 3,
            prev: Some(Mark::default()),
            mark: Mark { epoch: 4, seq: 9 },
            batches: vec![put(3, "a", "1"), put(3, "b", "2")],
        });
    got.await.expect("answer").expect("durable");
    assert_eq!(
        store.labels().expect("labels").get(&3),
        Some(&Mark { epoch: 4, seq: 9 })
    );
    assert!(store.get(&[3; 32], b"b").expect("read").is_some());
    // A group that does not follow the label the store holds is refused
    // and changes nothing.
    let stray = store
        .writer
        .reserve()
        .await
        .expect("place")
        .send_received(Received {
            shard: 3,
            prev: Some(Mark { epoch: 4, seq: 7 }),
            mark: Mark { epoch: 4, seq: 8 },
            batches: vec![put(3, "c", "3")],
        });
    assert!(stray.await.expect("answer").is_err());
    assert!(store.get(&[3; 32], b"c").expect("read").is_none());
    assert_eq!(
        store.labels().expect("labels").get(&3),
        Some(&Mark { epoch: 4, seq: 9 })
    );
    let (at, records) = store
        .snapshot(2, &|id| id[0] == 2, 1 << 20)
        .expect("snapshot");
    assert_eq!(at, Mark::default(), "shard 2 was never labelled");
    let copy = Copy {
        shard: 3,
        mark: Mark { epoch: 5, seq: 1 },
        records: records
            .into_iter()
            .map(|(t, mut k, v)| {
                k[..32].copy_from_slice(&[3; 32]);
                (t, k, v)
            })
            .collect(),
    };
    let installed = store.writer.reserve().await.expect("place").send_copy(copy);
    installed.await.expect("answer").expect("durable");
    assert_eq!(
        store.labels().expect("labels").get(&3),
        Some(&Mark { epoch: 5, seq: 1 })
    );
    assert_eq!(
        store.get(&[3; 32], b"k").expect("read").as_deref(),
        store.get(&[2; 32], b"k").expect("read").as_deref(),
        "the copy's record"
    );
    assert!(
        store.get(&[3; 32], b"a").expect("read").is_none(),
        "replaced, not merged"
    );
    store.writer.close().await;
}
