//! Reactions on a message: which users reacted with which emoji, kept in
//! the stored message and changed by one pure step per request
//! ([`Reactions::apply`]), bounded in emoji per message and users per
//! emoji.
//!
//! A user is a name (as everywhere in the chat: names are not identities);
//! one name reacts at most once per emoji, however many sockets it has.
//!
//! ```
//! use chat_demo::protocol::reactions::{Change, Reactions};
//!
//! let mut reactions = Reactions::default();
//! assert_eq!(reactions.apply("alice", "👍", true), Ok(Change::Changed));
//! assert_eq!(reactions.apply("alice", "👍", true), Ok(Change::Unchanged));
//! assert_eq!(reactions.apply("bob", "👍", true), Ok(Change::Changed));
//! assert_eq!(reactions.users("👍"), Some(&["alice".to_owned(), "bob".to_owned()][..]));
//! assert_eq!(reactions.apply("alice", "👍", false), Ok(Change::Changed));
//! assert_eq!(reactions.users("👍"), Some(&["bob".to_owned()][..]));
//! ```

use serde::{Deserialize, Serialize};

use super::{ProtocolError, exceeds_chars};

/// Most different emoji on one message.
pub const MAX_EMOJI_PER_MESSAGE: usize = 8;

/// Most users reacting with one emoji on one message.
pub const MAX_USERS_PER_EMOJI: usize = 32;

/// Longest reaction, in characters: room for an emoji sequence joined with
/// zero-width joiners and variation selectors (a family emoji is 7).
pub const MAX_EMOJI_CHARS: usize = 16;

/// One emoji on a message and who reacted with it, in reaction order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The emoji (any short text without spaces or control characters; the
    /// server does not judge what is an emoji).
    pub emoji: String,
    /// The names that reacted with it, oldest first; never empty in a
    /// stored message.
    pub users: Vec<String>,
}

/// The reactions on one message, in the order each emoji first appeared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reactions(pub Vec<Reaction>);

/// What a request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The reactions changed: store them and tell the room.
    Changed,
    /// The request asked for what already was (a repeated add or a remove
    /// of a reaction that is not there): nothing to store or send.
    Unchanged,
}

impl Reactions {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Who reacted with `emoji`, if anyone did.
    pub fn users(&self, emoji: &str) -> Option<&[String]> {
        self.0
            .iter()
            .find(|r| r.emoji == emoji)
            .map(|r| r.users.as_slice())
    }

    /// Adds (`on`) or removes `user`'s `emoji`.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::TooManyReactions`] when adding would pass
    /// [`MAX_EMOJI_PER_MESSAGE`] or [`MAX_USERS_PER_EMOJI`]; nothing changes
    /// then. Removing never fails.
    pub fn apply(&mut self, user: &str, emoji: &str, on: bool) -> Result<Change, ProtocolError> {
        let index = self.0.iter().position(|r| r.emoji == emoji);
        match (index, on) {
            (None, false) => Ok(Change::Unchanged),
            (Some(i), false) => {
                let users = &mut self.0[i].users;
                let Some(at) = users.iter().position(|u| u == user) else {
                    return Ok(Change::Unchanged);
                };
                users.remove(at);
                if users.is_empty() {
                    self.0.remove(i);
                }
                Ok(Change::Changed)
            }
            (None, true) => {
                if self.0.len() >= MAX_EMOJI_PER_MESSAGE {
                    return Err(ProtocolError::TooManyReactions);
                }
                self.0.push(Reaction {
                    emoji: emoji.to_owned(),
                    users: vec![user.to_owned()],
                });
                Ok(Change::Changed)
            }
            (Some(i), true) => {
                let users = &mut self.0[i].users;
                if users.iter().any(|u| u == user) {
                    return Ok(Change::Unchanged);
                }
                if users.len() >= MAX_USERS_PER_EMOJI {
                    return Err(ProtocolError::TooManyReactions);
                }
                users.push(user.to_owned());
                Ok(Change::Changed)
            }
        }
    }
}

