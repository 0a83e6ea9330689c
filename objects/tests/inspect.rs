//! The read-only inspection API on real LMDB: namespaces, paged object
//! listings, one object's committed entries (decoded), its alarm, and the
//! state figures; refusals for unknown namespaces and foreign ids.

use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Error, Object, Result, Runtime, StoredValue, ViewOptions};

/// Writes what it is told; `Alarm` sets one far ahead.
struct Kv;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Op {
    Json(String, serde_json::Value),
    Bytes(String, Vec<u8>),
    Alarm(u64),
    Nothing,
}

impl Object for Kv {
    type Env = ();
    type Call = Vec<Op>;
    type Reply = ();

    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Kv)
    }

    async fn call(&mut self, ctx: &mut Context, ops: Vec<Op>) -> Result<(), BoxError> {
        for op in ops {
            match op {
                Op::Json(k, v) => ctx.storage().put(&k, &v)?,
                Op::Bytes(k, v) => ctx.storage().put_bytes(&k, &v)?,
                Op::Alarm(t) => ctx
                    .storage()
                    .set_alarm(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t))?,
                Op::Nothing => {}
            }
        }
        Ok(())
    }
}

const LATER: u64 = 4_000_000_000_000;

#[tokio::test]
async fn lists_pages_and_views_committed_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let kv = rt.namespace::<Kv>("kv", ()).expect("kv");
    let _other = rt.namespace::<Kv>("other", ()).expect("other");
    assert_eq!(rt.namespace_names(), ["kv", "other"]);

    let a = kv.get_by_name("alpha");
    a.call(vec![
        Op::Json(
            "msg/1".into(),
            serde_json::json!({"text": "<b>hi</b>", "n": 1}),
        ),
        Op::Bytes("raw/utf8".into(), b"plain text".to_vec()),
        Op::Bytes("raw/bin".into(), vec![0, 0xff, 0x10]),
        Op::Alarm(LATER),
    ])
    .await
    .expect("write alpha");
    kv.get_by_name("beta")
        .call(vec![Op::Json("k".into(), serde_json::json!(2))])
        .await
        .expect("write beta");
    // Live, but stores nothing: listed as live, not stored.
    kv.get_by_name("gamma")
        .call(vec![Op::Nothing])
        .await
        .expect("touch gamma");

    // Pages of one, in id order, cover all three exactly once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = rt.list_objects("kv", after.as_deref(), 1).expect("page");
        assert!(page.objects.len() <= 1);
        seen.extend(page.objects);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let ids: Vec<&str> = seen.iter().map(|o| o.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "id order");
    assert_eq!(seen.len(), 3, "{seen:?}");
    let by_name = |n: &str| {
        seen.iter()
            .find(|o| o.name.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("{n} listed: {seen:?}"))
    };
    assert!(by_name("alpha").stored && by_name("alpha").live);
    assert!(by_name("gamma").live && !by_name("gamma").stored);
    assert_eq!(by_name("beta").sockets, 0);

    // One object: decoded values, the alarm, key order.
    let id = a.id().to_hex();
    let view = rt
        .view_object("kv", &id, &ViewOptions::default())
        .expect("view");
    assert_eq!(view.name.as_deref(), Some("alpha"));
    assert_eq!(view.alarm_ms, Some(LATER));
    assert!(view.live);
    assert!(view.sockets.is_empty());
    assert_eq!(view.next_after, None);
    let keys: Vec<&str> = view.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["msg/1", "raw/bin", "raw/utf8"]);
    match &view.entries[0].1 {
        v @ StoredValue::Json(_) => {
            let j: serde_json::Value = v.decode().expect("json");
            assert_eq!(j["text"], "<b>hi</b>");
        }
        other => panic!("json expected: {other:?}"),
    }
    // What the inspector is sent: each value with its kind.
    let shown = |i: usize| serde_json::to_value(&view.entries[i].1).expect("serialise");
    assert_eq!(shown(0)["kind"], "json");
    assert_eq!(shown(0)["value"]["text"], "<b>hi</b>");
    assert_eq!(
        shown(1),
        serde_json::json!({"kind": "hex", "value": "00ff10"})
    );
    assert_eq!(
        shown(2),
        serde_json::json!({"kind": "text", "value": "plain text"})
    );

    // Prefix and paging.
    let raw = ViewOptions::default()
        .with_prefix(Some("raw/".into()))
        .with_limit(Some(1));
    let first = rt.view_object("kv", &id, &raw).expect("page 1");
    assert_eq!(first.entries.len(), 1);
    assert_eq!(first.next_after.as_deref(), Some("raw/bin"));
    let second = rt
        .view_object("kv", &id, &raw.clone().with_after(first.next_after.clone()))
        .expect("page 2");
    assert_eq!(second.entries[0].0, "raw/utf8");
    assert_eq!(second.next_after, None);

    // State figures.
    let stats = rt.stats();
    let ns = stats
        .namespaces
        .iter()
        .find(|n| n.name == "kv")
        .expect("kv stats");
    assert_eq!(ns.live, 3);
    assert_eq!(ns.hibernated, 0);
    assert_eq!(ns.mailbox_queued, 0);
    assert_eq!(stats.alarms_pending, 1);
    assert!(stats.store_bytes > 0 && stats.store_bytes <= stats.store_map_bytes);
    rt.publish_metrics();

    // Refusals.
    assert!(matches!(
        rt.list_objects("nowhere", None, 10),
        Err(Error::Namespace(..))
    ));
    assert!(matches!(
        rt.view_object("other", &id, &ViewOptions::default()),
        Err(Error::Id(_))
    ));
    assert!(matches!(
        rt.view_object("kv", &"0".repeat(64), &ViewOptions::default()),
        Err(Error::Id(_))
    ));
    assert!(matches!(
        rt.list_objects("kv", Some("xyz"), 10),
        Err(Error::Id(_))
    ));
    rt.shutdown().await;
}
