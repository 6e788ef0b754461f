//! The bridge watching itself: every few seconds it checks PostgreSQL (logging an outage once when
//! it starts and once when it ends) and reads the queue's counts and oldest age into the gauges;
//! `/readyz` is ready when the database answered and at least one Tox node is connected.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tox_runtime::exporter::Exporter;
use tox_runtime::metrics::{ToxCollector, register_build_info};
use tox_runtime::transfer::Courier;
use toxmail_relay::metrics::{DATABASE_UP, DatabaseWatch};
use toxmail_relay::store::Store as RelayStore;

use crate::metrics::{QUEUE_MESSAGES, QUEUE_OLDEST};
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

/// `/metrics` with the identities' Tox families, and the readiness check.
pub fn exporter<'a>(couriers: impl Iterator<Item = &'a Courier>) -> Exporter {
    let registry = prometheus::Registry::new();
    let tox = ToxCollector::default();
    let couriers: Vec<Courier> = couriers.cloned().collect();
    for courier in &couriers {
        tox.watch(courier.clone());
    }
    registry.register(Box::new(tox)).expect("a fresh registry");
    register_build_info(&registry, "bridge", env!("CARGO_PKG_VERSION"));
    let ready = move || ready(&couriers);
    Exporter {
        registry,
        ready: Arc::new(ready),
    }
}

fn ready(couriers: &[Courier]) -> Result<(), String> {
    if DATABASE_UP.get() != 1 {
        return Err("database unreachable".into());
    }
    if !couriers
        .iter()
        .any(|c| c.node().stats().connection().is_online())
    {
        return Err("no Tox node is connected".into());
    }
    Ok(())
}
