//! The messages of replication as a node handles them (the other half of
//! `replicate.rs`): groups a follower applies and acknowledges,
//! acknowledgements and refusals a primary counts, and the catch-up copy a
//! learner asks for, which the primary reads in one transaction and sends
//! in chunks.

use std::sync::Arc;
use std::time::Instant;

use super::replicate::{PART_BYTES, Replication, answer, label, mark};
use crate::remote::replica::wire::{
    CopyProgress, MAX_GROUP_BYTES, ReplMessage, Table as WireTable, WireBatch, WireRecord,
};
use crate::remote::replica::{Label, Verdict};
use crate::remote::shard::shard_of;
use crate::storage::replication::{self as store_repl, Table};

impl Replication {
    /// One message from `from`.
    pub(crate) async fn on_message(self: &Arc<Self>, from: &str, msg: ReplMessage) {
        match msg {
            ReplMessage::Append {
                shard,
                epoch,
                prev,
                label,
                batches,
                more,
            } => {
                self.on_append(from, shard, epoch, prev, label, batches, more)
                    .await
            }
            ReplMessage::Ack { shard, epoch, seq } => {
                let (replies, refused) = {
                    let mut st = crate::sync::lock(&self.state);
                    let Some(lead) = st.leads.get_mut(&shard) else {
                        return;
                    };
                    let refused = lead.p.on_ack(from, epoch, seq, Instant::now());
                    (Self::released(lead), refused)
                };
                answer(replies);
                if let Some(refused) = refused {
                    // A learner this primary dropped: it asks for a copy.
                    self.net
                        .send(from, &ReplMessage::Refused { shard, refused });
                }
            }
            ReplMessage::Refused { shard, refused } => {
                let mut st = crate::sync::lock(&self.state);
                if let Some(lead) = st.leads.get_mut(&shard) {
                    let again = lead.p.on_refused(from, &refused, Instant::now());
                    self.resend(shard, lead, again);
                } else if let Some(trail) = st.trails.get_mut(&shard) {
                    // A learner refused as a member, asked too early, or
                    // dropped by the primary: it asks for a copy at the
                    // next reading of etcd.
                    trail.f.forgotten();
                }
            }
            ReplMessage::CatchUp {
                shard,
                epoch,
                session,
            } => self.on_catch_up(from, shard, epoch, session).await,
            ReplMessage::Chunk {
                shard,
                epoch,
                session,
                at,
                n,
                records,
                done,
            } => {
                self.on_chunk(from, shard, epoch, session, at, n, records, done)
                    .await;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_append(
        self: &Arc<Self>,
        from: &str,
        shard: u32,
        epoch: u64,
        prev: Label,
        label: Label,
        batches: Vec<WireBatch>,
        more: bool,
    ) {
        let verdict = {
            let mut st = crate::sync::lock(&self.state);
            // Nothing is taken before etcd was read (the newest epoch
            // lives in memory only).
            let Some(trail) = st.trails.get_mut(&shard) else {
                return;
            };
            let whole = match trail.parts.push(epoch, prev, label, batches, more) {
                Ok(Some(w)) => w,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(shard, from, error = %e, "a replicated group was dropped");
                    return;
                }
            };
            // Checked before the rules take it: a group taken must be
            // applied, or the history here would skip it.
            let mut checked = Vec::with_capacity(whole.batches.len());
            for b in whole.batches {
                match b.into_batch() {
                    Ok(b) => checked.push(b),
                    Err(e) => {
                        tracing::warn!(shard, from, error = %e, "a replicated batch is invalid");
                        return;
                    }
                }
            }
            match trail.f.on_append(from, epoch, prev, label) {
                Verdict::Apply => Ok(checked),
                Verdict::Duplicate => Err(trail.f.ack().map(|a| ReplMessage::Ack {
                    shard,
                    epoch: a.epoch,
                    seq: a.seq,
                })),
                Verdict::Refuse(refused) => Err(Some(ReplMessage::Refused { shard, refused })),
            }
        };
        let checked = match verdict {
            Ok(b) => b,
            Err(reply) => {
                if let Some(m) = reply {
                    self.net.send(from, &m);
                }
                return;
            }
        };
        let group = store_repl::Received {
            shard,
            prev: Some(mark(prev)),
            mark: mark(label),
            batches: checked,
        };
        self.write_then_ack(shard, label.seq, |place| place.send_received(group))
            .await;
    }

    /// Hands a job to the writer (`send`), and acknowledges `seq` of
    /// `shard` once it is durable here.
    async fn write_then_ack(
        self: &Arc<Self>,
        shard: u32,
        seq: u64,
        send: impl FnOnce(crate::storage::Place<'_>) -> crate::storage::Done,
    ) {
        let Some(store) = self.store() else { return };
        let Ok(place) = store.writer.reserve().await else {
            return;
        };
        let done = send(place);
        let this = self.clone();
        tokio::spawn(async move {
            if !matches!(done.await, Ok(Ok(()))) {
                // The rules took it; the store does not hold it. The trail
                // goes, and the next reading of etcd makes it again from
                // the label the store holds: the primary resends from
                // there, or has it catch up.
                tracing::warn!(shard, seq, "a replicated group did not commit here");
                crate::sync::lock(&this.state).trails.remove(&shard);
                return;
            }
            let ack = {
                let mut st = crate::sync::lock(&this.state);
                st.trails.get_mut(&shard).and_then(|t| t.f.durable(seq))
            };
            if let Some(a) = ack {
                this.net.send(
                    &a.to,
                    &ReplMessage::Ack {
                        shard,
                        epoch: a.epoch,
                        seq: a.seq,
                    },
                );
            }
        });
    }

    async fn on_catch_up(self: &Arc<Self>, from: &str, shard: u32, epoch: u64, session: u64) {
        // From now on every group of the shard is labelled (and kept to
        // resend), until the learner is one of the primary's peers.
        let leading = {
            let mut st = crate::sync::lock(&self.state);
            st.leads.get_mut(&shard).map(|l| l.copying += 1).is_some()
        };
        if !leading {
            self.net.send(
                from,
                &ReplMessage::Refused {
                    shard,
                    refused: crate::remote::replica::Refused::NotNow,
                },
            );
            return;
        }
        self.copy_for(from, shard, epoch, session).await;
        let mut st = crate::sync::lock(&self.state);
        if let Some(lead) = st.leads.get_mut(&shard) {
            lead.copying = lead.copying.saturating_sub(1);
        }
    }

    /// Reads a copy of `shard` and sends it to the learner `from`, then
    /// the groups that followed it.
    async fn copy_for(self: &Arc<Self>, from: &str, shard: u32, epoch: u64, session: u64) {
        let Some(store) = self.store() else { return };
        // Commits that began unlabelled (before the copy was asked for)
        // finish first, so the copy holds them.
        let barrier = match store.writer.reserve().await {
            Ok(place) => place.send_barrier(),
            Err(_) => return,
        };
        if !matches!(barrier.await, Ok(Ok(()))) {
            return;
        }
        let shards = self.shards;
        let pick = move |id: &[u8; 32]| shard_of(id, shards) == shard;
        let snap =
            tokio::task::spawn_blocking(move || store.snapshot(shard, &pick, MAX_GROUP_BYTES))
                .await;
        let (at, records) = match snap {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(shard, from, error = %e, "cannot copy a shard for a learner");
                return;
            }
            Err(_) => return,
        };
        let at = label(at);
        let mut st = crate::sync::lock(&self.state);
        let Some(lead) = st.leads.get_mut(&shard) else {
            drop(st);
            self.net.send(
                from,
                &ReplMessage::Refused {
                    shard,
                    refused: crate::remote::replica::Refused::NotNow,
                },
            );
            return;
        };
        let my_epoch = lead.p.config().epoch;
        if epoch > my_epoch {
            return;
        }
        let groups = match lead.p.catch_up(from, at, Instant::now()) {
            Ok(g) => g,
            Err(refused) => {
                drop(st);
                self.net
                    .send(from, &ReplMessage::Refused { shard, refused });
                return;
            }
        };
        let mut chunks: Vec<Vec<WireRecord>> = vec![Vec::new()];
        let mut bytes = 0usize;
        for (t, k, v) in &records {
            if bytes + k.len() + v.len() > PART_BYTES
                && chunks.last().is_some_and(|c| !c.is_empty())
            {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += k.len() + v.len();
            let table = match t {
                Table::Data => WireTable::Data,
                Table::Catalog => WireTable::Catalog,
                Table::Alarm => WireTable::Alarm,
            };
            if let Some(c) = chunks.last_mut() {
                c.push(WireRecord::new(table, k, v));
            }
        }
        let n = chunks.len();
        for (i, records) in chunks.into_iter().enumerate() {
            self.net.send(
                from,
                &ReplMessage::Chunk {
                    shard,
                    epoch: my_epoch,
                    session,
                    at,
                    n: u32::try_from(i).unwrap_or(u32::MAX),
                    records,
                    done: i + 1 == n,
                },
            );
        }
        self.resend(shard, lead, groups);
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_chunk(
        self: &Arc<Self>,
        from: &str,
        shard: u32,
        epoch: u64,
        session: u64,
        at: Label,
        n: u32,
        records: Vec<WireRecord>,
        done: bool,
    ) {
        let whole = {
            let mut st = crate::sync::lock(&self.state);
            let Some(trail) = st.trails.get_mut(&shard) else {
                return;
            };
            let ok = match &mut trail.copy {
                Some((progress, _, _)) if n > 0 => progress.next(session, epoch, at, n),
                _ => CopyProgress::start(session, epoch, at, n).map(|p| {
                    trail.copy = Some((p, Vec::new(), 0));
                }),
            };
            if let Err(e) = ok {
                tracing::warn!(shard, from, error = %e, "a copy chunk out of order");
                trail.copy = None;
                return;
            }
            let Some((_, held, bytes)) = trail.copy.as_mut() else {
                return;
            };
            for r in &records {
                match r.decode() {
                    Ok((t, k, v)) => {
                        *bytes += k.len() + v.len();
                        let t = match t {
                            WireTable::Data => Table::Data,
                            WireTable::Catalog => Table::Catalog,
                            WireTable::Alarm => Table::Alarm,
                        };
                        held.push((t, k, v));
                    }
                    Err(e) => {
                        tracing::warn!(shard, from, error = %e, "a copy record is invalid");
                        trail.copy = None;
                        return;
                    }
                }
            }
            if *bytes > MAX_GROUP_BYTES {
                trail.copy = None;
                return;
            }
            if !done {
                return;
            }
            let Some((_, held, _)) = trail.copy.take() else {
                return;
            };
            match trail.f.on_copy(from, epoch, at, session) {
                Verdict::Apply => held,
                Verdict::Duplicate => return,
                Verdict::Refuse(refused) => {
                    drop(st);
                    self.net
                        .send(from, &ReplMessage::Refused { shard, refused });
                    return;
                }
            }
        };
        let copy = store_repl::Copy {
            shard,
            mark: mark(at),
            records: whole,
        };
        self.write_then_ack(shard, at.seq, |place| place.send_copy(copy))
            .await;
    }
}
