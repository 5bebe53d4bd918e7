//! `secrets.store`: no installed secret value appears in the system closure. The values are
//! read from the installed files into `SecretBytes`, searched with one Aho-Corasick automaton
//! over every file of `/run/current-system`'s closure (`nix-store -qR`), or of the store under
//! `--root`. Findings name the store file and the secret, never the value. Bounded in time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;

use crate::secret::SecretBytes;
use crate::verify::host::Host;
use crate::verify::manifest::Manifest;
use crate::verify::report::Check;

const ID: &str = "secrets.store";
/// Values shorter than this match too much by chance to mean anything.
pub const MIN_LEN: usize = 8;

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// (store file, secret name)
    pub hits: Vec<(PathBuf, String)>,
    pub files_scanned: usize,
    pub files_total: usize,
    pub bytes_scanned: u64,
    /// Files that could not be read (a scan that skipped them proves nothing about them).
    pub unreadable: Vec<PathBuf>,
    pub timed_out: bool,
    /// Per root: every file read and no hit.
    pub clean_roots: Vec<bool>,
}

/// Files (not following symlinks) under each root, tagged with the root's index.
pub fn list_files(roots: &[PathBuf]) -> Vec<(usize, PathBuf)> {
    let mut out = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let mut stack = vec![root.clone()];
        while let Some(p) = stack.pop() {
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            } else if md.is_file() {
                out.push((i, p));
            }
        }
    }
    out
}

/// Searches `files` for any of `values` (named by `names`), in parallel, within `budget`.
pub fn scan(
    files: &[(usize, PathBuf)],
    n_roots: usize,
    names: &[String],
    values: &[SecretBytes],
    budget: Duration,
) -> ScanResult {
    let start = Instant::now();
    let mut res = ScanResult {
        files_total: files.len(),
        clean_roots: vec![true; n_roots],
        ..Default::default()
    };
    if values.is_empty() || files.is_empty() {
        return res;
    }
    // Exposing the values only to build the automaton, which lives no longer than this call.
    let ac = AhoCorasick::new(values.iter().map(|v| v.expose()))
        .expect("aho-corasick builds for plain literals");
    let remaining: Vec<AtomicUsize> = (0..n_roots).map(|_| AtomicUsize::new(0)).collect();
    for (r, _) in files {
        remaining[*r].fetch_add(1, Ordering::Relaxed);
    }
    let dirty: Vec<AtomicBool> = (0..n_roots).map(|_| AtomicBool::new(false)).collect();
    let next = AtomicUsize::new(0);
    let scanned = AtomicUsize::new(0);
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let hits = Mutex::new(BTreeSet::new());
    let unreadable = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    if start.elapsed() > budget {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((root, f)) = files.get(i) else {
                        return;
                    };
                    match std::fs::read(f) {
                        Err(_) => {
                            dirty[*root].store(true, Ordering::Relaxed);
                            unreadable.lock().expect("unreadable lock").push(f.clone());
                        }
                        Ok(data) => {
                            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                            let mut found = BTreeSet::new();
                            for m in ac.find_overlapping_iter(&data) {
                                found.insert(m.pattern().as_usize());
                            }
                            if !found.is_empty() {
                                dirty[*root].store(true, Ordering::Relaxed);
                                let mut h = hits.lock().expect("hits lock");
                                for id in found {
                                    h.insert((f.clone(), names[id].clone()));
                                }
                            }
                            scanned.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    remaining[*root].fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
    });
    res.hits = hits.into_inner().expect("hits lock").into_iter().collect();
    res.unreadable = unreadable.into_inner().expect("unreadable lock");
    res.files_scanned = scanned.load(Ordering::Relaxed);
    res.bytes_scanned = bytes.load(Ordering::Relaxed);
    res.timed_out =
        stop.load(Ordering::Relaxed) && res.files_scanned + res.unreadable.len() < res.files_total;
    res.clean_roots = (0..n_roots)
        .map(|r| remaining[r].load(Ordering::Relaxed) == 0 && !dirty[r].load(Ordering::Relaxed))
        .collect();
    res
}

/// Store paths already found clean for the current set of secret values. Store paths are
/// immutable, so a clean path stays clean until a secret changes; the fingerprint (salted
/// SHA-256 over every name and value) detects that. Kept root-only under /var/lib.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ScanCache {
    salt: String,
    fingerprint: String,
    clean: Vec<String>,
}

const CACHE_PATH: &str = "/var/lib/clawdlets/verify/store-scan.json";

