//! Live metrics: the `metrics` recorder every event of sluice is counted in, rendered in
//! Prometheus' text format for `--metrics FILE` (when the command ends) and served over HTTP on
//! `--metrics-addr` (while `consume` and `run` work).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sluice_core::pipeline::health::Health;

/// The installed recorder.
#[derive(Clone)]
pub struct Telemetry {
    handle: PrometheusHandle,
}

/// Buckets of the production-to-commit histogram, in seconds: from a fast local pipeline to
/// an hour of backlog.
const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Installs the process-wide recorder and describes sluice's metrics.
pub fn install() -> Result<Telemetry> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(sluice_core::metrics::COMMIT_LATENCY.to_string()),
            LATENCY_BUCKETS,
        )
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    sluice_core::metrics::describe();
    let upkeep = handle.clone();
    // The recorder's histograms need draining now and then; a thread, so that it runs whatever
    // the runtime is doing.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .context("starting the metrics upkeep thread")?;
    Ok(Telemetry { handle })
}

impl Telemetry {
    /// Every metric, in Prometheus' text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Serves `GET /metrics` on `addr` until the process ends, and with `health` the probes
    /// `GET /healthz` (200 while the process answers) and `GET /readyz` (200 when ready, else
    /// 503 with why); returns the bound address.
    pub async fn serve(&self, addr: SocketAddr, health: Option<Arc<Health>>) -> Result<SocketAddr> {
        use axum::http::header::CONTENT_TYPE;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        let bound = listener.local_addr()?;
        let handle = self.handle.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        handle.render(),
                    )
                }
            }),
        );
        let app = match health {
            Some(h) => app
                .route("/healthz", axum::routing::get(|| async { "alive\n" }))
                .route(
                    "/readyz",
                    axum::routing::get(move || {
                        let h = h.clone();
                        async move {
                            match h.ready() {
                                Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                                Err(why) => (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!("not ready: {why}\n"),
                                ),
                            }
                        }
                    }),
                ),
            None => app,
        };
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics endpoint stopped");
            }
        });
        Ok(bound)
    }
}

/// `--metrics-addr`: `PORT` (on 127.0.0.1) or `HOST:PORT`.
pub fn parse_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?}: expected PORT (on 127.0.0.1) or HOST:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9898").unwrap().to_string(), "127.0.0.1:9898");
        assert_eq!(parse_addr("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert!(parse_addr("localhost").is_err());
    }
}
