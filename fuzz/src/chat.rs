//! Fuzz bodies for the chat demo's pure codecs: the three dialect
//! decoders, room names and the serde forms kept in attachments and
//! storage. Each asserts the documented contract, not only "no panic".

use chat_demo::protocol::a::{self, ClientFrame, Extensions};
use chat_demo::protocol::{
    self, ChatMessage, Dialect, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, MAX_ROOM_NAME_CHARS,
    PRIVATE_ROOM_ID_LEN, ProtocolError, RoomRef, b, c,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Every error has a client text that the dialect's error frame carries
/// intact, and only an over-long name closes the socket.
fn check_error(error: &ProtocolError) {
    let text = error.client_text();
    assert!(!text.is_empty());
    let frame: serde_json::Value =
        serde_json::from_str(&a::encode_error(text)).expect("A error frame is JSON");
    assert_eq!(frame["error"].as_str(), Some(text));
    assert_eq!(b::encode_error(text), text);
    let frame: serde_json::Value =
        serde_json::from_str(&c::encode_error(text, 1)).expect("C error frame is JSON");
    assert_eq!(frame["message"].as_str(), Some(text));
    assert_eq!(frame["name"].as_str(), Some(c::ERROR_NAME));
    match error.closes_socket() {
        Some(code) => {
            assert_eq!(*error, ProtocolError::NameTooLong);
            assert_eq!(code, 1009);
        }
        None => assert_ne!(*error, ProtocolError::NameTooLong),
    }
}

/// A message as every dialect would relay it, checked to decode back.
fn check_relay(name: &str, text: &str) {
    let message = ChatMessage {
        name: name.to_owned(),
        message: text.to_owned(),
        timestamp: 1_700_000_000_000,
        plain: false,
        ..ChatMessage::default()
    };
    let back: ChatMessage =
        serde_json::from_str(&a::encode_chat(&message)).expect("A chat frame is JSON");
    assert_eq!(back, message);
    let back: ChatMessage =
        serde_json::from_str(&c::encode_chat(&message)).expect("C chat frame is JSON");
    assert_eq!(back, message);
    assert_eq!(b::encode_chat(&message), format!("{name}: {text}"));
}

/// Dialect A: a frame before and after the hello.
pub fn decode_a(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match a::decode(text, false) {
        Ok(ClientFrame::Hello {
            name,
            ext,
            key,
            password,
        }) => {
            if let Some(password) = &password {
                assert!(chars(password) <= protocol::password::MAX_PASSWORD_CHARS);
            }
            if let Some(key) = &key {
                assert!(ext.dm, "a key is read only with dm");
                assert_eq!(protocol::dm::check_key(key), Ok(()));
            }
            assert!(!name.is_empty(), "a missing name becomes anonymous");
            assert!(chars(&name) <= MAX_NAME_CHARS, "{name:?}");
            check_relay(&name, "hello");
        }
        Ok(other) => panic!("before the hello only a hello decodes: {other:?}"),
        Err(error) => check_error(&error),
    }
    match a::decode(text, true) {
        Ok(ClientFrame::Message(message)) => {
            assert!(chars(&message) <= MAX_MESSAGE_CHARS);
            check_relay("alice", &message);
        }
        Ok(ClientFrame::HistoryRequest { before: _, limit }) => {
            assert!(limit <= a::HISTORY_PAGE_MAX, "limit {limit} is clamped");
        }
        Ok(ClientFrame::Reply { message, parent: _ }) => {
            assert!(chars(&message) <= MAX_MESSAGE_CHARS);
            check_relay("alice", &message);
        }
        Ok(ClientFrame::Search {
            query,
            terms,
            before: _,
            limit,
        }) => {
            assert!(chars(&query) <= protocol::search::MAX_QUERY_CHARS);
            assert!(!terms.is_empty() && terms.len() <= protocol::search::MAX_TERMS);
            assert!(limit <= protocol::search::SEARCH_PAGE_MAX);
            assert!(
                terms
                    .iter()
                    .all(|t| protocol::search::matches(&query, std::slice::from_ref(t))),
                "every term is a word of the query"
            );
        }
        Ok(ClientFrame::Dm { to, message }) => {
            assert!(!to.is_empty() && chars(&to) <= MAX_NAME_CHARS);
            assert!(!message.trim().is_empty() && chars(&message) <= MAX_MESSAGE_CHARS);
        }
        Ok(ClientFrame::Claim) => {
            assert!(text.contains("claim"), "{text:?}");
        }
        Ok(ClientFrame::SetTopic { token, topic }) => {
            assert!(!token.is_empty() && token.len() <= 128);
            assert_eq!(protocol::manage::check_topic(&topic), Ok(()));
        }
        Ok(ClientFrame::SetPassword { token, password }) => {
            assert!(!token.is_empty() && token.len() <= 128);
            assert!(password.is_empty() || protocol::password::check(&password).is_ok());
        }
        Ok(ClientFrame::Delete { token }) => {
            assert!(!token.is_empty() && token.len() <= 128);
        }
        Ok(ClientFrame::Typing) => {
            assert!(text.contains("typing"), "{text:?}");
        }
        Ok(ClientFrame::React {
            id: _,
            emoji,
            on: _,
        }) => {
            assert_eq!(protocol::reactions::check_emoji(&emoji), Ok(()));
            let mut reactions = protocol::reactions::Reactions::default();
            assert!(reactions.apply("alice", &emoji, true).is_ok());
            assert_eq!(reactions.users(&emoji), Some(&["alice".to_owned()][..]));
        }
        Ok(hello @ ClientFrame::Hello { .. }) => {
            panic!("after the hello no hello decodes: {hello:?}")
        }
        Err(error) => {
            assert_ne!(error, ProtocolError::NameTooLong);
            check_error(&error);
        }
    }
}

/// Dialect B: the text is the message, verbatim.
pub fn decode_b(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match b::decode(text) {
        Ok(Some(message)) => {
            assert_eq!(message, text, "kept verbatim");
            assert!(!message.trim().is_empty());
            assert!(chars(&message) <= MAX_MESSAGE_CHARS);
            let plain = ChatMessage {
                name: b::SENDER_NAME.to_owned(),
                message: message.clone(),
                timestamp: 1,
                plain: true,
                ..ChatMessage::default()
            };
            assert_eq!(b::encode_chat(&plain), message);
            let stored = serde_json::to_string(&plain).expect("serialises");
            let back: ChatMessage = serde_json::from_str(&stored).expect("stored form reads back");
            assert_eq!(back, plain);
        }
        Ok(None) => assert!(text.trim().is_empty()),
        Err(error) => {
            assert_eq!(error, ProtocolError::MessageTooLong);
            assert!(chars(text) > MAX_MESSAGE_CHARS);
            check_error(&error);
        }
    }
}

/// Dialect C: the frame, and the same bytes as the query's name and room.
pub fn decode_c(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match c::decode(text) {
        Ok(Some(message)) => {
            assert_eq!(message, message.trim());
            assert!(!message.is_empty());
            assert!(chars(&message) <= MAX_MESSAGE_CHARS);
            check_relay("cee", &message);
        }
        Ok(None) => {}
        Err(error) => {
            assert_eq!(error, ProtocolError::MessageTooLong);
            check_error(&error);
        }
    }
    match c::name_from_query(Some(text)) {
        Ok(name) => {
            assert_eq!(name, name.trim());
            assert!(!name.is_empty());
            assert!(chars(&name) <= MAX_NAME_CHARS);
            if !text.trim().is_empty() {
                assert_eq!(name, text.trim());
            }
        }
        Err(error) => {
            assert_eq!(error, ProtocolError::NameTooLong);
            assert!(chars(text.trim()) > MAX_NAME_CHARS);
        }
    }
    let room = c::room_from_query(Some(text));
    if text.is_empty() {
        assert_eq!(room, c::DEFAULT_ROOM);
    } else {
        assert_eq!(room, text);
    }
    // The `ext` query value: only C's two extensions, each only if named.
    let ext = c::ext_from_query(Some(text));
    assert!(!ext.history && !ext.reactions && !ext.threads && !ext.search && !ext.dm);
    assert!(!ext.presence || text.contains("presence"));
    assert!(!ext.typing || text.contains("typing"));
    if c::is_typing(text) {
        assert!(text.contains("typing"));
        assert_eq!(
            c::decode(text),
            Ok(None),
            "a typing signal is not a message"
        );
    }
}

/// Room names from a URL path: private id, name, or too long.
pub fn parse_room(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::parse_room(text) {
        Ok(RoomRef::Private(hex)) => {
            assert_eq!(hex, text);
            assert_eq!(hex.len(), PRIVATE_ROOM_ID_LEN);
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        Ok(RoomRef::Named(name)) => {
            assert_eq!(name, text);
            assert!(chars(&name) <= MAX_ROOM_NAME_CHARS);
        }
        Err(error) => {
            assert!(chars(text) > MAX_ROOM_NAME_CHARS);
            assert_eq!(error.to_string(), "Name too long");
        }
    }
    assert_eq!(
        protocol::parse_room(text),
        protocol::parse_room(text),
        "deterministic"
    );
}

/// `T` decoded from `data`, if it decodes, must re-encode to something
/// that decodes to the same value.
fn round_trip<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let json = serde_json::to_string(&value).expect("serialises");
        let back: T = serde_json::from_str(&json).expect("re-decodes");
        assert_eq!(back, value, "{json}");
    }
}

