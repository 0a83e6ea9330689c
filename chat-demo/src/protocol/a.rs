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
//!         ext: Extensions { history: true, ..Extensions::default() },
//!         key: None,
//!         password: None,
//!     },
//! );
//! assert_eq!(a::encode_joined("alice"), r#"{"joined":"alice"}"#);
//! # Ok::<(), chat_demo::protocol::ProtocolError>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod ext;
mod js;

use ext::{decode_dm, decode_history_request, decode_manage, decode_react, decode_search};
#[cfg(test)]
use js::js_number;
use js::{is_js_falsy, js_string};

use super::dm::check_key;
use super::reactions::{Reaction, Reactions};
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

/// Extension name that turns on reactions ([`ClientFrame::React`],
/// [`encode_reactions`], `reactions` on chat frames).
pub const EXT_REACTIONS: &str = "reactions";

/// Extension name that turns on typing indicators ([`ClientFrame::Typing`],
/// [`encode_typing`]).
pub const EXT_TYPING: &str = "typing";

/// Extension `typing`: at most one typing signal per socket is passed on
/// in this long; the others are dropped without an answer.
pub const TYPING_THROTTLE_MS: u64 = 2_000;

/// Extension `typing`: how long a client shows an indicator after the last
/// signal unless renewed (a client-side rule; our page follows it).
pub const TYPING_SHOWN_MS: u64 = 5_000;

/// Extension name that turns on search ([`ClientFrame::Search`],
/// [`encode_search_page`]).
pub const EXT_SEARCH: &str = "search";

/// Extension name that turns on direct messages ([`ClientFrame::Dm`]); the
/// hello then carries a user `key` (see [`dm`](super::dm)).
pub const EXT_DM: &str = "dm";

/// Extension name that turns on room management ([`ClientFrame::Claim`],
/// [`ClientFrame::SetTopic`], [`ClientFrame::Delete`], the `room` frame).
pub const EXT_MANAGE: &str = "manage";

