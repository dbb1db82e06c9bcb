//! Stopping on SIGTERM (an orchestrator stopping a container) or SIGINT (Ctrl-C): the first
//! signal asks the command to stop cleanly; a second one, or the stop's deadline, cuts the stop
//! short.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

/// The stop signals received so far.
#[derive(Clone)]
pub(crate) struct Signals {
    count: watch::Receiver<u32>,
}

/// Starts counting SIGINT and SIGTERM (from then on they no longer end the process at once).
pub(crate) fn listen() -> Result<Signals> {
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
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(Signals { count: rx })
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
