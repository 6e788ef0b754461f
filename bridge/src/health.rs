//! The bridge watching itself: every few seconds it checks PostgreSQL (logging an outage once when
//! it starts and once when it ends) and reads the queue's counts and oldest age into the gauges;
//! `/readyz` is ready when the database answered and at least one Tox node is connected.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tox_runtime::exporter::Exporter;
use tox_runtime::metrics::node_line;
use tox_runtime::transfer::Courier;
use toxmail_relay::metrics::DatabaseWatch;
use toxmail_relay::store::Store as RelayStore;

use crate::metrics::{EVENTS_UNPUBLISHED, QUEUE_MESSAGES, QUEUE_OLDEST};
use crate::store::Store;

/// How often the database and the queue are sampled.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Samples until `shutdown`; `relay` is the store of `serve_friends`, if on.
pub async fn watch(store: Store, relay: Option<RelayStore>, shutdown: CancellationToken) {
    let mut database = DatabaseWatch::default();
    loop {
        match store.queue_stats().await {
            Ok(stats) => {
                database.observe(Ok(()));
                QUEUE_MESSAGES
                    .with_label_values(&["queued"])
                    .set(stats.queued);
                QUEUE_MESSAGES
                    .with_label_values(&["relayed"])
                    .set(stats.relayed);
                QUEUE_MESSAGES
                    .with_label_values(&["failed"])
                    .set(stats.failed);
                QUEUE_OLDEST.set(i64::try_from(stats.oldest.as_secs()).unwrap_or(i64::MAX));
                EVENTS_UNPUBLISHED.set(stats.events_unpublished);
            }
            Err(e) => database.observe(Err(e.to_string())),
        }
        if let Some(relay) = &relay
            && let Ok(status) = relay.status().await
        {
            toxmail_relay::metrics::holding(&status);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

/// `/metrics` with the identities' Tox families, the readiness check, and `/status`.
pub fn exporter<'a>(identities: impl Iterator<Item = (&'a String, &'a Courier)>) -> Exporter {
    let mut identities: Vec<(String, Courier)> =
        identities.map(|(a, c)| (a.clone(), c.clone())).collect();
    identities.sort_by(|a, b| a.0.cmp(&b.0));
    let nodes = identities.iter().map(|(_, c)| c.clone()).collect();
    Exporter::for_nodes(
        "bridge",
        env!("CARGO_PKG_VERSION"),
        nodes,
        toxmail_relay::metrics::database_up,
        Arc::new(move || status(&identities)),
    )
}

/// One line per identity: `identity <address> connection=<none|tcp|udp> friends=<online>/<all>`.
pub fn status(identities: &[(String, Courier)]) -> String {
    identities
        .iter()
        .map(|(address, courier)| format!("identity {address} {}\n", node_line(courier)))
        .collect()
}
