//! The write overlay: an event's uncommitted writes, read before committed
//! data so an event reads its own writes. Pure: no I/O, no clock.
//!
//! Savepoints (an undo journal) let one event's writes be rolled back while
//! earlier events' writes in the same commit group stay, and back
//! `Storage::transaction`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::list::KeyRange;

/// What the overlay knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// Written in this overlay.
    Value(&'a Bytes),
    /// Deleted in this overlay (or everything was cleared).
    Deleted,
    /// Not touched: read committed data.
    Miss,
}

/// One key's overlay entry.
#[derive(Debug, Clone)]
struct Slot {
    /// The new value; `None` is a delete.
    value: Option<Bytes>,
    /// The savepoint that last journaled this key's earlier entry (0:
    /// none). While that savepoint is the innermost one, later writes of
    /// the key need no journal entry of their own: rolling back restores
    /// the earlier one.
    journaled: u64,
}

#[derive(Debug)]
enum Undo {
    /// The key's previous overlay entry (`None`: it had none).
    Key(Vec<u8>, Option<Slot>),
    /// The whole state before a `clear`.
    Clear {
        writes: BTreeMap<Vec<u8>, Slot>,
        cleared: bool,
    },
    /// The alarm change before a `set_alarm`/`delete_alarm`.
    Alarm(Option<Option<u64>>),
}

/// Uncommitted writes of one object.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Key to new value.
    writes: BTreeMap<Vec<u8>, Slot>,
    /// `delete_all` ran: committed data is hidden and will be removed.
    cleared: bool,
    /// `Some(x)`: the alarm becomes `x` at commit.
    alarm: Option<Option<u64>>,
    /// Undo journal, kept only while a savepoint is open. It holds at most
    /// one entry per key and savepoint, so an event that writes one key
    /// many times keeps one entry, not one per write.
    undo: Vec<Undo>,
    /// The innermost open savepoint's serial (0: none is open, and nothing
    /// is journaled).
    innermost: u64,
    /// The last serial handed out; serials are never reused.
    serials: u64,
    /// Bumped by every `take` (a commit inside an event): savepoints from
    /// before it roll back only what was written after it.
    epoch: u64,
    /// Approximate bytes held, for bounding an event's buffer.
    bytes: usize,
}

/// A position to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Savepoint {
    epoch: u64,
    at: usize,
    serial: u64,
    /// The savepoint that was innermost before this one.
    outer: u64,
}

/// Everything an overlay turns into at commit.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) cleared: bool,
    pub(crate) writes: Vec<(Vec<u8>, Option<Bytes>)>,
    pub(crate) alarm: Option<Option<u64>>,
}