/// Checks a requested reaction: 1 to [`MAX_EMOJI_CHARS`] characters, no
/// whitespace and no control characters.
///
/// # Errors
///
/// [`ProtocolError::InvalidReaction`] otherwise.
pub fn check_emoji(emoji: &str) -> Result<(), ProtocolError> {
    let bad = emoji.is_empty()
        || exceeds_chars(emoji, MAX_EMOJI_CHARS)
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        Err(ProtocolError::InvalidReaction)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn emoji_shapes() {
        for good in ["👍", "❤️", "👨‍👩‍👧‍👦", "+1", "🇫🇷"] {
            assert_eq!(check_emoji(good), Ok(()), "{good}");
        }
        for bad in ["", " ", "👍 ", "a\u{0}", "\n", &"x".repeat(17)] {
            assert_eq!(
                check_emoji(bad),
                Err(ProtocolError::InvalidReaction),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bounds_refuse_and_change_nothing() {
        let mut r = Reactions::default();
        for n in 0..MAX_EMOJI_PER_MESSAGE {
            assert_eq!(r.apply("a", &format!("e{n}"), true), Ok(Change::Changed));
        }
        let before = r.clone();
        assert_eq!(
            r.apply("a", "one-more", true),
            Err(ProtocolError::TooManyReactions)
        );
        assert_eq!(r, before);
        for n in 1..MAX_USERS_PER_EMOJI {
            assert_eq!(r.apply(&format!("u{n}"), "e0", true), Ok(Change::Changed));
        }
        assert_eq!(
            r.apply("late", "e0", true),
            Err(ProtocolError::TooManyReactions)
        );
        // Removing makes room again.
        assert_eq!(r.apply("a", "e0", false), Ok(Change::Changed));
        assert_eq!(r.apply("late", "e0", true), Ok(Change::Changed));
    }

    #[derive(Clone, Debug)]
    struct Op {
        user: u8,
        emoji: u8,
        on: bool,
    }

    fn op() -> impl Strategy<Value = Op> {
        (0u8..40, 0u8..10, any::<bool>()).prop_map(|(user, emoji, on)| Op { user, emoji, on })
    }

    proptest! {
        /// Against a set of (emoji, user) pairs: the same contents after
        /// any sequence, `Changed` exactly when the set changed, bounds
        /// never passed, no empty emoji kept.
        #[test]
        fn matches_a_set_model(ops in proptest::collection::vec(op(), 0..300)) {
            let mut reactions = Reactions::default();
            let mut model: BTreeSet<(String, String)> = BTreeSet::new();
            for Op { user, emoji, on } in ops {
                let (user, emoji) = (format!("u{user}"), format!("e{emoji}"));
                let emoji_count = model.iter().map(|(e, _)| e).collect::<BTreeSet<_>>().len();
                let users_of = model.iter().filter(|(e, _)| *e == emoji).count();
                let key = (emoji.clone(), user.clone());
                let expected = if !on {
                    Ok(if model.remove(&key) { Change::Changed } else { Change::Unchanged })
                } else if model.contains(&key) {
                    Ok(Change::Unchanged)
                } else if (users_of == 0 && emoji_count >= MAX_EMOJI_PER_MESSAGE)
                    || users_of >= MAX_USERS_PER_EMOJI
                {
                    Err(ProtocolError::TooManyReactions)
                } else {
                    model.insert(key);
                    Ok(Change::Changed)
                };
                prop_assert_eq!(reactions.apply(&user, &emoji, on), expected);
                let contents: BTreeSet<(String, String)> = reactions
                    .0
                    .iter()
                    .flat_map(|r| r.users.iter().map(|u| (r.emoji.clone(), u.clone())))
                    .collect();
                prop_assert_eq!(&contents, &model);
                prop_assert!(reactions.0.len() <= MAX_EMOJI_PER_MESSAGE);
                prop_assert!(reactions.0.iter().all(|r| !r.users.is_empty()
                    && r.users.len() <= MAX_USERS_PER_EMOJI));
            }
        }
    }
}
