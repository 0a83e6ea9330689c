//! Dialect C, the workshop chat: name and room come from the query string,
//! messages are JSON `{"message": ...}` objects.
//!
//! Unlike A, a C client does not get its own messages echoed, gets the
//! backlog without a roster, and sees join and leave notices as chat-like
//! objects without a timestamp.
//!
//! ```
//! use chat_demo::protocol::c;
//!
//! assert_eq!(c::name_from_query(Some("  bob ")), Ok("bob".to_owned()));
//! assert_eq!(c::room_from_query(None), "default");
//! assert_eq!(c::decode(r#"{"message":"  hi  "}"#), Ok(Some("hi".to_owned())));
//! assert_eq!(c::decode("not json"), Ok(None));
//! assert_eq!(c::encode_joined("bob"), r#"{"message":"joined the chat","name":"bob"}"#);
//! ```

use serde::Serialize;
use serde_json::Value;

use super::a::{self, Extensions};
use super::time::iso8601;
use super::{
    ChatMessage, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, ProtocolError, exceeds_chars, to_json,
};

/// The name of a client whose query gives none (or only whitespace).
pub const DEFAULT_NAME: &str = "Anonymous";

/// The room of a client whose query gives none (or an empty one).
pub const DEFAULT_ROOM: &str = "default";

/// The user name from the (already percent-decoded) `name` query value:
/// trimmed; missing or blank gives [`DEFAULT_NAME`].
///
/// # Errors
///
/// [`ProtocolError::NameTooLong`] for a trimmed name over
/// [`MAX_NAME_CHARS`] characters. The name is known before the upgrade, so
/// the caller may refuse the upgrade rather than close with
/// [`ProtocolError::closes_socket`].
pub fn name_from_query(raw: Option<&str>) -> Result<String, ProtocolError> {
    let name = raw.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Ok(DEFAULT_NAME.to_owned());
    }
    if exceeds_chars(name, MAX_NAME_CHARS) {
        return Err(ProtocolError::NameTooLong);
    }
    Ok(name.to_owned())
}

/// The room name from the (already percent-decoded) `room` query value:
/// missing or empty gives [`DEFAULT_ROOM`]. Not trimmed, as in the seed;
/// the caller then classifies it with [`parse_room`](super::parse_room).
pub fn room_from_query(raw: Option<&str>) -> &str {
    match raw {
        Some(room) if !room.is_empty() => room,
        _ => DEFAULT_ROOM,
    }
}

/// The extensions a C client opts in to with its `ext` query value, a
/// comma-separated list: `presence` and `typing` (the others are dialect
/// A's; unknown names are ignored, as in A's hello).
pub fn ext_from_query(raw: Option<&str>) -> Extensions {
    let mut ext = Extensions::default();
    for name in raw.unwrap_or_default().split(',').map(str::trim) {
        match name {
            a::EXT_PRESENCE => ext.presence = true,
            a::EXT_TYPING => ext.typing = true,
            _ => {}
        }
    }
    ext
}

/// Whether a frame from a C client is the typing signal `{"typing":true}`
/// (only read from clients that opted in to `typing`).
pub fn is_typing(text: &str) -> bool {
    matches!(
        serde_json::from_str::<Value>(text),
        Ok(Value::Object(object)) if object.get("typing") == Some(&Value::Bool(true))
    )
}

/// Decodes one text frame from a C client into the trimmed message text.
///
/// As in the seed's server, everything that is not usable text is silently
/// ignored (`Ok(None)`: nothing stored, broadcast or answered): invalid JSON
/// (including JSON nested past the parser's recursion limit), JSON that is
/// not an object, a missing or non-string `message`, and a message that is
/// empty after trimming.
///
/// # Errors
///
/// [`ProtocolError::MessageTooLong`] for a message over
/// [`MAX_MESSAGE_CHARS`] characters after trimming; the socket stays open.
pub fn decode(text: &str) -> Result<Option<String>, ProtocolError> {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text) else {
        return Ok(None);
    };
    let Some(Value::String(message)) = object.remove("message") else {
        return Ok(None);
    };
    let message = message.trim();
    if message.is_empty() {
        return Ok(None);
    }
    if exceeds_chars(message, MAX_MESSAGE_CHARS) {
        return Err(ProtocolError::MessageTooLong);
    }
    Ok(Some(message.to_owned()))
}

