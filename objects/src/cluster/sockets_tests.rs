//! WebSockets across nodes, with real nodes (runtimes, QUIC with TLS,
//! HTTP front doors, WebSocket clients) on views set by hand: clients
//! connect to any node, their room runs on its owner.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_util::sync::CancellationToken;

use super::node::{Node, attach};
use super::tls::{self, ClusterCa};
use super::transport::Peers;
use crate::remote::shard::{self, Lease, Owner, View};
use crate::{BoxError, Context, Namespace, Object, Runtime};

const SHARDS: u32 = 8;

/// A room: accepts sockets with a tag and a name (from the query), answers
/// commands, tells everyone when someone leaves. Counts its activations.
struct Room;

impl Object for Room {
    type Env = AtomicUsize;
    type Call = ();
    type Reply = ();
    async fn new(_: &mut Context, env: Arc<AtomicUsize>) -> Result<Self, BoxError> {
        env.fetch_add(1, Ordering::SeqCst);
        Ok(Room)
    }
    async fn fetch(
        &mut self,
        ctx: &mut Context,
        mut req: crate::Request,
    ) -> Result<crate::Response, BoxError> {
        let query = req.uri().query().unwrap_or("").to_string();
        let (tag, who) = query.split_once('&').ok_or("want tag&who")?;
        let (ws, resp) = ctx.accept_websocket(&mut req, &[tag])?;
        ctx.set_attachment(ws, &who.to_string())?;
        ctx.send(ws, format!("welcome {who}"));
        Ok(resp)
    }
    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: crate::WebSocket,
        msg: crate::Message,
    ) -> Result<(), BoxError> {
        let crate::Message::Text(t) = msg else {
            return Ok(());
        };
        let (cmd, arg) = t.split_once(' ').unwrap_or((t.as_str(), ""));
        match cmd {
            "echo" => ctx.send(ws, format!("echo {arg}")),
            "count" => {
                let all = ctx.websockets(None).len();
                let tagged = ctx.websockets(Some(arg)).len();
                let who: Option<String> = ctx.attachment(ws)?;
                let tags = ctx.tags(ws)?.join(",");
                ctx.send(
                    ws,
                    format!(
                        "n={all} {arg}={tagged} me={} tags={tags}",
                        who.unwrap_or_default()
                    ),
                );
            }
            "all" => {
                let everyone = ctx.websockets(None);
                ctx.broadcast(everyone, arg);
            }
            "close" => ctx.close(ws, 4000, "asked to"),
            "auto" => ctx.set_auto_response(Some(("ping", "pong")))?,
            "stamped" => {
                let at = ctx.auto_response_timestamp(ws);
                ctx.send(ws, format!("stamped {}", at.is_some()));
            }
            _ => ctx.send(ws, format!("unknown {cmd}")),
        }
        Ok(())
    }
    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: crate::WebSocket,
        close: crate::CloseEvent,
    ) -> Result<(), BoxError> {
        let who: Option<String> = ctx.attachment(ws)?;
        let others: Vec<_> = ctx
            .websockets(None)
            .into_iter()
            .filter(|w| *w != ws)
            .collect();
        ctx.broadcast(
            others,
            format!("left {} {}", who.unwrap_or_default(), close.code),
        );
        Ok(())
    }
}

