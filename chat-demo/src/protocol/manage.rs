//! Extension `manage`: room ownership. A client claims a room nobody owns
//! and gets an owner token, once; with it the owner sets the room's topic
//! or deletes the room. Rooms that nobody claims (every room the seeds'
//! clients create by joining) behave as before.
//!
//! ```
//! use chat_demo::protocol::manage::{check_topic, token_id};
//!
//! assert!(check_topic("Weekly sync").is_ok());
//! assert_eq!(token_id("secret").len(), 64);
//! ```

use serde::Serialize;

use super::{ProtocolError, exceeds_chars, to_json};

/// Longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 120;

/// Why a dialect-B upgrade into a password-protected room is refused (the
/// body of the HTTP 403).
pub const PLAIN_REFUSED_REASON: &str =
    "This room needs a password; plain relay clients cannot join it.";

/// The close code for the sockets of a deleted room (an application code,
/// so clients can tell it from a server shutdown).
pub const DELETED_CLOSE_CODE: u16 = 4001;

/// The close reason for the sockets of a deleted room.
pub const DELETED_REASON: &str = "This room was deleted by its owner.";

/// Checks a topic: at most [`MAX_TOPIC_CHARS`] characters, no control
/// characters (an empty topic clears it).
///
/// # Errors
///
/// [`ProtocolError::InvalidManage`] otherwise.
pub fn check_topic(topic: &str) -> Result<(), ProtocolError> {
    if exceeds_chars(topic, MAX_TOPIC_CHARS) || topic.chars().any(char::is_control) {
        Err(ProtocolError::InvalidManage)
    } else {
        Ok(())
    }
}

/// What the room stores of an owner token: its BLAKE3 hash in hex (the
/// token itself is never stored).
pub fn token_id(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// `{"owner":{"token":".."}}`: the owner token, to the claimer only, once.
pub fn encode_owner(token: &str) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        owner: Body<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        token: &'a str,
    }
    to_json(&Frame {
        owner: Body { token },
    })
}

/// `{"room":{"owned":bool,"topic":"..","password":bool}}`: the room's
/// state, after `ready` and whenever it changes, to sessions with `manage`.
pub fn encode_room(owned: bool, topic: &str, password: bool) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        room: Body<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        owned: bool,
        topic: &'a str,
        password: bool,
    }
    to_json(&Frame {
        room: Body {
            owned,
            topic,
            password,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(check_topic("").is_ok());
        assert!(check_topic(&"t".repeat(120)).is_ok());
        assert_eq!(
            check_topic(&"t".repeat(121)),
            Err(ProtocolError::InvalidManage)
        );
        assert_eq!(check_topic("a\nb"), Err(ProtocolError::InvalidManage));
    }

    #[test]
    fn frames() {
        assert_eq!(encode_owner("t"), r#"{"owner":{"token":"t"}}"#);
        assert_eq!(
            encode_room(true, "<b>hi</b>", false),
            r#"{"room":{"owned":true,"topic":"<b>hi</b>","password":false}}"#
        );
        assert_ne!(token_id("a"), token_id("b"));
    }
}
