//! What a handler sees of its object: id, storage, clock, sockets.

use std::sync::Arc;

use crate::clock::Clock;
use crate::id::ObjectId;
use crate::storage::Storage;

/// The object's side of the runtime, passed to every handler.
///
/// Everything an event sends through its context (WebSocket frames) is held
/// until the event's writes are durable: the output gate.
pub struct Context {
    id: ObjectId,
    storage: Storage,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(id: ObjectId, storage: Storage, clock: Arc<dyn Clock>) -> Self {
        Context { id, storage, clock }
    }

    /// This object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// The name this object's id was derived from, when it came from a name.
    pub fn name(&self) -> Option<&str> {
        self.id.name()
    }

    /// This object's storage.
    pub fn storage(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// Wall-clock time in ms since the epoch, from the runtime's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}
