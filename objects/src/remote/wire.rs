//! The messages nodes exchange over QUIC, and their framing: a 4-byte
//! big-endian length, then that many bytes of JSON. Pure: `decode` takes
//! whatever bytes have arrived and says "need more", "malformed" or gives
//! one message and how many bytes it used (mini-redis's split between
//! incomplete and malformed). Every byte a peer sends goes through here.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The largest frame a node accepts or sends: an event's writes are
/// bounded by `MAX_EVENT_BYTES`, and a call or fetch body is held to the
/// same order of size.
pub(crate) const MAX_FRAME: usize = 8 << 20;

/// The ALPN name of the protocol; a peer speaking anything else is refused
/// by the TLS handshake.
pub(crate) const ALPN: &[u8] = b"objects-cluster/1";

/// What the event is, so the receiver knows how to read `body`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A typed RPC call: `body` is the object type's `Call`.
    Call,
    /// A fetch: `body` is a buffered [`Request`](crate::Request).
    Fetch,
    /// A fetch that upgrades to a WebSocket whose connection stays on the
    /// sending node: `body` is a `socket_wire::WireUpgrade`.
    Upgrade,
    /// A typed method (`Stub::ask`): `body` is a [`WireMethod`].
    Method,
    /// A step of a shard's hand-off to the receiver (`ns` and `id` are
    /// empty): `body` is a `handoff_wire::WireHandOff`.
    HandOff,
}

/// A typed method on the wire: its name ([`Method::name`](crate::Method::name))
/// and its request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireMethod {
    pub(crate) method: String,
    pub(crate) body: Box<RawValue>,
}

/// One event sent to the node that owns the object's shard.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireRequest {
    /// Matches the reply to the request on this stream.
    pub(crate) seq: u64,
    pub(crate) ns: String,
    /// The object id, 64 hex digits (its namespace MAC is checked).
    pub(crate) id: String,
    pub(crate) shard: u32,
    /// The owner's epoch as the sender knew it: a stale one is answered
    /// "moved".
    pub(crate) epoch: u64,
    pub(crate) kind: Kind,
    /// The call chain (ids in hex, outermost first), for cycle detection.
    pub(crate) chain: Vec<String>,
    pub(crate) body: Box<RawValue>,
}

/// Why a request was not answered with a value. Mirrors the runtime's
/// errors, so the caller gets the same `Error` variants as on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Refusal {
    Overloaded {
        capacity: usize,
    },
    Reset {
        cause: String,
    },
    DeadlineExceeded {
        deadline_ms: u64,
    },
    CallCycle,
    ShuttingDown,
    NotImplemented {
        handler: String,
    },
    /// The receiver does not own the shard (at that epoch); `owner` does.
    Moved {
        owner: String,
        epoch: u64,
    },
    /// Nobody may serve the shard now.
    Unavailable {
        reason: String,
    },
    /// Anything else (a bad id, an unknown namespace, a body that does not
    /// decode), as text.
    Failed {
        message: String,
    },
}

/// The answer to one [`WireRequest`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireReply {
    pub(crate) seq: u64,
    /// Present, even as `null` (a reply of `()` or `None`), means success.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) ok: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) err: Option<Refusal>,
}

/// A field that is there, whatever its value (`null` included): plain
/// `Option` would read `"ok": null` as absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl WireReply {
    pub(crate) fn new(seq: u64, result: Result<Box<RawValue>, Refusal>) -> WireReply {
        match result {
            Ok(v) => WireReply {
                seq,
                ok: Some(v),
                err: None,
            },
            Err(e) => WireReply {
                seq,
                ok: None,
                err: Some(e),
            },
        }
    }

    /// The result; a reply with neither or both parts is malformed.
    pub(crate) fn into_result(self) -> Result<Result<Box<RawValue>, Refusal>, WireError> {
        match (self.ok, self.err) {
            (Some(v), None) => Ok(Ok(v)),
            (None, Some(e)) => Ok(Err(e)),
            _ => Err(WireError::Malformed(
                "a reply needs exactly one of `ok` and `err`".into(),
            )),
        }
    }
}

/// A frame that cannot be read. The connection it came on is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("cluster frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed cluster frame: {0}")]
    Malformed(String),
}

/// One message, framed.
///
/// # Errors
///
/// The message does not serialise or is over [`MAX_FRAME`].
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    // `len <= MAX_FRAME` fits in 32 bits.
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// The first message in `buf`: `Ok(None)` when more bytes are needed,
/// else the message and the bytes it used.
///
/// # Errors
///
/// A length over [`MAX_FRAME`], or a body that is not the message.
pub(crate) fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, WireError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(head);
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let msg = serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok(Some((msg, 4 + len)))
}

