//! Extension `search` in the room: an index of words kept in the room's
//! storage, and the query that walks it newest first.
//!
//! The index is written in batches: a stored message waits, unindexed, until
//! [`INDEX_BATCH`] of them have, and the event that stores the last indexes
//! them all (in its commit). Every message stamped at or before the value
//! under [`THROUGH_KEY`] is indexed; the ones after it are the room's newest
//! few, which a query reads directly before walking the index. So results
//! are the same as with an index written per message, while the pages a
//! message's index keys dirty are shared with the rest of its batch in one
//! commit. (Small rooms spend 10–15% less server CPU per delivery; see
//! `docs/performance.md`.)
//!
//! Key layout: for every distinct word of a message and its prefixes of
//! [`INDEXED_LENGTHS`] characters, `idx/<prefix>/<timestamp as 20
//! digits>`, value empty. Words hold no `/` (they are alphanumeric), so
//! `idx/<prefix>/` lists exactly the messages with a word starting with
//! that prefix, in id (time) order. A query walks the list of one term
//! backwards from its cursor, loads each candidate and checks every term
//! against the text (terms longer than the indexed prefix, and the other
//! terms, are checked there), stopping after a page of results or
//! [`SCAN_BUDGET`] candidates, whichever comes first; the answer's cursor
//! then says where to go on. A query whose every term is shorter than the
//! shortest indexed length walks the history itself the same way (such
//! short prefixes would list most messages anyway).

use objects::{Context, ListOptions, Storage, StorageError, WebSocket};

use super::ChatRoom;
use super::frames::CountedSend;
use super::history;
use super::session::Session;
use crate::protocol::search::{matches, words};
use crate::protocol::{ChatMessage, Dialect, a};

/// The prefix of every index key.
const PREFIX: &str = "idx/";

/// The word prefix lengths (in characters) the index holds: a word of at
/// least 3 characters is listed under its first 3, a word of at least 5
/// under its first 5 too, one of at least 8 under its first 8, so each
/// distinct word costs at most 3 keys. A query term walks the list of its
/// longest indexed prefix and checks the text; terms under 3 characters
/// walk the history itself (see [`search`]).
pub(crate) const INDEXED_LENGTHS: [usize; 3] = [3, 5, 8];

/// Longest prefix the index was ever written with: rooms indexed by an
/// earlier version hold every prefix of 1 to this many characters, which
/// retention deletes with their messages.
const LEGACY_PREFIX_CHARS: usize = 8;

/// Most distinct words of one message that are indexed (a 256-character
/// message has at most 128; this bounds one message's index keys).
pub(crate) const MAX_INDEXED_WORDS: usize = 64;

/// Most index entries one query request walks; a page that is not full by
/// then comes back with a cursor to go on from.
pub(crate) const SCAN_BUDGET: usize = 1_000;

/// How many stored messages are indexed together, in the event that
/// stores the last of them.
pub(crate) const INDEX_BATCH: usize = 16;

