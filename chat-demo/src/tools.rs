//! The operations subcommands: `backup`, `list`, `export`, `import`. They
//! work on a data dir through `objects::Admin`, without a runtime; see
//! `docs/operations.md` for the export format and the backup story.

use std::cell::Cell;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use objects::{Admin, Entry, ExportFilter, MAX_LINE_BYTES, StorageError};

/// Progress goes to stderr every this many objects.
const PROGRESS_EVERY: usize = 1000;

/// What the binary does; `serve` when no subcommand is given.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the chat server (the default when no subcommand is given).
    Serve(Box<crate::Args>),
    /// Copy a data dir consistently to another directory, while it is
    /// stopped or while a server runs on it. Restore by serving the copy.
    Backup(BackupArgs),
    /// List the objects with stored data: namespace, id, name (empty for
    /// private rooms), tab-separated.
    List(ListArgs),
    /// Write stored keys, values, alarms and names to stdout as JSON lines
    /// (the store's id secret included: keep exports private).
    Export(ExportArgs),
    /// Read JSON lines made by `export` from stdin into a stopped data dir
    /// (created if missing).
    Import(ImportArgs),
    /// Cluster operations (the cargo feature `cluster`): `cluster init`
    /// writes a CA and the nodes' certificates, `cluster issue` more
    /// nodes' certificates from that CA; `drain`, `rebalance` and
    /// `restore-shard` ask a running node to move shards.
    #[cfg(feature = "cluster")]
    #[command(subcommand)]
    Cluster(crate::cluster::ClusterCommand),
}

/// The data dir of a tool.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDir {
    /// Directory of the store [default: the serve flag's, ./data].
    #[arg(long, env = "CHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// `backup` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Directory to write the copy into (created if missing; must not hold
    /// a store).
    #[arg(long)]
    to: PathBuf,
}

/// `list` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Only this namespace (`rooms`, `rate-limiters`).
    #[arg(long)]
    namespace: Option<String>,
}

/// `export` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Only this namespace (`rooms`, `rate-limiters`).
    #[arg(long)]
    namespace: Option<String>,
    /// Only the object with this id (64 hex digits).
    #[arg(long, conflicts_with = "name")]
    id: Option<String>,
    /// Only objects with this name (a room name, for `rooms`).
    #[arg(long)]
    name: Option<String>,
    /// Write to this file instead of stdout: created readable by the
    /// owner only (0600), and never over an existing file.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// `import` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    dir: DataDir,
}

/// Runs a tool. Blocking: call it off the async workers.
pub(crate) fn run(command: Command, default_dir: PathBuf) -> anyhow::Result<()> {
    let dir = |d: DataDir| d.data_dir.unwrap_or(default_dir);
    match command {
        Command::Serve(_) => Err(anyhow!("serve is not a tool")),
        Command::Backup(a) => backup(&dir(a.dir), &a.to),
        Command::List(a) => list(&dir(a.dir), a.namespace.as_deref()),
        Command::Export(a) => {
            let mut filter = ExportFilter {
                namespace: a.namespace,
                name: a.name,
                ..ExportFilter::default()
            };
            if let Some(id) = a.id {
                filter = filter
                    .with_id_hex(&id)
                    .with_context(|| format!("--id {id}"))?;
            }
            export(&dir(a.dir), &filter, a.output.as_deref())
        }
        Command::Import(a) => import(&dir(a.dir)),
        #[cfg(feature = "cluster")]
        Command::Cluster(c) => crate::cluster::run(c),
    }
}

/// Opens a data dir that must exist, with errors that say what to do.
fn open(dir: &Path) -> anyhow::Result<Admin> {
    Admin::open(dir).map_err(|e| match e {
        objects::Error::Storage(StorageError::DataDirInUse(_)) => anyhow!(
            "data dir {} is in use by a running server: stop it first \
             (only `backup` works on a running server's data dir)",
            dir.display()
        ),
        e => anyhow::Error::from(e).context(format!("opening the data dir {}", dir.display())),
    })
}

fn backup(dir: &Path, to: &Path) -> anyhow::Result<()> {
    let target = to.join("data.mdb");
    match Admin::open(dir) {
        Ok(admin) => {
            admin
                .backup(to)
                .with_context(|| format!("backing up to {}", to.display()))?;
            eprintln!(
                "backup: copied the stopped data dir {} to {}",
                dir.display(),
                target.display()
            );
        }
        Err(objects::Error::Storage(StorageError::DataDirInUse(_))) => {
            eprintln!(
                "backup: {} is in use by a running server; copying from a read-only \
                 snapshot beside it",
                dir.display()
            );
            Admin::backup_live(dir, to)
                .with_context(|| format!("backing up to {}", to.display()))?;
            eprintln!("backup: wrote {}", target.display());
        }
        Err(e) => {
            return Err(
                anyhow::Error::from(e).context(format!("opening the data dir {}", dir.display()))
            );
        }
    }
    Ok(())
}