struct TestNode {
    node: Arc<Node>,
    rt: Runtime,
    rooms: Namespace<Room>,
    quic: SocketAddr,
    http: SocketAddr,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(name: &str, ca: &ClusterCa, secret: [u8; 32]) -> TestNode {
    // Warnings (a socket closed unexpectedly, an edge that did not pause)
    // show in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("objects=warn"))
        .with_test_writer()
        .try_init();
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
        .hibernation_timeout(Duration::from_millis(100))
        .open()
        .expect("open");
    let rooms = rt
        .namespace::<Room>("rooms", AtomicUsize::new(0))
        .expect("namespace");
    let quic = ep.local_addr().expect("addr");
    attach(&node, &rt, ep.clone(), shutdown.clone()).expect("attach");
    // The front door: any room, on any node.
    let door = rooms.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let rooms = door.clone();
        async move {
            let req = crate::buffer_request(req, 1024).await.expect("small");
            match rooms.get_by_name("lobby").fetch(req).await {
                Ok(resp) => resp.map(axum::body::Body::from),
                Err(e) => http::Response::builder()
                    .status(503)
                    .body(axum::body::Body::from(e.to_string()))
                    .expect("response"),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestNode {
        node,
        rt,
        rooms,
        quic,
        http,
        endpoint: ep,
        shutdown,
        _dir: dir,
    }
}

/// Every node knows every other; the lobby's shard is `owner`'s.
fn place_lobby(all: &[&TestNode], owner: &str) {
    let id = all[0].rooms.id_from_name("lobby");
    let shard = shard::shard_of(id.as_bytes(), SHARDS);
    for n in all {
        let mut v = crate::sync::write(&n.node.view);
        for m in all {
            v.members.insert(m.node.me.clone(), m.quic.to_string());
        }
        v.owners.insert(
            shard,
            Owner {
                node: owner.into(),
                epoch: 1,
            },
        );
        if owner == n.node.me {
            v.claimed.insert(shard, 1);
        }
    }
}

/// Nodes a, b and c (their cluster secret filled with `secret`); the
/// lobby is c's.
async fn three_nodes(secret: u8) -> (TestNode, TestNode, TestNode) {
    let ca = ClusterCa::generate().expect("CA");
    let secret = [secret; 32];
    let a = start("a", &ca, secret).await;
    let b = start("b", &ca, secret).await;
    let c = start("c", &ca, secret).await;
    place_lobby(&[&a, &b, &c], "c");
    (a, b, c)
}

/// Nodes a and b (their cluster secret filled with `secret`); the lobby
/// is b's.
async fn two_nodes(secret: u8) -> (TestNode, TestNode) {
    let ca = ClusterCa::generate().expect("CA");
    let secret = [secret; 32];
    let a = start("a", &ca, secret).await;
    let b = start("b", &ca, secret).await;
    place_lobby(&[&a, &b], "b");
    (a, b)
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(n: &TestNode, tag: &str, who: &str) -> Client {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/?{tag}&{who}", n.http))
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    assert_eq!(next_text(&mut ws).await, format!("welcome {who}"));
    ws
}

async fn next_text(ws: &mut Client) -> String {
    match ws.next().await {
        Some(Ok(Ws::Text(t))) => t.as_str().to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn ask(ws: &mut Client, text: &str) -> String {
    ws.send(Ws::text(text)).await.expect("send");
    next_text(ws).await
}

async fn close_code(ws: &mut Client) -> u16 {
    loop {
        match ws.next().await {
            Some(Ok(Ws::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Ws::Close(None))) => return 1005,
            Some(Ok(Ws::Text(_))) => continue,
            other => panic!("expected a Close frame, got {other:?}"),
        }
    }
}

/// Waits (bounded) until `n` holds no live object: the room hibernated.
async fn hibernated(n: &TestNode) {
    let until = Instant::now() + Duration::from_secs(20);
    while n.rt.live_objects() > 0 {
        assert!(Instant::now() < until, "the room never hibernated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_any_node_talk_to_a_room_on_its_owner() {
    let (a, b, c) = three_nodes(7).await;
    let all = [&a, &b, &c];

    // Two clients on a, one on b, one on c (the owner itself).
    let mut a1 = connect(&a, "x", "a1").await;
    let mut a2 = connect(&a, "x", "a2").await;
    let mut b1 = connect(&b, "y", "b1").await;
    let mut c1 = connect(&c, "y", "c1").await;
    assert_eq!(ask(&mut a1, "echo hi").await, "echo hi");
    // The owner sees every socket with its tags and attachment.
    assert_eq!(ask(&mut a1, "count x").await, "n=4 x=2 me=a1 tags=x");
    assert_eq!(ask(&mut b1, "count y").await, "n=4 y=2 me=b1 tags=y");
    // Only the owner ran the room.
    let activations = |n: &TestNode| n.rooms.env().load(Ordering::SeqCst);
    assert_eq!(
        (activations(&a), activations(&b), activations(&c)),
        (0, 0, 1)
    );

    // A broadcast reaches every socket, and crosses once per edge node.
    let (fa, fb) = (a.rt_frames_in(), b.rt_frames_in());
    c1.send(Ws::text("all hello")).await.expect("send");
    for ws in [&mut a1, &mut a2, &mut b1, &mut c1] {
        assert_eq!(next_text(ws).await, "hello");
    }
    assert_eq!(
        a.rt_frames_in() - fa,
        1,
        "one message to a for its two sockets"
    );
    assert_eq!(b.rt_frames_in() - fb, 1);

    // The room hibernates while its sockets stay open; a message from a
    // remote socket wakes it.
    hibernated(&c).await;
    assert_eq!(ask(&mut a2, "echo again").await, "echo again");
    assert_eq!(activations(&c), 2, "woken by the remote socket");
    assert_eq!(
        ask(&mut a2, "count x").await,
        "n=4 x=2 me=a2 tags=x",
        "kept across hibernation"
    );

    // Auto-response: answered on the edge without waking the room; the
    // owner learns when.
    assert_eq!(ask(&mut a1, "stamped").await, "stamped false");
    a1.send(Ws::text("auto")).await.expect("send");
    // The pair reaches each edge ahead of the frames sent after it.
    assert_eq!(ask(&mut a1, "echo set").await, "echo set");
    assert_eq!(ask(&mut b1, "echo set").await, "echo set");
    hibernated(&c).await;
    let before = activations(&c);
    assert_eq!(ask(&mut a1, "ping").await, "pong");
    assert_eq!(ask(&mut b1, "ping").await, "pong");
    assert_eq!(activations(&c), before, "auto-responses woke nothing");
    assert_eq!(ask(&mut a1, "stamped").await, "stamped true");

    // A client closes: the room hears it (and tells the others).
    a2.send(Ws::Close(None)).await.expect("close");
    assert_eq!(next_text(&mut a1).await, "left a2 1005");
    assert_eq!(next_text(&mut b1).await, "left a2 1005");
    assert_eq!(next_text(&mut c1).await, "left a2 1005");
    // The room closes a remote socket: the client gets its Close frame.
    b1.send(Ws::text("close")).await.expect("send");
    assert_eq!(close_code(&mut b1).await, 4000);
    assert_eq!(next_text(&mut a1).await, "left b1 4000");
    assert_eq!(ask(&mut a1, "count x").await, "n=2 x=1 me=a1 tags=x");

    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_answered_moved_is_followed_to_the_owner_named() {
    let (a, b, c) = three_nodes(6).await;
    let all = [&a, &b, &c];
    // a still thinks b owns the lobby; b knows c has it.
    let shard = shard::shard_of(a.rooms.id_from_name("lobby").as_bytes(), SHARDS);
    crate::sync::write(&a.node.view).owners.insert(
        shard,
        Owner {
            node: "b".into(),
            epoch: 0,
        },
    );
    let mut a1 = connect(&a, "x", "a1").await;
    assert_eq!(ask(&mut a1, "echo hi").await, "echo hi");
    assert_eq!(ask(&mut a1, "count x").await, "n=1 x=1 me=a1 tags=x");
    let activations = |n: &TestNode| n.rooms.env().load(Ordering::SeqCst);
    assert_eq!(
        (activations(&b), activations(&c)),
        (0, 1),
        "the room ran on c only"
    );
    // a learned where the lobby is: the next client goes there directly.
    assert_eq!(
        crate::sync::read(&a.node.view).owners[&shard].node,
        "c",
        "a learned the owner"
    );
    let mut a2 = connect(&a, "x", "a2").await;
    a2.send(Ws::text("all both")).await.expect("send");
    assert_eq!(next_text(&mut a1).await, "both");
    assert_eq!(next_text(&mut a2).await, "both");
    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_stops_serving_closes_remote_sockets_with_a_close_frame() {
    let (a, b) = two_nodes(8).await;
    let mut a1 = connect(&a, "x", "a1").await;
    let mut a2 = connect(&a, "x", "a2").await;
    let mut a3 = connect(&a, "x", "a3").await;
    assert_eq!(ask(&mut a1, "echo hi").await, "echo hi");

    // b's lease lapses (as after a pause): the next frame is not run, and
    // its client is told to reconnect.
    crate::sync::write(&b.node.view).lease.renewed_at = None;
    a1.send(Ws::text("echo lost")).await.expect("send");
    assert_eq!(close_code(&mut a1).await, 1012);

    // b shuts down: the sockets it still holds are closed with 1001.
    b.shutdown.cancel();
    b.rt.shutdown().await;
    assert_eq!(close_code(&mut a2).await, 1001);
    assert_eq!(close_code(&mut a3).await, 1001);
    b.endpoint.close(0u32.into(), b"gone");

    // A new client for the lobby on a: its owner cannot be reached.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/?x&late", a.http))
        .await
        .expect_err("no upgrade without the owner");
    assert!(err.to_string().contains("503"), "{err}");
    a.shutdown.cancel();
    a.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_link_closes_the_edge_s_sockets_and_the_owner_hears_of_it() {
    let (a, b) = two_nodes(9).await;
    let all = [&a, &b];
    let mut a1 = connect(&a, "x", "a1").await;
    let mut b1 = connect(&b, "y", "b1").await;
    assert_eq!(ask(&mut b1, "count x").await, "n=2 x=1 me=b1 tags=y");
    // a's QUIC endpoint goes away (as if a were killed): a's client gets a
    // Close frame, and the room on b hears that a1 left. (a could reach no
    // next owner: it closes the sockets at once rather than wait.)
    a.node.set_socket_failover_wait(Duration::ZERO);
    a.endpoint.close(0u32.into(), b"gone");
    assert_eq!(close_code(&mut a1).await, 1012);
    assert_eq!(next_text(&mut b1).await, "left a1 1006");
    assert_eq!(ask(&mut b1, "count x").await, "n=1 x=0 me=b1 tags=y");
    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_follow_their_room_when_it_moves() {
    let Some(server) = crate::testing::etcd::Etcd::start().await else {
        return;
    };
    let mut etcd = super::etcd::Etcd::connect(&[server.url().to_string()], "/t")
        .await
        .expect("etcd");
    let (a, b, c) = three_nodes(5).await;
    let all = [&a, &b, &c];
    let shard = shard::shard_of(a.rooms.id_from_name("lobby").as_bytes(), SHARDS);
    let owned = shard::Claim {
        shard,
        prev: None,
        next: Owner {
            node: "c".into(),
            epoch: 1,
        },
    };
    assert!(etcd.apply(&owned).await.expect("claim"));

    // One client on the new owner-to-be, one elsewhere, one on the owner.
    let mut a1 = connect(&a, "x", "a1").await;
    let mut b1 = connect(&b, "y", "b1").await;
    let mut c1 = connect(&c, "y", "c1").await;
    a1.send(Ws::text("auto")).await.expect("send");
    assert_eq!(ask(&mut a1, "echo set").await, "echo set");
    assert_eq!(ask(&mut b1, "echo set").await, "echo set");
    assert_eq!(ask(&mut a1, "ping").await, "pong");
    let activations = |n: &TestNode| n.rooms.env().load(Ordering::SeqCst);
    assert_eq!(activations(&a), 0, "the room ran on c only");

    // c hands the lobby to a while b1 and c1 talk: every message is
    // answered, before or after the move.
    let node = c.node.clone();
    let moving =
        tokio::spawn(async move { super::handoff::hand_off(&node, &mut etcd, shard, "a").await });
    assert_eq!(ask(&mut b1, "echo during b").await, "echo during b");
    assert_eq!(ask(&mut c1, "echo during c").await, "echo during c");
    let report = moving.await.expect("task").expect("moved");
    assert_eq!((report.to.as_str(), report.epoch), ("a", 2));

    // The sockets stayed open; the room runs on a now, with each socket's
    // tags, attachment and auto-response time.
    assert_eq!(ask(&mut b1, "count y").await, "n=3 y=2 me=b1 tags=y");
    assert_eq!(ask(&mut c1, "count x").await, "n=3 x=1 me=c1 tags=y");
    assert_eq!(ask(&mut a1, "stamped").await, "stamped true");
    // (The messages during the move may have woken it on c before.)
    let on_c = activations(&c);
    assert!(activations(&a) >= 1, "the room ran on a");
    // The old owner's client is heard, and hears a broadcast.
    c1.send(Ws::text("all after")).await.expect("send");
    for ws in [&mut a1, &mut b1, &mut c1] {
        assert_eq!(next_text(ws).await, "after");
    }
    // Auto-responses are still answered where the clients are.
    assert_eq!(ask(&mut b1, "ping").await, "pong");
    assert_eq!(ask(&mut c1, "ping").await, "pong");
    // A close on the old owner reaches the room on the new one.
    c1.send(Ws::Close(None)).await.expect("close");
    assert_eq!(next_text(&mut a1).await, "left c1 1005");
    assert_eq!(next_text(&mut b1).await, "left c1 1005");
    assert_eq!(ask(&mut b1, "count y").await, "n=2 y=1 me=b1 tags=y");
    assert_eq!(activations(&c), on_c, "c ran nothing after the move");
    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

/// Bounds a wait on something the test expects to happen.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_of_a_lost_owner_are_adopted_by_the_next_one() {
    let (a, b, c) = three_nodes(4).await;
    let shard = shard::shard_of(a.rooms.id_from_name("lobby").as_bytes(), SHARDS);
    // Clients on a and b; the room runs on c.
    let mut a1 = connect(&a, "x", "a1").await;
    let mut b1 = connect(&b, "y", "b1").await;
    a1.send(Ws::text("auto")).await.expect("send");
    assert_eq!(ask(&mut a1, "echo set").await, "echo set");
    assert_eq!(ask(&mut b1, "echo set").await, "echo set");
    assert_eq!(ask(&mut a1, "ping").await, "pong");
    let activations = |n: &TestNode| n.rooms.env().load(Ordering::SeqCst);
    assert_eq!((activations(&a), activations(&b)), (0, 0));

    // c is lost at once, as when its process is killed: it runs nothing
    // more (its lease is gone) and its endpoint closes. The edges' links
    // to it end; their sockets stay open.
    let a_lost = a.link_settled("c").await;
    let b_lost = b.link_settled("c").await;
    crate::sync::write(&c.node.view).lease.renewed_at = None;
    c.endpoint.close(0u32.into(), b"killed");
    within("a's link loss", a_lost.cancelled()).await;
    within("b's link loss", b_lost.cancelled()).await;
    // While the room has no owner, a message waits.
    a1.send(Ws::text("echo waited")).await.expect("send");

    // b takes the shard over at the next epoch (as a follower would).
    for n in [&a, &b] {
        let mut v = crate::sync::write(&n.node.view);
        v.members.remove("c");
        v.owners.insert(
            shard,
            Owner {
                node: "b".into(),
                epoch: 2,
            },
        );
        if n.node.me == "b" {
            v.claimed.insert(shard, 2);
        }
    }
    // The waiting message reaches the room on b (once a's socket is
    // adopted; b's own waits for its adoption too), and both sockets are
    // there with their tags, attachments and auto-response state.
    assert_eq!(next_text(&mut a1).await, "echo waited");
    assert_eq!(ask(&mut b1, "echo b").await, "echo b");
    assert_eq!(ask(&mut a1, "count x").await, "n=2 x=1 me=a1 tags=x");
    assert_eq!(ask(&mut b1, "count y").await, "n=2 y=1 me=b1 tags=y");
    assert_eq!(ask(&mut a1, "stamped").await, "stamped true");
    assert_eq!(ask(&mut b1, "ping").await, "pong");
    assert!(activations(&b) >= 1, "the room runs on b");
    // The room hears a close, and broadcasts reach both.
    b1.send(Ws::text("all hi")).await.expect("send");
    assert_eq!(next_text(&mut a1).await, "hi");
    assert_eq!(next_text(&mut b1).await, "hi");
    a1.send(Ws::Close(None)).await.expect("close");
    assert_eq!(next_text(&mut b1).await, "left a1 1005");
    for n in [&a, &b, &c] {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_an_owner_reported_closed_are_not_adopted_back() {
    let (a, b) = two_nodes(3).await;
    let all = [&a, &b];
    let mut a1 = connect(&a, "x", "a1").await;
    let mut b1 = connect(&b, "y", "b1").await;
    assert_eq!(ask(&mut b1, "count x").await, "n=2 x=1 me=b1 tags=y");
    // The link from a is cut on b, which stays the owner: the room hears
    // that a1 left, so a1 is not adopted back when a reconnects; it closes.
    let links = b.node.handoff.links().expect("links");
    let from = crate::sync::lock(&links.from_edges)
        .get("a")
        .cloned()
        .expect("a's link");
    from.cut();
    assert_eq!(next_text(&mut b1).await, "left a1 1006");
    assert_eq!(close_code(&mut a1).await, 1012);
    assert_eq!(ask(&mut b1, "count x").await, "n=1 x=0 me=b1 tags=y");
    for n in all {
        n.shutdown.cancel();
        n.rt.shutdown().await;
    }
}

impl TestNode {
    /// Fires when this node's link to `owner` is lost and settled.
    async fn link_settled(&self, owner: &str) -> CancellationToken {
        let links = self.node.handoff.links().expect("links");
        links
            .uplinks
            .settled(owner)
            .await
            .expect("a link to the owner")
    }

    fn rt_frames_in(&self) -> u64 {
        let links = self.rt.shared().socket_links.get().expect("links");
        links.frames_in()
    }
}
