//! The replication messages between nodes, framed like every cluster
//! message (`remote::wire`: a 4-byte length, then JSON, at most
//! `MAX_FRAME`), and the two pure assemblers a follower runs on them: the
//! parts of one commit group, and the chunks of one catch-up copy.
//!
//! Bytes (keys, values, catalog records) travel as base64. A group whose
//! writes do not fit in one frame is sent as several `append` parts with
//! the same label (`more: true` on all but the last); the follower applies
//! the whole group in one transaction, so it buffers the parts, up to
//! [`MAX_GROUP_BYTES`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Label, Refused};
use crate::storage::{Batch, MAX_VALUE_BYTES};

/// The first bytes of a stream of replication messages (after them: the
/// sender's node id as one frame, then messages).
pub(crate) const REPL_MAGIC: &[u8; 4] = b"ORP1";

/// The most bytes of keys and values a follower buffers for one group.
pub(crate) const MAX_GROUP_BYTES: usize = 64 << 20;
/// The longest key a replication message may carry (the store's own
/// ceiling; a store opened with a smaller one refuses it when applying).
pub(crate) const MAX_KEY_BYTES: usize = 2048;
/// The longest catalog record (namespace and name) a copy may carry.
const MAX_RECORD_BYTES: usize = 4096;

/// One replication message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ReplMessage {
    /// Primary → follower: (a part of) the commit group `label` of
    /// `shard`, which follows `prev`, sent by the primary of `epoch`.
    Append {
        shard: u32,
        epoch: u64,
        prev: Label,
        label: Label,
        batches: Vec<WireBatch>,
        /// More parts of this group follow.
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// Follower → primary: everything through `seq` is durable here.
    Ack { shard: u32, epoch: u64, seq: u64 },
    /// Either way: a group, copy or request was not taken, and why.
    Refused { shard: u32, refused: Refused },
    /// Learner → primary: send a copy of `shard`; `epoch` is the newest
    /// the learner knows (a primary of an older one is deposed); `session`
    /// numbers the request (never reused by the learner), and the copy
    /// echoes it, so a late copy of an earlier request is told apart.
    CatchUp {
        shard: u32,
        epoch: u64,
        session: u64,
    },
    /// Primary → learner: chunk `n` (from 0) of the copy for request
    /// `session` of `shard` as of the group `at`; `done` on the last.
    Chunk {
        shard: u32,
        epoch: u64,
        session: u64,
        at: Label,
        n: u32,
        records: Vec<WireRecord>,
        #[serde(default, skip_serializing_if = "is_false")]
        done: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An object's alarm change in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireAlarm {
    /// Set to this time (ms since the epoch).
    Set(u64),
    Delete,
}

/// One object's changes in a group (or a part of them: the first part
/// carries `cleared` and `alarm`, later parts only writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireBatch {
    /// The object id, 64 hex digits.
    pub(crate) id: String,
    pub(crate) ns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) catalog: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) cleared: bool,
    /// (key, value or `null` for a delete), base64.
    pub(crate) writes: Vec<(String, Option<String>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) alarm: Option<WireAlarm>,
}

/// Which table a copied record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Table {
    /// A data entry: key is the object id and the user key.
    Data,
    /// A catalog record: key is the object id.
    Catalog,
    /// An alarm record: key is the object id.
    Alarm,
}

/// One record of a catch-up copy, as stored (base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireRecord {
    pub(crate) table: Table,
    pub(crate) key: String,
    pub(crate) value: String,
}

fn b64(b: &[u8]) -> String {
    data_encoding::BASE64.encode(b)
}

fn unb64(s: &str, max: usize, what: &str) -> Result<Vec<u8>, String> {
    // Base64 is 4 characters per 3 bytes: refuse before decoding.
    if s.len() > max.div_ceil(3) * 4 {
        return Err(format!("{what} over {max} bytes"));
    }
    let v = data_encoding::BASE64
        .decode(s.as_bytes())
        .map_err(|e| format!("{what}: {e}"))?;
    if v.len() > max {
        return Err(format!("{what} over {max} bytes"));
    }
    Ok(v)
}

