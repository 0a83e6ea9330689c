//! Namespaces (one object type each) and stubs (handles to one object).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::dispatch::{NsInner, enqueue};
use crate::error::{Error, Result};
use crate::event::{self, Envelope, Event, Pending};
use crate::http::{Request, Response};
use crate::id::ObjectId;
use crate::object::{Handler, Method, Object};
use crate::stream::StreamResponse;

/// All objects of one type. Cheap to clone.
///
#[doc = include_str!("docs/namespace.md")]
pub struct Namespace<O: Object> {
    inner: Arc<NsInner<O>>,
}

impl<O: Object> Clone for Namespace<O> {
    fn clone(&self) -> Self {
        Namespace {
            inner: self.inner.clone(),
        }
    }
}

impl<O: Object> std::fmt::Debug for Namespace<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<O: Object> Namespace<O> {
    pub(crate) fn new(inner: Arc<NsInner<O>>) -> Self {
        Namespace { inner }
    }

    /// The env every instance of this namespace gets.
    pub fn env(&self) -> &Arc<O::Env> {
        &self.inner.env
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Lets other nodes of a cluster ask this namespace's objects the typed
    /// method `M` ([`Stub::ask`]): the owner of an object finds the
    /// method by its [`Method::name`]. Call it on every node, for every
    /// method, where the namespace is registered. In one process a stub
    /// needs nothing of this: [`Stub::ask`] works for every method the
    /// object handles, and this call does nothing without the cargo
    /// feature `cluster`. A node asked a method it has not accepted
    /// answers `Unavailable`, naming the method.
    pub fn accept<M: Method>(&self) -> &Self
    where
        O: Handler<M>,
    {
        #[cfg(feature = "cluster")]
        crate::sync::write(&self.inner.methods)
            .insert(M::name(), crate::event::method_entry::<O, M>);
        self
    }

    /// The id for `name`: the same name always gives the same id in this
    /// namespace (and a different one in any other).
    pub fn id_from_name(&self, name: &str) -> ObjectId {
        self.inner.minter.for_name(name)
    }

    /// A new random, unguessable id.
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn new_unique_id(&self) -> Result<ObjectId> {
        Ok(self.inner.minter.unique()?)
    }

    /// Parses an id's hex form, refusing ids this namespace did not mint.
    ///
    /// # Errors
    ///
    /// [`IdError::Malformed`](crate::IdError::Malformed) unless 64 hex
    /// digits; [`IdError::ForeignNamespace`](crate::IdError::ForeignNamespace)
    /// for an id of another namespace or a forged one.
    pub fn id_from_string(&self, hex: &str) -> Result<ObjectId> {
        let id = self.inner.minter.parse(hex)?;
        // Recover the name if the object recorded one.
        let name = self
            .inner
            .shared
            .store
            .catalog_entry(id.as_bytes())
            .ok()
            .flatten()
            .and_then(|(_, n)| n)
            .map(Arc::from);
        Ok(id.with_name(name))
    }

    /// A stub for `id`. Cheap; the object is activated by the first call.
    pub fn get(&self, id: &ObjectId) -> Stub<O> {
        Stub {
            ns: self.inner.clone(),
            id: id.clone(),
        }
    }

    /// Shorthand for `get(&id_for_name(name))`.
    pub fn get_by_name(&self, name: &str) -> Stub<O> {
        self.get(&self.id_from_name(name))
    }

    /// Ids of the objects live in memory now (names included where known).
    pub fn live_ids(&self) -> Vec<ObjectId> {
        self.inner.live.iter().map(|s| s.id.clone()).collect()
    }

    /// Number of objects live in memory now.
    pub fn live_count(&self) -> usize {
        self.inner.live.len()
    }

    /// Every committed key and value of one object, decoded, read directly
    /// from the store (the object need not be live; writes of an event in
    /// progress are not included).
    ///
    /// # Errors
    ///
    /// An LMDB read error or a corrupt value.
    pub fn export(&self, id: &ObjectId) -> Result<Vec<(String, crate::StoredValue)>> {
        Ok(crate::storage::export_committed(
            &self.inner.shared.store,
            id.as_bytes(),
        )?)
    }

    /// Ids of the objects that have stored data (names included where
    /// known), live or not.
    ///
    /// # Errors
    ///
    /// An LMDB read error.
    pub fn stored_ids(&self) -> Result<Vec<ObjectId>> {
        Ok(self
            .inner
            .shared
            .store
            .catalog(&self.inner.name)?
            .into_iter()
            .map(|(bytes, name)| ObjectId::from_parts(bytes, name.map(Arc::from)))
            .collect())
    }
}

/// A handle to one object. Cheap, `Clone`, usable before the object exists.
/// Calls made through one stub are delivered in the order they were made
/// (each call enqueues before it returns its future).
pub struct Stub<O: Object> {
    ns: Arc<NsInner<O>>,
    id: ObjectId,
}

impl<O: Object> Clone for Stub<O> {
    fn clone(&self) -> Self {
        Stub {
            ns: self.ns.clone(),
            id: self.id.clone(),
        }
    }
}

impl<O: Object> std::fmt::Debug for Stub<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("namespace", &self.ns.name)
            .field("id", &self.id)
            .finish()
    }
}

