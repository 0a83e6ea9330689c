//! The receiving end of a hand-off (`handoff.rs`): each part of the
//! shard's data is checked and made durable before it is answered; the
//! commit makes this node the shard's server; an abort drops what came.

use std::sync::Arc;
use std::time::Instant;

use super::handoff::{Receiving, remove_local, write_objects};
use super::node::Node;
use super::transport::Handled;
use crate::remote::Refusal;
use crate::remote::handoff_wire::WireHandOff;
use crate::remote::shard::{Owner, Place};
use crate::remote::wire::WireRequest;
use crate::websocket::moved::MovedSockets;

/// Most sockets one shard's hand-off may bring.
const MAX_MOVED_SOCKETS: usize = 1 << 20;

/// A peer's hand-off step, on the receiving node.
pub(crate) fn receive(node: &Arc<Node>, req: WireRequest) -> Handled {
    let node = node.clone();
    Handled::Later(Box::pin(async move {
        received(&node, req)
            .await
            .map(|()| serde_json::value::to_raw_value(&true).unwrap_or_default())
            .map_err(|message| Refusal::Failed { message })
    }))
}

async fn received(node: &Arc<Node>, req: WireRequest) -> Result<(), String> {
    let shard = req.shard;
    if shard >= node.shards {
        return Err(format!("there are {} shards", node.shards));
    }
    let body: WireHandOff = serde_json::from_str(req.body.get())
        .map_err(|e| format!("the hand-off does not decode: {e}"))?;
    let (shared, _) = node.handoff.runtime()?;
    let serving = || {
        matches!(
            crate::sync::read(&node.view).place(shard, Instant::now()),
            Place::Local { .. } | Place::Moving
        )
    };
    match body {
        WireHandOff::Part {
            from,
            epoch,
            part,
            objects,
        } => {
            if serving() {
                return Err(format!("this node serves shard {shard} already"));
            }
            if node.draining.load(std::sync::atomic::Ordering::Acquire) {
                return Err("this node is draining".into());
            }
            let mut decoded = Vec::with_capacity(objects.len());
            for o in objects {
                decoded.push(o.decode(shard, node.shards)?);
            }
            if part == 0 {
                // Whatever this node held of the shard (from an earlier
                // time it owned it, or as its follower) is replaced, not
                // merged; it is no replica of the shard from now on.
                if let Some(r) = node.replication.get() {
                    r.unreplicate(shard).await?;
                }
                remove_local(&shared, shard, node.shards).await?;
                let lease_gen_at = crate::sync::read(&node.view).lease_gen;
                crate::sync::lock(&node.handoff.receiving).insert(
                    shard,
                    Receiving {
                        from: from.clone(),
                        epoch,
                        next_part: 0,
                        lease_gen_at,
                        alarms: Vec::new(),
                        sockets: Vec::new(),
                    },
                );
            }
            {
                let receiving = crate::sync::lock(&node.handoff.receiving);
                match receiving.get(&shard) {
                    Some(r) if r.from == from && r.epoch == epoch && r.next_part == part => {}
                    _ => return Err(format!("part {part} of shard {shard} is out of order")),
                }
            }
            let alarms = write_objects(&shared, decoded).await?;
            let mut receiving = crate::sync::lock(&node.handoff.receiving);
            if let Some(r) = receiving.get_mut(&shard) {
                r.next_part += 1;
                r.alarms.extend(alarms);
            }
            Ok(())
        }
        WireHandOff::Sockets {
            from,
            epoch,
            objects,
        } => {
            let mut decoded = Vec::with_capacity(objects.len());
            for o in objects {
                decoded.push(MovedSockets::decode(o, shard, node.shards)?);
            }
            let mut receiving = crate::sync::lock(&node.handoff.receiving);
            match receiving.get_mut(&shard) {
                Some(r) if r.from == from && r.epoch == epoch => {
                    let total: usize = r
                        .sockets
                        .iter()
                        .chain(&decoded)
                        .map(|m| m.sockets.len())
                        .sum();
                    if total > MAX_MOVED_SOCKETS {
                        return Err(format!(
                            "more than {MAX_MOVED_SOCKETS} sockets in one shard"
                        ));
                    }
                    r.sockets.extend(decoded);
                    Ok(())
                }
                _ => Err(format!(
                    "no hand-off of shard {shard} from {from} is under way"
                )),
            }
        }
        WireHandOff::Commit { epoch } => {
            let r = crate::sync::lock(&node.handoff.receiving).remove(&shard);
            let Some(r) = r else {
                return Err(format!("no hand-off of shard {shard} is under way"));
            };
            let next = Owner {
                node: node.me.clone(),
                epoch,
            };
            // The sockets are in their tables before the shard serves.
            if !r.sockets.is_empty() {
                match (node.handoff.links(), node.handoff.runtime()) {
                    (Some(links), Ok((shared, registry))) => {
                        super::follow::install(&links, &registry, &shared, r.sockets);
                    }
                    _ => tracing::warn!(
                        shard,
                        "sockets moved here, but this node has no socket links"
                    ),
                }
            }
            // Its groups are labelled from the first one it serves.
            if let Some(repl) = node.replication.get() {
                repl.own(
                    shard,
                    &crate::remote::replica::Config {
                        epoch,
                        primary: node.me.clone(),
                        followers: Vec::new(),
                    },
                );
                repl.rewritten(shard);
            }
            let serves =
                crate::sync::write(&node.view).handed(shard, &next, r.lease_gen_at, Instant::now());
            if !serves {
                tracing::info!(shard, "a handed shard waits for this node to re-claim it");
            }
            for (key, at) in r.alarms {
                shared.alarms.committed(key, Some(at));
            }
            Ok(())
        }
        WireHandOff::Abort => {
            crate::sync::lock(&node.handoff.receiving).remove(&shard);
            if !serving() {
                remove_local(&shared, shard, node.shards).await?;
            }
            if let Some(r) = node.replication.get() {
                r.rewritten(shard);
            }
            Ok(())
        }
    }
}
