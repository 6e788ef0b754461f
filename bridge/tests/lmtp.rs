//! The LMTP server over real sockets on loopback, with a recording `Intake` of our own; one test
//! drives it with Postfix's `smtp-source` when that is installed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use toxmail_bridge::postfix::lmtp::{Intake, Listener, LmtpConfig, Transaction, serve};
use toxmail_bridge::reply::{Failure, Reply};

const WAIT: Duration = Duration::from_secs(10);

/// Refuses recipients starting with "unknown"; answers 451 for "defer…" and too few replies for
/// "miscount…"; records every transaction.
#[derive(Debug, Default)]
struct Recorder {
    delivered: Mutex<Vec<Transaction>>,
}

impl Intake for Recorder {
    async fn check_recipient(&self, _mail_from: &str, rcpt: &str) -> Result<(), Failure> {
        if rcpt.starts_with("unknown") {
            return Err(Failure::RecipientUnknown);
        }
        Ok(())
    }

    async fn deliver(&self, tx: Transaction) -> Vec<Reply> {
        let reply = |r: &String| match r.starts_with("defer") {
            true => Failure::StorageUnavailable.reply(),
            false => Reply::queued("queued as 1"),
        };
        let mut replies: Vec<Reply> = tx.recipients.iter().map(reply).collect();
        if tx.recipients.iter().any(|r| r.starts_with("miscount")) {
            replies.pop();
        }
        self.delivered.lock().unwrap().push(tx);
        replies
    }
}

impl Recorder {
    fn take(&self) -> Vec<Transaction> {
        std::mem::take(&mut self.delivered.lock().unwrap())
    }
}

struct Server {
    addr: Option<SocketAddr>,
    intake: Arc<Recorder>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    fn start(listener: Listener, config: LmtpConfig) -> Self {
        let intake = Arc::new(Recorder::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, config, intake.clone(), shutdown.clone()));
        Server {
            addr: None,
            intake,
            shutdown,
            task,
        }
    }

    async fn tcp(config: LmtpConfig) -> (Self, Client<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            addr: Some(addr),
            ..Server::start(Listener::Tcp(listener), config)
        };
        let mut client = Client(BufReader::new(TcpStream::connect(addr).await.unwrap()));
        assert!(client.reply().await.starts_with("220 mx.test LMTP"));
        (server, client)
    }
}

fn config() -> LmtpConfig {
    LmtpConfig {
        hostname: "mx.test".into(),
        max_message_size: 1000,
        ..LmtpConfig::default()
    }
}

struct Client<S>(BufReader<S>);

/// "250 2.1.5 ok" → "250 2.1.5", "354 go on" → "354", "250-mx.test…" → "250".
fn summary(reply: &str) -> String {
    let status = reply.get(4..).and_then(|rest| rest.split(' ').next());
    match status.filter(|s| s.len() >= 5 && s.as_bytes()[1] == b'.') {
        Some(status) => format!("{} {status}", &reply[..3]),
        None => reply[..3].to_string(),
    }
}

/// The four commands that open a transaction to b@y.test.
const OPEN: &[&str] = &[
    "LHLO c",
    "MAIL FROM:<a@x.test>",
    "RCPT TO:<b@y.test>",
    "DATA",
];

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.0.get_mut().write_all(bytes.as_ref()).await.unwrap();
    }

    /// One (possibly multi-line) reply, lines joined with '\n', CRLF removed.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = timeout(WAIT, self.0.read_line(&mut line)).await;
            let n = read.expect("reply in time").unwrap();
            assert!(n > 0, "closed after {lines:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// Sends `bytes` in one write, reads `n` replies, and sums them up as "code[ status]" joined
    /// by commas, e.g. "250 2.1.5,354".
    async fn pipeline(&mut self, bytes: impl AsRef<[u8]>, n: usize) -> String {
        self.send(bytes).await;
        let mut codes = Vec::new();
        for _ in 0..n {
            codes.push(summary(&self.reply().await));
        }
        codes.join(",")
    }

    /// Sends the lines in one write and sums up one reply per line.
    async fn run(&mut self, lines: &[&str]) -> String {
        let bytes: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        self.pipeline(bytes, lines.len()).await
    }

    async fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(timeout(WAIT, self.0.read_line(&mut rest)).await, Ok(Ok(0)))
    }
}

