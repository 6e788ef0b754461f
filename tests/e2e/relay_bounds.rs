//! Relay bounds (issue 8), against a real `toxmail-relay` and its PostgreSQL: the relay holds mail
//! only for registered recipients, refuses deposits past `total_bytes` for now and says so in its
//! log without naming a key, and refuses registrations past a key's hourly allowance and past
//! `max_registrations`, each with a temporary `Refuse` of the registration.

use std::time::Duration;

use tox_runtime::transfer::{DeliveryError, PeerEvent};
use toxmail_protocol::{
    NackClass, PublicKey, REGISTER_SUBJECT, Register, RelayFrame, RelayRefusal, SecretKey,
    public_key_of,
};
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::loopback_own_ports as opts;
use toxmail_tests::peers::{Peer, now, sealed_mail};
use toxmail_tests::relay::RelayProcess;

use crate::CONNECT;

/// Body size of every deposit here; envelopes of one body size have one padded size.
const BODY: usize = 10_000;

/// Befriends `relay` from `peer` and waits until it is online.
async fn online(peer: &Peer, relay: &RelayProcess) {
    let mut events = peer.courier.subscribe();
    let key = relay.address().public_key();
    peer.courier.add_relay(relay.address()).await.unwrap();
    let up = async {
        while let Some(e) = events.recv().await {
            if e == PeerEvent::Online(key) {
                return;
            }
        }
    };
    tokio::time::timeout(CONNECT, up)
        .await
        .unwrap_or_else(|_| panic!("relay not online\n{}", relay.log()));
}

/// Sends one `Register` to an online relay; its answer (`Holding` or `Refuse`).
async fn register_once(peer: &Peer, relay: &RelayProcess) -> RelayFrame {
    let mut events = peer.courier.subscribe();
    let key = relay.address().public_key();
    let frame = RelayFrame::Register(Register {
        expires: now() + 3600,
    });
    assert!(peer.courier.send_relay_frame(key, frame).await, "sent");
    let answer = async {
        while let Some(e) = events.recv().await {
            match e {
                PeerEvent::Relay {
                    from,
                    frame: f @ (RelayFrame::Holding(_) | RelayFrame::Refuse(_)),
                } if from == key => return f,
                _ => {}
            }
        }
        panic!("event stream ended");
    };
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .unwrap_or_else(|_| panic!("Register not answered\n{}", relay.log()))
}

/// A temporary `QuotaCount` refusal of a registration; its detail.
fn registration_refused(frame: RelayFrame) -> String {
    match frame {
        RelayFrame::Refuse(r) => {
            assert_eq!(r.message_id, REGISTER_SUBJECT);
            assert_eq!(
                (r.code, r.class),
                (RelayRefusal::QuotaCount, NackClass::Temporary)
            );
            r.detail
        }
        other => panic!("expected a refused registration, got {other:?}"),
    }
}

async fn registrations(relay: &RelayProcess) -> i64 {
    let (client, conn) = tokio_postgres::connect(&relay.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT count(*) FROM registrations", &[])
        .await
        .unwrap();
    row.get(0)
}

/// Deposits a fresh `BODY`-byte letter from `a` for `to` and waits for the relay's answer.
async fn deposit(a: &Peer, relay: &RelayProcess, to: &PublicKey) -> Result<(), DeliveryError> {
    let (letter, envelope) = sealed_mail(&a.secret, to, BODY);
    let d = a
        .courier
        .deposit(relay.address(), letter.message_id, envelope, now() + 3600);
    tokio::time::timeout(CONNECT, d)
        .await
        .unwrap_or_else(|_| panic!("deposit not answered\n{}", relay.log()))
}

fn refusal(result: Result<(), DeliveryError>, what: &str) -> (RelayRefusal, NackClass) {
    match result {
        Err(DeliveryError::RelayRefused(r)) => (r.code, r.class),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_holds_only_for_registered_recipients_within_total_bytes_and_bounds_registrations() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    let start = |name: &str| {
        let path = dir.path().join(name);
        let options = opts(&boot.node, free_udp_port());
        async move { Peer::start(&path, options, Duration::ZERO).await }
    };
    let (a, b, c) = tokio::join!(start("a"), start("b"), start("c"));
    // Room for two envelopes and a half; one registration; two `Register`s per key and hour.
    let probe = SecretKey::from([0x11; 32]);
    let size = sealed_mail(&probe, &public_key_of(&probe), BODY).1.len() as u64;
    let policy = format!(
        "max_envelope_bytes = {size}\ntotal_bytes = {}\nmax_registrations = 1\n\
         registrations_per_hour = 2",
        2 * size + size / 2
    );
    let relay = RelayProcess::start(&dir.path().join("r"), &boot.node, &policy);

    // B registers, renews once within the hour, and is refused the third time; its
    // registration stays in force.
    relay.register(&b.courier, CONNECT).await;
    assert!(matches!(
        register_once(&b, &relay).await,
        RelayFrame::Holding(_)
    ));
    let detail = registration_refused(register_once(&b, &relay).await);
    assert!(detail.contains("too many registrations"), "{detail}");
    // C would be a second recipient: no place for it.
    online(&c, &relay).await;
    let detail = registration_refused(register_once(&c, &relay).await);
    assert!(detail.contains("no more recipients"), "{detail}");
    assert_eq!(registrations(&relay).await, 1, "only B's registration");
    let (b_key, c_key) = (b.public_key(), c.public_key());
    b.task.shutdown().await;
    c.task.shutdown().await;

    // A deposit for C, who is not registered, is refused; for B two fit, the third does not.
    let for_c = deposit(&a, &relay, &c_key).await;
    assert_eq!(
        refusal(for_c, "deposit for an unregistered key"),
        (RelayRefusal::NotAllowed, NackClass::Permanent)
    );
    deposit(&a, &relay, &b_key).await.expect("first held");
    deposit(&a, &relay, &b_key).await.expect("second held");
    let third = deposit(&a, &relay, &b_key).await;
    assert_eq!(
        refusal(third, "deposit past total_bytes"),
        (RelayRefusal::QuotaBytes, NackClass::Temporary),
        "the sender keeps it and tries later"
    );
    assert_eq!(relay.held().await, 2, "refusals changed nothing");
    println!(
        "total_bytes {} bit at the third {size}-byte envelope",
        2 * size + size / 2
    );

    // The operator reads why in the log, and no key of the parties there.
    let log = relay.log();
    let keys = [a.public_key(), b_key, c_key].map(|k| k.to_string());
    for needle in [
        "relay full (policy.total_bytes)",
        "registration refused (policy.registrations_per_hour)",
        "policy.max_registrations in force",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line {needle:?}\n{log}"));
        assert!(
            !keys.iter().any(|k| line.contains(k.as_str())),
            "a key in {line:?}"
        );
    }
    a.task.shutdown().await;
}
