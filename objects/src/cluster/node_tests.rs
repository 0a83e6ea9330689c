//! Real nodes (runtimes, QUIC with TLS, the request handler) on views
//! set by hand instead of by etcd, to reach states a live cluster
//! passes through only briefly: a sender whose view is stale.

use std::time::Duration;

use super::*;
use crate::cluster::tls::{self, ClusterCa};
use crate::remote::shard::{Lease, Owner};
use crate::{BoxError, Context, Namespace, Object};

const SHARDS: u32 = 8;

/// Answers with the node it runs on.
struct Where(Arc<String>);

impl Object for Where {
    type Env = String;
    /// `true`: never answer (to meet the deadline).
    type Call = bool;
    type Reply = String;
    async fn new(_: &mut Context, env: Arc<String>) -> Result<Self, BoxError> {
        Ok(Where(env))
    }
    async fn call(&mut self, _: &mut Context, hang: bool) -> Result<String, BoxError> {
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(self.0.to_string())
    }
}

/// A typed method: the node it ran on and the number sent.
#[derive(serde::Serialize, serde::Deserialize)]
struct Whence(u32);
impl crate::Method for Whence {
    type Reply = (String, u32);
}
impl crate::Handler<Whence> for Where {
    async fn handle(&mut self, _: &mut Context, w: Whence) -> Result<(String, u32), BoxError> {
        Ok((self.0.to_string(), w.0))
    }
}

