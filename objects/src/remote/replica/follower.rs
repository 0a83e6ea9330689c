//! The follower side of one shard (also a learner's: a node catching up
//! that is not in the configuration yet runs the same rules).
//!
//! A follower knows the newest epoch it has heard of and that epoch's
//! primary. It takes a group only from that primary, only if the group
//! follows its last one, and answers older epochs with
//! [`Refused::Stale`]. It acknowledges what it has made durable, and only
//! once its history is known to be a prefix of the primary's (`matched`):
//! a group taken in chain order, or a copy installed, at this epoch.
//!
//! The shell must read the shard's configuration from etcd (and call
//! [`Follower::on_config`]) before it handles any replication message
//! after a start: the newest epoch lives in memory only.

use std::time::{Duration, Instant};

use super::{Config, Label, Limits, Log, Primary, Proposal, Refused};

/// What to do with a group that arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Apply it atomically, make it durable, then call
    /// [`Follower::durable`] and send the acknowledgement it returns.
    Apply,
    /// Already held: send [`Follower::ack`] again, if any.
    Duplicate,
    /// Not taken; tell the sender why.
    Refuse(Refused),
}

/// "Everything through `seq` is durable here", for the primary `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) to: String,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
}

/// What a learner sends its primary now ([`Follower::learn`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Catch {
    /// Ask for a catch-up copy, as request `session`.
    Copy(u64),
    /// It holds the primary's history and waits to be added: say so again
    /// (the acknowledgement it would send anyway). A primary that no
    /// longer counts it as a learner answers [`Refused::NotNow`], and then
    /// [`Follower::forgotten`] makes it ask for a copy.
    Probe(Ack),
}

/// One shard's follower (or learner) state on one node.
#[derive(Clone, Debug)]
pub(crate) struct Follower {
    me: String,
    /// The newest epoch heard of (from etcd or from a primary).
    epoch: u64,
    /// That epoch's primary, once known.
    primary: Option<String>,
    /// The groups applied here (the last one may not be durable yet).
    log: Log,
    /// The last sequence number durable here.
    durable: u64,
    /// The history here is a prefix of `primary`'s at `epoch`.
    matched: bool,
    /// The catch-up copy this replica asked for last, if it is waiting for
    /// one: only that copy is installed, never a late one of an earlier
    /// request (it could be older than groups acknowledged since).
    session: Option<u64>,
    /// A follower in the newest configuration read from etcd (else a
    /// learner, if it runs these rules at all).
    member: bool,
    /// When it last asked for a copy, or probed, as a learner.
    asked: Option<Instant>,
}

impl Follower {
    /// A follower whose store holds the history `log` ends with, durable
    /// through `durable` (after a start: `Log::at` the label stored with
    /// the shard's data, durable through its sequence number).
    pub(crate) fn new(me: &str, log: Log, durable: u64) -> Follower {
        Follower {
            me: me.to_string(),
            epoch: 0,
            primary: None,
            durable: durable.min(log.last().seq),
            log,
            matched: false,
            session: None,
            member: false,
            asked: None,
        }
    }

