//! Tests of the search index: a map model with property tests, and the
//! same property on LMDB through a room-like object.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::protocol::search::terms;

/// The room's storage as two maps, index keys and messages by id, and
/// the newest indexed timestamp.
#[derive(Default)]
struct Model {
    keys: BTreeSet<String>,
    messages: BTreeMap<u64, ChatMessage>,
    through: Option<u64>,
}

impl Model {
    /// Stores a message and records it, as the room does.
    fn say(&mut self, m: &ChatMessage, waiting: &mut Option<usize>) {
        self.messages.insert(m.timestamp, m.clone());
        record(self, m, waiting).expect("record");
    }
}

impl IndexStore for Model {
    fn put_key(&mut self, key: &str) -> Result<(), StorageError> {
        self.keys.insert(key.to_owned());
        Ok(())
    }
    fn delete_key(&mut self, key: &str) -> Result<(), StorageError> {
        self.keys.remove(key);
        Ok(())
    }
    fn keys_below(
        &self,
        prefix: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        Ok(self
            .keys
            .range(prefix.to_owned()..end.to_owned())
            .rev()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
    fn message(&self, id: u64) -> Result<Option<ChatMessage>, StorageError> {
        Ok(self.messages.get(&id).cloned())
    }
    fn between(
        &self,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StorageError> {
        if before <= after.saturating_add(1) {
            return Ok(Vec::new());
        }
        Ok(self
            .messages
            .range(after + 1..before)
            .rev()
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }
    fn through(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.through)
    }
    fn set_through(&mut self, at: u64) -> Result<(), StorageError> {
        self.through = Some(at);
        Ok(())
    }
}

fn message(id: u64, text: &str) -> ChatMessage {
    ChatMessage {
        name: "a".into(),
        message: text.into(),
        timestamp: id,
        ..ChatMessage::default()
    }
}

/// Every page, following the cursors, until the end.
fn all_pages(store: &Model, terms: &[String], limit: usize, budget: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut before = u64::MAX;
    for _ in 0..10_000 {
        let (page, next) = search(store, terms, before, limit, budget).expect("search");
        assert!(page.len() <= limit);
        ids.extend(page.iter().map(|m| m.timestamp));
        match next {
            Some(cursor) => before = cursor,
            None => return ids,
        }
    }
    panic!("the cursor never reached the end");
}

#[test]
fn keys_cover_word_prefixes_once() {
    let keys = keys(&message(7, "Hello hello HELP, supercalifragilistic"));
    let prefixes: Vec<&str> = keys.iter().map(|k| &k[4..k.len() - 21]).collect();
    assert_eq!(prefixes, ["hel", "hello", "sup", "super", "supercal"]);
    assert_eq!(keys[0], "idx/hel/00000000000000000007");
    // Words under 3 characters have no keys; an earlier version's keys
    // (every prefix up to 8) are a superset, which retention deletes.
    assert!(super::keys(&message(7, "a ab é")).is_empty());
    let all = any_keys(&message(7, "Hello hello HELP, supercalifragilistic"));
    assert_eq!(all.len(), 14);
    assert!(keys.iter().all(|k| all.contains(k)));
}

#[test]
fn a_small_scan_budget_pages_through_without_losing_results() {
    let mut store = Model::default();
    let mut waiting = None;
    for id in 1..=50 {
        let text = if id % 10 == 0 { "needle hay" } else { "hay" };
        store.say(&message(id, text), &mut waiting);
    }
    // 48 indexed in three batches, the newest two still waiting.
    assert_eq!(store.through, Some(48));
    assert_eq!(waiting, Some(2));
    let t = terms("needle").expect("terms");
    assert_eq!(all_pages(&store, &t, 100, 3), [50, 40, 30, 20, 10]);
    let (page, next) = search(&store, &t, u64::MAX, 2, 1_000).expect("search");
    assert_eq!(
        page.iter().map(|m| m.timestamp).collect::<Vec<_>>(),
        [50, 40]
    );
    assert_eq!(next, Some(40));
}

#[test]
fn messages_are_indexed_in_batches_and_found_before_it() {
    let mut store = Model::default();
    // A room from before the batching: indexed, no marker.
    let old = message(5, "needle old");
    store.messages.insert(5, old.clone());
    index(&mut store, &old).expect("index");
    let mut waiting = None;
    let t = terms("needle").expect("terms");
    for id in 10..10 + INDEX_BATCH as u64 - 1 {
        store.say(&message(id, "needle new"), &mut waiting);
        // Nothing new is indexed yet, and every message is found.
        assert_eq!(store.through, Some(5));
        let found = all_pages(&store, &t, 100, 1_000);
        assert_eq!(found.len() as u64, id - 10 + 2);
        assert_eq!(found.last(), Some(&5));
    }
    assert_eq!(store.keys.len(), keys(&old).len());
    let last = 10 + INDEX_BATCH as u64 - 1;
    store.say(&message(last, "needle new"), &mut waiting);
    // The batch's event indexed all of it.
    assert_eq!(store.through, Some(last));
    assert_eq!(waiting, Some(0));
    let expected: BTreeSet<String> = store.messages.values().flat_map(keys).collect();
    assert_eq!(store.keys, expected);
    // A fresh instance (no count in memory) counts the waiting ones.
    let mut fresh = None;
    store.say(&message(100, "needle"), &mut fresh);
    assert_eq!(fresh, Some(1));
    // Deleting a waiting message touches no index key; an indexed one
    // takes its keys along.
    let before = store.keys.clone();
    let m = store.messages.remove(&100).expect("present");
    forget(&mut store, [&m]).expect("forget");
    assert_eq!(store.keys, before);
    let m = store.messages.remove(&5).expect("present");
    forget(&mut store, [&m]).expect("forget");
    assert!(store.keys.len() < before.len());
}

/// As after indexing events that were rolled back (the count in memory
/// said a batch was done): far more than a batch waits, more than one page
/// of storage; a query still finds every message.
#[test]
fn a_long_unindexed_tail_is_searched_whole() {
    let mut store = Model::default();
    for id in 1..=300 {
        let mut said_indexed = Some(0);
        let text = if id % 7 == 0 { "needle" } else { "hay" };
        store.say(&message(id, text), &mut said_indexed);
    }
    assert!(store.keys.is_empty(), "nothing indexed");
    let t = terms("needle").expect("terms");
    let want: Vec<u64> = (1..=300).rev().filter(|i| i % 7 == 0).collect();
    assert_eq!(all_pages(&store, &t, 100, 1_000), want);
    assert_eq!(all_pages(&store, &t, 3, 50), want);
}

#[derive(Clone, Debug)]
enum Op {
    /// Store (and index) a message of these vocabulary words.
    Say(Vec<u8>),
    /// React to the n-th stored message (rewrites its record).
    React(usize),
    /// Delete the oldest n messages, as retention does.
    Expire(usize),
    /// A fresh instance: the count of waiting messages is forgotten.
    Restart,
}

const VOCABULARY: [&str; 10] = [
    "hello", "help", "Helsinki", "world", "wordy", "a", "ab", "über", "ÜBERALL", "x1",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(0u8..10, 0..6).prop_map(Op::Say),
        1 => (0usize..20).prop_map(Op::React),
        1 => (0usize..4).prop_map(Op::Expire),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    /// After any sequence of messages, reactions and deletions, every
    /// query's results (all pages, any page size and scan budget)
    /// equal a naive scan of the stored history, newest first; and the
    /// index holds exactly the keys of the stored messages.
    #[test]
    fn search_equals_a_naive_scan(
        ops in proptest::collection::vec(op(), 0..80),
        query in proptest::collection::vec(0u8..14, 1..3),
        limit in 1usize..6,
        budget in 1usize..8,
    ) {
        let mut store = Model::default();
        let mut waiting = None;
        let mut next_id = 1_000u64;
        for op in ops {
            match op {
                Op::Say(ws) => {
                    let text: Vec<&str> = ws.iter().map(|w| VOCABULARY[usize::from(*w)]).collect();
                    let m = message(next_id, &text.join(" "));
                    next_id += 1;
                    store.say(&m, &mut waiting);
                }
                Op::Restart => waiting = None,
                Op::React(n) => {
                    if let Some(m) = store.messages.values_mut().nth(n) {
                        let _ = m.reactions.apply("u", "👍", true);
                    }
                }
                Op::Expire(n) => {
                    let old: Vec<u64> = store.messages.keys().take(n).copied().collect();
                    for id in old {
                        let m = store.messages.remove(&id).expect("present");
                        forget(&mut store, [&m]).expect("forget");
                    }
                }
            }
        }
        // Terms from the vocabulary and prefixes of it.
        let pool = ["hel", "he", "hello", "w", "wor", "world", "a", "ab", "über", "übera", "x", "x1", "z", "helsinkis"];
        let q: Vec<&str> = query.iter().map(|i| pool[usize::from(*i)]).collect();
        let t = terms(&q.join(" ")).expect("terms");
        let naive: Vec<u64> = store
            .messages
            .values()
            .rev()
            .filter(|m| matches(&m.message, &t))
            .map(|m| m.timestamp)
            .collect();
        prop_assert_eq!(all_pages(&store, &t, limit, budget), naive);
        // The index holds the keys of the indexed messages, no others.
        let through = store.through.unwrap_or(u64::MAX);
        let expected: BTreeSet<String> = store
            .messages
            .values()
            .filter(|m| m.timestamp <= through)
            .flat_map(keys)
            .collect();
        prop_assert_eq!(&store.keys, &expected);
    }
}

/// The same property on the real thing: a room-like object indexing into
/// its LMDB storage, compared with a naive scan of the history it stored.
mod on_storage {
    use std::sync::Arc;

    use objects::{Context, ListOptions, Object};
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::{SCAN_BUDGET, record, search};
    use crate::protocol::ChatMessage;
    use crate::protocol::search::{matches, terms};
    use crate::room::history;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    enum Op {
        Say(u64, String),
        React(u64),
        Expire(u64),
        /// Every page of a query (terms, page size, budget) and the naive
        /// scan of `msg/`, both as ids newest first.
        Compare(Vec<String>, usize, usize),
    }

    /// Keeps the count of waiting messages as the room does, in memory.
    #[derive(Debug)]
    struct Indexed {
        waiting: Option<usize>,
    }

    impl Object for Indexed {
        type Env = ();
        type Call = Op;
        type Reply = (Vec<u64>, Vec<u64>);

        async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, objects::BoxError> {
            Ok(Indexed { waiting: None })
        }

        async fn call(
            &mut self,
            ctx: &mut Context,
            op: Op,
        ) -> Result<Self::Reply, objects::BoxError> {
            let storage = ctx.storage();
            match op {
                Op::Say(id, text) => {
                    let m = ChatMessage {
                        name: "n".into(),
                        message: text,
                        timestamp: id,
                        ..ChatMessage::default()
                    };
                    storage.put(&history::key(id), &m)?;
                    record(storage, &m, &mut self.waiting)?;
                }
                Op::React(id) => {
                    if let Some(mut m) = history::message(storage, id)? {
                        let _ = m.reactions.apply("u", "👍", true);
                        storage.put(&history::key(id), &m)?;
                    }
                }
                Op::Expire(cutoff) => {
                    history::expire(storage, cutoff)?;
                }
                Op::Compare(t, limit, budget) => {
                    let mut paged = Vec::new();
                    let mut before = u64::MAX;
                    loop {
                        let (page, next) = search(storage, &t, before, limit, budget)?;
                        paged.extend(page.iter().map(|m| m.timestamp));
                        match next {
                            Some(cursor) => before = cursor,
                            None => break,
                        }
                    }
                    let naive = storage
                        .list::<ChatMessage>(&ListOptions::new().prefix("msg/").reverse(true))?
                        .into_iter()
                        .filter(|(_, m)| matches(&m.message, &t))
                        .map(|(_, m)| m.timestamp)
                        .collect();
                    return Ok((paged, naive));
                }
            }
            Ok((Vec::new(), Vec::new()))
        }
    }

    const WORDS: [&str; 6] = ["hello", "help", "world", "Wörld", "a1", "zz"];

    fn op() -> impl Strategy<Value = (u8, Vec<u8>, u8)> {
        (0u8..8, proptest::collection::vec(0u8..6, 0..5), 0u8..20)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn search_on_lmdb_equals_a_naive_scan_of_the_stored_history(
            ops in proptest::collection::vec(op(), 1..50),
            query in proptest::collection::vec(0usize..6, 1..3),
            limit in 1usize..4,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            let (paged, naive) = rt.block_on(async {
                let objects = objects::Runtime::builder().data_dir(dir.path()).open().expect("runtime");
                let ns = objects.namespace::<Indexed>("t", ()).expect("namespace");
                let stub = ns.get_by_name("room");
                let mut id = 1_000u64;
                for (kind, words, n) in ops {
                    let op = match kind {
                        0..=5 => {
                            id += 1;
                            let text: Vec<&str> = words.iter().map(|w| WORDS[usize::from(*w)]).collect();
                            Op::Say(id, text.join(" "))
                        }
                        6 => Op::React(1_000 + u64::from(n)),
                        _ => Op::Expire(1_000 + u64::from(n)),
                    };
                    stub.call(op).await.expect("op");
                }
                let prefixes = ["hel", "wor", "wö", "a", "z", "help"];
                let t = terms(&query.iter().map(|i| prefixes[*i]).collect::<Vec<_>>().join(" "))
                    .expect("terms");
                let answer = stub.call(Op::Compare(t, limit, 3)).await.expect("compare");
                // The real budget and page size agree with the scan too.
                let (a, b) = stub
                    .call(Op::Compare(vec!["hel".into()], 50, SCAN_BUDGET))
                    .await
                    .expect("compare");
                assert_eq!(a, b);
                objects.shutdown().await;
                answer
            });
            prop_assert_eq!(paged, naive);
        }
    }
}
