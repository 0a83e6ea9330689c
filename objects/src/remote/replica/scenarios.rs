//! Scripted runs of the replication model (`tests.rs`): a failover end to
//! end, and the interleavings the random search found hard to reach, kept
//! as fixed cases so that breaking their rule fails at once.

use super::tests::{Msg, NODES, Role, World, name};
use super::*;

/// Delivers the first message `pick` accepts (checking after it).
fn deliver_where(w: &mut World, pick: impl Fn(&Msg) -> bool) {
    let k = w
        .net
        .iter()
        .position(pick)
        .expect("such a message is in flight");
    let m = w.net.remove(k);
    w.deliver(m);
    w.release_all();
    w.check();
}

fn deliver_all(w: &mut World) {
    while let Some(m) = w.net.pop() {
        w.deliver(m);
        w.release_all();
        w.check();
    }
}

fn l(epoch: u64, seq: u64) -> Label {
    Label { epoch, seq }
}

/// The model is not vacuous: a quiet run releases, a crash of the primary
/// followed by a promotion keeps what was released, and the new primary
/// releases its own groups.
#[test]
fn a_failover_keeps_every_released_group() {
    let mut w = World::new(2);
    for _ in 0..3 {
        w.commit(0);
        deliver_all(&mut w);
        for i in 0..NODES {
            w.sync(i);
        }
        deliver_all(&mut w);
    }
    assert_eq!(w.released.len(), 3);
    // A fourth group reaches n1 only; then the primary dies.
    w.commit(0);
    w.net.retain(|m| matches!(m, Msg::Append { to: 1, .. }));
    deliver_all(&mut w);
    w.sync(1);
    w.crash(0);
    w.net.clear();
    // n2 takes over (it lacks group 4): n1 holds a group n2 never had.
    w.promote(2);
    deliver_all(&mut w);
    assert!(matches!(w.nodes[2].role, Role::Primary(_)));
    assert_eq!(w.etcd.epoch, 2);
    w.commit(2); // the barrier
    deliver_all(&mut w);
    w.sync(2);
    deliver_all(&mut w);
    // n1 refused (diverged): n2 removes it, then releases alone.
    w.tick(2);
    deliver_all(&mut w);
    assert_eq!(w.etcd.followers, Vec::<String>::new());
    w.release_all();
    assert!(matches!(&w.nodes[2].role, Role::Primary(p) if p.ready()));
    // n1 learns it is out, catches up by copy and is added back.
    w.refresh(1);
    deliver_all(&mut w);
    w.tick(2);
    deliver_all(&mut w);
    assert_eq!(w.etcd.followers, vec![name(1)]);
    assert_eq!(w.nodes[1].applied, w.nodes[2].applied);
    assert_eq!(w.released.len(), 4, "three of n0, the barrier of n2");
    w.check();
}

/// A copy asked for before a restart arrives after the node installed a
/// newer one and acknowledged it: installing the old one would undo a
/// released group that the primary believes the node holds.
#[test]
fn a_late_copy_of_an_earlier_request_is_not_installed() {
    let mut w = World::new(1);
    w.promote(1);
    deliver_where(&mut w, |m| matches!(m, Msg::Decided { .. }));
    assert!(matches!(w.nodes[1].role, Role::Primary(_)));
    // n0 comes back outside the configuration and asks for a copy (1).
    w.crash(0);
    w.restart(0);
    deliver_where(&mut w, |m| matches!(m, Msg::CatchUp { .. }));
    // n1 commits and releases alone; n0 asks again (2) and gets it.
    w.commit(1);
    w.sync(1);
    w.release_all();
    w.refresh(0);
    deliver_where(&mut w, |m| matches!(m, Msg::CatchUp { .. }));
    deliver_where(&mut w, |m| matches!(m, Msg::Copy { session: 2, .. }));
    assert_eq!(w.nodes[0].applied, vec![l(2, 1)]);
    // n0 restarts (asking a third time); the first copy turns up now.
    w.crash(0);
    w.restart(0);
    deliver_where(&mut w, |m| matches!(m, Msg::Copy { session: 1, .. }));
    assert_eq!(
        w.nodes[0].applied,
        vec![l(2, 1)],
        "the late copy was ignored"
    );
    // Its acknowledgement of group 1 was true and stays true: n1 adds it.
    while let Some(k) = w.net.iter().position(|m| matches!(m, Msg::Ack { .. })) {
        let m = w.net.remove(k);
        w.deliver(m);
    }
    w.tick(1);
    deliver_where(&mut w, |m| matches!(m, Msg::Decided { .. }));
    assert_eq!(w.etcd.followers, vec![name(0)]);
    w.check();
}