/// `{"message":..,"name":..,"timestamp":..,"serverTime":..}`: one chat
/// message, live or from the backlog.
///
/// `serverTime` is the message's timestamp (the server's clock when it was
/// stored) in ISO 8601, as the workshop's first task adds it; the
/// original page ignores fields it does not know.
pub fn encode_chat(message: &ChatMessage) -> String {
    #[derive(Serialize)]
    struct Chat<'a> {
        message: &'a str,
        name: &'a str,
        timestamp: u64,
        #[serde(rename = "serverTime")]
        server_time: String,
    }
    to_json(&Chat {
        message: &message.message,
        name: &message.name,
        timestamp: message.timestamp,
        server_time: iso8601(message.timestamp),
    })
}

/// `{"message":"joined the chat","name":..}`, to the others when a C client
/// connects.
pub fn encode_joined(name: &str) -> String {
    notice("joined the chat", name)
}

/// `{"message":"left the chat","name":..}`, to the others when a C client
/// disconnects.
pub fn encode_left(name: &str) -> String {
    notice("left the chat", name)
}

/// `{"name":"Error","message":"<text>","timestamp":<ms>}`, e.g. with
/// [`ProtocolError::client_text`] or
/// [`RATE_LIMITED`](super::limit::RATE_LIMITED).
///
/// The seed's page renders every frame as `name: message` (and shows the
/// name `Error` in red), so an error is shaped like a chat line from a user
/// called `Error`; an `{"error": ...}` object would show as
/// "undefined: undefined". `now_ms` is the server's clock when the error
/// was raised (not a room timestamp: errors are not stored).
pub fn encode_error(text: &str, now_ms: u64) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        name: &'a str,
        message: &'a str,
        timestamp: u64,
    }
    to_json(&Error {
        name: ERROR_NAME,
        message: text,
        timestamp: now_ms,
    })
}

/// The sender name of an error frame ([`encode_error`]).
pub const ERROR_NAME: &str = "Error";

