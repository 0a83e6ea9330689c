//! Wire codecs of the chat demo: pure functions from frames to values and
//! back, with no I/O and no clock.
//!
//! One room serves three client dialects (see `docs/protocol.md`):
//!
//! - [`a`]: the Edge Chat Demo, JSON text frames with names, roster, backlog
//!   and our opt-in extensions (presence, history paging);
//! - [`b`]: the plain relay, raw text frames;
//! - [`c`]: the workshop chat, JSON text frames, name and room in the query.
//!
//! [`limit`] holds the per-IP rate limit rule shared by all three.
//!
//! # Lengths
//!
//! Every length limit here ([`MAX_NAME_CHARS`], [`MAX_MESSAGE_CHARS`],
//! [`MAX_ROOM_NAME_CHARS`]) counts Unicode scalar values (`str::chars`), not
//! bytes and not UTF-16 code units. The seeds are JavaScript and count UTF-16
//! code units, so the two agree on text in the Basic Multilingual Plane
//! (Latin, CJK, most symbols) and differ only for characters outside it
//! (most emoji): a name of 17 emoji is 17 characters here but 34 units for
//! JavaScript. We accept slightly more than the seeds in that case, never
//! less; the seed clients enforce their own (UTF-16) limits before sending.
//!
//! ```
//! use chat_demo::protocol::{ChatMessage, a};
//!
//! let frame = a::decode(r#"{"message":"hello"}"#, true)?;
//! assert_eq!(frame, a::ClientFrame::Message("hello".to_owned()));
//!
//! let stored = ChatMessage {
//!     name: "alice".to_owned(),
//!     message: "hello".to_owned(),
//!     timestamp: 1_700_000_000_000,
//!     plain: false,
//!     ..ChatMessage::default()
//! };
//! assert_eq!(
//!     a::encode_chat(&stored),
//!     r#"{"name":"alice","message":"hello","timestamp":1700000000000}"#,
//! );
//! # Ok::<(), chat_demo::protocol::ProtocolError>(())
//! ```

pub mod a;
pub mod b;
pub mod c;
pub mod dm;
pub mod limit;
pub mod manage;
pub mod password;
pub mod reactions;
pub mod search;
pub mod time;

use serde::{Deserialize, Serialize};

use reactions::Reactions;

/// Longest user name, in characters (see the module docs on lengths).
pub const MAX_NAME_CHARS: usize = 32;

/// Longest chat message, in characters (see the module docs on lengths).
pub const MAX_MESSAGE_CHARS: usize = 256;

/// Largest frame a dialect-A client may send, in bytes. A legitimate one
/// is at most about 3.1 KB: a message of 256 characters each escaped as a
/// surrogate pair (`\ud83d\ude00`, 12 bytes) in its JSON. A larger frame
/// closes the socket with 1009.
pub const MAX_FRAME_BYTES_A: usize = 4096;

/// Largest frame a dialect-B or C client may send, in bytes: the frame is
/// the message, at most 256 characters of at most 4 bytes each (1 KiB),
/// with room for whitespace C trims. Frames up to this size but over 256
/// characters get the `Message too long.` error; larger ones close the
/// socket with 1009.
pub const MAX_FRAME_BYTES_TEXT: usize = 2048;

/// The largest frame of any dialect: the WebSocket read limit of the
/// runtime (the socket task refuses larger ones before they are buffered
/// whole).
pub const MAX_FRAME_BYTES: usize = MAX_FRAME_BYTES_A;

/// The close reason of a frame over its dialect's limit (the same words
/// the runtime uses past its read limit).
pub const FRAME_TOO_BIG: &str = "message too big";

/// Longest room name that maps to a named room, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 32;

/// How many of the newest stored messages a client receives when it joins.
pub const HISTORY_ON_JOIN: usize = 100;

/// Length of a private room id: 64 lowercase hex digits (32 bytes).
pub const PRIVATE_ROOM_ID_LEN: usize = 64;

