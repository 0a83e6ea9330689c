//! Where an object lives in a cluster, as pure rules: which virtual shard
//! an id falls in, which live member a shard should go to (rendezvous
//! hashing), when a node may serve a shard (ownership and its lease by its
//! own monotonic clock), and which ownership changes a node should ask etcd
//! for. No I/O and no clock: `now` is passed in, so the rules are property
//! tested alone and the etcd shell stays thin.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A node's name: 1 to 32 of `a-z`, `0-9` and `-`, not starting with `-`.
/// It is also the DNS name in the node's certificate.
pub(crate) fn valid_node_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The virtual shard of an id, among `shards` (at least 1). Ids are keyed
/// hashes or random bytes, so their first 8 bytes spread evenly.
pub(crate) fn shard_of(id: &[u8; 32], shards: u32) -> u32 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    (u64::from_le_bytes(b) % u64::from(shards.max(1))) as u32
}

/// Rendezvous weight of a (shard, node) pair: a hash both sides compute
/// the same way.
fn weight(shard: u32, node: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"objects-shard-placement");
    h.update(&shard.to_le_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// The member a shard should live on: the one with the highest weight
/// (rendezvous hashing). Removing a member moves only the shards it had;
/// adding one moves only the shards it wins. `None` without members.
pub(crate) fn rendezvous<'a>(
    shard: u32,
    members: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    members
        .into_iter()
        .map(|m| (weight(shard, m), m))
        .max()
        .map(|(_, m)| m)
}

/// The owner of one shard as etcd records it. The epoch goes up by one with
/// every change (and with every re-claim by the same node under a new
/// lease), and every change is a transaction comparing it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Owner {
    pub(crate) node: String,
    pub(crate) epoch: u64,
}

/// A node's lease, by its own monotonic clock.
///
/// The lease counts from the moment the request that granted or renewed it
/// was *sent* (etcd starts counting later, never earlier), and the node
/// stops serving `margin` before the TTL runs out. The assumption: the two
/// clocks do not drift apart by more than `margin` over one TTL.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) ttl: Duration,
    pub(crate) margin: Duration,
    /// When the last successful grant or keep-alive was sent.
    pub(crate) renewed_at: Option<Instant>,
}

impl Lease {
    pub(crate) fn new(ttl: Duration, margin: Duration) -> Lease {
        Lease {
            ttl,
            margin,
            renewed_at: None,
        }
    }

    /// The last instant at which the node may still serve.
    pub(crate) fn serve_until(&self) -> Option<Instant> {
        let usable = self.ttl.checked_sub(self.margin)?;
        self.renewed_at.map(|t| t + usable)
    }

    pub(crate) fn alive(&self, now: Instant) -> bool {
        self.serve_until().is_some_and(|until| now < until)
    }

    /// A renewal sent at `sent` succeeded. A late answer to an older
    /// request never moves the window back.
    pub(crate) fn renewed(&mut self, sent: Instant) {
        if self.renewed_at.is_none_or(|t| sent > t) {
            self.renewed_at = Some(sent);
        }
    }
}

/// Where the events of a shard go, as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// This node owns the shard and its lease is alive: run here.
    Local { epoch: u64 },
    /// Another live node owns it.
    Remote { node: String, epoch: u64 },
    /// Nobody may serve it now; the text says why.
    Unavailable(String),
    /// This node is handing it to another node: events wait until the
    /// hand-off ends, then go where the shard went.
    Moving,
}

/// What one node knows of the cluster: members with a live lease (and
/// their QUIC addresses), shard owners, its own lease, and the epochs it
/// claimed under its current lease.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub(crate) me: String,
    pub(crate) shards: u32,
    pub(crate) members: BTreeMap<String, String>,
    pub(crate) owners: BTreeMap<u32, Owner>,
    pub(crate) lease: Lease,
    /// Shard → epoch this node set under its current lease. A node serves
    /// only shards it (re-)claimed under the lease it holds now: after a
    /// lapse, etcd may have given them away, so it claims again.
    pub(crate) claimed: BTreeMap<u32, u64>,
    /// The members named when the cluster was created: a shard's first
    /// owner is chosen among them (whatever order they start in), so the
    /// first node up does not take every shard. Empty: among live members.
    pub(crate) initial: Vec<String>,
    /// Shards this node is handing to another node: it runs none of
    /// their events meanwhile.
    pub(crate) moving: std::collections::BTreeSet<u32>,
    /// Counts the leases this node has held: a hand-off received under
    /// one lease is not taken under the next.
    pub(crate) lease_gen: u64,
    /// Members handing their shards away: no shard is moved to them.
    pub(crate) draining: std::collections::BTreeSet<String>,
}

