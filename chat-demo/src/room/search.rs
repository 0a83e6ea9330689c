//! Extension `search` in the room: an index of words kept in the room's
//! storage, written in the same event (the same commit) as the message,
//! and the query that walks it newest first.
//!
//! Key layout: for every distinct word of a message and every prefix of it
//! up to [`INDEX_PREFIX_CHARS`] characters, `idx/<prefix>/<timestamp as 20
//! digits>`, value empty. Words hold no `/` (they are alphanumeric), so
//! `idx/<prefix>/` lists exactly the messages with a word starting with
//! that prefix, in id (time) order. A query walks the list of one term
//! backwards from its cursor, loads each candidate and checks every term
//! against the text (terms longer than the indexed prefix, and the other
//! terms, are checked there), stopping after a page of results or
//! [`SCAN_BUDGET`] candidates, whichever comes first; the answer's cursor
//! then says where to go on.

use objects::{Context, ListOptions, Storage, StorageError, WebSocket};

use super::ChatRoom;
use super::frames::CountedSend;
use super::history;
use super::session::Session;
use crate::protocol::search::{matches, words};
use crate::protocol::{ChatMessage, Dialect, a};

/// The prefix of every index key.
const PREFIX: &str = "idx/";

/// Longest indexed word prefix, in characters: a message's index costs at
/// most this many keys per distinct word.
pub(crate) const INDEX_PREFIX_CHARS: usize = 8;

/// Most distinct words of one message that are indexed (a 256-character
/// message has at most 128; this bounds one message's index keys).
pub(crate) const MAX_INDEXED_WORDS: usize = 64;

/// Most index entries one query request walks; a page that is not full by
/// then comes back with a cursor to go on from.
pub(crate) const SCAN_BUDGET: usize = 1_000;

/// What the index needs from storage (the room's `Storage`; a map in the
/// property test).
pub(crate) trait IndexStore {
    /// Writes an index key.
    fn put_key(&mut self, key: &str) -> Result<(), StorageError>;
    /// Deletes an index key.
    fn delete_key(&mut self, key: &str) -> Result<(), StorageError>;
    /// Up to `limit` keys starting with `prefix` and below `end`, greatest
    /// first.
    fn keys_below(
        &self,
        prefix: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError>;
    /// The stored message with this id.
    fn message(&self, id: u64) -> Result<Option<ChatMessage>, StorageError>;
}

impl IndexStore for Storage {
    fn put_key(&mut self, key: &str) -> Result<(), StorageError> {
        self.put_bytes(key, b"")
    }

    fn delete_key(&mut self, key: &str) -> Result<(), StorageError> {
        self.delete(key).map(|_| ())
    }

