//! The runtime's contract: ids, stubs and E-order, one event at a time,
//! resets, bounded mailboxes, deadlines, eviction, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use objects::BoxError;
use objects::{Context, Error, Namespace, Object, Result, Runtime};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Default)]
struct Probe {
    constructed: AtomicUsize,
    running: AtomicUsize,
    overlap: AtomicUsize,
    release: Notify,
    entered: Notify,
    logs: OnceLock<Namespace<Log>>,
}

struct Log {
    items: Vec<u64>,
    env: Arc<Probe>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    Append(u64),
    Items,
    Panic,
    Fail,
    Block,
    Ring(String),
    Name,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Len(usize),
    Items(Vec<u64>),
    Name(Option<String>),
    Unit,
}

impl Object for Log {
    type Env = Probe;
    type Call = Call;
    type Reply = Reply;

    async fn new(_ctx: &mut Context, env: Arc<Probe>) -> Result<Self, BoxError> {
        env.constructed.fetch_add(1, Ordering::SeqCst);
        Ok(Log {
            items: Vec::new(),
            env,
        })
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        if self.env.running.fetch_add(1, Ordering::SeqCst) > 0 {
            self.env.overlap.fetch_add(1, Ordering::SeqCst);
        }
        let r = match call {
            Call::Append(i) => {
                tokio::task::yield_now().await;
                self.items.push(i);
                Ok(Reply::Len(self.items.len()))
            }
            Call::Items => Ok(Reply::Items(self.items.clone())),
            Call::Panic => panic!("boom"),
            Call::Fail => Err(BoxError::from("failed on purpose")),
            Call::Block => {
                self.env.entered.notify_one();
                self.env.release.notified().await;
                Ok(Reply::Unit)
            }
            Call::Ring(name) => {
                let logs = self.env.logs.get().expect("set by test");
                let me = ctx.name().unwrap_or_default().to_string();
                // The other object calls us back: a cycle.
                logs.get_by_name(&name).call(Call::Ring(me)).await?;
                Ok(Reply::Unit)
            }
            Call::Name => Ok(Reply::Name(ctx.name().map(str::to_string))),
        };
        self.env.running.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

fn runtime(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .open()
        .expect("open runtime")
}

/// Lets spawned tasks run until `cond` holds (bounded; no wall-clock sleep).
async fn settle(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

// Conformance 18.
#[tokio::test]
async fn ids_are_stable_per_namespace_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hex, unique) = {
        let rt = runtime(dir.path());
        let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
        let other = rt.namespace::<Log>("other", Probe::default()).expect("ns");
        let id = logs.id_from_name("alpha");
        assert_ne!(id, other.id_from_name("alpha"));
        assert_eq!(logs.id_from_string(&id.to_hex()).expect("parse"), id);
        let foreign = other.id_from_name("alpha").to_hex();
        assert!(matches!(
            logs.id_from_string(&foreign),
            Err(Error::Id(objects::IdError::ForeignNamespace(_)))
        ));
        for bad in [
            "",
            "xyz",
            &id.to_hex()[1..],
            &format!("{}z", &id.to_hex()[1..]),
        ] {
            assert!(matches!(
                logs.id_from_string(bad),
                Err(Error::Id(objects::IdError::Malformed))
            ));
        }
        let unique = logs.new_unique_id().expect("unique");
        assert_ne!(unique, logs.new_unique_id().expect("unique"));
        rt.shutdown().await;
        (id.to_hex(), unique.to_hex())
    };
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    assert_eq!(
        logs.id_from_name("alpha").to_hex(),
        hex,
        "stable across restarts"
    );
    assert!(
        logs.id_from_string(&unique).is_ok(),
        "unique ids stay valid"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn an_object_knows_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let r = logs
        .get_by_name("room-7")
        .call(Call::Name)
        .await
        .expect("call");
    assert_eq!(r, Reply::Name(Some("room-7".into())));
    let unique = logs.new_unique_id().expect("id");
    assert_eq!(
        logs.get(&unique).call(Call::Name).await.expect("call"),
        Reply::Name(None)
    );
    let names: Vec<_> = logs
        .live_ids()
        .iter()
        .map(|i| i.name().map(String::from))
        .collect();
    assert!(names.contains(&Some("room-7".to_string())));
    assert_eq!(logs.live_count(), 2);
    rt.shutdown().await;
}

// Conformance 19 (first half) and E-order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_one_stub_arrive_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let stub = logs.get_by_name("ordered");
    // Make all 1,000 calls before awaiting any, then await them in reverse.
    let futures: Vec<_> = (0..1000).map(|i| stub.call(Call::Append(i))).collect();
    for f in futures.into_iter().rev() {
        f.await.expect("append");
    }
    let Reply::Items(items) = stub.call(Call::Items).await.expect("items") else {
        panic!("wrong reply");
    };
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_object_never_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let logs = logs.clone();
        tasks.push(tokio::spawn(async move {
            // A fresh stub per call: no ordering promise, still no overlap.
            for i in 0..50 {
                logs.get_by_name("shared")
                    .call(Call::Append(t * 100 + i))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let probe = logs.env();
    assert_eq!(probe.overlap.load(Ordering::SeqCst), 0);
    let Reply::Items(items) = logs
        .get_by_name("shared")
        .call(Call::Items)
        .await
        .expect("items")
    else {
        panic!()
    };
    assert_eq!(items.len(), 400);
    rt.shutdown().await;
}

#[tokio::test]
async fn panics_and_errors_reset_only_that_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let a = logs.get_by_name("a");
    let b = logs.get_by_name("b");
    a.call(Call::Append(1)).await.expect("a1");
    b.call(Call::Append(2)).await.expect("b1");

    let err = a.call(Call::Panic).await.expect_err("panic resets");
    assert!(err.is_reset(), "{err}");
    assert!(err.to_string().contains("boom"), "{err}");
    // The old stub keeps working (our stubs do not break), and so does a
    // fresh one; both see a fresh instance.
    assert_eq!(
        a.call(Call::Items).await.expect("items"),
        Reply::Items(vec![])
    );
    assert_eq!(
        logs.get_by_name("a")
            .call(Call::Items)
            .await
            .expect("items"),
        Reply::Items(vec![])
    );
    a.call(Call::Append(3)).await.expect("a2");
    let err = a.call(Call::Fail).await.expect_err("error resets");
    assert!(err.is_reset(), "{err}");
    assert!(err.to_string().contains("failed on purpose"), "{err}");
    assert_eq!(
        a.call(Call::Items).await.expect("items"),
        Reply::Items(vec![])
    );
    // The other object kept its in-memory state.
    assert_eq!(
        b.call(Call::Items).await.expect("items"),
        Reply::Items(vec![2])
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_flooded_mailbox_answers_overloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .mailbox_capacity(16)
        .open()
        .expect("open");
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let stub = logs.get_by_name("busy");
    let blocked = stub.call(Call::Block);
    let blocked = tokio::spawn(blocked);
    // Wait until the object is inside the blocking event, so the mailbox
    // holds exactly what we queue next.
    logs.env().entered.notified().await;
    let queued: Vec<_> = (0..16).map(|i| stub.call(Call::Append(i))).collect();
    let mut overloaded = 0;
    for i in 0..1000 {
        if let Err(e) = stub.call(Call::Append(100 + i)).await {
            assert!(e.is_overloaded(), "{e}");
            overloaded += 1;
        }
    }
    assert_eq!(
        overloaded, 1000,
        "every call past the bound is refused at once"
    );
    logs.env().release.notify_one();
    blocked.await.expect("join").expect("blocked call finishes");
    for q in queued {
        q.await.expect("queued calls still run");
    }
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_cycle_ends_in_an_error_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let _ = logs.env().logs.set(logs.clone());
    // a calls b, b calls a back: refused as a cycle (no deadline needed), so
    // b fails and resets, and a fails and resets in turn.
    let err = logs
        .get_by_name("a")
        .call(Call::Ring("b".into()))
        .await
        .expect_err("cycle");
    assert!(err.to_string().contains("call cycle"), "{err}");
    // Both objects work afterwards.
    logs.get_by_name("a")
        .call(Call::Append(1))
        .await
        .expect("a works");
    logs.get_by_name("b")
        .call(Call::Append(1))
        .await
        .expect("b works");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_finishes_hits_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .call_timeout(Duration::from_secs(5))
        .open()
        .expect("open");
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let call = tokio::spawn(logs.get_by_name("stuck").call(Call::Block));
    logs.env().entered.notified().await;
    tokio::time::advance(Duration::from_secs(6)).await;
    let err = call.await.expect("join").expect_err("deadline");
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
    logs.env().release.notify_one();
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_objects_are_evicted_and_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .idle_timeout(Duration::from_secs(70))
        .open()
        .expect("open");
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let n = 10_000;
    let stubs: Vec<_> = (0..n).map(|i| logs.get_by_name(&format!("o{i}"))).collect();
    for s in &stubs {
        s.call(Call::Append(1)).await.expect("call");
    }
    assert_eq!(logs.live_count(), n);
    assert_eq!(logs.env().constructed.load(Ordering::SeqCst), n);
    tokio::time::advance(Duration::from_secs(69)).await;
    settle(|| true).await;
    assert_eq!(logs.live_count(), n, "not idle long enough yet");
    tokio::time::advance(Duration::from_secs(2)).await;
    settle(|| logs.live_count() == 0 && rt.live_objects() == 0).await;
    // The stubs stay valid; calls re-activate with a fresh instance.
    for s in stubs.iter().take(100) {
        assert_eq!(
            s.call(Call::Items).await.expect("call"),
            Reply::Items(vec![])
        );
    }
    assert_eq!(logs.live_count(), 100);
    assert_eq!(logs.env().constructed.load(Ordering::SeqCst), n + 100);
    rt.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_events_and_refuses_new_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    let stub = logs.get_by_name("x");
    let in_flight = tokio::spawn(stub.call(Call::Block));
    logs.env().entered.notified().await;
    let queued = stub.call(Call::Append(1));
    let rt2 = rt.clone();
    let shutting = tokio::spawn(async move { rt2.shutdown().await });
    settle(|| stub.call(Call::Items).now_or_never_is_shutdown()).await;
    logs.env().release.notify_one();
    assert_eq!(
        in_flight.await.expect("join").expect("in-flight finishes"),
        Reply::Unit
    );
    assert!(matches!(queued.await, Err(Error::ShuttingDown)));
    shutting.await.expect("shutdown");
    assert!(matches!(
        logs.get_by_name("y").call(Call::Items).await,
        Err(Error::ShuttingDown)
    ));
}

trait NowOrNever {
    fn now_or_never_is_shutdown(self) -> bool;
}

impl<F: std::future::Future<Output = Result<Reply>>> NowOrNever for F {
    fn now_or_never_is_shutdown(self) -> bool {
        let mut f = std::pin::pin!(self);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        matches!(
            f.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Err(Error::ShuttingDown))
        )
    }
}

#[tokio::test]
async fn dropping_the_runtime_without_shutdown_does_not_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let logs = rt.namespace::<Log>("logs", Probe::default()).expect("ns");
    logs.get_by_name("x")
        .call(Call::Append(1))
        .await
        .expect("call");
}

mod export {
    use super::*;
    use objects::StoredValue;

    struct Doc;

    impl Object for Doc {
        type Env = ();
        type Call = ();
        type Reply = ();
        async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
            Ok(Doc)
        }
        async fn call(&mut self, ctx: &mut Context, (): ()) -> Result<(), BoxError> {
            ctx.storage().put("title", "hello")?;
            ctx.storage().put_bytes("blob", &[0, 1, 2])?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_object_can_be_exported_from_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime(dir.path());
        let docs = rt.namespace::<Doc>("docs", ()).expect("ns");
        let id = docs.id_from_name("d1");
        docs.get(&id).call(()).await.expect("call");
        let all = docs.export(&id).expect("export");
        assert_eq!(
            all,
            vec![
                (
                    "blob".to_string(),
                    StoredValue::Bytes(vec![0u8, 1, 2].into())
                ),
                ("title".to_string(), StoredValue::Json("\"hello\"".into())),
            ]
        );
        assert!(
            docs.export(&docs.id_from_name("none"))
                .expect("export")
                .is_empty()
        );
        rt.shutdown().await;
    }
}