impl View {
    pub(crate) fn new(me: &str, shards: u32, lease: Lease) -> View {
        View {
            me: me.to_string(),
            shards: shards.max(1),
            members: BTreeMap::new(),
            owners: BTreeMap::new(),
            lease,
            claimed: BTreeMap::new(),
            initial: Vec::new(),
            moving: std::collections::BTreeSet::new(),
            lease_gen: 0,
            draining: std::collections::BTreeSet::new(),
        }
    }

    /// Who should first own an unowned shard.
    fn first_owner(&self, shard: u32) -> Option<&str> {
        if self.initial.is_empty() {
            rendezvous(shard, self.members.keys().map(String::as_str))
        } else {
            rendezvous(shard, self.initial.iter().map(String::as_str))
        }
    }

    /// Where an event for `shard` goes at `now`.
    pub(crate) fn place(&self, shard: u32, now: Instant) -> Place {
        // Until the hand-off releases what it holds, whatever etcd says by
        // now: a later event must not overtake a held one.
        if self.moving.contains(&shard) {
            return Place::Moving;
        }
        let Some(owner) = self.owners.get(&shard) else {
            return Place::Unavailable(format!("shard {shard} has no owner yet"));
        };
        if owner.node == self.me {
            if !self.lease.alive(now) {
                return Place::Unavailable(format!(
                    "shard {shard}: this node's lease lapsed; it serves nothing until it holds a new one"
                ));
            }
            return match self.claimed.get(&shard) {
                Some(&e) if e == owner.epoch => Place::Local { epoch: e },
                _ => Place::Unavailable(format!(
                    "shard {shard}: this node is re-claiming it under its new lease"
                )),
            };
        }
        if self.members.contains_key(&owner.node) {
            Place::Remote {
                node: owner.node.clone(),
                epoch: owner.epoch,
            }
        } else {
            Place::Unavailable(format!(
                "shard {shard}: its owner {} is down (it returns when that node does, or when a follower of the shard takes over)",
                owner.node
            ))
        }
    }

    /// May this node run an event that a peer sent for `shard` at
    /// `epoch`? `Err` carries the owner to name in a "moved" answer.
    pub(crate) fn admit(&self, shard: u32, epoch: u64, now: Instant) -> Result<(), Place> {
        match self.place(shard, now) {
            Place::Local { epoch: e } if e == epoch => Ok(()),
            // The sender knew an older epoch of this node's ownership (it
            // re-claimed under a new lease): still this node's to serve.
            Place::Local { epoch: e } if epoch < e => Ok(()),
            other => Err(other),
        }
    }

    /// The ownership changes this node should ask etcd for now: shards
    /// without an owner that rendezvous gives to this node (among the
    /// initial members, else the live ones), and shards
    /// etcd already names it for but that it has not claimed under its
    /// current lease. Shards of other nodes are never taken: without
    /// replicas their data lives only there (see `docs/cluster.md`).
    pub(crate) fn claims(&self, now: Instant) -> Vec<Claim> {
        if !self.lease.alive(now) || !self.members.contains_key(&self.me) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for shard in 0..self.shards {
            match self.owners.get(&shard) {
                None => {
                    if self.first_owner(shard) == Some(self.me.as_str()) {
                        out.push(Claim {
                            shard,
                            prev: None,
                            next: Owner {
                                node: self.me.clone(),
                                epoch: 1,
                            },
                        });
                    }
                }
                Some(o) if o.node == self.me && self.claimed.get(&shard) != Some(&o.epoch) => {
                    out.push(Claim {
                        shard,
                        prev: Some(o.clone()),
                        next: Owner {
                            node: self.me.clone(),
                            epoch: o.epoch + 1,
                        },
                    });
                }
                Some(_) => {}
            }
        }
        out
    }

    /// A reading of the owners in etcd. Epochs only grow there, so an
    /// owner this node knows at a later epoch than the reading (a reading
    /// taken before a hand-off it saw or learned of) is kept.
    pub(crate) fn read_owners(&mut self, reading: BTreeMap<u32, Owner>) {
        for (shard, owner) in reading {
            match self.owners.get(&shard) {
                Some(known) if known.epoch > owner.epoch => {}
                _ => {
                    self.owners.insert(shard, owner);
                }
            }
        }
    }

