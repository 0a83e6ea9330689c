//! The thin shell over etcd: the cluster's fixed facts (shard count, id
//! secret), membership under a lease, and shard claims as transactions
//! that compare the previous owner and epoch. The decisions are made by
//! the pure rules in `remote::shard`.
//!
//! Keys, under the cluster's prefix `P`:
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `P/meta` | `{"shards":S,"secret":"<64 hex>","members":[…],"replicas":R}` | made once, by the first node; `replicas` changed by a transaction (`replicas.rs`) |
//! | `P/members/<node>` | `{"addr":"ip:port","zone":"…"}` (its QUIC address; the zone if labelled) | the node's lease |
//! | `P/shards/<shard, 5 digits>` | `{"node":"<owner>","epoch":E,"followers":[…]}` (no `followers` without replicas) | changed only by transactions |

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::remote::replica::placement::ShardRecord;
use crate::remote::shard::Claim;

fn etcd(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Etcd(format!("{what}: {e}"))
}

/// The facts fixed at cluster creation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) shards: u32,
    pub(crate) secret: String,
    /// The members named at creation, among whom first owners are chosen.
    #[serde(default)]
    pub(crate) members: Vec<String>,
    /// Followers per shard (R, 0 to 2); 0 in clusters made before
    /// replication.
    #[serde(default)]
    pub(crate) replicas: u32,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Member {
    pub(super) addr: String,
    /// The node's failure domain, if the operator labelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) zone: Option<String>,
    /// The node is handing its shards away: nobody moves shards to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) draining: bool,
}

/// Live members: QUIC addresses by node id, and those draining.
pub(crate) type Members = (BTreeMap<String, String>, std::collections::BTreeSet<String>);

#[derive(Clone)]
pub(crate) struct Etcd {
    pub(super) client: Client,
    prefix: String,
}

impl Etcd {
    pub(crate) async fn connect(endpoints: &[String], prefix: &str) -> Result<Etcd, ClusterError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| etcd("connect", e))?;
        Ok(Etcd {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    pub(super) fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    pub(super) fn shard_key(&self, shard: u32) -> String {
        self.key(&format!("shards/{shard:05}"))
    }

    /// Creates the cluster's facts if there are none, else reads them: the
    /// first node fixes the shard count and the id secret for good.
    pub(crate) async fn meta(
        &mut self,
        shards: u32,
        members: &[String],
    ) -> Result<Meta, ClusterError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| etcd("random secret", e))?;
        let fresh = Meta {
            shards: shards.max(1),
            secret: crate::id::hex(&secret),
            members: members.to_vec(),
            replicas: 0,
        };
        let key = self.key("meta");
        let value = serde_json::to_vec(&fresh).map_err(|e| etcd("meta", e))?;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.client.txn(txn).await.map_err(|e| etcd("meta", e))?;
        if resp.succeeded() {
            return Ok(fresh);
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                let meta: Meta = serde_json::from_slice(kv.value())
                    .map_err(|e| etcd("meta in etcd is not valid", e))?;
                return Ok(meta);
            }
        }
        Err(etcd("meta", "neither created nor found"))
    }

    pub(crate) async fn grant(&mut self, ttl: Duration) -> Result<i64, ClusterError> {
        let secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        Ok(self
            .client
            .lease_grant(secs, None)
            .await
            .map_err(|e| etcd("lease grant", e))?
            .id())
    }

    pub(crate) async fn keep_alive(
        &mut self,
        lease: i64,
    ) -> Result<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream), ClusterError> {
        self.client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| etcd("lease keep-alive", e))
    }

    pub(crate) async fn revoke(&mut self, lease: i64) {
        let _ = self.client.lease_revoke(lease).await;
    }

    pub(crate) async fn register(
        &mut self,
        node: &str,
        addr: &str,
        zone: Option<&str>,
        draining: bool,
        lease: i64,
    ) -> Result<(), ClusterError> {
        let value = serde_json::to_vec(&Member {
            addr: addr.to_string(),
            zone: zone.map(str::to_string),
            draining,
        })
        .map_err(|e| etcd("member", e))?;
        self.client
            .put(
                self.key(&format!("members/{node}")),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| etcd("register", e))?;
        Ok(())
    }

    /// Live members (their keys outlive them by at most the lease TTL),
    /// their QUIC addresses, and which of them are draining.
    pub(crate) async fn members(&mut self) -> Result<Members, ClusterError> {
        let prefix = self.key("members/");
        let resp = self
            .client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| etcd("members", e))?;
        let mut out = BTreeMap::new();
        let mut draining = std::collections::BTreeSet::new();
        for kv in resp.kvs() {
            let Some(node) = kv.key().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let (Ok(node), Ok(m)) = (
                std::str::from_utf8(node),
                serde_json::from_slice::<Member>(kv.value()),
            ) else {
                continue;
            };
            if m.draining {
                draining.insert(node.to_string());
            }
            out.insert(node.to_string(), m.addr);
        }
        Ok((out, draining))
    }

    #[cfg(test)]
    pub(crate) async fn owners(
        &mut self,
    ) -> Result<BTreeMap<u32, crate::remote::shard::Owner>, ClusterError> {
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
            if let Ok(owner) = serde_json::from_slice::<crate::remote::shard::Owner>(kv.value()) {
                out.insert(shard, owner);
            }
        }
        Ok(out)
    }

    /// One claim as one transaction: applied only if the shard's owner and
    /// epoch are still what the claim saw. `Ok(false)`: someone else won.
    /// The record's followers stay when the owner re-claims its own shard,
    /// and are dropped when the shard moves to another node (their history
    /// is the old owner's; they catch up with the new one).
    pub(crate) async fn apply(&mut self, claim: &Claim) -> Result<bool, ClusterError> {
        let key = self.shard_key(claim.shard);
        let (cmp, followers) = match &claim.prev {
            None => (
                Compare::version(key.clone(), CompareOp::Equal, 0),
                Vec::new(),
            ),
            Some(prev) => {
                let resp = self
                    .client
                    .get(key.clone(), None)
                    .await
                    .map_err(|e| etcd("claim", e))?;
                let Some(kv) = resp.kvs().first() else {
                    return Ok(false);
                };
                let Ok(record) = serde_json::from_slice::<ShardRecord>(kv.value()) else {
                    return Ok(false);
                };
                if record.node != prev.node || record.epoch != prev.epoch {
                    return Ok(false);
                }
                let keep = if claim.next.node == prev.node {
                    record.followers
                } else {
                    Vec::new()
                };
                (
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                    keep,
                )
            }
        };
        let next = ShardRecord {
            node: claim.next.node.clone(),
            epoch: claim.next.epoch,
            followers,
        };
        let next = serde_json::to_vec(&next).map_err(|e| etcd("owner", e))?;
        let resp = self
            .client
            .txn(
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(key, next, None)]),
            )
            .await
            .map_err(|e| etcd("claim", e))?;
        Ok(resp.succeeded())
    }
}
