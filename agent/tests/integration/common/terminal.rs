//! Running a command the way a person at a terminal does: on a fresh pseudo-terminal that is its
//! controlling terminal (so prompts that open `/dev/tty`, like age's and sops' passphrase prompts,
//! reach it), or with no controlling terminal at all.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a terminal session may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `cmd` on a new pseudo-terminal. Each `(prompt, answer)` is typed, in order, once the
/// terminal has shown `prompt` (after the previous answer). Returns the exit status and all the
/// terminal showed (stdout and stderr both go there).
pub fn run_on_terminal(cmd: &mut Command, answers: &[(&str, &str)]) -> (ExitStatus, String) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = || Stdio::from(pty.slave.try_clone().expect("dup pty"));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    drop(pty.slave);
    // The Command still holds its copies of the slave; drop them so the child's exit ends the
    // session.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut writer = std::fs::File::from(pty.master);
    let mut reader = writer.try_clone().expect("dup pty master");

    // The master reads until every slave descriptor is closed (EIO on Linux).
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let start = Instant::now();
    let mut shown = String::new();
    let mut answered_up_to = 0;
    let mut pending = answers.iter();
    let mut next = pending.next();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{cmd:?} still running after {DEADLINE:?}; terminal so far:\n{shown}"
        );
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(chunk) => shown.push_str(&String::from_utf8_lossy(&chunk)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some((prompt, answer)) = next
            && let Some(at) = shown[answered_up_to..].find(prompt)
        {
            writer
                .write_all(format!("{answer}\n").as_bytes())
                .expect("type into the terminal");
            answered_up_to += at + prompt.len();
            next = pending.next();
        }
    }
    pump.join().expect("terminal reader");
    let status = child.wait().expect("wait for the command");
    assert!(
        next.is_none(),
        "{cmd:?} ended before asking {:?}; terminal:\n{shown}",
        next.map(|(p, _)| p)
    );
    (status, shown)
}

/// Protects the key file `plain` with `passphrase` into `out` (mode 0600) with the real
/// `age -p`, which reads the passphrase only from a terminal; `-a` when `armor`.
pub fn age_protect(plain: &Path, out: &Path, passphrase: &str, armor: bool) {
    let mut age = Command::new("age");
    age.arg("-p");
    if armor {
        age.arg("-a");
    }
    let (status, shown) = run_on_terminal(
        age.arg("-o").arg(out).arg(plain),
        &[
            ("Enter passphrase", passphrase),
            ("Confirm passphrase", passphrase),
        ],
    );
    assert!(status.success(), "age -p: {shown}");
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Makes `cmd` start without a controlling terminal (a new session), as under systemd or cron,
/// so opening `/dev/tty` fails even when the tests run from a terminal.
pub fn without_terminal(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
}