    /// A claim's transaction succeeded.
    pub(crate) fn claimed(&mut self, claim: &Claim) {
        self.owners.insert(claim.shard, claim.next.clone());
        self.claimed.insert(claim.shard, claim.next.epoch);
    }

    /// A new lease: nothing claimed under the old one counts any more.
    pub(crate) fn new_lease(&mut self) {
        self.claimed.clear();
        self.lease_gen += 1;
    }

    /// The previous owner moved `shard` to this node (`next`, one
    /// transaction it made after this node had made the shard's data
    /// durable): serve it from now, as if claimed, if the lease the data
    /// arrived under (`lease_gen`) is still the one held and alive, and this
    /// node knows of no later owner. Otherwise this node re-claims it
    /// (or not) by the usual rules. Returns whether it serves it now.
    pub(crate) fn handed(
        &mut self,
        shard: u32,
        next: &Owner,
        lease_gen: u64,
        now: Instant,
    ) -> bool {
        if next.node != self.me || lease_gen != self.lease_gen || !self.lease.alive(now) {
            return false;
        }
        if self
            .owners
            .get(&shard)
            .is_some_and(|o| o.epoch > next.epoch)
        {
            return false;
        }
        self.owners.insert(shard, next.clone());
        self.claimed.insert(shard, next.epoch);
        true
    }

    /// A peer answered "moved: `owner` has `shard`": remember it, if it is
    /// newer than what this node knows and names another node (this
    /// node's own ownership comes only from etcd), so later events go
    /// there directly until the next reading of etcd.
    pub(crate) fn learned(&mut self, shard: u32, owner: Owner) {
        if owner.node != self.me
            && shard < self.shards
            && self
                .owners
                .get(&shard)
                .is_none_or(|o| o.epoch < owner.epoch)
        {
            self.owners.insert(shard, owner);
        }
    }

    /// The hand-off of `shard` to `to` went through at `epoch` (this node
    /// made the transaction): it is `to`'s now.
    pub(crate) fn handed_away(&mut self, shard: u32, next: Owner) {
        self.moving.remove(&shard);
        self.claimed.remove(&shard);
        if self.owners.get(&shard).is_none_or(|o| o.epoch < next.epoch) {
            self.owners.insert(shard, next);
        }
    }
}

/// The operator's move of a shard to `to` (restoring a lost node's shard
/// elsewhere): one epoch up, compared against `prev`.
pub(crate) fn reassign(shard: u32, prev: Owner, to: &str) -> Claim {
    let epoch = prev.epoch + 1;
    Claim {
        shard,
        prev: Some(prev),
        next: Owner {
            node: to.to_string(),
            epoch,
        },
    }
}

