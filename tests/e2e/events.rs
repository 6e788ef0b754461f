//! Delivery events on RabbitMQ (docs/events.md): two sites publish to a private broker; a consumer
//! with a durable queue bound to `#` checks the order and the CloudEvents schema of a delivery's
//! events, and that a broker outage holds events back without holding mail back, after which
//! every event in the outbox arrives exactly once.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::metrics::Scrape;
use toxmail_tests::rabbitmq::RabbitMq;
use toxmail_tests::site::Site;
use toxmail_tests::wait_for;

use crate::postfix_flow::spec;
use crate::postfix_recovery::send;

const EXCHANGE: &str = "toxmail.events";
const QUEUE: &str = "test-events";

/// One message as the consumer got it.
#[derive(Debug, Clone)]
struct Received {
    routing_key: String,
    content_type: Option<String>,
    delivery_mode: Option<u8>,
    message_id: Option<String>,
    event: Value,
}

impl Received {
    fn id(&self) -> &str {
        self.event["id"].as_str().unwrap_or_default()
    }
    fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }
}

async fn channel(url: &str) -> lapin::Result<(Connection, lapin::Channel)> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// The consumer's durable queue, bound to every routing key of the (durable, topic) exchange.
async fn bind_queue(url: &str) {
    let (connection, channel) = channel(url).await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let kind = ExchangeKind::Topic;
    let table = FieldTable::default;
    channel
        .exchange_declare(EXCHANGE.into(), kind, durable, table())
        .await
        .unwrap();
    channel
        .queue_declare(QUEUE.into(), QueueDeclareOptions::durable(), table())
        .await
        .unwrap();
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(QUEUE.into(), EXCHANGE.into(), "#".into(), bind, table())
        .await
        .unwrap();
    let _ = connection.close(200, "bye".into()).await;
}

/// Takes (and acks) every message waiting in the queue.
async fn drain(url: &str, into: &mut Vec<Received>) {
    let (connection, channel) = channel(url).await.unwrap();
    let get = BasicGetOptions { no_ack: false };
    while let Some(message) = channel.basic_get(QUEUE.into(), get).await.unwrap() {
        let d = message.delivery;
        let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.to_string());
        into.push(Received {
            routing_key: d.routing_key.to_string(),
            content_type: text(d.properties.content_type()),
            delivery_mode: *d.properties.delivery_mode(),
            message_id: text(d.properties.message_id()),
            event: serde_json::from_slice(&d.data).expect("JSON body"),
        });
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = connection.close(200, "bye".into()).await;
}

