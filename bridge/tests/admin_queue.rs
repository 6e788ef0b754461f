//! The operator's queue and identity commands against a real private PostgreSQL: the store
//! decisions (`retry_now`, `delete_copy`, `bounce_copy`, `remove_identity`) change exactly the
//! copy named and nothing on refusal; the built `toxmail-bridge` prints what it did and exits
//! non-zero with a clear message on unknown ids; a bounce reaches the sender as exactly one
//! failed DSN through a real private Postfix.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use toxmail_bridge::config::NextHop;
use toxmail_bridge::delivery::notify::{Notifier, operator_bounce_reason};
use toxmail_bridge::events::DsnStatus;
use toxmail_bridge::store::{NewOutbound, OperatorError, Store};
use toxmail_protocol::{MessageId, PublicKey, ToxId};
use toxmail_tests::postfix::{PostfixSite, SiteConfig};
use toxmail_tests::postgres::PgServer;

async fn fresh() -> (PgServer, Store) {
    let server = PgServer::started().await;
    let store = Store::connect(&server.url(), 4).unwrap();
    store.migrate().await.unwrap();
    (server, store)
}

fn tox_id(n: u8) -> ToxId {
    ToxId::new(PublicKey([n; 32]), 0x0102_0304)
}

fn copy(recipient: &str, sender: &str) -> NewOutbound {
    NewOutbound {
        message_id: MessageId::random(),
        idem_key: None,
        recipient: recipient.to_owned(),
        envelope_sender: sender.to_owned(),
        sender_identity: "alice@a.test".to_owned(),
        peer: tox_id(7),
        envelope: b"SEALED-ENVELOPE-BYTES".to_vec(),
        expires: SystemTime::now() + Duration::from_secs(5 * 86_400),
        relays: vec![],
    }
}

/// Queues one copy per recipient; their ids in order.
async fn queue(store: &Store, recipients: &[&str]) -> Vec<i64> {
    let copies: Vec<_> = recipients.iter().map(|r| copy(r, "alice@a.test")).collect();
    let queued = store.enqueue(&copies).await.unwrap();
    queued.iter().map(|q| q.id).collect()
}

fn ids(entries: &[toxmail_bridge::store::QueueEntry]) -> Vec<i64> {
    entries.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn retry_makes_only_the_named_copy_due_and_refuses_unknown_or_finished_ones() {
    let (_server, store) = fresh().await;
    let [a, b, c] = queue(&store, &["a@b.test", "b@b.test", "c@b.test"]).await[..] else {
        panic!("three copies")
    };
    // Claimed and leased for an hour: not due.
    let lease = Duration::from_secs(3600);
    assert_eq!(store.claim_due(10, lease).await.unwrap().len(), 3);
    assert!(store.claim_due(10, lease).await.unwrap().is_empty());

    assert_eq!(store.retry_now(Some(b)).await.unwrap(), [b]);
    let due = store.claim_due(10, lease).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [b]);

    let unknown = store.retry_now(Some(999)).await;
    assert!(
        matches!(unknown, Err(OperatorError::Unknown(999))),
        "{unknown:?}"
    );
    store.mark_delivered(c).await.unwrap();
    let delivered = store.retry_now(Some(c)).await;
    let Err(OperatorError::Refused { why, .. }) = delivered else {
        panic!("{delivered:?}")
    };
    assert!(why.contains("delivered already"), "{why}");
    assert!(
        store.claim_due(10, lease).await.unwrap().is_empty(),
        "nothing else became due"
    );

    assert_eq!(
        store.retry_now(None).await.unwrap(),
        [a, b],
        "--all: every queued copy"
    );
    let entry = store.queue_entry(a).await.unwrap().unwrap();
    assert!(entry.next_attempt <= SystemTime::now());
    assert_eq!(entry.attempts, 1, "attempts are kept");
}