impl WireBatch {
    pub(crate) fn from_batch(b: &Batch) -> WireBatch {
        WireBatch {
            id: crate::id::hex(&b.id),
            ns: b.namespace.to_string(),
            name: b.name.as_deref().map(str::to_string),
            catalog: b.record_catalog,
            cleared: b.changes.cleared,
            writes: b
                .changes
                .writes
                .iter()
                .map(|(k, v)| (b64(k), v.as_deref().map(b64)))
                .collect(),
            alarm: b.changes.alarm.map(|a| match a {
                Some(t) => WireAlarm::Set(t),
                None => WireAlarm::Delete,
            }),
        }
    }

    /// The batch to apply, checked: a valid id, bounded keys and values.
    ///
    /// # Errors
    ///
    /// What is wrong, as text.
    pub(crate) fn into_batch(self) -> Result<Batch, String> {
        // Lower-case only: the wire carries the form `from_batch` writes,
        // so a batch decodes to one meaning and encodes back the same.
        if self.id.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err("an object id is 64 lower-case hex digits".into());
        }
        let id = crate::id::parse_hex(&self.id).map_err(|e| e.to_string())?;
        if self.ns.is_empty() || self.ns.len() > 256 {
            return Err("a namespace is 1 to 256 bytes".into());
        }
        let mut writes = Vec::with_capacity(self.writes.len());
        for (k, v) in &self.writes {
            let key = unb64(k, MAX_KEY_BYTES, "key")?;
            let value = match v {
                Some(v) => Some(Bytes::from(unb64(v, MAX_VALUE_BYTES, "value")?)),
                None => None,
            };
            writes.push((key, value));
        }
        Ok(Batch {
            id,
            namespace: self.ns.into(),
            name: self.name.map(Into::into),
            record_catalog: self.catalog,
            changes: crate::storage::Changes {
                cleared: self.cleared,
                writes,
                alarm: self.alarm.map(|a| match a {
                    WireAlarm::Set(t) => Some(t),
                    WireAlarm::Delete => None,
                }),
            },
        })
    }

    /// The bytes of keys and values it carries (encoded), for bounds.
    pub(crate) fn weight(&self) -> usize {
        self.writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + self.id.len()
            + self.ns.len()
    }
}

impl WireRecord {
    pub(crate) fn new(table: Table, key: &[u8], value: &[u8]) -> WireRecord {
        WireRecord {
            table,
            key: b64(key),
            value: b64(value),
        }
    }

    /// The record's table, key and value, checked against their bounds.
    ///
    /// # Errors
    ///
    /// Bad base64, or a key or value over its bound.
    pub(crate) fn decode(&self) -> Result<(Table, Vec<u8>, Vec<u8>), String> {
        let key = unb64(&self.key, 32 + MAX_KEY_BYTES, "key")?;
        if key.len() < 32 {
            return Err("a record's key starts with a 32-byte object id".into());
        }
        let max = match self.table {
            Table::Data => MAX_VALUE_BYTES,
            Table::Catalog | Table::Alarm => MAX_RECORD_BYTES,
        };
        let value = unb64(&self.value, max, "value")?;
        Ok((self.table, key, value))
    }
}

/// A whole commit group, assembled from its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WholeGroup {
    pub(crate) epoch: u64,
    pub(crate) prev: Label,
    pub(crate) label: Label,
    pub(crate) batches: Vec<WireBatch>,
}

/// The parts of one group received so far (the follower's side). Parts of
/// one group arrive in order on one stream; anything else is an error and
/// the stream is dropped (the primary resends after a refusal).
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    open: Option<WholeGroup>,
    bytes: usize,
}

