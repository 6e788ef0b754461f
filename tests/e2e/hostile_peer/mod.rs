//! Issue 8: the receiving bridge as a trust boundary. The attacker is a Tox node of its own whose
//! envelopes are built by hand (`Letter` fields as an attacker chooses them, sealed with its own
//! key) and handed to a courier, against a real site B (PostgreSQL, Postfix, toxmail-bridge) with
//! default settings. Every scenario starts with a control delivery from the same attacker, so a
//! refusal proves the bridge refused, not that the attacker could not talk. One module per
//! concern; each test named after what it proves (docs/security.md has the threat table).

mod addresses;
mod bounds;
mod dns;
mod headers;
mod identity;
mod relayed;
mod replay;
mod revocation;
mod squatting;

use std::time::Duration;

use tox_runtime::transfer::{Courier, DeliveryError};
use toxmail_protocol::{Letter, MessageId, Metadata, NackClass, NackCode, ToxId, seal};
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::{Peer, loopback_own_ports, now};
use toxmail_tests::site::{Site, SiteSpec};
use toxmail_tests::wait_for;

use crate::CONNECT;
use crate::postfix_flow::spec;

pub(super) const INJECTED: Duration = Duration::from_secs(30);

pub(super) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A private Tox network for one test: its temp dir and its bootstrap daemon.
pub(super) fn scene() -> (tempfile::TempDir, BootstrapDaemon) {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    (root, boot)
}

/// Site B: bob and alice have mailboxes, bob a Tox identity; plain mail would go to an smtp-sink,
/// so anything the bridge lets Postfix relay is caught there.
pub(super) fn site_b(root: &std::path::Path, boot: &BootstrapDaemon) -> Site {
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob", "alice"]);
    b_spec.identities = vec!["bob@b.test".into()];
    b_spec.relay_sink = true;
    let mut b = Site::prepare(root, b_spec, &boot.node);
    b.start_bridge();
    b
}

/// A Tox node toxmail has never heard of, with a courier to carry the envelopes it builds.
pub(super) async fn attacker(root: &std::path::Path, name: &str, boot: &BootstrapDaemon) -> Peer {
    let options = loopback_own_ports(&boot.node, free_udp_port());
    Peer::start(&root.join(name), options, Duration::ZERO).await
}

/// Two raw Tox nodes: mallory, a stranger, and alice, whom `b`'s operator added as a contact.
pub(super) async fn mallory_and_contact_alice(
    root: &std::path::Path,
    boot: &BootstrapDaemon,
    b: &Site,
) -> (Peer, Peer) {
    let (m, a) = tokio::join!(
        attacker(root, "mallory", boot),
        attacker(root, "alice", boot)
    );
    let alice = a.info.address.to_string();
    b.admin(&["contact", "add", "alice@a.test", &alice])
        .expect("contact add");
    (m, a)
}

/// A letter as the attacker writes it: every field its own choice.
pub(super) fn letter(sender: &str, recipient: &str, message: &str) -> Letter {
    Letter {
        message_id: MessageId::random(),
        metadata: Metadata {
            envelope_sender: sender.into(),
            recipient: recipient.into(),
            queue_id: "EVIL1".into(),
            created: now(),
            expires: now() + 86_400,
            extensions: Default::default(),
        },
        message: message.as_bytes().to_vec(),
    }
}

/// Seals `letter` with the attacker's key to `to` and delivers it under the letter's id.
pub(super) async fn send(
    b: &Site,
    from: &Peer,
    to: ToxId,
    letter: &Letter,
) -> Result<(), DeliveryError> {
    let envelope = seal(letter, &from.secret, &to.public_key()).expect("seal");
    let courier: &Courier = &from.courier;
    let delivery = courier.deliver(to, letter.message_id, envelope.into());
    match tokio::time::timeout(CONNECT, delivery).await {
        Ok(verdict) => verdict,
        Err(_) => panic!(
            "no verdict on {} in {CONNECT:?}; courier stats {:?}\nbridge log:\n{}",
            letter.message_id,
            from.courier.stats(),
            b.bridge_log()
        ),
    }
}

pub(super) fn refused_for_good(result: Result<(), DeliveryError>, what: &str) -> NackCode {
    match result {
        Err(DeliveryError::Refused(n)) if n.class == NackClass::Permanent => n.code,
        other => panic!("{what}: expected a permanent refusal, got {other:?}"),
    }
}

/// Seals `letter` from `from` to `to` and deposits it at relay `r` for an hour.
pub(super) async fn deposit(
    r: &toxmail_tests::relay::RelayProcess,
    from: &Peer,
    to: toxmail_protocol::PublicKey,
    letter: &Letter,
) -> Result<(), DeliveryError> {
    let envelope = seal(letter, &from.secret, &to).expect("seal");
    let custody = from.courier.deposit(
        r.address(),
        letter.message_id,
        envelope.into(),
        now() + 3600,
    );
    tokio::time::timeout(CONNECT, custody)
        .await
        .unwrap_or_else(|_| panic!("no answer from the relay\n{}", r.log()))
}

/// The control delivery every scenario makes: a plain letter from `from` to bob whose body is
/// `marker`, which must be acked (proving the attacker speaks the protocol).
pub(super) async fn control(b: &Site, from: &Peer, bob: ToxId, marker: &str) {
    let letter = letter("m@m.test", "bob@b.test", &body(marker));
    send(b, from, bob, &letter)
        .await
        .unwrap_or_else(|e| panic!("control delivery {marker}: {e}"));
}

/// Waits until bob's Maildir holds a message containing `marker`.
pub(super) async fn in_bobs_maildir(b: &Site, marker: &str) -> bool {
    wait_for(INJECTED, || {
        b.postfix
            .maildir_messages("bob")
            .iter()
            .any(|m| contains(m, marker))
    })
    .await
}

pub(super) fn body(marker: &str) -> String {
    format!("From: <m@m.test>\r\nTo: <bob@b.test>\r\nSubject: hello\r\n\r\n{marker}\r\n")
}

pub(super) fn in_bobs_maildir_now(b: &Site, marker: &str) -> bool {
    b.postfix
        .maildir_messages("bob")
        .iter()
        .any(|m| contains(m, marker))
}
