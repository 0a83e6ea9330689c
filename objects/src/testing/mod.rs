//! Test support shared by this crate's tests, the fuzz targets and any
//! embedder that wants to check storage against a model. Compiled only
//! with the `testing` cargo feature; not part of the runtime.
//!
//! - [`storage_model`]: one vocabulary of storage operations ([`Op`]),
//!   what each observed ([`Obs`]), an interpreter that runs them on a real
//!   [`Storage`](crate::Storage), and a pure `BTreeMap` model that predicts
//!   the same observations.
//!
//! - [`Journal`]: a record of the writer's commits and syncs and the
//!   output gate's releases, in order, to check that nothing leaves before
//!   the sync that makes it durable; set it with
//!   [`StoreOptions::journal`](crate::StoreOptions::journal).
//!
//! - [`cluster_frames`]: the fuzz body of the cluster's wire decoders.
//!
//! - [`etcd::Etcd`]: a real etcd on free loopback ports, for the cluster
//!   tests (this crate's and the chat demo's).
//!
//! [`Op`]: storage_model::Op
//! [`Obs`]: storage_model::Obs

pub mod etcd;
pub mod storage_model;

/// The QUIC configurations (server, client) a node builds from its
/// certificate: TLS 1.3, mutual authentication against the cluster CA, the
/// cluster's ALPN. For benchmarks that compare the cluster's calls with
/// bare QUIC under the same TLS.
///
/// # Errors
///
/// A certificate or key that does not parse.
#[cfg(feature = "cluster")]
pub fn quic_configs(
    cert: &crate::NodeCertificate,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), crate::ClusterError> {
    crate::cluster::tls::quic_configs(cert)
}

pub use crate::storage::journal::{Journal, Step};

/// The fuzz body for the cluster's wire decoders (the frames nodes send
/// each other over QUIC): any bytes, read as a stream of requests, of
/// replies, of either direction of a WebSocket link and of replication
/// messages, never panic, and whatever decodes encodes back to the same
/// frame. Needs no `cluster` feature: the codecs are pure.
pub fn cluster_frames(data: &[u8]) {
    crate::remote::wire::fuzz_frames(data);
    crate::remote::socket_wire::fuzz_link(data);
    crate::remote::replica::wire::fuzz_frames(data);
    let shard = u32::from(data.first().copied().unwrap_or(0) % 8);
    let body = data.get(1..).unwrap_or_default();
    crate::remote::handoff_wire::fuzz_body(body, shard, 8);
    crate::websocket::moved::fuzz_sockets(body, shard, 8);
}
