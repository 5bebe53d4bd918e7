//! The SQLite state store: opening (private file and directory, WAL, busy timeout, migrations)
//! and the single writer with group commit. Callers submit closures; the writer drains its
//! queue, runs many closures in one transaction, commits once, and only then answers each
//! caller. So an acknowledged request is committed.
//!
//! The daemon runs the writer as a task on its one event loop, beside the connections: a
//! request then reaches SQLite and its answer reaches the socket without a thread hop. On two
//! cores a separate writer thread cost more in wake-ups (four per request) than it gained in
//! parallelism: +5–9 % cycles/s at 16 clients and +25 % for a lone client without it
//! (docs/PERFORMANCE.md). A batch is short (tens of microseconds), and nothing may hold the
//! loop long: pruning goes in chunks, an operation running past `OP_TIME_LIMIT` is stopped,
//! and checkpoints (which fsync) run on a second connection on the blocking pool while the
//! writer waits.
//! Tests put the writer on a thread of its own (`Store::open_threaded`).
//!
//! Operations refuse (conflict, not found, quota…) before their first write, so a refusal
//! needs no undo and requests share the transaction without per-request savepoints (which cost
//! a statement pair and a sub-journal copy of every page touched). An operation that fails
//! *after* writing (in practice: an I/O or disk-full error) rolls the whole batch back; every
//! request of that batch is answered with an error, none was acknowledged, nothing half-done
//! is committed, and the rest of the queue continues in a new transaction.
//! This module knows nothing about HTTP or job semantics (see `queue`, `tokens`, `vmauth`).

pub mod schema;
mod walbuf;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};

/// Errors from the store and from the operations run inside it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job (or token, key) does not exist or is not visible to the caller.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (wrong status, lost lease).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A quota would be exceeded.
    #[error("{0}")]
    Quota(String),
    /// The request is malformed in a way only the store can see.
    #[error("{0}")]
    Invalid(String),
    /// The operation ran past `OP_TIME_LIMIT` and was stopped; nothing of it was stored.
    #[error(
        "the request ran longer than {} ms in the store and was stopped; narrow it \
         (a listing: filter by status, kind or requester, or lower its limit)",
        OP_TIME_LIMIT.as_millis()
    )]
    TooLong,
    /// The disk (or the database's size limit) is full; nothing was written.
    #[error("storage is full; the request was not stored")]
    Full,
    /// The database cannot be used (I/O error, corruption, shutdown).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Forbidden(_) => "forbidden",
            StoreError::Quota(_) => "quota",
            StoreError::Invalid(_) => "invalid",
            StoreError::TooLong => "too_long",
            StoreError::Full => "storage_full",
            StoreError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full,
            Some(ErrorCode::OperationInterrupted) => StoreError::TooLong,
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A request: run with `Some(conn)` inside the open transaction, or with `None` to fail it unrun.
type Op = Box<dyn FnOnce(Option<&Connection>) -> Ran + Send>;

/// What running an operation left behind: how to answer it once the transaction ends, and
/// whether it failed after writing (so the transaction must not be committed).
struct Ran {
    reply: Reply,
    torn: bool,
}

/// Cheap handle to the writer.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Most requests one transaction carries. Bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 512;

/// Size a checkpointed WAL is truncated back to. Above the frame threshold below, so under
/// load the log restarts in blocks the file already has instead of being truncated and grown
/// again (which cost the writer ~5 %); the file keeps at most this much disk after a load.
const JOURNAL_SIZE_LIMIT: i64 = 256 * 1024 * 1024;

/// WAL frames (pages) after which a busy writer checkpoints: 128 MiB of 4 KiB pages. Before,
/// only a 2 s timer bounded the log, which reached 250–400 MB under load; checkpointing much
/// more often (32 MiB) gained as much but raised the cycle p99 to 4–5 ms at 16 clients, as each
/// checkpoint's fsync waits for the log's dirty pages. Small in tests, to exercise the trigger.
const CHECKPOINT_FRAMES: i32 = if cfg!(test) { 2048 } else { 32768 };

