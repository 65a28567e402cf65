//! `/metrics`: the Prometheus exposition of what `meshcast_node::metrics`
//! records, served over HTTP by an axum route (`metrics.listen`,
//! `--metrics-listen`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use meshcast_node::metrics as names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The path metrics are served at.
pub const PATH: &str = "/metrics";

/// Histograms are drained into their buckets this often (the recorder
/// leaves it to its user), so memory stays bounded between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process's metrics recorder and serves `/metrics` on
/// `listen`. Returns the address bound (the real port when `listen` has
/// port 0). Call once per process, before the node starts, so that nothing
/// it records is lost.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("`metrics.listen`: cannot listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("`metrics.listen`: the address of {listen}"))?;
    let handle = install()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        PATH,
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    handle.render(),
                )
            }
        }),
    );
    // The same connection limits and header timeout as the gateway's
    // well-known endpoint: a metrics port is often reachable by more than
    // the scraper.
    tokio::spawn(meshcast_relay::http::serve(
        listener,
        app,
        meshcast_relay::http::HttpLimits::default(),
    ));
    Ok(addr)
}

fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::PROPAGATION.to_string()),
            names::PROPAGATION_BUCKETS,
        )
        .context("metrics histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    names::register(env!("CARGO_PKG_VERSION"));
    Ok(handle)
}
