//! Typed methods (`Method`, `Handler`, `Stub::ask`): several request types
//! per object, each with its own reply, in E-order across types, with
//! the same reset and output-gate rules as any event. (That a reply type
//! cannot be mismatched is checked by the `compile_fail` doc tests on
//! `objects::Handler`.)

use std::sync::Arc;
use std::time::Duration;

use objects::{BoxError, Context, Handler, Method, Object, Result, Runtime};
use serde::{Deserialize, Serialize};

struct Ledger {
    log: Vec<String>,
    /// Notified when `Hang` starts.
    hanging: Arc<tokio::sync::Notify>,
}

#[derive(Serialize, Deserialize)]
struct Deposit(u64);
impl Method for Deposit {
    /// The balance after it.
    type Reply = u64;
}

#[derive(Serialize, Deserialize)]
struct History;
impl Method for History {
    type Reply = Vec<String>;
}

#[derive(Serialize, Deserialize)]
struct Fail;
impl Method for Fail {
    type Reply = ();
}

#[derive(Serialize, Deserialize)]
struct Hang;
impl Method for Hang {
    type Reply = ();
}

impl Object for Ledger {
    type Env = tokio::sync::Notify;
    type Call = ();
    type Reply = ();

    async fn new(_ctx: &mut Context, env: Arc<Self::Env>) -> Result<Self, BoxError> {
        Ok(Ledger {
            log: Vec::new(),
            hanging: env,
        })
    }
}

impl Handler<Deposit> for Ledger {
    async fn handle(&mut self, ctx: &mut Context, Deposit(n): Deposit) -> Result<u64, BoxError> {
        let balance = ctx.storage().get::<u64>("balance")?.unwrap_or(0) + n;
        ctx.storage().put("balance", &balance)?;
        self.log.push(format!("deposit {n}"));
        Ok(balance)
    }
}

impl Handler<History> for Ledger {
    async fn handle(&mut self, _ctx: &mut Context, _: History) -> Result<Vec<String>, BoxError> {
        self.log.push("history".into());
        Ok(self.log.clone())
    }
}

impl Handler<Fail> for Ledger {
    async fn handle(&mut self, ctx: &mut Context, _: Fail) -> Result<(), BoxError> {
        ctx.storage().put("balance", &1_000_000u64)?;
        Err("refused".into())
    }
}

impl Handler<Hang> for Ledger {
    async fn handle(&mut self, _ctx: &mut Context, _: Hang) -> Result<(), BoxError> {
        self.hanging.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn open(dir: &std::path::Path) -> Runtime {
    Runtime::builder().data_dir(dir).open().expect("open")
}

#[tokio::test]
async fn methods_of_one_stub_run_in_the_order_asked_whatever_their_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt
        .namespace::<Ledger>("ledgers", tokio::sync::Notify::new())
        .expect("ns");
    let stub = ns.get_by_name("a");
    // Asked in this order, awaited in reverse.
    let d1 = stub.ask(Deposit(5));
    let h1 = stub.ask(History);
    let d2 = stub.ask(Deposit(7));
    let h2 = stub.ask(History);
    let later: Vec<String> = h2.await.expect("history");
    let second: u64 = d2.await.expect("deposit");
    let earlier: Vec<String> = h1.await.expect("history");
    let first: u64 = d1.await.expect("deposit");
    assert_eq!((first, second), (5, 12));
    assert_eq!(earlier, vec!["deposit 5", "history"]);
    assert_eq!(later, vec!["deposit 5", "history", "deposit 7", "history"]);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_failing_method_resets_the_object_and_keeps_its_writes_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt
        .namespace::<Ledger>("ledgers", tokio::sync::Notify::new())
        .expect("ns");
    let stub = ns.get_by_name("a");
    assert_eq!(stub.ask(Deposit(3)).await.expect("deposit"), 3);
    let err = stub.ask(Fail).await.expect_err("fails");
    assert!(err.is_reset(), "{err:?}");
    // The failed write is gone; the fresh instance has an empty log.
    assert_eq!(stub.ask(Deposit(1)).await.expect("deposit"), 4);
    assert_eq!(
        stub.ask(History).await.expect("history"),
        vec!["deposit 1", "history"]
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_method_past_the_time_limit_answers_its_caller_with_the_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt
        .namespace_with::<Ledger>(
            "ledgers",
            tokio::sync::Notify::new(),
            &objects::NamespaceOptions::default().with_event_time_limit(Duration::from_secs(1)),
        )
        .expect("ns");
    let stub = ns.get_by_name("a");
    let hang = tokio::spawn(stub.ask(Hang));
    ns.env().notified().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = hang.await.expect("join").expect_err("timed out");
    assert!(err.is_reset(), "{err:?}");
    assert!(err.to_string().contains("time limit of 1s"), "{err}");
    rt.shutdown().await;
}
