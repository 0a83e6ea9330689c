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
use crate::event::{Envelope, Event, Finish, Reply};
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
            let reply = Typed {
                reply,
                convert: Ok::<O::Reply, String>,
            };
            start(route, ns, id, node, epoch, Kind::Call, chain, body, reply)
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
            // The edge (`edge.rs`) follows and remembers "moved" answers.
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
            let reply = Typed {
                reply,
                convert: WireHttp::into_response,
            };
            start(route, ns, id, node, epoch, Kind::Fetch, chain, body, reply)
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
            // The method's own code decodes the reply into its type.
            start(
                route,
                ns,
                id,
                node,
                epoch,
                Kind::Method,
                chain,
                body,
                MethodAnswer {
                    finish: call.finish,
                    closed: call.closed,
                },
            )
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

/// Where the owner's answer goes.
trait Answerer: Send + 'static {
    /// Resolves once the caller gave up (never, when it cannot tell).
    fn closed(&mut self) -> impl Future<Output = ()> + Send;
    /// Hands over the owner's answer, as JSON, or the error.
    fn answer(self, id: &ObjectId, answer: Result<Box<RawValue>>);
}

/// A call's or fetch's reply channel: the answer is decoded as `W` and
/// converted to the caller's `T`.
struct Typed<W, T> {
    reply: Reply<T>,
    convert: fn(W) -> std::result::Result<T, String>,
}

impl<W: DeserializeOwned + 'static, T: Send + 'static> Answerer for Typed<W, T> {
    fn closed(&mut self) -> impl Future<Output = ()> + Send {
        self.reply.closed()
    }

    fn answer(self, id: &ObjectId, answer: Result<Box<RawValue>>) {
        let result = answer.and_then(|raw| {
            serde_json::from_str::<W>(raw.get())
                .map_err(|e| e.to_string())
                .and_then(self.convert)
                .map_err(|e| Error::Unavailable {
                    id: id.clone(),
                    reason: format!("the owner's reply does not decode: {e}"),
                })
        });
        let _ = self.reply.send(result);
    }
}

/// A typed method: its own code decodes the answer into its reply type.
struct MethodAnswer {
    finish: Finish,
    closed: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Answerer for MethodAnswer {
    fn closed(&mut self) -> impl Future<Output = ()> + Send {
        self.closed.as_mut()
    }

    fn answer(self, id: &ObjectId, answer: Result<Box<RawValue>>) {
        (self.finish)(id, answer);
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    route: &Arc<dyn Route>,
    ns: &Arc<str>,
    id: &ObjectId,
    node: &str,
    epoch: u64,
    kind: Kind,
    chain: Vec<[u8; 32]>,
    body: Box<RawValue>,
    mut reply: impl Answerer,
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
                // Possibly to this node (the shard came here meanwhile).
                Err(Refusal::Moved { owner, epoch }) if moves < MAX_MOVES => {
                    route.learned(id.as_bytes(), &owner, epoch);
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
        reply.answer(&id, answer.map_err(|r| remote::into_error(r, &id)));
    });
    Ok(())
}
