//! Issue 8: the receiving bridge as a trust boundary. The attacker is a Tox node of its own whose
//! envelopes are built by hand (`Letter` fields as an attacker chooses them, sealed with its own
//! key) and handed to a courier, against a real site B (PostgreSQL, Postfix, toxmail-bridge) with
//! default settings. Every scenario starts with a control delivery from the same attacker, so a
//! refusal proves the bridge refused, not that the attacker could not talk.

use std::time::Duration;

use tox_runtime::transfer::{Courier, DeliveryError};
use toxmail_protocol::{Letter, MessageId, Metadata, NackClass, NackCode, ToxId, seal};
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::{Peer, loopback_own_ports, now};
use toxmail_tests::site::{Site, SiteSpec};
use toxmail_tests::wait_for;

use crate::CONNECT;
use crate::postfix_flow::spec;

const INJECTED: Duration = Duration::from_secs(30);

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Site B: bob and alice have mailboxes, bob a Tox identity; plain mail would go to an smtp-sink,
/// so anything the bridge lets Postfix relay is caught there.
fn site_b(root: &std::path::Path, boot: &BootstrapDaemon) -> Site {
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob", "alice"]);
    b_spec.identities = vec!["bob@b.test".into()];
    b_spec.relay_sink = true;
    let mut b = Site::prepare(root, b_spec, &boot.node);
    b.start_bridge();
    b
}

/// A Tox node toxmail has never heard of, with a courier to carry the envelopes it builds.
async fn attacker(root: &std::path::Path, name: &str, boot: &BootstrapDaemon) -> Peer {
    let options = loopback_own_ports(&boot.node, free_udp_port());
    Peer::start(&root.join(name), options, Duration::ZERO).await
}

/// A letter as the attacker writes it: every field its own choice.
fn letter(sender: &str, recipient: &str, message: &str) -> Letter {
    Letter {
        message_id: MessageId::random(),
        metadata: Metadata {
            envelope_sender: sender.into(),
            recipient: recipient.into(),
            queue_id: "EVIL1".into(),
            created: now(),
            expires: now() + 86_400,
        },
        message: message.as_bytes().to_vec(),
    }
}

