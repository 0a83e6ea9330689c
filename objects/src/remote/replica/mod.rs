//! Replicated shards, as a pure state machine (no I/O, no clock: `now` is
//! passed in). PacificA's split: etcd is the configuration manager (who is
//! the primary of a shard, who are its followers, at which epoch), and data
//! goes from the primary to the followers.
//!
//! - A shard's history is a chain of commit groups, each with a [`Label`]:
//!   the epoch of the primary that issued it and a sequence number that
//!   goes up by one per group of that shard and carries on across epochs.
//!   Every group names the label before it (`prev`), so a replica's state
//!   is identified by its last label alone (two replicas with the same last
//!   label hold the same groups, as in Raft's log matching).
//! - The [`Primary`] gives each local commit group of the shard the next
//!   label, sends it to the followers and learns what each has made
//!   durable. A group's replies may leave (it is *released*) only once it is
//!   durable here **and** on every follower of the configuration, the
//!   pending one included: the output gate spans the configuration.
//! - A follower that lags, refuses or cannot be reached is removed by a
//!   reconfiguration (epoch + 1) that the primary proposes as one etcd
//!   compare-and-swap; while it is pending the removed follower still gates
//!   releases, so nothing more is acknowledged before etcd has the change.
//! - A [`Follower`] accepts groups only from the primary of the newest
//!   epoch it knows, only in chain order, and refuses older epochs: that is
//!   the fencing that keeps a paused old primary from acknowledging
//!   anything, because it needs every follower of its epoch, and the one
//!   that was promoted refuses it.
//! - When the primary is lost, a follower of the current configuration
//!   proposes itself (epoch + 1). It holds every released group: each was
//!   durable on every follower before release. Its first group (a barrier)
//!   must be released before it serves, which also brings the followers to
//!   its history or has them removed.
//! - A node that is not in the configuration (returning, or diverged)
//!   catches up as a *learner*: a copy of the shard tagged with a label,
//!   then the groups after it as a follower gets them; once it has
//!   everything released, the primary proposes adding it.
//!
//! `docs/cluster.md` ("Replication") tells the protocol in prose; the
//! property test in `tests.rs` runs random interleavings of commits, syncs,
//! message loss and reordering, crashes and reconfigurations against a
//! model of etcd and checks that no released group is ever lost and no two
//! nodes release in one epoch.

mod follower;
pub(crate) mod placement;
mod primary;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) use follower::Ack;
pub(crate) use follower::{Catch, Follower, Verdict};
pub(crate) use primary::{Group, Primary};

/// The most followers a shard may have (R).
pub(crate) const MAX_REPLICAS: usize = 2;

/// A commit group's place in a shard's history.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub(crate) struct Label {
    /// The epoch of the primary that issued the group.
    pub(crate) epoch: u64,
    /// 1 for a shard's first group, then one more per group.
    pub(crate) seq: u64,
}

impl Label {
    /// The empty history.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const ZERO: Label = Label { epoch: 0, seq: 0 };
}

/// A shard's replica configuration, as etcd records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Config {
    /// Goes up by one with every change; every change is a transaction
    /// that compares the whole previous configuration.
    pub(crate) epoch: u64,
    pub(crate) primary: String,
    /// Nodes other than the primary, none twice.
    pub(crate) followers: Vec<String>,
}

impl Config {
    /// Whether `node` is the primary or a follower.
    pub(crate) fn has(&self, node: &str) -> bool {
        self.primary == node || self.is_follower(node)
    }

    pub(crate) fn is_follower(&self, node: &str) -> bool {
        self.followers.iter().any(|f| f == node)
    }

    /// The next configuration without `gone` (epoch + 1).
    pub(crate) fn without(&self, gone: &[String]) -> Config {
        Config {
            epoch: self.epoch + 1,
            primary: self.primary.clone(),
            followers: self
                .followers
                .iter()
                .filter(|f| !gone.contains(f))
                .cloned()
                .collect(),
        }
    }

