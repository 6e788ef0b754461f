//! Sealed sender and recipient as attacker input: no smuggling, no relaying, no other mailbox.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_addresses_in_a_sealed_envelope_are_refused_and_nothing_is_relayed() {
    let (root, boot) = scene();
    let b = site_b(root.path(), &boot);
    let bob = b.identities["bob@b.test"];
    let m = attacker(root.path(), "mallory", &boot).await;

    control(&b, &m, bob, "CONTROL-1").await;
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
    control(&b, &m, bob, "CONTROL-2").await;
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
