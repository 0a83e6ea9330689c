//! WebSockets across nodes: what travels on a *socket link*, the one QUIC
//! stream an edge node (where clients are connected) opens to an owner
//! node (where their objects run), and the owner's bounded send queue to
//! one edge, which sends a broadcast once per edge instead of once per
//! socket. Pure: framing is `wire`'s (a 4-byte length and JSON), the queue
//! is plain data, both tested without sockets.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::wire::{self, WireHttp, WireReply, WireRequest};

/// The first four bytes of a socket link. A request stream starts with a
/// frame length (at most [`wire::MAX_FRAME`], so its first byte is 0), so
/// the two never mix.
pub(crate) const LINK_MAGIC: &[u8; 4] = b"OWS1";

/// Most socket ids one `Frames` message names; a broadcast to more goes
/// out as several messages.
pub(crate) const MAX_FRAME_SOCKETS: usize = 16_384;

/// A data frame as it crosses: text, or binary as base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireFrame {
    Text(String),
    Binary(String),
}

/// What a client did on its socket, as the edge reports it to the owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WireEvent {
    Message(WireFrame),
    Close {
        code: u16,
        reason: String,
        clean: bool,
    },
    Error(String),
}

/// The body of a request of kind `Upgrade`: a fetch that upgrades, and
/// where its socket lives (the edge node and its socket id there).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireUpgrade {
    pub(crate) edge: String,
    pub(crate) esid: u64,
    pub(crate) http: WireHttp,
}

/// Edge to owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ToOwner {
    /// The first message on a link: which node the edge is.
    Hello { node: String },
    /// A fetch that upgrades (`kind` is `Upgrade`); answered by `Reply`.
    Upgrade { req: WireRequest },
    /// A socket's event, for its object.
    Event { esid: u64, event: WireEvent },
    /// The edge answered the auto-response request at `ms`.
    Stamp { esid: u64, ms: u64 },
    /// The upgrade was not completed (the owner did not answer 101): the
    /// owner forgets a socket it never made live.
    Gone { esid: u64 },
    /// The answer to [`ToEdge::Pause`]: every event of those sockets sent
    /// before it is on the link ahead of it.
    Paused { token: u64 },
    /// To the new owner of objects that moved: these sockets are the
    /// edge's (their object's old owner handed them over); send their
    /// frames. Their events follow on this link.
    Claim { esids: Vec<u64> },
    /// To the new owner of objects whose owner was lost (failover): these
    /// sockets were those objects' on the lost owner, with the state the
    /// edge was told of ([`ToEdge::Keep`]); take them into the objects'
    /// tables. Answered by [`ToEdge::Adopted`] with `token`.
    Adopt {
        token: u64,
        objects: Vec<super::handoff_wire::WireSockets>,
    },
}

/// Owner to edge.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ToEdge {
    /// The answer to an `Upgrade`.
    Reply { reply: WireReply },
    /// One frame for each socket named, in order.
    Frames { esids: Vec<u64>, frame: WireFrame },
    /// Close after the frames sent before it.
    Close {
        esid: u64,
        code: u16,
        reason: String,
    },
    /// Close at once, ahead of queued frames (slow reader, shutdown, the
    /// owner no longer serves the object).
    Kill {
        esid: u64,
        code: u16,
        reason: String,
    },
    /// The object's auto-response pair (id in hex), answered at the edge.
    AutoResponse {
        id: String,
        pair: Option<(String, String)>,
    },
    /// These objects (ids in hex) are about to move: stop sending their
    /// sockets' events and answer [`ToOwner::Paused`] with `token`.
    Pause { token: u64, ids: Vec<String> },
    /// The paused objects (`ids`) are now `owner`'s, with the sockets
    /// `esids`: claim those there ([`ToOwner::Claim`]) and send their
    /// events to it; then the objects' sockets go on. `None`: the move was
    /// called off, go on sending here.
    Moved {
        ids: Vec<String>,
        esids: Vec<u64>,
        owner: Option<String>,
    },
    /// A socket's tags and attachment (base64) as the object left them
    /// (sent when the socket goes live and whenever its attachment
    /// changes): what the edge hands a new owner if this one is lost.
    Keep {
        esid: u64,
        tags: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<String>,
    },
    /// The answer to [`ToOwner::Adopt`]: the sockets taken (`adopted`),
    /// those this node already reported closed to their objects (`closed`:
    /// the edge closes them); any other waits for the next try.
    Adopted {
        token: u64,
        adopted: Vec<u64>,
        closed: Vec<u64>,
    },
}

/// One entry of the owner's queue to an edge: frames (merged while the
/// same frame goes to several sockets) or another message.
#[derive(Debug)]
pub(crate) enum Queued<F> {
    Frames { esids: Vec<u64>, frame: F },
    Other(ToEdge),
}

