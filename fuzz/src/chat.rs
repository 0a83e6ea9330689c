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
