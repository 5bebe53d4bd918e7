//! systemd notifications: READY once listening, STATUS lines, WATCHDOG pings at half the
//! configured interval, STOPPING on shutdown. All calls are no-ops outside systemd.

use std::time::Duration;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ],
    );
}

pub fn status(status: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ],
    );
}

/// The watchdog ping interval (half of WATCHDOG_USEC), when systemd asked for one.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

pub fn watchdog() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
}
