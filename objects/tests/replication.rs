//! Replicated shards end to end: a real etcd and three nodes as separate
//! processes (`cluster_harness`), R = 1. Without an `etcd` binary on the
//! PATH the tests say why and return; CI installs Debian's `etcd-server`.

mod cluster_harness;

use cluster_harness::*;

/// The follower of `shard`, as its primary `primary` knows it.
async fn follower_of(c: &mut Cluster3, primary: &str, shard: u32) -> String {
    let r = c.node(primary).cmd("followers", &shard.to_string()).await;
    let w: Vec<&str> = r.split_whitespace().collect();
    assert_eq!(w.len(), 2, "one follower: {r}");
    assert_eq!(w[0], "ok", "{r}");
    w[1].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_on_the_follower_and_a_lost_follower_is_replaced() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    // Writes made before replication: the followers' copies hold them.
    let (name, shard, _) = object_on(&mut c, "n1", "repl").await;
    assert_eq!(
        ok_total(&c.nodes[1].cmd("call", &format!("{name} 2")).await).1,
        2
    );

    assert_eq!(c.nodes[0].cmd("replicas", "1").await, "ok");
    for n in &mut c.nodes {
        assert_eq!(n.cmd("replicated", "1").await, "ok", "{}", n.id);
    }
    let f = follower_of(&mut c, "n1", shard).await;
    assert_ne!(f, "n1");
    assert_eq!(c.node(&f).cmd("stored", &name).await, "ok 2", "the copy");

    // Every acknowledged write is durable on the follower by the time the
    // caller hears of it (the output gate spans the configuration).
    for i in 1..=20 {
        let (ran, total) = ok_total(&c.nodes[1].cmd("call", &format!("{name} 1")).await);
        assert_eq!((ran.as_str(), total), ("n1", 2 + i));
        assert_eq!(
            c.node(&f).cmd("stored", &name).await,
            format!("ok {}", 2 + i),
            "write {i} acknowledged before {f} held it"
        );
    }

    // The follower dies (SIGKILL). The primary removes it and serves on:
    // the next write is acknowledged, and it is not on the dead node.
    let cfg = c.node(&f).cfg.clone();
    c.nodes.retain(|n| n.id != f);
    let (ran, total) = ok_total(&c.nodes[0].cmd("call", &format!("{name} 1")).await);
    assert_eq!((ran.as_str(), total), ("n1", 23));
    // The other node catches up and becomes the follower; it holds every
    // acknowledged write.
    assert_eq!(c.node("n1").cmd("replicated", "1").await, "ok");
    let g = follower_of(&mut c, "n1", shard).await;
    assert!(g != f && g != "n1", "{g}");
    assert_eq!(c.node(&g).cmd("stored", &name).await, "ok 23");

    // The dead node comes back with its data dir. With R = 2 it catches
    // up and rejoins: every replica then holds the same.
    c.nodes.push(Node::spawn(cfg).await);
    c.settle().await;
    assert_eq!(c.nodes[0].cmd("replicas", "2").await, "ok");
    assert_eq!(c.node("n1").cmd("replicated", "2").await, "ok");
    let (_, total) = ok_total(&c.nodes[2].cmd("call", &format!("{name} 1")).await);
    assert_eq!(total, 24);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(c.node(n).cmd("stored", &name).await, "ok 24", "{n}");
    }
    // The shard's whole export is the same on every replica.
    let primary = c.node("n1").cmd("dump", &shard.to_string()).await;
    assert!(primary.contains(":total="), "{primary}");
    for n in ["n2", "n3"] {
        assert_eq!(
            c.node(n).cmd("dump", &shard.to_string()).await,
            primary,
            "{n}"
        );
    }
    assert_eq!(c.violations(), "");
}

/// R = 1 on every shard, every node leading with its follower in place.
async fn replicated(c: &mut Cluster3) {
    assert_eq!(c.nodes[0].cmd("replicas", "1").await, "ok");
    for n in &mut c.nodes {
        assert_eq!(n.cmd("replicated", "1").await, "ok", "{}", n.id);
    }
}

