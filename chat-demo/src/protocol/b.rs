//! Dialect B, the plain relay: every frame is raw text, in both directions.
//!
//! A B client is an unnamed user: its messages are stored and shown to A and
//! C clients under [`SENDER_NAME`], with [`ChatMessage::plain`] set so that
//! B clients get them back verbatim.
//!
//! ```
//! use chat_demo::protocol::{ChatMessage, b};
//!
//! let text = b::decode("hello")?.expect("not blank");
//! let stored = ChatMessage {
//!     name: b::SENDER_NAME.to_owned(),
//!     message: text,
//!     timestamp: 1,
//!     plain: true,
//!     ..ChatMessage::default()
//! };
//! assert_eq!(b::encode_chat(&stored), "hello");
//! # Ok::<(), chat_demo::protocol::ProtocolError>(())
//! ```

use super::{ChatMessage, MAX_MESSAGE_CHARS, ProtocolError, exceeds_chars};

/// The name under which A and C clients see messages from B clients.
pub const SENDER_NAME: &str = "anonymous";

/// Decodes one text frame from a B client into the message text.
///
/// The text is kept verbatim (not trimmed), as a relay should. A frame that
/// is empty or only whitespace is ignored (`Ok(None)`: nothing is stored,
/// broadcast or answered), as dialect C ignores empty messages.
///
/// # Errors
///
/// [`ProtocolError::MessageTooLong`] for text over [`MAX_MESSAGE_CHARS`]
/// characters (whitespace included); the socket stays open.
pub fn decode(text: &str) -> Result<Option<String>, ProtocolError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if exceeds_chars(text, MAX_MESSAGE_CHARS) {
        return Err(ProtocolError::MessageTooLong);
    }
    Ok(Some(text.to_owned()))
}

/// One chat message as a B client sees it: verbatim when it came from a B
/// client, `<name>: <message>` otherwise.
pub fn encode_chat(message: &ChatMessage) -> String {
    if message.plain {
        message.message.clone()
    } else {
        format!("{}: {}", message.name, message.message)
    }
}

/// An error as a B client sees it: the plain text, e.g.
/// [`ProtocolError::client_text`] or
/// [`RATE_LIMITED`](super::limit::RATE_LIMITED).
pub fn encode_error(text: &str) -> String {
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(name: &str, message: &str, plain: bool) -> ChatMessage {
        ChatMessage {
            name: name.to_owned(),
            message: message.to_owned(),
            timestamp: 1,
            plain,
            ..ChatMessage::default()
        }
    }

    #[test]
    fn text_is_kept_verbatim() {
        assert_eq!(decode("hello"), Ok(Some("hello".into())));
        assert_eq!(decode("  spaced  "), Ok(Some("  spaced  ".into())));
        assert_eq!(
            decode(r#"{"message":"json"}"#),
            Ok(Some(r#"{"message":"json"}"#.into()))
        );
    }

    #[test]
    fn blank_text_is_ignored() {
        for text in ["", " ", "\n\t ", "\u{3000}"] {
            assert_eq!(decode(text), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn length_boundaries() {
        let exactly = "b".repeat(256);
        assert_eq!(decode(&exactly), Ok(Some(exactly.clone())));
        assert_eq!(decode(&"b".repeat(257)), Err(ProtocolError::MessageTooLong));
        let emoji = "🦀".repeat(256);
        assert_eq!(decode(&emoji), Ok(Some(emoji.clone())));
        assert_eq!(
            decode(&"🦀".repeat(257)),
            Err(ProtocolError::MessageTooLong)
        );
        // Surrounding whitespace counts: the text is relayed as sent.
        let padded = format!(" {exactly}");
        assert_eq!(decode(&padded), Err(ProtocolError::MessageTooLong));
    }

    #[test]
    fn plain_messages_are_verbatim_others_are_prefixed() {
        assert_eq!(
            encode_chat(&chat(SENDER_NAME, "hi there", true)),
            "hi there"
        );
        assert_eq!(
            encode_chat(&chat("alice", "hi there", false)),
            "alice: hi there"
        );
        assert_eq!(encode_chat(&chat("a: b", "", false)), "a: b: ");
    }

    #[test]
    fn errors_are_plain_text() {
        assert_eq!(encode_error("Message too long."), "Message too long.");
        assert_eq!(
            encode_error(ProtocolError::MessageTooLong.client_text()),
            "Message too long."
        );
    }
}
