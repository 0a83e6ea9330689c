//! The handles every namespace, object task and socket task of one runtime
//! holds. Handles only: the namespace registry lives in the runtime, above
//! everything that uses this.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alarm::Alarms;
use crate::clock::Clock;
use crate::options::RuntimeOptions;
use crate::storage::Store;

/// State shared by the runtime, its namespaces and object tasks.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: RuntimeOptions,
    /// Cancelled once, when the runtime starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when accepted WebSockets are being closed (the first step
    /// of a graceful stop, [`Runtime::close_websockets`](crate::Runtime::close_websockets)):
    /// a child of `shutdown`, so a full shutdown cancels it too.
    pub(crate) refuse_sockets: CancellationToken,
    /// Object tasks, waited for at shutdown so in-flight events finish.
    pub(crate) tasks: TaskTracker,
    /// Socket tasks, waited for at shutdown so Close frames go out.
    pub(crate) socket_tasks: TaskTracker,
    /// The in-memory schedule of every pending alarm.
    pub(crate) alarms: Arc<Alarms>,
    /// Woken each time an object leaves memory (a hand-off waits for its
    /// shard's objects to go).
    pub(crate) left: tokio::sync::Notify,
    /// Socket ids, unique within the runtime.
    pub(crate) next_sid: AtomicU64,
    /// The secret ids are minted under: the data dir's own, or the
    /// cluster's (so an id minted on one node is valid on all).
    pub(crate) id_secret: [u8; 32],
    /// In a cluster, where events go (set once, when the node starts
    /// serving); without it every object is local.
    #[cfg(feature = "cluster")]
    pub(crate) route: std::sync::OnceLock<Arc<dyn crate::remote::Route>>,
    /// In a cluster, the links that carry WebSockets across nodes.
    #[cfg(feature = "cluster")]
    pub(crate) socket_links: std::sync::OnceLock<Arc<dyn crate::websocket::remote::SocketLinks>>,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Whether new WebSockets are refused (sockets closing, or shutdown).
    pub(crate) fn refuses_sockets(&self) -> bool {
        self.refuse_sockets.is_cancelled()
    }
}