/// The fuzz body for the cluster's decoders (`objects::testing::cluster_frames`): any bytes, read as a stream
/// of requests and as a stream of replies, never panic; whatever decodes
/// encodes back to the same frame.
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
pub(crate) fn fuzz_frames(data: &[u8]) {
    fn stream<T: Serialize + DeserializeOwned>(mut data: &[u8]) {
        while let Ok(Some((msg, used))) = decode::<T>(data) {
            let again = encode(&msg).expect("a decoded frame encodes");
            let (back, n) = decode::<T>(&again)
                .expect("an encoded frame decodes")
                .expect("complete");
            assert_eq!(n, again.len());
            assert_eq!(encode(&back).expect("encodes"), again);
            data = &data[used..];
        }
    }
    stream::<WireRequest>(data);
    // A typed method's body is decoded by the owner: it round-trips too.
    let mut rest = data;
    while let Ok(Some((req, used))) = decode::<WireRequest>(rest) {
        if req.kind == Kind::Method
            && let Ok(m) = serde_json::from_str::<WireMethod>(req.body.get())
        {
            let again = serde_json::to_string(&m).expect("a decoded method encodes");
            let back: WireMethod = serde_json::from_str(&again).expect("and decodes");
            assert_eq!((&back.method, back.body.get()), (&m.method, m.body.get()));
        }
        rest = &rest[used..];
    }
    stream::<WireReply>(data);
    if let Ok(Some((reply, _))) = decode::<WireReply>(data) {
        let _ = reply.into_result();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> WireRequest {
        WireRequest {
            seq: 7,
            ns: "rooms".into(),
            id: "ab".repeat(32),
            shard: 3,
            epoch: 2,
            kind: Kind::Call,
            chain: vec!["cd".repeat(32)],
            body: RawValue::from_string("{\"add\":1}".into()).expect("json"),
        }
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let a = encode(&request()).expect("encode");
        let b = encode(&WireReply::new(
            7,
            Err(Refusal::Moved {
                owner: "n2".into(),
                epoch: 4,
            }),
        ))
        .expect("encode");
        for cut in 0..a.len() {
            assert!(decode::<WireRequest>(&a[..cut]).expect("prefix").is_none());
        }
        let (r, used) = decode::<WireRequest>(&a).expect("ok").expect("whole");
        assert_eq!(used, a.len());
        assert_eq!((r.seq, r.body.get()), (7, "{\"add\":1}"));
        let (rep, _) = decode::<WireReply>(&b).expect("ok").expect("whole");
        assert_eq!(
            rep.into_result().expect("one part").err(),
            Some(Refusal::Moved {
                owner: "n2".into(),
                epoch: 4
            })
        );
        fuzz_frames(&[a.clone(), b.clone()].concat());
    }

    #[test]
    fn a_null_reply_is_a_reply() {
        // A call whose reply is `()` or `None` answers `null`.
        let null = RawValue::from_string("null".into()).expect("json");
        let frame = encode(&WireReply::new(3, Ok(null))).expect("encode");
        let (rep, _) = decode::<WireReply>(&frame).expect("ok").expect("whole");
        let ok = rep.into_result().expect("one part").expect("a success");
        assert_eq!(ok.get(), "null");
        // Neither part, or both, is still malformed.
        for bad in [
            r#"{"seq":1}"#,
            r#"{"seq":1,"ok":null,"err":{"refusal":"call_cycle"}}"#,
        ] {
            let rep: WireReply = serde_json::from_str(bad).expect("parses");
            assert!(rep.into_result().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_typed_method_travels_by_name() {
        let mut r = request();
        r.kind = Kind::Method;
        r.body =
            RawValue::from_string(r#"{"method":"app::Join","body":["ada"]}"#.into()).expect("json");
        let frame = encode(&r).expect("encode");
        let (back, _) = decode::<WireRequest>(&frame).expect("ok").expect("whole");
        assert_eq!(back.kind, Kind::Method);
        let m: WireMethod = serde_json::from_str(back.body.get()).expect("method");
        assert_eq!(
            (m.method.as_str(), m.body.get()),
            ("app::Join", r#"["ada"]"#)
        );
        assert!(serde_json::from_str::<WireMethod>(r#"{"method":"x"}"#).is_err());
        // The same frame is the fuzz seed `request-method`.
        fuzz_frames(&frame);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode::<WireRequest>(&huge),
            Err(WireError::TooLarge(n)) if n == MAX_FRAME + 1
        ));
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{x}");
        assert!(matches!(
            decode::<WireRequest>(&junk),
            Err(WireError::Malformed(_))
        ));
        let neither = encode(&serde_json::json!({"seq": 1})).expect("encode");
        let (r, _) = decode::<WireReply>(&neither).expect("ok").expect("whole");
        assert!(r.into_result().is_err());
        fuzz_frames(&junk);
        fuzz_frames(&[0xff; 9]);
    }
}

/// An HTTP request or response as it crosses between nodes: method (or
/// status), URI, headers and body (base64). Extensions do not cross, so a
/// WebSocket upgrade cannot be forwarded this way.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireHttp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

fn wire_headers(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                data_encoding::BASE64.encode(v.as_bytes()),
            )
        })
        .collect()
}

fn read_headers(pairs: Vec<(String, String)>, into: &mut http::HeaderMap) -> Result<(), String> {
    for (k, v) in pairs {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let raw = data_encoding::BASE64
            .decode(v.as_bytes())
            .map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_bytes(&raw).map_err(|e| e.to_string())?;
        into.append(name, value);
    }
    Ok(())
}

impl WireHttp {
    pub(crate) fn from_request(r: &crate::http::Request) -> WireHttp {
        WireHttp {
            method: Some(r.method().as_str().to_string()),
            uri: Some(r.uri().to_string()),
            status: None,
            headers: wire_headers(r.headers()),
            body: data_encoding::BASE64.encode(r.body()),
        }
    }

    pub(crate) fn from_response(r: &crate::http::Response) -> WireHttp {
        WireHttp {
            method: None,
            uri: None,
            status: Some(r.status().as_u16()),
            headers: wire_headers(r.headers()),
            body: data_encoding::BASE64.encode(r.body()),
        }
    }

    fn body(&self) -> Result<bytes::Bytes, String> {
        data_encoding::BASE64
            .decode(self.body.as_bytes())
            .map(bytes::Bytes::from)
            .map_err(|e| e.to_string())
    }

    /// # Errors
    ///
    /// A missing or invalid method or URI, a bad header, bad base64.
    pub(crate) fn into_request(self) -> Result<crate::http::Request, String> {
        let body = self.body()?;
        let mut req = http::Request::new(body);
        let method = self.method.ok_or("a request needs a method")?;
        *req.method_mut() =
            http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        *req.uri_mut() = self
            .uri
            .ok_or("a request needs a uri")?
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        read_headers(self.headers, req.headers_mut())?;
        Ok(req)
    }

    /// # Errors
    ///
    /// A missing or invalid status, a bad header, bad base64.
    pub(crate) fn into_response(self) -> Result<crate::http::Response, String> {
        let body = self.body()?;
        let mut resp = http::Response::new(body);
        *resp.status_mut() =
            http::StatusCode::from_u16(self.status.ok_or("a response needs a status")?)
                .map_err(|e| e.to_string())?;
        read_headers(self.headers, resp.headers_mut())?;
        Ok(resp)
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use proptest::prelude::*;

    fn reply(seq: u64, n: u8) -> WireReply {
        let result = match n % 3 {
            0 => Ok(RawValue::from_string(format!("[{n},\"x\"]")).expect("json")),
            1 => Err(Refusal::Moved {
                owner: format!("n{n}"),
                epoch: u64::from(n),
            }),
            _ => Err(Refusal::Reset {
                cause: "é\u{0}\"".repeat(usize::from(n)),
            }),
        };
        WireReply::new(seq, result)
    }

    proptest! {
        /// A stream of frames read in chunks of any sizes (as QUIC hands
        /// them over) decodes to the same messages, in order.
        #[test]
        fn chunked_streams_decode_to_the_frames_sent(
            kinds in proptest::collection::vec(any::<u8>(), 0..20),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let sent: Vec<WireReply> = kinds.iter().enumerate().map(|(i, n)| reply(i as u64, *n)).collect();
            let mut bytes = Vec::new();
            for r in &sent {
                bytes.extend(encode(r).expect("encode"));
            }
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < bytes.len() {
                let end = (at + cut.next().copied().unwrap_or(1)).min(bytes.len());
                buf.extend_from_slice(&bytes[at..end]);
                at = end;
                while let Some((r, used)) = decode::<WireReply>(&buf).expect("valid") {
                    buf.drain(..used);
                    got.push(r);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got.len(), sent.len());
            for (g, s) in got.into_iter().zip(sent) {
                prop_assert_eq!(g.seq, s.seq);
                let (g, s) = (g.into_result().expect("one part"), s.into_result().expect("one part"));
                match (g, s) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a.get(), b.get()),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    _ => prop_assert!(false, "ok and err swapped"),
                }
            }
        }

        /// Arbitrary bytes never panic the decoders.
        #[test]
        fn any_bytes_are_safe(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_frames(&data);
        }
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;

    #[test]
    fn requests_and_responses_cross_whole() {
        let req = http::Request::post("/rooms/x?y=1")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(bytes::Bytes::from_static(b"\\x00hi"))
            .expect("request");
        let back = WireHttp::from_request(&req)
            .into_request()
            .expect("decodes");
        assert_eq!(back.method(), "POST");
        assert_eq!(back.uri(), "/rooms/x?y=1");
        assert_eq!(back.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(back.body(), req.body());
        let resp = http::Response::builder()
            .status(418)
            .body(bytes::Bytes::from_static(b"tea"))
            .expect("response");
        let back = WireHttp::from_response(&resp)
            .into_response()
            .expect("decodes");
        assert_eq!(
            (back.status().as_u16(), back.body().as_ref()),
            (418, &b"tea"[..])
        );
        let mut bad = WireHttp::from_response(&resp);
        bad.status = Some(1000);
        assert!(bad.into_response().is_err());
    }
}
