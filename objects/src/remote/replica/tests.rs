//! The model test of replication: three nodes running the primary and
//! follower state machines over a network that loses and reorders
//! messages, against an etcd that is one compare-and-swap register, with
//! crashes (a node loses what it had not synced), restarts, lost
//! connections, time passing, R changing and promotions at any moment
//! (false suspicion included). After every step it checks that
//!
//! - every released group is durable, at its place in the history, on
//!   every member of the configuration etcd holds (so whoever is promoted
//!   next has it: no acknowledged write is ever lost), and
//! - releases at one epoch come from one node, the primary etcd named at
//!   that epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

pub(super) const NODES: usize = 3;

pub(super) fn name(i: usize) -> String {
    format!("n{i}")
}

fn limits() -> Limits {
    Limits {
        max_log: 4,
        max_lag: 3,
        ack_timeout: Duration::from_secs(2),
    }
}

/// What travels between nodes (and etcd's late answers to proposals).
#[derive(Clone, Debug)]
pub(super) enum Msg {
    Append {
        from: String,
        to: usize,
        epoch: u64,
        prev: Label,
        label: Label,
    },
    Ack {
        from: String,
        to: usize,
        epoch: u64,
        seq: u64,
    },
    Refuse {
        from: String,
        to: usize,
        why: Refused,
    },
    CatchUp {
        from: String,
        to: usize,
        session: u64,
    },
    Copy {
        from: String,
        to: usize,
        epoch: u64,
        history: Vec<Label>,
        session: u64,
    },
    Decided {
        to: usize,
        life: u32,
        next: Config,
        won: bool,
        current: Config,
    },
}

pub(super) enum Role {
    Down,
    Primary(Primary),
    Follower(Follower, Option<Config>),
}

pub(super) struct Node {
    /// The shard's groups in this node's store, in order.
    pub(super) applied: Vec<Label>,
    /// How many of them are durable.
    pub(super) durable: usize,
    pub(super) role: Role,
    /// Bumped by each crash: etcd answers to an earlier life are void.
    pub(super) life: u32,
}

fn log_of(history: &[Label]) -> Log {
    let mut log = Log::at(Label::ZERO, limits().max_log);
    for l in history {
        log.push(*l);
    }
    log
}

fn index(name: &str) -> usize {
    name[1..].parse().expect("node name")
}

pub(super) struct World {
    pub(super) nodes: Vec<Node>,
    pub(super) etcd: Config,
    /// Every configuration etcd ever held, by epoch.
    pub(super) configs: BTreeMap<u64, Config>,
    pub(super) replicas: usize,
    pub(super) net: Vec<Msg>,
    pub(super) now: Instant,
    /// Released labels, and which node released at each epoch.
    pub(super) released: BTreeSet<Label>,
    pub(super) releasers: BTreeMap<u64, String>,
    /// The last catch-up request number used (unique across nodes and
    /// lives, as a random number would be).
    pub(super) sessions: u64,
}

