//! Replication wired into a node: the shell around the pure rules of
//! `remote::replica`. For each shard this node is primary of, a [`Lead`]
//! labels the writer's commit groups (`storage::replication::Replicate`),
//! sends them to the followers and answers the groups' callers (the output
//! gate) only once the rules release them; for each shard it follows or
//! catches up on, a [`Trail`] applies the groups it receives through the
//! writer and acknowledges what is durable. Configuration changes (a
//! follower removed, a learner added) are proposed to etcd from the
//! membership loop (`tick`), one transaction each. The messages travel on
//! one QUIC stream per peer (`replicate_net.rs`). `docs/cluster.md`,
//! "Replication", tells the protocol.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::node::Node;
use crate::remote::replica::placement::{self, Zones};
use crate::remote::replica::wire::{Assembler, CopyProgress, ReplMessage, WireBatch};
use crate::remote::replica::{Catch, Config, Follower, Group, Label, Limits, Log, Primary};
use crate::remote::shard::{Owner, shard_of};
use crate::storage::replication::{Mark, Record, Reply};
use crate::storage::{Batch, StorageError, Store};

/// Bytes of batches per `append` part and of records per copy chunk
/// (base64 makes them a third larger; a frame holds 8 MiB).
pub(super) const PART_BYTES: usize = 4 << 20;
/// How long a learner waits for a copy it asked for before asking again,
/// and how often one that holds the primary's history says so (a probe).
const ASK_AGAIN: Duration = Duration::from_secs(10);
/// How long a rewrite outside replication keeps a shard's trail away, at
/// most (a hand-off's steps time out sooner).
const REWRITE_TIMEOUT: Duration = Duration::from_secs(180);

/// A group's batches, in the parts it is sent in.
pub(super) type Parts = Arc<Vec<Vec<WireBatch>>>;

/// One shard this node is primary of.
pub(super) struct Lead {
    pub(super) p: Primary,
    /// The group the writer is committing now, and who gets it.
    pub(super) committing: Option<Group>,
    /// Callers of durable groups not yet released, by sequence number.
    pub(super) parked: BTreeMap<u64, Vec<Reply>>,
    /// Recent groups' parts, to resend to a follower that missed them
    /// (bounded like the rules' labels, and in bytes).
    pub(super) recent: VecDeque<(Label, Parts)>,
    pub(super) recent_bytes: usize,
    /// Catch-up copies being read: every group is labelled meanwhile.
    pub(super) copying: u32,
}

impl State {
    /// `old`, the lead of `shard`, is gone: if other nodes held the shard,
    /// what this node still commits of it is never acknowledged.
    fn fence(&mut self, shard: u32, old: &Lead) {
        if old.p.replicating() || old.p.deposed() {
            self.fenced.insert(shard);
        }
    }
}

impl Lead {
    fn new(p: Primary) -> Lead {
        Lead {
            p,
            committing: None,
            parked: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            copying: 0,
        }
    }
}

/// One shard this node follows, or catches up on as a learner.
pub(super) struct Trail {
    pub(super) f: Follower,
    pub(super) parts: Assembler,
    /// The copy being received: its progress and records so far.
    pub(super) copy: Option<(CopyProgress, Vec<Record>, usize)>,
}

#[derive(Default)]
pub(super) struct State {
    /// Shards this node stopped leading while others held them (it lost
    /// its lease, or a newer configuration deposed it): a commit of an
    /// event that was still running is never acknowledged (it is labelled
    /// as no replica's history, and failed), until this node leads the
    /// shard again.
    pub(super) fenced: std::collections::HashSet<u32>,
    /// Shards whose data here is being rewritten outside replication (a
    /// hand-off to this node, a restore), since when: no trail is kept
    /// for them meanwhile.
    pub(super) rewriting: HashMap<u32, Instant>,
    pub(super) replicas: usize,
    pub(super) leads: HashMap<u32, Lead>,
    pub(super) trails: HashMap<u32, Trail>,
}