/// The owner's send queue to one edge, bounded in socket entries and in
/// bytes. A frame sent to many sockets one after another (a broadcast) is
/// kept once with the list of sockets: it crosses the network once.
#[derive(Debug)]
pub(crate) struct EdgeQueue<F> {
    items: VecDeque<Queued<F>>,
    entries: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

/// Bytes an entry costs besides its frame: its socket id.
const ESID_BYTES: usize = 8;

impl<F: PartialEq> EdgeQueue<F> {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        EdgeQueue {
            items: VecDeque::new(),
            entries: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Queues `frame` (of `len` bytes) for socket `esid`, behind everything
    /// queued before. False when the queue is full: the caller cuts the
    /// socket, as it would a slow reader. A frame larger than the whole
    /// byte bound still goes on an empty queue.
    pub(crate) fn push_frame(&mut self, esid: u64, frame: F, len: usize) -> bool {
        if let Some(Queued::Frames { esids, frame: last }) = self.items.back_mut()
            && *last == frame
            && esids.len() < MAX_FRAME_SOCKETS
        {
            // Merging into the last entry keeps every socket's order: all
            // that is queued for it is before this frame.
            if self.entries >= self.max_entries || self.bytes + ESID_BYTES > self.max_bytes {
                return false;
            }
            esids.push(esid);
            self.entries += 1;
            self.bytes += ESID_BYTES;
            return true;
        }
        let cost = len.saturating_add(ESID_BYTES);
        if self.entries >= self.max_entries
            || (self.bytes > 0 && self.bytes.saturating_add(cost) > self.max_bytes)
        {
            return false;
        }
        self.items.push_back(Queued::Frames {
            esids: vec![esid],
            frame,
        });
        self.entries += 1;
        self.bytes += cost;
        true
    }

    /// Queues a message that is not a frame. Closes and kept states count
    /// against the bound like frames (false when full); replies and
    /// auto-response updates always go (their number is bounded by their
    /// senders).
    pub(crate) fn push(&mut self, msg: ToEdge) -> bool {
        let bounded = matches!(msg, ToEdge::Close { .. } | ToEdge::Keep { .. });
        if bounded && self.entries >= self.max_entries {
            return false;
        }
        self.entries += 1;
        self.items.push_back(Queued::Other(msg));
        true
    }

