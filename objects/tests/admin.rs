//! The offline admin API on real LMDB: list, export, import into a fresh
//! dir (every key, value, alarm, name and the id secret come back exactly),
//! backup, and the refusals (dir in use, no store, other secret).

use std::sync::Arc;

use objects::BoxError;
use objects::{
    Admin, AdminError, Context, Entry, Error, ExportFilter, Object, ObjectInfo, Result, Runtime,
    StorageError,
};

/// An object whose calls write what they are told.
struct Writer;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Op {
    /// `put` a JSON value (given as JSON text, parsed into a struct-like
    /// value whose field order matters).
    Json(String, Message),
    Bytes(String, Vec<u8>),
    Alarm(u64),
    Delete(String),
}

/// Fields deliberately not in alphabetical order: a round trip through
/// `serde_json::Value` would reorder them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
struct Message {
    name: String,
    message: String,
    timestamp: u64,
    ratio: f64,
}

impl Object for Writer {
    type Env = ();
    type Call = Vec<Op>;
    type Reply = ();

    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Writer)
    }

    async fn call(&mut self, ctx: &mut Context, ops: Vec<Op>) -> Result<(), BoxError> {
        for op in ops {
            match op {
                Op::Json(k, v) => ctx.storage().put(&k, &v)?,
                Op::Bytes(k, v) => ctx.storage().put_bytes(&k, &v)?,
                Op::Alarm(t) => ctx
                    .storage()
                    .set_alarm(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t))?,
                Op::Delete(k) => {
                    ctx.storage().delete(&k)?;
                }
            }
        }
        Ok(())
    }
}

/// Far enough ahead that no alarm fires during the test.
const LATER: u64 = 4_000_000_000_000;

fn msg(name: &str, n: u64) -> Message {
    Message {
        name: name.into(),
        message: format!("hello {n} \u{e9}\u{1F600} \"quoted\"\n"),
        timestamp: 1_700_000_000_000 + n,
        ratio: n as f64 / 3.0,
    }
}

/// Fills a data dir: named and private objects in two namespaces, JSON and
/// byte values, an alarm-only object, one with more keys than an export
/// page, and one whose only key was deleted (catalogued, no data).
async fn fill(dir: &std::path::Path) -> (String, String) {
    let rt = Runtime::builder().data_dir(dir).open().expect("open");
    let rooms = rt.namespace::<Writer>("rooms", ()).expect("rooms");
    let other = rt.namespace::<Writer>("other", ()).expect("other");
    let general = rooms.get_by_name("general");
    let mut ops: Vec<Op> = (0..300)
        .map(|n| Op::Json(format!("msg/{n:020}"), msg("alice", n)))
        .collect();
    ops.push(Op::Bytes("raw".into(), (0..=255).collect()));
    ops.push(Op::Bytes("empty".into(), Vec::new()));
    ops.push(Op::Alarm(LATER));
    for chunk in ops.chunks(100) {
        general.call(chunk.to_vec()).await.expect("general");
    }
    let private = rooms.new_unique_id().expect("unique");
    rooms
        .get(&private)
        .call(vec![Op::Json("msg/1".into(), msg("bob", 1))])
        .await
        .expect("private");
    other
        .get_by_name("alarm-only")
        .call(vec![Op::Alarm(LATER + 1)])
        .await
        .expect("alarm only");
    other
        .get_by_name("emptied")
        .call(vec![Op::Bytes("k".into(), vec![1])])
        .await
        .expect("emptied 1");
    other
        .get_by_name("emptied")
        .call(vec![Op::Delete("k".into())])
        .await
        .expect("emptied 2");
    rt.shutdown().await;
    // `shutdown` returns once every object task has let go of the store
    // (objects/tests/reopen.rs checks that on a multi-thread runtime), so an
    // `Admin` can open the dir right after the handles are dropped.
    (rooms.id_from_name("general").to_hex(), private.to_hex())
}

fn export_lines(dir: &std::path::Path, filter: &ExportFilter) -> Vec<String> {
    let admin = Admin::open(dir).expect("admin open");
    admin
        .export(filter)
        .expect("export")
        .map(|e| e.and_then(|e| e.to_json_line()).expect("entry"))
        .collect()
}

fn listing(dir: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let admin = Admin::open(dir).expect("admin open");
    let mut out = Vec::new();
    for ns in admin.namespaces().expect("namespaces").keys() {
        for o in admin.objects(ns).expect("objects") {
            out.push((o.namespace, o.id.to_hex(), o.name));
        }
    }
    out
}