/// One chat message, as broadcast and as stored in a room's history.
///
/// Every dialect encodes it from this one form, so a message sent from one
/// dialect reaches the users of the others.
///
/// A message's id is its timestamp: unique within its room (timestamps
/// strictly increase) and never changed, so replies and reactions name
/// their message by it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Sender's name; `anonymous` for a dialect-B (plain relay) sender.
    pub name: String,
    /// The text, at most [`MAX_MESSAGE_CHARS`] characters.
    pub message: String,
    /// Milliseconds since the Unix epoch, strictly increasing within a room.
    pub timestamp: u64,
    /// True when the message came from a dialect-B client: B clients then get
    /// it verbatim rather than as `name: message`. Never sent to A or C
    /// clients; omitted from the stored form when false, so older records
    /// without it read back as `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub plain: bool,
    /// Extension `threads`: the id (timestamp) of the message this one
    /// replies to. Omitted when none.
    #[serde(default, rename = "replyTo", skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Extension `reactions`: who reacted with what. Omitted when none.
    #[serde(default, skip_serializing_if = "Reactions::is_empty")]
    pub reactions: Reactions,
}

/// `skip_serializing_if` needs a function taking a reference.
fn is_false(value: &bool) -> bool {
    !*value
}

/// Which room a URL path segment names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RoomRef {
    /// A private room, by its id: exactly 64 lowercase hex digits.
    ///
    /// Only the shape is checked here; whether the id is a valid id of the
    /// room namespace (one that the namespace could have issued) is the
    /// caller's check, and an invalid one must be rejected, not mapped.
    Private(String),
    /// A room reached by its name, at most [`MAX_ROOM_NAME_CHARS`]
    /// characters. The same name always maps to the same room.
    Named(String),
}

/// Why a room name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomNameError {
    /// Not a private room id and over [`MAX_ROOM_NAME_CHARS`] characters.
    /// The seed answers 404 with this Display text as the body.
    #[error("Name too long")]
    TooLong,
}

/// Classifies a room name taken from a URL path (already percent-decoded).
///
/// Exactly 64 lowercase hex digits is a [`RoomRef::Private`] id; anything
/// else of at most [`MAX_ROOM_NAME_CHARS`] characters is a
/// [`RoomRef::Named`] room. 64 *uppercase* hex digits are not an id: they
/// are an over-long name. The empty string is `Named("")`, as in the seed
/// (which maps it with `idFromName("")`); routers that never produce an
/// empty segment simply never see it.
///
/// # Errors
///
/// [`RoomNameError::TooLong`] for a name over [`MAX_ROOM_NAME_CHARS`]
/// characters that is not a private room id.
///
/// ```
/// use chat_demo::protocol::{RoomRef, parse_room};
///
/// assert_eq!(parse_room("general"), Ok(RoomRef::Named("general".to_owned())));
/// let id = "0123456789abcdef".repeat(4);
/// assert_eq!(parse_room(&id), Ok(RoomRef::Private(id.clone())));
/// assert!(parse_room(&id.to_uppercase()).is_err());
/// ```
pub fn parse_room(name: &str) -> Result<RoomRef, RoomNameError> {
    let is_private_id = name.len() == PRIVATE_ROOM_ID_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if is_private_id {
        Ok(RoomRef::Private(name.to_owned()))
    } else if exceeds_chars(name, MAX_ROOM_NAME_CHARS) {
        Err(RoomNameError::TooLong)
    } else {
        Ok(RoomRef::Named(name.to_owned()))
    }
}

/// The dialect a socket speaks; kept in the socket's attachment so a woken
/// room knows how to encode for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dialect {
    /// Edge Chat Demo: JSON, names, roster, backlog ([`a`]).
    A,
    /// Plain relay: raw text frames ([`b`]).
    B,
    /// Workshop chat: JSON, name and room from the query string ([`c`]).
    C,
}

impl Dialect {
    /// The largest frame a client of this dialect may send, in bytes.
    pub fn max_frame_bytes(self) -> usize {
        match self {
            Dialect::A => MAX_FRAME_BYTES_A,
            Dialect::B | Dialect::C => MAX_FRAME_BYTES_TEXT,
        }
    }

