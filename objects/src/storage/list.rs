//! List options and the merge of committed data with an event's overlay.
//! Pure: no LMDB here, so the rules of `list` can be tested alone.

use std::cmp::Ordering;
use std::ops::Bound;

use super::StorageError;

/// Options for [`Storage::list`](crate::Storage::list), with the semantics of
/// Cloudflare's `storage.list()`: keys in ascending UTF-8 byte order; `start`
/// inclusive, `start_after` exclusive (not both), `end` exclusive, `prefix`
/// narrows the range, `reverse` returns the same range descending, `limit`
/// must be positive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// First key to include.
    pub start: Option<String>,
    /// List keys strictly after this one. Cannot be combined with `start`.
    pub start_after: Option<String>,
    /// First key not to include.
    pub end: Option<String>,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Descending order (the range itself is unchanged).
    pub reverse: bool,
    /// At most this many entries; must be greater than zero.
    pub limit: Option<usize>,
}

impl ListOptions {
    /// All keys.
    pub fn new() -> Self {
        Self::default()
    }
    /// Keys with this prefix.
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = Some(p.into());
        self
    }
    /// Start at this key (inclusive).
    pub fn start(mut self, k: impl Into<String>) -> Self {
        self.start = Some(k.into());
        self
    }
    /// Start after this key (exclusive).
    pub fn start_after(mut self, k: impl Into<String>) -> Self {
        self.start_after = Some(k.into());
        self
    }
    /// End before this key (exclusive).
    pub fn end(mut self, k: impl Into<String>) -> Self {
        self.end = Some(k.into());
        self
    }
    /// Descending order.
    pub fn reverse(mut self, r: bool) -> Self {
        self.reverse = r;
        self
    }
    /// At most `n` entries.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Checks the options and turns them into a byte range. `Ok(None)` means
    /// the range is empty and no I/O is needed.
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidList`] for `limit == 0` or `start` together
    /// with `start_after`.
    pub(crate) fn compile(&self) -> Result<Option<KeyRange>, StorageError> {
        if self.limit == Some(0) {
            return Err(StorageError::InvalidList("limit must be greater than zero"));
        }
        let mut lower: Bound<Vec<u8>> = match (&self.start, &self.start_after) {
            (Some(_), Some(_)) => {
                return Err(StorageError::InvalidList(
                    "start and start_after cannot be combined",
                ));
            }
            (Some(s), None) => Bound::Included(s.as_bytes().to_vec()),
            (None, Some(s)) => Bound::Excluded(s.as_bytes().to_vec()),
            (None, None) => Bound::Unbounded,
        };
        let mut upper: Bound<Vec<u8>> = match &self.end {
            Some(e) => Bound::Excluded(e.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        if let Some(p) = self.prefix.as_deref().filter(|p| !p.is_empty()) {
            let p = p.as_bytes();
            if lower_cmp(&lower, p) == Ordering::Less {
                lower = Bound::Included(p.to_vec());
            }
            if let Some(succ) = successor(p)
                && upper_cmp(&upper, &succ) == Ordering::Greater
            {
                upper = Bound::Excluded(succ);
            }
        }
        let range = KeyRange {
            lower,
            upper,
            reverse: self.reverse,
            limit: self.limit,
        };
        Ok((!range.is_empty()).then_some(range))
    }
}

/// A compiled, non-empty-or-checked range of user keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) lower: Bound<Vec<u8>>,
    pub(crate) upper: Bound<Vec<u8>>,
    pub(crate) reverse: bool,
    pub(crate) limit: Option<usize>,
}

impl KeyRange {
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.lower {
            Bound::Included(l) => key >= l.as_slice(),
            Bound::Excluded(l) => key > l.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.upper {
            Bound::Included(u) => key <= u.as_slice(),
            Bound::Excluded(u) => key < u.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    fn is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(l), Bound::Excluded(u)) => l >= u,
            (Bound::Excluded(l), Bound::Excluded(u)) => {
                // (l, u) is empty when no byte string lies strictly between.
                l >= u || successor_of_string(l) >= *u
            }
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        }
    }

    /// The bounds as borrowed slices, for `BTreeMap::range`.
    pub(crate) fn as_slices(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_slice(&self.lower), as_slice(&self.upper))
    }
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest byte string greater than every string with prefix `p`, or
/// `None` if there is none (all bytes 0xff).
pub(crate) fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// The smallest byte string greater than `s` itself: `s` followed by 0.
fn successor_of_string(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

/// Compares a lower bound with the inclusive bound `p`: Less means the bound
/// admits keys below `p`.
fn lower_cmp(b: &Bound<Vec<u8>>, p: &[u8]) -> Ordering {
    match b {
        Bound::Unbounded => Ordering::Less,
        Bound::Included(l) => l.as_slice().cmp(p),
        Bound::Excluded(l) => {
            if l.as_slice() < p {
                // (l, ..) admits keys below p unless p is l's successor.
                if successor_of_string(l).as_slice() < p {
                    Ordering::Less
                } else {
                    Ordering::Equal
                }
            } else {
                Ordering::Greater
            }
        }
    }
}

/// Compares an upper bound with the exclusive bound `u`: Greater means the
/// bound admits keys at or above `u`.
fn upper_cmp(b: &Bound<Vec<u8>>, u: &[u8]) -> Ordering {
    match b {
        Bound::Unbounded => Ordering::Greater,
        Bound::Excluded(e) => e.as_slice().cmp(u),
        Bound::Included(i) => {
            if i.as_slice() >= u {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

/// Merges committed entries (`base`) with overlay entries (`over`), both
/// already in the listing order (ascending, or descending when `reverse`).
/// Overlay entries win on equal keys; `None` values are tombstones and hide
/// the key. Stops after `limit` live entries.
pub(crate) fn merge<B, O, V>(
    base: B,
    over: O,
    reverse: bool,
    limit: Option<usize>,
) -> Result<Vec<(Vec<u8>, V)>, StorageError>
where
    B: Iterator<Item = Result<(Vec<u8>, V), StorageError>>,
    O: Iterator<Item = (Vec<u8>, Option<V>)>,
{
    let limit = limit.unwrap_or(usize::MAX);
    let room = base.size_hint().0.saturating_add(over.size_hint().0);
    let mut out = Vec::with_capacity(room.min(limit));
    let mut base = base.peekable();
    let mut over = over.peekable();
    let ord = |a: &[u8], b: &[u8]| if reverse { b.cmp(a) } else { a.cmp(b) };
    while out.len() < limit {
        let take_over = match (base.peek(), over.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => {
                if let Some(Err(e)) = base.next() {
                    return Err(e);
                }
                unreachable!("peeked an error")
            }
            (None, Some(_)) => true,
            (Some(Ok(_)), None) => false,
            (Some(Ok((bk, _))), Some((ok, _))) => match ord(bk, ok) {
                Ordering::Less => false,
                Ordering::Equal => {
                    base.next();
                    true
                }
                Ordering::Greater => true,
            },
        };
        if take_over {
            if let Some((k, Some(v))) = over.next() {
                out.push((k, v));
            }
        } else if let Some(Ok(entry)) = base.next() {
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn keys() -> Vec<&'static str> {
        vec![
            "",
            "a",
            "aa",
            "ab",
            "b",
            "ba",
            "bb",
            "c",
            "é",
            "z\u{10FFFF}",
        ]
    }

    /// The reference semantics, evaluated key by key.
    fn model(opts: &ListOptions, all: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = all
            .iter()
            .filter(|k| opts.start.as_deref().is_none_or(|s| **k >= s))
            .filter(|k| opts.start_after.as_deref().is_none_or(|s| **k > s))
            .filter(|k| opts.end.as_deref().is_none_or(|e| **k < e))
            .filter(|k| opts.prefix.as_deref().is_none_or(|p| k.starts_with(p)))
            .map(|k| k.to_string())
            .collect();
        v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if opts.reverse {
            v.reverse();
        }
        v.truncate(opts.limit.unwrap_or(usize::MAX));
        v
    }

    fn run(opts: &ListOptions, all: &[&str]) -> Vec<String> {
        let Some(range) = opts.compile().expect("valid") else {
            return vec![];
        };
        let mut sorted: Vec<&str> = all
            .iter()
            .copied()
            .filter(|k| range.contains(k.as_bytes()))
            .collect();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if range.reverse {
            sorted.reverse();
        }
        let base = sorted.into_iter().map(|k| Ok((k.as_bytes().to_vec(), ())));
        merge(base, std::iter::empty(), range.reverse, range.limit)
            .expect("merge")
            .into_iter()
            .map(|(k, ())| String::from_utf8(k).expect("utf8"))
            .collect()
    }

    #[test]
    fn errors() {
        assert!(ListOptions::new().limit(0).compile().is_err());
        assert!(
            ListOptions::new()
                .start("a")
                .start_after("b")
                .compile()
                .is_err()
        );
    }

    #[test]
    fn empty_ranges_need_no_io() {
        assert!(matches!(
            ListOptions::new().start("b").end("a").compile(),
            Ok(None)
        ));
        assert!(matches!(
            ListOptions::new().start("b").end("b").compile(),
            Ok(None)
        ));
        assert!(matches!(
            ListOptions::new().start_after("a").end("a\0").compile(),
            Ok(None)
        ));
        assert!(matches!(
            ListOptions::new().prefix("b").end("a").compile(),
            Ok(None)
        ));
    }

    #[test]
    fn against_model_exhaustively() {
        let all = keys();
        let bounds: Vec<Option<String>> = std::iter::once(None)
            .chain(all.iter().map(|k| Some(k.to_string())))
            .chain([Some("a\0".to_string()), Some("\u{ff}".to_string())])
            .collect();
        let prefixes = [None, Some(""), Some("a"), Some("b"), Some("é"), Some("q")];
        for start in &bounds {
            for end in &bounds {
                for prefix in prefixes {
                    for reverse in [false, true] {
                        for limit in [None, Some(1), Some(2), Some(100)] {
                            for after in [false, true] {
                                let mut o = ListOptions {
                                    end: end.clone(),
                                    prefix: prefix.map(str::to_string),
                                    reverse,
                                    limit,
                                    ..Default::default()
                                };
                                if after {
                                    o.start_after = start.clone();
                                } else {
                                    o.start = start.clone();
                                }
                                assert_eq!(run(&o, &all), model(&o, &all), "{o:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn merge_overlay_wins_and_tombstones_hide() {
        let base: BTreeMap<Vec<u8>, u8> =
            [(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"c".to_vec(), 3)].into();
        let over: BTreeMap<Vec<u8>, Option<u8>> = [
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(30)),
            (b"d".to_vec(), Some(4)),
        ]
        .into();
        let got = merge(
            base.clone().into_iter().map(Ok),
            over.clone().into_iter(),
            false,
            None,
        )
        .expect("merge");
        assert_eq!(
            got,
            vec![(b"a".to_vec(), 1), (b"c".to_vec(), 30), (b"d".to_vec(), 4)]
        );
        let got = merge(
            base.into_iter().rev().map(Ok),
            over.into_iter().rev(),
            true,
            Some(2),
        )
        .expect("merge");
        assert_eq!(got, vec![(b"d".to_vec(), 4), (b"c".to_vec(), 30)]);
    }

    #[test]
    fn successor_handles_ff() {
        assert_eq!(successor(b"a"), Some(b"b".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
    }
}
