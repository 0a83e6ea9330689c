//! Dialect A, the Edge Chat Demo: one JSON object per text frame.
//!
//! A session starts unnamed; its first frame is the hello `{"name": ...}`,
//! every later one a chat message `{"message": ...}` or, with the history
//! extension, a history request. See [`decode`] for the exact rules and
//! the `encode_*` functions for every frame the server sends.
//!
//! # Extensions
//!
//! A client opts in by listing extension names in its hello:
//! `{"name":"alice","ext":["presence","history"]}`. Extension frames sent
//! by the server ([`encode_presence`], [`encode_history_page`]) never carry
//! a top-level `timestamp`, `error`, `joined`, `quit` or `ready` field, so a
//! compat client that received one anyway would ignore it.
//!
//! ```
//! use chat_demo::protocol::a::{self, ClientFrame, Extensions};
//!
//! let hello = a::decode(r#"{"name":"alice","ext":["history"]}"#, false)?;
//! assert_eq!(
//!     hello,
//!     ClientFrame::Hello {
//!         name: "alice".to_owned(),
//!         ext: Extensions { presence: false, history: true },
//!     },
//! );
//! assert_eq!(a::encode_joined("alice"), r#"{"joined":"alice"}"#);
//! # Ok::<(), chat_demo::protocol::ProtocolError>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ChatMessage, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, ProtocolError, exceeds_chars, to_json,
};

/// The name of a client whose hello has no usable name.
pub const DEFAULT_NAME: &str = "anonymous";

/// Messages per history page when the request gives no `limit`.
pub const HISTORY_PAGE_DEFAULT: u32 = 50;

/// Most messages per history page; larger requested limits are clamped.
pub const HISTORY_PAGE_MAX: u32 = 100;

/// Extension name that turns on presence frames ([`encode_presence`]).
pub const EXT_PRESENCE: &str = "presence";

/// Extension name that turns on history paging ([`ClientFrame::HistoryRequest`]).
pub const EXT_HISTORY: &str = "history";

/// A decoded client frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// The first frame of a session: the user's name and the extensions the
    /// client asked for.
    Hello {
        /// At most [`MAX_NAME_CHARS`] characters; [`DEFAULT_NAME`] when the
        /// client gave none.
        name: String,
        /// Extensions the client opted in to.
        ext: Extensions,
    },
    /// A chat message, at most [`MAX_MESSAGE_CHARS`] characters. May be
    /// empty: the seed relays empty messages and so does this decoder.
    Message(String),
    /// Extension `history`: a page of stored messages older than `before`.
    ///
    /// Decoded whether or not the session opted in; the caller decides
    /// whether to serve it.
    HistoryRequest {
        /// Only messages with a timestamp strictly below this (ms since the
        /// epoch); typically the oldest timestamp the client has seen.
        before: u64,
        /// Most messages wanted, at most [`HISTORY_PAGE_MAX`]. Zero is
        /// allowed: the answer is an empty page whose `more` still tells
        /// whether older messages exist.
        limit: u32,
    },
}

/// The extensions a dialect-A client opted in to in its hello. Kept in the
/// socket's attachment next to the name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extensions {
    /// Send [`encode_presence`] frames when the room's population changes.
    pub presence: bool,
    /// The client may send [`ClientFrame::HistoryRequest`]s.
    pub history: bool,
}