fn fingerprint(salt: &str, names: &[String], values: &[SecretBytes]) -> String {
    use sha2::{Digest, Sha256};
    let mut pairs: Vec<(&String, &SecretBytes)> = names.iter().zip(values).collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    for (n, v) in pairs {
        h.update((n.len() as u64).to_be_bytes());
        h.update(n.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        // Hashing the value (salted) only to notice when secrets change.
        h.update(v.expose());
    }
    hex::encode(h.finalize())
}

fn load_cache(host: &Host) -> ScanCache {
    std::fs::read_to_string(host.path(CACHE_PATH))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_cache(host: &Host, cache: &ScanCache) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = host.path(CACHE_PATH);
    let dir = path.parent().expect("cache path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(".store-scan.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(
        serde_json::to_string(cache)
            .expect("cache serializes")
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The closure to scan: `nix-store -qR /run/current-system` on the live host, else the whole
/// store directory under `--root`.
fn closure(host: &Host) -> Result<Option<(String, Vec<PathBuf>)>, String> {
    if host.is_live() && Path::new("/run/current-system").exists() {
        let out = host
            .runner
            .run("nix-store", &["-qR", "/run/current-system"])
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "`nix-store -qR /run/current-system` failed: {}",
                out.stderr.trim()
            ));
        }
        let paths: Vec<PathBuf> = out.stdout.lines().map(PathBuf::from).collect();
        return Ok(Some((
            format!(
                "closure of /run/current-system ({} store paths)",
                paths.len()
            ),
            paths,
        )));
    }
    let store = host.path("/nix/store");
    if store.is_dir() {
        let paths: Vec<PathBuf> = std::fs::read_dir(&store)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .collect();
        return Ok(Some((
            format!("{} ({} store paths)", store.display(), paths.len()),
            paths,
        )));
    }
    Ok(None)
}

pub fn run(host: &Host) -> Check {
    let Some(mpath) = host.manifest_file() else {
        return Check::skip(
            ID,
            "no secrets manifest (--manifest or secretsManifest): no values to look for",
        );
    };
    let m = match Manifest::load(&mpath) {
        Ok(m) => m,
        Err(e) => {
            return Check::inconclusive(
                ID,
                vec![e.to_string()],
                "pass --manifest with the manifest the host uses",
            );
        }
    };
    let (scope, roots) = match closure(host) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Check::skip(ID, "no /run/current-system and no nix store under the root");
        }
        Err(e) => {
            return Check::inconclusive(ID, vec![e], "run on the host with nix-store on PATH");
        }
    };
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut short = 0usize;
    let mut unreadable = Vec::new();
    // The symlink's target is a host path: resolve it under --root.
    let dir = match std::fs::read_link(host.path(&m.symlink_path)) {
        Ok(t) if t.is_absolute() => host.path(t),
        _ => host.path(&m.symlink_path),
    };
    for s in &m.secrets {
        let p = dir.join(&s.name);
        match std::fs::read(&p) {
            Ok(v) => {
                let v = SecretBytes::new(v);
                // Also look for the value without a trailing newline: files often end in one.
                let trimmed = v
                    .expose()
                    .strip_suffix(b"\n")
                    .map(|t| SecretBytes::new(t.to_vec()));
                let candidate = trimmed.unwrap_or(v);
                if candidate.len() < MIN_LEN {
                    short += 1;
                    continue;
                }
                names.push(s.name.clone());
                values.push(candidate);
            }
            Err(e) => unreadable.push(format!("{}: {e}", s.name)),
        }
    }
    let budget = Duration::from_secs(host.cfg.store_scan_timeout_secs.unwrap_or(20));
    let t0 = Instant::now();
    let mut cache = load_cache(host);
    if cache.salt.is_empty() {
        use rand::RngCore;
        let mut salt = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        cache.salt = hex::encode(salt);
    }
    let fp = fingerprint(&cache.salt, &names, &values);
    if cache.fingerprint != fp {
        cache.fingerprint = fp;
        cache.clean.clear();
    }
    let known: std::collections::HashSet<&str> = cache.clean.iter().map(String::as_str).collect();
    let key = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (cached, todo): (Vec<PathBuf>, Vec<PathBuf>) = roots
        .into_iter()
        .partition(|r| known.contains(key(r).as_str()));
    let files = list_files(&todo);
    let r = scan(
        &files,
        todo.len(),
        &names,
        &values,
        budget.saturating_sub(t0.elapsed()),
    );
    let mut ev = vec![format!(
        "{} values searched in {} files ({} MiB) of the {scope} in {} ms; {} store paths known clean from earlier runs",
        values.len(),
        r.files_scanned,
        r.bytes_scanned / (1 << 20),
        t0.elapsed().as_millis(),
        cached.len()
    )];
    // Remember what is now known clean (only paths read completely without a hit).
    let mut clean: Vec<String> = cached.iter().map(key).collect();
    clean.extend(
        todo.iter()
            .zip(&r.clean_roots)
            .filter(|(_, c)| **c)
            .map(|(p, _)| key(p)),
    );
    clean.sort();
    clean.dedup();
    if clean != cache.clean {
        cache.clean = clean;
        if let Err(e) = save_cache(host, &cache) {
            ev.push(format!("scan cache not saved ({CACHE_PATH}): {e}"));
        }
    }
    if short > 0 {
        ev.push(format!(
            "{short} values shorter than {MIN_LEN} bytes not searched"
        ));
    }
    if !r.hits.is_empty() {
        for (f, n) in r.hits.iter().take(20) {
            ev.push(format!("secret {n} appears in {}", f.display()));
        }
        return Check::fail(
            ID,
            ev,
            "a secret value is in the world-readable Nix store: rotate it now, then reference it through sops/`clawdlets secrets` instead of a Nix string",
        );
    }
    if !r.unreadable.is_empty() {
        ev.push(format!(
            "{} store files could not be read, e.g. {}",
            r.unreadable.len(),
            r.unreadable[0].display()
        ));
        return Check::inconclusive(ID, ev, "run as root so every store file can be read");
    }
    if r.timed_out {
        ev.push(format!(
            "time budget of {} s spent after {} of {} files",
            budget.as_secs(),
            r.files_scanned,
            r.files_total
        ));
        return Check::inconclusive(ID, ev, "raise storeScanTimeoutSecs in the verify config");
    }
    if !unreadable.is_empty() {
        ev.extend(unreadable);
        return Check::inconclusive(ID, ev, "run as root so every installed secret can be read");
    }
    Check::pass(ID, ev)
}
