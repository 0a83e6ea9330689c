//! The cluster end to end: a real etcd and three nodes as separate
//! processes (`cluster_harness`). Without an `etcd` binary on the PATH the
//! tests say why and return; CI installs Debian's `etcd-server`.

mod cluster_harness;

use cluster_harness::*;

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
    let (on3, shard3, _) = object_on(&mut c, "n3", "kill").await;
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
    // Settled views may name n3 before it has re-claimed the shard.
    assert_eq!(c.node("n3").cmd("serving", &shard3.to_string()).await, "ok");
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
    // Until n3 has read the new owner, it answers Unavailable (the owner it
    // knows is down); wait for its view, not for time.
    assert_eq!(
        c.node("n3").cmd("owned", &format!("{shard} n2")).await,
        "ok"
    );
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
    // Once n1 is back, calls through it reach the new owner (once n1 has
    // read it: its view from before the pause named itself).
    c.settle().await;
    assert_eq!(
        c.node("n1").cmd("owned", &format!("{shard} n2")).await,
        "ok"
    );
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