/// etcd's late answer to an earlier proposal (whose outcome the primary
/// learned by reading etcd) arrives while a newer proposal that lost is
/// pending: it must not install the newer one.
#[test]
fn a_late_answer_to_an_earlier_proposal_changes_nothing() {
    let mut w = World::new(2);
    w.unreachable(0, 2);
    w.tick(0);
    assert_eq!(w.etcd.epoch, 2);
    w.refresh(0);
    // n1 takes over at epoch 3; n0 does not know yet and tries to drop n1.
    w.promote(1);
    deliver_where(&mut w, |m| matches!(m, Msg::Decided { to: 1, .. }));
    w.unreachable(0, 1);
    w.tick(0);
    assert_eq!(w.etcd.primary, name(1), "n0's proposal lost");
    // The answer to n0's first proposal (won) arrives first.
    deliver_where(&mut w, |m| {
        matches!(
            m,
            Msg::Decided {
                to: 0,
                won: true,
                ..
            }
        )
    });
    w.commit(0);
    w.sync(0);
    w.release_all();
    let Role::Primary(p) = &w.nodes[0].role else {
        panic!("n0 is still a primary until it learns otherwise");
    };
    assert_eq!((p.config().epoch, p.released()), (2, 0));
    deliver_where(&mut w, |m| matches!(m, Msg::Decided { to: 0, .. }));
    assert!(matches!(&w.nodes[0].role, Role::Primary(p) if p.deposed()));
}

/// A learner took a group (the shard was empty, so the group followed
/// what it held) while the copy it asked for was lost, and then the
/// primary dropped it for that failed send. It holds the primary's
/// history, so it does not ask for a copy again; its probe tells the
/// primary it is there, the primary answers that it does not count it,
/// and it asks again, catches up and is added.
#[test]
fn a_learner_the_primary_dropped_after_it_caught_up_is_added_again() {
    let mut w = World::new(1);
    w.unreachable(0, 1);
    w.tick(0);
    deliver_all(&mut w);
    assert_eq!(w.etcd.followers, Vec::<String>::new());
    // n2 asks; the copy is lost on the way (its send failed) ...
    w.refresh(2);
    deliver_where(&mut w, |m| matches!(m, Msg::CatchUp { .. }));
    w.net.retain(|m| !matches!(m, Msg::Copy { .. }));
    // ... but the next group reaches it and follows its (empty) history.
    w.commit(0);
    deliver_where(&mut w, |m| matches!(m, Msg::Append { to: 2, .. }));
    assert_eq!(w.nodes[2].applied, vec![l(2, 1)]);
    // The failed send is noticed: the primary drops the learner.
    w.unreachable(0, 2);
    w.tick(0);
    assert!(w.net.is_empty(), "no proposal: {:?}", w.net);
    // Readings of etcd: n2 probes, is told, asks, catches up.
    for _ in 0..3 {
        w.refresh(2);
        deliver_all(&mut w);
        w.sync(0);
        w.sync(2);
        deliver_all(&mut w);
    }
    w.tick(0);
    deliver_all(&mut w);
    assert_eq!(w.etcd.followers, vec![name(2)]);
    assert_eq!(w.nodes[2].applied, w.nodes[0].applied);
    w.check();
}