/// A node's replication: its leads and trails, and its links to peers.
pub(crate) struct Replication {
    pub(crate) me: String,
    pub(super) shards: u32,
    pub(super) store: Weak<Store>,
    pub(crate) node: Weak<Node>,
    /// The runtime's shared parts (its alarm schedule, for a promotion).
    pub(super) shared: Weak<crate::shared::Shared>,
    pub(super) limits: Limits,
    pub(super) state: Mutex<State>,
    pub(crate) net: super::replicate_net::Net,
}

/// The error a caller gets when its group will never be released here.
pub(super) fn not_released(why: &str) -> StorageError {
    StorageError::CommitFailed(Arc::new(StorageError::Replication(why.to_string())))
}

fn fail(parked: BTreeMap<u64, Vec<Reply>>, why: &str) {
    for reply in parked.into_values().flatten() {
        let _ = reply.send(Err(not_released(why)));
    }
}

pub(super) fn mark(l: Label) -> Mark {
    Mark {
        epoch: l.epoch,
        seq: l.seq,
    }
}

pub(super) fn label(m: Mark) -> Label {
    Label {
        epoch: m.epoch,
        seq: m.seq,
    }
}

/// A group's batches in parts of about `PART_BYTES`: an object's writes
/// may be split, its first part carrying its clear and alarm.
pub(super) fn parts(batches: &[&Batch]) -> Vec<Vec<WireBatch>> {
    let mut out = vec![Vec::new()];
    let mut bytes = 0usize;
    for b in batches {
        let whole = WireBatch::from_batch(b);
        let mut rest = whole.writes.clone();
        let mut piece = WireBatch {
            writes: Vec::new(),
            ..whole
        };
        loop {
            while let Some(w) = rest.first() {
                let len = w.0.len() + w.1.as_ref().map_or(0, String::len);
                if !piece.writes.is_empty() && bytes + len > PART_BYTES {
                    break;
                }
                bytes += len;
                piece.writes.push(rest.remove(0));
            }
            let done = rest.is_empty();
            let next = WireBatch {
                cleared: false,
                alarm: None,
                writes: Vec::new(),
                ..piece.clone()
            };
            if let Some(last) = out.last_mut() {
                last.push(piece);
            }
            if done {
                break;
            }
            out.push(Vec::new());
            bytes = 0;
            piece = next;
        }
    }
    out
}

impl Replication {
    pub(crate) fn new(
        node: &Arc<Node>,
        shared: &Arc<crate::shared::Shared>,
        net: super::replicate_net::Net,
    ) -> Self {
        Replication {
            me: node.me.clone(),
            shards: node.shards,
            store: Arc::downgrade(&shared.store),
            node: Arc::downgrade(node),
            shared: Arc::downgrade(shared),
            limits: Limits::default(),
            state: Mutex::new(State::default()),
            net,
        }
    }

    pub(super) fn store(&self) -> Option<Arc<Store>> {
        self.store.upgrade()
    }

    fn stored_label(&self, shard: u32) -> Mark {
        self.store()
            .and_then(|s| s.labels().ok())
            .and_then(|l| l.get(&shard).copied())
            .unwrap_or_default()
    }

    /// This node serves `shard` as primary of `config` from now on (it
    /// claimed it): called before it serves, so every group is labelled.
    pub(crate) fn own(&self, shard: u32, config: &Config) {
        let m = self.stored_label(shard);
        let mut st = crate::sync::lock(&self.state);
        let replicas = st.replicas;
        if let Some(old) = st.leads.get(&shard)
            && old.p.config() == config
        {
            return;
        }
        let p = Primary::new(
            config.clone(),
            Log::at(label(m), self.limits.max_log),
            m.seq,
            replicas,
            self.limits,
        );
        let lead = Lead::new(p);
        st.fenced.remove(&shard);
        if let Some(old) = st.leads.insert(shard, lead) {
            fail(old.parked, "the shard was claimed again");
        }
        st.trails.remove(&shard);
    }

