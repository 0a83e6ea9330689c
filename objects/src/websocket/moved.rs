//! What moves with an object when its shard moves to another node: its
//! open sockets (a hand-off's `Sockets` step). Decoding checks what a
//! peer sends against the limits a socket accepted here keeps (tags,
//! attachment, auto-response pair, sockets per object). Pure: the
//! cluster (cargo feature `cluster`) ships and installs them.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

use bytes::Bytes;
use data_encoding::BASE64;

use super::registry::{
    MAX_ATTACHMENT_BYTES, MAX_AUTO_RESPONSE_CHARS, MAX_SOCKETS, Moved, check_tags,
};
use super::socket::Outgoing;
use crate::remote::handoff_wire::{WireHandOff, WireSocket, WireSockets, checked_id};

/// A [`WireSockets`] checked and decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MovedSockets {
    pub(crate) ns: String,
    pub(crate) id: [u8; 32],
    pub(crate) pair: Option<(String, String)>,
    /// Edge node, its socket id, and the socket's state.
    pub(crate) sockets: Vec<(String, u64, Moved)>,
}

impl MovedSockets {
    /// As it crosses.
    pub(crate) fn encode(&self) -> WireSockets {
        WireSockets {
            ns: self.ns.clone(),
            id: crate::id::hex(&self.id),
            pair: self.pair.clone(),
            sockets: self
                .sockets
                .iter()
                .map(|(edge, esid, s)| WireSocket {
                    edge: edge.clone(),
                    esid: *esid,
                    tags: s.tags.clone(),
                    attachment: s.attachment.as_ref().map(|a| BASE64.encode(a)),
                    auto_ms: s.auto_response_ms,
                })
                .collect(),
        }
    }

    /// Checks the object belongs to `shard` and every socket is within
    /// the limits a local one keeps (tags, attachment, auto-response).
    pub(crate) fn decode(w: WireSockets, shard: u32, shards: u32) -> Result<MovedSockets, String> {
        let id = checked_id(&w.id, &w.ns, shard, shards)?;
        if let Some((req, resp)) = &w.pair
            && [req, resp]
                .iter()
                .any(|s| s.chars().count() > MAX_AUTO_RESPONSE_CHARS)
        {
            return Err("an auto-response pair is too long".into());
        }
        if w.sockets.len() > MAX_SOCKETS {
            return Err("more sockets than an object may hold".into());
        }
        let mut sockets = Vec::with_capacity(w.sockets.len());
        for s in w.sockets {
            if s.edge.is_empty() || s.edge.len() > 255 {
                return Err("an edge node id is empty or too long".into());
            }
            let refs: Vec<&str> = s.tags.iter().map(String::as_str).collect();
            let tags = check_tags(&refs).map_err(|e| e.to_string())?;
            if tags.len() != s.tags.len() {
                return Err("a socket's tags repeat".into());
            }
            let attachment = match s.attachment {
                None => None,
                Some(a) => {
                    let a = BASE64
                        .decode(a.as_bytes())
                        .map_err(|_| "an attachment is not base64".to_string())?;
                    if a.len() > MAX_ATTACHMENT_BYTES {
                        return Err("an attachment is too large".into());
                    }
                    Some(Bytes::from(a))
                }
            };
            let moved = Moved {
                tags,
                attachment,
                auto_response_ms: s.auto_ms,
            };
            sockets.push((s.edge, s.esid, moved));
        }
        Ok(MovedSockets {
            ns: w.ns,
            id,
            pair: w.pair,
            sockets,
        })
    }
}

/// Frames (and closes) kept for one moved socket until its edge claims it;
/// past them it counts as a slow reader.
pub(crate) const KEPT_FRAMES: usize = 4096;
/// Bytes of frames kept for one moved socket.
pub(crate) const KEPT_BYTES: usize = 512 * 1024;
/// The close reason of a moved socket whose kept frames ran over.
const NOT_CLAIMED: &str = "slow reader: the socket's node did not take it back";

/// What the object sent a socket that moved to its node, kept in order
/// until the socket's edge claims it; bounded in count and bytes (past
/// either, the socket is to be closed as a slow reader, and nothing more
/// is kept).
#[derive(Debug, Default)]
pub(crate) struct Kept {
    outs: Vec<Outgoing>,
    bytes: usize,
    kill: Option<(u16, String)>,
}

impl Kept {
    pub(crate) fn push(&mut self, out: Outgoing) {
        if self.kill.is_some() {
            return;
        }
        let weight = out.weight();
        if self.outs.len() >= KEPT_FRAMES || self.bytes.saturating_add(weight) > KEPT_BYTES {
            self.kill = Some((1008, NOT_CLAIMED.into()));
        } else {
            self.bytes += weight;
            self.outs.push(out);
        }
    }

    /// The socket is to be closed at once (the first reason stays).
    pub(crate) fn kill(&mut self, code: u16, reason: String) {
        self.kill.get_or_insert((code, reason));
    }

    /// What to send, in order, then the close to make, if any.
    pub(crate) fn take(self) -> (Vec<Outgoing>, Option<(u16, String)>) {
        (self.outs, self.kill)
    }
}