/// Least time between two checkpoints taken when the writer is idle. Each checkpoint fsyncs the
/// WAL and the database; at 250 ms, a busy daemon with short idle gaps spent ~5 % of the writer
/// thread in checkpoint fsyncs, and copied hot pages more often than needed.
const IDLE_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest time a busy writer goes without a checkpoint, whatever the WAL's size.
const BUSY_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(2);

/// Least time between two checkpoints of a busy writer, should a reader keep one from
/// completing (the frame count then stays high). None in tests, which check the frame trigger.
const MIN_CHECKPOINT_GAP: std::time::Duration =
    std::time::Duration::from_millis(if cfg!(test) { 0 } else { 100 });

/// Longest an operation may run statements before SQLite stops it. The writer shares the event
/// loop with every connection, so a listing that scans millions of rows must not stall the
/// daemon; the budget is generous against the microseconds a normal request takes.
const OP_TIME_LIMIT: std::time::Duration =
    std::time::Duration::from_millis(if cfg!(test) { 200 } else { 1000 });

/// SQLite virtual-machine steps between two looks at the clock (a few microseconds of work).
const PROGRESS_STEPS: libc::c_int = 10_000;

thread_local! {
    /// When the running operation must stop (`None` between operations: commits, checkpoints
    /// and migrations are never interrupted).
    static OP_DEADLINE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };

    /// Frames in the WAL after the writer's last commit (set by the WAL hook on the thread that
    /// runs the writer, read there by `Writer::checkpoint_if_due`).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: libc::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(frames);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `path`. Calls are answered once the returned
    /// `Writer` runs (`Writer::run`, on the caller's event loop).
    pub fn open(path: &Path) -> Result<(Store, Writer), StoreError> {
        prepare_files(path)?;
        let mut conn = connect(path)?;
        schema::migrate(&mut conn)?;
        // Checkpoints (which fsync) are taken between batches: when the writer is idle, when the
        // WAL holds CHECKPOINT_FRAMES, or every 2 s, never inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.wal_hook(Some(note_wal_frames));
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(|| {
                OP_DEADLINE
                    .get()
                    .is_some_and(|d| std::time::Instant::now() >= d)
            }),
        );
        let checkpointer = connect(path)?;
        checkpointer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (tx, rx) = mpsc::channel::<Op>(4096);
        Ok((
            Store {
                tx,
                path: path.to_path_buf(),
            },
            Writer {
                conn,
                rx,
                checkpointer: Some(checkpointer),
                last_checkpoint: std::time::Instant::now(),
            },
        ))
    }

    /// Opens the database with its writer on a thread and event loop of its own, so tests can
    /// call from plain threads.
    #[cfg(test)]
    pub fn open_threaded(path: &Path) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let (store, writer) = Store::open(path)?;
        let unavailable =
            |e: std::io::Error| StoreError::Unavailable(format!("cannot start writer thread: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(unavailable)?;
        let handle = std::thread::Builder::new()
            .name("clf-sqlite".into())
            .spawn(move || rt.block_on(writer.run(std::future::pending())))
            .map_err(unavailable)?;
        Ok((store, handle))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's transaction and returns its value once committed.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, StoreError>>();
        let op = make_op(f, reply_tx);
        self.tx.send(op).await.map_err(|_| writer_stopped())?;
        reply_rx.await.map_err(|_| writer_stopped())?
    }

    /// Blocking variant for threads other than the writer's (tests).
    pub fn call_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, StoreError>>();
        let op = make_op(f, reply_tx);
        self.tx.blocking_send(op).map_err(|_| writer_stopped())?;
        reply_rx.blocking_recv().map_err(|_| writer_stopped())?
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the store's writer has stopped".into())
}

/// Wraps a caller's closure as an `Op` that answers on `reply_tx` once its transaction ended.
fn make_op<T, F>(f: F, reply_tx: oneshot::Sender<Result<T, StoreError>>) -> Op
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    Box::new(move |conn: Option<&Connection>| {
        let (out, torn) = match conn {
            Some(conn) => run_op(conn, f),
            None => (
                Err(StoreError::Unavailable(
                    "transaction could not begin".into(),
                )),
                false,
            ),
        };
        Ran {
            reply: Box::new(move |ended: Result<(), StoreError>| {
                // The operation's own error comes first; otherwise the transaction's outcome.
                let _ = reply_tx.send(out.and_then(|v| ended.map(|()| v)));
            }),
            torn,
        }
    })
}

