//! The output gate and event groups, as a pure state machine.
//!
//! An object runs the events queued in its mailbox back to back and commits
//! their writes together (one group, one commit). Everything the events
//! produce for the outside — replies to callers, frames for sockets — is
//! held until that commit is durable. The rules, all decided here:
//!
//! - A group runs at most `max_events` events that produced output.
//! - An event that fails (error or panic) has its own writes and frames
//!   rolled back; the events before it in the group keep theirs and commit.
//!   The group ends there. The instance is dropped unless the failure was a
//!   handler the type does not implement.
//! - A storage sync that fails inside the group (an explicit `sync` or
//!   transaction) took the group's earlier writes with it: the whole group
//!   fails, every held output is answered with a reset, and the object is
//!   reset (instance dropped, uncommitted writes and frames discarded).
//! - A group whose commit succeeds releases its frames, then its held
//!   outputs in the order their events ran; one whose commit fails is reset
//!   as above.
//!
//! The activation task (`activation.rs`) is the shell: it runs handlers,
//! keeps the storage overlay and the outbox, commits through the writer
//! thread, and does what the gate's [`Action`]s and [`Undo`]s say. Nothing
//! here does I/O, so the rules are tested alone (see the tests below).

/// Where the running event began: the storage savepoint and the outbox
/// length to roll back to if it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark<S> {
    pub(crate) savepoint: S,
    pub(crate) outbox: usize,
}

/// What the shell does after an event.
#[derive(Debug)]
pub(crate) enum Action<H> {
    /// Run the next queued event in this group; commit if none is queued
    /// (or the runtime is shutting down).
    RunNext,
    /// Commit the group now, then report with [`Gate::committed`] or
    /// [`Gate::commit_failed`].
    Commit,
    /// The group's writes are lost: reset the object and answer each held
    /// output with the failure.
    Reset(Vec<H>),
}

/// How to undo a failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Undo<S> {
    /// Roll storage back to this savepoint and the outbox to this length.
    pub(crate) to: Mark<S>,
    /// Drop the instance (the next event constructs a fresh one).
    pub(crate) drop_instance: bool,
}

/// One group of events, from its first event to its commit.
#[derive(Debug)]
pub(crate) struct Gate<H, S> {
    held: Vec<H>,
    running: Option<Mark<S>>,
    max_events: usize,
}

impl<H, S> Gate<H, S> {
    /// A new group that holds at most `max_events` outputs (at least one).
    pub(crate) fn new(max_events: usize) -> Self {
        Gate {
            held: Vec::new(),
            running: None,
            max_events: max_events.max(1),
        }
    }

    /// An event starts; `mark` is where to roll back to if it fails.
    pub(crate) fn begin(&mut self, mark: Mark<S>) {
        self.running = Some(mark);
    }

    /// The event was not run (its caller had gone).
    pub(crate) fn skipped(&mut self) -> Action<H> {
        self.running = None;
        self.next()
    }

    /// The running event returned `out`. `sync_failed`: a storage sync
    /// inside this group failed (the group's writes are lost).
    pub(crate) fn succeeded(&mut self, out: H, sync_failed: bool) -> Action<H> {
        self.running = None;
        self.held.push(out);
        if sync_failed {
            return Action::Reset(std::mem::take(&mut self.held));
        }
        self.next()
    }

    /// The running event failed. `resets`: the failure resets the object
    /// (anything but a handler the type does not implement).
    /// `sync_failed`: as for [`succeeded`](Self::succeeded).
    ///
    /// Returns how to undo the event (`None` if no event was running) and
    /// what to do next; the shell answers the event's own caller itself.
    pub(crate) fn failed(
        &mut self,
        resets: bool,
        sync_failed: bool,
    ) -> (Option<Undo<S>>, Action<H>) {
        let undo = self.running.take().map(|to| Undo {
            to,
            drop_instance: resets || sync_failed,
        });
        if sync_failed {
            return (undo, Action::Reset(std::mem::take(&mut self.held)));
        }
        // A failure ends the group: the events before it commit.
        (undo, Action::Commit)
    }

