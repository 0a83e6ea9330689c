//! Sending an event to the node that owns its object (the cargo feature
//! `cluster`): the typed event becomes JSON, travels through the
//! [`Route`], and the answer comes back as the same reply or `Error` a
//! local call gives. A "moved" answer is followed to the owner it names, a
//! bounded number of times.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::event::{Envelope, Event, Reply};
use crate::id::ObjectId;
use crate::object::Object;
use crate::remote::wire::{WireHttp, WireMethod};
use crate::remote::{self, Answer, Kind, Outgoing, Refusal, Route};

/// How many times a call answered "moved" is sent on to the named owner.
pub(crate) const MAX_MOVES: usize = 3;

/// Sends `envelope` to `node`. Queued (in order) before this returns;
/// the reply is awaited on a task that ends when the answer comes or the
/// caller gives up.
pub(crate) fn send<O: Object>(
    route: &Arc<dyn Route>,
    shared: &crate::shared::Shared,
    ns: &Arc<str>,
    id: &ObjectId,
    node: &str,
    epoch: u64,
    envelope: Envelope<O>,
) -> Result<()> {
    // The envelope's chain ends with the object itself; the owner pushes
    // it again when it queues the event.
    let mut chain = envelope.chain.ids().to_vec();
    if chain.last() == Some(id.as_bytes()) {
        chain.pop();
    }
    match envelope.event {
        Event::Call(call, reply) => {
            let body = to_raw(id, &call)?;
            start::<O::Reply, _>(
                route,
                ns,
                id,
                node,
                epoch,
                Kind::Call,
                chain,
                body,
                reply,
                Ok,
            )
        }
        Event::Fetch(req, reply)
            if crate::websocket::remote::is_upgrade(&req)
                && let Some(links) = shared.socket_links.get() =>
        {
            // The connection stays here; the owner runs the object.
            let rx = links
                .upgrade(
                    ns.clone(),
                    *id.as_bytes(),
                    node.to_string(),
                    epoch,
                    chain,
                    *req,
                )
                .map_err(|r| remote::into_error(r, id))?;
            let id = id.clone();
            let mut reply = reply;
            tokio::spawn(async move {
                let answer = tokio::select! {
                    a = rx => a.unwrap_or_else(|_| Err(Refusal::Unavailable {
                        reason: "the link to the owner was lost".into(),
                    })),
                    () = reply.closed() => return,
                };
                let _ = reply.send(answer.map_err(|r| remote::into_error(r, &id)));
            });
            Ok(())
        }
        Event::Fetch(req, reply) => {
            let body = to_raw(id, &WireHttp::from_request(&req))?;
            start::<WireHttp, _>(
                route,
                ns,
                id,
                node,
                epoch,
                Kind::Fetch,
                chain,
                body,
                reply,
                |w| w.into_response(),
            )
        }
        Event::Method(m) => {
            let call = m.into_remote();
            let request = call.body.map_err(|e| Error::Unavailable {
                id: id.clone(),
                reason: format!("the method does not serialise for another node: {e}"),
            })?;
            let body = to_raw(
                id,
                &WireMethod {
                    method: call.name.to_string(),
                    body: request,
                },
            )?;
            // The typed reply is decoded where the caller is: the answer
            // travels as JSON to this task, which hands it over.
            let (tx, rx) = tokio::sync::oneshot::channel();
            start::<Box<RawValue>, _>(
                route,
                ns,
                id,
                node,
                epoch,
                Kind::Method,
                chain,
                body,
                tx,
                Ok,
            )?;
            let id = id.clone();
            let finish = call.finish;
            tokio::spawn(async move {
                let answer = rx.await.unwrap_or(Err(Error::ShuttingDown));
                finish(&id, answer);
            });
            Ok(())
        }
        // Alarms fire where the data is, and sockets live on the node that
        // accepted them: neither is sent on. The owner has its own.
        _ => Err(Error::Unavailable {
            id: id.clone(),
            reason: format!("this node does not own the object; {node} does"),
        }),
    }
}

fn to_raw<T: Serialize>(id: &ObjectId, v: &T) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(v).map_err(|e| Error::Unavailable {
        id: id.clone(),
        reason: format!("the event does not serialise for another node: {e}"),
    })
}

#[allow(clippy::too_many_arguments)]
fn start<W: DeserializeOwned + 'static, T: Send + 'static>(
    route: &Arc<dyn Route>,
    ns: &Arc<str>,
    id: &ObjectId,
    node: &str,
    epoch: u64,
    kind: Kind,
    chain: Vec<[u8; 32]>,
    body: Box<RawValue>,
    mut reply: Reply<T>,
    convert: fn(W) -> std::result::Result<T, String>,
) -> Result<()> {
    let out = Outgoing {
        ns: ns.clone(),
        id: *id.as_bytes(),
        kind,
        chain: chain.clone(),
        body: body.clone(),
    };
    let first = route
        .send(node, epoch, out)
        .map_err(|r| remote::into_error(r, id))?;
    let route = route.clone();
    let ns = ns.clone();
    let id = id.clone();
    tokio::spawn(async move {
        let mut rx = first;
        let mut moves = 0;
        let answer = loop {
            let answer: Answer = tokio::select! {
                a = rx => a.unwrap_or_else(|_| Err(Refusal::Unavailable {
                    reason: "the connection to the owner was lost".into(),
                })),
                () = reply.closed() => return,
            };
            match answer {
                Err(Refusal::Moved { owner, epoch })
                    if moves < MAX_MOVES && owner != route.me() =>
                {
                    moves += 1;
                    let out = Outgoing {
                        ns: ns.clone(),
                        id: *id.as_bytes(),
                        kind,
                        chain: chain.clone(),
                        body: body.clone(),
                    };
                    match route.send(&owner, epoch, out) {
                        Ok(next) => rx = next,
                        Err(r) => break Err(r),
                    }
                }
                other => break other,
            }
        };
        let result = match answer {
            Ok(raw) => serde_json::from_str::<W>(raw.get())
                .map_err(|e| e.to_string())
                .and_then(convert)
                .map_err(|e| Error::Unavailable {
                    id: id.clone(),
                    reason: format!("the owner's reply does not decode: {e}"),
                }),
            Err(r) => Err(remote::into_error(r, &id)),
        };
        let _ = reply.send(result);
    });
    Ok(())
}