/// Runs one operation inside the batch's transaction. Returns its result and whether it
/// failed after changing rows.
fn run_op<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, bool) {
    let before = conn.total_changes();
    OP_DEADLINE.set(Some(std::time::Instant::now() + OP_TIME_LIMIT));
    let out = f(conn);
    OP_DEADLINE.set(None);
    let torn = out.is_err() && conn.total_changes() != before;
    // Refusals are audited although the refused operation fails: `audit::denied` kept them.
    match crate::orchestrator::audit::flush(conn) {
        Ok(()) => (out, torn),
        Err(e) => (out.and(Err(e)), true),
    }
}

/// The store's one connection and its queue of operations.
pub struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    /// A second connection that checkpoints on the blocking pool while the writer waits, so the
    /// checkpoint's fsync does not hold the event loop. `None` while lent out, or for good if
    /// the pool is gone (then the writer's own connection checkpoints).
    checkpointer: Option<Connection>,
    last_checkpoint: std::time::Instant,
}

impl Writer {
    /// Serves the queue on the current event loop: each batch runs synchronously, then the
    /// writer yields, so the loop writes the answers and reads what arrived meanwhile; those
    /// requests then go into the next transaction together. Ends when every `Store` handle is
    /// gone or `close` completes (later calls fail; queued ones still run), after a final
    /// checkpoint.
    pub async fn run(mut self, close: impl std::future::Future<Output = ()>) {
        let mut close = std::pin::pin!(close);
        let mut closing = false;
        // Ops not yet run; a torn batch leaves the rest here for the next transaction.
        let mut batch: std::collections::VecDeque<Op> =
            std::collections::VecDeque::with_capacity(MAX_BATCH);
        let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
        loop {
            if batch.is_empty() {
                let first = match self.rx.try_recv() {
                    Ok(op) => op,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.checkpoint_if_due(true).await;
                        let next = tokio::select! {
                            op = self.rx.recv() => op,
                            () = &mut close, if !closing => {
                                closing = true;
                                self.rx.close();
                                self.rx.recv().await
                            }
                        };
                        match next {
                            Some(op) => op,
                            None => break,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                };
                batch.push_back(first);
            }
            self.checkpoint_if_due(false).await;
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => batch.push_back(op),
                    Err(_) => break,
                }
            }
            run_batch(&self.conn, &mut batch, &mut replies);
            tokio::task::yield_now().await;
        }
        // Nothing more can arrive (a torn batch's leftovers were run above): fold the WAL back.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }

    /// Checkpoints between batches, never inside a commit, when one is due (`idle`: no request
    /// is waiting). It runs on the spare connection on the blocking pool, so the fsync does not
    /// hold the event loop; no batch runs meanwhile, so it copies every frame and the log can
    /// restart.
    async fn checkpoint_if_due(&mut self, idle: bool) {
        let since = self.last_checkpoint.elapsed();
        let due = if idle {
            since >= IDLE_CHECKPOINT
        } else {
            since >= BUSY_CHECKPOINT
                || (WAL_FRAMES.get() >= CHECKPOINT_FRAMES && since >= MIN_CHECKPOINT_GAP)
        };
        if !due {
            return;
        }
        match self.checkpointer.take() {
            Some(c) => {
                let lent = tokio::task::spawn_blocking(move || {
                    checkpoint(&c);
                    c
                });
                // A pool that is shutting down drops the connection; the writer's own takes over.
                self.checkpointer = lent.await.ok();
            }
            None => checkpoint(&self.conn),
        }
        self.last_checkpoint = std::time::Instant::now();
    }
}

