//! One node of a cluster of counters, to try the cluster by hand (see
//! `docs/cluster.md`, "Three nodes on one machine").
//!
//! ```sh
//! cluster_node ca <dir>        # a cluster CA: <dir>/ca.pem, <dir>/ca.key
//! cluster_node node <id> --etcd <url> --quic <addr> --http <addr> \
//!     --data <dir> --ca <dir> [--members n1,n2,n3] [--shards 64]
//! ```
//!
//! Each node answers HTTP: `POST /counters/<name>` adds one, `GET` reads;
//! the answer names the node the counter lives on.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use objects::{BoxError, Cluster, ClusterCa, ClusterOptions, Context, Object, Runtime};

struct Counter {
    n: u64,
    node: Arc<String>,
}

impl Object for Counter {
    type Env = String;
    type Call = u64;
    type Reply = (String, u64);

    async fn new(ctx: &mut Context, node: Arc<String>) -> Result<Self, BoxError> {
        Ok(Counter {
            n: ctx.storage().get("n")?.unwrap_or(0),
            node,
        })
    }

    async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<(String, u64), BoxError> {
        self.n += add;
        if add > 0 {
            ctx.storage().put("n", &self.n)?;
        }
        Ok((self.node.to_string(), self.n))
    }
}

/// The value after `--flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ca") => {
            let dir = std::path::Path::new(args.get(1).context("ca <dir>")?);
            std::fs::create_dir_all(dir)?;
            let ca = ClusterCa::generate()?;
            std::fs::write(dir.join("ca.pem"), ca.cert_pem)?;
            std::fs::write(dir.join("ca.key"), ca.key_pem)?;
            println!("wrote {}/ca.pem and ca.key", dir.display());
            Ok(())
        }
        Some("node") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(node(&args))
        }
        _ => bail!(
            "usage: cluster_node ca <dir> | cluster_node node <id> --etcd <url> --quic <addr> --http <addr> --data <dir> --ca <dir> [--members a,b,c] [--shards n]"
        ),
    }
}

async fn node(args: &[String]) -> anyhow::Result<()> {
    let id = args.get(1).context("node <id>")?.clone();
    let need = |name: &str| flag(args, name).with_context(|| format!("{name} is required"));
    let ca_dir = std::path::Path::new(need("--ca")?);
    let ca = ClusterCa {
        cert_pem: std::fs::read_to_string(ca_dir.join("ca.pem"))?,
        key_pem: std::fs::read_to_string(ca_dir.join("ca.key"))?,
    };
    let mut options = ClusterOptions::new(
        &id,
        vec![need("--etcd")?.to_string()],
        need("--quic")?.parse()?,
        ca.issue(&id)?,
    );
    if let Some(members) = flag(args, "--members") {
        options = options.with_initial_members(members.split(',').map(str::to_string).collect());
    }
    if let Some(shards) = flag(args, "--shards") {
        options = options.with_shards(shards.parse()?);
    }
    let cluster = Cluster::join(options).await?;
    let rt = Runtime::builder()
        .data_dir(need("--data")?)
        .id_secret(cluster.id_secret())
        .open()?;
    let counters = rt.namespace::<Counter>("counters", id.clone())?;
    cluster.serve(&rt)?;

    let app = axum::Router::new().route(
        "/counters/{name}",
        axum::routing::get(read).post(add).with_state(counters),
    );
    let listener = tokio::net::TcpListener::bind(need("--http")?).await?;
    println!(
        "{id}: http on {}, quic on {}",
        listener.local_addr()?,
        cluster.quic_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    cluster.leave().await;
    rt.shutdown().await;
    Ok(())
}

type Counters = objects::Namespace<Counter>;

async fn read(
    axum::extract::State(c): axum::extract::State<Counters>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> (http::StatusCode, String) {
    answer(c.get_by_name(&name).call(0).await)
}

async fn add(
    axum::extract::State(c): axum::extract::State<Counters>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> (http::StatusCode, String) {
    answer(c.get_by_name(&name).call(1).await)
}

fn answer(r: objects::Result<(String, u64)>) -> (http::StatusCode, String) {
    match r {
        Ok((node, n)) => (http::StatusCode::OK, format!("{n} (on {node})\n")),
        Err(e) if e.is_unavailable() => (http::StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => (http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