fn notice(message: &str, name: &str) -> String {
    #[derive(Serialize)]
    struct Notice<'a> {
        message: &'a str,
        name: &'a str,
    }
    to_json(&Notice { message, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_query() {
        assert_eq!(name_from_query(Some("bob")), Ok("bob".into()));
        assert_eq!(
            name_from_query(Some("  bob smith \t")),
            Ok("bob smith".into())
        );
        assert_eq!(name_from_query(None), Ok(DEFAULT_NAME.into()));
        assert_eq!(name_from_query(Some("")), Ok("Anonymous".into()));
        assert_eq!(name_from_query(Some("   ")), Ok("Anonymous".into()));
    }

    #[test]
    fn name_length_boundaries() {
        let exactly = "c".repeat(32);
        assert_eq!(name_from_query(Some(&exactly)), Ok(exactly.clone()));
        // Trimmed before counting.
        assert_eq!(
            name_from_query(Some(&format!("  {exactly}  "))),
            Ok(exactly)
        );
        assert_eq!(
            name_from_query(Some(&"c".repeat(33))),
            Err(ProtocolError::NameTooLong)
        );
        let umlauts = "ü".repeat(32);
        assert_eq!(name_from_query(Some(&umlauts)), Ok(umlauts));
        assert_eq!(
            name_from_query(Some(&"ü".repeat(33))),
            Err(ProtocolError::NameTooLong)
        );
    }

    #[test]
    fn extensions_from_the_query() {
        assert_eq!(ext_from_query(None), Extensions::default());
        let both = ext_from_query(Some("presence, typing,history,junk"));
        assert!(both.presence && both.typing);
        assert!(!both.history, "A's extensions are not C's");
        assert_eq!(ext_from_query(Some("")), Extensions::default());
        assert!(is_typing(r#"{"typing":true}"#));
        assert!(!is_typing(r#"{"typing":false}"#) && !is_typing("typing"));
    }

    #[test]
    fn rooms_from_the_query() {
        assert_eq!(room_from_query(Some("lobby")), "lobby");
        assert_eq!(room_from_query(None), DEFAULT_ROOM);
        assert_eq!(room_from_query(Some("")), "default");
        assert_eq!(room_from_query(Some(" x ")), " x ");
    }

    #[test]
    fn messages_are_trimmed() {
        assert_eq!(decode(r#"{"message":"hi"}"#), Ok(Some("hi".into())));
        assert_eq!(
            decode(r#"{"message":"  hi there \n"}"#),
            Ok(Some("hi there".into()))
        );
        assert_eq!(
            decode(r#"{"message":"hi","name":"spoof"}"#),
            Ok(Some("hi".into()))
        );
    }

    #[test]
    fn unusable_frames_are_ignored() {
        for text in [
            "",
            "not json",
            "{",
            "null",
            "42",
            r#""hi""#,
            r#"["hi"]"#,
            "{}",
            r#"{"message":null}"#,
            r#"{"message":42}"#,
            r#"{"message":true}"#,
            r#"{"message":{"text":"hi"}}"#,
            r#"{"message":""}"#,
            r#"{"message":"   \t\n"}"#,
        ] {
            assert_eq!(decode(text), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn deeply_nested_json_is_ignored() {
        let deep = "[".repeat(100_000);
        assert_eq!(decode(&deep), Ok(None));
        let inside = format!(r#"{{"message":"hi","junk":{deep}"#);
        assert_eq!(decode(&inside), Ok(None));
    }

    #[test]
    fn message_length_counts_after_trimming() {
        let exactly = "m".repeat(256);
        assert_eq!(
            decode(&format!(r#"{{"message":"  {exactly}  "}}"#)),
            Ok(Some(exactly.clone()))
        );
        assert_eq!(
            decode(&format!(r#"{{"message":"{}"}}"#, "m".repeat(257))),
            Err(ProtocolError::MessageTooLong)
        );
        let emoji = "😀".repeat(256);
        assert_eq!(
            decode(&format!(r#"{{"message":"{emoji}"}}"#)),
            Ok(Some(emoji))
        );
        assert_eq!(
            decode(&format!(r#"{{"message":"{}"}}"#, "😀".repeat(257))),
            Err(ProtocolError::MessageTooLong)
        );
    }

    #[test]
    fn encoders_produce_the_spec_shapes() {
        let message = ChatMessage {
            name: "bob".into(),
            message: "hi".into(),
            timestamp: 1_700_000_000_000,
            plain: true,
            ..ChatMessage::default()
        };
        assert_eq!(
            encode_chat(&message),
            r#"{"message":"hi","name":"bob","timestamp":1700000000000,"serverTime":"2023-11-14T22:13:20.000Z"}"#
        );
        assert_eq!(
            encode_joined("bob"),
            r#"{"message":"joined the chat","name":"bob"}"#
        );
        assert_eq!(
            encode_left("bob"),
            r#"{"message":"left the chat","name":"bob"}"#
        );
        assert_eq!(
            encode_error("Message too long.", 1_700_000_000_001),
            r#"{"name":"Error","message":"Message too long.","timestamp":1700000000001}"#
        );
    }

    #[test]
    fn hostile_text_round_trips() {
        let name = r#"q"b\s<script>alert('x')</script>🎉"#;
        let message = "\"quoted\" \\ back\nslash 🦀 <b>bold</b>";
        let frame = serde_json::json!({ "message": message }).to_string();
        assert_eq!(decode(&frame), Ok(Some(message.to_owned())));
        let sent = ChatMessage {
            name: name.into(),
            message: message.into(),
            timestamp: 3,
            plain: false,
            ..ChatMessage::default()
        };
        let value: Value = serde_json::from_str(&encode_chat(&sent)).expect("valid JSON");
        assert_eq!(value["name"], name);
        assert_eq!(value["message"], message);
        assert_eq!(value["timestamp"], 3);
        for frame in [encode_joined(name), encode_left(name)] {
            let value: Value = serde_json::from_str(&frame).expect("valid JSON");
            assert_eq!(value["name"], name);
        }
    }
}