    /// The newest epoch this replica knows.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last group applied here.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn last(&self) -> Label {
        self.log.last()
    }

    /// The last sequence number durable here.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// The shard's configuration as read from etcd.
    pub(crate) fn on_config(&mut self, config: &Config) {
        self.adopt(config.epoch, &config.primary);
        if config.epoch == self.epoch {
            self.member = config.is_follower(&self.me);
        }
    }

    /// What this replica, outside the configuration, sends its primary
    /// now, at most once per `every`: while it does not hold the primary's
    /// history, a request for a copy (numbered by `session`, called only
    /// then); once it does, a [`Catch::Probe`], so that a primary that
    /// dropped it as a learner (a send to it failed, say) tells it so. A
    /// member sends neither.
    pub(crate) fn learn(
        &mut self,
        now: Instant,
        every: Duration,
        session: impl FnOnce() -> u64,
    ) -> Option<Catch> {
        if self.member
            || self
                .asked
                .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return None;
        }
        let catch = if self.matched {
            Catch::Probe(self.ack()?)
        } else {
            let s = session();
            self.want_copy(s);
            Catch::Copy(s)
        };
        self.asked = Some(now);
        Some(catch)
    }

    /// The primary refused this learner's request or probe
    /// ([`Refused::NotNow`]: it does not count it as a learner, or cannot
    /// copy now). It asks for a copy at the next [`learn`](Self::learn):
    /// groups sent to it from now on may not follow what it holds.
    pub(crate) fn forgotten(&mut self) {
        if self.member {
            return;
        }
        self.matched = false;
        self.asked = None;
    }

    /// A newer epoch: its primary is the only sender from now on, and
    /// nothing is acknowledged until the history is matched with it.
    fn adopt(&mut self, epoch: u64, primary: &str) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.primary = Some(primary.to_string());
            self.matched = false;
        }
    }

    /// Fencing: `Some` if `from` at `epoch` may not send to this replica.
    fn fence(&mut self, from: &str, epoch: u64) -> Option<Refused> {
        self.adopt(epoch, from);
        if epoch < self.epoch || self.primary.as_deref() != Some(from) {
            return Some(Refused::Stale {
                epoch: self.epoch,
                primary: self.primary.clone(),
            });
        }
        None
    }

    /// A group `label` that follows `prev`, sent by `from` as primary at
    /// `epoch`. (A resent group may carry an older epoch in its label: it
    /// was issued earlier, by this primary or one before it.)
    pub(crate) fn on_append(
        &mut self,
        from: &str,
        epoch: u64,
        prev: Label,
        label: Label,
    ) -> Verdict {
        if let Some(r) = self.fence(from, epoch) {
            return Verdict::Refuse(r);
        }
        let last = self.log.last();
        if prev == last && label.seq == prev.seq + 1 && label.epoch <= epoch {
            self.log.push(label);
            self.matched = true;
            return Verdict::Apply;
        }
        if self.matched && label.seq <= last.seq {
            // Matched at this epoch: every group of this primary up to
            // `last` is here already (a resend, or reordered).
            return Verdict::Duplicate;
        }
        Verdict::Refuse(Refused::Mismatch { last })
    }

    /// This replica asks its primary for a catch-up copy, as request
    /// `session`: a number never used before by this node for this shard
    /// (random, say), echoed by the copy.
    pub(crate) fn want_copy(&mut self, session: u64) {
        self.session = Some(session);
    }

    /// A whole catch-up copy of the shard, tagged `at`, from `from` as
    /// primary at `epoch`, for request `session`. [`Verdict::Apply`]:
    /// replace the shard's data with it in one transaction, make it
    /// durable, then call [`Follower::durable`]. A copy of another request
    /// (a late one, perhaps from before a restart) is a
    /// [`Verdict::Duplicate`], and so is one that arrives after this
    /// replica got past `at` in the same primary's history: installing
    /// either could undo groups it has acknowledged since.
    pub(crate) fn on_copy(&mut self, from: &str, epoch: u64, at: Label, session: u64) -> Verdict {
        if let Some(r) = self.fence(from, epoch) {
            return Verdict::Refuse(r);
        }
        if self.session != Some(session) || (self.matched && at.seq <= self.log.last().seq) {
            return Verdict::Duplicate;
        }
        self.session = None;
        if !self.matched {
            // The history here may not be a prefix of the copy's: none of
            // it counts as durable until the copy is synced.
            self.durable = 0;
        }
        self.log = Log::at(at, self.log.max);
        self.matched = true;
        Verdict::Apply
    }

    /// A sync made everything through `seq` durable here; the
    /// acknowledgement to send, if the primary may count it.
    pub(crate) fn durable(&mut self, seq: u64) -> Option<Ack> {
        self.durable = self.durable.max(seq.min(self.log.last().seq));
        self.ack()
    }

    /// The acknowledgement of what is durable here, if matched.
    pub(crate) fn ack(&self) -> Option<Ack> {
        match (&self.primary, self.matched) {
            (Some(p), true) => Some(Ack {
                to: p.clone(),
                epoch: self.epoch,
                seq: self.durable,
            }),
            _ => None,
        }
    }

    /// When the primary of `current` (read from etcd) is lost: this
    /// follower of it proposes itself as primary, keeping the other
    /// followers that `live` says are up. `None` if it is not a follower
    /// of `current`, or `current` is older than an epoch it knows.
    pub(crate) fn promote(
        &self,
        current: &Config,
        live: impl Fn(&str) -> bool,
    ) -> Option<Proposal> {
        if !current.is_follower(&self.me) || current.epoch < self.epoch {
            return None;
        }
        let next = Config {
            epoch: current.epoch + 1,
            primary: self.me.clone(),
            followers: current
                .followers
                .iter()
                .filter(|f| **f != self.me && live(f))
                .cloned()
                .collect(),
        };
        Some(Proposal {
            prev: current.clone(),
            next,
        })
    }

    /// Its promotion won (etcd now holds `config`, naming it primary): the
    /// primary that continues from this replica's history. `None` if a
    /// newer epoch than `config`'s is known already.
    pub(crate) fn into_primary(
        self,
        config: Config,
        replicas: usize,
        limits: Limits,
    ) -> Option<Primary> {
        if config.epoch < self.epoch || config.primary != self.me {
            return None;
        }
        Some(Primary::new(
            config,
            self.log,
            self.durable,
            replicas,
            limits,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(epoch: u64, seq: u64) -> Label {
        Label { epoch, seq }
    }

    #[test]
    fn groups_are_taken_in_chain_order_from_the_epoch_s_primary_only() {
        let mut f = Follower::new("b", Log::at(Label::ZERO, 8), 0);
        assert_eq!(f.on_append("a", 1, l(0, 0), l(1, 1)), Verdict::Apply);
        // Not durable yet: nothing to acknowledge beyond 0.
        assert_eq!(f.ack().map(|a| a.seq), Some(0));
        assert_eq!(
            f.durable(1),
            Some(Ack {
                to: "a".into(),
                epoch: 1,
                seq: 1
            })
        );
        // A gap (group 2 lost): the follower says where it is.
        assert_eq!(
            f.on_append("a", 1, l(1, 2), l(1, 3)),
            Verdict::Refuse(Refused::Mismatch { last: l(1, 1) })
        );
        // A resend of group 1: already here.
        assert_eq!(f.on_append("a", 1, l(0, 0), l(1, 1)), Verdict::Duplicate);
        // Someone else claiming epoch 1: fenced.
        assert!(matches!(
            f.on_append("c", 1, l(1, 1), l(1, 2)),
            Verdict::Refuse(Refused::Stale { epoch: 1, .. })
        ));
    }

    #[test]
    fn a_learner_asks_for_a_copy_then_probes_at_most_once_per_period() {
        let every = std::time::Duration::from_secs(10);
        let t = Instant::now();
        let mut f = Follower::new("b", Log::at(Label::ZERO, 8), 0);
        let config = |followers: &[&str]| Config {
            epoch: 1,
            primary: "a".into(),
            followers: followers.iter().map(|s| (*s).to_string()).collect(),
        };
        f.on_config(&config(&[]));
        assert_eq!(f.learn(t, every, || 7), Some(Catch::Copy(7)));
        assert_eq!(f.learn(t + every / 2, every, || 8), None, "paced");
        assert_eq!(f.learn(t + every, every, || 8), Some(Catch::Copy(8)));
        // The copy of request 8 is installed: from now on it probes.
        assert_eq!(f.on_copy("a", 1, l(1, 3), 8), Verdict::Apply);
        let probe = Catch::Probe(Ack {
            to: "a".into(),
            epoch: 1,
            seq: 0,
        });
        assert_eq!(f.learn(t + every * 2, every, || 9), Some(probe));
        // Told it is not counted: it asks for a copy at once.
        f.forgotten();
        assert_eq!(f.learn(t + every * 2, every, || 9), Some(Catch::Copy(9)));
        // A member neither asks nor probes, and is never forgotten.
        f.on_config(&config(&["b"]));
        assert_eq!(f.learn(t + every * 9, every, || 10), None);
        assert_eq!(f.on_copy("a", 1, l(1, 3), 9), Verdict::Apply);
        f.forgotten();
        assert!(f.ack().is_some(), "still matched");
    }

    #[test]
    fn an_older_epoch_is_refused_once_a_newer_one_is_known() {
        let mut f = Follower::new("b", Log::at(l(1, 4), 8), 4);
        f.on_config(&Config {
            epoch: 3,
            primary: "c".into(),
            followers: vec!["b".into()],
        });
        assert_eq!(
            f.on_append("a", 2, l(1, 4), l(2, 5)),
            Verdict::Refuse(Refused::Stale {
                epoch: 3,
                primary: Some("c".into())
            })
        );
        f.want_copy(1);
        assert!(matches!(f.on_copy("a", 2, l(2, 9), 1), Verdict::Refuse(_)));
        assert_eq!(f.epoch(), 3);
        // Unmatched at epoch 3 until a group follows its history.
        assert_eq!(f.ack(), None);
        assert_eq!(f.on_append("c", 3, l(1, 4), l(3, 5)), Verdict::Apply);
        assert_eq!(
            f.durable(5).map(|a| (a.to, a.epoch, a.seq)),
            Some(("c".into(), 3, 5))
        );
    }

    #[test]
    fn a_diverged_replica_is_told_apart_and_a_copy_resets_it() {
        // "b" holds group (1, 5) that the new primary "c" never got.
        let mut f = Follower::new("b", Log::at(l(1, 5), 8), 5);
        assert_eq!(
            f.on_append("c", 2, l(1, 4), l(2, 5)),
            Verdict::Refuse(Refused::Mismatch { last: l(1, 5) })
        );
        f.want_copy(7);
        assert_eq!(
            f.on_copy("c", 2, l(2, 7), 6),
            Verdict::Duplicate,
            "not asked for"
        );
        assert_eq!(f.on_copy("c", 2, l(2, 7), 7), Verdict::Apply);
        assert_eq!((f.last(), f.durable_seq()), (l(2, 7), 0));
        assert_eq!(f.durable(7).map(|a| a.seq), Some(7));
        assert_eq!(f.on_append("c", 2, l(2, 7), l(2, 8)), Verdict::Apply);
        // The same copy again, late, or one asked for again: either would
        // undo group 8.
        assert_eq!(f.on_copy("c", 2, l(2, 7), 7), Verdict::Duplicate);
        f.want_copy(8);
        assert_eq!(f.on_copy("c", 2, l(2, 7), 8), Verdict::Duplicate);
        assert_eq!(f.last(), l(2, 8));
    }

    #[test]
    fn only_a_follower_of_the_current_configuration_may_promote() {
        let cfg = Config {
            epoch: 4,
            primary: "a".into(),
            followers: vec!["b".into(), "c".into()],
        };
        let b = Follower::new("b", Log::at(l(4, 9), 8), 9);
        let p = b.promote(&cfg, |n| n != "c").expect("a follower");
        assert_eq!(
            p.next,
            Config {
                epoch: 5,
                primary: "b".into(),
                followers: vec![]
            }
        );
        assert!(
            Follower::new("d", Log::at(l(4, 9), 8), 9)
                .promote(&cfg, |_| true)
                .is_none()
        );
        let primary = b.into_primary(p.next, 1, Limits::default()).expect("won");
        assert_eq!(primary.last(), l(4, 9));
        assert!(!primary.ready(), "serves only once its barrier is released");
    }
}