/// Runs `batch` in one transaction and answers each request once it ended. A request that
/// fails after writing ends the transaction early (rolled back); the rest stay in `batch`.
fn run_batch(
    conn: &Connection,
    batch: &mut std::collections::VecDeque<Op>,
    replies: &mut Vec<Reply>,
) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").map_err(StoreError::from) {
        tracing::error!(event = "orchestrator.store_error", error = %e, "cannot begin transaction");
        for op in batch.drain(..) {
            // Not run; its caller sees the error through the reply.
            (op(None).reply)(Err(clone_err(&e)));
        }
        return;
    }
    let mut torn = false;
    while let Some(op) = batch.pop_front() {
        let ran = op(Some(conn));
        replies.push(ran.reply);
        if ran.torn {
            torn = true;
            break;
        }
    }
    let ended = if torn {
        tracing::error!(
            event = "orchestrator.store_error",
            requests = replies.len(),
            "a request failed after writing; its batch was rolled back"
        );
        let _ = exec(conn, "ROLLBACK");
        Err(StoreError::Unavailable(
            "the transaction was rolled back (another request in it failed while writing); \
             nothing of this request was stored; retry"
                .into(),
        ))
    } else {
        let committed = exec(conn, "COMMIT").map_err(StoreError::from);
        if let Err(e) = &committed {
            tracing::error!(event = "orchestrator.store_error", error = %e, "commit failed; batch rolled back");
            let _ = exec(conn, "ROLLBACK");
        }
        committed
    };
    for reply in replies.drain(..) {
        reply(match &ended {
            Ok(()) => Ok(()),
            Err(e) => Err(clone_err(e)),
        });
    }
}

/// Runs a transaction statement from the statement cache: parsing BEGIN/COMMIT on every
/// batch showed up in profiles.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(event = "orchestrator.store_error", error = %e, "checkpoint failed");
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full => StoreError::Full,
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Process-wide SQLite settings for the daemon. Call before any connection is opened, while
/// no other thread uses SQLite (`sqlite3_config` is not thread-safe); later calls do nothing.
/// Turns off SQLite's allocation statistics, which take a global mutex around every malloc
/// and free and which nothing here reads.
pub fn tune_sqlite_process() {
    // SAFETY: called at daemon start before SQLite is initialised; on an initialised library it
    // returns SQLITE_MISUSE and changes nothing. The variadic argument is the documented int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as libc::c_int)
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(
            rc,
            "SQLite was already initialised; memory statistics stay on"
        );
    }
}

/// Makes the state directory private (0700) and the database file 0600 before SQLite touches
/// it. Must run before this process opens a connection: closing any descriptor of the database
/// file drops every POSIX lock the process holds on it, SQLite's included, and another process
/// (`sqlite3` closing) would then see the WAL unused and delete it under the open daemon.
fn prepare_files(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().ok_or_else(|| {
        StoreError::Unavailable(format!("'{}' has no parent directory", path.display()))
    })?;
    prepare_private_dir(dir)?;
    let io = |e: std::io::Error| StoreError::Unavailable(format!("'{}': {e}", path.display()));
    // Create the file with its final mode before any byte is written.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    drop(f);
    Ok(())
}