    /// The dialect's letter: the accepted socket's tag, and in logs.
    pub fn label(self) -> &'static str {
        match self {
            Dialect::A => "A",
            Dialect::B => "B",
            Dialect::C => "C",
        }
    }

    /// An error frame in this dialect (C's is a chat line stamped `now_ms`).
    pub fn encode_error(self, text: &str, now_ms: u64) -> String {
        match self {
            Dialect::A => a::encode_error(text),
            Dialect::B => b::encode_error(text),
            Dialect::C => c::encode_error(text, now_ms),
        }
    }

    /// The name a message is stored and shown under: B clients have none
    /// (they are all `anonymous`); A and C users without one get their
    /// dialect's default.
    pub fn sender_name(self, name: Option<&str>) -> String {
        match self {
            Dialect::B => b::SENDER_NAME.to_owned(),
            Dialect::A => name.unwrap_or(a::DEFAULT_NAME).to_owned(),
            Dialect::C => name.unwrap_or(c::DEFAULT_NAME).to_owned(),
        }
    }
}

/// A frame that a client sent and the server refuses.
///
/// Each variant knows the text to send back ([`client_text`]) and whether the
/// socket must then be closed ([`closes_socket`]).
///
/// [`client_text`]: ProtocolError::client_text
/// [`closes_socket`]: ProtocolError::closes_socket
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The user name is over [`MAX_NAME_CHARS`] characters.
    #[error("name too long")]
    NameTooLong,
    /// The message is over [`MAX_MESSAGE_CHARS`] characters; it is dropped
    /// and the socket stays open.
    #[error("message too long")]
    MessageTooLong,
    /// The frame is not JSON, or nests deeper than the parser allows.
    #[error("invalid JSON: {detail}")]
    InvalidJson {
        /// The parser's description, for logs (never sent to the client).
        detail: String,
    },
    /// The frame is JSON but not an object.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// The hello's `name` is an object or an array.
    #[error("name is not a string")]
    InvalidName,
    /// The hello's `ext` is not an array of extension names.
    #[error("`ext` is not an array")]
    InvalidExtensions,
    /// After the hello, an object with neither `message` nor `history` (or
    /// with `"message": null`).
    #[error("frame has neither `message` nor `history`")]
    MissingMessage,
    /// The `message` is an object or an array.
    #[error("message is not a string")]
    InvalidMessage,
    /// The `history` request is not `{"before": <u64>, "limit": <u32>}`.
    #[error("malformed history request")]
    InvalidHistoryRequest,
    /// A message's `replyTo` is not a message id (a non-negative integer).
    #[error("malformed replyTo")]
    InvalidReplyTo,
    /// The `react` request is malformed (see [`reactions::check_emoji`]).
    #[error("malformed reaction")]
    InvalidReaction,
    /// A reaction would pass the bounds of [`reactions`].
    #[error("too many reactions")]
    TooManyReactions,
    /// The `search` request is malformed, or its query too long, empty of
    /// words or with too many (see [`search::terms`]).
    #[error("malformed search")]
    InvalidSearch,
    /// The hello's user `key` is malformed (see [`dm::check_key`]).
    #[error("malformed user key")]
    InvalidKey,
    /// The hello's name is held by another user key in this room.
    #[error("name held by another key")]
    NameHeld,
    /// The `dm` request is malformed.
    #[error("malformed dm")]
    InvalidDm,
    /// Nobody holding a user key is connected under the `dm`'s name.
    #[error("no such recipient")]
    NoSuchRecipient,
    /// A `claim`, `topic` or `delete` request is malformed.
    #[error("malformed management request")]
    InvalidManage,
    /// The room already has an owner.
    #[error("already claimed")]
    AlreadyClaimed,
    /// The owner token is wrong (or the room has no owner).
    #[error("wrong owner token")]
    WrongToken,
    /// The room has a password and the hello (or query) gave none.
    #[error("password required")]
    PasswordRequired,
    /// The password given does not match.
    #[error("wrong password")]
    WrongPassword,
    /// `typing` is not `true`.
    #[error("malformed typing")]
    InvalidTyping,
    /// A reply or reaction names a message the room does not hold.
    #[error("no such message")]
    NoSuchMessage,
}

