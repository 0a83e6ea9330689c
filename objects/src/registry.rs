//! The runtime's registry of namespaces, by name: what the alarm driver,
//! shutdown and the inspector reach namespaces through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

#[cfg(feature = "admin")]
use crate::admin::inspect::{ObjectPage, ObjectView, ViewOptions};
use crate::alarm::{AlarmInfo, AlarmOutcome, AlarmTarget};
use crate::dispatch::{NsInner, enqueue};
use crate::error::{Error, Result};
use crate::event::{CallChain, Envelope, Event};
use crate::id::ObjectId;
use crate::metrics::NamespaceStats;
use crate::object::Object;

/// The untyped face of a namespace, for the runtime's alarm driver and
/// listings.
pub(crate) trait NamespaceDyn: Send + Sync {
    /// Queues an alarm event for the object.
    fn deliver_alarm(
        self: Arc<Self>,
        id: [u8; 32],
        info: AlarmInfo,
        abandon: bool,
    ) -> Result<oneshot::Receiver<AlarmOutcome>>;

    /// Closes every accepted socket (shutdown).
    fn close_sockets(&self, code: u16, reason: &str);

    /// State figures for metrics.
    fn stats(&self) -> NamespaceStats;

    /// A page of the objects known to this namespace, in id order.
    #[cfg(feature = "admin")]
    fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage>;

    /// One object's committed storage, alarm and sockets.
    #[cfg(feature = "admin")]
    fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView>;

    /// Asks the live objects `pick` selects to leave memory (as at an idle
    /// timeout: each goes once its mailbox is empty) and returns how many
    /// of them are live now.
    #[cfg(feature = "cluster")]
    fn evict_where(&self, pick: &dyn Fn(&[u8; 32]) -> bool) -> usize;

    /// This namespace's name.
    #[cfg(feature = "cluster")]
    fn name(&self) -> &str;

    /// The socket tables of the objects `pick` selects.
    #[cfg(feature = "cluster")]
    fn socket_tables(
        &self,
        pick: &dyn Fn(&[u8; 32]) -> bool,
    ) -> Vec<([u8; 32], Arc<crate::websocket::socket::Table>)>;

    /// Takes the object's socket table out of this namespace (its object
    /// moved away; the table goes on serving its sockets as an edge's).
    #[cfg(feature = "cluster")]
    fn take_socket_table(&self, id: &[u8; 32]) -> Option<Arc<crate::websocket::socket::Table>>;

    /// The object's socket table (made if there is none) and where its
    /// sockets' events go: for sockets that move here with their object.
    #[cfg(feature = "cluster")]
    fn socket_table(
        self: Arc<Self>,
        id: &[u8; 32],
    ) -> (
        Arc<crate::websocket::socket::Table>,
        Arc<dyn crate::websocket::socket::Deliver>,
    );

    /// Queues an event that another node sent (its shard is this node's):
    /// queued before this returns, so events keep the order they arrived
    /// in; the future is the answer, as JSON or a refusal.
    #[cfg(feature = "cluster")]
    fn remote_event(
        self: Arc<Self>,
        id: &str,
        kind: crate::remote::Kind,
        chain: &[String],
        body: &serde_json::value::RawValue,
    ) -> Result<RemoteAnswer, crate::remote::Refusal>;
}

#[cfg(feature = "cluster")]
pub(crate) use crate::event::RemoteAnswer;
#[cfg(feature = "cluster")]
use crate::event::remote_answer;

impl<O: Object> NamespaceDyn for NsInner<O> {
    fn deliver_alarm(
        self: Arc<Self>,
        id: [u8; 32],
        info: AlarmInfo,
        abandon: bool,
    ) -> Result<oneshot::Receiver<AlarmOutcome>> {
        let (tx, rx) = oneshot::channel();
        let id = ObjectId::from_parts(id, None);
        let envelope = Envelope {
            event: Event::Alarm {
                info,
                abandon,
                reply: tx,
            },
            chain: CallChain::default().push(*id.as_bytes()),
        };
        enqueue(&self, &id, envelope)?;
        Ok(rx)
    }