impl World {
    pub(super) fn new(replicas: usize) -> World {
        let etcd = Config {
            epoch: 1,
            primary: name(0),
            followers: (1..=replicas).map(name).collect(),
        };
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let role = if i == 0 {
                Role::Primary(Primary::new(
                    etcd.clone(),
                    log_of(&[]),
                    0,
                    replicas,
                    limits(),
                ))
            } else {
                let mut f = Follower::new(&name(i), log_of(&[]), 0);
                f.on_config(&etcd);
                Role::Follower(f, None)
            };
            nodes.push(Node {
                applied: Vec::new(),
                durable: 0,
                role,
                life: 0,
            });
        }
        let mut configs = BTreeMap::new();
        configs.insert(1, etcd.clone());
        World {
            nodes,
            etcd,
            configs,
            replicas,
            net: Vec::new(),
            now: Instant::now(),
            released: BTreeSet::new(),
            releasers: BTreeMap::new(),
            sessions: 0,
        }
    }

    /// etcd's transaction: `next` if the configuration is still `prev`.
    pub(super) fn cas(&mut self, p: &Proposal) -> bool {
        if self.etcd != p.prev {
            return false;
        }
        assert_eq!(p.next.epoch, p.prev.epoch + 1);
        self.etcd = p.next.clone();
        assert!(self.configs.insert(p.next.epoch, p.next.clone()).is_none());
        true
    }

    /// Proposes and queues etcd's answer to node `i` (it may be late).
    pub(super) fn propose(&mut self, i: usize, p: &Proposal) {
        let won = self.cas(p);
        self.net.push(Msg::Decided {
            to: i,
            life: self.nodes[i].life,
            next: p.next.clone(),
            won,
            current: self.etcd.clone(),
        });
    }

    pub(super) fn send_groups(&mut self, from: &str, groups: Vec<Group>) {
        for g in groups {
            for to in g.to {
                self.net.push(Msg::Append {
                    from: from.to_string(),
                    to: index(&to),
                    epoch: g.epoch,
                    prev: g.prev,
                    label: g.label,
                });
            }
        }
    }

    pub(super) fn send_ack(&mut self, i: usize, ack: Option<Ack>) {
        if let Some(a) = ack {
            self.net.push(Msg::Ack {
                from: name(i),
                to: index(&a.to),
                epoch: a.epoch,
                seq: a.seq,
            });
        }
    }

    /// Node `i` becomes a follower of whatever etcd says (a deposed
    /// primary, or a restart not named primary); outside the configuration
    /// it asks the primary for a copy.
    pub(super) fn follow(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let mut f = Follower::new(&name(i), log_of(&n.applied), n.durable as u64);
        f.on_config(&self.etcd);
        n.role = Role::Follower(f, None);
        self.ask_copy(i);
    }

    pub(super) fn ask_copy(&mut self, i: usize) {
        if self.etcd.has(&name(i)) {
            return;
        }
        let Role::Follower(f, _) = &mut self.nodes[i].role else {
            return;
        };
        // The shell paces these (`ASK_AGAIN`); the model lets every
        // refresh act, so that a random run reaches them often.
        let next = self.sessions + 1;
        match f.learn(self.now, Duration::ZERO, || next) {
            Some(Catch::Copy(session)) => {
                self.sessions = next;
                self.net.push(Msg::CatchUp {
                    from: name(i),
                    to: index(&self.etcd.primary),
                    session,
                });
            }
            Some(Catch::Probe(ack)) => self.send_ack(i, Some(ack)),
            None => {}
        }
    }

    pub(super) fn commit(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if let Role::Primary(p) = &mut n.role
            && !p.deposed()
        {
            let g = p.append(now);
            assert_eq!(n.applied.last().copied().unwrap_or(Label::ZERO), g.prev);
            n.applied.push(g.label);
            self.send_groups(&name(i), vec![g]);
        }
    }

    pub(super) fn sync(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.durable = n.applied.len();
        let seq = n.durable as u64;
        let ack = match &mut n.role {
            Role::Primary(p) => {
                p.durable(seq);
                None
            }
            Role::Follower(f, _) => f.durable(seq),
            Role::Down => None,
        };
        self.send_ack(i, ack);
    }

    pub(super) fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.applied.truncate(n.durable);
        n.role = Role::Down;
        n.life += 1;
    }

    pub(super) fn restart(&mut self, i: usize) {
        if !matches!(self.nodes[i].role, Role::Down) {
            return;
        }
        let current = self.etcd.clone();
        if current.primary == name(i) {
            let p = Primary::reclaim(&current);
            assert!(self.cas(&p));
            let n = &mut self.nodes[i];
            let log = log_of(&n.applied);
            n.role = Role::Primary(Primary::new(
                p.next,
                log,
                n.durable as u64,
                self.replicas,
                limits(),
            ));
        } else {
            self.follow(i);
        }
    }

    pub(super) fn refresh(&mut self, i: usize) {
        let current = self.etcd.clone();
        let replicas = self.replicas;
        match &mut self.nodes[i].role {
            Role::Primary(p) => {
                p.on_config(&current);
                p.set_replicas(replicas);
                if p.deposed() {
                    self.follow(i);
                }
            }
            Role::Follower(f, promoting) => {
                f.on_config(&current);
                if promoting.is_none() {
                    self.ask_copy(i);
                }
            }
            Role::Down => {}
        }
    }

    pub(super) fn tick(&mut self, i: usize) {
        let now = self.now;
        if let Role::Primary(p) = &mut self.nodes[i].role
            && let Some(prop) = p.tick(now)
        {
            self.propose(i, &prop);
        }
    }

    pub(super) fn promote(&mut self, i: usize) {
        let current = self.etcd.clone();
        let prop = match &mut self.nodes[i].role {
            Role::Follower(f, promoting @ None) => {
                let Some(prop) = f.promote(&current, |_| true) else {
                    return;
                };
                *promoting = Some(prop.next.clone());
                prop
            }
            _ => return,
        };
        self.propose(i, &prop);
    }

    pub(super) fn unreachable(&mut self, i: usize, peer: usize) {
        if let Role::Primary(p) = &mut self.nodes[i].role {
            p.unreachable(&name(peer));
        }
    }

    /// A message from a primary at `epoch` reached node `i`: if `i` is a
    /// primary of an older epoch it has been deposed and follows; of the
    /// same or a newer one, it refuses. `true`: handle it as a follower.
    pub(super) fn as_follower(&mut self, i: usize, from: &str, epoch: u64) -> bool {
        let Role::Primary(p) = &self.nodes[i].role else {
            return matches!(self.nodes[i].role, Role::Follower(..));
        };
        let mine = p.config().epoch;
        if epoch > mine {
            self.follow(i);
            return true;
        }
        self.net.push(Msg::Refuse {
            from: name(i),
            to: index(from),
            why: Refused::Stale {
                epoch: mine,
                primary: Some(name(i)),
            },
        });
        false
    }

    pub(super) fn deliver(&mut self, msg: Msg) {
        let now = self.now;
        match msg {
            Msg::Append {
                from,
                to,
                epoch,
                prev,
                label,
            } => {
                if !self.as_follower(to, &from, epoch) {
                    return;
                }
                let n = &mut self.nodes[to];
                let Role::Follower(f, _) = &mut n.role else {
                    return;
                };
                match f.on_append(&from, epoch, prev, label) {
                    Verdict::Apply => {
                        assert_eq!(n.applied.last().copied().unwrap_or(Label::ZERO), prev);
                        n.applied.push(label);
                    }
                    Verdict::Duplicate => {
                        let ack = f.ack();
                        self.send_ack(to, ack);
                    }
                    Verdict::Refuse(why) => self.net.push(Msg::Refuse {
                        from: name(to),
                        to: index(&from),
                        why,
                    }),
                }
            }
            Msg::Copy {
                from,
                to,
                epoch,
                history,
                session,
            } => {
                if !self.as_follower(to, &from, epoch) {
                    return;
                }
                let n = &mut self.nodes[to];
                let Role::Follower(f, _) = &mut n.role else {
                    return;
                };
                let at = history.last().copied().unwrap_or(Label::ZERO);
                match f.on_copy(&from, epoch, at, session) {
                    Verdict::Apply => {
                        // Installed in one transaction, then synced.
                        n.applied = history;
                        n.durable = n.applied.len();
                        let ack = f.durable(n.durable as u64);
                        self.send_ack(to, ack);
                    }
                    Verdict::Duplicate => {
                        let ack = f.ack();
                        self.send_ack(to, ack);
                    }
                    Verdict::Refuse(why) => self.net.push(Msg::Refuse {
                        from: name(to),
                        to: index(&from),
                        why,
                    }),
                }
            }
            Msg::Ack {
                from,
                to,
                epoch,
                seq,
            } => {
                if let Role::Primary(p) = &mut self.nodes[to].role
                    && let Some(why) = p.on_ack(&from, epoch, seq, now)
                {
                    self.net.push(Msg::Refuse {
                        from: name(to),
                        to: index(&from),
                        why,
                    });
                }
            }
            Msg::Refuse { from, to, why } => match &mut self.nodes[to].role {
                Role::Primary(p) => {
                    let again = p.on_refused(&from, &why, now);
                    self.send_groups(&name(to), again);
                }
                Role::Follower(f, _) => f.forgotten(),
                Role::Down => {}
            },
            Msg::CatchUp { from, to, session } => {
                let n = &mut self.nodes[to];
                if let Role::Primary(p) = &mut n.role {
                    let at = p.last();
                    let epoch = p.config().epoch;
                    match p.catch_up(&from, at, now) {
                        Ok(groups) => {
                            self.net.push(Msg::Copy {
                                from: name(to),
                                to: index(&from),
                                epoch,
                                history: n.applied.clone(),
                                session,
                            });
                            self.send_groups(&name(to), groups);
                        }
                        Err(why) => self.net.push(Msg::Refuse {
                            from: name(to),
                            to: index(&from),
                            why,
                        }),
                    }
                }
            }
            Msg::Decided {
                to,
                life,
                next,
                won,
                current,
            } => {
                let n = &mut self.nodes[to];
                if n.life != life {
                    return;
                }
                match std::mem::replace(&mut n.role, Role::Down) {
                    Role::Primary(mut p) => {
                        if won {
                            p.won(&next);
                        } else {
                            p.on_config(&current);
                        }
                        n.role = Role::Primary(p);
                    }
                    Role::Follower(mut f, Some(promoting)) if promoting == next => {
                        n.role = if won {
                            match f.clone().into_primary(next, self.replicas, limits()) {
                                Some(p) => Role::Primary(p),
                                None => Role::Follower(f, None),
                            }
                        } else {
                            f.on_config(&current);
                            Role::Follower(f, None)
                        };
                    }
                    other => n.role = other,
                }
            }
        }
    }

    /// Every primary releases what it may (the shell does so after every
    /// event); each release is recorded.
    pub(super) fn release_all(&mut self) {
        for i in 0..NODES {
            let n = &mut self.nodes[i];
            let Role::Primary(p) = &mut n.role else {
                continue;
            };
            let before = p.released();
            let Some(through) = p.release() else {
                continue;
            };
            let epoch = p.config().epoch;
            let who = self.releasers.entry(epoch).or_insert_with(|| name(i));
            assert_eq!(*who, name(i), "two nodes released at epoch {epoch}");
            assert_eq!(self.configs[&epoch].primary, name(i));
            for seq in before + 1..=through {
                let label = n.applied[(seq - 1) as usize];
                assert!((seq as usize) <= n.durable, "released before durable here");
                self.released.insert(label);
            }
        }
    }

    /// No released group is missing from any member of etcd's configuration.
    pub(super) fn check(&self) {
        for m in std::iter::once(&self.etcd.primary).chain(&self.etcd.followers) {
            let n = &self.nodes[index(m)];
            let durable = &n.applied[..n.durable];
            for l in &self.released {
                assert_eq!(
                    durable.get((l.seq - 1) as usize),
                    Some(l),
                    "released group {l:?} is not durable on {m}, a member of {:?}",
                    self.etcd
                );
            }
        }
    }
}