impl Overlay {
    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        match self.writes.get(key).map(|s| &s.value) {
            Some(Some(v)) => Lookup::Value(v),
            Some(None) => Lookup::Deleted,
            None if self.cleared => Lookup::Deleted,
            None => Lookup::Miss,
        }
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Bytes) {
        self.bytes += key.len() + value.len();
        self.set(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.set(key, None);
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Bytes>) {
        use std::collections::btree_map::Entry;
        let journal = self.journaling();
        let innermost = self.innermost;
        match self.writes.entry(key) {
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                if !journal || slot.journaled == innermost {
                    slot.value = value;
                } else {
                    let old = std::mem::replace(
                        slot,
                        Slot {
                            value,
                            journaled: innermost,
                        },
                    );
                    let key = e.key().clone();
                    self.undo.push(Undo::Key(key, Some(old)));
                }
            }
            Entry::Vacant(e) => {
                if journal {
                    self.undo.push(Undo::Key(e.key().clone(), None));
                }
                e.insert(Slot {
                    value,
                    journaled: innermost,
                });
            }
        }
    }

    /// Hides all committed data and forgets pending writes; the alarm is
    /// deleted too (Cloudflare's `delete_all_deletes_alarm` default).
    pub(crate) fn clear(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        if self.journaling() {
            self.undo.push(Undo::Clear {
                writes,
                cleared: self.cleared,
            });
        }
        self.cleared = true;
        self.set_alarm(None);
    }

    pub(crate) fn set_alarm(&mut self, at: Option<u64>) {
        let old = self.alarm.replace(at);
        if self.journaling() {
            self.undo.push(Undo::Alarm(old));
        }
    }

    /// The alarm as changed by this overlay: `None` if untouched.
    pub(crate) fn alarm(&self) -> Option<Option<u64>> {
        self.alarm
    }

    pub(crate) fn cleared(&self) -> bool {
        self.cleared
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Overlay entries in `range`, in listing order.
    pub(crate) fn range<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (Vec<u8>, Option<Bytes>)> + 'a> {
        let it = self
            .writes
            .range::<[u8], _>(range.as_slices())
            .map(|(k, s)| (k.clone(), s.value.clone()));
        if range.reverse {
            Box::new(it.rev())
        } else {
            Box::new(it)
        }
    }

    /// A savepoint is open: writes are journaled.
    fn journaling(&self) -> bool {
        self.innermost != 0
    }

    /// Opens a savepoint. Savepoints nest: each is released or rolled
    /// back before the one opened before it.
    pub(crate) fn savepoint(&mut self) -> Savepoint {
        self.serials += 1;
        let sp = Savepoint {
            epoch: self.epoch,
            at: self.undo.len(),
            serial: self.serials,
            outer: self.innermost,
        };
        self.innermost = sp.serial;
        sp
    }

    /// Keeps the writes made since `sp`.
    pub(crate) fn release(&mut self, sp: Savepoint) {
        debug_assert_eq!(sp.serial, self.innermost, "savepoints nest");
        self.innermost = sp.outer;
        if !self.journaling() {
            self.undo.clear();
        } else {
            debug_assert!(sp.epoch != self.epoch || sp.at <= self.undo.len());
        }
    }

    /// Undoes every write made since `sp`.
    pub(crate) fn rollback(&mut self, sp: Savepoint) {
        // What was committed since the savepoint stays committed.
        let at = if sp.epoch == self.epoch { sp.at } else { 0 };
        while self.undo.len() > at {
            match self.undo.pop() {
                Some(Undo::Key(k, Some(old))) => {
                    self.writes.insert(k, old);
                }
                Some(Undo::Key(k, None)) => {
                    self.writes.remove(&k);
                }
                Some(Undo::Clear { writes, cleared }) => {
                    self.writes = writes;
                    self.cleared = cleared;
                }
                Some(Undo::Alarm(old)) => self.alarm = old,
                None => break,
            }
        }
        self.release(sp);
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.cleared && self.writes.is_empty() && self.alarm.is_none()
    }

    /// Takes the pending changes, leaving the overlay empty. Open savepoints
    /// stay open, but a commit makes everything before it permanent.
    pub(crate) fn take(&mut self) -> Changes {
        let taken = std::mem::replace(
            self,
            Overlay {
                innermost: self.innermost,
                serials: self.serials,
                epoch: self.epoch + 1,
                ..Overlay::default()
            },
        );
        Changes {
            cleared: taken.cleared,
            writes: taken
                .writes
                .into_iter()
                .map(|(k, s)| (k, s.value))
                .collect(),
            alarm: taken.alarm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn read_your_writes() {
        let mut o = Overlay::default();
        assert_eq!(o.lookup(b"k"), Lookup::Miss);
        o.put(b"k".to_vec(), b("1"));
        assert_eq!(o.lookup(b"k"), Lookup::Value(&b("1")));
        o.delete(b"k".to_vec());
        assert_eq!(o.lookup(b"k"), Lookup::Deleted);
        o.clear();
        assert_eq!(o.lookup(b"other"), Lookup::Deleted);
        o.put(b"x".to_vec(), b("2"));
        assert_eq!(o.lookup(b"x"), Lookup::Value(&b("2")));
        assert_eq!(o.alarm(), Some(None));
    }

    #[test]
    fn savepoints_roll_back_exactly() {
        let mut o = Overlay::default();
        o.put(b"a".to_vec(), b("1"));
        o.set_alarm(Some(5));
        let sp = o.savepoint();
        o.put(b"a".to_vec(), b("2"));
        o.put(b"b".to_vec(), b("3"));
        o.clear();
        o.put(b"c".to_vec(), b("4"));
        o.set_alarm(Some(9));
        let inner = o.savepoint();
        o.delete(b"c".to_vec());
        o.rollback(inner);
        assert_eq!(o.lookup(b"c"), Lookup::Value(&b("4")));
        o.rollback(sp);
        assert_eq!(o.lookup(b"a"), Lookup::Value(&b("1")));
        assert_eq!(o.lookup(b"b"), Lookup::Miss);
        assert_eq!(o.lookup(b"c"), Lookup::Miss);
        assert!(!o.cleared());
        assert_eq!(o.alarm(), Some(Some(5)));
        assert!(o.undo.is_empty());
    }

    #[test]
    fn rollback_after_a_commit_undoes_only_later_writes() {
        let mut o = Overlay::default();
        let sp = o.savepoint();
        o.put(b"a".to_vec(), b("1"));
        let c = o.take();
        assert_eq!(c.writes.len(), 1);
        o.put(b"b".to_vec(), b("2"));
        o.rollback(sp);
        assert_eq!(
            o.lookup(b"b"),
            Lookup::Miss,
            "written after the commit: undone"
        );
        assert!(o.is_empty());
    }

    #[test]
    fn release_keeps_writes_and_take_empties() {
        let mut o = Overlay::default();
        let sp = o.savepoint();
        o.put(b"a".to_vec(), b("1"));
        o.release(sp);
        assert_eq!(o.lookup(b"a"), Lookup::Value(&b("1")));
        let c = o.take();
        assert_eq!(c.writes, vec![(b"a".to_vec(), Some(b("1")))]);
        assert!(o.is_empty());
    }

    #[test]
    fn one_key_written_many_times_keeps_one_journal_entry() {
        let mut o = Overlay::default();
        o.put(b"k".to_vec(), b("0"));
        let sp = o.savepoint();
        for i in 0..1000 {
            o.put(b"k".to_vec(), b(&i.to_string()));
        }
        assert_eq!(o.undo.len(), 1);
        let inner = o.savepoint();
        o.put(b"k".to_vec(), b("inner"));
        o.put(b"k".to_vec(), b("inner2"));
        assert_eq!(o.undo.len(), 2, "the inner savepoint journals once");
        o.rollback(inner);
        assert_eq!(o.lookup(b"k"), Lookup::Value(&b("999")));
        o.rollback(sp);
        assert_eq!(o.lookup(b"k"), Lookup::Value(&b("0")));
    }

    /// What the overlay shows: every written key and the alarm change.
    type Shown = (bool, Vec<(Vec<u8>, Option<Bytes>)>, Option<Option<u64>>);

    fn shown(o: &Overlay) -> Shown {
        let all = KeyRange {
            lower: std::ops::Bound::Unbounded,
            upper: std::ops::Bound::Unbounded,
            reverse: false,
            limit: None,
        };
        (o.cleared(), o.range(&all).collect(), o.alarm())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Clear,
        Alarm(Option<u8>),
        Savepoint,
        Release,
        Rollback,
        Take,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0u8..4).prop_map(Op::Delete),
            1 => Just(Op::Clear),
            1 => proptest::option::of(any::<u8>()).prop_map(Op::Alarm),
            3 => Just(Op::Savepoint),
            2 => Just(Op::Release),
            2 => Just(Op::Rollback),
            1 => Just(Op::Take),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        /// Against a model that copies the whole overlay at each savepoint:
        /// a rollback shows exactly what the model's copy shows, except
        /// what a `take` (a commit) made permanent in between.
        #[test]
        fn rollback_matches_a_full_copy(ops in proptest::collection::vec(op(), 0..60)) {
            let mut o = Overlay::default();
            // Open savepoints, each with the overlay as it was then (None
            // once a `take` has passed it: it then rolls back to empty).
            let mut open: Vec<(Savepoint, Option<Shown>)> = Vec::new();
            let mut stretch_start = 0;
            let mut stretch_keys = std::collections::BTreeSet::new();
            let mut stretch_alarms = 0;
            for op in ops {
                let op_kind = match op {
                    Op::Put(k, _) | Op::Delete(k) => Some(k),
                    _ => None,
                };
                let alarm = matches!(op, Op::Alarm(_));
                match op {
                    Op::Put(k, v) => o.put(vec![k], Bytes::from(vec![v])),
                    Op::Delete(k) => o.delete(vec![k]),
                    Op::Clear => o.clear(),
                    Op::Alarm(at) => o.set_alarm(at.map(u64::from)),
                    Op::Savepoint => {
                        let before = shown(&o);
                        open.push((o.savepoint(), Some(before)));
                    }
                    Op::Release => {
                        if let Some((sp, _)) = open.pop() {
                            o.release(sp);
                        }
                    }
                    Op::Rollback => {
                        if let Some((sp, before)) = open.pop() {
                            o.rollback(sp);
                            let expect = before.unwrap_or((false, Vec::new(), None));
                            prop_assert_eq!(shown(&o), expect);
                        }
                    }
                    Op::Take => {
                        o.take();
                        for (_, before) in &mut open {
                            *before = None;
                        }
                    }
                }
                // The journal grows by at most one entry per key between
                // two savepoint operations (and one per alarm change), so
                // it is bounded by keys, not by writes.
                match op_kind {
                    Some(k) => {
                        stretch_keys.insert(k);
                    }
                    None if alarm => stretch_alarms += 1,
                    None => {
                        stretch_start = o.undo.len();
                        stretch_keys.clear();
                        stretch_alarms = 0;
                    }
                }
                prop_assert!(o.undo.len() <= stretch_start + stretch_keys.len() + stretch_alarms);
            }
        }
    }
}
