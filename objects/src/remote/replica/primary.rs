//! The primary side of one shard: labels for its commit groups, what each
//! follower has made durable, which groups may be released to clients, and
//! the reconfigurations it proposes (remove a follower that lags, refuses
//! or cannot be reached; add a learner that has caught up; follow R).
//!
//! The rule that matters: a group is released only once it is durable here
//! and on every follower of the configuration, and of the pending one while
//! a change is in flight. So a follower being removed still gates releases
//! until etcd holds the new configuration, and a learner being added gates
//! them from the moment it is proposed (it already holds everything
//! released, or it is not proposed).

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Config, Label, Limits, Log, MAX_REPLICAS, Proposal, Refused};

/// A group to send: `label`, which follows `prev`, to each node of `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) epoch: u64,
    pub(crate) prev: Label,
    pub(crate) label: Label,
    pub(crate) to: Vec<String>,
}

/// What the primary knows of one replica it sends to.
#[derive(Clone, Debug, Default)]
struct Peer {
    /// Durable there, as acknowledged at one of this primary's epochs.
    acked: u64,
    /// Whether it acknowledged anything at this primary's epochs (a learner
    /// is proposed only then).
    heard: bool,
    /// The last sequence number sent to it.
    sent: u64,
    /// Since when it has left something unacknowledged without progress.
    waiting_since: Option<Instant>,
    /// Not in the configuration (yet): catching up.
    learner: bool,
    /// It cannot follow (unreachable, or its history is not a prefix of
    /// ours): to be removed.
    failed: bool,
}

/// One shard's primary on one node.
#[derive(Clone, Debug)]
pub(crate) struct Primary {
    config: Config,
    /// The change proposed to etcd, until its answer.
    pending: Option<Config>,
    /// The first epoch of this primary's unbroken run (acks at any epoch
    /// from it to `config.epoch` are about this primary's history).
    first_epoch: u64,
    /// How many followers the cluster wants (R).
    replicas: usize,
    limits: Limits,
    log: Log,
    /// Durable here through this sequence number.
    local: u64,
    /// Released through this sequence number.
    released: u64,
    /// The first group of this primary: it serves once that is released.
    /// (The node's shell serves at once: releases are in order, so nothing
    /// of this primary is released before the barrier anyway.)
    #[cfg_attr(not(test), allow(dead_code))]
    barrier: u64,
    peers: BTreeMap<String, Peer>,
    /// A newer configuration without it as primary exists: it releases
    /// nothing more and proposes nothing.
    deposed: bool,
}

