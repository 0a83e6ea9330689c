//! A room's stored history: one key per chat message, in time order.
//!
//! Key layout: `msg/` followed by the timestamp as 20 zero-padded decimal
//! digits (`msg/00000001700000000000`). 20 digits hold every `u64`, so key
//! order (UTF-8 byte order) is timestamp order for every possible
//! timestamp, and timestamps are unique within a room, so a key never
//! overwrites another message. The value is the [`ChatMessage`] as JSON.

use objects::{ListOptions, Storage, StorageError};

use super::search;
use crate::protocol::ChatMessage;

/// The prefix of every history key.
const PREFIX: &str = "msg/";

/// The key of the number of stored messages (outside [`PREFIX`]), kept in
/// the same events that store and delete messages, so the room can bound
/// its history without counting it.
const COUNT_KEY: &str = "count";

/// The storage key of the message sent at `timestamp`.
pub(crate) fn key(timestamp: u64) -> String {
    format!("{PREFIX}{timestamp:020}")
}

/// The timestamp for a message sent at `now_ms` after one stamped
/// `last_ms`: the clock, unless it stalled or stepped back, in which case
/// one more than the last, so timestamps strictly increase.
pub(crate) fn next_timestamp(now_ms: u64, last_ms: u64) -> u64 {
    now_ms.max(last_ms.saturating_add(1))
}

/// The newest stored timestamp (0 for an empty room).
///
/// # Errors
///
/// A storage read error or a stored value that does not decode.
pub(crate) fn latest(storage: &Storage) -> Result<u64, StorageError> {
    let newest =
        storage.list::<ChatMessage>(&ListOptions::new().prefix(PREFIX).reverse(true).limit(1))?;
    Ok(newest.first().map_or(0, |(_, m)| m.timestamp))
}

/// Messages stamped after `after` and before `before`, newest first, at
/// most `limit` (up to [`objects::MAX_KEYS_PER_CALL`]).
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn between(
    storage: &Storage,
    after: u64,
    before: u64,
    limit: usize,
) -> Result<Vec<ChatMessage>, StorageError> {
    if before <= after.saturating_add(1) {
        return Ok(Vec::new());
    }
    let opts = ListOptions::new()
        .prefix(PREFIX)
        .start_after(key(after))
        .end(key(before))
        .reverse(true)
        .limit(limit.min(objects::MAX_KEYS_PER_CALL));
    Ok(storage
        .list::<ChatMessage>(&opts)?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

/// Whether a message with this id (timestamp) is stored.
///
/// # Errors
///
/// A storage read error.
pub(crate) fn exists(storage: &Storage, id: u64) -> Result<bool, StorageError> {
    Ok(storage.get_bytes(&key(id))?.is_some())
}

/// The message with this id (timestamp), if stored.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn message(storage: &Storage, id: u64) -> Result<Option<ChatMessage>, StorageError> {
    storage.get(&key(id))
}

/// The newest `count` messages, oldest first.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn recent(storage: &Storage, count: usize) -> Result<Vec<ChatMessage>, StorageError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut newest = storage
        .list::<ChatMessage>(&ListOptions::new().prefix(PREFIX).reverse(true).limit(count))?;
    newest.reverse();
    Ok(newest.into_iter().map(|(_, m)| m).collect())
}

/// Up to `limit` messages older than `before` (oldest first), and whether
/// still older ones exist.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn page(
    storage: &Storage,
    before: u64,
    limit: u32,
) -> Result<(Vec<ChatMessage>, bool), StorageError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // One more than asked tells whether there is more.
    let opts = ListOptions::new()
        .prefix(PREFIX)
        .end(key(before))
        .reverse(true)
        .limit(limit.saturating_add(1));
    let mut newest = storage.list::<ChatMessage>(&opts)?;
    let more = newest.len() > limit;
    newest.truncate(limit);
    newest.reverse();
    Ok((newest.into_iter().map(|(_, m)| m).collect(), more))
}

/// Most messages one expiry pass deletes (one event's writes stay small;
/// the room's alarm comes back at once for the rest).
pub(crate) const EXPIRE_BATCH: usize = 1024;