    fn keys_below(
        &self,
        prefix: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let opts = ListOptions::new()
            .prefix(prefix)
            .end(end)
            .reverse(true)
            .limit(limit);
        Ok(self
            .list_bytes(&opts)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn message(&self, id: u64) -> Result<Option<ChatMessage>, StorageError> {
        history::message(self, id)
    }
}

impl ChatRoom {
    /// Answers a search request with one page. Charged to the sender's
    /// rate budget: of all requests it reads the most.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn search(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        query: &str,
        terms: &[String],
        before: u64,
        limit: u32,
    ) -> Result<(), objects::BoxError> {
        if !self.charge(ctx, ws, sender).await {
            return Ok(());
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let (found, next) = search(ctx.storage(), terms, before, limit, SCAN_BUDGET)?;
        tracing::debug!(socket = ws.sid(), found = found.len(), "search");
        ctx.send_to(
            Dialect::A,
            ws,
            a::encode_search_page(query, &found, next, sender.ext),
        );
        Ok(())
    }
}

/// The index keys of a message.
pub(crate) fn keys(message: &ChatMessage) -> Vec<String> {
    let mut distinct: Vec<String> = Vec::new();
    for word in words(&message.message) {
        if distinct.len() == MAX_INDEXED_WORDS {
            break;
        }
        if !distinct.contains(&word) {
            distinct.push(word);
        }
    }
    let mut prefixes: Vec<String> = Vec::new();
    for word in &distinct {
        for (n, (at, ch)) in word.char_indices().enumerate() {
            if n == INDEX_PREFIX_CHARS {
                break;
            }
            let prefix = &word[..at + ch.len_utf8()];
            if !prefixes.iter().any(|p| p == prefix) {
                prefixes.push(prefix.to_owned());
            }
        }
    }
    prefixes
        .iter()
        .map(|p| posting_key(p, message.timestamp))
        .collect()
}

fn posting_prefix(prefix: &str) -> String {
    format!("{PREFIX}{prefix}/")
}

fn posting_key(prefix: &str, id: u64) -> String {
    format!("{PREFIX}{prefix}/{id:020}")
}

/// Indexes a stored message (call in the event that stores it).
///
/// # Errors
///
/// A storage write error.
pub(crate) fn index(
    store: &mut impl IndexStore,
    message: &ChatMessage,
) -> Result<(), StorageError> {
    for key in keys(message) {
        store.put_key(&key)?;
    }
    Ok(())
}

/// Removes a message's index entries (call in the event that deletes it).
///
/// # Errors
///
/// A storage write error.
pub(crate) fn unindex(
    store: &mut impl IndexStore,
    message: &ChatMessage,
) -> Result<(), StorageError> {
    for key in keys(message) {
        store.delete_key(&key)?;
    }
    Ok(())
}

/// One page of results: messages older than `before` matching every term,
/// newest first, at most `limit`; and the cursor to go on from (`None`
/// when the walk reached the end).
///
/// # Errors
///
/// A storage read error.
pub(crate) fn search(
    store: &impl IndexStore,
    terms: &[String],
    before: u64,
    limit: usize,
    budget: usize,
) -> Result<(Vec<ChatMessage>, Option<u64>), StorageError> {
    // The longest term's list is likely the shortest to walk.
    let Some(driver) = terms.iter().max_by_key(|t| t.chars().count()) else {
        return Ok((Vec::new(), None));
    };
    let indexed: String = driver.chars().take(INDEX_PREFIX_CHARS).collect();
    let prefix = posting_prefix(&indexed);
    let mut end = posting_key(&indexed, before);
    let mut found = Vec::new();
    let mut scanned = 0;
    if limit == 0 {
        return Ok((found, Some(before)));
    }
    loop {
        let want = (budget - scanned).min(objects::MAX_KEYS_PER_CALL);
        let batch = store.keys_below(&prefix, &end, want)?;
        if batch.is_empty() {
            return Ok((found, None));
        }
        for key in &batch {
            scanned += 1;
            let Some(id) = key[prefix.len()..].parse::<u64>().ok() else {
                continue;
            };
            if let Some(message) = store.message(id)?
                && matches(&message.message, terms)
            {
                found.push(message);
                if found.len() == limit {
                    return Ok((found, Some(id)));
                }
            }
            if scanned == budget {
                return Ok((found, Some(id)));
            }
        }
        end.clone_from(&batch[batch.len() - 1]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::protocol::search::terms;

    /// The room's storage as two maps: index keys and messages by id.
    #[derive(Default)]
    struct Model {
        keys: BTreeSet<String>,
        messages: BTreeMap<u64, ChatMessage>,
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
        assert_eq!(
            prefixes,
            [
                "h", "he", "hel", "hell", "hello", "help", "s", "su", "sup", "supe", "super",
                "superc", "superca", "supercal",
            ]
        );
        assert_eq!(keys[0], "idx/h/00000000000000000007");
    }

    #[test]
    fn a_small_scan_budget_pages_through_without_losing_results() {
        let mut store = Model::default();
        for id in 1..=50 {
            let text = if id % 10 == 0 { "needle hay" } else { "hay" };
            let m = message(id, text);
            index(&mut store, &m).expect("index");
            store.messages.insert(id, m);
        }
        let t = terms("needle").expect("terms");
        assert_eq!(all_pages(&store, &t, 100, 3), [50, 40, 30, 20, 10]);
        let (page, next) = search(&store, &t, u64::MAX, 2, 1_000).expect("search");
        assert_eq!(
            page.iter().map(|m| m.timestamp).collect::<Vec<_>>(),
            [50, 40]
        );
        assert_eq!(next, Some(40));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Store (and index) a message of these vocabulary words.
        Say(Vec<u8>),
        /// React to the n-th stored message (rewrites its record).
        React(usize),
        /// Delete the oldest n messages, as retention does.
        Expire(usize),
    }

    const VOCABULARY: [&str; 10] = [
        "hello", "help", "Helsinki", "world", "wordy", "a", "ab", "über", "ÜBERALL", "x1",
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(0u8..10, 0..6).prop_map(Op::Say),
            1 => (0usize..20).prop_map(Op::React),
            1 => (0usize..4).prop_map(Op::Expire),
        ]
    }

    proptest! {
        /// After any sequence of messages, reactions and deletions, every
        /// query's results (all pages, any page size and scan budget)
        /// equal a naive scan of the stored history, newest first; and the
        /// index holds exactly the keys of the stored messages.
        #[test]
        fn search_equals_a_naive_scan(
            ops in proptest::collection::vec(op(), 0..40),
            query in proptest::collection::vec(0u8..14, 1..3),
            limit in 1usize..6,
            budget in 1usize..8,
        ) {
            let mut store = Model::default();
            let mut next_id = 1_000u64;
            for op in ops {
                match op {
                    Op::Say(ws) => {
                        let text: Vec<&str> = ws.iter().map(|w| VOCABULARY[usize::from(*w)]).collect();
                        let m = message(next_id, &text.join(" "));
                        next_id += 1;
                        store.messages.insert(m.timestamp, m.clone());
                        index(&mut store, &m).expect("index");
                    }
                    Op::React(n) => {
                        if let Some(m) = store.messages.values_mut().nth(n) {
                            let _ = m.reactions.apply("u", "👍", true);
                        }
                    }
                    Op::Expire(n) => {
                        let old: Vec<u64> = store.messages.keys().take(n).copied().collect();
                        for id in old {
                            let m = store.messages.remove(&id).expect("present");
                            unindex(&mut store, &m).expect("unindex");
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
            let expected: BTreeSet<String> = store.messages.values().flat_map(keys).collect();
            prop_assert_eq!(&store.keys, &expected);
        }
    }
}

/// The same property on the real thing: a room-like object indexing into
/// its LMDB storage, compared with a naive scan of the history it stored.
#[cfg(test)]
mod on_storage {
    use std::sync::Arc;

    use objects::{Context, ListOptions, Object};
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::{SCAN_BUDGET, index, search};
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

    #[derive(Debug)]
    struct Indexed;

    impl Object for Indexed {
        type Env = ();
        type Call = Op;
        type Reply = (Vec<u64>, Vec<u64>);

        async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, objects::BoxError> {
            Ok(Indexed)
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
                    index(storage, &m)?;
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
            ops in proptest::collection::vec(op(), 1..30),
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
