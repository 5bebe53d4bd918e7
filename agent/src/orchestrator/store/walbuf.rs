//! A SQLite VFS shim over the platform VFS that writes each commit's WAL frames with one
//! `pwrite` instead of two per page.
//!
//! SQLite appends a frame as two writes (a 24-byte header, then the page), so a commit of n
//! pages costs 2n system calls and, because frames are not page-aligned, about 3n page-cache
//! page writes. The shim collects contiguous appends to a WAL file in memory and writes them
//! as one block when the *commit frame* is complete, that is before the `xWrite` that ends the
//! commit returns, so before `COMMIT` returns: an acknowledged transaction is in the kernel's
//! page cache exactly as without the shim (kill -9 loses nothing). Anything else that touches
//! the file (read, sync, truncate, size, file control, close, a write that is not an append)
//! writes the pending bytes first, so SQLite never sees the file differ from what it wrote.
//! Only WAL files are wrapped in behaviour; other files pass straight through.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// Name to pass to `sqlite3_open_v2` (and `Connection::open_with_flags_and_vfs`).
pub const NAME: &CStr = c"clf-walbuf";

/// Size of a WAL frame header; its bytes 4..8 are non-zero on a transaction's commit frame.
const FRAME_HEADER: usize = 24;
/// Largest write handed to the platform VFS: the unix VFS writes at most 128 KiB - 1 bytes per
/// call (it masks the length), so a larger block goes as several writes.
const MAX_WRITE: usize = 64 * 1024;
/// Pending bytes beyond which a large transaction is written out before its commit.
const MAX_PENDING: usize = 1 << 20;

/// Our file: SQLite sees `base` (whose methods are ours); the platform's file follows.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// Non-null for WAL files: the appends not yet written.
    pending: *mut Pending,
    inner: ffi::sqlite3_file, // really `parent.szOsFile` bytes; see `vfs_file_size`.
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// File offset of `bytes[0]`.
    offset: i64,
    /// Offset just past the last byte SQLite wrote: a write here is an append.
    next: i64,
    /// The last write was the header of a commit frame: the next one (its page) ends the commit.
    commit_header_seen: bool,
}

static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();

/// Registers the shim (once per process) over the default VFS. Returns SQLite's error code if
/// that fails; callers then open connections without it.
pub fn register() -> Result<(), c_int> {
    *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, valid for the process
        // lifetime; we copy it and leak the copy, which SQLite keeps a pointer to.
        unsafe {
            let rc = ffi::sqlite3_initialize();
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            let parent = ffi::sqlite3_vfs_find(std::ptr::null());
            if parent.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs: ffi::sqlite3_vfs = *parent;
            vfs.szOsFile = vfs_file_size((*parent).szOsFile);
            vfs.zName = NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            // Every other method is the parent's: they take the same arguments, and of the
            // VFS object they read only mxPathname, which the copy keeps. pAppData (read
            // only by the parent's xOpen, which gets the parent) now finds the parent.
            vfs.pAppData = parent.cast();
            vfs.xOpen = Some(x_open);
            let vfs = Box::into_raw(Box::new(vfs));
            let rc = ffi::sqlite3_vfs_register(vfs, 0);
            if rc != ffi::SQLITE_OK {
                drop(Box::from_raw(vfs));
                return Err(rc);
            }
            Ok(())
        }
    })
}

fn vfs_file_size(parent: c_int) -> c_int {
    let head = std::mem::offset_of!(File, inner);
    (head + parent.max(0) as usize) as c_int
}

unsafe fn parent(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY (caller): `vfs` is ours; pAppData holds the parent set in `register`.
    unsafe { (*vfs).pAppData.cast() }
}

unsafe fn inner(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY (caller): `f` is a `File` allocated with our szOsFile.
    unsafe { std::ptr::addr_of_mut!((*f.cast::<File>()).inner) }
}

unsafe fn methods(f: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY (caller): the inner file was opened successfully, so its methods are set.
    unsafe { &*(*inner(f)).pMethods }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us `szOsFile` bytes at `f`; the parent opens into the tail.
    unsafe {
        let file = f.cast::<File>();
        (*file).base.pMethods = std::ptr::null();
        (*file).pending = std::ptr::null_mut();
        let parent = parent(vfs);
        let inner = inner(f);
        (*inner).pMethods = std::ptr::null();
        let open = (*parent).xOpen.expect("the platform VFS has xOpen");
        let rc = open(parent, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // A VFS may leave methods set on failure; then its xClose is owed a call, and
            // SQLite will not make it through our (unset) methods.
            if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner);
            }
            return rc;
        }
        if (*inner).pMethods.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            let mut p = Pending::default();
            p.bytes.reserve(64 * 1024);
            (*file).pending = Box::into_raw(Box::new(p));
        }
        (*file).base.pMethods = io_methods((*(*inner).pMethods).iVersion);
        rc
    }
}

