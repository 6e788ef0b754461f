//! The LMTP intake against a real private PostgreSQL: the copies of a multi-recipient message are
//! sealed and written one at a time but committed together, each open only to its recipient;
//! a copy the database refuses leaves none and answers 451 for everyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use toxmail_bridge::config::UnknownSender;
use toxmail_bridge::delivery::outbound::Dispatcher;
use toxmail_bridge::delivery::via_relay::RelaySettings;
use toxmail_bridge::intake::BridgeIntake;
use toxmail_bridge::postfix::lmtp::{Intake, Transaction};
use toxmail_bridge::resolve::{Resolver, ResolverConfig};
use toxmail_bridge::store::Store;
use toxmail_protocol::{OpenError, SecretKey, ToxId, open, public_key_of};
use toxmail_tests::postgres::PgServer;

const SENDER: &str = "alice@a.example";

fn peer_key(n: u8) -> SecretKey {
    SecretKey::from([n; 32])
}

fn rcpt(n: u8) -> String {
    format!("{}@tox", ToxId::new(public_key_of(&peer_key(n)), 7))
}

async fn intake(server: &PgServer) -> (BridgeIntake, Store) {
    let store = Store::connect(&server.url(), 4).unwrap();
    store.migrate().await.unwrap();
    let relays = RelaySettings {
        own: Vec::new(),
        deposit_after: None,
        max_deposits: 0,
        register_for: Duration::from_secs(60),
    };
    let dispatcher = Dispatcher::new(
        store.clone(),
        HashMap::new(),
        Duration::from_secs(1),
        Duration::from_secs(5),
        Arc::new(relays),
        256,
    );
    let intake = BridgeIntake {
        resolver: Arc::new(Resolver::new(ResolverConfig::default())),
        store: store.clone(),
        keys: HashMap::from([(SENDER.to_string(), SecretKey::from([0xa1; 32]))]),
        unknown_sender: UnknownSender::Refuse,
        delimiter: None,
        lifetime: Duration::from_secs(86_400),
        dispatcher: Arc::new(dispatcher),
    };
    (intake, store)
}

fn transaction(recipients: Vec<String>, data: &[u8]) -> Transaction {
    Transaction {
        mail_from: SENDER.into(),
        recipients,
        data: data.to_vec(),
        ident: Some("4F1A2B".into()),
        ..Transaction::default()
    }
}

fn codes(replies: &[toxmail_bridge::reply::Reply]) -> Vec<String> {
    replies
        .iter()
        .map(|r| r.render().chars().take(9).collect())
        .collect()
}