/// One etcd transaction: set the shard's owner to `next` if it is still
/// `prev` (absent for a first claim).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) shard: u32,
    pub(crate) prev: Option<Owner>,
    pub(crate) next: Owner,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(me: &str, members: &[&str], shards: u32, now: Instant) -> View {
        let mut lease = Lease::new(Duration::from_secs(6), Duration::from_secs(2));
        lease.renewed(now);
        let mut v = View::new(me, shards, lease);
        for m in members {
            v.members.insert((*m).to_string(), format!("{m}:1"));
        }
        v
    }

    #[test]
    fn moved_answers_teach_newer_owners_of_other_nodes_only() {
        let now = Instant::now();
        let mut v = view("a", &["a", "b", "c"], 4, now);
        let owner = |node: &str, epoch| Owner {
            node: node.into(),
            epoch,
        };
        v.owners.insert(1, owner("b", 3));
        v.learned(1, owner("c", 2));
        assert_eq!(v.owners[&1], owner("b", 3), "older news is ignored");
        v.learned(1, owner("c", 4));
        assert_eq!(
            v.place(1, now),
            Place::Remote {
                node: "c".into(),
                epoch: 4
            }
        );
        v.learned(1, owner("a", 5));
        assert_eq!(
            v.owners[&1],
            owner("c", 4),
            "its own ownership comes from etcd"
        );
        v.learned(9, owner("c", 1));
        assert!(!v.owners.contains_key(&9), "no such shard");
    }

    #[test]
    fn a_reading_of_etcd_older_than_a_hand_off_does_not_undo_it() {
        let now = Instant::now();
        let mut v = view("b", &["a", "b"], 4, now);
        let owner = |node: &str, epoch| Owner {
            node: node.into(),
            epoch,
        };
        // A reading taken before "a" handed shard 1 to this node (epoch 2)
        // arrives after the hand-off.
        let stale: BTreeMap<u32, Owner> = [(1, owner("a", 1)), (2, owner("a", 1))].into();
        assert!(v.handed(1, &owner("b", 2), v.lease_gen, now));
        v.read_owners(stale);
        assert_eq!(v.place(1, now), Place::Local { epoch: 2 });
        assert_eq!(v.owners[&2], owner("a", 1), "news is taken");
        v.read_owners([(1, owner("a", 3))].into());
        assert_eq!(v.owners[&1], owner("a", 3), "a later epoch wins");
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("n1"));
        assert!(valid_node_id("node-a"));
        for bad in ["", "-a", "A", "a.b", "a_b", &"x".repeat(33)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_lapsed_lease_serves_nothing_and_claims_nothing() {
        let t0 = Instant::now();
        let mut v = view("a", &["a", "b"], 8, t0);
        let claims = v.claims(t0);
        assert!(!claims.is_empty());
        for c in &claims {
            v.claimed(c);
        }
        let shard = claims[0].shard;
        assert_eq!(v.place(shard, t0), Place::Local { epoch: 1 });
        // 4 s = TTL 6 s minus the 2 s margin: the last instant is excluded.
        let end = t0 + Duration::from_secs(4);
        assert!(matches!(v.place(shard, end), Place::Unavailable(_)));
        assert!(v.claims(end).is_empty());
        // Renewed: a new lease must re-claim before serving.
        v.lease.renewed(end);
        v.new_lease();
        assert!(matches!(v.place(shard, end), Place::Unavailable(_)));
        let again = v.claims(end);
        assert!(again.iter().any(|c| c.shard == shard
            && c.prev
                == Some(Owner {
                    node: "a".into(),
                    epoch: 1
                })
            && c.next.epoch == 2));
    }

    #[test]
    fn shards_of_a_dead_owner_are_unavailable_not_taken() {
        let t0 = Instant::now();
        let mut v = view("a", &["a"], 4, t0);
        for s in 0..4 {
            v.owners.insert(
                s,
                Owner {
                    node: "b".into(),
                    epoch: 3,
                },
            );
        }
        assert!(v.claims(t0).is_empty());
        assert!(matches!(v.place(1, t0), Place::Unavailable(m) if m.contains("down")));
        v.members.insert("b".into(), "b:1".into());
        assert_eq!(
            v.place(1, t0),
            Place::Remote {
                node: "b".into(),
                epoch: 3
            }
        );
    }

    #[test]
    fn first_owners_come_from_the_initial_members_whatever_starts_first() {
        let t0 = Instant::now();
        let mut alone = view("a", &["a"], 32, t0);
        alone.initial = vec!["a".into(), "b".into(), "c".into()];
        let mine: Vec<u32> = alone.claims(t0).iter().map(|c| c.shard).collect();
        assert!(!mine.is_empty() && mine.len() < 32, "{mine:?}");
        for s in 0..32 {
            let winner = rendezvous(s, ["a", "b", "c"]);
            assert_eq!(mine.contains(&s), winner == Some("a"), "shard {s}");
        }
        // Without a list, the live members decide: alone, it takes all.
        assert_eq!(view("a", &["a"], 32, t0).claims(t0).len(), 32);
    }

    #[test]
    fn a_late_keep_alive_answer_never_moves_the_window_back() {
        let t0 = Instant::now();
        let mut l = Lease::new(Duration::from_secs(6), Duration::from_secs(2));
        l.renewed(t0 + Duration::from_secs(3));
        l.renewed(t0);
        assert_eq!(l.serve_until(), Some(t0 + Duration::from_secs(7)));
        // A margin at least the TTL means never serving.
        let mut never = Lease::new(Duration::from_secs(2), Duration::from_secs(2));
        never.renewed(t0);
        assert!(!never.alive(t0));
    }

    fn names() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-z][a-z0-9]{0,5}", 1..8)
            .prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #[test]
        fn shard_of_is_in_range(id in proptest::array::uniform32(any::<u8>()), s in 1u32..10_000) {
            prop_assert!(shard_of(&id, s) < s);
        }

        #[test]
        fn rendezvous_moves_only_the_shards_of_a_removed_member(
            members in names(), gone in any::<prop::sample::Index>(), shards in 1u32..256,
        ) {
            let gone = gone.get(&members).clone();
            let rest: Vec<&str> = members.iter().filter(|m| **m != gone).map(String::as_str).collect();
            for s in 0..shards {
                let before = rendezvous(s, members.iter().map(String::as_str)).map(str::to_string);
                let after = rendezvous(s, rest.iter().copied()).map(str::to_string);
                if before.as_deref() != Some(gone.as_str()) {
                    prop_assert_eq!(before, after);
                }
                // Order of the member list never matters.
                let rev = rendezvous(s, members.iter().rev().map(String::as_str)).map(str::to_string);
                prop_assert_eq!(rendezvous(s, members.iter().map(String::as_str)).map(str::to_string), rev);
            }
        }

        /// Nodes that each claim by `claims` and apply their claims as
        /// compare-and-set transactions on one shared table (etcd), in any
        /// interleaving and with any lease lapses, never have two nodes
        /// serving one shard at once.
        #[test]
        fn claims_never_make_two_servers(
            members in names(),
            steps in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0u8..8, any::<prop::sample::Index>()), 1..80),
        ) {
            let shards = 6;
            let t0 = Instant::now();
            let mut etcd: BTreeMap<u32, Owner> = BTreeMap::new();
            // Hand-offs under way: (shard, from, to, epoch, to's lease
            // generation when its data arrived), and moves made in etcd
            // whose "you own it" message is still on its way.
            let mut handing: Vec<(u32, usize, usize, u64, u64)> = Vec::new();
            let mut told: Vec<(u32, usize, Owner, u64)> = Vec::new();
            let mut views: Vec<View> = members.iter().map(|m| {
                let refs: Vec<&str> = members.iter().map(String::as_str).collect();
                view(m, &refs, shards, t0)
            }).collect();
            let mut now = t0;
            for (who, action, what) in steps {
                let i = who.index(views.len());
                match action {
                    // Read etcd, then try each claim as a transaction.
                    0 => {
                        views[i].read_owners(etcd.clone());
                        for c in views[i].claims(now) {
                            if etcd.get(&c.shard) == c.prev.as_ref() {
                                etcd.insert(c.shard, c.next.clone());
                                views[i].claimed(&c);
                            }
                        }
                    }
                    // Time passes (past some leases).
                    1 => now += Duration::from_secs(1),
                    // A keep-alive: only a live lease can be renewed.
                    2 => if views[i].lease.alive(now) { views[i].lease.renewed(now) },
                    // A new lease (after a lapse, or a restart).
                    3 => { views[i].lease.renewed(now); views[i].new_lease(); }
                    // Node i starts handing a shard it serves to another
                    // node, which receives the data (under its lease now).
                    5 => {
                        let s = what.index(shards as usize) as u32;
                        let j = (i + 1 + what.index(views.len().max(2) - 1)) % views.len();
                        if j != i && let Place::Local { epoch } = views[i].place(s, now) {
                            views[i].moving.insert(s);
                            handing.push((s, i, j, epoch, views[j].lease_gen));
                        }
                    }
                    // The oldest hand-off ends: the old owner's
                    // transaction (comparing its epoch), then its view.
                    6 => if !handing.is_empty() {
                        let (s, from, to, epoch, lg) = handing.remove(0);
                        let prev = Owner { node: views[from].me.clone(), epoch };
                        if etcd.get(&s) == Some(&prev) {
                            let c = reassign(s, prev, &views[to].me);
                            etcd.insert(s, c.next.clone());
                            views[from].handed_away(s, c.next.clone());
                            told.push((s, to, c.next, lg));
                        } else {
                            views[from].moving.remove(&s);
                        }
                    },
                    // The new owner learns it owns the shard.
                    7 => if !told.is_empty() {
                        let (s, to, next, lg) = told.remove(what.index(told.len()));
                        views[to].handed(s, &next, lg, now);
                    },
                    // The operator moves a shard whose owner's lease is
                    // gone (etcd expires it no earlier than the owner
                    // stops) to node i.
                    _ => {
                        let s = what.index(shards as usize) as u32;
                        if let Some(prev) = etcd.get(&s).cloned() {
                            let owner_alive = views.iter().any(|v| v.me == prev.node && v.lease.alive(now));
                            if !owner_alive {
                                let c = reassign(s, prev, &views[i].me);
                                etcd.insert(s, c.next);
                            }
                        }
                    }
                }
                for s in 0..shards {
                    let serving = views.iter().filter(|v| matches!(v.place(s, now), Place::Local { .. })).count();
                    prop_assert!(serving <= 1, "shard {} served by {}", s, serving);
                    // Whoever serves is who etcd names, at that epoch.
                    for v in &views {
                        if let Place::Local { epoch } = v.place(s, now) {
                            prop_assert_eq!(etcd.get(&s), Some(&Owner { node: v.me.clone(), epoch }));
                        }
                    }
                }
            }
        }
    }
}
