//! The runtime's registry of namespaces, by name: what the alarm driver,
//! shutdown and the inspector reach namespaces through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

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
    fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage>;

    /// One object's committed storage, alarm and sockets.
    fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView>;
}

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

    fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
        NsInner::objects(self, after, limit)
    }

    fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView> {
        NsInner::view(self, id, opts)
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
