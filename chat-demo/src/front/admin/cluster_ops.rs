//! The cluster operator's routes on the admin listener: move this node's
//! shards (drain, rebalance) or restore a lost node's shard here. They
//! change where rooms live, so they need the admin token as a bearer
//! header: the inspector's cookie does not do (a page on another site
//! could make a signed-in browser send it), and without a configured
//! token they answer 403.
//!
//! | route | |
//! |---|---|
//! | `POST /cluster/drain` | hand every shard of this node to the others |
//! | `POST /cluster/rebalance` | hand the others the shards hashing now gives them |
//! | `POST /cluster/restore-shard?shard=<n>&backup=<dir>` | bring shard n of a lost node back here from a backup of its data dir |
//! | `GET /cluster/status` | what this node sees: members, the shards it serves, those it leads with their followers, those it follows |
//!
//! Each operation answers 200 with one line per shard moved, or 409 with
//! the reason it stopped (shards moved before it stay moved).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{Admin, plain};

/// A boxed future, as the operations return.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// What a cluster node offers its admin listener. The binary implements
/// it over `objects::Cluster`, so this crate builds without the cluster
/// feature. Each operation answers a report (one line per shard) or why
/// it stopped.
pub trait ClusterOps: Send + Sync + 'static {
    /// Hands every shard this node serves to the other nodes.
    fn drain(&self) -> OpFuture;
    /// Hands the other nodes the shards rendezvous hashing now gives them.
    fn rebalance(&self) -> OpFuture;
    /// Restores `shard` of a lost node here from `backup`, a copy of that
    /// node's data dir.
    fn restore_shard(&self, shard: u32, backup: PathBuf) -> OpFuture;
    /// What this node sees of the cluster and of replication, as text.
    fn status(&self) -> OpFuture;
}

#[derive(Deserialize)]
struct RestoreQuery {
    shard: u32,
    backup: PathBuf,
}

/// The routes, when `ops` is set.
pub(super) fn routes(router: Router<Admin>, ops: Option<&Arc<dyn ClusterOps>>) -> Router<Admin> {
    if ops.is_none() {
        return router;
    }
    router
        .route("/cluster/drain", post(drain))
        .route("/cluster/rebalance", post(rebalance))
        .route("/cluster/restore-shard", post(restore_shard))
        .route("/cluster/status", get(status))
}

/// Runs `op` if the request carries the token as a bearer header.
async fn run(
    admin: &Admin,
    headers: &HeaderMap,
    op: impl FnOnce(&dyn ClusterOps) -> OpFuture,
) -> Response {
    if admin.token.is_none() {
        return plain(
            StatusCode::FORBIDDEN,
            "Cluster operations need an admin token (--admin-token).",
        );
    }
    if !admin.bearer(headers) {
        return plain(
            StatusCode::UNAUTHORIZED,
            "Cluster operations need the admin token as `Authorization: Bearer`.",
        );
    }
    let Some(ops) = &admin.cluster else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    match op(ops.as_ref()).await {
        Ok(report) => plain(StatusCode::OK, &report),
        Err(why) => plain(StatusCode::CONFLICT, &why),
    }
}

async fn drain(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    run(&admin, &headers, |ops| ops.drain()).await
}

async fn rebalance(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    run(&admin, &headers, |ops| ops.rebalance()).await
}

async fn status(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    run(&admin, &headers, |ops| ops.status()).await
}

async fn restore_shard(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(q): Query<RestoreQuery>,
) -> Response {
    run(&admin, &headers, |ops| ops.restore_shard(q.shard, q.backup)).await
}