/// The serde forms a socket's attachment is built from (the session type
/// itself is private to the room: its dialect and extensions are public),
/// and the stored history record.
pub fn attachment(data: &[u8]) {
    round_trip::<Dialect>(data);
    round_trip::<Extensions>(data);
    round_trip::<ChatMessage>(data);
    round_trip::<(Dialect, Option<String>, Extensions, String)>(data);
}

/// Splits fuzz bytes into header lines `name: value` (invalid names and
/// values are skipped, as an HTTP parser would refuse them).
fn headers_from(text: &str) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// The client IP from trusted headers and its key. The first byte picks
/// the number of proxy hops and the IPv6 prefix length; the rest are
/// header lines. Contract: an `X-Forwarded-For` answer is the entry that
/// many places from the right (0 counts as 1), parsed as an address;
/// `CF-Connecting-IP` is read only from that header; the key of an IPv6
/// address is the same for every address of its prefix and ends in
/// `/prefix` (below 128); an IPv4 key is the address.
pub fn client_ip(data: &[u8]) {
    use chat_demo::{ClientIpHeader, ip_key};
    use std::net::IpAddr;
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let hops = usize::from(first & 0x07);
    let prefix = first >> 1; // 0..=127
    let headers = headers_from(&String::from_utf8_lossy(rest));
    assert_eq!(ClientIpHeader::None.read(&headers, hops), None);
    let entries: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    let all_text = headers
        .get_all("x-forwarded-for")
        .iter()
        .all(|v| v.to_str().is_ok());
    let expected = if all_text {
        entries
            .len()
            .checked_sub(hops.max(1))
            .and_then(|at| entries[at].trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
    } else {
        None
    };
    let got = ClientIpHeader::XForwardedFor.read(&headers, hops);
    assert_eq!(got, expected, "{entries:?} with {hops} hops");
    let cf = ClientIpHeader::CfConnectingIp.read(&headers, hops);
    if let Some(ip) = cf {
        let raw = headers
            .get("cf-connecting-ip")
            .expect("read from the header");
        let parsed: IpAddr = raw.to_str().expect("text").trim().parse().expect("an IP");
        assert_eq!(ip, parsed.to_canonical());
    }
    for ip in [got, cf].into_iter().flatten() {
        let key = ip_key(ip, prefix);
        match ip {
            IpAddr::V4(v4) => assert_eq!(key, v4.to_string()),
            IpAddr::V6(v6) => {
                // Flip the last bit: inside the prefix unless it is /128.
                let sibling = std::net::Ipv6Addr::from(u128::from(v6) ^ 1);
                let sibling_key = ip_key(IpAddr::V6(sibling), prefix);
                if sibling.to_canonical() == IpAddr::V6(sibling) {
                    assert_eq!(key, sibling_key, "one key per /{prefix}");
                }
                assert!(key.ends_with(&format!("/{prefix}")), "{key}");
            }
        }
    }
}

/// The origin policy over arbitrary `Origin` and `Host` headers. The first
/// byte picks the request's scheme and whether `*` or an extra origin is
/// configured; the rest are header lines. Contract: no panic; no `Origin`
/// is allowed; two `Origin` headers are refused; `*` allows every single
/// origin; with no extra origins, an allowed origin that is not loopback
/// names the request's scheme and the `Host` header's host.
pub fn origin(data: &[u8]) {
    use chat_demo::OriginPolicy;
    use chat_demo::origin::Scheme;
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let scheme = if first & 1 == 0 {
        Scheme::Http
    } else {
        Scheme::Https
    };
    let headers = headers_from(&String::from_utf8_lossy(rest));
    let plain = OriginPolicy::new(&[]);
    let origins: Vec<&http::HeaderValue> = headers.get_all(http::header::ORIGIN).iter().collect();
    let verdict = plain.check(&headers, scheme);
    match origins.len() {
        0 => assert_eq!(verdict, Ok(())),
        1 => {}
        _ => assert!(verdict.is_err(), "two Origin headers"),
    }
    if origins.len() == 1 {
        let any = OriginPolicy::new(&["*".into()]);
        assert_eq!(any.check(&headers, scheme), Ok(()));
        if verdict.is_ok() {
            let origin = origins[0].to_str().expect("an allowed origin is text");
            let origin = origin.trim().to_ascii_lowercase();
            // The host part as the policy reads it: after the scheme, a
            // trailing '/' and surrounding spaces dropped, before the port.
            let bare = origin.strip_suffix('/').unwrap_or(&origin);
            let rest = bare.split_once("://").map_or("", |(_, r)| r.trim());
            let host_part = match rest.strip_prefix('[') {
                Some(inside) => inside
                    .split_once(']')
                    .map_or(rest, |(h, _)| &rest[..h.len() + 2]),
                None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
            };
            let loopback = ["localhost", "127.0.0.1", "[::1]"].contains(&host_part);
            if !loopback {
                let want = match scheme {
                    Scheme::Http => ["http://", "ws://"],
                    Scheme::Https => ["https://", "wss://"],
                };
                assert!(
                    want.iter().any(|w| origin.starts_with(w)),
                    "{origin} allowed for {scheme:?}"
                );
                let host = headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .expect("a same-origin match needs a Host")
                    .trim()
                    .to_ascii_lowercase();
                let host_name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
                assert!(origin.contains(host_name), "{origin} vs {host}");
            }
        }
    }
    // Deterministic.
    assert_eq!(plain.check(&headers, scheme), verdict);
}
