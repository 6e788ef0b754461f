//! Sends the events outbox to a RabbitMQ topic exchange with publisher confirms. Rows go out in
//! id order and are marked published only after the broker's ack; after a nack, a timeout or a
//! lost connection they stay unpublished and go again (same CloudEvents id) on the next session.
//! Woken by the store after each commit that wrote events, with a slow safety poll. Mail never
//! waits for this task: a broker outage only lets the outbox grow.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, Outbox, StoredEvent};
use crate::config::Config;
use crate::store::Store;

/// Events read and published per round.
const BATCH: i64 = 100;
/// The safety poll, should a wake-up be missed (another bridge process on the same database).
const POLL: Duration = Duration::from_secs(30);
/// Connecting, opening the channel and declaring the exchange must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A batch's confirms must all arrive within this, else the connection is dropped.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Published events are kept this long (for the operator), then purged.
const KEEP_PUBLISHED: Duration = Duration::from_secs(24 * 3600);
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// AMQP delivery mode "persistent".
const PERSISTENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused (nack) event row {0}")]
    Nack(i64),
}

/// The publishing task of one bridge.
#[derive(Debug)]
pub struct Publisher {
    store: Store,
    outbox: Arc<Outbox>,
    url: String,
    exchange: String,
    source: String,
}

impl Publisher {
    /// Gives `store` an outbox and returns the publisher of it, when `[events]` is on.
    pub fn setup(config: &Config, store: Store) -> (Store, Option<Publisher>) {
        let section = &config.events;
        if !section.enabled() {
            return (store, None);
        }
        let outbox = Outbox::new(section, config.resolver.recipient_delimiter.clone());
        let store = store.with_events(outbox.clone());
        let publisher = Publisher {
            store: store.clone(),
            outbox,
            url: section.amqp_url.clone(),
            exchange: section.exchange.clone(),
            source: super::source(&config.bridge.hostname),
        };
        (store, Some(publisher))
    }

    /// Connects, publishes, reconnects with backoff, until `shutdown`. One warning per outage.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut outage: Option<Instant> = None;
        let mut wait = RETRY_MIN;
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => {
                    c.unwrap_or(Err(PublishError::Timeout(CONNECT_TIMEOUT)))
                }
            };
            match connected {
                Ok((connection, channel)) => {
                    match outage.take() {
                        Some(since) => tracing::info!(
                            down_for = ?since.elapsed(),
                            "event broker reachable again; publishing the outbox"
                        ),
                        None => tracing::info!(exchange = %self.exchange, "event broker connected"),
                    }
                    wait = RETRY_MIN;
                    let ended = self.serve(&channel, &shutdown).await;
                    let _ = connection.close(200, "bye".into()).await;
                    let Err(e) = ended else { return };
                    tracing::warn!(error = %e, "event broker connection lost; events wait in the outbox");
                    outage = Some(Instant::now());
                }
                Err(e) => {
                    if outage.is_none() {
                        tracing::warn!(error = %e, "event broker unreachable; events wait in the outbox");
                        outage = Some(Instant::now());
                    } else {
                        tracing::debug!(error = %e, "event broker still unreachable");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    async fn connect(&self) -> Result<(Connection, Channel), PublishError> {
        let properties =
            ConnectionProperties::default().with_connection_name("toxmail-bridge".into());
        let connection = Connection::connect(&self.url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    /// Publishes until the outbox is empty, then waits to be woken; `Ok` on shutdown, `Err`
    /// when the session broke (what was not confirmed stays unpublished).
    async fn serve(
        &self,
        channel: &Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), PublishError> {
        let mut last_purge: Option<Instant> = None;
        loop {
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                match self.store.purge_published_events(KEEP_PUBLISHED).await {
                    Ok(n) if n > 0 => tracing::debug!(purged = n, "published events purged"),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "published events not purged"),
                }
                last_purge = Some(Instant::now());
            }
            let batch = match self.store.unpublished_events(BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::debug!(error = %e, "events outbox not readable");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                let poll = Some(SystemTime::now() + POLL);
                if !crate::delivery::idle(&self.outbox.wake, poll, shutdown).await {
                    return Ok(());
                }
                continue;
            }
            let (confirmed, broke) = self.publish(channel, &batch).await;
            if !confirmed.is_empty()
                && let Err(e) = self.store.mark_events_published(&confirmed).await
            {
                // They go again: consumers drop the repeat by its id.
                tracing::warn!(error = %e, "published events not marked; they will be sent again");
            }
            if let Some(e) = broke {
                return Err(e);
            }
        }
    }

    /// Publishes `batch` in order and waits for the confirms. Returns the rows confirmed before
    /// the first failure (so order per subject survives a retry) and that failure, if any.
    async fn publish(
        &self,
        channel: &Channel,
        batch: &[StoredEvent],
    ) -> (Vec<i64>, Option<PublishError>) {
        let mut pending = Vec::with_capacity(batch.len());
        let mut failure = None;
        for event in batch {
            let body = serde_json::to_vec(&event.cloud_event(&self.source))
                .expect("a JSON value serialises");
            let properties = BasicProperties::default()
                .with_content_type(CONTENT_TYPE.into())
                .with_delivery_mode(PERSISTENT)
                .with_message_id(event.event_id.as_str().into())
                .with_app_id("toxmail-bridge".into());
            let sent = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    event.type_name.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await;
            match sent {
                Ok(confirm) => pending.push((event.row, confirm)),
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        for (row, confirm) in pending {
            let broke = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Ok(Ok(c)) if c.is_ack() => {
                    confirmed.push(row);
                    continue;
                }
                Ok(Ok(_)) => PublishError::Nack(row),
                Ok(Err(e)) => e.into(),
                Err(_) => PublishError::Timeout(CONFIRM_TIMEOUT),
            };
            return (confirmed, Some(broke));
        }
        (confirmed, failure)
    }
}