fn step(w: &mut World, action: u8, a: usize, b: prop::sample::Index) {
    let i = a % NODES;
    match action {
        0..=5 => w.commit(i),
        6..=10 => w.sync(i),
        11..=24 => {
            if !w.net.is_empty() {
                let k = b.index(w.net.len());
                let msg = w.net.swap_remove(k);
                w.deliver(msg);
            }
        }
        25 => {
            if !w.net.is_empty() {
                let k = b.index(w.net.len());
                w.net.swap_remove(k);
            }
        }
        26 | 27 => w.tick(i),
        28 => w.now += Duration::from_secs(1),
        29 => w.crash(i),
        30 | 31 => w.restart(i),
        32 | 33 => w.refresh(i),
        34 => w.promote(i),
        35 => w.unreachable(i, b.index(NODES)),
        _ => w.replicas = b.index(MAX_REPLICAS + 1),
    }
    w.release_all();
    w.check();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Random interleavings never lose a released group and never have
    /// two primaries releasing in one epoch.
    #[test]
    fn nothing_released_is_ever_lost(
        replicas in 0..=MAX_REPLICAS,
        steps in proptest::collection::vec((0u8..37, 0usize..NODES, any::<prop::sample::Index>()), 1..400),
    ) {
        let mut w = World::new(replicas);
        for (action, a, b) in steps {
            step(&mut w, action, a, b);
        }
    }
}
