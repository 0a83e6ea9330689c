#![allow(dead_code)] // each test binary uses a part of it
//! The harness of the cluster's end-to-end tests (`cluster.rs`,
//! `replication.rs`): a real etcd on free loopback ports in a temp dir, and
//! nodes as separate processes (the test binary run again as a child,
//! driven by commands on its stdin). Without an `etcd` binary on the PATH
//! the tests say why and return; CI installs Debian's `etcd-server`.
//!
//! The probe object detects two live instances: every call holds a marker
//! file (shared by all nodes) for as long as its handler runs, and a call
//! that finds the marker taken records an overlap.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use objects::testing::etcd::Etcd;
use objects::{BoxError, Cluster, ClusterCa, ClusterOptions, Context, Object, Runtime};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

pub(crate) const CHILD_ENV: &str = "OBJECTS_CLUSTER_NODE";
pub(crate) const SHARDS: u32 = 16;
pub(crate) const MAILBOX: usize = 256;
/// Every wait in these tests is for an event (a line from a child, etcd's
/// "ready"); this only bounds a hang.
pub(crate) const HANG: Duration = Duration::from_secs(90);

/// One test at a time: each starts an etcd and three nodes, and the
/// machine is small.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- the probe

#[derive(Serialize, Deserialize)]
pub(crate) enum ProbeCall {
    Add(u64),
    Get,
    /// Fails: the object is reset.
    Fail,
    /// Waits until the node's `release` is notified.
    Hold,
    /// Waits like `Hold`, then adds.
    HoldAdd(u64),
    /// Sets the object's alarm this many seconds ahead; when it runs, it
    /// adds 1000.
    Alarm(u64),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ProbeReply {
    node: String,
    total: u64,
}

pub(crate) struct ProbeEnv {
    node: String,
    shared: PathBuf,
    release: tokio::sync::Notify,
    /// `Hold` calls waiting for `release` now.
    holding: std::sync::atomic::AtomicUsize,
}

pub(crate) struct Probe {
    total: u64,
    env: Arc<ProbeEnv>,
}

impl Probe {
    pub(crate) fn run(&mut self, ctx: &mut Context, call: ProbeCall) -> Result<u64, BoxError> {
        let env = self.env.clone();
        let marker = env.shared.join(format!("{}.live", ctx.id().to_hex()));
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            let mut v = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(env.shared.join("violations"))?;
            writeln!(v, "{} overlaps on {}: {e}", ctx.id(), env.node)?;
            return Err("two live instances of one object".into());
        }
        let r = match call {
            ProbeCall::Add(n) => {
                self.total += n;
                ctx.storage().put("total", &self.total).map(|()| self.total)
            }
            ProbeCall::Alarm(secs) => {
                let at = std::time::SystemTime::now() + Duration::from_secs(secs);
                ctx.storage().set_alarm(at).map(|()| self.total)
            }
            _ => Ok(self.total),
        };
        std::fs::remove_file(&marker)?;
        Ok(r?)
    }
}

impl Object for Probe {
    type Env = ProbeEnv;
    type Call = ProbeCall;
    type Reply = ProbeReply;

    async fn new(ctx: &mut Context, env: Arc<ProbeEnv>) -> Result<Self, BoxError> {
        Ok(Probe {
            total: ctx.storage().get("total")?.unwrap_or(0),
            env,
        })
    }

    async fn call(&mut self, ctx: &mut Context, call: ProbeCall) -> Result<ProbeReply, BoxError> {
        match call {
            ProbeCall::Fail => return Err("boom".into()),
            ProbeCall::Hold | ProbeCall::HoldAdd(_) => {
                use std::sync::atomic::Ordering::SeqCst;
                self.env.holding.fetch_add(1, SeqCst);
                self.env.release.notified().await;
                self.env.holding.fetch_sub(1, SeqCst);
            }
            _ => {}
        }
        let call = match call {
            ProbeCall::HoldAdd(n) => ProbeCall::Add(n),
            other => other,
        };
        let total = self.run(ctx, call)?;
        Ok(ProbeReply {
            node: self.env.node.clone(),
            total,
        })
    }

