//! The etcd records of replication: R in the cluster's `meta` (changed by
//! a transaction that compares the meta's revision), each shard's
//! configuration (primary, followers, epoch) in its shard key, changed by
//! transactions that compare the previous record byte for byte, and the
//! members' zones. The decisions are the pure rules of `remote::replica`;
//! the membership loop reads and proposes through these.

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::ClusterError;
use super::etcd::{Etcd, Member, Meta};
use crate::remote::replica::placement::{ShardRecord, Zones};
use crate::remote::replica::{Config, MAX_REPLICAS, Proposal};

fn etcd(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Etcd(format!("{what}: {e}"))
}

/// How many times a change of R is retried when another writer changed
/// the meta meanwhile.
const META_RETRIES: usize = 5;

impl Etcd {
    /// The cluster's facts, and the revision they were last changed at.
    pub(crate) async fn read_meta(&mut self) -> Result<(Meta, i64), ClusterError> {
        let key = self.key("meta");
        let resp = self
            .client
            .get(key, None)
            .await
            .map_err(|e| etcd("meta", e))?;
        let kv = resp
            .kvs()
            .first()
            .ok_or_else(|| etcd("meta", "the cluster has not been created"))?;
        let meta: Meta =
            serde_json::from_slice(kv.value()).map_err(|e| etcd("meta in etcd is not valid", e))?;
        Ok((meta, kv.mod_revision()))
    }

    /// Sets R (followers per shard) for the whole cluster, in a transaction
    /// that compares the meta's revision (retried if another writer got
    /// there first). Primaries pick the change up on their next read.
    pub(crate) async fn set_replicas(&mut self, replicas: u32) -> Result<Meta, ClusterError> {
        if replicas as usize > MAX_REPLICAS {
            return Err(ClusterError::Config(format!(
                "replicas must be 0 to {MAX_REPLICAS}, not {replicas}"
            )));
        }
        let key = self.key("meta");
        for _ in 0..META_RETRIES {
            let (mut meta, rev) = self.read_meta().await?;
            meta.replicas = replicas;
            let value = serde_json::to_vec(&meta).map_err(|e| etcd("meta", e))?;
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            if self
                .client
                .txn(txn)
                .await
                .map_err(|e| etcd("meta", e))?
                .succeeded()
            {
                return Ok(meta);
            }
        }
        Err(etcd("meta", "changed by others too often; try again"))
    }

    /// Every shard's configuration (old records read with no followers).
    pub(crate) async fn configs(&mut self) -> Result<BTreeMap<u32, Config>, ClusterError> {
        let prefix = self.key("shards/");
        let resp = self
            .client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd("shards", e))?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let Some(shard) = kv
                .key()
                .strip_prefix(prefix.as_bytes())
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<ShardRecord>(kv.value()) {
                out.insert(shard, r.into());
            }
        }
        Ok(out)
    }

    /// One reconfiguration of `shard` as one transaction: `p.next` if the
    /// record is still `p.prev`. `Ok(Ok)`: it won. `Ok(Err(current))`: it
    /// lost; `current` is what etcd holds (`None`: no record).
    pub(crate) async fn propose(
        &mut self,
        shard: u32,
        p: &Proposal,
    ) -> Result<Result<(), Option<Config>>, ClusterError> {
        let key = self.shard_key(shard);
        let json = |c: &Config| serde_json::to_vec(&ShardRecord::from(c));
        let prev = json(&p.prev).map_err(|e| etcd("shard record", e))?;
        let next = json(&p.next).map_err(|e| etcd("shard record", e))?;
        let resp = self
            .client
            .txn(
                Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, prev)])
                    .and_then([TxnOp::put(key.clone(), next, None)])
                    .or_else([TxnOp::get(key, None)]),
            )
            .await
            .map_err(|e| etcd("reconfigure", e))?;
        if resp.succeeded() {
            return Ok(Ok(()));
        }
        let mut current = None;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                current = serde_json::from_slice::<ShardRecord>(kv.value())
                    .ok()
                    .map(Config::from);
            }
        }
        Ok(Err(current))
    }

    /// Live members and their zones.
    pub(crate) async fn zones(&mut self) -> Result<Zones, ClusterError> {
        let prefix = self.key("members/");
        let resp = self
            .client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd("members", e))?;
        let mut out = Zones::new();
        for kv in resp.kvs() {
            let node = kv
                .key()
                .strip_prefix(prefix.as_bytes())
                .and_then(|n| std::str::from_utf8(n).ok());
            if let (Some(node), Ok(m)) = (node, serde_json::from_slice::<Member>(kv.value())) {
                out.insert(node.to_string(), m.zone);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::testing::etcd::Etcd as TestEtcd;

    #[tokio::test]
    async fn replicas_and_configurations_live_in_etcd() {
        let Some(server) = TestEtcd::start().await else {
            return;
        };
        let mut e = Etcd::connect(&[server.url().to_string()], "/t")
            .await
            .expect("connect");
        let meta = e.meta(8, &[]).await.expect("created");
        assert_eq!(meta.replicas, 0, "no replicas unless asked");
        assert_eq!(e.set_replicas(2).await.expect("set").replicas, 2);
        assert!(e.set_replicas(3).await.is_err());
        // Every node reads the new R; the rest of the meta is unchanged.
        let again = e.meta(99, &[]).await.expect("read");
        assert_eq!(
            (again.replicas, again.shards, again.secret),
            (2, 8, meta.secret)
        );

        // A shard claimed by a node that predates replication: old form.
        let old = crate::remote::shard::Claim {
            shard: 3,
            prev: None,
            next: crate::remote::shard::Owner {
                node: "n1".into(),
                epoch: 1,
            },
        };
        assert!(e.apply(&old).await.expect("claim"));
        let c1 = e.configs().await.expect("configs")[&3].clone();
        assert_eq!(c1.followers, Vec::<String>::new());
        // Add a follower, compared against the old record.
        let add = Proposal {
            prev: c1.clone(),
            next: c1.with("n2"),
        };
        assert_eq!(e.propose(3, &add).await.expect("txn"), Ok(()));
        // The same proposal again loses and says what etcd holds.
        assert_eq!(
            e.propose(3, &add).await.expect("txn"),
            Err(Some(add.next.clone()))
        );
        // The owner as older code reads it is still there.
        let owners = e.owners().await.expect("owners");
        assert_eq!((owners[&3].node.as_str(), owners[&3].epoch), ("n1", 2));
        // A promotion of n2 compares the whole configuration.
        let promote = Proposal {
            prev: add.next.clone(),
            next: Config {
                epoch: 3,
                primary: "n2".into(),
                followers: vec![],
            },
        };
        assert_eq!(e.propose(3, &promote).await.expect("txn"), Ok(()));
        assert_eq!(e.configs().await.expect("configs")[&3], promote.next);
        // Members and zones.
        let lease = e.grant(Duration::from_secs(10)).await.expect("lease");
        e.register("n1", "127.0.0.1:1", None, false, lease)
            .await
            .expect("register");
        e.register("n2", "127.0.0.1:2", Some("rack-b"), false, lease)
            .await
            .expect("register");
        let zones = e.zones().await.expect("zones");
        assert_eq!(zones.get("n1"), Some(&None));
        assert_eq!(zones.get("n2"), Some(&Some("rack-b".to_string())));
    }
}