    fn next(&self) -> Action<H> {
        if self.held.len() >= self.max_events {
            Action::Commit
        } else {
            Action::RunNext
        }
    }

    /// The group's commit is durable: its outputs to release, in the order
    /// their events ran (after the frames).
    pub(crate) fn committed(self) -> Vec<H> {
        self.held
    }

    /// The group's commit failed: reset the object and answer each of
    /// these with the failure.
    pub(crate) fn commit_failed(self) -> Vec<H> {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What one event does when it runs, in the model.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        /// Caller gone: not run.
        Skip,
        /// Writes, sends a frame, returns.
        Ok,
        /// Writes, sends a frame, fails (resets or not).
        Fail { resets: bool },
        /// Writes, sends, then a sync inside it fails.
        SyncFails { then_ok: bool },
    }

    /// A shell with a fake overlay and outbox, driving the gate as the
    /// activation does.
    #[derive(Default, Debug)]
    struct Shell {
        writes: Vec<usize>,
        outbox: Vec<usize>,
        instance: bool,
        /// (event, released?) answers in the order given.
        answers: Vec<(usize, bool)>,
        committed_writes: Vec<usize>,
        released_frames: Vec<usize>,
        ran: usize,
    }

    /// Runs one group over `events`, the commit failing if `commit_fails`.
    fn run(events: &[Outcome], max: usize, commit_fails: bool) -> Shell {
        let mut sh = Shell {
            instance: true,
            ..Shell::default()
        };
        let mut gate: Gate<usize, usize> = Gate::new(max);
        let mut action = Action::RunNext;
        for (i, ev) in events.iter().enumerate() {
            if !matches!(action, Action::RunNext) {
                break;
            }
            let mark = Mark {
                savepoint: sh.writes.len(),
                outbox: sh.outbox.len(),
            };
            gate.begin(mark);
            action = match *ev {
                Outcome::Skip => gate.skipped(),
                Outcome::Ok => {
                    sh.ran += 1;
                    sh.writes.push(i);
                    sh.outbox.push(i);
                    gate.succeeded(i, false)
                }
                Outcome::Fail { resets } => {
                    sh.ran += 1;
                    sh.writes.push(i);
                    sh.outbox.push(i);
                    let (undo, a) = gate.failed(resets, false);
                    apply(&mut sh, undo);
                    sh.answers.push((i, false));
                    a
                }
                Outcome::SyncFails { then_ok } => {
                    sh.ran += 1;
                    sh.writes.push(i);
                    sh.outbox.push(i);
                    if then_ok {
                        gate.succeeded(i, true)
                    } else {
                        let (undo, a) = gate.failed(true, true);
                        apply(&mut sh, undo);
                        sh.answers.push((i, false));
                        a
                    }
                }
            };
        }
        match action {
            Action::Reset(held) => reset(&mut sh, held),
            Action::RunNext | Action::Commit => {
                if commit_fails {
                    reset(&mut sh, gate.commit_failed());
                } else {
                    sh.committed_writes = std::mem::take(&mut sh.writes);
                    sh.released_frames = std::mem::take(&mut sh.outbox);
                    for h in gate.committed() {
                        sh.answers.push((h, true));
                    }
                }
            }
        }
        sh
    }

    fn apply(sh: &mut Shell, undo: Option<Undo<usize>>) {
        let undo = undo.expect("an event was running");
        sh.writes.truncate(undo.to.savepoint);
        sh.outbox.truncate(undo.to.outbox);
        if undo.drop_instance {
            sh.instance = false;
        }
    }