#[tokio::test]
async fn delete_removes_exactly_that_copy_and_refuses_delivered_unknown_and_relayed_ones() {
    let (_server, store) = fresh().await;
    let [a, b, c, d] = queue(&store, &["a@b.test", "b@b.test", "c@b.test", "d@b.test"]).await[..]
    else {
        panic!("four copies")
    };
    let gone = store.delete_copy(b, false).await.unwrap();
    assert_eq!((gone.id, gone.recipient.as_str()), (b, "b@b.test"));
    assert_eq!(ids(&store.queue_list().await.unwrap()), [a, c, d]);
    assert!(store.queue_entry(b).await.unwrap().is_none());
    // The running bridge's delivery of b no longer finds a queued row, and recording its
    // outcome says the row is gone (the dispatcher then stops, it does not retry forever).
    assert_eq!(store.still_queued(&[a, b, c]).await.unwrap(), [a, c]);
    assert!(matches!(
        store.mark_delivered(b).await,
        Err(toxmail_bridge::store::StoreError::NotFound(_))
    ));

    let again = store.delete_copy(b, false).await;
    assert!(matches!(again, Err(OperatorError::Unknown(_))), "{again:?}");
    store.mark_delivered(c).await.unwrap();
    let delivered = store.delete_copy(c, true).await;
    assert!(
        matches!(delivered, Err(OperatorError::Refused { .. })),
        "{delivered:?}"
    );

    store.mark_relayed(d, &tox_id(9).to_string()).await.unwrap();
    let relayed = store.delete_copy(d, false).await;
    let Err(OperatorError::Refused { why, .. }) = relayed else {
        panic!("{relayed:?}")
    };
    assert!(why.contains("--force"), "{why}");
    assert!(
        store.queue_entry(d).await.unwrap().is_some(),
        "refusal changed nothing"
    );
    store.delete_copy(d, true).await.unwrap();
    assert_eq!(ids(&store.queue_list().await.unwrap()), [a]);
}

#[tokio::test]
async fn identity_remove_drops_only_its_row_and_reports_what_depends_on_it() {
    let (_server, store) = fresh().await;
    store
        .add_identity("alice@a.test", &tox_id(1))
        .await
        .unwrap();
    store
        .add_identity("carol@a.test", &tox_id(2))
        .await
        .unwrap();
    queue(&store, &["b@b.test"]).await; // sealed from alice
    assert_eq!(store.identity_in_use("alice@a.test").await.unwrap(), (1, 0));
    assert_eq!(store.identity_in_use("carol@a.test").await.unwrap(), (0, 0));
    assert!(store.remove_identity("carol@a.test").await.unwrap());
    assert!(!store.remove_identity("carol@a.test").await.unwrap());
    let left: Vec<_> = store.identities().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].address, "alice@a.test");
}