/// Extension name that turns on replies ([`ClientFrame::Reply`],
/// `replyTo` on chat frames).
pub const EXT_THREADS: &str = "threads";

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
        /// Extension `dm`: the user key, checked by
        /// [`check_key`](super::dm::check_key). Read only with `dm` in
        /// `ext`.
        key: Option<String>,
        /// The room's password, for a room that has one (a string of at
        /// most [`MAX_PASSWORD_CHARS`](super::password::MAX_PASSWORD_CHARS)
        /// characters; anything else is no password).
        password: Option<String>,
    },
    /// A chat message, at most [`MAX_MESSAGE_CHARS`] characters. May be
    /// empty: the seed relays empty messages and so does this decoder.
    Message(String),
    /// Extension `threads`: a chat message replying to the message whose id
    /// (timestamp) is `parent`. Decoded whether or not the session opted
    /// in; a session that did not is served a plain [`ClientFrame::Message`].
    Reply {
        /// The text, as in [`ClientFrame::Message`].
        message: String,
        /// The id of the message replied to.
        parent: u64,
    },
    /// Extension `reactions`: add (`on`) or remove the sender's `emoji` on
    /// the message `id`.
    React {
        /// The id (timestamp) of the message reacted to.
        id: u64,
        /// The reaction, checked by
        /// [`check_emoji`](super::reactions::check_emoji).
        emoji: String,
        /// Add (true, the default) or remove.
        on: bool,
    },
    /// Extension `typing`: the user is typing (`{"typing": true}`).
    Typing,
    /// Extension `manage`: claim the room (`{"claim": true}`).
    Claim,
    /// Extension `manage`: set (or clear, with `""`) the topic.
    SetTopic {
        /// The owner token.
        token: String,
        /// The new topic, checked by
        /// [`check_topic`](super::manage::check_topic).
        topic: String,
    },
    /// Extension `manage`: set (or clear, with `""`) the room's password.
    SetPassword {
        /// The owner token.
        token: String,
        /// The new password, or `""` to clear it.
        password: String,
    },
    /// Extension `manage`: delete the room.
    Delete {
        /// The owner token.
        token: String,
    },
    /// Extension `dm`: a direct message to the user holding the name `to`.
    Dm {
        /// The recipient's name (at most [`MAX_NAME_CHARS`] characters).
        to: String,
        /// The text, as in [`ClientFrame::Message`] but never empty.
        message: String,
    },
    /// Extension `search`: messages whose text matches every term (see
    /// [`search`](super::search)), newest first, older than `before`.
    Search {
        /// The query as sent (echoed in the answer).
        query: String,
        /// Its terms, from [`search::terms`](super::search::terms).
        terms: Vec<String>,
        /// Only messages with an id (timestamp) strictly below this;
        /// `u64::MAX` when the request gives none.
        before: u64,
        /// Most results wanted, at most
        /// [`SEARCH_PAGE_MAX`](super::search::SEARCH_PAGE_MAX).
        limit: u32,
    },
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
///
/// Missing fields read as `false`, so attachments written before a field
/// existed still read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Extensions {
    /// Send [`encode_presence`] frames when the room's population changes.
    pub presence: bool,
    /// The client may send [`ClientFrame::HistoryRequest`]s.
    pub history: bool,
    /// The client may react ([`ClientFrame::React`]) and gets
    /// [`encode_reactions`] updates and `reactions` on chat frames.
    pub reactions: bool,
    /// The client may reply ([`ClientFrame::Reply`]) and gets `replyTo` on
    /// chat frames.
    pub threads: bool,
    /// The client may say it is typing ([`ClientFrame::Typing`]) and gets
    /// [`encode_typing`] frames.
    pub typing: bool,
    /// The client may search ([`ClientFrame::Search`]).
    pub search: bool,
    /// The client sends and gets direct messages ([`ClientFrame::Dm`]).
    pub dm: bool,
    /// The client may manage the room and gets its `room` frames.
    pub manage: bool,
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
/// `history` is a [`ClientFrame::HistoryRequest`], otherwise a non-null
/// `react` a [`ClientFrame::React`], otherwise a non-null `dm` a
/// [`ClientFrame::Dm`] (after `claim`, `topic` and `delete`, the
/// management frames), otherwise a non-null `search` a
/// [`ClientFrame::Search`], otherwise `"typing": true` a
/// [`ClientFrame::Typing`]. A message with a non-null `replyTo` is
/// a [`ClientFrame::Reply`]. Other fields are ignored.
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
/// - [`ProtocolError::MissingMessage`] for an object with none of
///   `message`, `history` and `react` (or only nulls);
/// - [`ProtocolError::InvalidMessage`] for an object or array `message`;
/// - [`ProtocolError::InvalidHistoryRequest`] for a malformed `history`.
/// - [`ProtocolError::InvalidReplyTo`] for a `replyTo` that is not a
///   non-negative integer;
/// - [`ProtocolError::InvalidReaction`] for a malformed `react`;
/// - [`ProtocolError::InvalidKey`] for a malformed hello `key` (with `dm`);
/// - [`ProtocolError::InvalidManage`] for a malformed `claim`, `topic` or
///   `delete`;
/// - [`ProtocolError::InvalidDm`] for a malformed `dm`;
/// - [`ProtocolError::InvalidSearch`] for a malformed `search`;
/// - [`ProtocolError::InvalidTyping`] for a `typing` other than `true`.
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
                    EXT_REACTIONS => ext.reactions = true,
                    EXT_THREADS => ext.threads = true,
                    EXT_TYPING => ext.typing = true,
                    EXT_SEARCH => ext.search = true,
                    EXT_DM => ext.dm = true,
                    EXT_MANAGE => ext.manage = true,
                    _ => {}
                }
            }
            ext
        }
        Some(_) => return Err(ProtocolError::InvalidExtensions),
    };
    let key = match object.get("key") {
        Some(Value::String(key)) if ext.dm => {
            check_key(key)?;
            Some(key.clone())
        }
        Some(Value::Null) | None => None,
        Some(_) if ext.dm => return Err(ProtocolError::InvalidKey),
        Some(_) => None,
    };
    let password = match object.get("password") {
        Some(Value::String(p)) if !exceeds_chars(p, super::password::MAX_PASSWORD_CHARS) => {
            Some(p.clone())
        }
        _ => None,
    };
    Ok(ClientFrame::Hello {
        name,
        ext,
        key,
        password,
    })
}

