//! Reopening a data dir right after shutdown, on a multi-thread runtime.

use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Object, Result, Runtime};

struct W;

impl Object for W {
    type Env = ();
    type Call = u32;
    type Reply = ();
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(W)
    }
    async fn call(&mut self, ctx: &mut Context, i: u32) -> Result<(), BoxError> {
        ctx.storage().put("i", &i)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_reopens_right_after_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..50u32 {
        let rt = Runtime::builder()
            .data_dir(dir.path())
            .open()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let ns = rt.namespace::<W>("w", ()).expect("ns");
        let calls: Vec<_> = (0..20)
            .map(|i| ns.get_by_name(&format!("o{i}")).call(round))
            .collect();
        for c in calls {
            c.await.expect("call");
        }
        rt.shutdown().await;
        drop(ns);
        drop(rt);
    }
}
