//! The bridge under a service manager (systemd `Type=notify`, deploy/systemd): started while its
//! PostgreSQL is down it says that it waits, is not ready and leaves its ports closed; once the
//! database is back it sends READY=1 with its socketmap answering, pings the watchdog, and says
//! STOPPING=1 on SIGTERM. The test plays systemd's part with a datagram socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::{Site, bridge_binary, spawn_daemon_with};

use crate::postfix_flow::spec;

/// Reads notifications until one has a line starting with `prefix`; returns them all.
fn until(socket: &UnixDatagram, prefix: &str, site: &Site) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {prefix} in {seen:?}\n{}",
            site.bridge_log()
        );
        socket.set_read_timeout(Some(left)).unwrap();
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = message.lines().any(|l| l.starts_with(prefix));
        seen.push(message);
        if found {
            return seen;
        }
    }
}

fn has_line(messages: &[String], line: &str) -> bool {
    messages.iter().any(|m| m.lines().any(|l| l == line))
}

/// One socketmap question; the netstring that answers it.
fn socketmap_answer(site: &Site) -> String {
    let mut conn = std::net::TcpStream::connect(site.socketmap).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let question = "transport someone@elsewhere.test";
    conn.write_all(format!("{}:{question},", question.len()).as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b",") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "socketmap closed: {answer:?}"
        );
        answer.push(byte[0]);
    }
    String::from_utf8(answer).unwrap()
}

#[test]
fn bridge_is_ready_only_once_the_database_answers_and_tells_when_it_stops() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let a = Site::prepare(
        root.path(),
        spec("site-a", "a.test", &["alice"]),
        &boot.node,
    );
    let notify = a.dir.join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    a.pg.stop();

    let env = [
        ("NOTIFY_SOCKET", notify.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let log = a.dir.join("bridge.log");
    let mut bridge = spawn_daemon_with(&bridge_binary(), &a.config, &log, &env);

    let mut before = until(&socket, "STATUS=waiting for the database: ", &a);
    // The watchdog is pinged while it waits (every half of WATCHDOG_USEC).
    before.extend(until(&socket, "WATCHDOG=1", &a));
    assert!(!has_line(&before, "READY=1"), "{before:?}");
    assert!(a.bridge_log().contains("waiting for the database"));
    // Its listeners are bound only once it can serve: meanwhile Postfix's lookups are refused
    // at once (a temporary failure) rather than left waiting.
    let refused = std::net::TcpStream::connect(a.socketmap).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    a.pg.restart();
    let ready = until(&socket, "READY=1", &a);
    // alice@a.test and the site's default identity.
    assert!(has_line(&ready, "STATUS=serving 2 identities"), "{ready:?}");
    let answer = socketmap_answer(&a);
    assert!(answer.contains("NOTFOUND"), "{answer}");

    let pid = bridge.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    until(&socket, "STOPPING=1", &a);
    assert!(bridge.wait().unwrap().success(), "{}", a.bridge_log());
}
