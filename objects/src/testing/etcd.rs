//! A real etcd for tests: Debian's `etcd` binary, started on free loopback
//! ports with its data in a temp dir, killed when dropped. Tests that need
//! it call [`Etcd::start`], which answers `None` (and prints why) when no
//! `etcd` is on the `PATH`, so such a test says it skipped instead of
//! failing on a machine without the package.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long etcd may take to say it serves clients.
const START_WITHIN: Duration = Duration::from_secs(60);

/// One etcd member, a cluster of its own.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now (the OS's choice for port 0).
///
/// # Panics
///
/// If no loopback port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it serves clients. `None`, with the
    /// reason printed, when there is no `etcd` on the `PATH`.
    ///
    /// # Panics
    ///
    /// If etcd does not start within a minute, or the temp dir cannot be
    /// made.
    pub async fn start() -> Option<Etcd> {
        let path = std::env::var_os("PATH")?;
        let Some(bin) = std::env::split_paths(&path)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
        else {
            eprintln!("skipped: no `etcd` binary on PATH (apt-get install etcd-server)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let args = [
            "--name",
            "test",
            "--data-dir",
            &dir.path().join("etcd").to_string_lossy(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("test={peer}"),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        .map(str::to_string)
        .to_vec();
        let mut etcd = Etcd {
            child: None,
            bin,
            args,
            url,
            _dir: dir,
        };
        etcd.restart().await;
        Some(etcd)
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills etcd (SIGKILL); its data dir and ports stay for
    /// [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on its data dir and ports (after
    /// [`stop`](Self::stop)) and waits for its "serving client traffic"
    /// log line.
    ///
    /// # Panics
    ///
    /// If it cannot be spawned or does not serve within a minute.
    pub async fn restart(&mut self) {
        self.stop();
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving client traffic")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        tokio::time::timeout(START_WITHIN, rx)
            .await
            .expect("etcd started in time")
            .expect("etcd is ready");
    }
}
