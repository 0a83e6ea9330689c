//! What a hand-off sends: the body of a request of kind `HandOff`, from a
//! shard's owner to the node it hands the shard to. Pure: decoding checks
//! every field a peer sends (ids in the right shard, keys and values within
//! the storage limits) before anything is written.

use bytes::Bytes;
use data_encoding::BASE64;
use serde::{Deserialize, Serialize};

use crate::storage::MAX_VALUE_BYTES;

/// Bytes of keys and values the sender puts in one part (well under the
/// frame limit once base64 and JSON are added).
pub(crate) const PART_BYTES: usize = 1 << 20;

/// Longest raw key a part may carry (the store's own limit is lower).
const MAX_KEY: usize = 4096;

/// One step of a hand-off.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WireHandOff {
    /// Part `part` of the shard's data, from `from` (the owner at
    /// `epoch`). Part 0 comes first: the receiver drops whatever it held of
    /// the shard before writing it.
    Part {
        from: String,
        epoch: u64,
        part: u32,
        objects: Vec<WireObject>,
    },
    /// Open sockets of the shard's objects, sent after the data: the
    /// receiver keeps them (parked until their edge claims them) once the
    /// move commits.
    Sockets {
        from: String,
        epoch: u64,
        objects: Vec<WireSockets>,
    },
    /// The move went through in etcd: the receiver owns the shard at
    /// `epoch` from now.
    Commit { epoch: u64 },
    /// The move did not happen: the receiver drops the data it got.
    Abort,
}

/// One object's part of the data.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireObject {
    pub(crate) ns: String,
    /// 64 lower-case hex digits.
    pub(crate) id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// The object's first part: replaces what the receiver held of it and
    /// carries its alarm.
    pub(crate) first: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) alarm: Option<u64>,
    /// Raw keys and stored values (tag byte first), base64.
    pub(crate) keys: Vec<(String, String)>,
}

/// A [`WireObject`] checked and decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CopiedObject {
    pub(crate) ns: String,
    pub(crate) id: [u8; 32],
    pub(crate) name: Option<String>,
    pub(crate) first: bool,
    pub(crate) alarm: Option<u64>,
    pub(crate) keys: Vec<(Vec<u8>, Bytes)>,
}

impl WireObject {
    pub(crate) fn encode(o: &CopiedObject) -> WireObject {
        WireObject {
            ns: o.ns.clone(),
            id: crate::id::hex(&o.id),
            name: o.name.clone(),
            first: o.first,
            alarm: o.alarm,
            keys: o
                .keys
                .iter()
                .map(|(k, v)| (BASE64.encode(k), BASE64.encode(v)))
                .collect(),
        }
    }

    /// Checks the object belongs to `shard` (of `shards`) and its keys and
    /// values are within the storage limits.
    pub(crate) fn decode(self, shard: u32, shards: u32) -> Result<CopiedObject, String> {
        let id = checked_id(&self.id, &self.ns, shard, shards)?;
        if !self.first && self.alarm.is_some() {
            return Err("only an object's first part carries its alarm".into());
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for (k, v) in self.keys {
            let k = BASE64
                .decode(k.as_bytes())
                .map_err(|_| "a key is not base64".to_string())?;
            let v = BASE64
                .decode(v.as_bytes())
                .map_err(|_| "a value is not base64".to_string())?;
            if k.is_empty() || k.len() > MAX_KEY {
                return Err("a key is empty or too long".into());
            }
            // A stored value is a tag byte and at most MAX_VALUE_BYTES.
            if v.is_empty() || v.len() > MAX_VALUE_BYTES + 1 {
                return Err("a value is empty or too long".into());
            }
            keys.push((k, Bytes::from(v)));
        }
        Ok(CopiedObject {
            ns: self.ns,
            id,
            name: self.name,
            first: self.first,
            alarm: self.alarm,
            keys,
        })
    }
}

/// One object's open sockets, as they move with it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireSockets {
    pub(crate) ns: String,
    /// 64 lower-case hex digits.
    pub(crate) id: String,
    /// The object's auto-response pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pair: Option<(String, String)>,
    pub(crate) sockets: Vec<WireSocket>,
}