/// Opens a connection with WAL, NORMAL sync (durable across a process crash; a power loss may
/// drop the last few hundred milliseconds), a busy timeout and foreign keys. Call
/// `prepare_files` first.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match walbuf::register() {
        Ok(()) => Connection::open_with_flags_and_vfs(path, flags, walbuf::NAME)?,
        Err(rc) => {
            tracing::warn!(
                rc,
                "cannot register the WAL write shim; using the default VFS"
            );
            Connection::open_with_flags(path, flags)?
        }
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn prepare_private_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Unavailable(format!("'{}': {e}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(StoreError::Unavailable(format!(
            "'{}' is not a directory",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(StoreError::Unavailable(format!(
            "state directory '{}' is owned by uid {}, not by us (uid {me})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        tracing::warn!(event = "orchestrator.state_dir_tightened", dir = %dir.display(), "state directory was not private; set to 0700");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_past_its_time_limit_is_stopped_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _h) = Store::open_threaded(&dir.path().join("db.sqlite")).unwrap();
        let started = std::time::Instant::now();
        let err = store
            .call_blocking(|c| {
                Ok(c.query_row(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) \
                     SELECT count(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLong), "{err}");
        assert!(
            started.elapsed() < OP_TIME_LIMIT * 5,
            "{:?}",
            started.elapsed()
        );
        // Commits and the next operations are not affected.
        store
            .call_blocking(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .unwrap();
        let n: i64 = store
            .call_blocking(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn fresh_database_is_private_and_current() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/db.sqlite");
        let (store, _h) = Store::open_threaded(&state).unwrap();
        let v: i64 = store
            .call_blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(v, schema::CURRENT);
        let m = std::fs::metadata(&state).unwrap().mode() & 0o777;
        assert_eq!(m, 0o600);
        let m = std::fs::metadata(state.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(m, 0o700);
    }

    /// Runs `ops` (value to insert, whether to fail, whether that failure comes after the
    /// insert) as one batch: the writer is held busy while they queue up, in order. Returns
    /// each result and the sum of the committed values.
    fn one_batch(ops: &[(i64, bool, bool)]) -> (Vec<Result<(), StoreError>>, i64) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _h) = Store::open_threaded(&dir.path().join("db.sqlite")).unwrap();
        store
            .call_blocking(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.call_blocking(move |_| {
                    held_tx.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(100 * 4));
                    Ok(())
                })
            })
        };
        held_rx.recv().unwrap();
        let threads: Vec<_> = ops
            .iter()
            .map(|&(x, fail, after_write)| {
                let store = store.clone();
                let t = std::thread::spawn(move || {
                    store.call_blocking(move |c| {
                        if fail && !after_write {
                            return Err(StoreError::Conflict("refused".into()));
                        }
                        c.execute("INSERT INTO t VALUES (?1)", [x])?;
                        if fail {
                            return Err(StoreError::Unavailable("simulated I/O error".into()));
                        }
                        Ok(())
                    })
                });
                // Keep the queue order.
                std::thread::sleep(std::time::Duration::from_millis(50));
                t
            })
            .collect();
        holder.join().unwrap().unwrap();
        let results = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let sum = store
            .call_blocking(|c| {
                Ok(c.query_row("SELECT coalesce(sum(x), 0) FROM t", [], |r| r.get(0))?)
            })
            .unwrap();
        (results, sum)
    }

    #[test]
    fn a_refusal_does_not_undo_its_batch_neighbours() {
        let (r, sum) = one_batch(&[(1, false, false), (10, true, false), (100, false, false)]);
        assert!(r[0].is_ok() && r[2].is_ok());
        assert!(matches!(r[1], Err(StoreError::Conflict(_))));
        assert_eq!(sum, 101);
    }

    #[test]
    fn a_request_failing_after_writing_rolls_back_its_batch_and_nothing_else() {
        let (r, sum) = one_batch(&[(1, false, false), (10, true, true), (100, false, false)]);
        // The request before the torn one shared its transaction: refused, not half-committed.
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .to_string()
                .contains("rolled back")
        );
        assert!(r[1].as_ref().unwrap_err().to_string().contains("simulated"));
        // The one after it ran in a fresh transaction and was committed.
        assert!(r[2].is_ok());
        assert_eq!(sum, 100);
    }

    /// A busy writer checkpoints by WAL size: 64 MiB of commits in a row keep the log near
    /// CHECKPOINT_FRAMES (8 MiB in tests) instead of growing until a timer fires.
    #[test]
    fn a_busy_writer_checkpoints_by_wal_size() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let (store, _h) = Store::open_threaded(&db).unwrap();
        store
            .call_blocking(|c| Ok(c.execute_batch("CREATE TABLE t (x BLOB)")?))
            .unwrap();
        let wal = dir.path().join("db.sqlite-wal");
        let mut largest = 0;
        for _ in 0..1024 {
            store
                .call_blocking(|c| Ok(c.execute("INSERT INTO t VALUES (zeroblob(65536))", [])?))
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        assert!(largest < 16 << 20, "WAL grew to {largest} bytes");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.sqlite");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch("PRAGMA user_version = 99").unwrap();
        }
        let err = Store::open_threaded(&p).unwrap_err();
        assert!(err.to_string().contains("newer"));
    }
}
