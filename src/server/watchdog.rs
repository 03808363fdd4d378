//! Who watches the watcher: heal tells others it is alive, but only while it
//! is. The sweeper marks each finished round (`Alive::beat`), and a round
//! includes a store job, so a stuck writer stops the beat too. While the
//! beat is recent, one thread answers the systemd watchdog (`WATCHDOG=1`,
//! every half `WatchdogSec=`) and another GETs `[server] watchdog_url` every
//! `watchdog_every` (a dead man's switch elsewhere, such as healthchecks.io).
//! A wedged heal goes silent, so systemd restarts it and the switch alerts.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::systemd::Systemd;
use super::{Shutdown, State};
use crate::config::redact_url;
use crate::time::{format_duration, now_ms};

/// The URL ping goes silent once the sweeper has not finished a round for this long.
const URL_STALE: Duration = Duration::from_secs(30);

/// The longest one URL ping may take.
const URL_TIMEOUT: Duration = Duration::from_secs(10);

/// When the sweeper last finished a round (UTC ms).
pub struct Alive {
    last: AtomicI64,
}

impl Default for Alive {
    fn default() -> Alive {
        Alive {
            last: AtomicI64::new(now_ms()),
        }
    }
}

impl Alive {
    /// Marks a round of the sweeper done.
    pub fn beat(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    /// How long ago the last round finished.
    fn age(&self) -> Duration {
        let ms = now_ms().saturating_sub(self.last.load(Ordering::Relaxed));
        Duration::from_millis(ms.max(0) as u64)
    }
}

/// Sends `WATCHDOG=1` every half `WatchdogSec=` while the sweeper's beat is
/// younger than `WatchdogSec=`; so systemd kills a heal stuck that long
/// within twice `WatchdogSec=`. Returns at once without a watchdog.
pub fn systemd(systemd: &Systemd, alive: &Alive, shutdown: &Shutdown) {
    let (Some(every), Some(stale)) = (systemd.watchdog_every(), systemd.watchdog_timeout()) else {
        return;
    };
    log::info!(
        "systemd watchdog: WATCHDOG=1 every {} while heal's loops run",
        format_duration(every)
    );
    let mut silent = false;
    loop {
        let age = alive.age();
        if age < stale {
            systemd.notify("WATCHDOG=1");
            if std::mem::take(&mut silent) {
                log::info!("systemd watchdog: the sweeper runs again, pinging again");
            }
        } else if !std::mem::replace(&mut silent, true) {
            log::error!(
                "systemd watchdog: the sweeper has not finished a round for {}; no more WATCHDOG=1, so systemd restarts heal",
                format_duration(age)
            );
        }
        if shutdown.wait(every) {
            return;
        }
    }
}

/// GETs `[server] watchdog_url` every `watchdog_every` while the sweeper's
/// beat is younger than `URL_STALE`; follows reloads (a URL added, changed
/// or removed). Logs the first failure and the recovery, never the URL's path.
pub fn url(state: &State, shutdown: &Shutdown) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("heal/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut failing = false;
    loop {
        let config = state.config();
        let Some(watchdog) = &config.server.watchdog else {
            if shutdown.wait(Duration::from_secs(1)) {
                return;
            }
            continue;
        };
        let age = state.alive.age();
        let outcome = if age < URL_STALE {
            ping(&http, &watchdog.url, URL_TIMEOUT.min(watchdog.every))
        } else {
            Err(format!(
                "not pinged: the sweeper has not finished a round for {}",
                format_duration(age)
            ))
        };
        let shown = redact_url(&watchdog.url);
        match outcome {
            Ok(status) if std::mem::take(&mut failing) => {
                log::info!("watchdog_url {shown}: pinged again (HTTP {status})")
            }
            Ok(status) => log::debug!("watchdog_url {shown}: HTTP {status}"),
            Err(e) if !std::mem::replace(&mut failing, true) => {
                log::warn!("watchdog_url {shown}: {e}")
            }
            Err(e) => log::debug!("watchdog_url {shown}: {e}"),
        }
        if shutdown.wait(watchdog.every) {
            return;
        }
    }
}

/// One GET; Ok with the status if it is 2xx. The error names no more of the URL than its host.
fn ping(http: &ureq::Agent, url: &str, timeout: Duration) -> Result<u16, String> {
    let response = http
        .get(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(|e| crate::probe::describe_error(&e, &redact_url(url), timeout))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("answered HTTP {status}, not 2xx"))
    }
}