/// One socket: the node its connection is on (its edge) and its id there,
/// and what the object knows of it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireSocket {
    pub(crate) edge: String,
    pub(crate) esid: u64,
    pub(crate) tags: Vec<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attachment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) auto_ms: Option<u64>,
}

/// An object id sent by a peer: lower-case hex, in `shard`, with a
/// plausible namespace name.
pub(crate) fn checked_id(hex: &str, ns: &str, shard: u32, shards: u32) -> Result<[u8; 32], String> {
    let id = crate::id::parse_hex(hex).map_err(|e| e.to_string())?;
    if crate::id::hex(&id) != hex {
        return Err("an object id is not lower-case hex".into());
    }
    if super::shard::shard_of(&id, shards) != shard {
        return Err(format!("object {hex} is not in shard {shard}"));
    }
    if ns.is_empty() || ns.len() > 255 {
        return Err("a namespace name is empty or too long".into());
    }
    Ok(id)
}

/// Decodes a hand-off body and, for a part, each of its objects: what the
/// receiver runs on every body a peer sends (and what the fuzz target
/// feeds). Every decoded body encodes back to the same JSON.
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
pub(crate) fn fuzz_body(data: &[u8], shard: u32, shards: u32) {
    let Ok(body) = serde_json::from_slice::<WireHandOff>(data) else {
        return;
    };
    let again = serde_json::to_string(&body).expect("a decoded hand-off encodes");
    let back: WireHandOff = serde_json::from_str(&again).expect("and decodes");
    assert_eq!(back, body);
    // Sockets' objects are checked by `websocket::moved`'s fuzz body.
    if let WireHandOff::Part { objects, .. } = body {
        for o in objects {
            if let Ok(c) = o.decode(shard, shards) {
                let w = WireObject::encode(&c);
                assert_eq!(w.decode(shard, shards).as_ref(), Ok(&c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(id: [u8; 32]) -> CopiedObject {
        CopiedObject {
            ns: "rooms".into(),
            id,
            name: Some("lobby".into()),
            first: true,
            alarm: Some(42),
            keys: vec![(b"k".to_vec(), Bytes::from_static(b"\x00v"))],
        }
    }

    #[test]
    fn an_object_round_trips_and_is_checked_against_its_shard() {
        let id = [3u8; 32];
        let shard = super::super::shard::shard_of(&id, 8);
        let o = object(id);
        let w = WireObject::encode(&o);
        let json = serde_json::to_string(&w).expect("encodes");
        let back: WireObject = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back.decode(shard, 8).expect("valid"), o);
        let wrong = (shard + 1) % 8;
        let err = WireObject::encode(&o)
            .decode(wrong, 8)
            .expect_err("wrong shard");
        assert!(err.contains("not in shard"), "{err}");
    }

    #[test]
    fn bad_fields_are_refused() {
        let id = [0xab; 32];
        let shard = super::super::shard::shard_of(&id, 8);
        let mut w = WireObject::encode(&object(id));
        w.id = w.id.to_uppercase();
        assert!(w.decode(shard, 8).is_err());
        let mut w = WireObject::encode(&object(id));
        w.keys.push(("!".into(), "AA==".into()));
        assert!(w.decode(shard, 8).is_err());
        let mut w = WireObject::encode(&object(id));
        w.keys.push((
            "aw==".into(),
            BASE64.encode(&vec![0u8; MAX_VALUE_BYTES + 2]),
        ));
        assert!(w.decode(shard, 8).is_err());
        let mut w = WireObject::encode(&object(id));
        w.first = false;
        assert!(w.decode(shard, 8).is_err(), "a later part with an alarm");
        assert!(serde_json::from_str::<WireHandOff>(r#"{"abort":null,"x":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<WireHandOff>(r#""abort""#).expect("abort"),
            WireHandOff::Abort
        );
    }
}