    fn reset(sh: &mut Shell, held: Vec<usize>) {
        sh.instance = false;
        sh.writes.clear();
        sh.outbox.clear();
        for h in held {
            sh.answers.push((h, false));
        }
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            2 => Just(Outcome::Skip),
            8 => Just(Outcome::Ok),
            2 => any::<bool>().prop_map(|resets| Outcome::Fail { resets }),
            1 => any::<bool>().prop_map(|then_ok| Outcome::SyncFails { then_ok }),
        ]
    }

    /// The group the rules say runs: events up to and including the first
    /// failure, stopping once `max` outputs are held.
    fn expected_group(events: &[Outcome], max: usize) -> &[Outcome] {
        let mut held = 0;
        for (i, e) in events.iter().enumerate() {
            match e {
                Outcome::Skip => {}
                Outcome::Ok => held += 1,
                Outcome::Fail { .. } | Outcome::SyncFails { .. } => return &events[..=i],
            }
            if held >= max.max(1) {
                return &events[..=i];
            }
        }
        events
    }

    proptest! {
        #[test]
        fn output_leaves_only_with_its_committed_writes(
            events in proptest::collection::vec(outcome(), 0..20),
            max in 1usize..6,
            commit_fails: bool,
        ) {
            let sh = run(&events, max, commit_fails);
            let group = expected_group(&events, max);
            let ok: Vec<usize> = group
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e, Outcome::Ok))
                .map(|(i, _)| i)
                .collect();
            let sync_failed = group.iter().any(|e| matches!(e, Outcome::SyncFails { .. }));
            let released: Vec<usize> =
                sh.answers.iter().filter(|(_, ok)| *ok).map(|(i, _)| *i).collect();
            if commit_fails || sync_failed {
                // Nothing leaves, nothing is kept, the object is reset.
                prop_assert!(released.is_empty());
                prop_assert!(sh.released_frames.is_empty());
                prop_assert!(sh.committed_writes.is_empty());
                prop_assert!(!sh.instance);
            } else {
                // Exactly the successful events' writes, frames and
                // replies, in order; never a failed event's.
                prop_assert_eq!(&released, &ok);
                prop_assert_eq!(&sh.released_frames, &ok);
                prop_assert_eq!(&sh.committed_writes, &ok);
                let reset = group.iter().any(|e| matches!(e, Outcome::Fail { resets: true }));
                prop_assert_eq!(sh.instance, !reset);
            }
            // Every event that ran is answered exactly once.
            let mut answered: Vec<usize> = sh.answers.iter().map(|(i, _)| *i).collect();
            answered.sort_unstable();
            answered.dedup();
            prop_assert_eq!(answered.len(), sh.answers.len());
            prop_assert_eq!(sh.answers.len(), sh.ran);
            // No group releases more outputs than the bound.
            prop_assert!(released.len() <= max);
        }
    }

    #[test]
    fn a_group_commits_once_it_holds_the_most_outputs() {
        let mut gate: Gate<u8, usize> = Gate::new(2);
        gate.begin(Mark {
            savepoint: 0,
            outbox: 0,
        });
        assert!(matches!(gate.succeeded(1, false), Action::RunNext));
        gate.begin(Mark {
            savepoint: 1,
            outbox: 1,
        });
        assert!(matches!(gate.succeeded(2, false), Action::Commit));
        assert_eq!(gate.committed(), vec![1, 2]);
    }

    #[test]
    fn an_unimplemented_handler_undoes_its_event_but_keeps_the_instance() {
        let mut gate: Gate<u8, usize> = Gate::new(8);
        let mark = Mark {
            savepoint: 3,
            outbox: 5,
        };
        gate.begin(mark);
        let (undo, action) = gate.failed(false, false);
        assert_eq!(
            undo,
            Some(Undo {
                to: mark,
                drop_instance: false
            })
        );
        assert!(matches!(action, Action::Commit));
    }

    #[test]
    fn a_failed_sync_fails_every_held_output() {
        let mut gate: Gate<char, usize> = Gate::new(8);
        gate.begin(Mark {
            savepoint: 0,
            outbox: 0,
        });
        assert!(matches!(gate.succeeded('a', false), Action::RunNext));
        gate.begin(Mark {
            savepoint: 1,
            outbox: 1,
        });
        match gate.succeeded('b', true) {
            Action::Reset(held) => assert_eq!(held, vec!['a', 'b']),
            other => panic!("expected a reset, got {other:?}"),
        }
    }
}