fn list(dir: &Path, only: Option<&str>) -> anyhow::Result<()> {
    let admin = open(dir)?;
    let namespaces = admin.namespaces()?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut shown = 0;
    for ns in namespaces.keys() {
        if only.is_some_and(|o| o != ns) {
            continue;
        }
        let objects = admin.objects(ns)?;
        for o in &objects {
            writeln!(out, "{ns}\t{}\t{}", o.id, o.name.as_deref().unwrap_or(""))?;
        }
        eprintln!("list: {ns}: {} objects", objects.len());
        shown += 1;
    }
    if shown == 0 {
        eprintln!(
            "list: no objects{}",
            only.map(|o| format!(" in namespace {o:?}"))
                .unwrap_or_default()
        );
    }
    out.flush()?;
    Ok(())
}

fn export(dir: &Path, filter: &ExportFilter, output: Option<&Path>) -> anyhow::Result<()> {
    let admin = open(dir)?;
    let sink: Box<dyn Write> = match output {
        Some(path) => {
            Box::new(create_private(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    let (mut objects, mut keys, mut alarms) = (0, 0, 0);
    for entry in admin.export(filter)? {
        let entry = entry.context("reading the store")?;
        match &entry {
            Entry::Object(_) => {
                objects += 1;
                if objects % PROGRESS_EVERY == 0 {
                    eprintln!("export: {objects} objects, {keys} keys so far");
                }
            }
            Entry::Key { .. } => keys += 1,
            Entry::Alarm { .. } => alarms += 1,
            _ => {}
        }
        writeln!(out, "{}", entry.to_json_line()?).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    eprintln!("export: {objects} objects, {keys} keys, {alarms} alarms");
    Ok(())
}

fn import(dir: &Path) -> anyhow::Result<()> {
    let mut admin = Admin::create(dir).map_err(|e| match e {
        objects::Error::Storage(StorageError::DataDirInUse(_)) => anyhow!(
            "data dir {} is in use by a running server: import only into a stopped data dir",
            dir.display()
        ),
        e => anyhow::Error::from(e).context(format!("opening the data dir {}", dir.display())),
    })?;
    let line_no = Cell::new(0usize);
    let bad_line = Cell::new(false);
    let mut stdin = std::io::stdin().lock();
    let entries = std::iter::from_fn(|| {
        loop {
            let n = line_no.get() + 1;
            let line = match read_line(&mut stdin, MAX_LINE_BYTES) {
                Ok(None) => return None,
                Ok(Some(line)) => line,
                Err(e) => {
                    bad_line.set(true);
                    return Some(Err(e.context(format!("line {n}"))));
                }
            };
            line_no.set(n);
            if line.trim().is_empty() {
                continue;
            }
            return Some(Entry::from_json_line(&line).map_err(|e| {
                bad_line.set(true);
                anyhow!("line {n}: {e}")
            }));
        }
    });
    let mut next_report = PROGRESS_EVERY;
    let stats = admin
        .import(entries, |s| {
            if s.objects >= next_report {
                eprintln!(
                    "import: {} objects, {} keys, {} alarms so far",
                    s.objects, s.keys, s.alarms
                );
                next_report = (s.objects / PROGRESS_EVERY + 1) * PROGRESS_EVERY;
            }
        })
        .map_err(|e| {
            if bad_line.get() {
                e.context(
                    "import stopped; batches before this line were written: \
                     wipe the data dir before retrying",
                )
            } else {
                e.context(format!(
                    "importing (at or before line {}; batches before it were written: \
                     wipe the data dir before retrying)",
                    line_no.get()
                ))
            }
        })?;
    drop(admin);
    eprintln!(
        "import: {} objects, {} keys, {} alarms into {}",
        stats.objects,
        stats.keys,
        stats.alarms,
        dir.display()
    );
    Ok(())
}

/// Creates a new file only its owner may read or write (0600): exports
/// hold the id secret and every private room id.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Reads one line (without its `\n` or `\r\n`) of at most `max` bytes;
/// `None` at the end of the input. A longer line is an error before more
/// than `max + 1` bytes of it are held.
fn read_line(input: &mut impl BufRead, max: usize) -> anyhow::Result<Option<String>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = std::io::Read::take(&mut *input, limit)
        .read_until(b'\n', &mut buf)
        .context("reading stdin")?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > max {
        return Err(anyhow!(
            "longer than {max} bytes, more than any exported key and value can take: \
             not a line of `export`"
        ));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| anyhow!("not UTF-8: not a line of `export`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_up_to_the_limit() {
        let mut input = std::io::Cursor::new(b"abc\r\n\nfour\nfive5".to_vec());
        assert_eq!(
            read_line(&mut input, 5).expect("ok").as_deref(),
            Some("abc")
        );
        assert_eq!(read_line(&mut input, 5).expect("ok").as_deref(), Some(""));
        assert_eq!(
            read_line(&mut input, 5).expect("ok").as_deref(),
            Some("four")
        );
        assert_eq!(
            read_line(&mut input, 5).expect("ok").as_deref(),
            Some("five5")
        );
        assert_eq!(read_line(&mut input, 5).expect("ok"), None);

        let mut long = std::io::Cursor::new(b"123456\nok\n".to_vec());
        let error = read_line(&mut long, 5).expect_err("too long");
        assert!(error.to_string().contains("longer than 5 bytes"), "{error}");
        let mut exact = std::io::Cursor::new(b"12345\n".to_vec());
        assert_eq!(
            read_line(&mut exact, 5).expect("ok").as_deref(),
            Some("12345")
        );
        let mut bad = std::io::Cursor::new(b"\xff\n".to_vec());
        assert!(read_line(&mut bad, 5).is_err());
    }
}