/// A typed method whose reply is `()`: it crosses as `null`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Nothing;
impl crate::Method for Nothing {
    type Reply = ();
}
impl crate::Handler<Nothing> for Where {
    async fn handle(&mut self, _: &mut Context, _: Nothing) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A typed method no node accepts.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unlisted;
impl crate::Method for Unlisted {
    type Reply = ();
}
impl crate::Handler<Unlisted> for Where {
    async fn handle(&mut self, _: &mut Context, _: Unlisted) -> Result<(), BoxError> {
        Ok(())
    }
}

struct TestNode {
    node: Arc<Node>,
    ns: Namespace<Where>,
    addr: SocketAddr,
    rt: Runtime,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(name: &str, ca: &ClusterCa, secret: [u8; 32]) -> TestNode {
    start_with(name, ca, secret, Duration::from_secs(30)).await
}

async fn start_with(
    name: &str,
    ca: &ClusterCa,
    secret: [u8; 32],
    call_timeout: Duration,
) -> TestNode {
    let (server, client) = tls::quic_configs(&ca.issue(name).expect("cert")).expect("tls");
    let mut ep =
        quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    ep.set_default_client_config(client);
    let shutdown = CancellationToken::new();
    let mut lease = Lease::new(Duration::from_secs(600), Duration::from_secs(1));
    lease.renewed(Instant::now());
    let node = Arc::new(Node::new(
        name,
        SHARDS,
        View::new(name, SHARDS, lease),
        Peers::new(ep.clone(), shutdown.clone()),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .id_secret(secret)
        .call_timeout(call_timeout)
        .open()
        .expect("open");
    let ns = rt
        .namespace::<Where>("where", name.to_string())
        .expect("namespace");
    ns.accept::<Whence>();
    ns.accept::<Nothing>();
    let addr = ep.local_addr().expect("addr");
    attach(&node, &rt, ep, shutdown.clone()).expect("attach");
    TestNode {
        node,
        ns,
        addr,
        rt,
        shutdown,
        _dir: dir,
    }
}

/// Sets what `n` believes: every node a member, `shard` owned by
/// `owner` at `epoch` (claimed, if that is `n` itself).
fn believe(n: &TestNode, all: &[&TestNode], shard: u32, owner: &str, epoch: u64) {
    let mut v = crate::sync::write(&n.node.view);
    for m in all {
        v.members.insert(m.node.me.clone(), m.addr.to_string());
    }
    v.owners.insert(
        shard,
        Owner {
            node: owner.into(),
            epoch,
        },
    );
    if owner == n.node.me {
        v.claimed.insert(shard, epoch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_is_followed_to_the_owner_a_bounded_number_of_times() {
    let ca = ClusterCa::generate().expect("CA");
    let secret = [9u8; 32];
    let a = start("a", &ca, secret).await;
    let b = start("b", &ca, secret).await;
    let c = start("c", &ca, secret).await;
    let all = [&a, &b, &c];
    let id = a.ns.id_from_name("x");
    let shard = shard::shard_of(id.as_bytes(), SHARDS);

    // a still thinks b owns the shard; b knows c took it.
    believe(&a, &all, shard, "b", 1);
    believe(&b, &all, shard, "c", 2);
    believe(&c, &all, shard, "c", 2);
    let ran_on = a.ns.get(&id).call(false).await.expect("answered");
    assert_eq!(ran_on, "c", "b answered moved and a followed it to c");
    assert_eq!(
        crate::sync::read(&a.node.view).place(shard, Instant::now()),
        Place::Remote {
            node: "c".into(),
            epoch: 2
        },
        "a learned where the shard is"
    );

    // b and c each name the other: a gives up after MAX_MOVES.
    believe(&c, &all, shard, "b", 3);
    let err = a.ns.get(&id).call(false).await.expect_err("no owner found");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("moved"), "{err}");

    // A node whose lease lapsed refuses, and the caller hears why.
    believe(&a, &all, shard, "c", 2);
    crate::sync::write(&c.node.view).lease.renewed_at = None;
    believe(&c, &all, shard, "c", 2);
    let err =
        a.ns.get(&id)
            .call(false)
            .await
            .expect_err("c may not serve");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("lease"), "{err}");

    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

/// Calls the next object named in its path, and says how that went.
struct Relay(Arc<std::sync::OnceLock<Namespace<Relay>>>);

impl Object for Relay {
    type Env = std::sync::OnceLock<Namespace<Relay>>;
    type Call = Vec<String>;
    type Reply = String;
    async fn new(_: &mut Context, env: Arc<Self::Env>) -> Result<Self, BoxError> {
        Ok(Relay(env))
    }
    async fn call(&mut self, _: &mut Context, path: Vec<String>) -> Result<String, BoxError> {
        let Some((next, rest)) = path.split_first() else {
            return Ok("done".into());
        };
        let ns = self.0.get().ok_or("namespace not set")?;
        Ok(match ns.get_by_name(next).call(rest.to_vec()).await {
            Ok(r) => r,
            Err(crate::Error::CallCycle { .. }) => "cycle".into(),
            Err(e) => format!("error: {e}"),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_chain_crosses_nodes_so_cycles_are_refused() {
    let ca = ClusterCa::generate().expect("CA");
    let secret = [6u8; 32];
    let a = start("a", &ca, secret).await;
    let b = start("b", &ca, secret).await;
    let all = [&a, &b];
    let mut relays = Vec::new();
    for n in all {
        let ns =
            n.rt.namespace::<Relay>("relay", std::sync::OnceLock::new())
                .expect("namespace");
        let _ = ns.env().set(ns.clone());
        relays.push(ns);
    }
    // x lives on a, y on b (shards chosen to differ).
    let (x, y) = (
        "x".to_string(),
        (0..)
            .map(|i| format!("y{i}"))
            .find(|name| {
                let sx = shard::shard_of(relays[0].id_from_name("x").as_bytes(), SHARDS);
                shard::shard_of(relays[0].id_from_name(name).as_bytes(), SHARDS) != sx
            })
            .expect("a name in another shard"),
    );
    for (name, owner) in [(&x, "a"), (&y, "b")] {
        let s = shard::shard_of(relays[0].id_from_name(name).as_bytes(), SHARDS);
        for n in all {
            believe(n, &all, s, owner, 1);
        }
    }
    // a → x (on a) → y (on b) → done: a chain of calls across nodes.
    let r = relays[0].get_by_name(&x).call(vec![y.clone()]).await;
    assert_eq!(r.expect("answered"), "done");
    // x → y → x: y, on b, sees x on the chain that came with the call
    // and refuses at once (without the chain, it would wait on x,
    // which waits on it, until the deadline).
    let r = relays[0]
        .get_by_name(&x)
        .call(vec![y.clone(), x.clone()])
        .await;
    assert_eq!(r.expect("answered"), "cycle");
    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

/// Echoes text frames on the WebSockets it accepts.
struct Echo;

impl Object for Echo {
    type Env = ();
    type Call = ();
    type Reply = ();
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Echo)
    }
    async fn fetch(
        &mut self,
        ctx: &mut Context,
        mut req: crate::Request,
    ) -> Result<crate::Response, BoxError> {
        let (_, resp) = ctx.accept_websocket(&mut req, &[])?;
        Ok(resp)
    }
    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: crate::WebSocket,
        msg: crate::Message,
    ) -> Result<(), BoxError> {
        if let crate::Message::Text(t) = msg {
            ctx.send(ws, format!("echo {t}"));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_serving_closes_the_object_s_sockets() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;

    let ca = ClusterCa::generate().expect("CA");
    let b = start("b", &ca, [4u8; 32]).await;
    let echo = b.rt.namespace::<Echo>("echo", ()).expect("namespace");
    let id = echo.id_from_name("room");
    believe(&b, &[&b], shard::shard_of(id.as_bytes(), SHARDS), "b", 1);
    let door = echo.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let echo = door.clone();
        async move {
            let req = crate::buffer_request(req, 1024).await.expect("small");
            let resp = echo.get_by_name("room").fetch(req).await.expect("fetch");
            resp.map(axum::body::Body::from)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("upgrade");
    ws.send(Ws::text("hi")).await.expect("send");
    let got = ws.next().await.expect("a frame").expect("ok");
    assert_eq!(got, Ws::text("echo hi"));

    // The node's lease lapses (as after a pause): the next frame does
    // not run the object here, and the connection ends (the socket
    // task drops it), so the client reconnects to a node that serves.
    crate::sync::write(&b.node.view).lease.renewed_at = None;
    ws.send(Ws::text("again")).await.expect("send");
    match ws.next().await {
        None | Some(Err(_)) | Some(Ok(Ws::Close(_))) => {}
        Some(Ok(other)) => panic!("the object ran on a node that lost it: {other:?}"),
    }
    b.shutdown.cancel();
    b.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_held_by_a_hand_off_run_here_or_hear_why_they_cannot() {
    let ca = ClusterCa::generate().expect("CA");
    let a = start("a", &ca, [4u8; 32]).await;
    let id = a.ns.id_from_name("held");
    let shard = shard::shard_of(id.as_bytes(), SHARDS);
    believe(&a, &[&a], shard, "a", 1);
    let moving = |on: bool| {
        let mut v = crate::sync::write(&a.node.view);
        if on {
            v.moving.insert(shard);
        } else {
            v.moving.remove(&shard);
        }
    };
    // Called off: the held call runs here.
    assert!(a.node.handoff.begin(shard));
    moving(true);
    let call = a.ns.get(&id).call(false);
    assert_eq!(
        a.node.handoff.end(shard, Release::Here, || moving(false)),
        1
    );
    assert_eq!(call.await.expect("ran"), "a");
    // The outcome unknown: the claim is dropped and the held call is
    // told why it cannot run (not dropped as if the runtime stopped).
    assert!(a.node.handoff.begin(shard));
    moving(true);
    let call = a.ns.get(&id).call(false);
    let held = a.node.handoff.end(shard, Release::Again, || {
        moving(false);
        crate::sync::write(&a.node.view).claimed.remove(&shard);
    });
    assert_eq!(held, 1);
    let err = call.await.expect_err("nobody serves it now");
    assert!(err.is_unavailable(), "{err}");
    a.shutdown.cancel();
    a.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_methods_cross_nodes_in_order() {
    let ca = ClusterCa::generate().expect("CA");
    let secret = [6u8; 32];
    let a = start("a", &ca, secret).await;
    let b = start("b", &ca, secret).await;
    let all = [&a, &b];
    let id = a.ns.id_from_name("typed");
    let shard = shard::shard_of(id.as_bytes(), SHARDS);
    believe(&a, &all, shard, "b", 1);
    believe(&b, &all, shard, "b", 1);
    let stub = a.ns.get(&id);
    // Asked through one stub, interleaved with plain calls: each runs
    // on the owner and answers its own type, in the order asked.
    let asks: Vec<_> = (0..50).map(|n| stub.ask(Whence(n))).collect();
    let call = stub.call(false);
    let mut got = Vec::new();
    for ask in asks {
        got.push(ask.await.expect("answered"));
    }
    assert_eq!(call.await.expect("call"), "b");
    let want: Vec<(String, u32)> = (0..50).map(|n| ("b".to_string(), n)).collect();
    assert_eq!(got, want);
    stub.ask(Nothing).await.expect("a reply of () crosses");
    // A method the owner did not accept is refused, naming it; the
    // same method is fine in one process.
    let err = stub.ask(Unlisted).await.expect_err("not accepted on b");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("Unlisted"), "{err}");
    let local = b.ns.get(&id);
    local
        .ask(Unlisted)
        .await
        .expect("local asks need no accept");
    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passed_on_the_owner_is_the_same_error() {
    let ca = ClusterCa::generate().expect("CA");
    let secret = [5u8; 32];
    // The caller waits longer than the owner: the owner's deadline is
    // the one that passes, and its error crosses.
    let a = start_with("a", &ca, secret, Duration::from_secs(60)).await;
    let b = start_with("b", &ca, secret, Duration::from_millis(300)).await;
    let all = [&a, &b];
    let id = a.ns.id_from_name("slow");
    let shard = shard::shard_of(id.as_bytes(), SHARDS);
    believe(&a, &all, shard, "b", 1);
    believe(&b, &all, shard, "b", 1);
    let err = a.ns.get(&id).call(true).await.expect_err("never answered");
    match err {
        crate::Error::DeadlineExceeded { id: got, deadline } => {
            assert_eq!(got, id);
            assert_eq!(deadline, Duration::from_millis(300), "the owner's deadline");
        }
        other => panic!("expected DeadlineExceeded, got {other}"),
    }
    for n in all {
        n.shutdown.cancel();
    }
}