impl Primary {
    /// The primary of `config` (which names it), continuing the history in
    /// `log`, durable here through `durable`. Groups up to the last one of
    /// `log` were issued by earlier primaries: none are released by this
    /// one, and its first group is the barrier that brings the followers
    /// to its history (or gets them removed) before it serves.
    pub(crate) fn new(
        config: Config,
        log: Log,
        durable: u64,
        replicas: usize,
        limits: Limits,
    ) -> Primary {
        let last = log.last().seq;
        let peers = config
            .followers
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    Peer {
                        sent: last,
                        ..Peer::default()
                    },
                )
            })
            .collect();
        Primary {
            first_epoch: config.epoch,
            config,
            pending: None,
            replicas: replicas.min(MAX_REPLICAS),
            limits,
            log,
            local: durable.min(last),
            released: last,
            barrier: last + 1,
            peers,
            deposed: false,
        }
    }

    /// A restarted primary (etcd still names it in `current`) takes the
    /// shard again at epoch + 1, so nothing it sent before the restart can
    /// be mistaken for what it sends after.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn reclaim(current: &Config) -> Proposal {
        Proposal {
            prev: current.clone(),
            next: current.without(&[]),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn last(&self) -> Label {
        self.log.last()
    }

    /// Released through this sequence number.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn released(&self) -> u64 {
        self.released
    }

    pub(crate) fn deposed(&self) -> bool {
        self.deposed
    }

    /// Whether it may admit events: its barrier is released and it has not
    /// been deposed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ready(&self) -> bool {
        !self.deposed && self.released >= self.barrier
    }

    /// Whether any node but this one must hold its groups: a follower of
    /// the configuration or of the pending one, or a learner. If not, the
    /// shell may commit the shard's writes without labels (a learner's
    /// copy takes them along).
    pub(crate) fn replicating(&self) -> bool {
        !self.config.followers.is_empty()
            || self
                .pending
                .as_ref()
                .is_some_and(|c| !c.followers.is_empty())
            || !self.peers.is_empty()
    }

    /// The cluster's R changed.
    pub(crate) fn set_replicas(&mut self, replicas: usize) {
        self.replicas = replicas.min(MAX_REPLICAS);
    }

    /// The next local commit group of the shard: its label, and who to send
    /// it to. The shell commits it locally (storing the label with the
    /// data, in the same transaction) and sends it.
    pub(crate) fn append(&mut self, now: Instant) -> Group {
        let prev = self.log.last();
        let label = Label {
            epoch: self.config.epoch,
            seq: prev.seq + 1,
        };
        self.log.push(label);
        let mut to = Vec::new();
        for (name, p) in &mut self.peers {
            if p.failed {
                continue;
            }
            if p.acked >= p.sent {
                p.waiting_since = Some(now);
            }
            p.sent = label.seq;
            to.push(name.clone());
        }
        Group {
            epoch: self.config.epoch,
            prev,
            label,
            to,
        }
    }

    /// The group `label` (the last appended) did not commit locally and
    /// was sent to no one: it is taken back, and the next group gets its
    /// label again.
    pub(crate) fn retract(&mut self, label: Label) {
        // A durable (or released) group is never taken back.
        if label.seq <= self.local.max(self.released) || !self.log.pop(label) {
            return;
        }
        for p in self.peers.values_mut() {
            if p.sent == label.seq {
                p.sent = label.seq - 1;
                if p.acked >= p.sent {
                    p.waiting_since = None;
                }
            }
        }
    }

    /// A local sync made everything through `seq` durable here.
    pub(crate) fn durable(&mut self, seq: u64) {
        self.local = self.local.max(seq.min(self.log.last().seq));
    }

    /// `from` says it has everything through `seq` durable, at `epoch`.
    /// `Some` (to send back) if `from` is neither a member nor a learner
    /// here: a learner this primary dropped (a send to it failed, say)
    /// that still holds its history and waits to be added; told so, it
    /// asks for a copy again.
    pub(crate) fn on_ack(
        &mut self,
        from: &str,
        epoch: u64,
        seq: u64,
        now: Instant,
    ) -> Option<Refused> {
        if epoch < self.first_epoch || epoch > self.config.epoch {
            return None;
        }
        let last = self.log.last().seq;
        let Some(p) = self.peers.get_mut(from) else {
            let member =
                self.config.has(from) || self.pending.as_ref().is_some_and(|c| c.has(from));
            return (!member).then_some(Refused::NotNow);
        };
        let seq = seq.min(last);
        p.heard = true;
        if seq > p.acked {
            p.acked = seq;
            p.waiting_since = (p.acked < p.sent).then_some(now);
        } else if p.acked >= p.sent {
            // It owes nothing (a learner of an empty shard acknowledges
            // its copy at 0): no timeout runs.
            p.waiting_since = None;
        }
        None
    }

    /// `from` refused a group or a copy. The groups to resend to it, if it
    /// only missed some that are still kept.
    pub(crate) fn on_refused(&mut self, from: &str, refused: &Refused, now: Instant) -> Vec<Group> {
        match refused {
            Refused::Stale { epoch, primary } => {
                let mine = primary.as_deref() == Some(self.me());
                if *epoch > self.config.epoch && !mine {
                    self.deposed = true;
                }
                Vec::new()
            }
            Refused::Mismatch { last } => {
                let epoch = self.config.epoch;
                let after = self.log.after(*last);
                let Some(p) = self.peers.get_mut(from) else {
                    return Vec::new();
                };
                match after {
                    Some(groups) if !p.failed => {
                        if let Some((_, l)) = groups.last() {
                            p.sent = l.seq;
                            p.waiting_since.get_or_insert(now);
                        }
                        groups
                            .into_iter()
                            .map(|(prev, label)| Group {
                                epoch,
                                prev,
                                label,
                                to: vec![from.to_string()],
                            })
                            .collect()
                    }
                    _ => {
                        p.failed = true;
                        Vec::new()
                    }
                }
            }
            Refused::NotNow => Vec::new(),
        }
    }

    /// The shell could not reach `node` (the connection broke, a send
    /// failed): it is removed at the next [`tick`](Primary::tick).
    pub(crate) fn unreachable(&mut self, node: &str) {
        if let Some(p) = self.peers.get_mut(node) {
            p.failed = true;
        }
    }

    fn me(&self) -> &str {
        &self.config.primary
    }

    /// The sequence number through which replies may leave now, if it
    /// moved: durable here and on every follower of the configuration and
    /// of the pending one.
    pub(crate) fn release(&mut self) -> Option<u64> {
        if self.deposed {
            return None;
        }
        let gating = self
            .config
            .followers
            .iter()
            .chain(self.pending.iter().flat_map(|c| c.followers.iter()));
        let mut point = self.local;
        for f in gating {
            point = point.min(self.peers.get(f).map_or(0, |p| p.acked));
        }
        (point > self.released).then(|| {
            self.released = point;
            point
        })
    }

    /// The reconfiguration to propose now, if any (one at a time): remove
    /// followers that failed, lag more than `max_lag` groups, or left
    /// groups unacknowledged for `ack_timeout` without progress, or that
    /// are more than R; else add a learner that holds everything released,
    /// while there are fewer than R. Learners that failed are forgotten.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<Proposal> {
        if self.deposed || self.pending.is_some() {
            return None;
        }
        let last = self.log.last().seq;
        let limits = self.limits;
        let lagging = |p: &Peer| {
            p.failed
                || last.saturating_sub(p.acked) > limits.max_lag
                || p.waiting_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= limits.ack_timeout)
        };
        let mut gone: Vec<String> = self
            .config
            .followers
            .iter()
            .filter(|f| self.peers.get(*f).is_none_or(lagging))
            .cloned()
            .collect();
        let kept = self.config.followers.len() - gone.len();
        if kept > self.replicas {
            let extra = self
                .config
                .followers
                .iter()
                .rev()
                .filter(|f| !gone.contains(f))
                .take(kept - self.replicas)
                .cloned()
                .collect::<Vec<_>>();
            gone.extend(extra);
        }
        let next = if !gone.is_empty() {
            self.config.without(&gone)
        } else {
            self.peers.retain(|_, p| !(p.learner && p.failed));
            if self.config.followers.len() >= self.replicas {
                return None;
            }
            let released = self.released;
            let ready = self
                .peers
                .iter()
                .find(|(_, p)| p.learner && p.heard && !lagging(p) && p.acked >= released)
                .map(|(name, _)| name.clone())?;
            self.config.with(&ready)
        };
        self.pending = Some(next.clone());
        Some(Proposal {
            prev: self.config.clone(),
            next,
        })
    }

    /// etcd's answer to the proposal of `next`: it won. An answer to any
    /// other proposal than the pending one (a late answer to an earlier
    /// proposal whose outcome was learned otherwise) changes nothing.
    pub(crate) fn won(&mut self, next: &Config) {
        if self.pending.as_ref() != Some(next) {
            return;
        }
        self.pending = None;
        let next = next.clone();
        self.peers.retain(|name, p| {
            next.is_follower(name) || (p.learner && !self.config.is_follower(name))
        });
        for f in &next.followers {
            if let Some(p) = self.peers.get_mut(f) {
                p.learner = false;
            }
        }
        self.config = next;
    }

    /// The shard's configuration as etcd holds it now (read, or returned
    /// by a proposal that lost).
    pub(crate) fn on_config(&mut self, current: &Config) {
        if self.pending.as_ref() == Some(current) {
            self.won(current);
        } else if current.epoch > self.config.epoch {
            self.pending = None;
            self.deposed = true;
        } else if current.epoch == self.config.epoch && *current != self.config {
            // Cannot happen: one configuration per epoch.
            self.deposed = true;
        }
    }

    /// `from` asks for a catch-up copy. `Ok(groups)`: send it a copy of the
    /// shard tagged `at` (the label stored in the copy's snapshot), then
    /// these groups that followed it; from then on it is sent every group
    /// as a learner. A member must be removed first (it is marked so);
    /// a copy older than the kept labels must be taken again.
    ///
    /// # Errors
    ///
    /// [`Refused::NotNow`]: this is not a serving primary, `from` is a
    /// member, or `at` is not among the kept labels.
    pub(crate) fn catch_up(
        &mut self,
        from: &str,
        at: Label,
        now: Instant,
    ) -> Result<Vec<Group>, Refused> {
        if self.deposed || from == self.me() {
            return Err(Refused::NotNow);
        }
        let member = self.config.has(from) || self.pending.as_ref().is_some_and(|c| c.has(from));
        if member {
            self.unreachable(from);
            return Err(Refused::NotNow);
        }
        let epoch = self.config.epoch;
        let groups = self.log.after(at).ok_or(Refused::NotNow)?;
        let last = self.log.last().seq;
        self.peers.insert(
            from.to_string(),
            Peer {
                sent: last,
                waiting_since: Some(now),
                learner: true,
                ..Peer::default()
            },
        );
        Ok(groups
            .into_iter()
            .map(|(prev, label)| Group {
                epoch,
                prev,
                label,
                to: vec![from.to_string()],
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(epoch: u64, primary: &str, followers: &[&str]) -> Config {
        Config {
            epoch,
            primary: primary.into(),
            followers: followers.iter().map(|s| (*s).to_string()).collect(),
        }
    }

    fn primary(followers: &[&str]) -> Primary {
        let limits = Limits {
            max_log: 8,
            max_lag: 4,
            ack_timeout: Duration::from_secs(1),
        };
        Primary::new(
            cfg(1, "a", followers),
            Log::at(Label::ZERO, 8),
            0,
            followers.len(),
            limits,
        )
    }

    #[test]
    fn a_group_is_released_once_durable_here_and_on_every_follower() {
        let t = Instant::now();
        let mut p = primary(&["b", "c"]);
        let g = p.append(t);
        assert_eq!((g.prev, g.label.seq, g.to.len()), (Label::ZERO, 1, 2));
        assert_eq!(p.release(), None);
        p.durable(1);
        p.on_ack("b", 1, 1, t);
        assert_eq!(p.release(), None, "c has not acknowledged");
        p.on_ack("c", 0, 1, t);
        assert_eq!(p.release(), None, "an ack of another epoch does not count");
        p.on_ack("c", 1, 1, t);
        assert_eq!(p.release(), Some(1));
        assert!(p.ready());
        // Alone (R = 0): local durability is enough.
        let mut solo = primary(&[]);
        solo.append(t);
        solo.durable(1);
        assert_eq!(solo.release(), Some(1));
    }

    #[test]
    fn a_group_that_did_not_commit_gives_its_label_back() {
        let t = Instant::now();
        let mut p = primary(&["b"]);
        let g1 = p.append(t);
        p.durable(1);
        p.on_ack("b", 1, 1, t);
        assert_eq!(p.release(), Some(1));
        let g2 = p.append(t);
        p.retract(g2.label);
        // A durable group is never taken back.
        p.retract(g1.label);
        assert_eq!(p.last(), g1.label);
        let later = t + Duration::from_secs(5);
        assert!(p.tick(later).is_none(), "b owes nothing");
        assert_eq!(p.append(later).label, g2.label);
    }

    #[test]
    fn a_silent_follower_is_removed_by_etcd_before_anything_more_is_released() {
        let t = Instant::now();
        let mut p = primary(&["b", "c"]);
        p.append(t);
        p.durable(1);
        p.on_ack("b", 1, 1, t);
        assert!(p.tick(t).is_none());
        let later = t + Duration::from_secs(1);
        let prop = p.tick(later).expect("c timed out");
        assert_eq!(prop.next, cfg(2, "a", &["b"]));
        assert_eq!(
            p.release(),
            None,
            "c still gates while the change is pending"
        );
        assert!(p.tick(later).is_none(), "one proposal at a time");
        p.on_config(&prop.next);
        assert_eq!(p.config().epoch, 2);
        assert_eq!(p.release(), Some(1));
        // Groups now go only to b.
        assert_eq!(p.append(later).to, vec!["b".to_string()]);
    }

    #[test]
    fn a_lost_proposal_or_a_stale_refusal_deposes_it() {
        let t = Instant::now();
        let mut p = primary(&["b"]);
        p.append(t);
        p.durable(1);
        p.unreachable("b");
        let prop = p.tick(t).expect("remove b");
        // b promoted itself meanwhile.
        p.on_config(&cfg(2, "b", &[]));
        assert!(p.deposed() && !p.ready());
        assert_eq!(p.release(), None);
        assert!(p.tick(t).is_none());
        drop(prop);
        let mut q = primary(&["b"]);
        q.append(t);
        q.on_refused(
            "b",
            &Refused::Stale {
                epoch: 3,
                primary: Some("b".into()),
            },
            t,
        );
        q.durable(1);
        q.on_ack("b", 1, 1, t);
        assert_eq!(q.release(), None);
    }

    #[test]
    fn a_follower_that_missed_groups_gets_them_again_or_is_removed() {
        let t = Instant::now();
        let mut p = primary(&["b"]);
        for _ in 0..3 {
            p.append(t);
        }
        let again = p.on_refused(
            "b",
            &Refused::Mismatch {
                last: Label { epoch: 1, seq: 1 },
            },
            t,
        );
        let labels: Vec<u64> = again.iter().map(|g| g.label.seq).collect();
        assert_eq!(labels, vec![2, 3]);
        assert_eq!(again[0].prev, Label { epoch: 1, seq: 1 });
        // A history we never had: it must catch up by copy, so it goes.
        p.on_refused(
            "b",
            &Refused::Mismatch {
                last: Label { epoch: 7, seq: 2 },
            },
            t,
        );
        assert_eq!(p.tick(t).map(|c| c.next), Some(cfg(2, "a", &[])));
    }

    #[test]
    fn a_learner_is_added_once_it_holds_everything_released() {
        let t = Instant::now();
        let mut p = primary(&[]);
        p.set_replicas(1);
        assert!(!p.replicating(), "no other node holds the shard");
        p.append(t);
        p.durable(1);
        assert_eq!(p.release(), Some(1));
        let at = p.last();
        let rest = p.catch_up("d", at, t).expect("a copy");
        assert!(p.replicating(), "a learner holds it");
        assert!(rest.is_empty());
        assert!(p.tick(t).is_none(), "nothing heard from d yet");
        let g = p.append(t);
        assert_eq!(g.to, vec!["d".to_string()]);
        p.durable(2);
        assert_eq!(p.release(), Some(2), "a learner does not gate");
        p.on_ack("d", 1, 1, t);
        assert!(p.tick(t).is_none(), "d lacks group 2, which was released");
        p.on_ack("d", 1, 2, t);
        let prop = p.tick(t).expect("add d");
        assert_eq!(prop.next, cfg(2, "a", &["d"]));
        p.append(t);
        p.durable(3);
        assert_eq!(p.release(), None, "d gates from the proposal on");
        p.won(&cfg(1, "a", &[]));
        assert_eq!(p.release(), None, "an answer to another proposal");
        p.won(&prop.next);
        p.on_ack("d", 2, 3, t);
        assert_eq!(p.release(), Some(3));
        // A learner of an empty history owes nothing once it has its copy.
        let mut e = primary(&[]);
        e.set_replicas(1);
        e.catch_up("f", Label::ZERO, t).expect("a copy");
        e.on_ack("f", 1, 0, t);
        let prop = e.tick(t + Duration::from_secs(9)).expect("add f");
        assert_eq!(prop.next, cfg(2, "a", &["f"]));
        e.won(&prop.next);
        assert!(e.tick(t + Duration::from_secs(20)).is_none(), "f stays");
        // A member asking for a copy is marked for removal first.
        assert_eq!(p.catch_up("d", at, t), Err(Refused::NotNow));
        assert_eq!(p.tick(t).map(|c| c.next), Some(cfg(3, "a", &[])));
    }
}