    fn close_sockets(&self, code: u16, reason: &str) {
        for table in self.sockets.iter() {
            for h in crate::sync::lock(&table).handles() {
                h.close(code, reason.to_string());
            }
        }
    }

    fn stats(&self) -> NamespaceStats {
        NsInner::stats(self)
    }

    #[cfg(feature = "cluster")]
    fn evict_where(&self, pick: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        let mut live = 0;
        for slot in self.live.iter() {
            if pick(slot.key()) {
                live += 1;
                slot.evict.notify_one();
            }
        }
        live
    }

    #[cfg(feature = "cluster")]
    fn name(&self) -> &str {
        &self.name
    }

    #[cfg(feature = "cluster")]
    fn socket_tables(
        &self,
        pick: &dyn Fn(&[u8; 32]) -> bool,
    ) -> Vec<([u8; 32], Arc<crate::websocket::socket::Table>)> {
        self.sockets
            .iter()
            .filter(|t| pick(t.key()))
            .map(|t| (*t.key(), t.value().clone()))
            .collect()
    }

    #[cfg(feature = "cluster")]
    fn take_socket_table(&self, id: &[u8; 32]) -> Option<Arc<crate::websocket::socket::Table>> {
        self.sockets.remove(id).map(|(_, t)| t)
    }

    #[cfg(feature = "cluster")]
    fn socket_table(
        self: Arc<Self>,
        id: &[u8; 32],
    ) -> (
        Arc<crate::websocket::socket::Table>,
        Arc<dyn crate::websocket::socket::Deliver>,
    ) {
        let table = self.sockets.entry(*id).or_default().clone();
        (table, Arc::new(crate::dispatch::NsDeliver(self)))
    }