impl ProtocolError {
    /// The exact text to send back to the client, wrapped in the dialect's
    /// error frame (`{"error": ...}` for A, plain text for B, a chat line
    /// from `Error` for C).
    pub fn client_text(&self) -> &'static str {
        match self {
            Self::NameTooLong => "Name too long.",
            Self::MessageTooLong => "Message too long.",
            Self::InvalidJson { .. } => "Invalid JSON.",
            Self::NotAnObject => "Expected a JSON object.",
            Self::InvalidName => "Name must be a string.",
            Self::InvalidExtensions => r#"Expected "ext" to be a list of extension names."#,
            Self::MissingMessage => r#"Expected an object with a "message" field."#,
            Self::InvalidMessage => "Message must be a string.",
            Self::InvalidHistoryRequest => {
                r#"Expected "history" to be {"before": <timestamp>, "limit": <count>}."#
            }
            Self::InvalidReplyTo => r#"Expected "replyTo" to be a message id."#,
            Self::InvalidReaction => {
                r#"Expected "react" to be {"id": <message id>, "emoji": "<emoji, at most 16 characters>", "on": <true|false>}."#
            }
            Self::TooManyReactions => "Too many reactions on this message.",
            Self::NoSuchMessage => "No such message.",
            Self::InvalidTyping => r#"Expected "typing" to be true."#,
            Self::InvalidManage => {
                r#"Expected {"claim": true}, {"topic": {"token": "<owner token>", "topic": "<at most 120 characters>"}} or {"delete": {"token": "<owner token>"}}."#
            }
            Self::AlreadyClaimed => "This room already has an owner.",
            Self::WrongToken => "Wrong owner token.",
            Self::PasswordRequired => "This room needs a password.",
            Self::WrongPassword => "Wrong password.",
            Self::InvalidKey => r#"Expected "key" to be 16 to 128 letters, digits, "-" or "_"."#,
            Self::NameHeld => "That name is in use by someone else in this room.",
            Self::InvalidDm => r#"Expected "dm" to be {"to": "<name>", "message": "<text>"}."#,
            Self::NoSuchRecipient => {
                "Nobody of that name can get direct messages in this room right now."
            }
            Self::InvalidSearch => {
                r#"Expected "search" to be {"query": "<1 to 4 words, at most 64 characters>", "before": <message id>, "limit": <count>}."#
            }
        }
    }

    /// The WebSocket close code to close with after sending
    /// [`client_text`](Self::client_text), or `None` to keep the socket open.
    ///
    /// Only an over-long name closes, with 1009 (message too big), as in the
    /// seed; use the client text as the close reason.
    pub fn closes_socket(&self) -> Option<u16> {
        match self {
            Self::NameTooLong => Some(1009),
            _ => None,
        }
    }
}

/// Whether `text` has more than `max` characters, looking at no more than
/// `max + 1` of them (frames can be large; limits are small).
pub(crate) fn exceeds_chars(text: &str, max: usize) -> bool {
    text.chars().nth(max).is_some()
}

