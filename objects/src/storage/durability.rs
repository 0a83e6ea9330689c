//! When a commit is durable, with one `fdatasync` per commit group.
//!
//! LMDB commits in two steps: it writes the transaction's data pages and
//! syncs them, then writes the meta page that makes the transaction current
//! and syncs again. Opened with `MDB_NOMETASYNC`, it skips the second sync:
//! the transaction is atomic and the store consistent after a crash, but
//! the last transaction may be undone, because its meta page may not have
//! reached the disk. The meta page reaches the disk with the *next*
//! commit's data sync (an `fdatasync` of the file flushes every page
//! written before it) or an explicit sync (`mdb_env_sync`).
//!
//! So the writer answers a commit group only once a later sync covers its
//! meta page: when the next group commits, or, if no group is waiting, after
//! an explicit sync. Under load that is one sync per group instead of two;
//! an idle writer still pays two for a lone commit (data, then meta), as
//! before. This module is that rule, with no I/O: the writer tells it what
//! happened and it says what may be answered.

/// The answers of committed groups waiting for the sync that makes them
/// durable.
#[derive(Debug)]
pub(crate) struct Durability<T> {
    /// Committed (data synced, meta written), meta not yet synced.
    waiting: Vec<T>,
}

impl<T> Default for Durability<T> {
    fn default() -> Self {
        Durability {
            waiting: Vec::new(),
        }
    }
}

impl<T> Durability<T> {
    /// A transaction committed: its data sync made every meta page written
    /// before it durable, so everything waiting may be answered (returned);
    /// `answers` now wait for a later sync.
    pub(crate) fn committed(&mut self, answers: impl IntoIterator<Item = T>) -> Vec<T> {
        let durable = std::mem::take(&mut self.waiting);
        self.waiting.extend(answers);
        durable
    }

    /// Whether an explicit sync is needed before the writer waits for more
    /// work (nothing else would make the waiting answers durable).
    pub(crate) fn needs_sync(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// An explicit sync of the whole file finished: everything waiting is
    /// durable.
    pub(crate) fn synced(&mut self) -> Vec<T> {
        std::mem::take(&mut self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// A transaction commits holding `n` new answers.
        Commit(usize),
        /// The writer finds no work and asks whether to sync.
        Idle,
    }

    proptest! {
        /// Every answer is released exactly once, and only after a sync
        /// that came after its own commit (a later commit's data sync or
        /// an explicit sync); and when the writer goes idle, nothing is
        /// left waiting.
        #[test]
        fn answers_leave_only_after_a_later_sync(
            steps in proptest::collection::vec(
                prop_oneof![
                    (0usize..4).prop_map(Step::Commit),
                    Just(Step::Idle),
                ],
                0..40,
            )
        ) {
            let mut d = Durability::default();
            // (answer id, index of the commit that wrote it)
            let mut next = 0usize;
            let mut commits = 0usize;
            let mut released: Vec<(usize, usize)> = Vec::new();
            // Which commit wrote each answer.
            let mut written_by = Vec::new();
            // The number of syncs that happened after each commit, when
            // its answers were released.
            for step in steps {
                match step {
                    Step::Commit(n) => {
                        commits += 1;
                        let ids: Vec<usize> = (next..next + n).collect();
                        next += n;
                        written_by.extend(ids.iter().map(|_| commits));
                        // This commit's data sync is the sync.
                        for id in d.committed(ids) {
                            released.push((id, commits));
                        }
                    }
                    Step::Idle => {
                        if d.needs_sync() {
                            // An explicit sync: after every commit so far.
                            for id in d.synced() {
                                released.push((id, commits + 1));
                            }
                        }
                        prop_assert!(!d.needs_sync());
                    }
                }
            }
            let mut seen = std::collections::HashSet::new();
            for (id, at_sync) in &released {
                prop_assert!(seen.insert(*id), "answer {} released twice", id);
                // Released at a sync strictly after the commit that wrote it.
                prop_assert!(*at_sync > written_by[*id], "answer {} released by its own commit", id);
            }
            // Whatever is not released is still waiting, not lost.
            let waiting = d.synced().len();
            prop_assert_eq!(released.len() + waiting, next);
        }
    }

    #[test]
    fn a_lone_commit_waits_for_an_explicit_sync() {
        let mut d = Durability::default();
        assert!(d.committed(["a"]).is_empty());
        assert!(d.needs_sync());
        assert_eq!(d.synced(), vec!["a"]);
        assert!(!d.needs_sync());
    }

    #[test]
    fn the_next_commit_releases_the_one_before() {
        let mut d = Durability::default();
        assert!(d.committed(["a", "b"]).is_empty());
        assert_eq!(d.committed(["c"]), vec!["a", "b"]);
        assert_eq!(d.synced(), vec!["c"]);
    }
}
