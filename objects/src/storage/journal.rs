//! A record of what the storage writer and the output gate did, in order,
//! for tests of the durability ordering (the `testing` feature).

use std::sync::Mutex;

/// One thing that happened, as the writer and the output gate saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// A transaction committed with `MDB_NOMETASYNC`: its data pages are
    /// written and synced, its meta page written but not yet synced. It
    /// holds the batches of these objects.
    Committed {
        /// The objects whose writes it holds.
        objects: Vec<[u8; 32]>,
    },
    /// An explicit sync of the whole file: every meta page written before
    /// it is durable.
    Synced,
    /// The writer answered these objects' commits as durable.
    Answered {
        /// The objects answered.
        objects: Vec<[u8; 32]>,
    },
    /// The output gate handed an object's frames to its sockets.
    FramesOut {
        /// The object.
        object: [u8; 32],
        /// How many frames.
        frames: usize,
    },
}

/// The steps, in the order they happened. Give one to
/// [`RuntimeBuilder::journal`](crate::RuntimeBuilder::journal).
#[derive(Debug, Default)]
pub struct Journal(Mutex<Vec<Step>>);

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Journal::default()
    }

    pub(crate) fn push(&self, step: Step) {
        crate::sync::lock(&self.0).push(step);
    }

    /// Everything recorded so far.
    pub fn steps(&self) -> Vec<Step> {
        crate::sync::lock(&self.0).clone()
    }

    /// Checks the rule the output gate keeps: no commit is answered, and no
    /// frame of an object leaves, before a sync that came after the commit
    /// holding that object's writes (a later commit's data sync or an
    /// explicit sync).
    ///
    /// # Errors
    ///
    /// The first step that breaks the rule, with its position.
    pub fn check_output_after_sync(&self) -> Result<(), String> {
        let steps = self.steps();
        // For each object: is its latest commit covered by a sync yet?
        let mut covered: std::collections::HashMap<[u8; 32], bool> = Default::default();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Committed { objects } => {
                    // This commit's data sync covers every earlier commit.
                    for c in covered.values_mut() {
                        *c = true;
                    }
                    for o in objects {
                        covered.insert(*o, false);
                    }
                }
                Step::Synced => {
                    for c in covered.values_mut() {
                        *c = true;
                    }
                }
                Step::Answered { objects } => {
                    for o in objects {
                        if covered.get(o) == Some(&false) {
                            return Err(format!("step {i}: answered before a sync: {step:?}"));
                        }
                    }
                }
                Step::FramesOut { object, .. } => {
                    if covered.get(object) == Some(&false) {
                        return Err(format!("step {i}: frames left before a sync: {step:?}"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_catches_output_before_the_covering_sync() {
        let a = [1u8; 32];
        let ok = Journal::new();
        ok.push(Step::Committed { objects: vec![a] });
        ok.push(Step::Synced);
        ok.push(Step::Answered { objects: vec![a] });
        ok.push(Step::FramesOut {
            object: a,
            frames: 1,
        });
        assert_eq!(ok.check_output_after_sync(), Ok(()));

        let early = Journal::new();
        early.push(Step::Committed { objects: vec![a] });
        early.push(Step::FramesOut {
            object: a,
            frames: 1,
        });
        assert!(early.check_output_after_sync().is_err());

        let next_commit_covers = Journal::new();
        next_commit_covers.push(Step::Committed { objects: vec![a] });
        next_commit_covers.push(Step::Committed {
            objects: vec![[2u8; 32]],
        });
        next_commit_covers.push(Step::Answered { objects: vec![a] });
        assert_eq!(next_commit_covers.check_output_after_sync(), Ok(()));
    }
}
