//! Where a shard's followers go, and how its configuration is written in
//! etcd. Pure: the etcd shell (`cluster::replicas`) reads and writes the
//! records.
//!
//! The shard key holds `{"node":P,"epoch":E,"followers":[…]}`. Without
//! followers the field is left out, so an unreplicated record is byte for
//! byte the record of a cluster that predates replication (etcd compares
//! values byte for byte), and an old record reads as a configuration
//! with no followers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Config, MAX_REPLICAS};

/// A shard's record in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardRecord {
    /// The primary (the shard's owner).
    pub(crate) node: String,
    pub(crate) epoch: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) followers: Vec<String>,
}

impl From<ShardRecord> for Config {
    fn from(r: ShardRecord) -> Config {
        Config {
            epoch: r.epoch,
            primary: r.node,
            followers: r.followers,
        }
    }
}

impl From<&Config> for ShardRecord {
    fn from(c: &Config) -> ShardRecord {
        ShardRecord {
            node: c.primary.clone(),
            epoch: c.epoch,
            followers: c.followers.clone(),
        }
    }
}

/// A live member as placement sees it: its failure-domain label, if the
/// operator gave one (`--zone`).
pub(crate) type Zones = BTreeMap<String, Option<String>>;

/// Rendezvous weight of a (shard, node) pair for followers. Its own salt,
/// so a shard's followers do not simply follow its owner's ranking.
fn weight(shard: u32, node: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"objects-replica-placement");
    h.update(&shard.to_le_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// The followers a shard should have: `replicas` (at most
/// [`MAX_REPLICAS`]) live members other than `primary`, each on a
/// different node. Current followers that are live stay (moving one costs a
/// copy), unless one shares a zone with the primary or with another kept
/// follower while a member of an unused zone could take its place. The
/// rest are chosen by rendezvous hashing, preferring members whose zone
/// no replica of the shard uses yet; a member without a zone counts as a
/// zone of its own. With fewer live members than that, fewer followers.
pub(crate) fn followers(
    shard: u32,
    primary: &str,
    current: &[String],
    live: &Zones,
    replicas: usize,
) -> Vec<String> {
    let want = replicas.min(MAX_REPLICAS);
    // The zones in use: the primary's to start with.
    let zone_of = |n: &str| live.get(n).cloned().flatten();
    let mut used: BTreeSet<String> = zone_of(primary).into_iter().collect();
    let mut chosen: Vec<String> = Vec::new();
    let mut ranked: Vec<&String> = live.keys().filter(|n| *n != primary).collect();
    ranked.sort_by_key(|n| std::cmp::Reverse(weight(shard, n)));
    let fresh_zone =
        |n: &str, used: &BTreeSet<String>| zone_of(n).is_none_or(|z| !used.contains(&z));
    // Whether some live member not chosen yet would bring a new zone.
    let spare_zone = |used: &BTreeSet<String>, chosen: &[String]| {
        ranked
            .iter()
            .any(|n| !chosen.contains(n) && fresh_zone(n, used))
    };
    // Keep current followers that are live, as long as zones allow.
    for f in current {
        if chosen.len() >= want || f == primary || !live.contains_key(f) || chosen.contains(f) {
            continue;
        }
        if !fresh_zone(f, &used) && spare_zone(&used, &chosen) {
            continue;
        }
        if let Some(z) = zone_of(f) {
            used.insert(z);
        }
        chosen.push(f.clone());
    }
    // Fill: first members of unused zones, then anyone.
    for pass in [true, false] {
        for n in &ranked {
            if chosen.len() >= want {
                return chosen;
            }
            if chosen.contains(n) || (pass && !fresh_zone(n, &used)) {
                continue;
            }
            if let Some(z) = zone_of(n) {
                used.insert(z);
            }
            chosen.push((*n).clone());
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zones(pairs: &[(&str, Option<&str>)]) -> Zones {
        pairs
            .iter()
            .map(|(n, z)| ((*n).to_string(), z.map(str::to_string)))
            .collect()
    }

    #[test]
    fn old_records_read_as_configurations_without_followers() {
        let old = br#"{"node":"n1","epoch":4}"#;
        let r: ShardRecord = serde_json::from_slice(old).expect("old form");
        let c = Config::from(r.clone());
        assert_eq!(
            (c.epoch, c.primary.as_str(), c.followers.len()),
            (4, "n1", 0)
        );
        // Written back without followers: the same bytes.
        assert_eq!(
            serde_json::to_vec(&ShardRecord::from(&c)).expect("json"),
            old
        );
        let new = ShardRecord {
            followers: vec!["n2".into()],
            ..r
        };
        let text = serde_json::to_string(&new).expect("json");
        assert_eq!(text, r#"{"node":"n1","epoch":4,"followers":["n2"]}"#);
        // An older reader (the owner alone) still reads it.
        let owner: crate::remote::shard::Owner = serde_json::from_str(&text).expect("owner");
        assert_eq!((owner.node.as_str(), owner.epoch), ("n1", 4));
    }

    #[test]
    fn followers_go_to_other_zones_first() {
        let live = zones(&[
            ("a", Some("z1")),
            ("b", Some("z1")),
            ("c", Some("z2")),
            ("d", Some("z3")),
        ]);
        for shard in 0..32 {
            let f = followers(shard, "a", &[], &live, 2);
            assert_eq!(f.len(), 2);
            assert!(!f.contains(&"b".to_string()), "shard {shard}: {f:?}");
        }
        // Only one other zone: the second follower shares one.
        let live = zones(&[("a", Some("z1")), ("b", Some("z1")), ("c", Some("z2"))]);
        let f = followers(0, "a", &[], &live, 2);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], "c", "the other zone first");
    }

    #[test]
    fn live_followers_stay_unless_a_better_zone_is_free() {
        let live = zones(&[("a", None), ("b", None), ("c", None), ("d", None)]);
        let cur = vec!["d".to_string(), "b".to_string()];
        assert_eq!(followers(5, "a", &cur, &live, 2), cur);
        // One of them is down: it is replaced, the other stays.
        let mut fewer = live.clone();
        fewer.remove("d");
        let f = followers(5, "a", &cur, &fewer, 2);
        assert_eq!(f[0], "b");
        assert_eq!(f.len(), 2);
        // A follower in the primary's zone gives way to a free zone.
        let live = zones(&[("a", Some("z1")), ("b", Some("z1")), ("c", Some("z2"))]);
        assert_eq!(
            followers(1, "a", &["b".into()], &live, 1),
            vec!["c".to_string()]
        );
        // R lowered: fewer kept.
        let live = zones(&[("a", None), ("b", None), ("c", None)]);
        assert_eq!(
            followers(1, "a", &["c".into(), "b".into()], &live, 1),
            vec!["c".to_string()]
        );
    }

    proptest! {
        /// Followers are live, distinct, never the primary, as many as R
        /// allows; and their zones are distinct (and not the primary's)
        /// whenever enough zones are free.
        #[test]
        fn placement_rules_hold(
            members in proptest::collection::btree_map("[a-f][0-9]", proptest::option::of(0u8..3), 1..8),
            current in proptest::collection::vec("[a-f][0-9]", 0..3),
            replicas in 0usize..4,
            shard in 0u32..64,
        ) {
            let live: Zones = members.iter().map(|(n, z)| (n.clone(), z.map(|z| format!("z{z}")))).collect();
            let primary = live.keys().next().expect("one").clone();
            let f = followers(shard, &primary, &current, &live, replicas);
            let want = replicas.min(MAX_REPLICAS).min(live.len() - 1);
            prop_assert_eq!(f.len(), want);
            let distinct: BTreeSet<&String> = f.iter().collect();
            prop_assert_eq!(distinct.len(), f.len());
            for n in &f {
                prop_assert!(live.contains_key(n) && *n != primary);
            }
            // Zones: if the members offer enough distinct zones besides the
            // primary's, the followers' zones are distinct and not its.
            let pz = live[&primary].clone();
            let free: BTreeSet<String> = live.iter()
                .filter(|(n, _)| **n != primary)
                .filter_map(|(_, z)| z.clone())
                .filter(|z| Some(z) != pz.as_ref())
                .collect();
            let unlabelled = live.iter().filter(|(n, z)| **n != primary && z.is_none()).count();
            if free.len() + unlabelled >= want {
                let mut seen: BTreeSet<String> = pz.into_iter().collect();
                for n in &f {
                    if let Some(z) = &live[n] {
                        prop_assert!(seen.insert(z.clone()), "zone {} twice in {:?}", z, f);
                    }
                }
            }
        }
    }
}