impl Assembler {
    /// One `append` part. `Ok(Some)`: the group is whole.
    ///
    /// # Errors
    ///
    /// A part of another group while one is open, or over
    /// [`MAX_GROUP_BYTES`] in all.
    pub(crate) fn push(
        &mut self,
        epoch: u64,
        prev: Label,
        label: Label,
        batches: Vec<WireBatch>,
        more: bool,
    ) -> Result<Option<WholeGroup>, String> {
        let weight: usize = batches.iter().map(WireBatch::weight).sum();
        let open = self.open.get_or_insert_with(|| WholeGroup {
            epoch,
            prev,
            label,
            batches: Vec::new(),
        });
        if (open.epoch, open.prev, open.label) != (epoch, prev, label) {
            self.open = None;
            self.bytes = 0;
            return Err("a part of another group arrived before the open one was whole".into());
        }
        self.bytes += weight;
        if self.bytes > MAX_GROUP_BYTES {
            self.open = None;
            self.bytes = 0;
            return Err(format!("a group over {MAX_GROUP_BYTES} bytes"));
        }
        open.batches.extend(batches);
        if more {
            return Ok(None);
        }
        self.bytes = 0;
        Ok(self.open.take())
    }
}

/// Where a catch-up copy stands (the learner's side): chunks must come
/// for one request, from one epoch, for one `at`, numbered in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopyProgress {
    pub(crate) session: u64,
    pub(crate) epoch: u64,
    pub(crate) at: Label,
    next: u32,
}

impl CopyProgress {
    /// The first chunk starts a copy.
    ///
    /// # Errors
    ///
    /// It is not chunk 0.
    pub(crate) fn start(
        session: u64,
        epoch: u64,
        at: Label,
        n: u32,
    ) -> Result<CopyProgress, String> {
        if n != 0 {
            return Err(format!("a copy starts at chunk 0, not {n}"));
        }
        Ok(CopyProgress {
            session,
            epoch,
            at,
            next: 1,
        })
    }

    /// A later chunk.
    ///
    /// # Errors
    ///
    /// Another copy's chunk, or one out of order: start again.
    pub(crate) fn next(
        &mut self,
        session: u64,
        epoch: u64,
        at: Label,
        n: u32,
    ) -> Result<(), String> {
        if (session, epoch, at) != (self.session, self.epoch, self.at) || n != self.next {
            return Err(format!(
                "chunk {n} of a copy at {at:?} (epoch {epoch}) does not follow chunk {} at {:?}",
                self.next.saturating_sub(1),
                self.at
            ));
        }
        self.next += 1;
        Ok(())
    }
}

/// The fuzz body for the replication decoders (part of
/// `objects::testing::cluster_frames`): any bytes, read as a stream of
/// replication frames, never panic; whatever decodes encodes back to the
/// same frame, and its batches and records are checked without panicking.
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
pub(crate) fn fuzz_frames(mut data: &[u8]) {
    use crate::remote::wire::{decode, encode};
    let mut assembler = Assembler::default();
    while let Ok(Some((msg, used))) = decode::<ReplMessage>(data) {
        let again = encode(&msg).expect("a decoded frame encodes");
        let (back, n) = decode::<ReplMessage>(&again)
            .expect("an encoded frame decodes")
            .expect("complete");
        assert_eq!(n, again.len());
        assert_eq!(back, msg);
        match msg {
            ReplMessage::Append {
                epoch,
                prev,
                label,
                batches,
                more,
                ..
            } => {
                for b in &batches {
                    if let Ok(batch) = b.clone().into_batch() {
                        assert_eq!(&WireBatch::from_batch(&batch), b);
                    }
                }
                let _ = assembler.push(epoch, prev, label, batches, more);
            }
            ReplMessage::Chunk { records, .. } => {
                for r in &records {
                    if let Ok((t, k, v)) = r.decode() {
                        assert_eq!(WireRecord::new(t, &k, &v).decode(), Ok((t, k, v)));
                    }
                }
            }
            _ => {}
        }
        data = &data[used..];
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
