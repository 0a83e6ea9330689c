//! The sockets an object has accepted: tags, attachments, auto-response
//! state. Pure (generic over the handle that reaches the socket), so the
//! rules are tested without sockets. It outlives the object instance: this
//! is what survives hibernation.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::WebSocketError;

/// Most distinct tags per socket (Cloudflare's limit).
pub const MAX_TAGS: usize = 10;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 256;
/// Most sockets one object may hold (Cloudflare's cap).
pub const MAX_SOCKETS: usize = 32_768;
/// Largest attachment, encoded (workerd's current limit).
pub const MAX_ATTACHMENT_BYTES: usize = 16 * 1024;
/// Longest auto-response request or response string.
pub const MAX_AUTO_RESPONSE_CHARS: usize = 2048;

#[derive(Debug)]
pub(crate) struct Entry<H> {
    pub(crate) handle: H,
    tags: Vec<String>,
    attachment: Option<Bytes>,
    auto_response_ms: Option<u64>,
    /// The peer is gone (or we closed it); the close event is on its way.
    closed: bool,
    /// The accepting event committed and its 101 went out: from here on the
    /// object hears of this socket's end.
    live: bool,
}

#[derive(Debug)]
pub(crate) struct Registry<H> {
    sockets: BTreeMap<u64, Entry<H>>,
    auto_response: Option<(String, String)>,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            sockets: BTreeMap::new(),
            auto_response: None,
        }
    }
}

/// Checks tags: duplicates dropped, at most [`MAX_TAGS`] distinct, each at
/// most [`MAX_TAG_CHARS`] characters.
pub(crate) fn check_tags(tags: &[&str]) -> Result<Vec<String>, WebSocketError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let len = t.chars().count();
        if len > MAX_TAG_CHARS {
            return Err(WebSocketError::TagTooLong {
                len,
                max: MAX_TAG_CHARS,
            });
        }
        if !out.iter().any(|o| o == t) {
            out.push((*t).to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(WebSocketError::TooManyTags {
            len: out.len(),
            max: MAX_TAGS,
        });
    }
    Ok(out)
}

impl<H> Registry<H> {
    pub(crate) fn accept(
        &mut self,
        sid: u64,
        handle: H,
        tags: Vec<String>,
    ) -> Result<(), WebSocketError> {
        if self.sockets.len() >= MAX_SOCKETS {
            return Err(WebSocketError::TooManySockets(MAX_SOCKETS));
        }
        self.sockets.insert(
            sid,
            Entry {
                handle,
                tags,
                attachment: None,
                auto_response_ms: None,
                closed: false,
                live: false,
            },
        );
        Ok(())
    }

    /// Open sockets, optionally only those with `tag`, in accept order.
    pub(crate) fn list(&self, tag: Option<&str>) -> Vec<u64> {
        self.sockets
            .iter()
            .filter(|(_, e)| !e.closed)
            .filter(|(_, e)| tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
            .map(|(sid, _)| *sid)
            .collect()
    }

    /// Every socket, closing ones too: (sid, tags, attachment, open).
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, &[String], Option<&Bytes>, bool)> {
        self.sockets
            .iter()
            .map(|(sid, e)| (*sid, e.tags.as_slice(), e.attachment.as_ref(), !e.closed))
    }

    pub(crate) fn tags(&self, sid: u64) -> Option<&[String]> {
        self.sockets.get(&sid).map(|e| e.tags.as_slice())
    }

    pub(crate) fn handle(&self, sid: u64) -> Option<&H> {
        self.sockets
            .get(&sid)
            .filter(|e| !e.closed)
            .map(|e| &e.handle)
    }

