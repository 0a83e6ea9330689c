//! Read-only views of a running runtime for operators: its namespaces, the
//! objects in each (live, hibernated or only stored), and one object's
//! committed storage, alarm and sockets. Reads go straight to LMDB (read
//! transactions, never the writer) and to the socket tables, so looking
//! does not wake, block or change any object.

use serde::Serialize;

use crate::dispatch::NsInner;
use crate::error::Result;
use crate::object::Object;
use crate::storage::{ListOptions, StoredValue};

/// Most objects one listing returns.
pub const MAX_LISTED_OBJECTS: usize = 1_000;
/// Most entries one object view returns.
pub const MAX_VIEWED_ENTRIES: usize = 1_000;

/// One object in a namespace listing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ObjectSummary {
    /// The id, 64 hex digits.
    pub id: String,
    /// The name it was created from, where known.
    pub name: Option<String>,
    /// In memory now.
    pub live: bool,
    /// Has committed data or an alarm.
    pub stored: bool,
    /// Accepted WebSockets open (they survive hibernation).
    pub sockets: usize,
}

/// A page of a namespace listing, in id order.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectPage {
    /// The namespace.
    pub namespace: String,
    /// The objects of this page.
    pub objects: Vec<ObjectSummary>,
    /// Pass this as `after` for the next page; `None` on the last one.
    pub next_after: Option<String>,
}

/// One accepted WebSocket of an object.
#[derive(Debug, Clone, Serialize)]
pub struct SocketView {
    /// The runtime's socket id.
    pub sid: u64,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its attachment: the JSON value set with `set_attachment`.
    pub attachment: Option<serde_json::Value>,
    /// Still open (false once the close is on its way to the object).
    pub open: bool,
}

/// One object: committed storage (a page of it), alarm and sockets.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectView {
    /// The namespace.
    pub namespace: String,
    /// The id, 64 hex digits.
    pub id: String,
    /// The name it was created from, where known.
    pub name: Option<String>,
    /// In memory now.
    pub live: bool,
    /// The committed alarm, ms since the Unix epoch.
    pub alarm_ms: Option<u64>,
    /// Committed entries in key order (an event in progress is not seen).
    pub entries: Vec<(String, StoredValue)>,
    /// Pass this as `after` for the next page of entries; `None` on the
    /// last one.
    pub next_after: Option<String>,
    /// Accepted WebSockets, open or closing.
    pub sockets: Vec<SocketView>,
}

/// Which entries of an object to view.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ViewOptions {
    /// Only keys with this prefix.
    pub prefix: Option<String>,
    /// Keys strictly after this one.
    pub after: Option<String>,
    /// At most this many entries (default and most: [`MAX_VIEWED_ENTRIES`]).
    pub limit: Option<usize>,
}

with_setters!(ViewOptions {
    with_prefix => prefix: Option<String>,
    with_after => after: Option<String>,
    with_limit => limit: Option<usize>,
});

impl ViewOptions {
    /// The listing these options ask for, one more than the page so the
    /// caller knows whether another page follows.
    pub(crate) fn list_options(&self) -> (ListOptions, usize) {
        let page = self
            .limit
            .unwrap_or(MAX_VIEWED_ENTRIES)
            .clamp(1, MAX_VIEWED_ENTRIES);
        let mut o = ListOptions::new().limit(page + 1);
        o.prefix.clone_from(&self.prefix);
        o.start_after.clone_from(&self.after);
        (o, page)
    }
}

/// Cuts `items` to `page`, returning the key to continue after.
pub(crate) fn paginate<T>(
    items: &mut Vec<T>,
    page: usize,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() > page {
        items.truncate(page);
        items.last().map(key)
    } else {
        None
    }
}

/// Views of one namespace for the inspector: read from the live map, the
/// socket tables and committed storage; no object is woken.
impl<O: Object> NsInner<O> {
    pub(crate) fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
        let after = after.map(crate::id::parse_hex).transpose()?;
        let page = limit.clamp(1, MAX_LISTED_OBJECTS);
        let mut all: std::collections::BTreeMap<[u8; 32], ObjectSummary> = Default::default();
        fn entry<'a>(
            all: &'a mut std::collections::BTreeMap<[u8; 32], ObjectSummary>,
            id: [u8; 32],
            name: Option<&str>,
        ) -> &'a mut ObjectSummary {
            let e = all.entry(id).or_insert_with(|| ObjectSummary {
                id: crate::id::hex(&id),
                name: None,
                live: false,
                stored: false,
                sockets: 0,
            });
            if e.name.is_none() {
                e.name = name.map(str::to_string);
            }
            e
        }
        for (id, name) in self.shared.store.catalog(&self.name)? {
            entry(&mut all, id, name.as_deref()).stored = true;
        }
        for slot in self.live.iter() {
            entry(&mut all, *slot.key(), slot.id.name()).live = true;
        }
        for table in self.sockets.iter() {
            let open = crate::sync::lock(&table).list(None).len();
            if open > 0 {
                entry(&mut all, *table.key(), None).sockets = open;
            }
        }
        let mut objects: Vec<ObjectSummary> = match after {
            Some(a) => all
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .map(|(_, v)| v.clone())
                .take(page + 1)
                .collect(),
            None => all.into_values().take(page + 1).collect(),
        };
        let next_after = paginate(&mut objects, page, |o| o.id.clone());
        Ok(ObjectPage {
            namespace: self.name.to_string(),
            objects,
            next_after,
        })
    }

    pub(crate) fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView> {
        let id = self.minter.parse(id)?;
        let key = *id.as_bytes();
        let store = &self.shared.store;
        let name = store.catalog_entry(&key)?.and_then(|(_, n)| n).or_else(|| {
            self.live
                .get(&key)
                .and_then(|s| s.id.name().map(str::to_string))
        });
        let (list, page) = opts.list_options();
        let mut entries: Vec<(String, StoredValue)> =
            crate::storage::list_committed(store, &key, &list)?
                .into_iter()
                .collect();
        let next_after = paginate(&mut entries, page, |(k, _)| k.clone());
        let sockets = self
            .sockets
            .get(&key)
            .map(|t| {
                crate::sync::lock(&t)
                    .entries()
                    .map(|(sid, tags, att, open)| SocketView {
                        sid,
                        tags: tags.to_vec(),
                        attachment: att.and_then(|b| serde_json::from_slice(b).ok()),
                        open,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ObjectView {
            namespace: self.name.to_string(),
            id: id.to_hex(),
            name,
            live: self.live.contains_key(&key),
            alarm_ms: store.alarm(&key)?,
            entries,
            next_after,
            sockets,
        })
    }
}