    /// The next configuration with `node` as one more follower.
    pub(crate) fn with(&self, node: &str) -> Config {
        let mut next = self.without(&[]);
        if !next.has(node) {
            next.followers.push(node.to_string());
        }
        next
    }
}

/// A configuration change to ask etcd for: set `next` if the shard's
/// configuration is still `prev`. Then tell the proposer whether it won.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub(crate) prev: Config,
    pub(crate) next: Config,
}

/// How far replication may fall behind before a follower is removed, and
/// how many recent labels a replica keeps to resend (the shell keeps the
/// groups' bytes alongside, bounded the same way).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Labels kept (at least 1): a follower further behind needs a copy.
    pub(crate) max_log: usize,
    /// Groups a follower may be behind the primary's last before it is
    /// removed (at most `max_log`, so a follower never needs a copy while
    /// it is still in the configuration).
    pub(crate) max_lag: u64,
    /// How long a follower may leave groups unacknowledged without making
    /// any progress before it is removed.
    pub(crate) ack_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_log: 1024,
            max_lag: 512,
            ack_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a replica did not take a group (or a copy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refused", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Refused {
    /// The sender is not the primary of the newest epoch the replica
    /// knows: `epoch` and its `primary`. A primary that gets this for a
    /// newer epoch than its own releases nothing more.
    Stale { epoch: u64, primary: Option<String> },
    /// The group does not follow the replica's last one, `last`. If the
    /// primary still has `last` it resends what follows; otherwise the
    /// replica's history is not a prefix of the primary's (it lags too far,
    /// or holds groups of a deposed primary) and it must catch up by copy.
    Mismatch { last: Label },
    /// A catch-up copy was asked of a node that is not the primary or of a
    /// member that must first be removed from the configuration.
    NotNow,
}

/// The labels a replica keeps: `base`, then a bounded run of the labels
/// that follow it, ending with the replica's last label.
#[derive(Clone, Debug)]
pub(crate) struct Log {
    base: Label,
    labels: VecDeque<Label>,
    max: usize,
}

impl Log {
    /// A history that ends at `last` (nothing before it kept).
    pub(crate) fn at(last: Label, max: usize) -> Log {
        Log {
            base: last,
            labels: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// The last label.
    pub(crate) fn last(&self) -> Label {
        self.labels.back().copied().unwrap_or(self.base)
    }

    /// Appends the label after [`last`](Log::last), forgetting the oldest
    /// past the bound.
    pub(crate) fn push(&mut self, label: Label) {
        debug_assert_eq!(label.seq, self.last().seq + 1);
        self.labels.push_back(label);
        while self.labels.len() > self.max {
            if let Some(old) = self.labels.pop_front() {
                self.base = old;
            }
        }
    }

    /// Takes back `label` if it is the last one (its group never
    /// committed). Whether it was.
    pub(crate) fn pop(&mut self, label: Label) -> bool {
        if self.labels.back() == Some(&label) {
            self.labels.pop_back();
            return true;
        }
        false
    }

    /// Whether `label` is in the kept part of this history (its base
    /// included): then a replica whose last is `label` holds a prefix of it.
    pub(crate) fn contains(&self, label: Label) -> bool {
        if label == self.base {
            return true;
        }
        let Some(i) = label.seq.checked_sub(self.base.seq + 1) else {
            return false;
        };
        usize::try_from(i)
            .ok()
            .and_then(|i| self.labels.get(i))
            .is_some_and(|l| *l == label)
    }

    /// The groups after `label` as (prev, label) pairs, if `label` is kept.
    pub(crate) fn after(&self, label: Label) -> Option<Vec<(Label, Label)>> {
        if !self.contains(label) {
            return None;
        }
        let mut prev = self.base;
        let mut out = Vec::new();
        for l in &self.labels {
            if l.seq > label.seq {
                out.push((prev, *l));
            }
            prev = *l;
        }
        Some(out)
    }
}
