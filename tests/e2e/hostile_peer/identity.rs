//! Identities are never minted by accident; key files others can read are refused; after the
//! ack, mail is delivered or bounced.

use super::*;

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
    let (root, boot) = scene();
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
    let (root, boot) = scene();
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