    /// A socket's handle, closing or not.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn any_handle(&self, sid: u64) -> Option<&H> {
        self.sockets.get(&sid).map(|e| &e.handle)
    }

    /// Replaces a socket's tags (an edge mirroring what the owner holds).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn set_tags(&mut self, sid: u64, tags: Vec<String>) {
        if let Some(e) = self.sockets.get_mut(&sid) {
            e.tags = tags;
        }
    }

    /// Replaces the attachment; an oversize one is refused and the old one
    /// kept.
    pub(crate) fn set_attachment(
        &mut self,
        sid: u64,
        value: Option<Bytes>,
    ) -> Result<(), WebSocketError> {
        if let Some(v) = &value
            && v.len() > MAX_ATTACHMENT_BYTES
        {
            return Err(WebSocketError::AttachmentTooLarge {
                len: v.len(),
                max: MAX_ATTACHMENT_BYTES,
            });
        }
        let e = self
            .sockets
            .get_mut(&sid)
            .ok_or(WebSocketError::UnknownSocket)?;
        e.attachment = value;
        Ok(())
    }

    pub(crate) fn attachment(&self, sid: u64) -> Result<Option<&Bytes>, WebSocketError> {
        self.sockets
            .get(&sid)
            .map(|e| e.attachment.as_ref())
            .ok_or(WebSocketError::UnknownSocket)
    }

    /// Marks a socket closed (gone from listings); returns false if it was
    /// already closed or unknown, so a close is reported once.
    pub(crate) fn mark_closed(&mut self, sid: u64) -> bool {
        match self.sockets.get_mut(&sid) {
            Some(e) if !e.closed => {
                e.closed = true;
                true
            }
            _ => false,
        }
    }

    /// The accepting event committed.
    pub(crate) fn mark_live(&mut self, sid: u64) {
        if let Some(e) = self.sockets.get_mut(&sid) {
            e.live = true;
        }
    }

    pub(crate) fn is_live(&self, sid: u64) -> bool {
        self.sockets.get(&sid).is_some_and(|e| e.live)
    }

    pub(crate) fn remove(&mut self, sid: u64) -> Option<H> {
        self.sockets.remove(&sid).map(|e| e.handle)
    }

    pub(crate) fn set_auto_response(
        &mut self,
        pair: Option<(String, String)>,
    ) -> Result<(), WebSocketError> {
        if let Some((req, resp)) = &pair {
            for s in [req, resp] {
                let len = s.chars().count();
                if len > MAX_AUTO_RESPONSE_CHARS {
                    return Err(WebSocketError::AutoResponseTooLong {
                        len,
                        max: MAX_AUTO_RESPONSE_CHARS,
                    });
                }
            }
        }
        self.auto_response = pair;
        Ok(())
    }

    pub(crate) fn auto_response(&self) -> Option<&(String, String)> {
        self.auto_response.as_ref()
    }

    /// If `text` is the auto-response request, records the time and returns
    /// the response.
    pub(crate) fn auto_reply(&mut self, sid: u64, text: &str, now_ms: u64) -> Option<String> {
        let (req, resp) = self.auto_response.as_ref()?;
        if req != text {
            return None;
        }
        let resp = resp.clone();
        if let Some(e) = self.sockets.get_mut(&sid) {
            e.auto_response_ms = Some(now_ms);
        }
        Some(resp)
    }

    /// Records an auto-response answered elsewhere (on the node the
    /// socket's connection is on).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn stamp_auto_response(&mut self, sid: u64, ms: u64) {
        if let Some(e) = self.sockets.get_mut(&sid) {
            e.auto_response_ms = Some(ms);
        }
    }

    pub(crate) fn auto_response_ms(&self, sid: u64) -> Option<u64> {
        self.sockets.get(&sid).and_then(|e| e.auto_response_ms)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Every socket's handle, for shutdown.
    pub(crate) fn handles(&self) -> impl Iterator<Item = &H> {
        self.sockets.values().map(|e| &e.handle)
    }

    /// The live sockets, for moving them with their object to another
    /// node: what the new owner needs to keep them. Closing ones too:
    /// their close is on its way, and reaches the new owner the way their
    /// other events do.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn export(&self) -> Vec<Exported<'_, H>> {
        self.sockets
            .iter()
            .filter(|(_, e)| e.live)
            .map(|(sid, e)| Exported {
                sid: *sid,
                handle: &e.handle,
                tags: &e.tags,
                attachment: e.attachment.as_ref(),
                auto_response_ms: e.auto_response_ms,
            })
            .collect()
    }

    /// Takes in a socket that was live on another node (its object moved
    /// here): live and open at once (a close on its way comes after it),
    /// with its tags, attachment and auto-response time. The cap was kept
    /// where it was accepted.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn adopt(&mut self, sid: u64, handle: H, moved: Moved) {
        self.sockets.insert(
            sid,
            Entry {
                handle,
                tags: moved.tags,
                attachment: moved.attachment,
                auto_response_ms: moved.auto_response_ms,
                closed: false,
                live: true,
            },
        );
    }

    /// Points a socket at another handle (its connection's node took it
    /// back after a move); false if it is gone.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn set_handle(&mut self, sid: u64, handle: H) -> bool {
        match self.sockets.get_mut(&sid) {
            Some(e) => {
                e.handle = handle;
                true
            }
            None => false,
        }
    }

    /// Keeps only the sockets whose handle `keep` accepts.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn retain(&mut self, keep: impl Fn(&H) -> bool) {
        self.sockets.retain(|_, e| keep(&e.handle));
    }
}

/// A socket as [`Registry::export`] shows it.
#[derive(Debug)]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct Exported<'a, H> {
    pub(crate) sid: u64,
    pub(crate) handle: &'a H,
    pub(crate) tags: &'a [String],
    pub(crate) attachment: Option<&'a Bytes>,
    pub(crate) auto_response_ms: Option<u64>,
}