/// Decodes one text frame from a dialect-A client.
///
/// `named` tells whether the session has already named itself: before that
/// the frame is the hello, after it a message or a history request.
///
/// The hello is an object whose `name` is, as in the seed's
/// `"" + (data.name || "anonymous")`:
/// - a string, kept as it is (not trimmed); the empty string becomes
///   [`DEFAULT_NAME`];
/// - missing, `null`, `false` or `0` (JavaScript's falsy values):
///   [`DEFAULT_NAME`];
/// - `true` or a non-zero number: its JavaScript string form (`"true"`,
///   `"1.5"`, `"1e+21"`);
/// - an object or an array: refused ([`ProtocolError::InvalidName`]), where
///   JavaScript would have produced `[object Object]` or a comma list.
///
/// Its optional `ext` is an array of extension names ([`EXT_PRESENCE`],
/// [`EXT_HISTORY`]); unknown names and non-string entries are ignored so
/// that newer clients work with older servers.
///
/// After the hello, an object with a non-null `message` is a
/// [`ClientFrame::Message`]: a string as it is (not trimmed, may be empty),
/// a number or boolean in its JavaScript string form. Otherwise a non-null
/// `history` is a [`ClientFrame::HistoryRequest`]. Other fields are ignored.
///
/// # Errors
///
/// - [`ProtocolError::InvalidJson`] for text that is not JSON or nests
///   deeper than 128 levels (the parser's recursion limit, which keeps
///   hostile input from overflowing the stack);
/// - [`ProtocolError::NotAnObject`] for JSON that is not an object;
/// - [`ProtocolError::NameTooLong`] for a name over [`MAX_NAME_CHARS`]
///   characters (the caller then closes the socket, see
///   [`ProtocolError::closes_socket`]);
/// - [`ProtocolError::InvalidName`], [`ProtocolError::InvalidExtensions`]
///   for a malformed hello;
/// - [`ProtocolError::MessageTooLong`] for a message over
///   [`MAX_MESSAGE_CHARS`] characters;
/// - [`ProtocolError::MissingMessage`] for an object with neither
///   `message` nor `history`, or with `"message": null`;
/// - [`ProtocolError::InvalidMessage`] for an object or array `message`;
/// - [`ProtocolError::InvalidHistoryRequest`] for a malformed `history`.
pub fn decode(text: &str, named: bool) -> Result<ClientFrame, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|error| ProtocolError::InvalidJson {
        detail: error.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    if named {
        decode_after_hello(&object)
    } else {
        decode_hello(&object)
    }
}

fn decode_hello(object: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    let name = match object.get("name") {
        None => DEFAULT_NAME.to_owned(),
        Some(value) if is_js_falsy(value) => DEFAULT_NAME.to_owned(),
        Some(value) => js_string(value).ok_or(ProtocolError::InvalidName)?,
    };
    if exceeds_chars(&name, MAX_NAME_CHARS) {
        return Err(ProtocolError::NameTooLong);
    }
    let ext = match object.get("ext") {
        None | Some(Value::Null) => Extensions::default(),
        Some(Value::Array(names)) => {
            let mut ext = Extensions::default();
            for name in names.iter().filter_map(Value::as_str) {
                match name {
                    EXT_PRESENCE => ext.presence = true,
                    EXT_HISTORY => ext.history = true,
                    _ => {}
                }
            }
            ext
        }
        Some(_) => return Err(ProtocolError::InvalidExtensions),
    };
    Ok(ClientFrame::Hello { name, ext })
}

fn decode_after_hello(object: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    match object.get("message") {
        Some(Value::Null) | None => {}
        Some(value) => {
            let message = js_string(value).ok_or(ProtocolError::InvalidMessage)?;
            if exceeds_chars(&message, MAX_MESSAGE_CHARS) {
                return Err(ProtocolError::MessageTooLong);
            }
            return Ok(ClientFrame::Message(message));
        }
    }
    match object.get("history") {
        Some(Value::Null) | None => Err(ProtocolError::MissingMessage),
        Some(Value::Object(request)) => decode_history_request(request),
        Some(_) => Err(ProtocolError::InvalidHistoryRequest),
    }
}

fn decode_history_request(request: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    let before = request
        .get("before")
        .and_then(Value::as_u64)
        .ok_or(ProtocolError::InvalidHistoryRequest)?;
    let limit = match request.get("limit") {
        None | Some(Value::Null) => HISTORY_PAGE_DEFAULT,
        Some(value) => {
            let requested = value.as_u64().ok_or(ProtocolError::InvalidHistoryRequest)?;
            // Clamped in u64 first: any larger request just means "as many
            // as you will give me".
            u32::try_from(requested.min(u64::from(HISTORY_PAGE_MAX))).unwrap_or(HISTORY_PAGE_MAX)
        }
    };
    Ok(ClientFrame::HistoryRequest { before, limit })
}

