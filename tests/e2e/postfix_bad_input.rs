//! Bad input against a real running bridge gets a clear reply and changes nothing: malformed
//! LMTP, a 10 MB command line, an oversized message, invalid Tox addresses.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;

use crate::postfix_flow::{outbound_recipients, spec};

struct Lmtp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Lmtp {
    async fn connect(site: &Site) -> Lmtp {
        let (r, w) = TcpStream::connect(site.lmtp).await.unwrap().into_split();
        let mut c = Lmtp {
            reader: BufReader::new(r),
            writer: w,
        };
        assert!(c.reply().await.starts_with("220"));
        c
    }

    /// The last line of the next reply.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line));
            read.await.expect("reply in time").unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> String {
        self.writer.write_all(bytes).await.unwrap();
        self.reply().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lmtp_and_bad_addresses_are_refused_and_nothing_is_queued() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut a = Site::prepare(
        root.path(),
        spec("site-a", "a.test", &["alice"]),
        &boot.node,
    );
    a.start_bridge();
    let mut c = Lmtp::connect(&a).await;

    assert!(
        c.send(b"EHLO x\r\n").await.starts_with("500"),
        "LMTP wants LHLO"
    );
    assert!(c.send(b"LHLO client.a.test\r\n").await.starts_with("250"));
    assert!(
        c.send(b"\xff\xfe garbage \x01\r\n")
            .await
            .starts_with("500")
    );
    let mut long = vec![b'A'; 10 * 1024 * 1024];
    long.extend_from_slice(b"\r\n");
    assert!(c.send(&long).await.starts_with("500"), "10 MB line refused");
    assert!(
        c.send(b"DATA\r\n").await.starts_with("503"),
        "DATA without recipients"
    );
    let too_big = c
        .send(b"MAIL FROM:<alice@a.test> SIZE=999999999999\r\n")
        .await;
    assert!(too_big.starts_with("552 5.3.4"), "{too_big}");

    assert!(
        c.send(b"MAIL FROM:<alice@a.test>\r\n")
            .await
            .starts_with("250")
    );
    let bad = c.send(b"RCPT TO:<zzz@tox>\r\n").await;
    assert!(bad.starts_with("550 5.1.3"), "{bad}");
    let mut id = toxmail_protocol::ToxId::new(toxmail_protocol::PublicKey([7; 32]), 1).to_string();
    id.replace_range(0..1, if id.starts_with('0') { "1" } else { "0" });
    // Raw on purpose: a `<76 hex>@tox` local part is longer than `MailAddress` (the type of
    // addresses we send to an MTA) allows; `id` is hex digits only, so the line is one command.
    let checksum = c.send(format!("RCPT TO:<{id}@tox>\r\n").as_bytes()).await;
    assert!(
        checksum.starts_with("550 5.1.3"),
        "bad checksum: {checksum}"
    );
    let plain = c.send(b"RCPT TO:<someone@plain.test>\r\n").await;
    // Not (or no longer) a Tox recipient: Postfix only sends us recipients the socketmap routed
    // here, so this one's route changed since; 450 makes Postfix route it again.
    assert!(
        plain.starts_with("450 4.4.0"),
        "not a Tox recipient: {plain}"
    );
    assert!(
        c.send(b"RSET\r\n").await.starts_with("250"),
        "session still usable"
    );
    assert!(c.send(b"QUIT\r\n").await.starts_with("221"));

    assert!(outbound_recipients(&a).await.is_empty(), "nothing queued");
}
