//! The cluster end to end: a real etcd on free loopback ports in a temp
//! dir, and nodes as separate processes (this test binary run again as a
//! child, driven by commands on its stdin). Without an `etcd` binary on
//! the PATH the tests say why and return; CI installs Debian's
//! `etcd-server`.
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

const CHILD_ENV: &str = "OBJECTS_CLUSTER_NODE";
const SHARDS: u32 = 16;
const MAILBOX: usize = 256;
/// Every wait in these tests is for an event (a line from a child, etcd's
/// "ready"); this only bounds a hang.
const HANG: Duration = Duration::from_secs(90);

/// One test at a time: each starts an etcd and three nodes, and the
/// machine is small.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- the probe

#[derive(Serialize, Deserialize)]
enum ProbeCall {
    Add(u64),
    Get,
    /// Fails: the object is reset.
    Fail,
    /// Waits until the node's `release` is notified.
    Hold,
}

#[derive(Serialize, Deserialize)]
struct ProbeReply {
    node: String,
    total: u64,
}

struct ProbeEnv {
    node: String,
    shared: PathBuf,
    release: tokio::sync::Notify,
    /// `Hold` calls waiting for `release` now.
    holding: std::sync::atomic::AtomicUsize,
}

struct Probe {
    total: u64,
    env: Arc<ProbeEnv>,
}

