//! Forged trace and authentication headers, a stranger claiming a local sender.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_trace_headers_are_stripped_and_a_local_sender_from_a_stranger_is_refused() {
    let (root, boot) = scene();
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
