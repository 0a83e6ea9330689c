//! Without the cargo feature `cluster`: no `--cluster-*` flags, and the
//! server is one node. The same names as `cluster.rs`, so `main` reads the
//! same either way; [`Config`] and [`Node`] have no values.

use std::time::Duration;

/// No flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {}

/// Never made: cluster mode needs the feature.
#[derive(Debug)]
pub(crate) enum Config {}

/// Never made: cluster mode needs the feature.
#[derive(Debug)]
pub(crate) enum Node {}

impl ClusterArgs {
    /// Always one node.
    #[allow(clippy::unnecessary_wraps)]
    pub(crate) fn config(&self) -> Result<Option<Config>, String> {
        Ok(None)
    }
}

impl Config {
    pub(crate) async fn join(self) -> anyhow::Result<Node> {
        match self {}
    }
}

impl Node {
    pub(crate) fn id_secret(&self) -> [u8; 32] {
        match *self {}
    }

    pub(crate) fn serve(&self, _: &objects::Runtime) -> anyhow::Result<()> {
        match *self {}
    }

    pub(crate) fn health(&self) -> std::sync::Arc<dyn chat_demo::NodeHealth> {
        match *self {}
    }

    pub(crate) fn ops(&self) -> std::sync::Arc<dyn chat_demo::ClusterOps> {
        match *self {}
    }

    pub(crate) async fn drain_on_stop(&self, _: Duration) {
        match *self {}
    }

    pub(crate) async fn leave(&self, _: Duration) {
        match *self {}
    }
}