    /// A reading of etcd: every shard's configuration, the live members'
    /// zones, R, and which shards this node serves now. Leads follow the
    /// configurations; trails are made for the shards this node follows or
    /// should follow (placement), and learners ask for copies.
    pub(crate) fn refresh(
        &self,
        configs: &BTreeMap<u32, Config>,
        zones: &Zones,
        replicas: usize,
        serving: &dyn Fn(u32) -> bool,
    ) {
        let now = Instant::now();
        let mut asks = Vec::new();
        let labels = self
            .store()
            .and_then(|s| s.labels().ok())
            .unwrap_or_default();
        let mut st = crate::sync::lock(&self.state);
        st.replicas = replicas;
        let me = self.me.clone();
        for shard in 0..self.shards {
            let Some(config) = configs.get(&shard) else {
                continue;
            };
            if config.primary == me && serving(shard) {
                let rebuild = st
                    .leads
                    .get(&shard)
                    .is_none_or(|l| l.p.config().epoch < config.epoch || l.p.deposed());
                if rebuild {
                    drop(st);
                    self.own(shard, config);
                    st = crate::sync::lock(&self.state);
                }
                if let Some(lead) = st.leads.get_mut(&shard) {
                    lead.p.on_config(config);
                    lead.p.set_replicas(replicas);
                }
                continue;
            }
            if let Some(old) = st.leads.remove(&shard) {
                st.fence(shard, &old);
                fail(old.parked, "this node no longer serves the shard");
            }
            let member = config.is_follower(&me);
            let wanted = member
                || (config.primary != me
                    && placement::followers(
                        shard,
                        &config.primary,
                        &config.followers,
                        zones,
                        replicas,
                    )
                    .contains(&me));
            let rewriting = st
                .rewriting
                .get(&shard)
                .is_some_and(|t| now.duration_since(*t) < REWRITE_TIMEOUT);
            if !wanted || rewriting {
                st.trails.remove(&shard);
                continue;
            }
            let m = labels.get(&shard).copied().unwrap_or_default();
            let limits = self.limits;
            let trail = st.trails.entry(shard).or_insert_with(|| Trail {
                f: Follower::new(&me, Log::at(label(m), limits.max_log), m.seq),
                parts: Assembler::default(),
                copy: None,
            });
            trail.f.on_config(config);
            match trail.f.learn(now, ASK_AGAIN, rand_session) {
                Some(Catch::Copy(session)) => {
                    trail.copy = None;
                    asks.push((
                        config.primary.clone(),
                        ReplMessage::CatchUp {
                            shard,
                            epoch: trail.f.epoch(),
                            session,
                        },
                    ));
                }
                Some(Catch::Probe(a)) => asks.push((
                    a.to,
                    ReplMessage::Ack {
                        shard,
                        epoch: a.epoch,
                        seq: a.seq,
                    },
                )),
                None => {}
            }
        }
        let unknown: Vec<u32> = st
            .leads
            .keys()
            .filter(|s| !configs.contains_key(s))
            .copied()
            .collect();
        for shard in unknown {
            if let Some(old) = st.leads.remove(&shard) {
                st.fence(shard, &old);
                fail(old.parked, "etcd holds no configuration of the shard");
            }
        }
        drop(st);
        for (to, msg) in asks {
            self.net.send(&to, &msg);
        }
    }