/// A temp dir with a key file, a state dir and a config pointing at `server`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(server: &PgServer) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bridge.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::create_dir_all(dir.path().join("state/identities")).unwrap();
        let config = format!(
            "[bridge]\nhostname = \"mx.a.test\"\nstate_dir = \"{}\"\nkey_file = \"{}\"\n\n\
             [database]\nurl = \"{}\"\n\n[metrics]\nlisten = \"\"\n\n\
             [inbound]\nnext_hop = \"smtp:127.0.0.1:9\"\nnotice_hop = \"smtp:127.0.0.1:9\"\n\
             local_domains = [\"a.test\"]\n",
            dir.path().join("state").display(),
            key.display(),
            server.url()
        );
        std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
        Site { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    async fn run(&self, args: &[&str]) -> Output {
        let config = self.dir.path().join("bridge.toml");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_toxmail-bridge"));
        cmd.arg("--config").arg(config).args(args);
        cmd.output().await.expect("toxmail-bridge runs")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `YYYY-MM-DD HH:MM:SSZ`, somewhere in `line`.
fn has_utc_time(line: &str) -> bool {
    line.as_bytes().windows(20).any(|w| {
        let s = std::str::from_utf8(w).unwrap_or("");
        s.len() == 20
            && s[..4].chars().all(|c| c.is_ascii_digit())
            && &s[4..5] == "-"
            && &s[10..11] == " "
            && s.ends_with('Z')
    })
}

#[tokio::test]
async fn cli_queue_commands_say_what_they_did_and_fail_clearly_on_unknown_ids() {
    let (server, store) = fresh().await;
    let site = Site::new(&server);
    let [a, b, c] = queue(&store, &["a@b.test", "b@b.test", "c@b.test"]).await[..] else {
        panic!("three copies")
    };

    let list = site.run(&["queue", "list"]).await;
    assert!(list.status.success(), "{}", text(&list.stderr));
    let out = text(&list.stdout);
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(&format!("{a}\t")))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    let fields: Vec<&str> = rows[0].split('\t').collect();
    assert_eq!(fields.len(), 9, "{out}");
    assert!(
        has_utc_time(fields[3]) && fields[3].ends_with("ago)"),
        "{out}"
    );
    assert!(fields[5].contains("(in 4d"), "{out}");
    assert_eq!(
        fields[8],
        "waiting for the peer to come online (no attempt yet)"
    );
    assert!(out.contains("3 message copies"), "{out}");

    let show = site.run(&["queue", "show", &b.to_string()]).await;
    assert!(show.status.success(), "{}", text(&show.stderr));
    let out = text(&show.stdout);
    assert!(out.contains("recipient\tb@b.test\n"), "{out}");
    assert!(out.contains(&format!("peer\t{}\n", tox_id(7))), "{out}");
    assert!(out.contains("envelope_bytes\t21\n"), "{out}");
    assert!(
        !out.contains("SEALED-ENVELOPE"),
        "never the envelope: {out}"
    );

    for args in [
        &["queue", "show", "999"][..],
        &["queue", "retry", "999"],
        &["queue", "delete", "999"],
        &["queue", "bounce", "999"],
    ] {
        let failed = site.run(args).await;
        assert!(!failed.status.success(), "{args:?}");
        let err = text(&failed.stderr);
        assert!(
            err.contains("no copy with id 999 in the queue"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        ids(&store.queue_list().await.unwrap()),
        [a, b, c],
        "nothing changed"
    );

    // Pages: two copies, then the command for the rest; then the rest.
    let first = site.run(&["queue", "list", "--limit", "2"]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    let listed: Vec<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
    assert!(
        listed.contains(&a.to_string().as_str()) && !listed.contains(&c.to_string().as_str()),
        "{out}"
    );
    let next = format!("2 message copies shown; 1 more: toxmail-bridge queue list --after {b}");
    assert!(out.contains(&next), "{out}");
    let rest = site
        .run(&["queue", "list", "--after", &b.to_string()])
        .await;
    let out = text(&rest.stdout);
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{c}\t"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("1 message copies after id {b}\n")),
        "{out}"
    );
    for bad in [&["--limit", "0"][..], &["--limit", "x"], &["--after=-1"]] {
        let refused = site.run(&[&["queue", "list"][..], bad].concat()).await;
        assert!(!refused.status.success(), "{bad:?}");
        assert!(
            text(&refused.stderr).contains("invalid value"),
            "{bad:?}: {}",
            text(&refused.stderr)
        );
    }

    let retry = site.run(&["queue", "retry", "--all"]).await;
    assert!(retry.status.success(), "{}", text(&retry.stderr));
    assert!(
        text(&retry.stdout).starts_with("3 copies due now"),
        "{}",
        text(&retry.stdout)
    );

    let delete = site.run(&["queue", "delete", &a.to_string()]).await;
    assert!(delete.status.success(), "{}", text(&delete.stderr));
    assert!(text(&delete.stdout).contains(&format!("deleted copy {a} ")));
    let again = site.run(&["queue", "delete", &a.to_string()]).await;
    assert!(!again.status.success());

    let bounce = site.run(&["queue", "bounce", &b.to_string()]).await;
    assert!(bounce.status.success(), "{}", text(&bounce.stderr));
    assert!(
        text(&bounce.stdout).contains("failed DSN (5.0.0)"),
        "{}",
        text(&bounce.stdout)
    );
    let twice = site.run(&["queue", "bounce", &b.to_string()]).await;
    assert!(!twice.status.success());
    assert!(
        text(&twice.stderr).contains("given up already"),
        "{}",
        text(&twice.stderr)
    );

    let failed = store.failed_copies().await.unwrap();
    assert_eq!(failed.iter().map(|f| f.id).collect::<Vec<_>>(), [b]);
    assert_eq!(ids(&store.queue_list().await.unwrap()), [b, c]);
}

#[tokio::test]
async fn cli_identity_remove_keeps_the_savedata_and_refuses_while_copies_depend_on_it() {
    let (server, store) = fresh().await;
    let site = Site::new(&server);
    store
        .add_identity("alice@a.test", &tox_id(1))
        .await
        .unwrap();
    let savedata = toxmail_bridge::identity::savedata_path(&site.state(), "alice@a.test");
    std::fs::write(&savedata, b"secret key material").unwrap();
    let [queued] = queue(&store, &["b@b.test"]).await[..] else {
        panic!("one copy")
    };

    let refused = site.run(&["identity", "remove", "alice@a.test"]).await;
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains("1 queued outbound") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        store.identities().await.unwrap().len(),
        1,
        "nothing changed"
    );
    assert!(savedata.is_file());

    for (args, why) in [
        (&["identity", "remove", "default"][..], "cannot be removed"),
        (
            &["identity", "remove", "nobody@a.test"],
            "no identity nobody@a.test",
        ),
    ] {
        let out = site.run(args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    }

    let forced = site
        .run(&["identity", "remove", "--force", "alice@a.test"])
        .await;
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let out = text(&forced.stdout);
    assert!(out.contains("removed identity alice@a.test"), "{out}");
    assert!(store.identities().await.unwrap().is_empty());
    assert!(!savedata.exists());
    let kept = kept_savedata(savedata.parent().unwrap());
    assert_eq!(kept.len(), 1, "{out}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"secret key material");
    assert!(out.contains(&kept[0].display().to_string()), "{out}");
    assert!(
        store.queue_entry(queued).await.unwrap().is_some(),
        "copies are left alone"
    );
}

fn kept_savedata(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".tox.removed-"))
        .collect()
}

#[tokio::test]
async fn a_bounced_copy_reaches_its_sender_as_exactly_one_failed_dsn() {
    toxmail_tests::init_logging();
    let (_server, store) = fresh().await;
    let cfg = SiteConfig::new("bounce-a", "a.test", &["alice"]);
    let site = tokio::task::spawn_blocking(|| PostfixSite::start(cfg)).await;
    let site = site.unwrap().expect("postfix starts");
    let queued = store.enqueue(&[copy("bob@b.test", "alice@a.test")]).await;
    let id = queued.unwrap()[0].id;
    let reason = operator_bounce_reason(3, Some("timed out"));
    store
        .bounce_copy(id, &reason, DsnStatus(5, 0, 0), false)
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let hop = NextHop {
        lmtp: false,
        addr: site.smtp_addr(),
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let day = Duration::from_secs(86_400);
    let notifier = Notifier::new(store.clone(), hop, "mx.a.test".into(), day, wake);
    let running = tokio::spawn(notifier.clone().run(shutdown.clone()));
    let started = Instant::now();
    let mut removed = false;
    while !removed && started.elapsed() < Duration::from_secs(30) {
        removed = store.queue_entry(id).await.unwrap().is_none();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(removed, "the notifier sent the DSN and removed the copy");
    // A second pass finds nothing owed: the row is gone.
    notifier.wake.notify_one();
    shutdown.cancel();
    running.await.unwrap();
    assert!(store.failed_copies().await.unwrap().is_empty());

    let settled = || site.queue_ids().is_empty() && !site.maildir_messages("alice").is_empty();
    let arrived = toxmail_tests::wait_for(Duration::from_secs(20), settled).await;
    assert!(arrived, "{}", site.maillog());
    let dsns = site.maildir_messages("alice");
    assert_eq!(dsns.len(), 1, "exactly one DSN");
    // Unfolded: long header and field lines are folded.
    let dsn = text(&dsns[0]).replace("\n ", " ").replace("\n\t", " ");
    assert!(dsn.contains("Status: 5.0.0"), "{dsn}");
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(
        dsn.contains("given up by the mail system's operator"),
        "{dsn}"
    );
    assert!(dsn.contains("Final-Recipient: rfc822; bob@b.test"), "{dsn}");
}

#[tokio::test]
async fn presence_moves_only_on_a_change_and_queue_list_says_since_when_the_peer_is_offline() {
    let (server, store) = fresh().await;
    let site = Site::new(&server);
    let peer = tox_id(7).public_key();
    let key = ("alice@a.test".to_string(), peer);
    store
        .set_presence("alice@a.test", &peer, false)
        .await
        .unwrap();
    let first = store.presence().await.unwrap()[&key];
    assert!(!first.0);
    store
        .set_presence("alice@a.test", &peer, false)
        .await
        .unwrap();
    assert_eq!(
        store.presence().await.unwrap()[&key],
        first,
        "no change, same since"
    );
    store
        .set_presence("alice@a.test", &peer, true)
        .await
        .unwrap();
    let online = store.presence().await.unwrap()[&key];
    assert!(online.0 && online.1 >= first.1);
    store.reset_presence("alice@a.test").await.unwrap();
    assert!(
        !store.presence().await.unwrap()[&key].0,
        "offline once the node stops"
    );

    let [id] = queue(&store, &["b@b.test"]).await[..] else {
        panic!("one copy")
    };
    let list = site.run(&["queue", "list"]).await;
    assert!(list.status.success(), "{}", text(&list.stderr));
    let out = text(&list.stdout);
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{id}\t")))
        .unwrap();
    assert!(
        row.ends_with("ago)") && row.contains("\tpeer offline since 20"),
        "{out}"
    );
    let show = site.run(&["queue", "show", &id.to_string()]).await;
    assert!(
        text(&show.stdout).contains("peer_presence\toffline since 20"),
        "{}",
        text(&show.stdout)
    );

    store
        .add_identity("alice@a.test", &tox_id(1))
        .await
        .unwrap();
    assert!(store.remove_identity("alice@a.test").await.unwrap());
    assert!(
        store.presence().await.unwrap().is_empty(),
        "its peers' presence goes with it"
    );
}

#[tokio::test]
async fn delete_and_bounce_end_a_queued_copy_with_exactly_one_failed_event() {
    use toxmail_bridge::events::{EventsSection, Outbox};
    let (_server, store) = fresh().await;
    let store = store.with_events(Outbox::new(&EventsSection::default(), None));
    let [a, b, c] = queue(&store, &["a@b.test", "b@b.test", "c@b.test"]).await[..] else {
        panic!("three copies")
    };
    store.delete_copy(a, false).await.unwrap();
    let reason = operator_bounce_reason(0, None);
    store
        .bounce_copy(b, &reason, DsnStatus(5, 0, 0), false)
        .await
        .unwrap();
    // A bounced copy deleted before its DSN went out already had its final event.
    store.delete_copy(b, false).await.unwrap();
    store.retry_now(Some(c)).await.unwrap();
    let events = store.unpublished_events(100).await.unwrap();
    let seen: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|e| {
            let status = e.data["status"].as_str().map(str::to_owned);
            (e.type_name.clone(), e.subject.clone(), status)
        })
        .filter(|(t, _, _)| !t.ends_with(".accepted"))
        .collect();
    let failed = |id: i64| {
        (
            "org.toxmail.message.failed".to_string(),
            toxmail_bridge::events::outbound_subject(id),
            Some("5.0.0".to_string()),
        )
    };
    assert_eq!(seen, [failed(a), failed(b)], "retry writes none");
}