#[tokio::test]
async fn multi_recipient_message_commits_every_copy_each_open_only_to_its_recipient() {
    let server = PgServer::started().await;
    let (intake, store) = intake(&server).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    // The third recipient is not (or no longer) a Tox address: 450 4.4.0, so Postfix routes it
    // again (the ordinary way); the others queued in RCPT order.
    let recipients = vec![rcpt(1), rcpt(2), "carol@c.example".into(), rcpt(3)];
    let replies = intake.deliver(transaction(recipients.clone(), &data)).await;
    let codes = codes(&replies);
    assert!(codes[0].starts_with("250 2.0.0"), "{codes:?}");
    assert!(codes[1].starts_with("250 2.0.0"), "{codes:?}");
    assert!(codes[2].starts_with("450 4.4.0"), "{codes:?}");
    assert!(codes[3].starts_with("250 2.0.0"), "{codes:?}");

    let rows = store.queued().await.unwrap();
    assert_eq!(rows.len(), 3);
    for (row, (n, rcpt)) in rows.iter().zip([
        (1, &recipients[0]),
        (2, &recipients[1]),
        (3, &recipients[3]),
    ]) {
        assert_eq!(&row.recipient, rcpt);
        let envelope = store.envelope(row.id).await.unwrap().expect("queued");
        let opened = open(&envelope, &peer_key(n)).unwrap();
        assert_eq!(opened.letter.message, data);
        assert_eq!(&opened.letter.metadata.recipient, rcpt);
        assert_eq!(opened.letter.message_id, row.message_id);
        assert_eq!(opened.sender, public_key_of(&SecretKey::from([0xa1; 32])));
        let other = if n == 1 { 2 } else { 1 };
        assert_eq!(
            open(&envelope, &peer_key(other)).unwrap_err(),
            OpenError::WrongRecipient
        );
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();

    // Postfix repeats the transaction (same queue id): nothing new, the same ids answered.
    let again = intake.deliver(transaction(recipients, &data)).await;
    assert_eq!(store.queued().await.unwrap().len(), 3);
    for (reply, id) in [&again[0], &again[1], &again[3]].iter().zip(ids) {
        assert!(
            reply.render().contains(&format!("queued as {id}")),
            "{reply:?}"
        );
    }
}

#[tokio::test]
async fn a_copy_the_database_refuses_leaves_no_copy_and_answers_451_for_all() {
    let server = PgServer::started().await;
    let (intake, store) = intake(&server).await;
    let (db, conn) = tokio_postgres::connect(&server.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    // The third copy fails after the first two were written in the same transaction.
    let refused = rcpt(3);
    db.batch_execute(&format!(
        "CREATE FUNCTION refuse_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.recipient = '{refused}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_copy BEFORE INSERT ON outbound
             FOR EACH ROW EXECUTE FUNCTION refuse_copy();"
    ))
    .await
    .unwrap();
    let recipients = vec![rcpt(1), rcpt(2), refused, rcpt(4)];
    let replies = intake
        .deliver(transaction(
            recipients.clone(),
            b"Subject: x\r\n\r\nbody\r\n",
        ))
        .await;
    assert_eq!(codes(&replies), vec!["451 4.3.0"; 4]);
    assert!(store.queued().await.unwrap().is_empty());
    let count: i64 = db
        .query_one("SELECT count(*) FROM outbound", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);

    // Postfix retries once the database takes it: every copy, once.
    db.batch_execute("DROP TRIGGER refuse_copy ON outbound")
        .await
        .unwrap();
    let replies = intake
        .deliver(transaction(recipients, b"Subject: x\r\n\r\nbody\r\n"))
        .await;
    assert_eq!(codes(&replies), vec!["250 2.0.0"; 4]);
    assert_eq!(store.queued().await.unwrap().len(), 4);
}

/// Without XFORWARD (Zimbra's stock `lmtp` service) there is no Postfix queue id: a retried
/// transaction is recognised by its sender and bytes and queued once; another message is not
/// taken for a retry.
#[tokio::test]
async fn a_retry_without_a_queue_id_is_queued_once() {
    let server = PgServer::started().await;
    let (intake, _store) = intake(&server).await;
    let (db, conn) = tokio_postgres::connect(&server.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = || async {
        let row = db.query_one("SELECT count(*) FROM outbound", &[]).await;
        row.unwrap().get::<_, i64>(0)
    };
    let message =
        b"Received: by mx.a.example (Postfix) id 4Q1\r\nMessage-ID: <1@a.example>\r\n\r\nhi\r\n";
    let stock = |recipients: Vec<String>, data: &[u8]| Transaction {
        ident: None,
        ..transaction(recipients, data)
    };
    let first = intake.deliver(stock(vec![rcpt(1), rcpt(2)], message)).await;
    assert_eq!(codes(&first), vec!["250 2.0.0"; 2]);
    let again = intake.deliver(stock(vec![rcpt(1), rcpt(2)], message)).await;
    assert_eq!(first, again, "the retry answers the same queue ids");
    assert_eq!(rows().await, 2);
    // A different message (another queue id in Postfix's Received:) is new mail.
    let other =
        b"Received: by mx.a.example (Postfix) id 4Q2\r\nMessage-ID: <1@a.example>\r\n\r\nhi\r\n";
    let replies = intake.deliver(stock(vec![rcpt(1)], other)).await;
    assert_eq!(codes(&replies), vec!["250 2.0.0"]);
    assert_ne!(replies[0], first[0]);
    assert_eq!(rows().await, 3);
    let keys = db
        .query("SELECT DISTINCT idem_key FROM outbound", &[])
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert!(key.get::<_, String>(0).starts_with("sha256-"));
    }
}

/// RFC 3461: each copy keeps its recipient's NOTIFY and ORCPT and the message's RET and ENVID;
/// the part reports return is stored sealed to the sender's own key (never plain), and not at
/// all for a copy whose sender asked for no report.
#[tokio::test]
async fn each_copy_keeps_its_dsn_request_and_the_returned_part_only_sealed() {
    use toxmail_bridge::delivery::returned::Returned;
    use toxmail_bridge::dsn_request::{take_mail_params, take_rcpt_params};

    let server = PgServer::started().await;
    let (intake, _store) = intake(&server).await;
    let (db, conn) = tokio_postgres::connect(&server.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let rcpt_dsn = |params: &str| {
        let line = format!("RCPT TO:<x@y.test> {params}");
        take_rcpt_params(line.as_bytes()).unwrap().1
    };
    let data = b"Subject: secret plans\r\n\r\nthe body\r\n";
    let tx = Transaction {
        dsn: take_mail_params(b"MAIL FROM:<a@x.test> RET=HDRS ENVID=e1")
            .unwrap()
            .1,
        recipient_dsn: vec![
            rcpt_dsn("NOTIFY=SUCCESS ORCPT=rfc822;One@Y.test"),
            rcpt_dsn("NOTIFY=NEVER"),
            rcpt_dsn(""),
        ],
        ..transaction(vec![rcpt(1), rcpt(2), rcpt(3)], data)
    };
    let replies = intake.deliver(tx).await;
    assert_eq!(codes(&replies), vec!["250 2.0.0"; 3]);

    let rows = db
        .query(
            "SELECT dsn_notify, dsn_orcpt, dsn_ret, dsn_envid, dsn_original, delay_notified, \
             success_notice_due FROM outbound ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let key = SecretKey::from([0xa1; 32]);
    let first = &rows[0];
    assert_eq!(first.get::<_, Option<i16>>(0), Some(1), "SUCCESS");
    assert_eq!(first.get::<_, Option<&str>>(1), Some("rfc822;One@Y.test"));
    assert_eq!(first.get::<_, Option<&str>>(2), Some("HDRS"));
    assert_eq!(first.get::<_, Option<&str>>(3), Some("e1"));
    let sealed: Vec<u8> = first.get(4);
    assert!(!sealed.windows(6).any(|w| w == b"secret"), "sealed");
    let returned = Returned::open(&sealed, &key).expect("opens with the sender's key");
    assert_eq!(
        returned,
        Returned::Headers(b"Subject: secret plans\r\n".to_vec())
    );
    assert!(
        first.get::<_, bool>(5),
        "no DELAY asked: no delayed notice owed"
    );
    assert!(first.get::<_, bool>(6), "a delivered report is owed");
    let never = &rows[1];
    assert_eq!(never.get::<_, Option<i16>>(0), Some(8));
    assert_eq!(
        never.get::<_, Option<Vec<u8>>>(4),
        None,
        "nothing kept for NEVER"
    );
    assert!(never.get::<_, bool>(5) && !never.get::<_, bool>(6));
    let plain = &rows[2];
    assert_eq!(plain.get::<_, Option<i16>>(0), None, "no NOTIFY given");
    assert!(plain.get::<_, Option<Vec<u8>>>(4).is_some());
    assert!(!plain.get::<_, bool>(5) && !plain.get::<_, bool>(6));
}

/// SMTPUTF8 and BODY=8BITMIME from MAIL FROM are sealed with each copy (an extended envelope:
/// the peers' protocol level is not known yet), and a 7-bit ASCII message still seals as
/// version 1, which every release opens.
#[tokio::test]
async fn smtputf8_and_the_body_type_are_sealed_with_each_copy() {
    use toxmail_protocol::{BodyType, ENVELOPE_VERSION, ENVELOPE_VERSION_EXTENDED, Extensions};
    let server = PgServer::started().await;
    let (intake, store) = intake(&server).await;
    let wanted = Extensions {
        smtputf8: true,
        body: BodyType::EightBitMime,
        ..Default::default()
    };
    let utf8 = Transaction {
        extensions: wanted.clone(),
        ident: Some("4UTF8".into()),
        ..transaction(vec![rcpt(1)], "Subject: grüße\r\n\r\nschön\r\n".as_bytes())
    };
    assert_eq!(codes(&intake.deliver(utf8).await), ["250 2.0.0"]);
    let plain = transaction(vec![rcpt(2)], b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(codes(&intake.deliver(plain).await), ["250 2.0.0"]);
    let rows = store.queued().await.unwrap();
    assert_eq!(rows.len(), 2);
    for (row, n, version, extensions) in [
        (&rows[0], 1, ENVELOPE_VERSION_EXTENDED, wanted),
        (&rows[1], 2, ENVELOPE_VERSION, Extensions::default()),
    ] {
        let envelope = store.envelope(row.id).await.unwrap().expect("queued");
        assert_eq!(
            toxmail_protocol::peek_header(&envelope).unwrap().version,
            version
        );
        let opened = open(&envelope, &peer_key(n)).unwrap();
        assert_eq!(opened.letter.metadata.extensions, extensions);
    }
}

/// RFC 3461 to the far site: each copy's NOTIFY and ORCPT and the message's RET and ENVID are
/// sealed with the copy when it is extended anyway (SMTPUTF8 here); a plain ASCII message to a
/// peer whose level is not known leaves them out and still seals as version 1.
#[tokio::test]
async fn the_dsn_request_is_sealed_with_each_extended_copy_only() {
    use toxmail_bridge::dsn_request::{take_mail_params, take_rcpt_params};
    use toxmail_protocol::{
        BodyType, DsnRequest, DsnRet, ENVELOPE_VERSION, ENVELOPE_VERSION_EXTENDED, Extensions,
        OrcptType,
    };
    let server = PgServer::started().await;
    let (intake, store) = intake(&server).await;
    let rcpt_dsn = |params: &str| {
        let line = format!("RCPT TO:<x@y.test> {params}");
        take_rcpt_params(line.as_bytes()).unwrap().1
    };
    let mail_dsn = take_mail_params(b"MAIL FROM:<a@x.test> RET=FULL ENVID=QQ+2B1")
        .unwrap()
        .1;
    let utf8 = Transaction {
        extensions: Extensions {
            smtputf8: true,
            body: BodyType::EightBitMime,
            ..Default::default()
        },
        ident: Some("4UTF8".into()),
        dsn: mail_dsn.clone(),
        recipient_dsn: vec![
            rcpt_dsn("NOTIFY=FAILURE,DELAY ORCPT=rfc822;One+40Y.test"),
            rcpt_dsn(""),
        ],
        ..transaction(vec![rcpt(1), rcpt(2)], "Subject: grüße\r\n\r\n".as_bytes())
    };
    assert_eq!(codes(&intake.deliver(utf8).await), ["250 2.0.0"; 2]);
    let plain = Transaction {
        dsn: mail_dsn,
        recipient_dsn: vec![rcpt_dsn("NOTIFY=NEVER")],
        ..transaction(vec![rcpt(3)], b"Subject: x\r\n\r\nbody\r\n")
    };
    assert_eq!(codes(&intake.deliver(plain).await), ["250 2.0.0"]);

    let rows = store.queued().await.unwrap();
    assert_eq!(rows.len(), 3);
    let first = DsnRequest {
        notify: Some(DsnRequest::FAILURE | DsnRequest::DELAY),
        orcpt: Some((OrcptType::Rfc822, "One@Y.test".into())),
        ret: Some(DsnRet::Full),
        envid: Some("QQ+1".into()),
    };
    let second = DsnRequest {
        notify: None,
        orcpt: None,
        ..first.clone()
    };
    for (row, n, version, dsn) in [
        (&rows[0], 1, ENVELOPE_VERSION_EXTENDED, first),
        (&rows[1], 2, ENVELOPE_VERSION_EXTENDED, second),
        (&rows[2], 3, ENVELOPE_VERSION, DsnRequest::default()),
    ] {
        let envelope = store.envelope(row.id).await.unwrap().expect("queued");
        assert_eq!(
            toxmail_protocol::peek_header(&envelope).unwrap().version,
            version
        );
        let opened = open(&envelope, &peer_key(n)).unwrap();
        assert_eq!(opened.letter.metadata.extensions.dsn, dsn, "copy {n}");
    }
}
