//! Regression tests for bugs found in review: each failed before its fix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use objects::BoxError;
use objects::{AlarmInfo, Context, ListOptions, Object, Result, Runtime, TokioClock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const T0: u64 = 1_700_000_000_000;

#[derive(Default)]
struct Env {
    fired: std::sync::atomic::AtomicUsize,
}

struct Obj {
    env: Arc<Env>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    /// Set the alarm, then sync (or not).
    AlarmThenSync(u64, bool),
    /// Put, then poll `sync()` once and drop it (a handler bounding its wait).
    PutAndAbandonSync,
    Get,
    /// `put_many` chunks of large values until the event's byte limit.
    PutManyUntilFull,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Value(Option<u64>),
    Filled { failed: bool, visible: usize },
    Unit,
}

impl Object for Obj {
    type Env = Env;
    type Call = Call;
    type Reply = Reply;
    async fn new(_: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        Ok(Obj { env })
    }
    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        Ok(match call {
            Call::AlarmThenSync(at, sync) => {
                ctx.storage()
                    .set_alarm(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at))?;
                if sync {
                    ctx.storage().sync().await?;
                }
                Reply::Unit
            }
            Call::PutAndAbandonSync => {
                ctx.storage().put("k", &7u64)?;
                let _ = ctx.storage().sync().now_or_never();
                Reply::Unit
            }
            Call::Get => Reply::Value(ctx.storage().get("k")?),
            Call::PutManyUntilFull => {
                let big = "x".repeat(120 * 1024);
                let keys: Vec<String> = (0..400).map(|i| format!("k{i:04}")).collect();
                let mut failed = false;
                for chunk in keys.chunks(100) {
                    let entries: Vec<(&str, &String)> =
                        chunk.iter().map(|k| (k.as_str(), &big)).collect();
                    if ctx.storage().put_many(&entries).is_err() {
                        failed = true;
                        break;
                    }
                }
                let visible = ctx.storage().list_bytes(&ListOptions::new())?.len();
                Reply::Filled { failed, visible }
            }
        })
    }
    async fn alarm(&mut self, _: &mut Context, _: AlarmInfo) -> Result<(), BoxError> {
        self.env
            .fired
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

fn open(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .clock(Arc::new(TokioClock::starting_at(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(T0),
        )))
        .open()
        .expect("open")
}

/// An alarm made durable by a `sync()` inside the event reached storage but
/// not the in-memory schedule, so it never fired.
#[tokio::test(start_paused = true)]
async fn an_alarm_set_before_sync_fires() {
    for sync in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = open(dir.path());
        let ns = rt.namespace::<Obj>("o", Env::default()).expect("ns");
        ns.get_by_name("a")
            .call(Call::AlarmThenSync(T0 + 1_000, sync))
            .await
            .expect("set");
        assert_eq!(rt.pending_alarms(), 1, "sync={sync}");
        tokio::time::advance(Duration::from_secs(2)).await;
        rt.alarms_settled().await;
        assert_eq!(
            ns.env().fired.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "sync={sync}"
        );
        rt.shutdown().await;
    }
}

/// A `sync()` dropped after its batch went to the writer let the event's
/// reply out before durability, and a failed commit went unnoticed.
#[tokio::test]
async fn an_abandoned_sync_still_gates_the_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt.namespace::<Obj>("o", Env::default()).expect("ns");
    let s = ns.get_by_name("x");
    rt.inject_commit_failures(1);
    let r = s.call(Call::PutAndAbandonSync).await;
    assert!(r.as_ref().is_err_and(|e| e.is_reset()), "{r:?}");
    assert_eq!(s.call(Call::Get).await.expect("get"), Reply::Value(None));
    // Without a failure the write is durable when the reply arrives.
    s.call(Call::PutAndAbandonSync).await.expect("put");
    assert_eq!(s.call(Call::Get).await.expect("get"), Reply::Value(Some(7)));
    rt.shutdown().await;
}

/// `put_many` hitting the per-event byte limit left part of its entries.
#[tokio::test]
async fn put_many_is_all_or_nothing_at_the_event_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt.namespace::<Obj>("o", Env::default()).expect("ns");
    let r = ns
        .get_by_name("x")
        .call(Call::PutManyUntilFull)
        .await
        .expect("call");
    let Reply::Filled { failed, visible } = r else {
        panic!("{r:?}")
    };
    assert!(failed, "the limit was reached");
    assert_eq!(
        visible % 100,
        0,
        "a failed put_many left {} entries",
        visible % 100
    );
    rt.shutdown().await;
}

/// A socket accepted while shutdown was under way was never closed, so
/// shutdown waited for it forever.
mod shutdown_during_accept {
    use super::*;
    use objects::{Request, Response};

    struct Door {
        gate: Arc<(Notify, Notify)>,
    }

    impl Object for Door {
        type Env = (Notify, Notify);
        type Call = ();
        type Reply = ();
        async fn new(_: &mut Context, gate: Arc<(Notify, Notify)>) -> Result<Self, BoxError> {
            Ok(Door { gate })
        }
        async fn fetch(
            &mut self,
            ctx: &mut Context,
            mut req: Request,
        ) -> Result<Response, BoxError> {
            self.gate.0.notify_one(); // inside the event
            self.gate.1.notified().await; // until shutdown has begun
            match ctx.accept_websocket(&mut req, &[]) {
                Ok((_, resp)) => Ok(resp),
                Err(e) => Ok(http::Response::builder()
                    .status(503)
                    .body(e.to_string().into())
                    .map_err(objects::BoxError::from)?),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = open(dir.path());
        let ns = rt
            .namespace::<Door>("d", (Notify::new(), Notify::new()))
            .expect("ns");
        let gate = ns.env().clone();
        let addr = crate::common::serve(ns.clone(), "d").await;
        let client = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
        gate.0.notified().await;
        let rt2 = rt.clone();
        let shutdown = tokio::spawn(async move { rt2.shutdown().await });
        // Let shutdown begin (it refuses new events at once), then accept.
        while !matches!(
            ns.get_by_name("other").call(()).await,
            Err(objects::Error::ShuttingDown)
        ) {
            tokio::task::yield_now().await;
        }
        gate.1.notify_one();
        tokio::time::timeout(Duration::from_secs(20), shutdown)
            .await
            .expect("shutdown finished")
            .expect("join");
        let _ = client.await;
    }
}
