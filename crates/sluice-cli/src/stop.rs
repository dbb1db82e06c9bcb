//! Stopping on SIGTERM (an orchestrator stopping a container) or SIGINT (Ctrl-C): the first
//! signal asks the command to stop cleanly; a second one, or the stop's deadline, cuts the stop
//! short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

/// Whether a stop signal has arrived in this process.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Whether a stop signal has arrived (since [`listen`] was first called).
pub(crate) fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// The stop signals received so far.
#[derive(Clone)]
pub(crate) struct Signals {
    count: watch::Receiver<u32>,
}

/// The process's listener, started by the first [`listen`].
static LISTENER: std::sync::OnceLock<Signals> = std::sync::OnceLock::new();

/// Starts counting SIGINT and SIGTERM, once per process (from then on they no longer end the
/// process at once); later calls return the same counter. Commands that stop cleanly call it
/// first thing, so that no signal falls between the start of the process and their own stop.
pub(crate) fn listen() -> Result<Signals> {
    if let Some(s) = LISTENER.get() {
        return Ok(s.clone());
    }
    let (tx, rx) = watch::channel(0u32);
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            let got = tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                s = term.recv() => s.is_some(),
            };
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            if !got {
                break;
            }
            SIGNALLED.store(true, Ordering::SeqCst);
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(LISTENER.get_or_init(|| Signals { count: rx }).clone())
}

impl Signals {
    /// Completes at the first signal.
    pub(crate) async fn first(&self) {
        let mut rx = self.count.clone();
        let _ = rx.wait_for(|n| *n >= 1).await;
    }

    /// Completes `deadline` after the first signal, or at the second, whichever comes first.
    pub(crate) async fn cut_short(&self, deadline: Duration) {
        let mut rx = self.count.clone();
        if rx.wait_for(|n| *n >= 1).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = rx.wait_for(|n| *n >= 2) => {}
            _ = tokio::time::sleep(deadline) => {}
        }
    }
}
