use super::*;

fn outbox(include_addresses: bool) -> Outbox {
    Outbox {
        include_addresses,
        delimiter: Some("+".into()),
        wake: Notify::new(),
    }
}

#[test]
fn every_type_name_is_unique_and_in_the_org_toxmail_namespace() {
    let names: std::collections::HashSet<_> =
        EventKind::ALL.iter().map(|k| k.type_name()).collect();
    assert_eq!(names.len(), EventKind::ALL.len());
    for name in names {
        assert!(
            name.starts_with("org.toxmail.message.") || name.starts_with("org.toxmail.inbound."),
            "{name}"
        );
    }
}

#[test]
fn recipient_hash_is_sha256_of_the_normalised_address_and_the_address_stays_out() {
    let id = MessageId([0xab; 32]);
    let data = outbox(false).data(&id, "Bob+Tag@B.Test");
    // sha256("bob@b.test")
    let expected = hex::encode(Sha256::digest(b"bob@b.test"));
    assert_eq!(data.recipient_sha256, expected);
    assert_eq!(outbox(false).data(&id, "bob@b.test"), data);
    assert_eq!(data.recipient, None);
    assert_eq!(data.message_id, "ab".repeat(32));
    let json = serde_json::to_string(&data).unwrap();
    assert!(!json.to_ascii_lowercase().contains("bob"), "{json}");
    let with = outbox(true).data(&id, "Bob+Tag@B.Test");
    assert_eq!(with.recipient.as_deref(), Some("Bob+Tag@B.Test"));
    assert_eq!(with.recipient_sha256, expected);
}

#[test]
fn data_has_every_key_null_where_it_does_not_apply() {
    let mut data = outbox(false).data(&MessageId([1; 32]), "a@b.test");
    data.queue_id = Some(7);
    data.status = Some(DsnStatus::EXPIRED.to_string());
    data.attempt = Some(3);
    data.path = Some(Path::Relay);
    let value = serde_json::to_value(&data).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "attempt",
            "message_id",
            "path",
            "queue_id",
            "recipient",
            "recipient_sha256",
            "status"
        ]
    );
    assert_eq!(value["queue_id"], 7);
    assert_eq!(value["status"], "5.4.7");
    assert_eq!(value["attempt"], 3);
    assert_eq!(value["path"], "relay");
    assert!(value["recipient"].is_null());
}

#[test]
fn a_stored_event_renders_as_structured_cloudevents_1_0() {
    let data = outbox(false).data(&MessageId([2; 32]), "a@b.test");
    let stored = StoredEvent {
        row: 41,
        event_id: "6f1d1c0e-57c5-4a8e-9b1e-0c3c4a1f2b3d".into(),
        type_name: EventKind::Delivered.type_name().into(),
        time: "2026-01-02T03:04:05.678901Z".into(),
        subject: outbound_subject(17),
        data: serde_json::to_value(&data).unwrap(),
    };
    let event = stored.cloud_event(&source("mx.a.test"));
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], "6f1d1c0e-57c5-4a8e-9b1e-0c3c4a1f2b3d");
    assert_eq!(event["source"], "toxmail://mx.a.test");
    assert_eq!(event["type"], "org.toxmail.message.delivered");
    assert_eq!(event["time"], "2026-01-02T03:04:05.678901Z");
    assert_eq!(event["subject"], "outbound/17");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["data"]["recipient_sha256"], data.recipient_sha256);
    assert_eq!(event.as_object().unwrap().len(), 8, "no other attributes");
}

#[test]
fn events_section_is_off_by_default_and_checks_its_url() {
    let off = EventsSection::default();
    assert!(!off.enabled());
    assert_eq!(off.exchange, "toxmail.events");
    off.check().unwrap();
    let on = |url: &str| EventsSection {
        amqp_url: url.into(),
        ..EventsSection::default()
    };
    on("amqp://127.0.0.1:5672/%2f").check().unwrap();
    assert_eq!(on("not a url").check().unwrap_err().0, "events.amqp_url");
    assert_eq!(
        on("amqps://127.0.0.1/%2f").check().unwrap_err().0,
        "events.amqp_url"
    );
}