/// What a socket brings when it moves with its object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    pub(crate) tags: Vec<String>,
    pub(crate) attachment: Option<Bytes>,
    pub(crate) auto_response_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_and_deduplicated() {
        assert_eq!(
            check_tags(&["a", "b", "a"]),
            Ok(vec!["a".into(), "b".into()])
        );
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = eleven.iter().map(String::as_str).collect();
        assert!(matches!(
            check_tags(&refs),
            Err(WebSocketError::TooManyTags { len: 11, .. })
        ));
        // Ten distinct plus duplicates is fine.
        let mut ten: Vec<&str> = refs[..10].to_vec();
        ten.push("0");
        assert_eq!(check_tags(&ten).map(|t| t.len()), Ok(10));
        let long = "é".repeat(257);
        assert!(matches!(
            check_tags(&[&long]),
            Err(WebSocketError::TagTooLong { len: 257, .. })
        ));
        assert!(check_tags(&[&"é".repeat(256)]).is_ok());
    }

    #[test]
    fn listing_attachments_and_close() {
        let mut r: Registry<()> = Registry::default();
        r.accept(1, (), vec!["x".into()]).expect("accept");
        r.accept(2, (), vec![]).expect("accept");
        assert_eq!(r.list(None), vec![1, 2]);
        assert_eq!(r.list(Some("x")), vec![1]);
        r.set_attachment(1, Some(Bytes::from_static(b"{}")))
            .expect("set");
        let big = Bytes::from(vec![0u8; MAX_ATTACHMENT_BYTES + 1]);
        assert!(r.set_attachment(1, Some(big)).is_err());
        assert_eq!(
            r.attachment(1),
            Ok(Some(&Bytes::from_static(b"{}"))),
            "old value kept"
        );
        assert!(r.mark_closed(1));
        assert!(!r.mark_closed(1), "a close is reported once");
        assert_eq!(r.list(None), vec![2]);
        assert!(r.handle(1).is_none());
        assert!(r.attachment(1).is_ok(), "readable until removed");
        r.remove(1);
        assert_eq!(r.attachment(1), Err(WebSocketError::UnknownSocket));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn auto_response_records_time() {
        let mut r: Registry<()> = Registry::default();
        r.accept(1, (), vec![]).expect("accept");
        assert_eq!(r.auto_reply(1, "ping", 5), None);
        r.set_auto_response(Some(("ping".into(), "pong".into())))
            .expect("set");
        assert_eq!(r.auto_reply(1, "ping", 5), Some("pong".into()));
        assert_eq!(r.auto_reply(1, "other", 6), None);
        assert_eq!(r.auto_response_ms(1), Some(5));
        assert!(
            r.set_auto_response(Some(("x".repeat(2049), String::new())))
                .is_err()
        );
    }

    #[test]
    fn a_moved_socket_keeps_what_it_had() {
        let mut from: Registry<&str> = Registry::default();
        from.accept(1, "a", vec!["x".into(), "y".into()])
            .expect("accept");
        from.accept(2, "b", vec![]).expect("accept");
        from.accept(3, "c", vec![]).expect("accept");
        from.mark_live(1);
        from.mark_live(2);
        from.set_attachment(1, Some(Bytes::from_static(b"who")))
            .expect("set");
        from.stamp_auto_response(1, 42);
        assert!(from.mark_closed(2));
        // Only live sockets move (3 was never confirmed).
        let out = from.export();
        assert_eq!(
            out.iter().map(|e| (e.sid, *e.handle)).collect::<Vec<_>>(),
            [(1, "a"), (2, "b")]
        );
        let mut to: Registry<&str> = Registry::default();
        for (n, e) in out.iter().enumerate() {
            let moved = Moved {
                tags: e.tags.to_vec(),
                attachment: e.attachment.cloned(),
                auto_response_ms: e.auto_response_ms,
            };
            to.adopt(10 + n as u64, "parked", moved);
        }
        assert_eq!(to.list(None), vec![10, 11], "open until its close arrives");
        assert_eq!(to.list(Some("y")), vec![10]);
        assert!(to.is_live(10) && to.is_live(11));
        assert_eq!(to.attachment(10), Ok(Some(&Bytes::from_static(b"who"))));
        assert_eq!(to.auto_response_ms(10), Some(42));
        assert!(to.mark_closed(11), "and its close is reported then");
        assert!(to.set_handle(10, "claimed"));
        assert_eq!(to.handle(10), Some(&"claimed"));
        assert!(!to.set_handle(99, "nobody"));
        to.retain(|h| *h != "parked");
        assert_eq!(to.len(), 1);
    }

    #[test]
    fn the_cap_is_enforced() {
        let mut r: Registry<()> = Registry::default();
        for i in 0..MAX_SOCKETS as u64 {
            r.accept(i, (), vec![]).expect("accept");
        }
        assert!(matches!(
            r.accept(u64::MAX, (), vec![]),
            Err(WebSocketError::TooManySockets(_))
        ));
    }
}
