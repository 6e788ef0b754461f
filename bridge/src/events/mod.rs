//! Delivery events: the complete set of event types (`EventKind`), what each says (`EventData`),
//! the CloudEvents 1.0 JSON they are published as, the `[events]` config section, and the
//! `Outbox` the store writes them through, in the same transaction as the state change they
//! report. `publisher` sends the outbox to RabbitMQ; docs/events.md is the consumer's view.

pub mod publisher;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use toxmail_protocol::MessageId;

use crate::resolve::normalise;

/// Every event the bridge emits. The CloudEvents `type` and the AMQP routing key are
/// `type_name()`; a new variant is a new documented type (docs/events.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A copy for one recipient was committed to the queue (before Postfix got its 250).
    Accepted,
    /// The recipient's site (or a relay, for a copy in its custody) acknowledged the copy.
    Delivered,
    /// A delivery attempt failed temporarily; the copy stays queued.
    Deferred,
    /// A relay confirmed custody of a copy whose recipient stayed offline.
    Relayed,
    /// The copy was refused for good; a failed DSN follows.
    Failed,
    /// The copy's queue lifetime ran out; a DSN follows.
    Expired,
    /// Mail received over Tox was handed to the local MTA.
    InboundInjected,
    /// Mail received over Tox could not be injected and was given up on (bounced).
    InboundFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Accepted,
        EventKind::Delivered,
        EventKind::Deferred,
        EventKind::Relayed,
        EventKind::Failed,
        EventKind::Expired,
        EventKind::InboundInjected,
        EventKind::InboundFailed,
    ];

    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::Accepted => "org.toxmail.message.accepted",
            EventKind::Delivered => "org.toxmail.message.delivered",
            EventKind::Deferred => "org.toxmail.message.deferred",
            EventKind::Relayed => "org.toxmail.message.relayed",
            EventKind::Failed => "org.toxmail.message.failed",
            EventKind::Expired => "org.toxmail.message.expired",
            EventKind::InboundInjected => "org.toxmail.inbound.injected",
            EventKind::InboundFailed => "org.toxmail.inbound.failed",
        }
    }
}

/// An RFC 3463 enhanced status code, e.g. 5.4.7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsnStatus(pub u8, pub u16, pub u16);

impl DsnStatus {
    pub const DELIVERED: DsnStatus = DsnStatus(2, 0, 0);
    /// No answer from the peer yet (as in the "delayed" DSN).
    pub const DEFERRED: DsnStatus = DsnStatus(4, 4, 1);
    /// Delivery time expired (as in the failed DSN for an expired copy).
    pub const EXPIRED: DsnStatus = DsnStatus(5, 4, 7);
}

impl From<(u8, u16, u16)> for DsnStatus {
    fn from((class, subject, detail): (u8, u16, u16)) -> DsnStatus {
        DsnStatus(class, subject, detail)
    }
}

impl fmt::Display for DsnStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// How a copy travelled: straight to the recipient's site, or through a relay's custody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    Direct,
    Relay,
}

/// The CloudEvents `data` of every event. Every key is always present (null where it does not
/// apply) so consumers get one schema; `recipient` is null unless `include_addresses` is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventData {
    /// The bridge's outbound queue id (`queue list`); null for inbound events.
    pub queue_id: Option<i64>,
    /// The toxmail message id, 64 hex digits (the Tox file id of the envelope).
    pub message_id: String,
    /// SHA-256 (hex, unsalted) of the normalised recipient address.
    pub recipient_sha256: String,
    pub recipient: Option<String>,
    /// Enhanced status, e.g. "2.0.0", "4.4.1", "5.4.7"; null where none applies (accepted).
    pub status: Option<String>,
    /// Delivery or injection attempts so far.
    pub attempt: Option<i32>,
    pub path: Option<Path>,
}

/// An event as the store writes it into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub subject: String,
    pub data: EventData,
}

/// Subject of the events of one outbound copy (the order guarantee is per subject).
pub fn outbound_subject(queue_id: i64) -> String {
    format!("outbound/{queue_id}")
}

/// Subject of the events of one received message.
pub fn inbound_subject(id: &MessageId) -> String {
    format!("inbound/{id}")
}

/// An outbox row read back for publishing: id and time as the store assigned them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The outbox row (publishing order).
    pub row: i64,
    /// The CloudEvents id: a UUID assigned once at insert, so a republished event keeps it.
    pub event_id: String,
    pub type_name: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub subject: String,
    pub data: serde_json::Value,
}

pub const SPEC_VERSION: &str = "1.0";
/// The AMQP content type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

impl StoredEvent {
    /// The structured-mode CloudEvents 1.0 JSON document.
    pub fn cloud_event(&self, source: &str) -> serde_json::Value {
        serde_json::json!({
            "specversion": SPEC_VERSION,
            "id": self.event_id,
            "source": source,
            "type": self.type_name,
            "time": self.time,
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.data,
        })
    }
}

/// The CloudEvents `source` of a bridge.
pub fn source(hostname: &str) -> String {
    format!("toxmail://{hostname}")
}

/// `[events]`: delivery events on RabbitMQ (docs/events.md). Off unless `amqp_url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// "amqp://user:pass@127.0.0.1:5672/%2f"; empty (the default) = no events are written.
    #[serde(default)]
    pub amqp_url: String,
    /// A topic exchange, declared durable at every connection; routing key = event type.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Put the recipient's address in plain text into each event (besides its hash).
    #[serde(default)]
    pub include_addresses: bool,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            amqp_url: String::new(),
            exchange: default_exchange(),
            include_addresses: false,
        }
    }
}

fn default_exchange() -> String {
    "toxmail.events".into()
}

impl EventsSection {
    pub fn enabled(&self) -> bool {
        !self.amqp_url.is_empty()
    }

    /// (key, message) of the first invalid setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.enabled() {
            self.amqp_url
                .parse::<lapin::uri::AMQPUri>()
                .map_err(|e| ("events.amqp_url", e))?;
            if !self.amqp_url.starts_with("amqp://") {
                let m = "only amqp:// is supported (no TLS backend is built in)".to_string();
                return Err(("events.amqp_url", m));
            }
        }
        if self.exchange.is_empty() || self.exchange.len() > 255 {
            return Err(("events.exchange", "1 to 255 characters".into()));
        }
        Ok(())
    }
}

/// What the store needs to write events: how to render the recipient, and whom to wake.
/// A `Store` without one writes no events.
#[derive(Debug, Default)]
pub struct Outbox {
    pub include_addresses: bool,
    /// Postfix's recipient_delimiter: `bob+tag` and `bob` hash alike.
    pub delimiter: Option<String>,
    /// Woken after each commit that wrote events.
    pub wake: Notify,
}

impl Outbox {
    pub fn new(section: &EventsSection, delimiter: Option<String>) -> Arc<Outbox> {
        Arc::new(Outbox {
            include_addresses: section.include_addresses,
            delimiter,
            wake: Notify::new(),
        })
    }

    /// The data of an event about `recipient`; the caller fills in the rest.
    pub fn data(&self, message_id: &MessageId, recipient: &str) -> EventData {
        let normalised = normalise(recipient, self.delimiter.as_deref())
            .unwrap_or_else(|| recipient.trim().to_ascii_lowercase());
        EventData {
            queue_id: None,
            message_id: message_id.to_string(),
            recipient_sha256: hex::encode(Sha256::digest(normalised.as_bytes())),
            recipient: self.include_addresses.then(|| recipient.to_string()),
            status: None,
            attempt: None,
            path: None,
        }
    }
}

#[cfg(test)]
mod tests;