/// Seals `letter` with the attacker's key to `to` and delivers it under the letter's id.
async fn send(b: &Site, from: &Peer, to: ToxId, letter: &Letter) -> Result<(), DeliveryError> {
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

fn refused_for_good(result: Result<(), DeliveryError>, what: &str) -> NackCode {
    match result {
        Err(DeliveryError::Refused(n)) if n.class == NackClass::Permanent => n.code,
        other => panic!("{what}: expected a permanent refusal, got {other:?}"),
    }
}

/// Waits until bob's Maildir holds a message containing `marker`.
async fn in_bobs_maildir(b: &Site, marker: &str) -> bool {
    wait_for(INJECTED, || {
        b.postfix
            .maildir_messages("bob")
            .iter()
            .any(|m| contains(m, marker))
    })
    .await
}

fn body(marker: &str) -> String {
    format!("From: <m@m.test>\r\nTo: <bob@b.test>\r\nSubject: hello\r\n\r\n{marker}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_addresses_in_a_sealed_envelope_are_refused_and_nothing_is_relayed() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;

    let control = letter("m@m.test", "bob@b.test", &body("CONTROL-1"));
    send(&b, &m, bob, &control).await.expect("control delivery");
    assert!(in_bobs_maildir(&b, "CONTROL-1").await, "{}", b.bridge_log());

    let smuggle = "carol@plain.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nSMUGGLED\r\n.\r\n\
                   MAIL FROM:<>\r\nRCPT TO:<bob@b.test";
    let attacks = [
        (
            "CR/LF in the recipient",
            letter("m@m.test", smuggle, &body("X1")),
        ),
        (
            "CR/LF in the sender",
            letter(
                "m@m.test>\r\nRCPT TO:<carol@plain.test",
                "bob@b.test",
                &body("X2"),
            ),
        ),
        (
            "percent hack",
            letter("m@m.test", "carol%plain.test@b.test", &body("X3")),
        ),
        (
            "bang path",
            letter("m@m.test", "plain.test!carol@b.test", &body("X4")),
        ),
        (
            "source route",
            letter("m@m.test", "@b.test:carol@plain.test", &body("X5")),
        ),
        (
            "another mailbox under bob's key",
            letter("m@m.test", "alice@b.test", &body("X6")),
        ),
    ];
    for (what, attack) in &attacks {
        refused_for_good(send(&b, &m, bob, attack).await, what);
    }

    // Everything refused was refused before any byte reached Postfix: a control delivery sent
    // after the attacks arrives, and nothing else did, at bob's, at alice's, or in the sink.
    let control = letter("m@m.test", "bob@b.test", &body("CONTROL-2"));
    send(&b, &m, bob, &control).await.expect("second control");
    assert!(in_bobs_maildir(&b, "CONTROL-2").await, "{}", b.bridge_log());
    b.postfix.flush();
    tokio::time::sleep(Duration::from_secs(1)).await; // let a queued relay attempt show
    let log = b.postfix.maillog();
    assert!(b.postfix.sink_messages().is_empty(), "relayed:\n{log}");
    assert!(
        !log.contains("plain.test"),
        "an outside recipient reached Postfix:\n{log}"
    );
    assert_eq!(b.postfix.maildir_messages("bob").len(), 2, "{log}");
    assert!(b.postfix.maildir_messages("alice").is_empty(), "{log}");

    // Defence in depth: the injection service `postfix-config` prints refuses to relay on its
    // own, even to a client on 127.0.0.1, where the site's ordinary smtpd trusts mynetworks.
    let outside = [
        "carol@plain.test",
        "carol%plain.test@b.test",
        "plain.test!carol@b.test",
    ];
    let rcpts = [&outside[..], &["bob@b.test"]].concat();
    let m = toxmail_tests::smtp::message("m@m.test", &rcpts, "direct", "INJECT-DIRECT\r\n");
    let out = toxmail_tests::smtp::send(b.inject, "m@m.test", &rcpts, &m)
        .await
        .unwrap();
    let codes = out.rcpt_codes();
    assert!(codes[..3].iter().all(|c| *c >= 500), "{out:?}");
    assert_eq!(codes[3], 250, "{out:?}");
    assert!(out.accepted(), "{out:?}");
    let ordinary = toxmail_tests::smtp::send(b.postfix.smtp_addr(), "m@m.test", &outside[..1], &m)
        .await
        .unwrap();
    assert_eq!(
        ordinary.rcpt_codes(),
        [250],
        "control: the ordinary smtpd relays for mynetworks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_squatting_a_message_id_does_not_suppress_the_real_mail() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let (s, a) = tokio::join!(
        attacker(root.path(), "squatter", &boot),
        attacker(root.path(), "alice", &boot)
    );

    // The real sender's mail, id X, not yet delivered; the squatter learned X (a relay saw it).
    let real = letter("alice@a.test", "bob@b.test", &body("REAL-MAIL"));
    let mut squat = letter("alice@a.test", "bob@b.test", &body("SQUATTED"));
    squat.message_id = real.message_id;
    send(&b, &s, bob, &squat)
        .await
        .expect("the squatter's own envelope is stored");
    assert!(in_bobs_maildir(&b, "SQUATTED").await, "{}", b.bridge_log());

    send(&b, &a, bob, &real)
        .await
        .expect("the real mail is acked");
    assert!(
        in_bobs_maildir(&b, "REAL-MAIL").await,
        "the real mail was acked as a duplicate of the squatter's\n{}",
        b.bridge_log()
    );
    // A resend of the real mail is still a duplicate: one copy.
    send(&b, &a, bob, &real).await.expect("resend acked");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = b
        .postfix
        .maildir_messages("bob")
        .iter()
        .filter(|m| contains(m, "REAL-MAIL"))
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_trace_headers_are_stripped_and_a_local_sender_from_a_stranger_is_refused() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;

    let forged_key = "AB".repeat(32);
    let message = format!(
        "X-Toxmail-Sender-Key: {forged_key}\r\n\
         Authentication-Results: mx.b.test; x-toxmail=pass smtp.mailfrom=ceo@bank.test\r\n\
         X-Toxmail-Verdict:\r\n pass\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=bank.test\r\n\
         From: <ceo@bank.test>\r\nSubject: wire the money\r\n\r\nFORGED-HEADERS\r\n"
    );
    let forged = letter("ceo@bank.test", "bob@b.test", &message);
    send(&b, &m, bob, &forged).await.expect("delivered, tagged");
    assert!(
        in_bobs_maildir(&b, "FORGED-HEADERS").await,
        "{}",
        b.bridge_log()
    );
    let stored = b.postfix.maildir_messages("bob").remove(0);
    let text = String::from_utf8_lossy(&stored);
    assert!(
        !text.contains(&forged_key),
        "forged key header kept:\n{text}"
    );
    assert!(!text.contains("X-Toxmail-Verdict"), "{text}");
    assert!(
        !text.contains("x-toxmail=pass"),
        "forged verdict kept:\n{text}"
    );
    assert!(
        text.contains("other.example; spf=pass"),
        "another host's results are not ours to remove:\n{text}"
    );
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Authentication-Results: mx.b.test;"))
        .collect();
    assert_eq!(ours.len(), 1, "{text}");
    assert!(ours[0].contains("x-toxmail=none"), "{text}");
    let key = m.public_key().to_string();
    assert!(
        text.contains(&format!("X-Toxmail-Sender-Key: {key}")),
        "{text}"
    );

    // A stranger claiming one of B's own users.
    let local = letter("alice@b.test", "bob@b.test", &body("FAKE-LOCAL"));
    let code = refused_for_good(send(&b, &m, bob, &local).await, "a local sender");
    assert_eq!(code, NackCode::Forged);
    let local = letter("Alice@B.TEST", "bob@b.test", &body("FAKE-LOCAL"));
    refused_for_good(
        send(&b, &m, bob, &local).await,
        "a local sender, other case",
    );
}

/// Runs `toxmail-bridge run` on `config` and returns its exit status and output once it exits;
/// panics if it is still running after 60 s (it would have started with new keys).
fn run_until_exit(config: &std::path::Path) -> (std::process::ExitStatus, String) {
    let log = config.with_extension("run.log");
    let mut child =
        toxmail_tests::site::spawn_daemon(&toxmail_tests::site::bridge_binary(), config, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(&log).unwrap_or_default());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the bridge started without its identities' savedata:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_whose_state_dir_lost_its_identities_refuses_to_start() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob"]);
    b_spec.identities = vec!["bob@b.test".into()];
    let b = Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    let listed = b.admin(&["identity", "list"]).expect("identity list");
    assert!(listed.contains(&format!("bob@b.test\t{bob}")), "{listed}");
    b.admin(&["check-config"])
        .expect("check-config with the real state_dir");

    // The operator points state_dir at an empty directory (a typo, a lost volume).
    let config = std::fs::read_to_string(&b.config).unwrap();
    let real = b.dir.join("state");
    let empty = b.dir.join("state-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let wrong = config.replace(
        &format!("state_dir = \"{}\"", real.display()),
        &format!("state_dir = \"{}\"", empty.display()),
    );
    assert_ne!(wrong, config);
    let wrong_config = b.dir.join("wrong-state.toml");
    std::fs::write(&wrong_config, wrong).unwrap();

    let (status, out) = run_until_exit(&wrong_config);
    assert!(!status.success(), "{out}");
    let missing = toxmail_tests::site::run_admin(
        &toxmail_tests::site::bridge_binary(),
        &wrong_config,
        &["check-config"],
    )
    .expect_err("check-config reports the missing savedata");
    for text in [&out, &missing] {
        assert!(
            text.contains("savedata") && text.contains("missing"),
            "{text}"
        );
        assert!(
            text.contains(&empty.display().to_string()),
            "names the file: {text}"
        );
    }
    let listed = toxmail_tests::site::run_admin(
        &toxmail_tests::site::bridge_binary(),
        &wrong_config,
        &["identity", "list"],
    )
    .expect_err("identity list fails");
    assert!(listed.contains("cannot be loaded"), "{listed}");
    let made: Vec<_> = walk(&empty);
    assert!(made.is_empty(), "no keys minted: {made:?}");

    // The right state_dir with the wrong key file: refused too, naming the file.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // A key file others can read is refused before anything else happens.
    let key = b.dir.join("bridge.key");
    mode(&key, 0o644);
    let (status, out) = run_until_exit(&b.config);
    assert!(
        !status.success() && out.contains("can be read by group or others"),
        "{out}"
    );
    mode(&key, 0o600);
    let other = b.dir.join("other.key");
    std::fs::write(&other, b"another key file, 32 bytes long!").unwrap();
    mode(&other, 0o600);
    let other_key = config.replace(
        &format!("key_file = \"{}\"", b.dir.join("bridge.key").display()),
        &format!("key_file = \"{}\"", b.dir.join("other.key").display()),
    );
    assert_ne!(other_key, config);
    let other_config = b.dir.join("other-key.toml");
    std::fs::write(&other_config, other_key).unwrap();
    let (status, out) = run_until_exit(&other_config);
    assert!(!status.success(), "{out}");
    assert!(out.contains("cannot be opened with the key file"), "{out}");
    assert!(out.contains(&real.display().to_string()), "{out}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_local_mta_refuses_after_the_ack_bounces_to_its_sender() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut a = Site::prepare(
        root.path(),
        spec("site-a", "a.test", &["alice"]),
        &boot.node,
    );
    let mut b = Site::prepare(root.path(), spec("site-b", "b.test", &["bob"]), &boot.node);
    let (alice, bob) = (a.identities["alice@a.test"], b.identities["bob@b.test"]);
    a.admin(&["contact", "add", "bob@b.test", &bob.to_string()])
        .expect("contact at A");
    b.admin(&["contact", "add", "alice@a.test", &alice.to_string()])
        .expect("contact at B");
    // B's content filter refuses the message at DATA; the mailbox probe (RCPT) still passes, so
    // B acks first and learns of the refusal only when it injects.
    let checks = b.dir.join("header_checks");
    std::fs::write(
        &checks,
        "/^Subject: .*REFUSE-AFTER-ACK/ REJECT 5.7.1 content refused by site policy\n",
    )
    .unwrap();
    b.postfix
        .postconf(&format!("header_checks = regexp:{}", checks.display()));
    a.start_bridge();
    b.start_bridge();

    let to = ["bob@b.test"];
    let m = toxmail_tests::smtp::message("alice@a.test", &to, "REFUSE-AFTER-ACK", "Hi Bob\r\n");
    let out = toxmail_tests::smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let bounced = wait_for(CONNECT * 2, || {
        a.postfix
            .maildir_messages("alice")
            .iter()
            .any(|m| contains(m, "Action: failed"))
    });
    assert!(
        bounced.await,
        "no DSN reached alice\nA:\n{}\nB:\n{}\n{}",
        a.bridge_log(),
        b.bridge_log(),
        b.postfix.maillog()
    );
    let dsn = a.postfix.maildir_messages("alice").remove(0);
    let text = String::from_utf8_lossy(&dsn);
    for expected in [
        "Reporting-MTA: dns; mx.b.test",
        "Final-Recipient: rfc822; bob@b.test",
        "Status: 5.7.1",
        "content refused by site policy",
        "text/rfc822-headers",
        "Subject: REFUSE-AFTER-ACK",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    assert!(b.postfix.maildir_messages("bob").is_empty());
    assert!(b.bridge_log().contains("bounced to the envelope sender"));
}

/// Seals `letter` from `from` to `to` and deposits it at relay `r` for an hour.
async fn deposit(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_never_confirms_custody_of_a_message_id_another_depositor_took() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let r = toxmail_tests::relay::RelayProcess::start(&root.path().join("relay"), &boot.node, "");
    let (s, a) = tokio::join!(
        attacker(root.path(), "squatter", &boot),
        attacker(root.path(), "alice", &boot)
    );
    // Bob and carol are offline; only their keys matter to the relay.
    let bob = toxmail_protocol::public_key_of(&toxmail_protocol::SecretKey::from([5u8; 32]));
    let carol = toxmail_protocol::public_key_of(&toxmail_protocol::SecretKey::from([6u8; 32]));
    // A relay started without a key file encrypts its savedata with one it made itself.
    use std::os::unix::fs::PermissionsExt;
    let state = root.path().join("relay/state");
    let savedata = std::fs::read(state.join("relay.tox")).unwrap();
    assert!(
        savedata.starts_with(b"toxEsave"),
        "relay savedata in the clear"
    );
    let key_mode = std::fs::metadata(state.join("relay.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // Control: the squatter speaks the protocol, the relay holds its envelope.
    let real = letter("alice@a.test", "bob@b.test", &body("REAL"));
    let mut squat = letter("alice@a.test", "bob@b.test", &body("SQUAT"));
    squat.message_id = real.message_id;
    deposit(&r, &s, bob, &squat)
        .await
        .expect("custody of the squatter's envelope");
    assert_eq!(r.held().await, 1);

    // Alice's real envelope under the same id for bob: refused, never "held".
    match deposit(&r, &a, bob, &real).await {
        Err(DeliveryError::RelayRefused(refusal)) => {
            assert_eq!(refusal.code, toxmail_protocol::RelayRefusal::NotAllowed)
        }
        other => panic!("custody confirmed for an envelope the relay does not hold: {other:?}"),
    }
    assert_eq!(r.held().await, 1);
    // The same id for another recipient is another message: held.
    let mut for_carol = letter("alice@a.test", "carol@c.test", &body("CAROL"));
    for_carol.message_id = real.message_id;
    deposit(&r, &a, carol, &for_carol)
        .await
        .expect("custody for carol");
    // And the squatter depositing again is confirmed again, not stored twice.
    deposit(&r, &s, bob, &squat)
        .await
        .expect("custody confirmed again");
    assert_eq!(r.held().await, 2);
}

/// Distinct peer keys named on bridge log lines containing `what`.
fn peers_logged(log: &str, what: &str) -> std::collections::HashSet<String> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split("peer=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_is_bounded_and_strangers_that_deliver_nothing_are_dropped() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_tox =
        "max_pending_strangers = 4\nstrangers_per_minute = 100\nstranger_grace_secs = 30\n".into();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    b.start_bridge();
    let bob = b.identities["bob@b.test"];
    let savedata = b.dir.join("state/identities/bob@b.test.tox");

    // Control: a stranger that delivers a sealed envelope is a correspondent, and stays one.
    let m = attacker(root.path(), "mallory", &boot).await;
    send(
        &b,
        &m,
        bob,
        &letter("m@m.test", "bob@b.test", &body("CONTROL-1")),
    )
    .await
    .expect("control delivery");
    let before = std::fs::metadata(&savedata).unwrap().len();

    // Ten strangers ask at once; none ever delivers anything.
    let mut flood = Vec::new();
    for _ in 0..10 {
        let options = loopback_own_ports(&boot.node, free_udp_port());
        let node = tox_runtime::Node::start(options).await.unwrap();
        let hello = toxmail_protocol::friend_request_message("let me in");
        node.handle.friend_add(bob, hello).await.unwrap();
        flood.push(node);
    }
    let flooders: std::collections::HashSet<String> = flood
        .iter()
        .map(|n| n.info.public_key.to_string())
        .collect();
    let bounded = wait_for(CONNECT, || {
        let log = b.bridge_log();
        let accepted = peers_logged(&log, "accepted toxmail friend request");
        let refused = peers_logged(&log, "bound reached");
        accepted.intersection(&flooders).count() == 4 && refused.len() >= 6
    });
    assert!(bounded.await, "{}", b.bridge_log());
    let log = b.bridge_log();
    let accepted = peers_logged(&log, "accepted toxmail friend request");
    assert_eq!(
        accepted.intersection(&flooders).count(),
        4,
        "at the cap, not over it"
    );
    let grown = std::fs::metadata(&savedata).unwrap().len() - before;
    assert!(
        grown <= 4 * 4096,
        "savedata grew by {grown} bytes for 4 strangers"
    );

    // The four that delivered nothing are unfriended after their grace; mallory is not.
    let dropped = wait_for(Duration::from_secs(90), || {
        peers_logged(&b.bridge_log(), "unfriended").len() >= 4
    });
    assert!(dropped.await, "{}", b.bridge_log());
    let unfriended = peers_logged(&b.bridge_log(), "unfriended");
    assert!(!unfriended.contains(&m.public_key().to_string()));
    send(
        &b,
        &m,
        bob,
        &letter("m@m.test", "bob@b.test", &body("CONTROL-2")),
    )
    .await
    .expect("the proven correspondent is still a friend");
    assert!(in_bobs_maildir(&b, "CONTROL-2").await);
    // Never more than the cap of strangers at once: the savedata stays small.
    let grown = std::fs::metadata(&savedata)
        .unwrap()
        .len()
        .saturating_sub(before);
    assert!(grown <= 4 * 4096, "savedata grew by {grown} bytes");
    for node in flood {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_envelopes_of_abandoned_transfers_are_swept() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b_spec: SiteSpec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_tox = "spool_max_age_secs = 5\n".into();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    let spool = b.dir.join("state/spool/bob@b.test");
    // One left over from before the start (as after a crash): swept at start.
    std::fs::create_dir_all(&spool).unwrap();
    let stale = spool.join(format!("{}-{}.part", "AB".repeat(32), MessageId::random()));
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    b.start_bridge();
    let bob = b.identities["bob@b.test"];
    assert!(
        wait_for(Duration::from_secs(10), || !stale.exists()).await,
        "a stale partial envelope survived the start\n{}",
        b.bridge_log()
    );

    // A control delivery, then a large one the attacker abandons halfway.
    let m = attacker(root.path(), "mallory", &boot).await;
    send(
        &b,
        &m,
        bob,
        &letter("m@m.test", "bob@b.test", &body("CONTROL")),
    )
    .await
    .expect("control delivery");
    let big = "x".repeat(12 * 1024 * 1024);
    let abandoned = letter("m@m.test", "bob@b.test", &body(&big));
    let envelope = seal(&abandoned, &m.secret, &bob.public_key()).expect("seal");
    let courier = m.courier.clone();
    let id = abandoned.message_id;
    tokio::spawn(async move { courier.deliver(bob, id, envelope.into()).await });
    let partial = || {
        std::fs::read_dir(&spool)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.path().extension().is_some_and(|x| x == "part")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    };
    assert!(
        wait_for(CONNECT, partial).await,
        "the transfer never started\n{}",
        b.bridge_log()
    );
    m.task.shutdown().await; // gone mid-transfer, for good
    let swept = wait_for(Duration::from_secs(60), || !partial()).await;
    assert!(
        swept,
        "the abandoned partial envelope stayed\n{}",
        b.bridge_log()
    );
    assert!(
        b.bridge_log()
            .contains("abandoned partial envelopes deleted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_flood_without_files_is_bounded_per_peer() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;
    send(
        &b,
        &m,
        bob,
        &letter("m@m.test", "bob@b.test", &body("CONTROL-1")),
    )
    .await
    .expect("control delivery");

    // Raw frames from mallory's node: 300 offers, no file ever follows.
    let friend = m
        .courier
        .node()
        .friends()
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.public_key == bob.public_key())
        .expect("bob is mallory's friend")
        .friend;
    let raw = m.courier.node().clone();
    for _ in 0..300 {
        let offer = toxmail_protocol::Frame::Offer(toxmail_protocol::Offer {
            message_id: MessageId::random(),
            size: 10_000,
        });
        // The packet queue may be full for a moment: wait and send again.
        while raw.send_packet(friend, offer.encode()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let refused = wait_for(CONNECT, || {
        b.bridge_log()
            .matches("offer refused for now: too many outstanding")
            .count()
            >= 300 - 64
    });
    assert!(refused.await, "{}", b.bridge_log());
    let refusals = b
        .bridge_log()
        .matches("offer refused for now: too many outstanding")
        .count();
    assert_eq!(refusals, 300 - 64, "exactly the offers over the bound");

    // The bound is mallory's alone: its own next mail waits (temporarily), another peer's
    // goes through at once.
    let later = letter("m@m.test", "bob@b.test", &body("LATER"));
    match send(&b, &m, bob, &later).await {
        Err(DeliveryError::Refused(n)) => {
            assert_eq!((n.class, n.code), (NackClass::Temporary, NackCode::Busy))
        }
        other => panic!("mallory's offers are over the bound: {other:?}"),
    }
    let a = attacker(root.path(), "alice", &boot).await;
    send(
        &b,
        &a,
        bob,
        &letter("alice@a.test", "bob@b.test", &body("CONTROL-2")),
    )
    .await
    .expect("another peer's delivery during the flood");
    assert!(in_bobs_maildir(&b, "CONTROL-2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_keys_removed_contacts_and_a_rotated_nospam_revoke_friendships() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let (m, a) = tokio::join!(
        attacker(root.path(), "mallory", &boot),
        attacker(root.path(), "alice", &boot)
    );
    b.admin(&[
        "contact",
        "add",
        "alice@a.test",
        &a.info.address.to_string(),
    ])
    .expect("contact add");
    send(
        &b,
        &m,
        bob,
        &letter("m@m.test", "bob@b.test", &body("CONTROL-M")),
    )
    .await
    .expect("mallory's control delivery");
    send(
        &b,
        &a,
        bob,
        &letter("alice@a.test", "bob@b.test", &body("CONTROL-A")),
    )
    .await
    .expect("alice's control delivery");
    let ended = |key: String| {
        let log = b.bridge_log();
        log.lines()
            .any(|l| l.contains("friendship ended by the operator") && l.contains(&key))
    };

    // Blocking mallory ends the friendship: her next mail gets nowhere.
    let out = b
        .admin(&["block", "add", &m.info.address.to_string()])
        .unwrap();
    assert!(out.contains("blocked"), "{out}");
    let m_key = m.public_key().to_string();
    assert!(
        wait_for(Duration::from_secs(20), || ended(m_key.clone())).await,
        "{}",
        b.bridge_log()
    );
    let after = letter("m@m.test", "bob@b.test", &body("AFTER-BLOCK"));
    let envelope = seal(&after, &m.secret, &bob.public_key()).unwrap();
    let late = m.courier.deliver(bob, after.message_id, envelope.into());
    assert!(
        tokio::time::timeout(Duration::from_secs(15), late)
            .await
            .is_err()
    );
    assert!(!in_bobs_maildir_now(&b, "AFTER-BLOCK"));

    // Removing alice's contact ends hers.
    b.admin(&["contact", "remove", "alice@a.test"]).unwrap();
    let a_key = a.public_key().to_string();
    assert!(
        wait_for(Duration::from_secs(20), || ended(a_key.clone())).await,
        "{}",
        b.bridge_log()
    );

    // A rotated nospam: the old Tox ID takes no new friend, the new one does.
    let out = b
        .admin(&["identity", "rotate-nospam", "bob@b.test"])
        .unwrap();
    let new_id: ToxId = out
        .lines()
        .find_map(|l| l.strip_prefix("new Tox ID: "))
        .expect("new Tox ID printed")
        .parse()
        .unwrap();
    assert_ne!(new_id, bob);
    assert!(out.contains(&format!("v=tox1;id={new_id}")), "{out}");
    let rotated = wait_for(Duration::from_secs(20), || {
        b.bridge_log().contains("nospam rotated")
    });
    assert!(rotated.await, "{}", b.bridge_log());
    let (old, new) = tokio::join!(
        attacker(root.path(), "with-old-id", &boot),
        attacker(root.path(), "with-new-id", &boot)
    );
    let to_old = letter("o@o.test", "bob@b.test", &body("OLD-ID"));
    let to_new = letter("n@n.test", "bob@b.test", &body("NEW-ID"));
    let old_env = seal(&to_old, &old.secret, &bob.public_key()).unwrap();
    let (old_courier, old_id) = (old.courier.clone(), to_old.message_id);
    let old_try = tokio::spawn(async move {
        let deliver = old_courier.deliver(bob, old_id, old_env.into());
        tokio::time::timeout(CONNECT, deliver).await
    });
    send(&b, &new, new_id, &to_new)
        .await
        .expect("the new Tox ID admits a friend");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !old_try.is_finished(),
        "a friend request to the old Tox ID was taken"
    );
    assert!(!in_bobs_maildir_now(&b, "OLD-ID"));
}

fn in_bobs_maildir_now(b: &Site, marker: &str) -> bool {
    b.postfix
        .maildir_messages("bob")
        .iter()
        .any(|m| contains(m, marker))
}