/// JavaScript's `"" + value` for strings, numbers and booleans; `None` for
/// the values whose JavaScript form is not useful text (objects, arrays,
/// `null`).
fn js_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => number.as_f64().map(js_number),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether JavaScript treats the value as false in `value || fallback`.
fn is_js_falsy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(text) => text.is_empty(),
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::Bool(true) | Value::Array(_) | Value::Object(_) => false,
    }
}

/// JavaScript's `Number.prototype.toString()` for a finite number
/// (ECMAScript `Number::toString`, radix 10): shortest round-trip digits,
/// plain notation for exponents in -7..21, exponent notation otherwise.
fn js_number(number: f64) -> String {
    if number == 0.0 {
        // Also -0, which JavaScript prints as "0".
        return "0".to_owned();
    }
    let sign = if number < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the same shortest round-trip digits as JavaScript,
    // as `d[.ddd]e<exp>`.
    let scientific = format!("{:e}", number.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    // The value is 0.d1d2...dk × 10^n, in the spec's terms.
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(n - k).unwrap_or(0))
        )
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(usize::try_from(n).unwrap_or(0));
        format!("{whole}.{fraction}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat(usize::try_from(-n).unwrap_or(0)))
    } else {
        let exponent_sign = if n - 1 < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{fraction}e{exponent_sign}{}", (n - 1).abs())
    };
    format!("{sign}{body}")
}

/// A chat message as it goes on the wire: no `plain` flag.
#[derive(Serialize)]
struct WireChat<'a> {
    name: &'a str,
    message: &'a str,
    timestamp: u64,
}

impl<'a> From<&'a ChatMessage> for WireChat<'a> {
    fn from(message: &'a ChatMessage) -> Self {
        Self {
            name: &message.name,
            message: &message.message,
            timestamp: message.timestamp,
        }
    }
}

/// `{"joined":"<name>"}`: a user is in the room (roster on join, or a
/// newcomer named itself).
pub fn encode_joined(name: &str) -> String {
    #[derive(Serialize)]
    struct Joined<'a> {
        joined: &'a str,
    }
    to_json(&Joined { joined: name })
}

/// `{"quit":"<name>"}`: a user's session closed or failed.
pub fn encode_quit(name: &str) -> String {
    #[derive(Serialize)]
    struct Quit<'a> {
        quit: &'a str,
    }
    to_json(&Quit { quit: name })
}

/// `{"ready":true}`: roster and backlog have been sent.
pub fn encode_ready() -> String {
    r#"{"ready":true}"#.to_owned()
}

/// `{"name":..,"message":..,"timestamp":..}`: one chat message, live or
/// from the backlog. The `plain` flag is not sent.
pub fn encode_chat(message: &ChatMessage) -> String {
    to_json(&WireChat::from(message))
}

/// `{"error":"<text>"}`, e.g. with [`ProtocolError::client_text`] or
/// [`RATE_LIMITED`](super::limit::RATE_LIMITED).
pub fn encode_error(text: &str) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    to_json(&Error { error: text })
}

/// Extension `presence`: `{"presence":{"count":N,"users":[...]}}`.
///
/// `count` is every connection in the room, of every dialect, unnamed ones
/// included; `users` the names of the named ones, so `count` may exceed
/// `users.len()`.
pub fn encode_presence(count: usize, users: &[&str]) -> String {
    #[derive(Serialize)]
    struct Presence<'a> {
        presence: Body<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        count: usize,
        users: &'a [&'a str],
    }
    to_json(&Presence {
        presence: Body { count, users },
    })
}