/// Serialises one outgoing frame.
pub(crate) fn to_json<T: Serialize>(frame: &T) -> String {
    // Invariant: every frame type in this module tree is a struct of strings,
    // integers, booleans and sequences of those, which serde_json always
    // serialises (it fails only on non-string map keys or a failing custom
    // `Serialize`, and we have neither).
    serde_json::to_string(frame).expect("frame types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(plain: bool) -> ChatMessage {
        ChatMessage {
            name: "alice".to_owned(),
            message: "hi".to_owned(),
            timestamp: 42,
            plain,
            ..ChatMessage::default()
        }
    }

    #[test]
    fn stored_form_omits_plain_when_false() {
        let json = serde_json::to_string(&message(false)).expect("serialises");
        assert_eq!(json, r#"{"name":"alice","message":"hi","timestamp":42}"#);
        let back: ChatMessage = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, message(false));
    }

    #[test]
    fn stored_form_keeps_plain_when_true() {
        let json = serde_json::to_string(&message(true)).expect("serialises");
        assert_eq!(
            json,
            r#"{"name":"alice","message":"hi","timestamp":42,"plain":true}"#
        );
        let back: ChatMessage = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, message(true));
    }

    #[test]
    fn named_rooms() {
        assert_eq!(parse_room("general"), Ok(RoomRef::Named("general".into())));
        let exactly_32 = "x".repeat(32);
        assert_eq!(
            parse_room(&exactly_32),
            Ok(RoomRef::Named(exactly_32.clone()))
        );
        assert_eq!(parse_room(&"x".repeat(33)), Err(RoomNameError::TooLong));
    }

    #[test]
    fn room_length_counts_characters_not_bytes() {
        // 32 two-byte and 32 four-byte characters are 64 and 128 bytes.
        let accents = "é".repeat(32);
        assert_eq!(parse_room(&accents), Ok(RoomRef::Named(accents.clone())));
        let emoji = "🦀".repeat(32);
        assert_eq!(parse_room(&emoji), Ok(RoomRef::Named(emoji.clone())));
        assert_eq!(parse_room(&"é".repeat(33)), Err(RoomNameError::TooLong));
    }

    #[test]
    fn empty_room_name_is_named() {
        assert_eq!(parse_room(""), Ok(RoomRef::Named(String::new())));
    }

    #[test]
    fn private_room_ids() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(parse_room(&id), Ok(RoomRef::Private(id.clone())));
        let zeros = "0".repeat(64);
        assert_eq!(parse_room(&zeros), Ok(RoomRef::Private(zeros.clone())));
    }

    #[test]
    fn almost_private_ids_are_over_long_names() {
        // Uppercase, a non-hex letter, one digit short or long: not ids, and
        // too long to be names.
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(parse_room(&id.to_uppercase()), Err(RoomNameError::TooLong));
        let mixed = format!("A{}", &id[1..]);
        assert_eq!(parse_room(&mixed), Err(RoomNameError::TooLong));
        let non_hex = format!("g{}", &id[1..]);
        assert_eq!(parse_room(&non_hex), Err(RoomNameError::TooLong));
        assert_eq!(parse_room(&id[1..]), Err(RoomNameError::TooLong));
        assert_eq!(parse_room(&format!("{id}0")), Err(RoomNameError::TooLong));
    }

    #[test]
    fn room_error_text_matches_the_seed() {
        assert_eq!(RoomNameError::TooLong.to_string(), "Name too long");
    }

    #[test]
    fn dialect_round_trips_through_serde() {
        for dialect in [Dialect::A, Dialect::B, Dialect::C] {
            let json = serde_json::to_string(&dialect).expect("serialises");
            let back: Dialect = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(back, dialect);
        }
        assert_eq!(
            serde_json::to_string(&Dialect::B).expect("serialises"),
            r#""B""#
        );
    }

    #[test]
    fn error_texts_and_close_codes() {
        assert_eq!(ProtocolError::NameTooLong.client_text(), "Name too long.");
        assert_eq!(
            ProtocolError::MessageTooLong.client_text(),
            "Message too long."
        );
        assert_eq!(ProtocolError::NameTooLong.closes_socket(), Some(1009));
        let others = [
            ProtocolError::MessageTooLong,
            ProtocolError::InvalidJson {
                detail: String::new(),
            },
            ProtocolError::NotAnObject,
            ProtocolError::InvalidName,
            ProtocolError::InvalidExtensions,
            ProtocolError::MissingMessage,
            ProtocolError::InvalidMessage,
            ProtocolError::InvalidHistoryRequest,
            ProtocolError::InvalidReplyTo,
            ProtocolError::InvalidReaction,
            ProtocolError::TooManyReactions,
            ProtocolError::NoSuchMessage,
            ProtocolError::InvalidTyping,
            ProtocolError::InvalidSearch,
            ProtocolError::InvalidKey,
            ProtocolError::NameHeld,
            ProtocolError::InvalidDm,
            ProtocolError::NoSuchRecipient,
            ProtocolError::InvalidManage,
            ProtocolError::AlreadyClaimed,
            ProtocolError::WrongToken,
            ProtocolError::PasswordRequired,
            ProtocolError::WrongPassword,
        ];
        for error in others {
            assert_eq!(error.closes_socket(), None, "{error:?}");
            assert!(!error.client_text().is_empty());
        }
    }

    #[test]
    fn exceeds_chars_boundaries() {
        assert!(!exceeds_chars("", 0) && exceeds_chars("a", 0));
        assert!(!exceeds_chars("abc", 3) && exceeds_chars("abcd", 3));
        assert!(!exceeds_chars("🦀🦀🦀", 3) && exceeds_chars("🦀🦀🦀🦀", 3));
    }
}
