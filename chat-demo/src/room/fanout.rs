//! Who gets which frame: the fan-out of joins, leaves, chat messages,
//! presence and errors over the room's sessions, per dialect and per the
//! extensions each session opted in to.

use objects::{Context, WebSocket};

use super::frames::CountedSend;
use super::session::Members;
use crate::protocol::a::{self, Extensions};
use crate::protocol::{ChatMessage, Dialect, c};

/// Whether a user arrived or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Presence {
    Joined,
    Left,
}

/// Tells the named A sessions (`joined`/`quit`) and the C sessions
/// (`joined the chat`/`left the chat`), except `who` itself, that `name`
/// arrived or left. B clients get no notices.
pub(super) fn announce(
    ctx: &mut Context,
    members: &Members<'_>,
    who: WebSocket,
    name: &str,
    what: Presence,
) {
    let to_a = members.select(|w, s| w != who && s.is_named_a());
    let to_c = members.select(|w, s| w != who && s.dialect == Dialect::C);
    if !to_a.is_empty() {
        let frame = match what {
            Presence::Joined => a::encode_joined(name),
            Presence::Left => a::encode_quit(name),
        };
        ctx.broadcast_to(to_a, frame);
    }
    if !to_c.is_empty() {
        let frame = match what {
            Presence::Joined => c::encode_joined(name),
            Presence::Left => c::encode_left(name),
        };
        ctx.broadcast_to(to_c, frame);
    }
}

/// A chat message to every named A session, each in the form its
/// extensions ask for (at most four forms: `threads` and `reactions` on or
/// off).
pub(super) fn broadcast_to_a(ctx: &mut Context, members: &Members<'_>, message: &ChatMessage) {
    for threads in [false, true] {
        for reactions in [false, true] {
            let to = members.select(|_, s| {
                s.is_named_a() && s.ext.threads == threads && s.ext.reactions == reactions
            });
            if to.is_empty() {
                continue;
            }
            let ext = Extensions {
                threads,
                reactions,
                ..Extensions::default()
            };
            ctx.broadcast_to(to, a::encode_chat_ext(message, ext));
        }
    }
}

/// Extension `presence`: the room's count and names, to every named A
/// session and every C session that opted in.
pub(super) fn send_presence(ctx: &mut Context, members: &Members<'_>) {
    let to = members.select(|_, s| {
        s.ext.presence && (s.is_named_a() || (s.dialect == Dialect::C && s.name.is_some()))
    });
    if to.is_empty() {
        return;
    }
    let frame = a::encode_presence(members.count(), &members.names_except(None));
    ctx.broadcast_to(to, frame);
}
