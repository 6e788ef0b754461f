//! Issue 12 part 5: several bridges on one database. Site A runs two bridges on one config and
//! database: the first holds every identity's lease, the second waits as a standby. Killed with
//! SIGKILL under mail in both directions, the first's identities move to the second within 30 s
//! and every mail arrives once. A second bridge started while the leases are held injects
//! nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use toxmail_tests::site::Site;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_recovery::{poll, postfix_ctl, query_strings};

/// `from` writes to `to` through `site`'s Postfix, as a mail client would: a temporary refusal
/// (no bridge answers the transport lookup during a takeover) is tried again.
async fn submit(site: &Site, from: &str, to: &str, subject: &str) {
    let m = smtp::message(from, &[to], subject, "body\r\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match smtp::send(site.postfix.smtp_addr(), from, &[to], &m).await {
            Ok(out) if out.accepted() => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{subject} never accepted: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// How many times each subject starting with `prefix` is in `local`'s Maildir.
fn subjects(site: &Site, local: &str, prefix: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for m in site.postfix.maildir_messages(local) {
        let text = String::from_utf8_lossy(&m).into_owned();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .filter(|s| s.starts_with(prefix));
        if let Some(subject) = subject {
            *seen.entry(subject.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// SIGKILLs the bridge `pid` of `site` at a moment it is not injecting a received mail into
/// Postfix. Between Postfix's 250 and the bridge's record of it, a killed bridge leaves a mail
/// that the next owner injects again: the one window of any MTA that hands mail on (RFC 1047),
/// not one of the takeover, which is what this test checks. So the bridge is frozen (SIGSTOP),
/// and killed only if no received mail is claimed for injection; else it runs on a little.
/// Its Tox transfers in both directions, its intake and its queue are left wherever they are.
async fn kill_between_injections(site: &Site, pid: u32) {
    // A claimed inbound row is leased for 300 s; a deferred one is due within seconds.
    let claimed = "SELECT count(*)::text FROM inbound \
                   WHERE state = 'pending' AND next_attempt > now() + interval '120 seconds'";
    for _ in 0..200 {
        signal(pid, "-STOP");
        if query_strings(site, claimed).await == ["0"] {
            signal(pid, "-KILL");
            return;
        }
        signal(pid, "-CONT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the bridge was injecting every time it was frozen");
}

/// Sites A (alice, two bridges) and B (bob), each the other's contact, on a private DHT.
fn two_sites(root: &std::path::Path) -> (toxmail_tests::bootstrapd::BootstrapDaemon, Site, Site) {
    let (boot, a, mut b) = crate::postfix_flow::alice_with_bob_offline(root);
    let alice_id = a.identities["alice@a.test"].to_string();
    b.admin(&["contact", "add", "alice@a.test", &alice_id])
        .unwrap();
    b.start_bridge();
    (boot, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bridge_hands_its_identities_to_the_standby_and_no_mail_is_lost_or_doubled() {
    toxmail_tests::init_logging();
    const MIN_EACH: usize = 8;
    const AFTER_TAKEOVER: usize = 4;
    let root = tempfile::tempdir().unwrap();
    let (_boot, mut a, b) = two_sites(root.path());
    a.start_second_bridge();

    // A steady load both ways, one mail every 300 ms each way, from before the kill until a few
    // after the standby took over.
    let (a_ref, b_ref) = (&a, &b);
    let taken_over = AtomicBool::new(false);
    let load = |site: &'static str| {
        let taken_over = &taken_over;
        async move {
            let (from_site, from, to, prefix) = match site {
                "a" => (a_ref, "alice@a.test", "bob@b.test", "a2b"),
                _ => (b_ref, "bob@b.test", "alice@a.test", "b2a"),
            };
            let (mut sent, mut after) = (0, 0);
            while sent < MIN_EACH || after < AFTER_TAKEOVER {
                submit(from_site, from, to, &format!("{prefix} {sent}")).await;
                sent += 1;
                if taken_over.load(Ordering::SeqCst) {
                    after += 1;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            sent
        }
    };
    let pid = a.bridge_pid().expect("first bridge running");
    let kill = async {
        let started = poll(Duration::from_secs(60), || async {
            subjects(a_ref, "alice", "b2a ").len() + subjects(b_ref, "bob", "a2b ").len() >= 2
        });
        assert!(started.await, "no mail got through before the kill");
        kill_between_injections(a_ref, pid).await;
        let at = Instant::now();
        let took_over = wait_for(Duration::from_secs(30), || {
            a_ref.second_bridge_log().contains("toxmail-bridge running")
        });
        assert!(
            took_over.await,
            "the standby did not take over within 30 s\n{}",
            a_ref.second_bridge_log()
        );
        taken_over.store(true, Ordering::SeqCst);
        at.elapsed()
    };
    let (a2b, b2a, takeover) = tokio::join!(load("a"), load("b"), kill);
    a.kill_bridge(); // reaps the killed process
    println!(
        "standby serving {:.1} s after the kill",
        takeover.as_secs_f64()
    );
    assert!(
        a.second_bridge_log()
            .contains("took the lease of every identity")
    );

    println!("sent {a2b} from A to B and {b2a} from B to A");
    let all_there = wait_for(Duration::from_secs(180), || {
        subjects(&a, "alice", "b2a ").len() == b2a && subjects(&b, "bob", "a2b ").len() == a2b
    });
    assert!(
        all_there.await,
        "alice has {:?}\nbob has {:?}\nA1:\n{}\nA2:\n{}\nB:\n{}",
        subjects(&a, "alice", "b2a "),
        subjects(&b, "bob", "a2b "),
        a.bridge_log(),
        a.second_bridge_log(),
        b.bridge_log()
    );
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (site, local, prefix, sent) in [(&a, "alice", "b2a ", b2a), (&b, "bob", "a2b ", a2b)] {
        let seen = subjects(site, local, prefix);
        assert_eq!(seen.len(), sent, "{local}: {seen:?}");
        assert!(
            seen.values().all(|&n| n == 1),
            "{local} got a copy twice: {seen:?}"
        );
    }
    let states = query_strings(&a, "SELECT state FROM outbound").await;
    assert!(states.iter().all(|s| s == "delivered"), "{states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bridge_started_while_the_leases_are_held_touches_nothing() {
    toxmail_tests::init_logging();
    const EACH: usize = 4;
    let root = tempfile::tempdir().unwrap();
    let (_boot, mut a, b) = two_sites(root.path());
    // Received mail waits for injection while A's Postfix is down: the rows a second bridge's
    // start-up used to make due again, injecting them beside the first.
    postfix_ctl(&a, "stop");
    for i in 0..EACH {
        submit(&b, "bob@b.test", "alice@a.test", &format!("b2a {i}")).await;
    }
    let stored = poll(Duration::from_secs(60), || async {
        query_strings(&a, "SELECT state FROM inbound").await.len() == EACH
    });
    assert!(stored.await, "A:\n{}", a.bridge_log());
    a.start_second_bridge();
    postfix_ctl(&a, "start");
    for i in 0..EACH {
        submit(&a, "alice@a.test", "bob@b.test", &format!("a2b {i}")).await;
    }
    let all_there = wait_for(Duration::from_secs(120), || {
        subjects(&a, "alice", "b2a ").len() == EACH && subjects(&b, "bob", "a2b ").len() == EACH
    });
    assert!(
        all_there.await,
        "A1:\n{}\nA2:\n{}\nB:\n{}",
        a.bridge_log(),
        a.second_bridge_log(),
        b.bridge_log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (site, local, prefix) in [(&a, "alice", "b2a "), (&b, "bob", "a2b ")] {
        let seen = subjects(site, local, prefix);
        assert!(
            seen.len() == EACH && seen.values().all(|&n| n == 1),
            "{local}: {seen:?}"
        );
    }
    let second = a.second_bridge_log();
    assert!(second.contains("standby"), "{second}");
    for acting in ["toxmail-bridge running", "injected", "identity online"] {
        assert!(
            !second.contains(acting),
            "the second bridge acted ({acting}):\n{second}"
        );
    }
    // Stopped cleanly, the first gives its leases back and the second takes over at once.
    a.stop_bridge();
    let took_over = wait_for(Duration::from_secs(15), || {
        a.second_bridge_log().contains("toxmail-bridge running")
    });
    assert!(took_over.await, "{}", a.second_bridge_log());
}