impl Probe {
    fn run(&mut self, ctx: &mut Context, call: ProbeCall) -> Result<u64, BoxError> {
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
            ProbeCall::Hold => {
                use std::sync::atomic::Ordering::SeqCst;
                self.env.holding.fetch_add(1, SeqCst);
                self.env.release.notified().await;
                self.env.holding.fetch_sub(1, SeqCst);
            }
            _ => {}
        }
        let total = self.run(ctx, call)?;
        Ok(ProbeReply {
            node: self.env.node.clone(),
            total,
        })
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
struct NodeConfig {
    node: String,
    etcd: String,
    prefix: String,
    data: PathBuf,
    shared: PathBuf,
    ca_cert: String,
    ca_key: String,
    ttl_secs: u64,
    margin_ms: u64,
    /// `ClusterOptions::rebalance`.
    rebalance: bool,
}

fn error_kind(e: &objects::Error) -> String {
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
        .with_rebalance(cfg.rebalance);
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

async fn command(cluster: &Cluster, probes: &objects::Namespace<Probe>, w: &[String]) -> String {
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
        "lapse" => {
            if let Some(left) = cluster.status().serve_for {
                tokio::time::sleep(left).await;
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
        // Until this node is handing shard `n` away. (Polled: nothing
        // signals it to a test.)
        "moving" => {
            let shard = num(2) as u32;
            poll(|| cluster.status().moving.contains(&shard)).await
        }
        // Until a `Hold` call waits here.
        "holding" => {
            let env = probes.env();
            poll(|| env.holding.load(std::sync::atomic::Ordering::SeqCst) > 0).await
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
        other => format!("err unknown {other}"),
    }
}

/// "ok" once `state` holds (checked every 2 ms, for at most 10 s): for
/// states nothing signals to a test.
async fn poll(state: impl Fn() -> bool) -> String {
    for _ in 0..5000 {
        if state() {
            return "ok".into();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    "err the state never came".into()
}

// --------------------------------------------------------------- the parent

struct Node {
    id: String,
    cfg: NodeConfig,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    unread: Vec<String>,
    next: u64,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster3 {
    etcd: Etcd,
    nodes: Vec<Node>,
    shared: tempfile::TempDir,
    data: tempfile::TempDir,
    ca: ClusterCa,
    /// Nodes rebalance by themselves when a member joins.
    rebalance: bool,
}

impl Node {
    async fn spawn(cfg: NodeConfig) -> Node {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "cluster_node_child",
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
    async fn wait_line(&mut self, prefix: &str) -> String {
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
    fn send(&mut self, cmd: &str, args: &str) -> u64 {
        self.next += 1;
        writeln!(self.stdin, "{cmd} {} {args}", self.next).expect("write command");
        self.stdin.flush().expect("flush");
        self.next
    }

    async fn cmd(&mut self, cmd: &str, args: &str) -> String {
        let req = self.send(cmd, args);
        self.wait_line(&format!("reply {req} ")).await
    }
}

fn pid(child: &Child) -> String {
    child.id().to_string()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid(child)])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

impl Cluster3 {
    async fn start(ttl_secs: u64, margin_ms: u64) -> Option<Cluster3> {
        Cluster3::start_with(ttl_secs, margin_ms, false).await
    }

    async fn start_with(ttl_secs: u64, margin_ms: u64, rebalance: bool) -> Option<Cluster3> {
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
        for n in ["n1", "n2", "n3"] {
            let cfg = c.config(n, ttl_secs, margin_ms);
            c.nodes.push(Node::spawn(cfg).await);
        }
        c.settle().await;
        Some(c)
    }

    fn config(&self, node: &str, ttl_secs: u64, margin_ms: u64) -> NodeConfig {
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
        }
    }

    async fn settle(&mut self) {
        let n = self.nodes.len().to_string();
        for node in &mut self.nodes {
            assert_eq!(node.cmd("settle", &n).await, "ok", "{}", node.id);
        }
    }

    /// `(shard, owner, epoch)` of an object, as node 0 sees it.
    async fn owner(&mut self, name: &str) -> (u32, String, u64) {
        let r = self.nodes[0].cmd("shard", name).await;
        let w: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(w[0], "ok", "{r}");
        (
            w[1].parse().expect("shard"),
            w[2].to_string(),
            w[3].parse().expect("epoch"),
        )
    }

    fn violations(&self) -> String {
        std::fs::read_to_string(self.shared.path().join("violations")).unwrap_or_default()
    }

    fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }
}

/// An object name whose owner (as node 0 sees it) is `owner`.
async fn object_on(c: &mut Cluster3, owner: &str, tag: &str) -> (String, u32, u64) {
    for i in 0..500 {
        let name = format!("{tag}-{i}");
        let (shard, o, epoch) = c.owner(&name).await;
        if o == owner {
            return (name, shard, epoch);
        }
    }
    panic!("no object on {owner} among 500 names");
}

fn ok_total(reply: &str) -> (String, u64) {
    let w: Vec<&str> = reply.split_whitespace().collect();
    assert_eq!(w.first(), Some(&"ok"), "{reply}");
    (w[1].to_string(), w[2].parse().expect("total"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_every_node_reach_every_object_in_order() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(6, 2000).await else {
        return;
    };
    // One object owned by each node, called from every node.
    let mut objects = Vec::new();
    for owner in ["n1", "n2", "n3"] {
        objects.push((object_on(&mut c, owner, "obj").await, owner));
    }
    for ((name, _, _), owner) in &objects {
        for (i, node) in c.nodes.iter_mut().enumerate() {
            let (ran_on, total) = ok_total(&node.cmd("call", &format!("{name} 1")).await);
            assert_eq!(&ran_on, owner, "{name} ran where its shard's owner is");
            assert_eq!(total, i as u64 + 1, "{name}: every call counted once");
        }
    }
    // E-order: 200 calls through one stub on n1 to an object on n3, all
    // queued before the first answer, arrive in order.
    let far = &objects[2].0.0;
    let before = ok_total(&c.nodes[0].cmd("get", far).await).1;
    let r = c.nodes[0].cmd("burst", &format!("{far} 200")).await;
    assert_eq!(r, format!("ok n3 {}", before + 1));
    // One id secret: a random id minted on one node is valid on the others
    // (each parses it and checks its MAC before calling it).
    let r = c.nodes[0].cmd("unique", "").await;
    let hex = r
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    for (i, node) in c.nodes.iter_mut().enumerate() {
        let (_, total) = ok_total(&node.cmd("callid", &hex).await);
        assert_eq!(total, i as u64 + 1);
    }
    // Errors cross as the same types: a handler's failure is a Reset with
    // its cause, a full mailbox on the owner is Overloaded.
    let r = c.nodes[0].cmd("fail", far).await;
    assert!(r.starts_with("err Reset ") && r.ends_with("boom"), "{r}");
    let req = c.nodes[0].send("overload", &format!("{far} 300"));
    c.nodes[0].wait_line(&format!("held {req}")).await;
    assert_eq!(c.nodes[2].cmd("release", "").await, "ok");
    let r = c.nodes[0].wait_line(&format!("reply {req} ")).await;
    let w: Vec<&str> = r.split_whitespace().collect();
    assert_eq!(w[0], "ok", "{r}");
    let (ran, refused): (usize, usize) = (w[1].parse().expect("n"), w[2].parse().expect("n"));
    assert_eq!(ran + refused, 300, "{r}");
    assert!(ran <= MAILBOX && refused >= 300 - MAILBOX, "{r}");
    // A fetch crosses too: status, headers and body come back.
    let r = c.nodes[0].cmd("fetch", far).await;
    assert_eq!(
        r,
        format!("ok 203 n3 {} /probe/path", before + 200 + ran as u64)
    );
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_shards_are_unavailable_until_it_returns_with_its_data() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    let (on3, _, _) = object_on(&mut c, "n3", "kill").await;
    let (on1, _, _) = object_on(&mut c, "n1", "kill").await;
    // Acknowledged writes on n3's object, made from n1.
    let mut acked = 0;
    for _ in 0..5 {
        acked = ok_total(&c.nodes[0].cmd("call", &format!("{on3} 1")).await).1;
    }
    assert_eq!(acked, 5);
    // SIGKILL n3.
    let cfg3 = c.node("n3").cfg.clone();
    c.nodes.retain(|n| n.id != "n3"); // dropping kills it (SIGKILL)
    assert_eq!(c.nodes[0].cmd("gone", "n3").await, "ok");
    assert_eq!(c.nodes[1].cmd("gone", "n3").await, "ok");
    let r = c.nodes[0].cmd("call", &format!("{on3} 1")).await;
    assert!(r.starts_with("err Unavailable "), "{r}");
    assert!(r.contains("n3"), "the error names the owner: {r}");
    // Other shards keep serving, from both survivors.
    for i in 0..2 {
        let (ran_on, _) = ok_total(&c.nodes[i].cmd("call", &format!("{on1} 1")).await);
        assert_eq!(ran_on, "n1");
    }
    // n3 returns with its data dir: every acknowledged write is there.
    c.nodes.push(Node::spawn(cfg3).await);
    c.settle().await;
    let (ran_on, total) = ok_total(&c.nodes[0].cmd("call", &format!("{on3} 1")).await);
    assert_eq!((ran_on.as_str(), total), ("n3", acked + 1));
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_serves_nothing_it_no_longer_owns() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(3, 1000).await else {
        return;
    };
    let (name, shard, epoch) = object_on(&mut c, "n1", "fence").await;
    let (ran_on, _) = ok_total(&c.node("n2").cmd("call", &format!("{name} 1")).await);
    assert_eq!(ran_on, "n1");
    // Pause n1 past its lease: etcd drops its membership.
    signal(&c.node("n1").child, "-STOP");
    assert_eq!(c.node("n2").cmd("gone", "n1").await, "ok");
    // The operator gives n1's shard to n2 (its data would be restored there
    // first; the probe starts over, which is fine for this test).
    assert_eq!(
        c.node("n2")
            .cmd("reassign", &format!("{shard} n1 {epoch} n2"))
            .await,
        "ok true"
    );
    assert_eq!(c.node("n2").cmd("serving", &shard.to_string()).await, "ok");
    let (ran_on, _) = ok_total(&c.node("n3").cmd("call", &format!("{name} 1")).await);
    assert_eq!(ran_on, "n2");
    // A call queued on n1 while it is paused runs the moment it wakes,
    // before it has talked to etcd: it must not run there.
    let req = c.node("n1").send("call", &format!("{name} 1"));
    signal(&c.node("n1").child, "-CONT");
    let r = c.node("n1").wait_line(&format!("reply {req} ")).await;
    assert!(
        r.starts_with("err Unavailable ") || r.starts_with("ok n2 "),
        "a lapsed node ran the call itself: {r}"
    );
    // Once n1 is back, calls through it reach the new owner.
    c.settle().await;
    let (ran_on, _) = ok_total(&c.node("n1").cmd("call", &format!("{name} 1")).await);
    assert_eq!(ran_on, "n2");
    assert_eq!(c.violations(), "", "two live instances of one object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_nodes_stop_at_their_lease_and_come_back_with_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    let (on2, shard, _) = object_on(&mut c, "n2", "etcd").await;
    let mut acked = 0;
    for _ in 0..3 {
        acked = ok_total(&c.nodes[0].cmd("call", &format!("{on2} 1")).await).1;
    }
    // etcd goes away: no node can renew, so each stops when its own
    // lease window ends.
    c.etcd.stop();
    for node in &mut c.nodes {
        assert_eq!(node.cmd("lapse", "").await, "ok", "{}", node.id);
    }
    for node in ["n1", "n2"] {
        let r = c.node(node).cmd("call", &format!("{on2} 1")).await;
        assert!(
            r.starts_with("err Unavailable ") && r.contains("lease"),
            "{r}"
        );
    }
    // etcd is back: nodes take new leases, re-claim, and serve again, with
    // every acknowledged write.
    c.etcd.restart().await;
    c.settle().await;
    assert_eq!(c.node("n2").cmd("serving", &shard.to_string()).await, "ok");
    let (ran_on, total) = ok_total(&c.nodes[0].cmd("call", &format!("{on2} 1")).await);
    assert_eq!((ran_on.as_str(), total), ("n2", acked + 1));
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_move_under_load_without_losing_or_repeating_a_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(6, 2000).await else {
        return;
    };
    let (on3, shard3, _) = object_on(&mut c, "n3", "move").await;
    let (on1, _, _) = object_on(&mut c, "n1", "move").await;
    // A node joins: it owns nothing until shards are moved to it.
    let cfg4 = c.config("n4", 6, 2000);
    c.nodes.push(Node::spawn(cfg4).await);
    c.settle().await;
    assert_eq!(c.node("n4").cmd("served", "").await, "ok 0");
    // n3's object is busy with a call that waits for a release, so every
    // node's calls to it are still to run when n3 starts handing its shard
    // to n4: some run on n3 before it lets go, the rest are held and go to
    // n4. Meanwhile every node calls both objects, one call after another,
    // and after the hand-off n3 drains and n1 rebalances.
    let hold = c.node("n2").send("hold", &on3);
    assert_eq!(c.node("n3").cmd("holding", "").await, "ok");
    const CALLS: u64 = 150;
    let mut loads = Vec::new();
    for node in &mut c.nodes {
        for name in [&on3, &on1] {
            loads.push((
                node.id.clone(),
                node.send("load", &format!("{name} {CALLS}")),
            ));
        }
    }
    let handoff = c.node("n3").send("handoff", &format!("{shard3} n4"));
    assert_eq!(c.node("n3").cmd("moving", &shard3.to_string()).await, "ok");
    // Calls queued through one stub while the shard moves, on the old
    // owner itself and on another node: they keep their order.
    const PIPELINED: u64 = 100;
    for node in ["n1", "n3"] {
        let req = c.node(node).send("pipeline", &format!("{on3} {PIPELINED}"));
        loads.push((node.to_string(), req));
    }
    assert_eq!(c.node("n3").cmd("release", "").await, "ok");
    let (ran_on, _) = ok_total(&c.node("n2").wait_line(&format!("reply {hold} ")).await);
    assert_eq!(ran_on, "n3");
    let r = c.node("n3").wait_line(&format!("reply {handoff} ")).await;
    let w: Vec<&str> = r.split_whitespace().collect();
    assert_eq!(w[..2], ["ok", "n4"], "{r}");
    let held: usize = w[3].parse().expect("held");
    assert!(held >= 4, "each node's next call waited out the move: {r}");
    let drain = c.node("n3").send("drain", "");
    let r = c.node("n1").cmd("rebalance", "").await;
    assert!(r.starts_with("ok "), "{r}");
    let r = c.node("n3").wait_line(&format!("reply {drain} ")).await;
    assert!(r.starts_with("ok "), "{r}");
    assert_eq!(c.node("n3").cmd("served", "").await, "ok 0", "n3 drained");
    for (node, req) in loads {
        let r = c.node(&node).wait_line(&format!("reply {req} ")).await;
        assert!(
            r.starts_with(&format!("ok {CALLS} ")) || r.starts_with(&format!("ok {PIPELINED} ")),
            "{node}: {r}"
        );
    }
    // No call lost or run twice: each object counted every call once.
    let nodes = c.nodes.len() as u64;
    for (name, extra) in [(&on3, 2 * PIPELINED), (&on1, 0)] {
        let (ran_on, total) = ok_total(&c.nodes[0].cmd("get", name).await);
        assert_eq!(total, CALLS * nodes + extra, "{name}");
        assert_ne!(ran_on, "n3", "{name} left the drained node");
    }
    let (ran_on, _) = ok_total(&c.node("n2").cmd("get", &on3).await);
    assert_eq!(
        ran_on, "n4",
        "the shard handed by hand went to n4 and stayed"
    );
    // n1 and n2 drain too: everything ends on n4, which has nobody left
    // to drain to.
    for node in ["n1", "n2"] {
        let r = c.node(node).cmd("drain", "").await;
        assert!(r.starts_with("ok "), "{node}: {r}");
    }
    let r = c.node("n4").cmd("drain", "").await;
    assert!(r.contains("no other live member"), "{r}");
    for (name, extra) in [(&on3, 2 * PIPELINED), (&on1, 0)] {
        let (ran_on, total) = ok_total(&c.node("n1").cmd("get", name).await);
        assert_eq!(
            (ran_on.as_str(), total),
            ("n4", CALLS * nodes + extra),
            "{name}"
        );
    }
    assert_eq!(c.violations(), "", "two live instances of one object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_s_shard_is_restored_elsewhere_from_a_backup() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    let (on3, shard, _) = object_on(&mut c, "n3", "restore").await;
    for _ in 0..5 {
        ok_total(&c.nodes[0].cmd("call", &format!("{on3} 1")).await);
    }
    // A backup of n3's data dir taken while it runs, then n3 is lost.
    let backup = c.data.path().join("n3-backup");
    objects::Admin::backup_live(&c.node("n3").cfg.data, &backup).expect("backup");
    let cfg3 = c.node("n3").cfg.clone();
    c.nodes.retain(|n| n.id != "n3");
    assert_eq!(c.node("n2").cmd("gone", "n3").await, "ok");
    // A restore while the owner is live is refused; here it is not.
    let r = c
        .node("n2")
        .cmd("restore", &format!("{shard} {}", backup.display()))
        .await;
    assert!(r.starts_with("ok "), "{r}");
    assert_eq!(
        c.node("n1").cmd("owned", &format!("{shard} n2")).await,
        "ok"
    );
    let (ran_on, total) = ok_total(&c.node("n1").cmd("call", &format!("{on3} 1")).await);
    assert_eq!(
        (ran_on.as_str(), total),
        ("n2", 6),
        "the backup's writes are there"
    );
    // n3 comes back with its old data dir: the shard stays with n2.
    c.nodes.push(Node::spawn(cfg3).await);
    c.settle().await;
    let (ran_on, total) = ok_total(&c.node("n3").cmd("call", &format!("{on3} 1")).await);
    assert_eq!((ran_on.as_str(), total), ("n2", 7));
    let r = c
        .node("n1")
        .cmd("restore", &format!("{shard} {}", backup.display()))
        .await;
    assert!(r.starts_with("err restore ") && r.contains("live"), "{r}");
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_gets_its_share_when_nodes_rebalance_by_themselves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start_with(6, 2000, true).await else {
        return;
    };
    let (on1, _, _) = object_on(&mut c, "n1", "auto").await;
    for _ in 0..3 {
        ok_total(&c.nodes[1].cmd("call", &format!("{on1} 1")).await);
    }
    let cfg4 = c.config("n4", 6, 2000);
    c.nodes.push(Node::spawn(cfg4).await);
    c.settle().await;
    // The others notice it joined and hand it the shards hashing gives it.
    assert_eq!(c.node("n4").cmd("serves", "").await, "ok");
    // object_on asks n1 where objects are: once it has read that.
    assert_eq!(c.node("n1").cmd("sees", "n4").await, "ok");
    // A name never called before (an `auto-` one may be on1, moved).
    let (on4, _, _) = object_on(&mut c, "n4", "fresh").await;
    for (i, node) in c.nodes.iter_mut().enumerate() {
        let (ran_on, total) = ok_total(&node.cmd("call", &format!("{on4} 1")).await);
        assert_eq!(
            (ran_on.as_str(), total),
            ("n4", i as u64 + 1),
            "{}",
            node.id
        );
    }
    // An object that stayed, or moved, kept its count.
    let (_, total) = ok_total(&c.node("n4").cmd("call", &format!("{on1} 1")).await);
    assert_eq!(total, 4);
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_whose_new_owner_dies_is_called_off_and_nothing_is_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(6, 2000).await else {
        return;
    };
    let (on3, shard3, _) = object_on(&mut c, "n3", "abort").await;
    let cfg4 = c.config("n4", 6, 2000);
    c.nodes.push(Node::spawn(cfg4).await);
    c.settle().await;
    // The object is busy, calls from n1 and n2 queue up, and n3 starts
    // handing the shard to n4; then n4 dies before it got anything.
    let hold = c.node("n1").send("hold", &on3);
    assert_eq!(c.node("n3").cmd("holding", "").await, "ok");
    const CALLS: u64 = 20;
    let mut loads = Vec::new();
    for node in ["n1", "n2"] {
        loads.push((node, c.node(node).send("load", &format!("{on3} {CALLS}"))));
    }
    let handoff = c.node("n3").send("handoff", &format!("{shard3} n4"));
    assert_eq!(c.node("n3").cmd("moving", &shard3.to_string()).await, "ok");
    c.nodes.retain(|n| n.id != "n4"); // SIGKILL
    assert_eq!(c.node("n3").cmd("release", "").await, "ok");
    let (ran_on, _) = ok_total(&c.node("n1").wait_line(&format!("reply {hold} ")).await);
    assert_eq!(ran_on, "n3");
    // The copy gets no answer: the hand-off is called off, n3 serves on
    // and runs the calls that waited.
    let r = c.node("n3").wait_line(&format!("reply {handoff} ")).await;
    assert!(r.starts_with("err handoff "), "{r}");
    for (node, req) in loads {
        let r = c.node(node).wait_line(&format!("reply {req} ")).await;
        assert!(r.starts_with(&format!("ok {CALLS} ")), "{node}: {r}");
    }
    let (ran_on, total) = ok_total(&c.node("n2").cmd("get", &on3).await);
    assert_eq!((ran_on.as_str(), total), ("n3", 2 * CALLS));
    assert_eq!(c.violations(), "");
}
