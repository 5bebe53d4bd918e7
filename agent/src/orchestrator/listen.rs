//! Listening sockets. The unix socket comes from systemd (LISTEN_FDS, first unix stream socket)
//! or is bound here with mode 0660 and the bots' group; either way the daemon refuses to run when
//! the socket's directory is group- or world-writable (anyone could swap the socket). The
//! optional TCP listener for cattle is bound to one address (wildcards were refused in `config`).

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::OrchestratorError;
use super::config::Settings;

fn err(path: &Path, message: impl Into<String>) -> OrchestratorError {
    OrchestratorError::Listen {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Refuses a socket directory that others could write to.
pub fn check_socket_dir(dir: &Path) -> Result<(), OrchestratorError> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| err(dir, format!("cannot stat socket directory: {e}")))?;
    if meta.mode() & 0o022 != 0 {
        return Err(err(
            dir,
            format!(
                "socket directory is group- or world-writable (mode {:o}); \
                 hint: chmod 0755 it or use a private directory such as /run/clf",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The unix listener: inherited from systemd or bound here.
pub fn unix_listener(
    s: &Settings,
) -> Result<(std::os::unix::net::UnixListener, bool), OrchestratorError> {
    let dir = s
        .socket
        .parent()
        .ok_or_else(|| err(&s.socket, "socket path has no directory"))?;
    if let Some(fd) = inherited_unix_fd() {
        check_socket_dir(dir)?;
        // SAFETY: systemd passed us this fd (LISTEN_FDS) and nothing else owns it.
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        l.set_nonblocking(true)
            .map_err(|e| err(&s.socket, e.to_string()))?;
        return Ok((l, true));
    }
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err(dir, format!("cannot create socket directory: {e}")))?;
    }
    check_socket_dir(dir)?;
    match std::fs::symlink_metadata(&s.socket) {
        Ok(m) if m.file_type().is_socket() => {
            // A stale socket from a previous run; refuse if someone still answers on it.
            if std::os::unix::net::UnixStream::connect(&s.socket).is_ok() {
                return Err(err(
                    &s.socket,
                    "another process is already listening on this socket",
                ));
            }
            std::fs::remove_file(&s.socket)
                .map_err(|e| err(&s.socket, format!("cannot remove stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(err(
                &s.socket,
                "exists and is not a socket; refusing to replace it",
            ));
        }
        Err(_) => {}
    }
    let gid = super::peer::group_gid(&s.group).ok_or_else(|| {
        err(
            &s.socket,
            format!(
                "group '{}' does not exist; hint: create it or pass --group",
                s.group
            ),
        )
    })?;
    // Bind with a umask that leaves no window in which the socket is world-accessible.
    // SAFETY: umask has no preconditions; the daemon is single-threaded at this point.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(&s.socket);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = bound.map_err(|e| err(&s.socket, format!("cannot bind: {e}")))?;
    nix::unistd::chown(&s.socket, None, Some(gid)).map_err(|e| {
        err(
            &s.socket,
            format!("cannot chown to group '{}': {e}", s.group),
        )
    })?;
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(&s.socket, format!("cannot chmod: {e}")))?;
    l.set_nonblocking(true)
        .map_err(|e| err(&s.socket, e.to_string()))?;
    Ok((l, false))
}

fn inherited_unix_fd() -> Option<RawFd> {
    let fds: Vec<RawFd> = sd_notify::listen_fds().ok()?.collect();
    fds.into_iter()
        .find(|fd| nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(*fd).is_ok())
}

/// The TCP listener for cattle.
pub fn tcp_listener(
    addr: std::net::SocketAddr,
) -> Result<std::net::TcpListener, OrchestratorError> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| OrchestratorError::Listen {
        path: addr.to_string(),
        message: format!("cannot bind cattle listener: {e}"),
    })?;
    l.set_nonblocking(true)
        .map_err(|e| OrchestratorError::Listen {
            path: addr.to_string(),
            message: e.to_string(),
        })?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_socket_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_socket_dir(d.path()).is_err());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check_socket_dir(d.path()).is_err());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_socket_dir(d.path()).is_ok());
    }
}