/// Decodes a hand-off body and, if it carries sockets, each object's:
/// never panics, and whatever decodes encodes back the same.
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
pub(crate) fn fuzz_sockets(data: &[u8], shard: u32, shards: u32) {
    let Ok(WireHandOff::Sockets { objects, .. }) = serde_json::from_slice::<WireHandOff>(data)
    else {
        return;
    };
    for o in objects {
        if let Ok(m) = MovedSockets::decode(o, shard, shards) {
            assert_eq!(
                MovedSockets::decode(m.encode(), shard, shards).as_ref(),
                Ok(&m)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_frames_are_bounded_in_count_and_bytes() {
        let frame = |n: usize| {
            Outgoing::Frame(tokio_tungstenite::tungstenite::Message::text("x".repeat(n)))
        };
        let mut k = Kept::default();
        for _ in 0..KEPT_FRAMES {
            k.push(frame(1));
        }
        k.push(frame(1));
        let (outs, kill) = k.take();
        assert_eq!(outs.len(), KEPT_FRAMES);
        assert_eq!(kill.map(|k| k.0), Some(1008), "one more is a slow reader");

        let mut k = Kept::default();
        k.push(frame(KEPT_BYTES - 10));
        k.push(Outgoing::Close(4000, "bye".into()));
        k.push(frame(11));
        k.push(frame(1));
        let (outs, kill) = k.take();
        assert_eq!(outs.len(), 2, "nothing is kept past the byte bound");
        assert!(matches!(outs[1], Outgoing::Close(4000, _)), "in order");
        assert_eq!(kill.map(|k| k.0), Some(1008));

        let mut k = Kept::default();
        k.kill(1001, "shutting down".into());
        k.kill(1008, "later".into());
        k.push(frame(1));
        let (outs, kill) = k.take();
        assert!(outs.is_empty());
        assert_eq!(
            kill,
            Some((1001, "shutting down".into())),
            "the first reason stays"
        );
    }

    proptest::proptest! {
        /// Whatever is pushed and whenever the socket is closed, what is
        /// kept is the frames pushed before the first close or the first
        /// push past a bound, in order, and the close made is whichever
        /// of those two came first.
        #[test]
        fn kept_is_an_ordered_prefix_within_the_bounds(
            steps in proptest::collection::vec((0usize..200_000, proptest::bool::weighted(0.02)), 0..300),
        ) {
            let mut k = Kept::default();
            let (mut want, mut bytes, mut ended) = (Vec::new(), 0usize, None);
            for (n, (len, close)) in steps.into_iter().enumerate() {
                if close {
                    let code = 4000 + u16::try_from(n).unwrap_or(0);
                    k.kill(code, String::new());
                    ended.get_or_insert(code);
                    continue;
                }
                k.push(Outgoing::Frame(tokio_tungstenite::tungstenite::Message::binary(vec![0u8; len])));
                if ended.is_none() {
                    if want.len() >= KEPT_FRAMES || bytes + len > KEPT_BYTES {
                        ended = Some(1008);
                    } else {
                        want.push(len);
                        bytes += len;
                    }
                }
            }
            let (outs, kill) = k.take();
            let kept: Vec<usize> = outs
                .iter()
                .map(|o| match o {
                    Outgoing::Frame(f) => f.len(),
                    _ => usize::MAX,
                })
                .collect();
            proptest::prop_assert_eq!(kept, want);
            proptest::prop_assert_eq!(kill.map(|(code, _)| code), ended);
        }
    }

    #[test]
    fn the_fuzz_seed_decodes_whole() {
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/cluster_frames/handoff-sockets"
        ))
        .expect("seed");
        let shard = u32::from(seed[0] % 8);
        let Ok(WireHandOff::Sockets { objects, .. }) = serde_json::from_slice(&seed[1..]) else {
            panic!("a sockets step");
        };
        let m = objects
            .into_iter()
            .map(|o| MovedSockets::decode(o, shard, 8).expect("valid"))
            .next()
            .expect("one object");
        assert_eq!(m.sockets.len(), 2);
        assert_eq!(m.sockets[0].2.tags, ["x", "y"]);
        assert_eq!(m.sockets[1].2.auto_response_ms, None);
        fuzz_sockets(&seed[1..], shard, 8);
    }

    #[test]
    fn sockets_round_trip_and_are_checked() {
        let id = [5u8; 32];
        let shard = crate::remote::shard::shard_of(&id, 8);
        let m = MovedSockets {
            ns: "rooms".into(),
            id,
            pair: Some(("ping".into(), "pong".into())),
            sockets: vec![(
                "n2".into(),
                7,
                Moved {
                    tags: vec!["a".into()],
                    attachment: Some(Bytes::from_static(b"{}")),
                    auto_response_ms: Some(3),
                },
            )],
        };
        let json = serde_json::to_string(&WireHandOff::Sockets {
            from: "n1".into(),
            epoch: 2,
            objects: vec![m.encode()],
        })
        .expect("encodes");
        fuzz_sockets(json.as_bytes(), shard, 8);
        let WireHandOff::Sockets { mut objects, .. } =
            serde_json::from_str::<WireHandOff>(&json).expect("decodes")
        else {
            panic!("sockets");
        };
        assert_eq!(
            MovedSockets::decode(objects.remove(0), shard, 8).expect("valid"),
            m
        );
        let bad = |f: &dyn Fn(&mut WireSockets)| {
            let mut w = m.encode();
            f(&mut w);
            MovedSockets::decode(w, shard, 8).expect_err("refused")
        };
        bad(&|w| w.sockets[0].tags = vec!["x".repeat(257)]);
        bad(&|w| w.sockets[0].tags = vec!["x".into(), "x".into()]);
        bad(&|w| w.sockets[0].attachment = Some(BASE64.encode(&vec![0u8; 16 * 1024 + 1])));
        bad(&|w| w.sockets[0].edge = String::new());
        bad(&|w| w.pair = Some(("p".repeat(2049), String::new())));
        let elsewhere = (0..=255u8)
            .map(|b| [b; 32])
            .find(|o| crate::remote::shard::shard_of(o, 8) != shard)
            .expect("another shard");
        let err = bad(&|w| w.id = crate::id::hex(&elsewhere));
        assert!(err.contains("not in shard"), "{err}");
    }
}