    /// Everything queued, oldest first; the queue is empty afterwards.
    pub(crate) fn take(&mut self) -> VecDeque<Queued<F>> {
        self.entries = 0;
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The fuzz body for the socket link's decoders: any bytes, read as a
/// stream of messages each way, never panic; whatever decodes encodes
/// back to the same frame.
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
pub(crate) fn fuzz_link(data: &[u8]) {
    fn stream<T: Serialize + serde::de::DeserializeOwned>(mut data: &[u8]) {
        while let Ok(Some((msg, used))) = wire::decode::<T>(data) {
            let again = wire::encode(&msg).expect("a decoded frame encodes");
            let (back, n) = wire::decode::<T>(&again)
                .expect("an encoded frame decodes")
                .expect("complete");
            assert_eq!(n, again.len());
            assert_eq!(wire::encode(&back).expect("encodes"), again);
            data = &data[used..];
        }
    }
    let data = data.strip_prefix(LINK_MAGIC.as_slice()).unwrap_or(data);
    stream::<ToOwner>(data);
    stream::<ToEdge>(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames<F: Clone + PartialEq>(q: &mut EdgeQueue<F>) -> Vec<(Vec<u64>, F)> {
        q.take()
            .into_iter()
            .filter_map(|i| match i {
                Queued::Frames { esids, frame } => Some((esids, frame)),
                Queued::Other(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_broadcast_is_one_entry_naming_every_socket() {
        let mut q = EdgeQueue::new(100, 1 << 20);
        for esid in [3, 1, 2] {
            assert!(q.push_frame(esid, "hello", 5));
        }
        assert!(q.push_frame(1, "bye", 3));
        assert!(q.push_frame(2, "bye", 3));
        assert_eq!(
            frames(&mut q),
            vec![(vec![3, 1, 2], "hello"), (vec![1, 2], "bye")]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn bounds_refuse_frames_but_let_one_big_frame_through() {
        let mut q = EdgeQueue::new(3, 100);
        assert!(q.push_frame(1, "a", 500), "alone, larger than the bound");
        assert!(!q.push_frame(2, "b", 10), "over the byte bound");
        q.take();
        assert!(q.push_frame(1, "x", 1));
        assert!(q.push_frame(2, "x", 1));
        assert!(q.push_frame(3, "x", 1));
        assert!(!q.push_frame(4, "x", 1), "over the entry bound");
        assert!(
            !q.push(ToEdge::Close {
                esid: 1,
                code: 1000,
                reason: String::new()
            }),
            "closes are bounded too"
        );
        assert!(q.push(ToEdge::AutoResponse {
            id: String::new(),
            pair: None
        }));
    }

    #[test]
    fn messages_round_trip() {
        let msgs = vec![
            ToOwner::Hello { node: "a".into() },
            ToOwner::Event {
                esid: 4,
                event: WireEvent::Close {
                    code: 1000,
                    reason: "bye".into(),
                    clean: true,
                },
            },
            ToOwner::Gone { esid: 9 },
        ];
        let mut bytes = LINK_MAGIC.to_vec();
        for m in &msgs {
            bytes.extend(wire::encode(m).expect("encode"));
        }
        fuzz_link(&bytes);
        let (first, used) = wire::decode::<ToOwner>(&bytes[4..])
            .expect("ok")
            .expect("whole");
        assert!(matches!(first, ToOwner::Hello { node } if node == "a"));
        let (second, _) = wire::decode::<ToOwner>(&bytes[4 + used..])
            .expect("ok")
            .expect("whole");
        assert!(matches!(
            second,
            ToOwner::Event {
                esid: 4,
                event: WireEvent::Close { code: 1000, .. }
            }
        ));
        let edge = ToEdge::Frames {
            esids: vec![1, 2],
            frame: WireFrame::Binary("AAE=".into()),
        };
        let f = wire::encode(&edge).expect("encode");
        fuzz_link(&f);
        let (back, _) = wire::decode::<ToEdge>(&f).expect("ok").expect("whole");
        assert!(matches!(back, ToEdge::Frames { esids, .. } if esids == vec![1, 2]));
    }

    #[test]
    fn the_fuzz_seeds_decode_whole() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/cluster_frames/"
        );
        let owner = std::fs::read(format!("{dir}link-to-owner")).expect("seed");
        let mut data = &owner[LINK_MAGIC.len()..];
        let mut n = 0;
        while let Some((_, used)) = wire::decode::<ToOwner>(data).expect("valid") {
            data = &data[used..];
            n += 1;
        }
        assert_eq!((n, data.len()), (6, 0));
        let edge = std::fs::read(format!("{dir}link-to-edge")).expect("seed");
        let mut data = &edge[..];
        let mut n = 0;
        while let Some((_, used)) = wire::decode::<ToEdge>(data).expect("valid") {
            data = &data[used..];
            n += 1;
        }
        assert_eq!((n, data.len()), (5, 0));
        // Pauses, moves and claims (sockets following their object).
        let follow = std::fs::read(format!("{dir}link-follow-to-edge")).expect("seed");
        let mut data = &follow[..];
        let mut kinds = Vec::new();
        while let Some((m, used)) = wire::decode::<ToEdge>(data).expect("valid") {
            kinds.push(matches!(m, ToEdge::Pause { .. }));
            data = &data[used..];
        }
        assert_eq!((kinds, data.len()), (vec![true, false, false], 0));
        let follow = std::fs::read(format!("{dir}link-follow-to-owner")).expect("seed");
        let mut data = &follow[LINK_MAGIC.len()..];
        let mut n = 0;
        while let Some((m, used)) = wire::decode::<ToOwner>(data).expect("valid") {
            assert!(matches!(m, ToOwner::Paused { .. } | ToOwner::Claim { .. }));
            data = &data[used..];
            n += 1;
        }
        assert_eq!((n, data.len()), (2, 0));
        // Sockets that outlive their owner: kept states, an adoption.
        let failover = std::fs::read(format!("{dir}link-failover-to-edge")).expect("seed");
        let mut data = &failover[..];
        let mut kinds = Vec::new();
        while let Some((m, used)) = wire::decode::<ToEdge>(data).expect("valid") {
            kinds.push(matches!(m, ToEdge::Keep { .. }));
            data = &data[used..];
        }
        assert_eq!((kinds, data.len()), (vec![true, true, false], 0));
        let failover = std::fs::read(format!("{dir}link-failover-to-owner")).expect("seed");
        let mut data = &failover[LINK_MAGIC.len()..];
        let mut adopts = 0;
        while let Some((m, used)) = wire::decode::<ToOwner>(data).expect("valid") {
            if let ToOwner::Adopt { objects, .. } = m {
                assert_eq!(objects[0].sockets.len(), 2);
                adopts += 1;
            }
            data = &data[used..];
        }
        assert_eq!((adopts, data.len()), (1, 0));
    }

    proptest! {
        /// Whatever is pushed, each socket receives exactly its frames, in
        /// the order they were pushed, and every refusal is for a full
        /// queue.
        #[test]
        fn every_socket_gets_its_frames_in_order(
            pushes in proptest::collection::vec((0u64..6, 0u8..3), 0..200),
            max_entries in 1usize..64,
        ) {
            let mut q = EdgeQueue::new(max_entries, 1 << 20);
            let mut want: Vec<Vec<u8>> = vec![Vec::new(); 6];
            let mut got: Vec<Vec<u8>> = vec![Vec::new(); 6];
            let mut accepted = 0;
            for (esid, frame) in pushes {
                if q.push_frame(esid, frame, 1) {
                    want[esid as usize].push(frame);
                    accepted += 1;
                } else {
                    prop_assert_eq!(accepted, max_entries, "refused only when full");
                    for (esids, frame) in frames(&mut q) {
                        for e in esids {
                            got[e as usize].push(frame);
                        }
                    }
                    accepted = 0;
                }
            }
            for (esids, frame) in frames(&mut q) {
                for e in esids {
                    got[e as usize].push(frame);
                }
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_bytes_are_safe(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_link(&data);
        }
    }
}