    async fn alarm(&mut self, ctx: &mut Context, _: objects::AlarmInfo) -> Result<(), BoxError> {
        self.total += 1000;
        ctx.storage().put("total", &self.total)?;
        Ok(())
    }

    async fn fetch(
        &mut self,
        ctx: &mut Context,
        req: objects::Request,
    ) -> Result<objects::Response, BoxError> {
        let total = self.run(ctx, ProbeCall::Get)?;
        let env = &self.env;
        let text = format!("{} {total} {}", env.node, req.uri().path());
        Ok(http::Response::builder()
            .status(203)
            .header("x-node", env.node.as_str())
            .body(text.into())?)
    }
}

// ---------------------------------------------------------------- the child

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct NodeConfig {
    pub(crate) node: String,
    pub(crate) etcd: String,
    pub(crate) prefix: String,
    pub(crate) data: PathBuf,
    pub(crate) shared: PathBuf,
    pub(crate) ca_cert: String,
    pub(crate) ca_key: String,
    pub(crate) ttl_secs: u64,
    pub(crate) margin_ms: u64,
    /// `ClusterOptions::rebalance`.
    pub(crate) rebalance: bool,
    /// `ClusterOptions::zone`.
    #[serde(default)]
    pub(crate) zone: Option<String>,
}

pub(crate) fn error_kind(e: &objects::Error) -> String {
    let debug = format!("{e:?}");
    debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// A node: joins, serves the `probes` namespace, and answers commands on
/// stdin with `reply <req> ok|err …` lines on stdout.
#[test]
fn cluster_node_child() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as a child of the tests below
    };
    let cfg: NodeConfig = serde_json::from_str(&config).expect("config");
    // `NODE_LOG=objects=debug` (an env filter) shows what the nodes do.
    if let Ok(filter) = std::env::var("NODE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let ca = ClusterCa {
            cert_pem: cfg.ca_cert.clone(),
            key_pem: cfg.ca_key.clone(),
        };
        let cert = ca.issue(&cfg.node).expect("certificate");
        let options = ClusterOptions::new(
            &cfg.node,
            vec![cfg.etcd.clone()],
            "127.0.0.1:0".parse().expect("addr"),
            cert,
        )
        .with_prefix(cfg.prefix.clone())
        .with_shards(SHARDS)
        .with_initial_members(vec!["n1".into(), "n2".into(), "n3".into()])
        .with_lease_ttl(Duration::from_secs(cfg.ttl_secs))
        .with_lease_margin(Duration::from_millis(cfg.margin_ms))
        .with_rebalance(cfg.rebalance)
        .with_zone(cfg.zone.clone());
        let cluster = Cluster::join(options).await.expect("join");
        let runtime = Runtime::builder()
            .data_dir(&cfg.data)
            .id_secret(cluster.id_secret())
            .call_timeout(Duration::from_secs(20))
            .mailbox_capacity(MAILBOX)
            .open()
            .expect("open");
        let probes = runtime
            .namespace::<Probe>(
                "probes",
                ProbeEnv {
                    node: cfg.node.clone(),
                    shared: cfg.shared.clone(),
                    release: tokio::sync::Notify::new(),
                    holding: std::sync::atomic::AtomicUsize::new(0),
                },
            )
            .expect("namespace");
        cluster.serve(&runtime).expect("serve");
        println!("started {}", cfg.node);
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let (cluster, probes) = (cluster.clone(), probes.clone());
            tokio::spawn(async move {
                let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                let Some(req) = words.get(1).cloned() else {
                    return;
                };
                let answer = command(&cluster, &probes, &words).await;
                println!("reply {req} {answer}");
            });
        }
        cluster.leave().await;
        runtime.shutdown().await;
    });
}