/// Drains until `done` holds for what was received; false after `timeout`.
async fn collect_until(
    url: &str,
    got: &mut Vec<Received>,
    timeout: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        drain(url, got).await;
        if done(got) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn events_section(broker: &RabbitMq) -> String {
    format!("\n[events]\namqp_url = \"{}\"\n", broker.url())
}

async fn start_broker() -> RabbitMq {
    let started = std::time::Instant::now();
    let broker = tokio::task::spawn_blocking(RabbitMq::start)
        .await
        .unwrap()
        .expect("private rabbitmq-server");
    eprintln!("RabbitMq::start took {:?}", started.elapsed());
    broker
}

/// Site B (bob, no events unless `b_events`) and site A (alice, events on, bob as a contact),
/// and the DHT node they bootstrap from.
async fn two_sites(
    root: &std::path::Path,
    broker: &RabbitMq,
    b_events: bool,
) -> (BootstrapDaemon, Site, Site) {
    let boot = BootstrapDaemon::start(root).unwrap();
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    if b_events {
        b_spec.extra_sections = events_section(broker);
    }
    let mut b = Site::prepare(root, b_spec, &boot.node);
    b.start_bridge();
    let bob = b.identities["bob@b.test"].to_string();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.extra_sections = events_section(broker);
    let mut a = Site::prepare(root, a_spec, &boot.node);
    a.admin(&["contact", "add", "bob@b.test", &bob]).unwrap();
    a.start_bridge();
    (boot, a, b)
}

fn of_source<'a>(got: &'a [Received], host: &str) -> Vec<&'a Received> {
    let source = format!("toxmail://{host}");
    got.iter().filter(|r| r.event["source"] == source).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_publishes_accepted_then_delivered_and_injected_as_cloudevents() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let broker = start_broker().await;
    bind_queue(&broker.url()).await;
    let (_boot, a, b) = two_sites(root.path(), &broker, true).await;
    send(&a, "bob@b.test", "first").await;
    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(
        arrived.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );

    let mut got = Vec::new();
    let complete = |got: &[Received]| {
        let kinds: Vec<&str> = got.iter().map(|r| r.kind()).collect();
        kinds.contains(&"org.toxmail.message.delivered")
            && kinds.contains(&"org.toxmail.inbound.injected")
    };
    let url = broker.url();
    let all = collect_until(&url, &mut got, Duration::from_secs(60), complete).await;
    assert!(all, "{got:#?}\nA:\n{}", a.bridge_log());

    let sent = of_source(&got, "mx.a.test");
    let kinds: Vec<&str> = sent.iter().map(|r| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            "org.toxmail.message.accepted",
            "org.toxmail.message.delivered"
        ]
    );
    assert_eq!(sent[0].event["subject"], sent[1].event["subject"]);
    let received = of_source(&got, "mx.b.test");
    assert_eq!(received.len(), 1, "{got:#?}");
    assert_eq!(received[0].kind(), "org.toxmail.inbound.injected");
    let (accepted, delivered, injected) = (sent[0], sent[1], received[0]);
    for r in [accepted, delivered, injected] {
        let e = &r.event;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(r.routing_key, r.kind(), "routing key = type");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/cloudevents+json")
        );
        assert_eq!(r.delivery_mode, Some(2), "persistent");
        assert_eq!(r.message_id.as_deref(), Some(r.id()), "message_id = id");
        assert_eq!(r.id().len(), 36, "a UUID: {}", r.id());
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
        let text = e.to_string();
        assert!(!text.contains("bob@") && !text.contains("alice@"), "{text}");
        assert!(e["data"]["recipient"].is_null());
        assert_eq!(
            e["data"]["message_id"],
            accepted.event["data"]["message_id"]
        );
        let hash = &e["data"]["recipient_sha256"];
        assert_eq!(hash, &accepted.event["data"]["recipient_sha256"]);
    }
    assert!(
        accepted.event["subject"]
            .as_str()
            .unwrap()
            .starts_with("outbound/")
    );
    assert_eq!(delivered.event["data"]["status"], "2.0.0");
    assert_eq!(delivered.event["data"]["path"], "direct");
    assert_eq!(injected.event["data"]["status"], "2.0.0");
    let ids: HashSet<&str> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), got.len(), "no id twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_holds_events_not_mail_and_every_event_arrives_once() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let mut broker = start_broker().await;
    let url = broker.url();
    bind_queue(&url).await;
    let (_boot, a, b) = two_sites(root.path(), &broker, false).await;
    let mut got = Vec::new();
    send(&a, "bob@b.test", "before").await;
    let delivered = |got: &[Received]| got.len() == 2;
    let first = collect_until(&url, &mut got, Duration::from_secs(120), delivered).await;
    assert!(first, "{got:#?}\nA:\n{}", a.bridge_log());

    broker = tokio::task::spawn_blocking(move || {
        broker.stop();
        broker
    })
    .await
    .unwrap();
    send(&a, "bob@b.test", "during 1").await;
    send(&a, "bob@b.test", "during 2").await;
    let arrived = wait_for(Duration::from_secs(120), || {
        b.postfix.maildir_messages("bob").len() == 3
    });
    assert!(
        arrived.await,
        "mail flows without the broker\n{}",
        a.bridge_log()
    );
    // B injects once it stored the copy, A marks it delivered once the ack is back: wait.
    let mut rows = outbox(&a).await;
    for _ in 0..300 {
        if rows.iter().filter(|(_, published)| !published).count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = outbox(&a).await;
    }
    let held = rows.iter().filter(|(_, published)| !published).count();
    assert!(held >= 4, "accepted + delivered of both wait: {rows:?}");
    assert!(rows[..2].iter().all(|(_, p)| *p) && rows[2..].iter().all(|(_, p)| !p));
    // The backlog shows in the metrics (sampled every 5 s).
    let backlog = wait_for(Duration::from_secs(30), || {
        a.http_get("/metrics")
            .is_ok_and(|(_, body)| Scrape::parse(&body).value("toxmail_events_unpublished") >= 4.0)
    });
    assert!(backlog.await, "{:?}", a.http_get("/metrics"));

    let _broker = tokio::task::spawn_blocking(move || {
        broker.start_again().expect("broker starts again");
        broker
    })
    .await
    .unwrap();
    let published = async {
        for _ in 0..600 {
            if outbox(&a).await.iter().all(|(_, p)| *p) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        published.await,
        "outbox published after the outage\n{}",
        a.bridge_log()
    );
    let rows = outbox(&a).await;
    let all = |got: &[Received]| got.len() >= rows.len();
    let complete = collect_until(&url, &mut got, Duration::from_secs(30), all).await;
    assert!(complete, "{got:#?}");
    // Anything published twice would be in the queue by now (it was confirmed before it was marked).
    drain(&url, &mut got).await;

    let ids: Vec<&str> = got.iter().map(|r| r.id()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice: {ids:?}");
    let expected: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(unique, expected, "every outbox event, none invented");
    let log = a.bridge_log();
    let warnings = log.matches("events wait in the outbox").count();
    assert_eq!(warnings, 1, "one warning per outage\n{log}");
    assert!(log.contains("event broker reachable again"), "{log}");
}

/// (event id, published) of every row in a site's outbox, in order.
async fn outbox(site: &Site) -> Vec<(String, bool)> {
    let (client, conn) = tokio_postgres::connect(&site.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sql = "SELECT event_id::text, published_at IS NOT NULL FROM events ORDER BY id";
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}
