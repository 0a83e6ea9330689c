//! The live cap: a namespace over `max_live_objects` asks its idlest
//! objects to leave memory, so a flood of distinct objects cannot keep
//! them all in memory; every call is still answered, and an evicted
//! object keeps its stored state.

use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Object, Result, Runtime};

/// Counts its calls in storage.
struct Counter;

impl Object for Counter {
    type Env = ();
    type Call = ();
    type Reply = u64;

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        Ok(Counter)
    }

    async fn call(&mut self, ctx: &mut Context, _call: ()) -> Result<u64, BoxError> {
        let n = ctx.storage().get::<u64>("n")?.unwrap_or(0) + 1;
        ctx.storage().put("n", &n)?;
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_keeps_at_most_its_cap_of_live_objects() {
    const CAP: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .max_live_objects(CAP)
        .open()
        .expect("runtime");
    let ns = rt.namespace::<Counter>("counters", ()).expect("namespace");
    for i in 0..50 {
        let n = ns
            .get_by_name(&format!("c{i}"))
            .call(())
            .await
            .expect("answered");
        assert_eq!(n, 1);
        // Eviction is asked for at once and happens when the object's task
        // next looks at its mailbox: wait (on yields) until it has. Without
        // the cap nothing leaves before the 70 s idle timeout, and this
        // wait fails.
        let settled = async {
            while ns.live_count() > CAP {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), settled)
            .await
            .expect("back under the cap");
    }
    // An evicted object comes back with its state.
    let again = ns.get_by_name("c0").call(()).await.expect("answered");
    assert_eq!(again, 2);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cap_objects_stay_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("runtime");
    let ns = rt.namespace::<Counter>("counters", ()).expect("namespace");
    for i in 0..20 {
        ns.get_by_name(&format!("c{i}"))
            .call(())
            .await
            .expect("answered");
    }
    assert_eq!(
        ns.live_count(),
        20,
        "the idle timeout (70 s) has not passed"
    );
    rt.shutdown().await;
}