    #[cfg(feature = "admin")]
    fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
        NsInner::objects(self, after, limit)
    }

    #[cfg(feature = "admin")]
    fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView> {
        NsInner::view(self, id, opts)
    }

    #[cfg(feature = "cluster")]
    fn remote_event(
        self: Arc<Self>,
        id: &str,
        kind: crate::remote::Kind,
        chain: &[String],
        body: &serde_json::value::RawValue,
    ) -> Result<RemoteAnswer, crate::remote::Refusal> {
        use crate::remote::{Kind, Refusal, refusal};
        let failed = |message: String| Refusal::Failed { message };
        let id = self.minter.parse(id).map_err(|e| failed(e.to_string()))?;
        let mut ids = Vec::with_capacity(chain.len());
        for hex in chain {
            ids.push(crate::id::parse_hex(hex).map_err(|e| failed(e.to_string()))?);
        }
        let chain = CallChain::from_ids(ids);
        if chain.contains(id.as_bytes()) {
            return Err(Refusal::CallCycle);
        }
        let chain = chain.push(*id.as_bytes());
        let deadline = self.shared.options.call_timeout;
        match kind {
            Kind::Method => {
                let m: crate::remote::wire::WireMethod = serde_json::from_str(body.get())
                    .map_err(|e| failed(format!("the method does not decode: {e}")))?;
                let entry = crate::sync::read(&self.methods)
                    .get(m.method.as_str())
                    .copied()
                    .ok_or_else(|| {
                        failed(format!(
                            "namespace {} here does not accept the method {} \
                             (Namespace::accept on every node)",
                            self.name, m.method
                        ))
                    })?;
                let (invoke, answer) = entry(id.clone(), deadline, &m.body).map_err(failed)?;
                let envelope = Envelope {
                    event: Event::Method(invoke),
                    chain,
                };
                crate::dispatch::enqueue_local(&self, &id, envelope).map_err(|e| refusal(&e))?;
                Ok(answer)
            }
            Kind::Call => {
                let call: O::Call = serde_json::from_str(body.get())
                    .map_err(|e| failed(format!("the call does not decode: {e}")))?;
                let (tx, rx) = oneshot::channel();
                let envelope = Envelope {
                    event: Event::Call(call, tx),
                    chain,
                };
                crate::dispatch::enqueue_local(&self, &id, envelope).map_err(|e| refusal(&e))?;
                Ok(remote_answer(id, deadline, rx, |r| r))
            }
            Kind::Fetch => {
                let req = serde_json::from_str::<crate::remote::wire::WireHttp>(body.get())
                    .map_err(|e| e.to_string())
                    .and_then(crate::remote::wire::WireHttp::into_request)
                    .map_err(|e| failed(format!("the request does not decode: {e}")))?;
                let (tx, rx) = oneshot::channel();
                let envelope = Envelope {
                    event: Event::Fetch(Box::new(req), tx),
                    chain,
                };
                crate::dispatch::enqueue_local(&self, &id, envelope).map_err(|e| refusal(&e))?;
                Ok(remote_answer(
                    id,
                    deadline,
                    rx,
                    |r: crate::http::Response| crate::remote::wire::WireHttp::from_response(&r),
                ))
            }
            Kind::HandOff => Err(failed("a hand-off is not an event of an object".into())),
            Kind::Upgrade => {
                let up: crate::remote::socket_wire::WireUpgrade = serde_json::from_str(body.get())
                    .map_err(|e| failed(format!("the upgrade does not decode: {e}")))?;
                let link = self
                    .shared
                    .socket_links
                    .get()
                    .and_then(|l| l.edge(&up.edge))
                    .ok_or_else(|| failed(format!("no socket link from {}", up.edge)))?;
                let mut req = up
                    .http
                    .into_request()
                    .map_err(|e| failed(format!("the request does not decode: {e}")))?;
                req.extensions_mut()
                    .insert(crate::websocket::remote::RemoteUpgrade {
                        link,
                        esid: up.esid,
                    });
                let (tx, rx) = oneshot::channel();
                let envelope = Envelope {
                    event: Event::Fetch(Box::new(req), tx),
                    chain,
                };
                crate::dispatch::enqueue_local(&self, &id, envelope).map_err(|e| refusal(&e))?;
                Ok(remote_answer(
                    id,
                    deadline,
                    rx,
                    |r: crate::http::Response| crate::remote::wire::WireHttp::from_response(&r),
                ))
            }
        }
    }
}

/// Every registered namespace, by name.
#[derive(Default)]
pub(crate) struct Registry {
    map: Mutex<HashMap<String, Arc<dyn NamespaceDyn>>>,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<dyn NamespaceDyn>>> {
        crate::sync::lock(&self.map)
    }

    /// Adds a namespace.
    ///
    /// # Errors
    ///
    /// The name is taken.
    pub(crate) fn insert(&self, name: &str, ns: Arc<dyn NamespaceDyn>) -> Result<()> {
        let mut map = self.map();
        if map.contains_key(name) {
            return Err(Error::Namespace(name.into(), "already registered"));
        }
        map.insert(name.to_string(), ns);
        Ok(())
    }

    /// One namespace.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn NamespaceDyn>> {
        self.map().get(name).cloned()
    }

    /// Every namespace (the lock is let go before the caller walks them).
    pub(crate) fn all(&self) -> Vec<Arc<dyn NamespaceDyn>> {
        self.map().values().cloned().collect()
    }

    /// Names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map().keys().cloned().collect();
        names.sort();
        names
    }

    /// Forgets every namespace (at shutdown, so nothing keeps the store
    /// open through them).
    pub(crate) fn clear(&self) {
        self.map().clear();
    }
}

impl AlarmTarget for Registry {
    fn deliver_alarm(
        &self,
        namespace: &str,
        id: [u8; 32],
        info: AlarmInfo,
        abandon: bool,
    ) -> Result<oneshot::Receiver<AlarmOutcome>, String> {
        let ns = self
            .get(namespace)
            .ok_or_else(|| "namespace not registered".to_string())?;
        ns.deliver_alarm(id, info, abandon)
            .map_err(|e| e.to_string())
    }
}