#[tokio::test]
async fn lhlo_announces_exactly_what_is_implemented() {
    let (_server, mut c) = Server::tcp(config()).await;
    c.send("LHLO client.test\r\n").await;
    let want = "250-mx.test\n250-PIPELINING\n250-ENHANCEDSTATUSCODES\n250-DSN\n250-8BITMIME\n\
                250-SMTPUTF8\n250-SIZE 1000\n250 XFORWARD NAME ADDR PROTO HELO IDENT SOURCE";
    assert_eq!(c.reply().await, want, "no BINARYMIME or CHUNKING");
    let got = c.run(&["VRFY x", "NOOP", "FROB", "QUIT"]).await;
    assert_eq!(got, "252 2.0.0,250 2.0.0,500 5.5.2,221 2.0.0");
    assert!(c.closed().await);
}

/// RFC 3461 parameters reach the intake with each recipient; a malformed one is refused with
/// 501 5.5.4 and leaves the transaction as it was.
#[tokio::test]
async fn dsn_parameters_reach_the_intake_and_malformed_ones_change_nothing() {
    let (server, mut c) = Server::tcp(config()).await;
    for (command, want) in [
        ("LHLO client.test", "250"),
        ("MAIL FROM:<a@x.test> RET=FULL ENVID=", "501 5.5.4"),
        ("MAIL FROM:<a@x.test> RET=HDRS ENVID=QQ+2B1", "250 2.1.0"),
        ("RCPT TO:<b@y.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
        (
            "RCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;B@Y.test",
            "250 2.1.5",
        ),
        ("RCPT TO:<defer@y.test>", "250 2.1.5"),
        ("DATA", "354"),
    ] {
        assert_eq!(c.run(&[command]).await, want, "{command}");
    }
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 queued as 1");
    let _ = c.reply().await;
    let got = server.intake.take();
    assert_eq!(got[0].recipients, ["b@y.test", "defer@y.test"]);
    assert_eq!(got[0].dsn.ret, Some(toxmail_bridge::dsn_request::Ret::Hdrs));
    assert_eq!(got[0].dsn.envid.as_ref().map(|e| e.as_str()), Some("QQ+1"));
    let bob = &got[0].recipient_dsn[0];
    let notify = bob.notify.unwrap();
    assert!(notify.success() && notify.delay() && !notify.failure());
    assert_eq!(bob.orcpt.as_ref().unwrap().as_stored(), "rfc822;B@Y.test");
    assert_eq!(got[0].recipient_dsn[1], Default::default());
}

#[tokio::test]
async fn transaction_with_a_refused_recipient_answers_per_accepted_recipient() {
    let (server, mut c) = Server::tcp(config()).await;
    for (command, want) in [
        ("LHLO client.test", "250"),
        ("MAIL FROM:<a@x.test> BODY=8BITMIME", "250 2.1.0"),
        ("RCPT TO:<b@y.test>", "250 2.1.5"),
        ("RCPT TO:<unknown@y.test>", "550 5.1.1"),
        ("RCPT TO:<defer@y.test>", "250 2.1.5"),
        ("DATA", "354"),
    ] {
        assert_eq!(c.run(&[command]).await, want, "{command}");
    }
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 queued as 1");
    assert!(
        c.reply().await.starts_with("451 4.3.0 "),
        "deliver's 451 passes through"
    );
    let got = server.intake.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "a@x.test");
    assert_eq!(got[0].recipients, ["b@y.test", "defer@y.test"]);
    assert_eq!(got[0].data, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(got[0].ident, None);
}

#[tokio::test]
async fn utf8_addresses_need_smtputf8_and_its_extensions_reach_the_intake() {
    let (server, mut c) = Server::tcp(config()).await;
    for (command, want) in [
        ("LHLO client.test", "250"),
        ("MAIL FROM:<jörg@x.test>", "553 5.6.7"),
        ("MAIL FROM:<a@x.test> BODY=BINARYMIME", "555 5.5.4"),
        ("MAIL FROM:<a@x.test> BODY=8BITMIME", "250 2.1.0"),
        ("RCPT TO:<jörg@y.test>", "553 5.6.7"),
        ("RSET", "250 2.0.0"),
        (
            "MAIL FROM:<jörg@x.test> SMTPUTF8 BODY=8BITMIME",
            "250 2.1.0",
        ),
        ("RCPT TO:<δοκιμή@y.test>", "250 2.1.5"),
        ("DATA", "354"),
    ] {
        assert_eq!(c.run(&[command]).await, want, "{command}");
    }
    c.send("Subject: grüße\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 queued as 1");
    let got = server.intake.take();
    assert_eq!(got[0].mail_from, "jörg@x.test");
    assert_eq!(got[0].recipients, ["δοκιμή@y.test"]);
    let want = toxmail_protocol::Extensions {
        smtputf8: true,
        body: toxmail_protocol::BodyType::EightBitMime,
        ..Default::default()
    };
    assert_eq!(got[0].extensions, want);
    assert_eq!(got[0].data, "Subject: grüße\r\n\r\nbody\r\n".as_bytes());
}

#[tokio::test]
async fn pipelined_transaction_with_xforward_and_dot_stuffing() {
    let (server, mut c) = Server::tcp(config()).await;
    let commands = [
        "LHLO c",
        "XFORWARD NAME=spike.test ADDR=127.0.0.9",
        "XFORWARD IDENT=4Zq9x+2B1",
        "MAIL FROM:<> SIZE=50",
        "RCPT TO:<b@y.test>",
        "RCPT TO:<b@y.test>",
        "DATA",
    ];
    let want = "250,250 2.0.0,250 2.0.0,250 2.1.0,250 2.1.5,250 2.1.5,354";
    assert_eq!(c.run(&commands).await, want);
    let body = "..leading dot\r\nmid\r\n..\r\n...\r\n.\r\nMAIL FROM:<a@x.test>\r\n";
    let got = c.pipeline(body, 3).await;
    assert_eq!(
        got, "250 2.0.0,250 2.0.0,250 2.1.0",
        "one reply per duplicate"
    );
    let tx = server.intake.take().remove(0);
    assert_eq!(tx.data, b".leading dot\r\nmid\r\n.\r\n..\r\n");
    assert_eq!((tx.mail_from.as_str(), tx.recipients.len()), ("", 2));
    assert_eq!(tx.ident.as_deref(), Some("4Zq9x+1"));
    // XFORWARD belongs to one transaction: the next one has no IDENT unless sent again.
    assert_eq!(
        c.run(&["RCPT TO:<c@y.test>", "DATA"]).await,
        "250 2.1.5,354"
    );
    assert_eq!(c.pipeline("x\r\n.\r\n", 1).await, "250 2.0.0");
    assert_eq!(server.intake.take()[0].ident, None);
}

#[tokio::test]
async fn rset_and_a_second_transaction_on_one_connection() {
    let (server, mut c) = Server::tcp(config()).await;
    let got = c.run(&[OPEN[0], OPEN[1], OPEN[2], "RSET", "DATA"]).await;
    assert!(
        got.ends_with("250 2.0.0,503 5.5.1"),
        "RSET drops the transaction: {got}"
    );
    for n in 1..=2 {
        assert!(c.run(&OPEN[1..]).await.ends_with("354"));
        let got = c.pipeline(format!("message {n}\r\n.\r\n"), 1).await;
        assert_eq!(got, "250 2.0.0");
    }
    let data: Vec<_> = server.intake.take().into_iter().map(|t| t.data).collect();
    assert_eq!(data, [b"message 1\r\n".to_vec(), b"message 2\r\n".to_vec()]);
}

#[tokio::test]
async fn sequence_errors_and_helo_are_refused() {
    let (_server, mut c) = Server::tcp(config()).await;
    let got = c
        .run(&[OPEN[1], "HELO c", "EHLO c", "LHLO c", OPEN[2]])
        .await;
    assert_eq!(got, "503 5.5.1,500 5.5.1,500 5.5.1,250,503 5.5.1");
    let got = c
        .run(&[OPEN[1], "RCPT TO:<unknown@y.test>", "DATA", OPEN[1]])
        .await;
    assert_eq!(
        got, "250 2.1.0,550 5.1.1,503 5.5.1,503 5.5.1",
        "no recipient; nested MAIL"
    );
}

#[tokio::test]
async fn oversized_messages_are_refused_at_mail_or_after_the_dot() {
    let (server, mut c) = Server::tcp(config()).await;
    let commands = [
        "LHLO c",
        "MAIL FROM:<a@x.test> SIZE=1001",
        "MAIL FROM:<a@x.test> SIZE=1000",
    ];
    assert_eq!(c.run(&commands).await, "250,552 5.3.4,250 2.1.0");
    let got = c
        .run(&["RCPT TO:<b@y.test>", "RCPT TO:<c@y.test>", "DATA"])
        .await;
    assert!(got.ends_with("354"));
    let line = format!("{}\r\n", "z".repeat(2000)); // a long line is fine; the total is not
    for _ in 0..50 {
        c.send(&line).await;
    }
    let got = c.pipeline(".\r\nNOOP\r\n", 3).await;
    assert_eq!(got, "552 5.3.4,552 5.3.4,250 2.0.0");
    assert!(server.intake.take().is_empty(), "intake never called");
}

#[tokio::test]
async fn ten_megabyte_command_line_is_refused_and_the_session_goes_on() {
    let (_server, mut c) = Server::tcp(config()).await;
    assert_eq!(c.run(&["LHLO c"]).await, "250");
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..10 {
        c.send(&chunk).await;
    }
    assert_eq!(c.pipeline("\r\nNOOP\r\n", 2).await, "500 5.5.2,250 2.0.0");
    assert_eq!(c.run(&OPEN[..3]).await, "250,250 2.1.0,250 2.1.5");
}

#[tokio::test]
async fn garbage_and_non_utf8_are_refused_and_nothing_is_delivered() {
    let (server, mut c) = Server::tcp(config()).await;
    assert_eq!(c.run(&["LHLO c"]).await, "250");
    let bytes =
        b"\xff\xfe\x00garbage\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<\xc3\x28@y.test>\r\nDATA\r\n";
    let got = c.pipeline(bytes, 4).await;
    assert_eq!(got, "500 5.5.2,250 2.1.0,500 5.5.2,503 5.5.1");
    assert!(server.intake.take().is_empty());
}

#[tokio::test]
async fn wrong_reply_count_from_the_intake_becomes_451_for_everyone() {
    let (_server, mut c) = Server::tcp(config()).await;
    let got = c
        .run(&[
            OPEN[0],
            OPEN[1],
            "RCPT TO:<miscount@y.test>",
            OPEN[2],
            "DATA",
        ])
        .await;
    assert!(got.ends_with("354"));
    assert_eq!(c.pipeline("x\r\n.\r\n", 2).await, "451 4.3.0,451 4.3.0");
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let (_server, mut c) = Server::tcp(LmtpConfig {
        max_recipients: 2,
        ..config()
    })
    .await;
    let got = c.run(&[OPEN[0], OPEN[1], OPEN[2], OPEN[2], OPEN[2]]).await;
    assert!(got.ends_with("250 2.1.5,250 2.1.5,452 4.5.3"), "{got}");
}

#[tokio::test]
async fn idle_connection_is_closed_with_421() {
    let config = LmtpConfig {
        idle_timeout: Duration::from_millis(200),
        ..config()
    };
    let (_server, mut c) = Server::tcp(config).await;
    assert!(c.reply().await.starts_with("421 4.4.2 "));
    assert!(c.closed().await);
}

/// Issue 8: a client that drips a byte at a time never waits `idle_timeout` between reads, yet
/// is closed once its command, and its transaction, ran out of time.
#[tokio::test]
async fn a_client_dripping_bytes_is_closed_at_the_deadline_not_kept_forever() {
    let slow = || LmtpConfig {
        idle_timeout: Duration::from_millis(1500),
        transaction_timeout: Duration::from_secs(3),
        ..config()
    };
    let (_server, mut c) = Server::tcp(slow()).await;
    // One command, dripped: it never completes and must not keep the connection.
    let drip = async {
        for b in b"LHLO slowly-dripping-client-name-that-never-ends"
            .iter()
            .cycle()
        {
            if c.0.get_mut().write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Ends when the server closed (or after 4 s: then no 421 is waiting below).
    let _ = timeout(Duration::from_secs(4), drip).await;
    assert!(c.reply().await.starts_with("421 4.4.2 "));

    // Within a transaction, each command is quick but the body is dripped: closed at the
    // transaction's deadline, the message not delivered.
    let (server, mut c) = Server::tcp(slow()).await;
    assert!(c.run(OPEN).await.ends_with("354"));
    let drip = async {
        loop {
            if c.0.get_mut().write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = timeout(Duration::from_secs(6), drip).await;
    assert!(c.reply().await.starts_with("421 4.4.2 "));
    assert!(server.intake.take().is_empty(), "nothing delivered");
}

#[tokio::test]
async fn connections_over_the_cap_are_told_421_and_closed() {
    let config = LmtpConfig {
        max_connections: 2,
        ..config()
    };
    let (server, _first) = Server::tcp(config).await;
    let addr = server.addr.unwrap();
    let mut second = Client(BufReader::new(TcpStream::connect(addr).await.unwrap()));
    assert!(second.reply().await.starts_with("220 "));
    let mut third = Client(BufReader::new(TcpStream::connect(addr).await.unwrap()));
    assert!(third.reply().await.starts_with("421 4.3.2 "));
    assert!(third.closed().await);
    // A slot freed is a slot again.
    assert!(second.run(&["QUIT"]).await.starts_with("221"));
    assert!(second.closed().await);
    let mut fourth = Client(BufReader::new(TcpStream::connect(addr).await.unwrap()));
    assert!(fourth.reply().await.starts_with("220 "));
}

#[tokio::test]
async fn shutdown_lets_a_message_in_data_finish() {
    let (server, mut c) = Server::tcp(config()).await;
    assert!(c.run(OPEN).await.ends_with("354"));
    c.send("first half\r\n").await;
    server.shutdown.cancel();
    // Wait until the listener is gone, so the rest really arrives after shutdown began.
    let refused = async {
        while TcpStream::connect(server.addr.unwrap()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, refused).await.expect("listener closed");
    let got = c.pipeline("second half\r\n.\r\n", 2).await;
    assert_eq!(got, "250 2.0.0,421 4.3.2");
    assert!(c.closed().await);
    timeout(WAIT, server.task)
        .await
        .expect("serve returns")
        .unwrap();
    assert_eq!(
        server.intake.take()[0].data,
        b"first half\r\nsecond half\r\n"
    );
}

/// The socket as the bridge binds it (`[lmtp] listen = "unix:…"`), in a temp dir kept alive with it.
async fn unix_server(config: LmtpConfig) -> (Server, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let listener = toxmail_bridge::postfix::socket::bind(&path).unwrap();
    (Server::start(Listener::Unix(listener), config), dir, path)
}

async fn unix_client(path: &std::path::Path) -> Client<UnixStream> {
    Client(BufReader::new(UnixStream::connect(path).await.unwrap()))
}

#[tokio::test]
async fn unix_socket_serves_a_transaction_and_is_mode_0660() {
    use std::os::unix::fs::PermissionsExt;
    let (server, _dir, path) = unix_server(config()).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut c = unix_client(&path).await;
    assert_eq!(c.reply().await, "220 mx.test LMTP toxmail ready");
    assert!(c.run(OPEN).await.ends_with("354"));
    let got = c.pipeline("over unix\r\n.\r\nQUIT\r\n", 2).await;
    assert_eq!(got, "250 2.0.0,221 2.0.0");
    let tx = server.intake.take();
    assert_eq!(tx[0].data, b"over unix\r\n");
    assert_eq!(tx[0].recipients, ["b@y.test"]);
}

#[tokio::test]
async fn unix_connections_over_the_cap_are_told_421() {
    let config = LmtpConfig {
        max_connections: 1,
        ..config()
    };
    let (_server, _dir, path) = unix_server(config).await;
    let mut first = unix_client(&path).await;
    assert!(first.reply().await.starts_with("220 "));
    let mut second = unix_client(&path).await;
    assert!(second.reply().await.starts_with("421 4.3.2 "));
    assert!(second.closed().await);
    assert!(first.run(&["QUIT"]).await.starts_with("221"));
}

#[tokio::test]
async fn idle_unix_connection_is_closed_with_421() {
    let config = LmtpConfig {
        idle_timeout: Duration::from_millis(200),
        ..config()
    };
    let (_server, _dir, path) = unix_server(config).await;
    let mut c = unix_client(&path).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.reply().await.starts_with("421 4.4.2 "));
    assert!(c.closed().await);
}

#[tokio::test]
async fn smtp_source_delivers_ten_messages_intact() {
    let Some(binary) = ["/usr/sbin/smtp-source", "/usr/bin/smtp-source"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        println!("note: smtp-source (Debian package postfix) not installed; test skipped");
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let config = LmtpConfig {
        max_message_size: 1 << 20,
        ..config()
    };
    let server = Server::start(Listener::Tcp(listener), config);
    let args = "-L -s 2 -m 10 -l 10240 -f a@x.test -t b@y.test";
    let run = tokio::process::Command::new(binary)
        .args(args.split(' '))
        .arg(&target)
        .output();
    let output = timeout(Duration::from_secs(60), run)
        .await
        .expect("in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smtp-source: {stderr}");
    let got = server.intake.take();
    assert_eq!(got.len(), 10);
    for tx in &got {
        assert_eq!(
            (tx.mail_from.as_str(), &tx.recipients[..]),
            ("a@x.test", &["b@y.test".into()][..])
        );
        let text = std::str::from_utf8(&tx.data).unwrap();
        let (headers, body) = text.split_once("\r\n\r\n").expect("header/body separator");
        assert!(headers.contains("From: <a@x.test>"), "{headers}");
        assert!(body.len() >= 10240, "body of {} bytes", body.len());
        // smtp-source writes lines "1XXX…", "2XXX…", … "0XXX…", … and ends with a line of X.
        let lines: Vec<&str> = body.strip_suffix("\r\n").unwrap().split("\r\n").collect();
        let (last, numbered) = lines.split_last().unwrap();
        assert!(last.bytes().all(|b| b == b'X'));
        for (i, line) in numbered.iter().enumerate() {
            let digit = char::from(b'0' + ((i + 1) % 10) as u8);
            let intact = line.starts_with(digit) && line[1..].bytes().all(|b| b == b'X');
            assert!(intact, "line {i}: {line}");
        }
    }
}