    /// This node's copy of `shard` is about to be rewritten outside
    /// replication (a hand-off to it, a restore): it stops following the
    /// shard, and its stored label is made one no primary issues, durably,
    /// before anything is rewritten. So it never acknowledges a group on
    /// top of data that is not the primary's; if it is still a follower
    /// afterwards, it is refused, removed and catches up by copy.
    ///
    /// # Errors
    ///
    /// The label could not be made durable.
    pub(crate) async fn unreplicate(&self, shard: u32) -> Result<(), String> {
        {
            let mut st = crate::sync::lock(&self.state);
            st.rewriting.insert(shard, Instant::now());
            st.trails.remove(&shard);
        }
        let store = self.store().ok_or("the store is closed")?;
        let place = store.writer.reserve().await.map_err(|e| e.to_string())?;
        let done = place.send_received(crate::storage::replication::Received {
            shard,
            prev: None,
            mark: Mark::REWRITTEN,
            batches: Vec::new(),
        });
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the store is closed".into()),
        }
    }

    /// The rewrite of `shard` ended (whatever its outcome).
    pub(crate) fn rewritten(&self, shard: u32) {
        crate::sync::lock(&self.state).rewriting.remove(&shard);
    }

    /// This node stopped serving `shard` (it handed it away): its groups
    /// are no longer labelled or sent, so the removal of its local copy
    /// stays local.
    pub(crate) fn disown(&self, shard: u32) {
        let old = crate::sync::lock(&self.state).leads.remove(&shard);
        if let Some(old) = old {
            fail(old.parked, "the shard moved to another node");
        }
    }

    /// Failover: the shards this node follows whose primary is gone (no
    /// live lease in etcd), each with the promotion of this node to
    /// propose (epoch + 1, keeping the live followers). Every released
    /// group is durable here, so nothing a client saw is lost.
    pub(crate) fn promotions(
        &self,
        configs: &BTreeMap<u32, Config>,
        live: &dyn Fn(&str) -> bool,
    ) -> Vec<(u32, crate::remote::replica::Proposal)> {
        let st = crate::sync::lock(&self.state);
        let mut out = Vec::new();
        for (shard, trail) in &st.trails {
            if let Some(config) = configs.get(shard)
                && !live(&config.primary)
                && let Some(p) = trail.f.promote(config, live)
            {
                out.push((*shard, p));
            }
        }
        out
    }

    /// This node won the promotion to `config` (etcd names it primary):
    /// its follower state becomes the shard's primary, the shard's alarms
    /// are scheduled here, and it serves (if its lease is alive; else it
    /// re-claims the shard by the usual rules).
    pub(crate) fn promoted(&self, shard: u32, config: &Config) {
        {
            let mut st = crate::sync::lock(&self.state);
            let replicas = st.replicas;
            let Some(trail) = st.trails.remove(&shard) else {
                return;
            };
            let Some(p) = trail.f.into_primary(config.clone(), replicas, self.limits) else {
                return;
            };
            let lead = Lead::new(p);
            st.fenced.remove(&shard);
            if let Some(old) = st.leads.insert(shard, lead) {
                fail(old.parked, "the shard was claimed again");
            }
        }
        if let Some(shared) = self.shared.upgrade() {
            let shards = self.shards;
            match shared.store.all_alarms() {
                Ok(all) => {
                    for (ns, id, at) in all {
                        if shard_of(&id, shards) == shard {
                            let key = crate::alarm::AlarmKey {
                                id,
                                namespace: ns.into(),
                            };
                            shared.alarms.committed(key, Some(at));
                        }
                    }
                }
                Err(e) => tracing::warn!(shard, error = %e, "cannot read the shard's alarms"),
            }
        }
        if let Some(node) = self.node.upgrade() {
            let next = Owner {
                node: self.me.clone(),
                epoch: config.epoch,
            };
            let mut view = crate::sync::write(&node.view);
            let generation = view.lease_gen;
            if !view.handed(shard, &next, generation, Instant::now()) {
                tracing::info!(
                    shard,
                    "promoted; serves once it re-claims under a live lease"
                );
            }
        }
        tracing::info!(shard, epoch = config.epoch, "promoted to primary");
    }

    /// The configuration changes to propose now (one per shard at most).
    pub(crate) fn proposals(&self) -> Vec<(u32, crate::remote::replica::Proposal)> {
        let now = Instant::now();
        let gone = self.net.take_unreachable();
        let mut st = crate::sync::lock(&self.state);
        for node in &gone {
            for lead in st.leads.values_mut() {
                lead.p.unreachable(node);
            }
        }
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (shard, lead) in &mut st.leads {
            if lead.p.deposed() {
                gone.push(*shard);
                continue;
            }
            if let Some(p) = lead.p.tick(now) {
                out.push((*shard, p));
            }
        }
        for shard in gone {
            if let Some(old) = st.leads.remove(&shard) {
                st.fence(shard, &old);
                fail(old.parked, "a newer configuration deposed this primary");
            }
        }
        out
    }

    /// etcd's answer to a proposal: `Ok(())` it won, `Err(current)` it
    /// lost (and etcd holds `current`).
    pub(crate) fn answered(&self, shard: u32, next: &Config, result: Result<(), Option<Config>>) {
        let replies = {
            let mut st = crate::sync::lock(&self.state);
            let Some(lead) = st.leads.get_mut(&shard) else {
                return;
            };
            match &result {
                Ok(()) => lead.p.won(next),
                Err(Some(current)) => lead.p.on_config(current),
                Err(None) => {}
            }
            Self::released(lead)
        };
        if result.is_ok()
            && let Some(node) = self.node.upgrade()
        {
            // The shard's epoch went up with the change: still this node's.
            let mut view = crate::sync::write(&node.view);
            if view.claimed.contains_key(&shard) {
                view.owners.insert(
                    shard,
                    Owner {
                        node: self.me.clone(),
                        epoch: next.epoch,
                    },
                );
                view.claimed.insert(shard, next.epoch);
            }
        }
        answer(replies);
    }

    /// The callers whose groups the rules release now.
    pub(super) fn released(lead: &mut Lead) -> Vec<Reply> {
        let Some(point) = lead.p.release() else {
            return Vec::new();
        };
        let later = lead.parked.split_off(&(point + 1));
        let now = std::mem::replace(&mut lead.parked, later);
        now.into_values().flatten().collect()
    }

    /// Sends `groups` (kept in `recent`) to their nodes; a group no longer
    /// kept makes its node unreachable (it must catch up by copy).
    pub(super) fn resend(&self, shard: u32, lead: &mut Lead, groups: Vec<Group>) {
        for g in groups {
            let kept = lead
                .recent
                .iter()
                .find(|(l, _)| *l == g.label)
                .map(|(_, p)| p.clone());
            match kept {
                Some(p) => {
                    for to in &g.to {
                        self.send_group(to, shard, g.epoch, g.prev, g.label, &p);
                    }
                }
                None => {
                    for to in &g.to {
                        lead.p.unreachable(to);
                    }
                    return;
                }
            }
        }
    }

    pub(super) fn send_group(
        &self,
        to: &str,
        shard: u32,
        epoch: u64,
        prev: Label,
        label: Label,
        parts: &[Vec<WireBatch>],
    ) {
        let n = parts.len();
        for (i, batches) in parts.iter().enumerate() {
            self.net.send(
                to,
                &ReplMessage::Append {
                    shard,
                    epoch,
                    prev,
                    label,
                    batches: batches.clone(),
                    more: i + 1 < n,
                },
            );
        }
    }

    /// What this node replicates now: the shards it leads (with their
    /// followers) and those it follows or learns.
    pub(crate) fn status(&self) -> (Vec<(u32, Vec<String>)>, Vec<u32>) {
        let st = crate::sync::lock(&self.state);
        let mut leads: Vec<_> = st
            .leads
            .iter()
            .map(|(s, l)| (*s, l.p.config().followers.clone()))
            .collect();
        leads.sort_by_key(|(s, _)| *s);
        let mut trails: Vec<u32> = st.trails.keys().copied().collect();
        trails.sort_unstable();
        (leads, trails)
    }
}

pub(super) fn answer(replies: Vec<Reply>) {
    for r in replies {
        let _ = r.send(Ok(()));
    }
}

fn rand_session() -> u64 {
    let mut b = [0u8; 8];
    // A failure leaves zeros: the session is then only less unique.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}