pub(crate) async fn command(
    cluster: &Cluster,
    probes: &objects::Namespace<Probe>,
    w: &[String],
) -> String {
    let arg = |i: usize| w.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    let fmt = |r: objects::Result<ProbeReply>| match r {
        Ok(p) => format!("ok {} {}", p.node, p.total),
        Err(e) => format!("err {} {e}", error_kind(&e)),
    };
    match w[0].as_str() {
        "call" => fmt(probes
            .get_by_name(&arg(2))
            .call(ProbeCall::Add(num(3)))
            .await),
        "get" => fmt(probes.get_by_name(&arg(2)).call(ProbeCall::Get).await),
        "release" => {
            probes.env().release.notify_one();
            "ok".into()
        }
        "fail" => fmt(probes.get_by_name(&arg(2)).call(ProbeCall::Fail).await),
        // One call that holds the object, then `n` more through the same
        // stub: those past the mailbox are refused at once. When the last
        // refusal is in, says "held <req>" and waits for the owner's
        // `release`. Answers "ok <ran> <overloaded>" if the ones that ran
        // counted in order and none ran after a refusal.
        "overload" => {
            let stub = probes.get_by_name(&arg(2));
            let hold = stub.call(ProbeCall::Hold);
            let mut adds: Vec<_> = (0..num(3)).map(|_| stub.call(ProbeCall::Add(1))).collect();
            let Some(last) = adds.pop() else {
                return "err usage".into();
            };
            let last = last.await;
            // The object runs on its owner: the test releases it there.
            println!("held {}", arg(1));
            let mut results: Vec<_> = Vec::new();
            for f in adds {
                results.push(f.await);
            }
            results.push(last);
            if let Err(e) = hold.await {
                return format!("err {} hold: {e}", error_kind(&e));
            }
            let mut totals = Vec::new();
            let mut overloaded = 0;
            for r in results {
                match r {
                    Ok(p) if overloaded == 0 => totals.push(p.total),
                    Err(e) if e.is_overloaded() => overloaded += 1,
                    Ok(_) => return "err order a call ran after one was refused".into(),
                    Err(e) => {
                        return format!("err {} after {} ran: {e}", error_kind(&e), totals.len());
                    }
                }
            }
            if totals.windows(2).all(|p| p[1] == p[0] + 1) {
                format!("ok {} {overloaded}", totals.len())
            } else {
                format!("err order {totals:?}")
            }
        }
        // A random id minted here, for another node to use.
        "unique" => match probes.new_unique_id() {
            Ok(id) => format!("ok {id}"),
            Err(e) => format!("err {} {e}", error_kind(&e)),
        },
        // An id in hex, parsed here (its MAC checked under this node's
        // secret), then called.
        "callid" => match probes.id_from_string(&arg(2)) {
            Ok(id) => fmt(probes.get(&id).call(ProbeCall::Add(1)).await),
            Err(e) => format!("err {} {e}", error_kind(&e)),
        },
        "fetch" => {
            let req = http::Request::get("/probe/path")
                .body(bytes::Bytes::new())
                .expect("request");
            match probes.get_by_name(&arg(2)).fetch(req).await {
                Ok(resp) => format!(
                    "ok {} {}",
                    resp.status().as_u16(),
                    String::from_utf8_lossy(resp.body())
                ),
                Err(e) => format!("err {} {e}", error_kind(&e)),
            }
        }
        // `count` calls through one stub, all queued before any is
        // awaited: E-order means their totals are consecutive, in order.
        "burst" => {
            let stub = probes.get_by_name(&arg(2));
            let futs: Vec<_> = (0..num(3)).map(|_| stub.call(ProbeCall::Add(1))).collect();
            let mut totals = Vec::new();
            let mut node = String::new();
            for f in futs {
                match f.await {
                    Ok(p) => {
                        node = p.node;
                        totals.push(p.total);
                    }
                    Err(e) => return format!("err {} {e}", error_kind(&e)),
                }
            }
            let ordered = totals.windows(2).all(|p| p[1] == p[0] + 1);
            if ordered {
                format!("ok {node} {}", totals.first().copied().unwrap_or(0))
            } else {
                format!("err order {totals:?}")
            }
        }
        "shard" => {
            let id = probes.id_from_name(&arg(2));
            let shard = cluster.shard_of(&id);
            match &cluster.status().owners[shard as usize] {
                Some((owner, epoch)) => format!("ok {shard} {owner} {epoch}"),
                None => format!("ok {shard} - 0"),
            }
        }
        // Until `n` members are live, every shard has an owner, and every
        // owner is live.
        "settle" => {
            let n = num(2) as usize;
            // A view read before this command came (say, before a pause
            // the node just woke from) must not count.
            cluster.refreshed().await;
            for _ in 0..300 {
                let s = cluster.status();
                if s.members.len() == n
                    && s.owners
                        .iter()
                        .all(|o| o.as_ref().is_some_and(|(n, _)| s.members.contains(n)))
                {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err settle never".into()
        }
        "gone" => {
            for _ in 0..300 {
                if !cluster.status().members.contains(&arg(2)) {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err gone never".into()
        }
        "serving" => {
            let shard = num(2) as u32;
            for _ in 0..300 {
                if cluster.status().serving.contains(&shard) {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err serving never".into()
        }
        // Waits out this node's lease window (a deadline the node itself
        // keeps, by its monotonic clock), then says whether it still serves.
        // A renewal answered just before etcd went away may still move
        // the window on once it is read: wait out each window it reports.
        "lapse" => {
            for _ in 0..10 {
                match cluster.status().serve_for {
                    Some(left) => tokio::time::sleep(left).await,
                    None => break,
                }
            }
            let s = cluster.status();
            if s.serving.is_empty() && s.serve_for.is_none() {
                "ok".into()
            } else {
                format!("err still serving {:?}", s.serving)
            }
        }
        "reassign" => match cluster
            .reassign_shard(num(2) as u32, &arg(3), num(4), &arg(5))
            .await
        {
            Ok(done) => format!("ok {done}"),
            Err(e) => format!("err etcd {e}"),
        },
        // Moving shards (graceful hand-off).
        "handoff" => match cluster.hand_off(num(2) as u32, &arg(3)).await {
            Ok(r) => format!("ok {} {} {}", r.to, r.objects, r.held),
            Err(e) => format!("err handoff {e}"),
        },
        "drain" => match cluster.drain().await {
            Ok(moved) => format!("ok {}", moved.len()),
            Err(e) => format!("err drain {e}"),
        },
        "rebalance" => match cluster.rebalance().await {
            Ok(moved) => format!("ok {}", moved.len()),
            Err(e) => format!("err rebalance {e}"),
        },
        "restore" => match cluster.restore_shard(num(2) as u32, arg(3)).await {
            Ok(r) => format!("ok {} {}", r.objects, r.keys),
            Err(e) => format!("err restore {e}"),
        },
        "served" => format!("ok {}", cluster.status().serving.len()),
        // `count` calls through one stub, all queued before any is
        // awaited, among other callers' calls: E-order means each total is
        // above the one before.
        "pipeline" => {
            let stub = probes.get_by_name(&arg(2));
            let futs: Vec<_> = (0..num(3)).map(|_| stub.call(ProbeCall::Add(1))).collect();
            let mut last = 0;
            for f in futs {
                match f.await {
                    Ok(p) if p.total > last => last = p.total,
                    Ok(p) => return format!("err order {} after {last}", p.total),
                    Err(e) => return format!("err {} {e}", error_kind(&e)),
                }
            }
            format!("ok {} {last}", num(3))
        }
        // Until this node knows `node` owns some shard.
        "sees" => {
            for _ in 0..300 {
                let owns = cluster
                    .status()
                    .owners
                    .iter()
                    .any(|o| o.as_ref().is_some_and(|(n, _)| *n == arg(2)));
                if owns {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err sees never".into()
        }
        // Until this node serves some shard.
        "serves" => {
            for _ in 0..300 {
                if !cluster.status().serving.is_empty() {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err serves never".into()
        }
        // Until this node has read that shard `n` is `node`'s.
        "owned" => {
            let shard = num(2) as usize;
            for _ in 0..300 {
                if cluster.status().owners[shard]
                    .as_ref()
                    .is_some_and(|o| o.0 == arg(3))
                {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err owned never".into()
        }
        // A call that holds the object until its owner's `release`.
        "hold" => fmt(probes.get_by_name(&arg(2)).call(ProbeCall::Hold).await),
        // A call that holds the object until its owner's `release`, then
        // adds `n`.
        "holdadd" => fmt(probes
            .get_by_name(&arg(2))
            .call(ProbeCall::HoldAdd(num(3)))
            .await),
        // Until this node is handing shard `n` away. (Polled: nothing
        // signals it to a test.)
        "moving" => {
            let shard = num(2) as u32;
            poll(|| cluster.status().moving.contains(&shard)).await
        }
        // Until a `Hold` call (or `n`) waits here.
        "holding" => {
            let env = probes.env();
            let n = usize::try_from(num(2).max(1)).unwrap_or(usize::MAX);
            poll(|| env.holding.load(std::sync::atomic::Ordering::SeqCst) >= n).await
        }
        // `count` calls through one stub, each awaited before the next (as
        // a client does): every one must be answered, each total above the
        // last.
        "load" => {
            let stub = probes.get_by_name(&arg(2));
            let mut last = 0;
            for i in 0..num(3) {
                match stub.call(ProbeCall::Add(1)).await {
                    Ok(p) if p.total > last => last = p.total,
                    Ok(p) => return format!("err order {} after {last}", p.total),
                    Err(e) => return format!("err {} after {i}: {e}", error_kind(&e)),
                }
            }
            format!("ok {} {last}", num(3))
        }
        // Replication: sets R for the cluster.
        "replicas" => match cluster.set_replicas(num(2) as u32).await {
            Ok(()) => "ok".into(),
            Err(e) => format!("err replicas {e}"),
        },
        // Until every shard this node leads has `n` followers, and it
        // leads some.
        "replicated" => {
            let n = num(2) as usize;
            // A view read before this command came (say, before a pause
            // the node just woke from) must not count.
            cluster.refreshed().await;
            for _ in 0..300 {
                let s = cluster.status();
                if !s.leading.is_empty() && s.leading.iter().all(|(_, f)| f.len() == n) {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            format!("err replicated never: {:?}", cluster.status().leading)
        }
        // A call retried while its shard is unavailable (after a node's
        // loss, until a follower takes over), at most 300 readings of etcd.
        "callretry" => {
            let stub = probes.get_by_name(&arg(2));
            let mut last = String::new();
            for _ in 0..300 {
                match stub.call(ProbeCall::Add(num(3))).await {
                    Ok(p) => return format!("ok {} {}", p.node, p.total),
                    Err(e) if e.is_unavailable() => last = e.to_string(),
                    Err(e) => return format!("err {} {e}", error_kind(&e)),
                }
                cluster.refreshed().await;
            }
            format!("err never available: {last}")
        }
        // What this node replicates, for a failing test to show.
        // Each shard this node leads, with its followers: `shard:a,b`.
        "leading" => {
            let mut out = String::from("ok");
            for (shard, followers) in cluster.status().leading {
                out.push_str(&format!(" {shard}:{}", followers.join(",")));
            }
            out
        }
        "status" => {
            let s = cluster.status();
            format!(
                "ok members {:?} leading {:?} following {:?}",
                s.members, s.leading, s.following
            )
        }
        // Until this node no longer leads shard `n` (it read that another
        // node does).
        "notleading" => {
            let shard = num(2) as u32;
            for _ in 0..300 {
                if !cluster.status().leading.iter().any(|(s, _)| *s == shard) {
                    return "ok".into();
                }
                cluster.refreshed().await;
            }
            "err still leading".into()
        }
        // Sets the object's alarm `secs` ahead.
        "alarm" => fmt(probes
            .get_by_name(&arg(2))
            .call(ProbeCall::Alarm(num(3)))
            .await),
        // Until the object's alarm has run (its total reaches 1000), at
        // most 300 readings of etcd; says where it runs and its total.
        "alarmed" => {
            let stub = probes.get_by_name(&arg(2));
            for _ in 0..300 {
                if let Ok(p) = stub.call(ProbeCall::Get).await
                    && p.total >= 1000
                {
                    return format!("ok {} {}", p.node, p.total);
                }
                cluster.refreshed().await;
            }
            "err the alarm never ran".into()
        }
        // The followers of a shard this node leads.
        "followers" => {
            let shard = num(2) as u32;
            match cluster.status().leading.iter().find(|(s, _)| *s == shard) {
                Some((_, f)) => format!("ok {}", f.join(" ")),
                None => "err not leading".into(),
            }
        }
        // What this node's own store holds of an object (any node's copy,
        // owner or not): its total, or `none`.
        "stored" => {
            let id = probes.id_from_name(&arg(2));
            match probes.export(&id) {
                Ok(entries) => match entries.iter().find(|(k, _)| k == "total") {
                    Some((_, v)) => match v.decode::<u64>() {
                        Ok(t) => format!("ok {t}"),
                        Err(e) => format!("err codec {e}"),
                    },
                    None => "ok none".into(),
                },
                Err(e) => format!("err {} {e}", error_kind(&e)),
            }
        }
        // Everything this node's own store holds of a shard's objects
        // (owner or not): each object's id and its keys and values, in
        // order, as one line (for comparing replicas' exports).
        "dump" => {
            let shard = num(2) as u32;
            let ids = match probes.stored_ids() {
                Ok(ids) => ids,
                Err(e) => return format!("err {} {e}", error_kind(&e)),
            };
            let mut ids: Vec<_> = ids
                .into_iter()
                .filter(|id| cluster.shard_of(id) == shard)
                .collect();
            ids.sort_by_key(|id| id.to_string());
            let mut out = String::from("ok");
            for id in ids {
                match probes.export(&id) {
                    Ok(entries) => {
                        out.push_str(&format!(" {id}:"));
                        for (k, v) in entries {
                            out.push_str(&format!("{k}={v:?};"));
                        }
                    }
                    Err(e) => return format!("err {} {e}", error_kind(&e)),
                }
            }
            out
        }
        other => format!("err unknown {other}"),
    }
}

/// "ok" once `state` holds (checked every 2 ms, for at most 10 s): for
/// states nothing signals to a test.
pub(crate) async fn poll(state: impl Fn() -> bool) -> String {
    for _ in 0..5000 {
        if state() {
            return "ok".into();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    "err the state never came".into()
}

// --------------------------------------------------------------- the parent

pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) cfg: NodeConfig,
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) lines: mpsc::UnboundedReceiver<String>,
    pub(crate) unread: Vec<String>,
    pub(crate) next: u64,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Cluster3 {
    pub(crate) etcd: Etcd,
    pub(crate) nodes: Vec<Node>,
    pub(crate) shared: tempfile::TempDir,
    pub(crate) data: tempfile::TempDir,
    pub(crate) ca: ClusterCa,
    /// Nodes rebalance by themselves when a member joins.
    pub(crate) rebalance: bool,
}

impl Node {
    pub(crate) async fn spawn(cfg: NodeConfig) -> Node {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "cluster_harness::cluster_node_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, serde_json::to_string(&cfg).expect("json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut node = Node {
            id: cfg.node.clone(),
            cfg,
            child,
            stdin,
            lines: rx,
            unread: Vec::new(),
            next: 0,
        };
        node.wait_line("started ").await;
        node
    }

    /// The rest of the first line holding `prefix`; lines read past on
    /// the way are kept for later waits (replies come in any order).
    pub(crate) async fn wait_line(&mut self, prefix: &str) -> String {
        // The harness may print "test … " on the same line first.
        let after = |line: &str| {
            line.find(prefix)
                .map(|at| line[at + prefix.len()..].to_string())
        };
        if let Some(i) = self.unread.iter().position(|l| after(l).is_some()) {
            let line = self.unread.remove(i);
            return after(&line).unwrap_or_default();
        }
        let found = tokio::time::timeout(HANG, async {
            while let Some(line) = self.lines.recv().await {
                match after(&line) {
                    Some(rest) => return rest,
                    None => self.unread.push(line),
                }
            }
            panic!("node {} ended before {prefix:?}", self.id);
        })
        .await;
        found.unwrap_or_else(|_| panic!("node {} never said {prefix:?}", self.id))
    }

    /// Sends a command without waiting; returns its request id.
    pub(crate) fn send(&mut self, cmd: &str, args: &str) -> u64 {
        self.next += 1;
        writeln!(self.stdin, "{cmd} {} {args}", self.next).expect("write command");
        self.stdin.flush().expect("flush");
        self.next
    }

    pub(crate) async fn cmd(&mut self, cmd: &str, args: &str) -> String {
        let req = self.send(cmd, args);
        self.wait_line(&format!("reply {req} ")).await
    }
}

pub(crate) fn pid(child: &Child) -> String {
    child.id().to_string()
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid(child)])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

impl Cluster3 {
    pub(crate) async fn start(ttl_secs: u64, margin_ms: u64) -> Option<Cluster3> {
        Cluster3::start_with(ttl_secs, margin_ms, false).await
    }

    pub(crate) async fn start_with(
        ttl_secs: u64,
        margin_ms: u64,
        rebalance: bool,
    ) -> Option<Cluster3> {
        Cluster3::start_in(ttl_secs, margin_ms, rebalance, [None, None, None]).await
    }

    /// Three nodes, each with its zone (`None`: a zone of its own).
    pub(crate) async fn start_in(
        ttl_secs: u64,
        margin_ms: u64,
        rebalance: bool,
        zones: [Option<&str>; 3],
    ) -> Option<Cluster3> {
        let etcd = Etcd::start().await?;
        let ca = ClusterCa::generate().expect("CA");
        let shared = tempfile::tempdir().expect("tempdir");
        let data = tempfile::tempdir().expect("tempdir");
        let mut c = Cluster3 {
            etcd,
            nodes: Vec::new(),
            shared,
            data,
            ca,
            rebalance,
        };
        for (n, zone) in ["n1", "n2", "n3"].into_iter().zip(zones) {
            let mut cfg = c.config(n, ttl_secs, margin_ms);
            cfg.zone = zone.map(str::to_owned);
            c.nodes.push(Node::spawn(cfg).await);
        }
        c.settle().await;
        Some(c)
    }

    pub(crate) fn config(&self, node: &str, ttl_secs: u64, margin_ms: u64) -> NodeConfig {
        NodeConfig {
            node: node.into(),
            etcd: self.etcd.url().to_string(),
            prefix: "/test".into(),
            data: self.data.path().join(node),
            shared: self.shared.path().to_path_buf(),
            ca_cert: self.ca.cert_pem.clone(),
            ca_key: self.ca.key_pem.clone(),
            ttl_secs,
            margin_ms,
            rebalance: self.rebalance,
            zone: None,
        }
    }

    pub(crate) async fn settle(&mut self) {
        let n = self.nodes.len().to_string();
        for node in &mut self.nodes {
            assert_eq!(node.cmd("settle", &n).await, "ok", "{}", node.id);
        }
    }

    /// `(shard, owner, epoch)` of an object, as node 0 sees it.
    pub(crate) async fn owner(&mut self, name: &str) -> (u32, String, u64) {
        let r = self.nodes[0].cmd("shard", name).await;
        let w: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(w[0], "ok", "{r}");
        (
            w[1].parse().expect("shard"),
            w[2].to_string(),
            w[3].parse().expect("epoch"),
        )
    }

    pub(crate) fn violations(&self) -> String {
        std::fs::read_to_string(self.shared.path().join("violations")).unwrap_or_default()
    }

    pub(crate) fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }
}

/// An object name whose owner (as node 0 sees it) is `owner`.
pub(crate) async fn object_on(c: &mut Cluster3, owner: &str, tag: &str) -> (String, u32, u64) {
    for i in 0..500 {
        let name = format!("{tag}-{i}");
        let (shard, o, epoch) = c.owner(&name).await;
        if o == owner {
            return (name, shard, epoch);
        }
    }
    panic!("no object on {owner} among 500 names");
}

pub(crate) fn ok_total(reply: &str) -> (String, u64) {
    let w: Vec<&str> = reply.split_whitespace().collect();
    assert_eq!(w.first(), Some(&"ok"), "{reply}");
    (w[1].to_string(), w[2].parse().expect("total"))
}