/// The number of calls that succeeded before a `load` failed, from its
/// reply (`err <kind> after <i>: …`), or all of them.
fn loaded_before_failure(reply: &str) -> u64 {
    if let Some(rest) = reply.strip_prefix("ok ") {
        return rest
            .split_whitespace()
            .next()
            .expect("n")
            .parse()
            .expect("n");
    }
    let after = reply
        .split(" after ")
        .nth(1)
        .unwrap_or_else(|| panic!("{reply}"));
    after
        .split(':')
        .next()
        .expect("i")
        .parse()
        .unwrap_or_else(|_| panic!("{reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_s_follower_takes_over_with_every_acknowledged_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    replicated(&mut c).await;
    let (name, shard, _) = object_on(&mut c, "n3", "failover").await;
    let f = follower_of(&mut c, "n3", shard).await;
    let client = if f == "n1" { "n2" } else { "n1" };
    for i in 1..=10 {
        let (_, total) = ok_total(&c.node(client).cmd("call", &format!("{name} 1")).await);
        assert_eq!(total, i);
    }
    // A burst of calls from the client, one after another as a chat client
    // sends; the primary is killed (SIGKILL) in the middle of it.
    let req = c.node(client).send("load", &format!("{name} 100000"));
    c.nodes.retain(|n| n.id != "n3");
    let r = c.node(client).wait_line(&format!("reply {req} ")).await;
    let acked = 10 + loaded_before_failure(&r);
    assert!(r.starts_with("err "), "the burst outlived its primary: {r}");
    // Its follower takes over: the shard is served again, by it, holding
    // every acknowledged write (at most the one call in flight at the kill
    // also landed, unacknowledged).
    let (ran, total) = ok_total(&c.node(client).cmd("callretry", &format!("{name} 1")).await);
    assert_eq!(ran, f, "the follower serves the shard");
    assert!(
        total == acked + 1 || total == acked + 2,
        "acknowledged {acked}, then the first call after the failover counted {total}"
    );
    // It is the primary now; with the third node it has a follower again,
    // which holds the same.
    assert_eq!(c.node(&f).cmd("replicated", "1").await, "ok");
    let g = follower_of(&mut c, &f, shard).await;
    let (_, again) = ok_total(&c.node(client).cmd("call", &format!("{name} 1")).await);
    assert_eq!(again, total + 1);
    assert_eq!(c.node(&g).cmd("stored", &name).await, format!("ok {again}"));
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_that_resumes_after_a_failover_acknowledges_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    replicated(&mut c).await;
    let (name, shard, _) = object_on(&mut c, "n3", "fence").await;
    let f = follower_of(&mut c, "n3", shard).await;
    let client = if f == "n1" { "n2" } else { "n1" };
    let (_, before) = ok_total(&c.node(client).cmd("call", &format!("{name} 5")).await);
    assert_eq!(before, 5);
    // A call holds the object on n3 (it will write when released), and
    // one holds another object there (it will read); n3 is paused past
    // its lease.
    let (other, _, _) = object_on(&mut c, "n3", "fence-read").await;
    let held = c.node(client).send("holdadd", &format!("{name} 100"));
    let held_read = c.node(client).send("hold", &other);
    assert_eq!(c.node("n3").cmd("holding", "2").await, "ok");
    signal(&c.node("n3").child, "-STOP");
    assert_eq!(c.node(client).cmd("gone", "n3").await, "ok");
    // The follower takes over and counts on from what was acknowledged.
    let (ran, total) = ok_total(&c.node(client).cmd("callretry", &format!("{name} 1")).await);
    assert_eq!((ran.as_str(), total), (f.as_str(), before + 1));
    // n3 resumes and learns it no longer leads the shard; then the held
    // call writes there: the write is never acknowledged (n3 is fenced
    // off the shard, and its follower is the new primary and takes
    // nothing from it), so its caller gets an error.
    signal(&c.node("n3").child, "-CONT");
    assert_eq!(
        c.node("n3").cmd("notleading", &shard.to_string()).await,
        "ok"
    );
    assert_eq!(c.node("n3").cmd("release", "").await, "ok");
    assert_eq!(c.node("n3").cmd("release", "").await, "ok");
    let r = c.node(client).wait_line(&format!("reply {held} ")).await;
    assert!(r.starts_with("err "), "the old primary acknowledged: {r}");
    // Nor does it answer the read it ran across the pause (its shard may
    // have changed on the new primary meanwhile).
    let r = c
        .node(client)
        .wait_line(&format!("reply {held_read} "))
        .await;
    assert!(
        r.starts_with("err "),
        "the old primary answered a read: {r}"
    );
    // The shard's history is the new primary's: the held call's write is
    // not in it.
    let (ran, total) = ok_total(&c.node(client).cmd("call", &format!("{name} 1")).await);
    assert_eq!((ran.as_str(), total), (f.as_str(), before + 2));
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_handed_to_its_own_follower_keeps_every_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    replicated(&mut c).await;
    let (name, shard, _) = object_on(&mut c, "n1", "move").await;
    for i in 1..=5 {
        let (_, total) = ok_total(&c.nodes[2].cmd("call", &format!("{name} 1")).await);
        assert_eq!(total, i);
    }
    // The primary hands the shard to its follower: the new owner's copy is
    // the hand-off's, and the old owner's removal of its own copy
    // afterwards reaches no one.
    let f = follower_of(&mut c, "n1", shard).await;
    let r = c.node("n1").cmd("handoff", &format!("{shard} {f}")).await;
    assert!(r.starts_with(&format!("ok {f} ")), "{r}");
    let (ran, total) = ok_total(&c.nodes[2].cmd("callretry", &format!("{name} 1")).await);
    assert_eq!((ran.as_str(), total), (f.as_str(), 6));
    assert_eq!(c.node(&f).cmd("stored", &name).await, "ok 6");
    // It gets a follower again, which catches up by copy.
    assert_eq!(c.node(&f).cmd("replicated", "1").await, "ok");
    let g = follower_of(&mut c, &f, shard).await;
    let (_, total) = ok_total(&c.nodes[2].cmd("call", &format!("{name} 1")).await);
    assert_eq!(total, 7);
    assert_eq!(c.node(&g).cmd("stored", &name).await, "ok 7");
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_on_a_killed_primary_runs_on_its_follower() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut c) = Cluster3::start(4, 1500).await else {
        return;
    };
    replicated(&mut c).await;
    let (name, shard, _) = object_on(&mut c, "n3", "alarm").await;
    let f = follower_of(&mut c, "n3", shard).await;
    let client = if f == "n1" { "n2" } else { "n1" };
    assert_eq!(
        ok_total(&c.node(client).cmd("call", &format!("{name} 1")).await).1,
        1
    );
    // The alarm is set (acknowledged: durable on the follower too), then
    // the primary is killed before it is due.
    let (ran, _) = ok_total(&c.node(client).cmd("alarm", &format!("{name} 6")).await);
    assert_eq!(ran, "n3");
    c.nodes.retain(|n| n.id != "n3");
    // The follower takes over and runs the alarm: once.
    let r = c.node(client).cmd("alarmed", &name).await;
    assert_eq!(r, format!("ok {f} 1001"), "{r}");
    let (ran, total) = ok_total(&c.node(client).cmd("call", &format!("{name} 1")).await);
    assert_eq!((ran.as_str(), total), (f.as_str(), 1002));
    assert_eq!(c.violations(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_go_to_another_zone_than_their_primary_s() {
    let _one = ONE_AT_A_TIME.lock().await;
    // n1 and n2 share a zone; n3 is alone in another.
    let zones = [Some("za"), Some("za"), Some("zb")];
    let Some(mut c) = Cluster3::start_in(4, 1500, false, zones).await else {
        return;
    };
    replicated(&mut c).await;
    let zone = |n: &str| if n == "n3" { "zb" } else { "za" };
    let mut led = 0;
    for n in ["n1", "n2", "n3"] {
        let r = c.node(n).cmd("leading", "").await;
        let mut w = r.split_whitespace();
        assert_eq!(w.next(), Some("ok"), "{r}");
        for entry in w {
            let (shard, followers) = entry.split_once(':').expect("shard:followers");
            assert_eq!(followers.split(',').count(), 1, "{n} shard {shard}: {r}");
            assert_ne!(
                zone(followers),
                zone(n),
                "{n} leads shard {shard} with a follower in its own zone: {r}"
            );
            led += 1;
        }
    }
    assert_eq!(led, SHARDS, "every shard led once, with its follower");
    assert_eq!(c.violations(), "");
}