impl<O: Object> Stub<O> {
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// Sends an HTTP request to the object's `fetch` handler.
    ///
    /// The request is queued before this returns; the future waits for the
    /// response (which leaves the object only once the event's writes are
    /// durable).
    ///
    #[doc = include_str!("docs/stub_fetch.md")]
    pub fn fetch(&self, req: Request) -> impl Future<Output = Result<Response>> + Send + use<O> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(|_| Event::Fetch(Box::new(req), tx));
        self.wait(sent, rx)
    }

    /// Sends an HTTP request to the object's `fetch_stream` handler, whose
    /// response body the object keeps feeding after the event ends
    /// (server-sent events, large downloads). Queued before this returns,
    /// like [`fetch`](Self::fetch).
    pub fn fetch_stream(
        &self,
        req: Request,
    ) -> impl Future<Output = Result<StreamResponse>> + Send + use<O> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(|_| Event::FetchStream(Box::new(req), tx));
        self.wait(sent, rx)
    }

    /// Makes a typed RPC call to the object's `call` handler.
    ///
    /// Queued before this returns, so calls through one stub keep their
    /// order even when their futures are polled out of order.
    pub fn call(&self, call: O::Call) -> impl Future<Output = Result<O::Reply>> + Send + use<O> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(|_| Event::Call(call, tx));
        self.wait(sent, rx)
    }

    /// Asks the object a typed method ([`Method`], answered by its
    /// [`Handler`]): the future resolves to that method's own reply type.
    ///
    /// Queued before this returns, like [`call`](Self::call), so the
    /// methods asked through one stub run in the order they were asked,
    /// whatever their types.
    pub fn ask<M: Method>(
        &self,
        msg: M,
    ) -> impl Future<Output = Result<M::Reply>> + Send + use<O, M>
    where
        O: Handler<M>,
    {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(|_| Event::Method(Box::new(Pending::new(msg, tx))));
        self.wait(sent, rx)
    }

    fn wait<T: Send + 'static>(
        &self,
        sent: Result<()>,
        rx: oneshot::Receiver<Result<T>>,
    ) -> impl Future<Output = Result<T>> + Send + use<O, T> {
        let shared = self.ns.shared.clone();
        let deadline = shared.options.call_timeout;
        let id = self.id.clone();
        self.ns.metrics.calls.increment(1);
        let call_seconds = self.ns.metrics.call_seconds.clone();
        let started = std::time::Instant::now();
        async move {
            sent?;
            let r = match tokio::time::timeout(deadline, rx).await {
                Ok(Ok(r)) => r,
                // The task dropped the reply: it is gone (shutdown).
                Ok(Err(_)) => Err(Error::ShuttingDown),
                Err(_) => Err(Error::DeadlineExceeded {
                    id: id.clone(),
                    deadline,
                }),
            };
            call_seconds.record(started.elapsed().as_secs_f64());
            r
        }
    }

    /// Queues an event, activating the object if it is not live.
    pub(crate) fn send(&self, make: impl FnOnce(&ObjectId) -> Event<O>) -> Result<()> {
        let chain = event::current_chain();
        if chain.contains(self.id.as_bytes()) {
            return Err(Error::CallCycle {
                id: self.id.clone(),
            });
        }
        let envelope = Envelope {
            event: make(&self.id),
            chain: chain.push(*self.id.as_bytes()),
        };
        enqueue(&self.ns, &self.id, envelope)
    }
}