/// Extension `history`: one page answering a
/// [`ClientFrame::HistoryRequest`],
/// `{"history":{"messages":[{"name","message","timestamp"}...],"more":bool}}`.
///
/// `messages` in chronological order (oldest first); `more` tells whether
/// still older messages exist.
pub fn encode_history_page(messages: &[ChatMessage], more: bool) -> String {
    #[derive(Serialize)]
    struct History<'a> {
        history: Page<'a>,
    }
    #[derive(Serialize)]
    struct Page<'a> {
        messages: Vec<WireChat<'a>>,
        more: bool,
    }
    to_json(&History {
        history: Page {
            messages: messages.iter().map(WireChat::from).collect(),
            more,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(text: &str) -> Result<ClientFrame, ProtocolError> {
        decode(text, false)
    }

    fn hello_name(text: &str) -> String {
        match hello(text) {
            Ok(ClientFrame::Hello { name, .. }) => name,
            other => panic!("expected a hello from {text}, got {other:?}"),
        }
    }

    fn after(text: &str) -> Result<ClientFrame, ProtocolError> {
        decode(text, true)
    }

    fn chat(name: &str, message: &str, timestamp: u64) -> ChatMessage {
        ChatMessage {
            name: name.to_owned(),
            message: message.to_owned(),
            timestamp,
            plain: false,
        }
    }

    #[test]
    fn hello_with_a_name() {
        assert_eq!(
            hello(r#"{"name":"alice"}"#),
            Ok(ClientFrame::Hello {
                name: "alice".into(),
                ext: Extensions::default()
            })
        );
    }

    #[test]
    fn hello_name_is_not_trimmed() {
        assert_eq!(hello_name(r#"{"name":"  bob "}"#), "  bob ");
    }

    #[test]
    fn missing_null_and_falsy_names_are_anonymous() {
        for text in [
            "{}",
            r#"{"name":null}"#,
            r#"{"name":""}"#,
            r#"{"name":false}"#,
            r#"{"name":0}"#,
            r#"{"name":-0}"#,
            r#"{"name":0.0}"#,
        ] {
            assert_eq!(hello_name(text), DEFAULT_NAME, "{text}");
        }
    }

    #[test]
    fn numbers_and_booleans_become_their_javascript_text() {
        assert_eq!(hello_name(r#"{"name":true}"#), "true");
        assert_eq!(hello_name(r#"{"name":42}"#), "42");
        assert_eq!(hello_name(r#"{"name":-1.5}"#), "-1.5");
        assert_eq!(hello_name(r#"{"name":1e21}"#), "1e+21");
        assert_eq!(hello_name(r#"{"name":1.0}"#), "1");
    }

    #[test]
    fn objects_and_arrays_are_not_names() {
        assert_eq!(hello(r#"{"name":{}}"#), Err(ProtocolError::InvalidName));
        assert_eq!(hello(r#"{"name":["a"]}"#), Err(ProtocolError::InvalidName));
        assert_eq!(hello(r#"{"name":[]}"#), Err(ProtocolError::InvalidName));
    }

    #[test]
    fn name_of_exactly_32_characters_is_accepted() {
        let name = "n".repeat(32);
        assert_eq!(hello_name(&format!(r#"{{"name":"{name}"}}"#)), name);
    }

    #[test]
    fn name_of_33_characters_is_refused_and_closes() {
        let text = format!(r#"{{"name":"{}"}}"#, "n".repeat(33));
        let error = hello(&text).expect_err("too long");
        assert_eq!(error, ProtocolError::NameTooLong);
        assert_eq!(error.client_text(), "Name too long.");
        assert_eq!(error.closes_socket(), Some(1009));
    }

    #[test]
    fn name_length_counts_characters() {
        // 32 emoji: 128 bytes, 64 UTF-16 units, 32 characters.
        let emoji = "😀".repeat(32);
        assert_eq!(hello_name(&format!(r#"{{"name":"{emoji}"}}"#)), emoji);
        let text = format!(r#"{{"name":"{}"}}"#, "é".repeat(33));
        assert_eq!(hello(&text), Err(ProtocolError::NameTooLong));
        // Escapes count as the character they stand for.
        let escaped = r"\u00e9".repeat(32);
        assert_eq!(
            hello_name(&format!(r#"{{"name":"{escaped}"}}"#)),
            "é".repeat(32)
        );
    }

    #[test]
    fn numeric_name_can_be_too_long() {
        // 1e-7 prints as "1e-7"; a long fraction prints all its digits.
        assert_eq!(hello_name(r#"{"name":1e-7}"#), "1e-7");
        assert_eq!(
            hello_name(r#"{"name":0.1234567890123456}"#),
            "0.1234567890123456"
        );
    }

    #[test]
    fn hello_extensions() {
        let frame = hello(r#"{"name":"x","ext":["presence","history"]}"#);
        assert_eq!(
            frame,
            Ok(ClientFrame::Hello {
                name: "x".into(),
                ext: Extensions {
                    presence: true,
                    history: true
                }
            })
        );
        let frame = hello(r#"{"name":"x","ext":["presence","telepathy",7,null]}"#);
        assert_eq!(
            frame,
            Ok(ClientFrame::Hello {
                name: "x".into(),
                ext: Extensions {
                    presence: true,
                    history: false
                }
            })
        );
        let frame = hello(r#"{"name":"x","ext":null}"#);
        assert!(
            matches!(frame, Ok(ClientFrame::Hello { ext, .. }) if ext == Extensions::default())
        );
        assert_eq!(
            hello(r#"{"name":"x","ext":"presence"}"#),
            Err(ProtocolError::InvalidExtensions)
        );
    }

    #[test]
    fn hello_ignores_other_fields() {
        assert_eq!(hello_name(r#"{"name":"x","message":"hi"}"#), "x");
    }

    #[test]
    fn messages() {
        assert_eq!(
            after(r#"{"message":"hi"}"#),
            Ok(ClientFrame::Message("hi".into()))
        );
        assert_eq!(
            after(r#"{"message":""}"#),
            Ok(ClientFrame::Message(String::new()))
        );
        assert_eq!(
            after(r#"{"message":" x "}"#),
            Ok(ClientFrame::Message(" x ".into()))
        );
        assert_eq!(
            after(r#"{"message":12}"#),
            Ok(ClientFrame::Message("12".into()))
        );
        assert_eq!(
            after(r#"{"message":false}"#),
            Ok(ClientFrame::Message("false".into()))
        );
        assert_eq!(
            after(r#"{"message":0}"#),
            Ok(ClientFrame::Message("0".into()))
        );
    }

    #[test]
    fn message_boundaries() {
        let exactly = "m".repeat(256);
        assert_eq!(
            after(&format!(r#"{{"message":"{exactly}"}}"#)),
            Ok(ClientFrame::Message(exactly))
        );
        let error =
            after(&format!(r#"{{"message":"{}"}}"#, "m".repeat(257))).expect_err("too long");
        assert_eq!(error, ProtocolError::MessageTooLong);
        assert_eq!(error.client_text(), "Message too long.");
        assert_eq!(error.closes_socket(), None);
        // Multi-byte: 256 three-byte characters pass, 257 do not.
        let cjk = "漢".repeat(256);
        assert_eq!(
            after(&format!(r#"{{"message":"{cjk}"}}"#)),
            Ok(ClientFrame::Message(cjk))
        );
        let cjk = "漢".repeat(257);
        assert_eq!(
            after(&format!(r#"{{"message":"{cjk}"}}"#)),
            Err(ProtocolError::MessageTooLong)
        );
    }

    #[test]
    fn missing_null_and_structured_messages() {
        assert_eq!(after("{}"), Err(ProtocolError::MissingMessage));
        assert_eq!(
            after(r#"{"message":null}"#),
            Err(ProtocolError::MissingMessage)
        );
        assert_eq!(
            after(r#"{"name":"again"}"#),
            Err(ProtocolError::MissingMessage)
        );
        assert_eq!(
            after(r#"{"message":{}}"#),
            Err(ProtocolError::InvalidMessage)
        );
        assert_eq!(
            after(r#"{"message":["a"]}"#),
            Err(ProtocolError::InvalidMessage)
        );
    }

    #[test]
    fn history_requests() {
        assert_eq!(
            after(r#"{"history":{"before":1700000000000,"limit":20}}"#),
            Ok(ClientFrame::HistoryRequest {
                before: 1_700_000_000_000,
                limit: 20
            })
        );
        assert_eq!(
            after(r#"{"history":{"before":5}}"#),
            Ok(ClientFrame::HistoryRequest {
                before: 5,
                limit: HISTORY_PAGE_DEFAULT
            })
        );
        assert_eq!(
            after(r#"{"history":{"before":5,"limit":null}}"#),
            Ok(ClientFrame::HistoryRequest {
                before: 5,
                limit: 50
            })
        );
        assert_eq!(
            after(r#"{"history":{"before":5,"limit":0}}"#),
            Ok(ClientFrame::HistoryRequest {
                before: 5,
                limit: 0
            })
        );
        for limit in ["101", "4294967296", "18446744073709551615"] {
            let text = format!(r#"{{"history":{{"before":5,"limit":{limit}}}}}"#);
            assert_eq!(
                after(&text),
                Ok(ClientFrame::HistoryRequest {
                    before: 5,
                    limit: HISTORY_PAGE_MAX
                }),
                "{limit}"
            );
        }
    }

    #[test]
    fn malformed_history_requests() {
        for text in [
            r#"{"history":true}"#,
            r#"{"history":[]}"#,
            r#"{"history":{}}"#,
            r#"{"history":{"before":null}}"#,
            r#"{"history":{"before":-1}}"#,
            r#"{"history":{"before":1.5}}"#,
            r#"{"history":{"before":"5"}}"#,
            r#"{"history":{"before":5,"limit":-1}}"#,
            r#"{"history":{"before":5,"limit":2.5}}"#,
            r#"{"history":{"before":5,"limit":"10"}}"#,
        ] {
            assert_eq!(
                after(text),
                Err(ProtocolError::InvalidHistoryRequest),
                "{text}"
            );
        }
        assert_eq!(
            after(r#"{"history":null}"#),
            Err(ProtocolError::MissingMessage)
        );
    }

    #[test]
    fn message_wins_over_history() {
        assert_eq!(
            after(r#"{"message":"hi","history":{"before":5}}"#),
            Ok(ClientFrame::Message("hi".into()))
        );
        assert_eq!(
            after(r#"{"message":null,"history":{"before":5}}"#),
            Ok(ClientFrame::HistoryRequest {
                before: 5,
                limit: 50
            })
        );
    }

    #[test]
    fn invalid_json_and_non_objects() {
        for named in [false, true] {
            for text in ["", "{", "hello", r#"{"name":"x"} trailing"#, "\u{0}"] {
                assert!(
                    matches!(decode(text, named), Err(ProtocolError::InvalidJson { .. })),
                    "{text:?}"
                );
            }
            for text in ["null", "1", r#""x""#, "[]", r#"[{"name":"x"}]"#, "true"] {
                assert_eq!(
                    decode(text, named),
                    Err(ProtocolError::NotAnObject),
                    "{text}"
                );
            }
        }
        assert_eq!(
            ProtocolError::InvalidJson {
                detail: String::new()
            }
            .client_text(),
            "Invalid JSON."
        );
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
        for open in ["[", "{\"a\":"] {
            let deep = open.repeat(100_000);
            for named in [false, true] {
                assert!(matches!(
                    decode(&deep, named),
                    Err(ProtocolError::InvalidJson { .. })
                ));
            }
            // Also when nested inside an otherwise valid frame.
            let inside = format!(r#"{{"message":"hi","junk":{deep}"#);
            assert!(matches!(
                decode(&inside, true),
                Err(ProtocolError::InvalidJson { .. })
            ));
        }
        // Nesting within the limit is fine (and ignored).
        let shallow = format!(
            r#"{{"message":"hi","junk":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(after(&shallow), Ok(ClientFrame::Message("hi".into())));
    }

    #[test]
    fn encoders_produce_the_spec_shapes() {
        assert_eq!(encode_joined("alice"), r#"{"joined":"alice"}"#);
        assert_eq!(encode_quit("alice"), r#"{"quit":"alice"}"#);
        assert_eq!(encode_ready(), r#"{"ready":true}"#);
        assert_eq!(
            encode_error("Name too long."),
            r#"{"error":"Name too long."}"#
        );
        assert_eq!(
            encode_chat(&chat("alice", "hi", 1_700_000_000_000)),
            r#"{"name":"alice","message":"hi","timestamp":1700000000000}"#
        );
    }

    #[test]
    fn chat_frames_never_carry_plain() {
        let mut message = chat("anonymous", "from b", 7);
        message.plain = true;
        assert_eq!(
            encode_chat(&message),
            r#"{"name":"anonymous","message":"from b","timestamp":7}"#
        );
        assert_eq!(
            encode_history_page(&[message], false),
            r#"{"history":{"messages":[{"name":"anonymous","message":"from b","timestamp":7}],"more":false}}"#
        );
    }

    #[test]
    fn extension_frames() {
        assert_eq!(
            encode_presence(3, &["alice", "bob"]),
            r#"{"presence":{"count":3,"users":["alice","bob"]}}"#
        );
        assert_eq!(
            encode_presence(0, &[]),
            r#"{"presence":{"count":0,"users":[]}}"#
        );
        assert_eq!(
            encode_history_page(&[chat("a", "1", 1), chat("b", "2", 2)], true),
            r#"{"history":{"messages":[{"name":"a","message":"1","timestamp":1},{"name":"b","message":"2","timestamp":2}],"more":true}}"#
        );
        assert_eq!(
            encode_history_page(&[], false),
            r#"{"history":{"messages":[],"more":false}}"#
        );
    }

    #[test]
    fn extension_frames_are_invisible_to_compat_clients() {
        let frames = [
            encode_presence(2, &["timestamp", "error"]),
            encode_history_page(&[chat("joined", "ready", 9)], true),
        ];
        for frame in frames {
            let value: Value = serde_json::from_str(&frame).expect("valid JSON");
            let object = value.as_object().expect("an object");
            for field in ["timestamp", "error", "joined", "quit", "ready"] {
                assert!(!object.contains_key(field), "{field} in {frame}");
            }
        }
    }

    #[test]
    fn hostile_text_round_trips() {
        let name = r#"a"b\c<script>x</script>😀"#;
        let message = "line\nbreak\ttab \u{0} nul \u{2028} \"quoted\" \\ 🦀";
        assert!(!exceeds_chars(name, MAX_NAME_CHARS));

        // Client to server.
        let hello = serde_json::json!({ "name": name }).to_string();
        assert_eq!(hello_name(&hello), name);
        let frame = serde_json::json!({ "message": message }).to_string();
        assert_eq!(after(&frame), Ok(ClientFrame::Message(message.into())));

        // Server to client.
        let sent = chat(name, message, 1);
        let value: Value = serde_json::from_str(&encode_chat(&sent)).expect("valid JSON");
        assert_eq!(value["name"], name);
        assert_eq!(value["message"], message);
        for frame in [encode_joined(name), encode_quit(name), encode_error(name)] {
            let value: Value = serde_json::from_str(&frame).expect("valid JSON");
            let (_, text) = value
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("one field");
            assert_eq!(text, name);
        }
        let value: Value = serde_json::from_str(&encode_presence(1, &[name])).expect("valid JSON");
        assert_eq!(value["presence"]["users"][0], name);
        let value: Value =
            serde_json::from_str(&encode_history_page(&[sent], false)).expect("valid JSON");
        assert_eq!(value["history"]["messages"][0]["name"], name);
        assert_eq!(value["history"]["messages"][0]["message"], message);
    }

    #[test]
    fn javascript_number_text() {
        let cases: [(f64, &str); 16] = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-7.0, "-7"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (123_456_789.0, "123456789"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (0.000_001, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5e-8, "-2.5e-8"),
            (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (number, text) in cases {
            assert_eq!(js_number(number), text, "{number:e}");
        }
        // Integers beyond 2^53 lose precision exactly as in JavaScript.
        assert_eq!(
            hello_name(r#"{"name":12345678901234567890}"#),
            "12345678901234567000"
        );
    }
}
