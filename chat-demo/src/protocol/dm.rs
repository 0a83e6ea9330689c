//! Extension `dm`: direct messages between two users of a room.
//!
//! Names are not identities (anyone can type any name), so a direct
//! message is addressed to a name but delivered to a *user key*: a random
//! secret the client keeps (our page in local storage) and presents in its
//! hello. While a session holding a key is connected under a name, no
//! other key may say hello under that name in the room, and a message to
//! the name goes to every socket of that key. The room never stores the
//! key itself, only a hash of it ([`user_id`]); the two parties' ids are
//! stored with each message, and only sessions presenting one of the two
//! keys ever get it, live or from history.
//!
//! ```
//! use chat_demo::protocol::dm::{check_key, user_id};
//!
//! let key = "0123456789abcdef0123456789abcdef";
//! assert!(check_key(key).is_ok());
//! assert_eq!(user_id(key).len(), 32);
//! assert_ne!(user_id(key), user_id("another-key-of-16-chars"));
//! assert!(check_key("short").is_err());
//! ```

use serde::{Deserialize, Serialize};

use super::{ProtocolError, exceeds_chars, to_json};

/// Shortest user key, in characters.
pub const MIN_KEY_CHARS: usize = 16;

/// Longest user key, in characters.
pub const MAX_KEY_CHARS: usize = 128;

/// Direct messages a returning user gets after `ready`, newest last.
pub const DM_HISTORY: usize = 50;

/// Checks a user key: [`MIN_KEY_CHARS`] to [`MAX_KEY_CHARS`] of ASCII
/// letters, digits, `-` and `_`.
///
/// # Errors
///
/// [`ProtocolError::InvalidKey`] otherwise.
pub fn check_key(key: &str) -> Result<(), ProtocolError> {
    let ok = key.len() >= MIN_KEY_CHARS
        && !exceeds_chars(key, MAX_KEY_CHARS)
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::InvalidKey)
    }
}

/// The id a user key stands for in storage and in the sessions: the first
/// 16 bytes of its BLAKE3 hash, as 32 hex digits. The key itself is never
/// stored, so reading the store does not let anyone pose as a user.
pub fn user_id(key: &str) -> String {
    let hash = blake3::hash(key.as_bytes());
    hash.to_hex()[..32].to_owned()
}

/// A stored direct message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectMessage {
    /// The sender's name when sent.
    pub from: String,
    /// The recipient's name when sent.
    pub to: String,
    /// The sender's [`user_id`].
    pub from_id: String,
    /// The recipient's [`user_id`].
    pub to_id: String,
    /// The text, at most [`MAX_MESSAGE_CHARS`](super::MAX_MESSAGE_CHARS)
    /// characters.
    pub message: String,
    /// The room timestamp (from the same sequence as chat messages).
    pub timestamp: u64,
}

/// `{"dm":{"from":..,"to":..,"message":..,"timestamp":..}}`: a direct
/// message, to its two parties only (live, or after `ready` from history).
/// No user ids on the wire.
pub fn encode_dm(dm: &DirectMessage) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        dm: Body<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        from: &'a str,
        to: &'a str,
        message: &'a str,
        timestamp: u64,
    }
    to_json(&Frame {
        dm: Body {
            from: &dm.from,
            to: &dm.to,
            message: &dm.message,
            timestamp: dm.timestamp,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes() {
        assert!(check_key(&"a".repeat(16)).is_ok());
        assert!(check_key(&"Z9-_".repeat(32)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(15),
            "a".repeat(129),
            format!("{} ", "a".repeat(16)),
            "ü".repeat(16),
            "a/b".repeat(6),
        ] {
            assert_eq!(check_key(&bad), Err(ProtocolError::InvalidKey), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_stable_hex_and_hide_the_key() {
        let key = "k".repeat(20);
        let id = user_id(&key);
        assert_eq!(id, user_id(&key));
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!id.contains(&key));
    }

    #[test]
    fn frames_carry_no_ids() {
        let dm = DirectMessage {
            from: "alice".into(),
            to: "bob".into(),
            from_id: "1".repeat(32),
            to_id: "2".repeat(32),
            message: "psst".into(),
            timestamp: 5,
        };
        assert_eq!(
            encode_dm(&dm),
            r#"{"dm":{"from":"alice","to":"bob","message":"psst","timestamp":5}}"#
        );
    }
}