/// The key of the newest indexed timestamp (outside [`PREFIX`]). Absent:
/// every stored message is indexed (a new room, or one from before the
/// index was batched, which indexed each message as it came).
const THROUGH_KEY: &str = "idx-through";

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
    /// Stored messages stamped after `after` and before `before`, newest
    /// first, at most `limit`.
    fn between(
        &self,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StorageError>;
    /// The newest indexed timestamp, if stored.
    fn through(&self) -> Result<Option<u64>, StorageError>;
    /// Stores the newest indexed timestamp.
    fn set_through(&mut self, at: u64) -> Result<(), StorageError>;
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

    fn between(
        &self,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StorageError> {
        history::between(self, after, before, limit)
    }

    fn through(&self) -> Result<Option<u64>, StorageError> {
        self.get(THROUGH_KEY)
    }

    fn set_through(&mut self, at: u64) -> Result<(), StorageError> {
        self.put(THROUGH_KEY, &at)
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
    prefix_keys(message, |n| INDEXED_LENGTHS.contains(&n))
}

/// Every key this message may have in the index, whichever version wrote
/// it: the prefixes of every length up to [`LEGACY_PREFIX_CHARS`] (a
/// superset of [`keys`]).
fn any_keys(message: &ChatMessage) -> Vec<String> {
    prefix_keys(message, |n| n <= LEGACY_PREFIX_CHARS)
}

/// The posting keys of the message's distinct word prefixes whose length
/// in characters `indexed` accepts.
fn prefix_keys(message: &ChatMessage, indexed: impl Fn(usize) -> bool) -> Vec<String> {
    let mut distinct: Vec<String> = Vec::new();
    for word in words(&message.message) {
        if distinct.len() == MAX_INDEXED_WORDS {
            break;
        }
        if !distinct.contains(&word) {
            distinct.push(word);
        }
    }
    let mut prefixes: Vec<&str> = Vec::new();
    for word in &distinct {
        for (n, (at, ch)) in word.char_indices().enumerate() {
            if n == LEGACY_PREFIX_CHARS {
                break;
            }
            let prefix = &word[..at + ch.len_utf8()];
            if indexed(n + 1) && !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
    }
    prefixes
        .iter()
        .map(|p| posting_key(p, message.timestamp))
        .collect()
}

/// The indexed prefix whose list a term walks: its longest one, or `None`
/// for a term shorter than every indexed length.
fn indexed_prefix(term: &str) -> Option<String> {
    let chars = term.chars().count();
    let n = INDEXED_LENGTHS.iter().rev().find(|n| **n <= chars)?;
    Some(term.chars().take(*n).collect())
}

fn posting_prefix(prefix: &str) -> String {
    format!("{PREFIX}{prefix}/")
}

fn posting_key(prefix: &str, id: u64) -> String {
    format!("{PREFIX}{prefix}/{id:020}")
}

/// Writes a message's index keys.
fn index(store: &mut impl IndexStore, message: &ChatMessage) -> Result<(), StorageError> {
    for key in keys(message) {
        store.put_key(&key)?;
    }
    Ok(())
}

/// Notes a message just stored (call in the event that stores it, after
/// the put): when it is the [`INDEX_BATCH`]th waiting, indexes every
/// waiting message. `waiting` is the caller's count of stored messages not
/// yet indexed (`None`: not known, counted here from storage); an
/// overestimate only indexes early.
///
/// # Errors
///
/// A storage error.
pub(crate) fn record(
    store: &mut impl IndexStore,
    message: &ChatMessage,
    waiting: &mut Option<usize>,
) -> Result<(), StorageError> {
    let through = match store.through()? {
        Some(at) => at,
        None => {
            // Everything stored before this message is indexed: say so, so
            // that this one and the next ones count as waiting.
            let older = store.between(0, message.timestamp, 1)?;
            let at = older.first().map_or(0, |m| m.timestamp);
            store.set_through(at)?;
            at
        }
    };
    let n = match *waiting {
        Some(n) => n + 1,
        None => store
            .between(through, u64::MAX, objects::MAX_KEYS_PER_CALL)?
            .len(),
    };
    if n < INDEX_BATCH {
        *waiting = Some(n);
        return Ok(());
    }
    let mut before = u64::MAX;
    loop {
        let batch = store.between(through, before, objects::MAX_KEYS_PER_CALL)?;
        let Some(oldest) = batch.last() else { break };
        before = oldest.timestamp;
        for m in &batch {
            index(store, m)?;
        }
    }
    store.set_through(message.timestamp.max(through))?;
    *waiting = Some(0);
    Ok(())
}

/// Forgets the search marker of a room whose last message was deleted (no
/// marker: every stored message is indexed, and there are none).
///
/// # Errors
///
/// A storage error.
pub(crate) fn clear(storage: &mut Storage) -> Result<(), StorageError> {
    storage.delete(THROUGH_KEY).map(|_| ())
}

/// Removes the index entries of messages being deleted (call in the event
/// that deletes them); messages still waiting have none.
///
/// # Errors
///
/// A storage error.
pub(crate) fn forget<'a>(
    store: &mut impl IndexStore,
    messages: impl IntoIterator<Item = &'a ChatMessage>,
) -> Result<(), StorageError> {
    let through = store.through()?.unwrap_or(u64::MAX);
    for message in messages {
        if message.timestamp <= through {
            for key in any_keys(message) {
                store.delete_key(&key)?;
            }
        }
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
    let mut found = Vec::new();
    let mut scanned = 0;
    if limit == 0 {
        return Ok((found, Some(before)));
    }
    // Terms too short for the index: the history itself is the list.
    let indexed = indexed_prefix(driver);
    // The newest messages, not indexed yet: read directly, a page at a
    // time (fewer than a batch, unless indexing events were rolled back).
    let through = match indexed {
        Some(_) => store.through()?.unwrap_or(u64::MAX),
        None => 0,
    };
    let mut below = before;
    loop {
        let page = store.between(through, below, objects::MAX_KEYS_PER_CALL)?;
        let Some(last) = page.last() else { break };
        below = last.timestamp;
        for message in page {
            scanned += 1;
            let id = message.timestamp;
            if matches(&message.message, terms) {
                found.push(message);
                if found.len() == limit {
                    return Ok((found, Some(id)));
                }
            }
            if scanned == budget {
                return Ok((found, Some(id)));
            }
        }
    }
    let Some(indexed) = indexed else {
        return Ok((found, None));
    };
    let prefix = posting_prefix(&indexed);
    let mut end = posting_key(&indexed, before.min(through.saturating_add(1)));
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
#[path = "search_tests.rs"]
mod tests;