#[tokio::test]
async fn export_then_import_into_a_fresh_dir_is_exact() {
    let a = tempfile::tempdir().expect("tempdir");
    let (general, private) = fill(a.path()).await;

    // list
    let list = listing(a.path());
    let admin = Admin::open(a.path()).expect("admin");
    let namespaces = admin.namespaces().expect("namespaces");
    assert_eq!(namespaces.get("rooms"), Some(&2));
    assert_eq!(namespaces.get("other"), Some(&2));
    drop(admin);
    assert!(list.contains(&("rooms".into(), general.clone(), Some("general".into()))));
    assert!(list.contains(&("rooms".into(), private.clone(), None)));
    assert!(
        list.iter()
            .any(|(_, _, n)| n.as_deref() == Some("alarm-only"))
    );
    assert!(list.iter().any(|(_, _, n)| n.as_deref() == Some("emptied")));

    let lines = export_lines(a.path(), &ExportFilter::default());
    // store + 4 objects + 302 + 1 keys + 2 alarms
    assert_eq!(lines.len(), 1 + 4 + 303 + 2, "{lines:#?}");
    assert!(lines[0].starts_with(r#"{"type":"store","format":1,"secret":""#));
    // JSON values are the stored text verbatim, in the struct's field order.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""value":{"name":"alice","message":"hello 0"#)),
        "{:?}",
        &lines[..8]
    );

    // Import into a fresh dir, through the line format.
    let b = tempfile::tempdir().expect("tempdir");
    let mut target = Admin::create(b.path()).expect("create");
    let mut reports = 0;
    let stats = target
        .import(
            lines
                .iter()
                .map(|l| Entry::from_json_line(l).map_err(Error::from)),
            |_| reports += 1,
        )
        .expect("import");
    drop(target);
    assert!(reports >= 1);
    assert_eq!((stats.objects, stats.keys, stats.alarms), (4, 303, 2));

    assert_eq!(export_lines(b.path(), &ExportFilter::default()), lines);
    assert_eq!(listing(b.path()), list);

    // The runtime on the imported dir: same ids for names (the secret came
    // along), the private id still valid, values and alarms intact.
    let rt = Runtime::builder()
        .data_dir(b.path())
        .open()
        .expect("open b");
    let rooms = rt.namespace::<Writer>("rooms", ()).expect("rooms");
    assert_eq!(rooms.id_from_name("general").to_hex(), general);
    let id = rooms.id_from_string(&private).expect("private id valid");
    let stored = rooms.export(&id).expect("export private");
    assert_eq!(stored.len(), 1);
    let all = rooms
        .export(&rooms.id_from_name("general"))
        .expect("general");
    assert_eq!(all.len(), 302);
    assert_eq!(rt.pending_alarms(), 1, "rooms' alarm is loaded");
    rt.shutdown().await;
}

#[tokio::test]
async fn export_filters_by_namespace_id_and_name() {
    let a = tempfile::tempdir().expect("tempdir");
    let (general, private) = fill(a.path()).await;
    let count_objects = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.starts_with(r#"{"type":"object""#))
            .count()
    };
    let by_ns = ExportFilter {
        namespace: Some("other".into()),
        ..ExportFilter::default()
    };
    assert_eq!(count_objects(&export_lines(a.path(), &by_ns)), 2);
    let by_name = ExportFilter {
        name: Some("general".into()),
        ..ExportFilter::default()
    };
    let lines = export_lines(a.path(), &by_name);
    assert_eq!(count_objects(&lines), 1);
    assert!(lines[1].contains(&general));
    let by_id = ExportFilter::default().with_id_hex(&private).expect("hex");
    let lines = export_lines(a.path(), &by_id);
    assert_eq!(lines.len(), 3, "store, object, one key: {lines:#?}");
}

#[tokio::test]
async fn admin_refuses_a_dir_in_use_and_a_missing_store() {
    let a = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder().data_dir(a.path()).open().expect("open");
    let err = Admin::open(a.path()).expect_err("in use");
    assert!(
        matches!(err, Error::Storage(StorageError::DataDirInUse(_))),
        "{err}"
    );
    rt.shutdown().await;
    drop(rt);
    // Once the runtime is gone the dir opens.
    drop(Admin::open(a.path()).expect("free now"));

    let empty = tempfile::tempdir().expect("tempdir");
    let err = Admin::open(empty.path().join("nothing")).expect_err("no store");
    assert!(matches!(err, Error::Admin(AdminError::NoStore(_))), "{err}");
    assert!(
        !empty.path().join("nothing").exists(),
        "open creates nothing"
    );
}

#[tokio::test]
async fn import_refuses_another_stores_secret_into_a_dir_with_objects() {
    let a = tempfile::tempdir().expect("tempdir");
    fill(a.path()).await;
    let lines = export_lines(a.path(), &ExportFilter::default());
    let b = tempfile::tempdir().expect("tempdir");
    let mut target = Admin::create(b.path()).expect("create");
    target
        .import(
            [Ok::<_, Error>(Entry::Key {
                object: ObjectInfo::new("rooms", [5; 32], None),
                key: "k".into(),
                value: objects::StoredValue::Json("1".into()),
            })],
            |_| {},
        )
        .expect("seed");
    let err = target
        .import(
            lines
                .iter()
                .map(|l| Ok::<_, Error>(Entry::from_json_line(l)?)),
            |_| {},
        )
        .expect_err("other secret");
    assert!(
        matches!(err, Error::Admin(AdminError::SecretMismatch)),
        "{err}"
    );
    // Out-of-limit entries are refused before anything is written.
    let err = target
        .import(
            [Ok::<_, Error>(Entry::Alarm {
                object: ObjectInfo::new("rooms", [5; 32], None),
                at_ms: 0,
            })],
            |_| {},
        )
        .expect_err("alarm 0");
    assert!(matches!(err, Error::Admin(AdminError::Invalid(_))), "{err}");
}

#[tokio::test]
async fn offline_and_live_backups_restore() {
    let a = tempfile::tempdir().expect("tempdir");
    fill(a.path()).await;
    let lines = export_lines(a.path(), &ExportFilter::default());
    let out = tempfile::tempdir().expect("tempdir");

    // Offline, through an Admin.
    let offline = out.path().join("offline");
    Admin::open(a.path())
        .expect("admin")
        .backup(&offline)
        .expect("backup");
    assert_eq!(export_lines(&offline, &ExportFilter::default()), lines);

    // Read-only, without the LOCK (here nothing else has the dir open; the
    // binary's test runs it beside a live server).
    let live = out.path().join("live");
    Admin::backup_live(a.path(), &live).expect("live backup");
    assert_eq!(export_lines(&live, &ExportFilter::default()), lines);
    let err = Admin::backup_live(a.path(), &live).expect_err("target exists");
    assert!(
        matches!(err, Error::Storage(StorageError::BackupTargetExists(_))),
        "{err}"
    );
}