/// Writes the pending appends, if any. A failed write drops them, as a failed `pwrite` would
/// have: SQLite sees the error on the write or read that caused the flush and rolls back.
unsafe fn flush(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY (caller): `f` is an open `File`.
    unsafe {
        let p = (*f.cast::<File>()).pending;
        if p.is_null() || (*p).bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let p = &mut *p;
        let write = methods(f).xWrite.expect("xWrite");
        let mut rc = ffi::SQLITE_OK;
        let mut at = p.offset;
        for chunk in p.bytes.chunks(MAX_WRITE) {
            rc = write(inner(f), chunk.as_ptr().cast(), chunk.len() as c_int, at);
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        p.bytes.clear();
        if p.bytes.capacity() > MAX_PENDING {
            // A large transaction grew the buffer; do not keep that memory while idle.
            p.bytes.shrink_to(64 * 1024);
        }
        rc
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data` and an open file.
    unsafe {
        let p = (*f.cast::<File>()).pending;
        if p.is_null() || amount <= 0 {
            return methods(f).xWrite.expect("xWrite")(inner(f), data, amount, offset);
        }
        let p = &mut *p;
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
        let ends_commit = p.commit_header_seen;
        p.commit_header_seen = bytes.len() == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0];
        let appends = offset == p.next;
        p.next = offset + i64::from(amount);
        if !appends {
            // A rewrite in place (checksums after an overwritten frame, a page written twice
            // in one transaction) or the log restarting at its header: in order, now.
            let rc = flush(f);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            return methods(f).xWrite.expect("xWrite")(inner(f), data, amount, offset);
        }
        if p.bytes.is_empty() {
            p.offset = offset;
        }
        p.bytes.extend_from_slice(bytes);
        if ends_commit || p.bytes.len() >= MAX_PENDING {
            return flush(f);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open file once; we free our buffer after the inner close.
    unsafe {
        let flushed = flush(f);
        let closed = methods(f).xClose.expect("xClose")(inner(f));
        let file = f.cast::<File>();
        if !(*file).pending.is_null() {
            drop(Box::from_raw((*file).pending));
            (*file).pending = std::ptr::null_mut();
        }
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Forwards a method to the platform's file, writing pending appends first.
macro_rules! flushing {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls with an open file and arguments valid for the method.
            unsafe {
                let rc = flush(f);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                methods(f).$method.expect(stringify!($method))(inner(f) $(, $arg)*)
            }
        }
    };
}

/// Forwards a method that does not touch the file's bytes.
macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls with an open file and arguments valid for the method.
            unsafe { methods(f).$method.expect(stringify!($method))(inner(f) $(, $arg)*) }
        }
    };
}

flushing!(x_read, xRead, (buf: *mut c_void, amount: c_int, offset: i64));
flushing!(x_truncate, xTruncate, (size: i64));
flushing!(x_sync, xSync, (flags: c_int));
flushing!(x_file_size, xFileSize, (size: *mut i64));
flushing!(x_file_control, xFileControl, (op: c_int, arg: *mut c_void));
flushing!(x_fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void));
forward!(x_lock, xLock, (level: c_int) -> c_int);
forward!(x_unlock, xUnlock, (level: c_int) -> c_int);
forward!(x_check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int);
forward!(x_sector_size, xSectorSize, () -> c_int);
forward!(x_device_characteristics, xDeviceCharacteristics, () -> c_int);
forward!(x_shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int);
forward!(x_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int);
forward!(x_shm_unmap, xShmUnmap, (delete: c_int) -> c_int);
forward!(x_unfetch, xUnfetch, (offset: i64, p: *mut c_void) -> c_int);

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: as for the other forwards.
    unsafe { methods(f).xShmBarrier.expect("xShmBarrier")(inner(f)) }
}

/// Our methods, at the platform file's version (SQLite calls only what that version has).
fn io_methods(version: c_int) -> *const ffi::sqlite3_io_methods {
    static METHODS: OnceLock<[IoMethods; 4]> = OnceLock::new();
    let all = METHODS.get_or_init(|| {
        std::array::from_fn(|v| {
            let v = v as c_int;
            IoMethods(ffi::sqlite3_io_methods {
                iVersion: v,
                xClose: Some(x_close),
                xRead: Some(x_read),
                xWrite: Some(x_write),
                xTruncate: Some(x_truncate),
                xSync: Some(x_sync),
                xFileSize: Some(x_file_size),
                xLock: Some(x_lock),
                xUnlock: Some(x_unlock),
                xCheckReservedLock: Some(x_check_reserved_lock),
                xFileControl: Some(x_file_control),
                xSectorSize: Some(x_sector_size),
                xDeviceCharacteristics: Some(x_device_characteristics),
                xShmMap: (v >= 2).then_some(x_shm_map as _),
                xShmLock: (v >= 2).then_some(x_shm_lock as _),
                xShmBarrier: (v >= 2).then_some(x_shm_barrier as _),
                xShmUnmap: (v >= 2).then_some(x_shm_unmap as _),
                xFetch: (v >= 3).then_some(x_fetch as _),
                xUnfetch: (v >= 3).then_some(x_unfetch as _),
            })
        })
    });
    &all[version.clamp(1, 3) as usize].0
}

struct IoMethods(ffi::sqlite3_io_methods);
// SAFETY: plain function pointers, never mutated after initialisation.
unsafe impl Send for IoMethods {}
unsafe impl Sync for IoMethods {}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::path::Path;

    fn open(path: &Path) -> Connection {
        register().unwrap();
        let c = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            NAME,
        )
        .unwrap();
        // A small page cache spills pages mid-transaction, so frames get rewritten in place
        // and their checksums rewritten after the commit frame.
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;
             PRAGMA cache_size=20;
             CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        c
    }

    fn sum(c: &Connection) -> i64 {
        c.query_row("SELECT coalesce(sum(k), 0) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// What a kill -9 right after COMMIT leaves: the database and WAL files as the kernel has
    /// them (no shared-memory index), opened elsewhere so SQLite recovers from the WAL and
    /// checks every frame's checksum.
    fn recovered_sum(path: &Path, scratch: &Path) -> i64 {
        let _ = std::fs::remove_dir_all(scratch);
        std::fs::create_dir_all(scratch).unwrap();
        let copy = scratch.join("db.sqlite");
        std::fs::copy(path, &copy).unwrap();
        let wal = path.with_extension("sqlite-wal");
        if wal.exists() {
            std::fs::copy(&wal, copy.with_extension("sqlite-wal")).unwrap();
        }
        let c = Connection::open(&copy).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        sum(&c)
    }

    /// After every commit, both another connection on the platform VFS (which reads the file,
    /// not our buffer) and a recovery from the files alone see it.
    #[test]
    fn every_commit_is_in_the_file_when_commit_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut writer = open(&path);
        let reader = Connection::open(&path).unwrap();
        let mut expected = 0i64;
        for round in 0..120i64 {
            let tx = writer.transaction().unwrap();
            // Transactions of one page to a few hundred, some beyond MAX_PENDING.
            let rows = 1 + (round * 37) % 60;
            for i in 0..rows {
                let len = 512 + ((round * 131 + i) % 20_000) as usize;
                let blob = vec![(round % 251) as u8; len];
                tx.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    rusqlite::params![round * 1000 + i, blob],
                )
                .unwrap();
                expected += round * 1000 + i;
            }
            // Touches pages already written to this transaction's frames.
            tx.execute(
                "UPDATE t SET v = zeroblob(100) WHERE k = ?1",
                [round * 1000],
            )
            .unwrap();
            tx.commit().unwrap();
            assert_eq!(sum(&reader), expected, "round {round}: live reader");
            if round % 7 == 0 {
                let scratch = dir.path().join("crash");
                assert_eq!(
                    recovered_sum(&path, &scratch),
                    expected,
                    "round {round}: recovery"
                );
            }
            if round % 40 == 39 {
                writer
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                    .unwrap();
            }
        }
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error() {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = Connection::open_with_flags_and_vfs(
            dir.path(), // a directory, not a database file
            OpenFlags::SQLITE_OPEN_READ_WRITE,
            NAME,
        )
        .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
        .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::CannotOpen)
        );
    }

    #[test]
    fn a_rolled_back_transaction_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut c = open(&path);
        c.execute("INSERT INTO t (k, v) VALUES (1, x'01')", [])
            .unwrap();
        {
            let tx = c.transaction().unwrap();
            for i in 2..2000i64 {
                tx.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(3000))", [i])
                    .unwrap();
            }
            tx.rollback().unwrap();
        }
        c.execute("INSERT INTO t (k, v) VALUES (5, x'05')", [])
            .unwrap();
        assert_eq!(recovered_sum(&path, &dir.path().join("crash")), 6);
        drop(c);
        assert_eq!(sum(&Connection::open(&path).unwrap()), 6);
    }
}
