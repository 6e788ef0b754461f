//! A site moves to a new host: bob's identity is exported from site B, B goes away, mail for bob
//! waits in A's queue, and a fresh site B2 (its own database, key file and state_dir) imports the
//! bundle and starts with bob's Tox ID: the waiting mail arrives there, exactly once. Before that,
//! B2 refuses the bundle with a wrong passphrase and with a changed byte, changing nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;
use toxmail_tests::wait_for;

use crate::postfix_flow::spec;
use crate::postfix_recovery::{poll, query_strings, send};
use crate::relay_sites::own_ports;

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn arrived_with(site: &Site, subject: &str) -> usize {
    let needle = format!("Subject: {subject}");
    site.postfix
        .maildir_messages("bob")
        .iter()
        .filter(|m| m.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_moved_to_a_fresh_host_receives_the_mail_queued_for_it_exactly_once() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    b_spec.tox_ports = own_ports();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    b.start_bridge();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.tox_ports = own_ports();
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    a.admin(&["contact", "add", "bob@b.test", &bob.to_string()])
        .unwrap();
    a.start_bridge();

    // A first mail makes alice and bob friends; the friendship travels in bob's savedata.
    send(&a, "bob@b.test", "before the move").await;
    let first = wait_for(Duration::from_secs(120), || {
        arrived_with(&b, "before the move") == 1
    });
    assert!(
        first.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );

    // B stops for good; bob's identity leaves in a bundle.
    b.stop_bridge();
    let pass = secret_file(root.path(), "bundle-pass", "a passphrase for moving bob");
    let bundle = root.path().join("bob.bundle");
    let (bundle_s, pass_s) = (bundle.to_str().unwrap(), pass.to_str().unwrap());
    let export = ["identity", "export", "bob@b.test", "--out", bundle_s];
    b.admin(&[&export[..], &["--passphrase-file", pass_s]].concat())
        .expect("export");
    drop(b);

    // Meanwhile mail for bob waits in A's queue.
    send(&a, "bob@b.test", "during the move").await;
    let states = || query_strings(&a, "SELECT state FROM outbound ORDER BY id");
    let waiting = poll(Duration::from_secs(30), || async {
        states().await == ["delivered", "queued"]
    });
    assert!(waiting.await, "{:?}\n{}", states().await, a.bridge_log());

    // The new host: its own database, key file and state_dir, no identity of its own yet.
    let mut b2_spec = spec("site-b2", "b.test", &["bob"]);
    b2_spec.identities = Vec::new();
    b2_spec.tox_ports = own_ports();
    let mut b2 = Site::prepare(root.path(), b2_spec, &boot.node);
    secret_file(
        &b2.dir,
        "bridge.key",
        "the new host's own key file, 32+ bytes",
    );
    let import = |pass: &Path, bundle: &Path| {
        let (bundle_s, pass_s) = (bundle.to_str().unwrap(), pass.to_str().unwrap());
        b2.admin(&["identity", "import", bundle_s, "--passphrase-file", pass_s])
    };

    let wrong = secret_file(root.path(), "wrong-pass", "not the passphrase at all");
    let refused = import(&wrong, &bundle).expect_err("wrong passphrase");
    assert!(refused.contains("wrong passphrase"), "{refused}");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let tampered = root.path().join("tampered.bundle");
    std::fs::write(&tampered, bytes).unwrap();
    let refused = import(&pass, &tampered).expect_err("changed byte");
    assert!(refused.contains("changed or truncated"), "{refused}");
    let none = b2.admin(&["identity", "list"]).unwrap();
    assert!(none.trim().is_empty(), "nothing imported: {none}");

    let imported = import(&pass, &bundle).expect("import");
    assert!(imported.contains(&bob.to_string()), "{imported}");
    let listed = b2.admin(&["identity", "list"]).unwrap();
    assert!(
        listed.contains(&format!("bob@b.test\t{bob}")),
        "same Tox ID: {listed}"
    );
    b2.admin(&["check-config"])
        .expect("check-config on the new host");

    b2.start_bridge();
    let delivered = poll(Duration::from_secs(180), || async {
        states().await == ["delivered", "delivered"] && arrived_with(&b2, "during the move") == 1
    });
    assert!(
        delivered.await,
        "{:?}\nA:\n{}\nB2:\n{}",
        states().await,
        a.bridge_log(),
        b2.bridge_log()
    );
    // Exactly once: one received row, injected once, one message in bob's new mailbox.
    let injected = poll(Duration::from_secs(30), || async {
        query_strings(&b2, "SELECT state FROM inbound").await == ["injected"]
    });
    assert!(injected.await, "{}", b2.bridge_log());
    assert_eq!(b2.postfix.maildir_messages("bob").len(), 1);
    a.stop_bridge();
    b2.stop_bridge();
}