/// Deletes messages stamped before `cutoff`, at most [`EXPIRE_BATCH`];
/// answers how many went and whether older ones remain.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn expire(storage: &mut Storage, cutoff: u64) -> Result<(usize, bool), StorageError> {
    let mut deleted = 0;
    while deleted < EXPIRE_BATCH {
        let batch = (EXPIRE_BATCH - deleted).min(objects::MAX_KEYS_PER_CALL);
        let opts = ListOptions::new()
            .prefix(PREFIX)
            .end(key(cutoff))
            .limit(batch);
        let old = storage.list::<ChatMessage>(&opts)?;
        if old.is_empty() {
            return Ok((deleted, false));
        }
        // The search index goes with its messages, in the same event.
        search::forget(storage, old.iter().map(|(_, m)| m))?;
        let refs: Vec<&str> = old.iter().map(|(k, _)| k.as_str()).collect();
        deleted += storage.delete_many(&refs)?;
    }
    let more = !storage
        .list_bytes(&ListOptions::new().prefix(PREFIX).end(key(cutoff)).limit(1))?
        .is_empty();
    Ok((deleted, more))
}

/// How many messages the room holds: the stored count, or (a room from
/// before the count was kept) counted once, a page at a time.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn count(storage: &Storage) -> Result<u64, StorageError> {
    if let Some(n) = storage.get::<u64>(COUNT_KEY)? {
        return Ok(n);
    }
    let mut n = 0u64;
    let mut after: Option<String> = None;
    loop {
        let mut opts = ListOptions::new().prefix(PREFIX).limit(EXPIRE_BATCH);
        if let Some(after) = after.take() {
            opts = opts.start_after(after);
        }
        let page = storage.list_bytes(&opts)?;
        let Some((last, _)) = page.last() else {
            return Ok(n);
        };
        after = Some(last.clone());
        n += u64::try_from(page.len()).unwrap_or(u64::MAX);
    }
}

/// Stores the message count (in the event that changed it); an empty
/// room stores nothing at all (nor its search marker).
///
/// # Errors
///
/// A storage error.
pub(crate) fn set_count(storage: &mut Storage, n: u64) -> Result<(), StorageError> {
    if n == 0 {
        storage.delete(COUNT_KEY)?;
        search::clear(storage)?;
        return Ok(());
    }
    storage.put(COUNT_KEY, &n)
}

/// Deletes the oldest `excess` messages, at most [`EXPIRE_BATCH`] in one
/// pass; answers how many went.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn trim(storage: &mut Storage, excess: u64) -> Result<usize, StorageError> {
    let excess = usize::try_from(excess)
        .unwrap_or(usize::MAX)
        .min(EXPIRE_BATCH);
    let mut deleted = 0;
    while deleted < excess {
        let batch = (excess - deleted).min(objects::MAX_KEYS_PER_CALL);
        let old = storage.list::<ChatMessage>(&ListOptions::new().prefix(PREFIX).limit(batch))?;
        if old.is_empty() {
            break;
        }
        // The search index goes with its messages, in the same event.
        search::forget(storage, old.iter().map(|(_, m)| m))?;
        let refs: Vec<&str> = old.iter().map(|(k, _)| k.as_str()).collect();
        deleted += storage.delete_many(&refs)?;
    }
    Ok(deleted)
}

/// The oldest stored timestamp, if any.
///
/// # Errors
///
/// As [`latest`].
pub(crate) fn oldest(storage: &Storage) -> Result<Option<u64>, StorageError> {
    let oldest = storage.list::<ChatMessage>(&ListOptions::new().prefix(PREFIX).limit(1))?;
    Ok(oldest.first().map(|(_, m)| m.timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_time_order_across_digit_counts() {
        let times = [
            0,
            9,
            10,
            1_700_000_000_000,
            9_999_999_999_999_999,
            10_000_000_000_000_000,
            u64::MAX,
        ];
        let keys: Vec<String> = times.iter().map(|t| key(*t)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(key(1_700_000_000_000), "msg/00000001700000000000");
    }

    #[test]
    fn timestamps_strictly_increase() {
        assert_eq!(next_timestamp(100, 0), 100);
        assert_eq!(next_timestamp(100, 100), 101, "stalled clock");
        assert_eq!(next_timestamp(50, 100), 101, "clock stepped back");
        assert_eq!(next_timestamp(200, 100), 200);
        assert_eq!(
            next_timestamp(0, u64::MAX),
            u64::MAX,
            "saturates rather than wrapping"
        );
    }
}

/// Refuses new messages once the store's free space falls under a
/// reserve, kept so deletes (retention, which needs pages to write its
/// deletes) still commit.
#[derive(Debug)]
pub(crate) struct StoreGuard {
    usage: objects::StoreUsage,
}

impl StoreGuard {
    pub(crate) fn new(usage: objects::StoreUsage) -> StoreGuard {
        StoreGuard { usage }
    }

    /// Whether less than the reserve (1/32 of the store, at least 256 KiB)
    /// is left.
    pub(crate) fn is_full(&self) -> bool {
        let (used, max) = self.usage.bytes();
        let reserve = (max / 32).max(256 * 1024);
        used.saturating_add(reserve) > max
    }
}