fn decode_after_hello(object: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    match object.get("message") {
        Some(Value::Null) | None => {}
        Some(value) => {
            let message = js_string(value).ok_or(ProtocolError::InvalidMessage)?;
            if exceeds_chars(&message, MAX_MESSAGE_CHARS) {
                return Err(ProtocolError::MessageTooLong);
            }
            return match object.get("replyTo") {
                None | Some(Value::Null) => Ok(ClientFrame::Message(message)),
                Some(parent) => {
                    let parent = parent.as_u64().ok_or(ProtocolError::InvalidReplyTo)?;
                    Ok(ClientFrame::Reply { message, parent })
                }
            };
        }
    }
    match object.get("history") {
        Some(Value::Null) | None => {}
        Some(Value::Object(request)) => return decode_history_request(request),
        Some(_) => return Err(ProtocolError::InvalidHistoryRequest),
    }
    match object.get("react") {
        Some(Value::Null) | None => {}
        Some(Value::Object(request)) => return decode_react(request),
        Some(_) => return Err(ProtocolError::InvalidReaction),
    }
    if let Some(frame) = decode_manage(object)? {
        return Ok(frame);
    }
    match object.get("dm") {
        Some(Value::Null) | None => {}
        Some(Value::Object(request)) => return decode_dm(request),
        Some(_) => return Err(ProtocolError::InvalidDm),
    }
    match object.get("search") {
        Some(Value::Null) | None => {}
        Some(Value::Object(request)) => return decode_search(request),
        Some(_) => return Err(ProtocolError::InvalidSearch),
    }
    match object.get("typing") {
        Some(Value::Null) | None => Err(ProtocolError::MissingMessage),
        Some(Value::Bool(true)) => Ok(ClientFrame::Typing),
        Some(_) => Err(ProtocolError::InvalidTyping),
    }
}

/// A chat message as it goes on the wire: no `plain` flag; `replyTo` and
/// `reactions` only for sessions that opted in to them.
#[derive(Serialize)]
struct WireChat<'a> {
    name: &'a str,
    message: &'a str,
    timestamp: u64,
    #[serde(rename = "replyTo", skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    #[serde(skip_serializing_if = "<[Reaction]>::is_empty")]
    reactions: &'a [Reaction],
}

impl<'a> WireChat<'a> {
    fn new(message: &'a ChatMessage, ext: Extensions) -> Self {
        Self {
            name: &message.name,
            message: &message.message,
            timestamp: message.timestamp,
            reply_to: message.reply_to.filter(|_| ext.threads),
            reactions: if ext.reactions {
                &message.reactions.0
            } else {
                &[]
            },
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
    to_json(&WireChat::new(message, Extensions::default()))
}

/// A chat frame for a session with extensions `ext`: [`encode_chat`]'s
/// three fields, plus `replyTo` (with `threads`, for a reply) and
/// `reactions` (with `reactions`, when there are any).
pub fn encode_chat_ext(message: &ChatMessage, ext: Extensions) -> String {
    to_json(&WireChat::new(message, ext))
}

/// Extension `reactions`: the reactions of message `id` after a change,
/// `{"reactions":{"id":N,"reactions":[{"emoji":"👍","users":["alice"]}]}}`
/// (an empty list when the last one was removed). The whole list, not the
/// change, so a client that missed one update is right again at the next.
pub fn encode_reactions(id: u64, reactions: &Reactions) -> String {
    #[derive(Serialize)]
    struct Update<'a> {
        reactions: Body<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        id: u64,
        reactions: &'a [Reaction],
    }
    to_json(&Update {
        reactions: Body {
            id,
            reactions: &reactions.0,
        },
    })
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

/// Extension `search`: one page of results,
/// `{"search":{"query":"..","messages":[..],"next":N}}`: `messages` newest
/// first, as [`encode_chat_ext`] gives them for `ext`; `next`, when not
/// null, is the `before` to ask with for the next page (there may be more).
pub fn encode_search_page(
    query: &str,
    messages: &[ChatMessage],
    next: Option<u64>,
    ext: Extensions,
) -> String {
    #[derive(Serialize)]
    struct Search<'a> {
        search: Page<'a>,
    }
    #[derive(Serialize)]
    struct Page<'a> {
        query: &'a str,
        messages: Vec<WireChat<'a>>,
        next: Option<u64>,
    }
    to_json(&Search {
        search: Page {
            query,
            messages: messages.iter().map(|m| WireChat::new(m, ext)).collect(),
            next,
        },
    })
}

/// Extension `typing`: `{"typing":{"name":"<name>"}}`, someone is typing.
/// Shown for a few seconds by the client unless renewed.
pub fn encode_typing(name: &str) -> String {
    #[derive(Serialize)]
    struct Typing<'a> {
        typing: Body<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        name: &'a str,
    }
    to_json(&Typing {
        typing: Body { name },
    })
}

/// Extension `history`: one page answering a
/// [`ClientFrame::HistoryRequest`],
/// `{"history":{"messages":[{"name","message","timestamp"}...],"more":bool}}`.
///
/// `messages` in chronological order (oldest first), each as
/// [`encode_chat_ext`] gives it for `ext`; `more` tells whether still older
/// messages exist.
pub fn encode_history_page(messages: &[ChatMessage], more: bool, ext: Extensions) -> String {
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
            messages: messages.iter().map(|m| WireChat::new(m, ext)).collect(),
            more,
        },
    })
}

#[cfg(test)]
mod tests;
