//! A whole LMTP connection from arbitrary client bytes, through the real driver, codec and
//! session, to an intake that accepts recipients unless they contain "refuse". Never a panic or
//! a hang; every byte sent back is a well-formed reply line (nothing the client sent can break
//! the reply stream); the intake sees only transactions the session accepted.
#![no_main]

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use toxmail_bridge::postfix::lmtp::fuzzing::drive;
use toxmail_bridge::postfix::lmtp::{Intake, LmtpConfig, Transaction};
use toxmail_bridge::reply::{Failure, Reply};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
});

const MAX_RECIPIENTS: usize = 4;
const MAX_SIZE: u64 = 256;

#[derive(Default)]
struct Recorder {
    checked: Mutex<Vec<String>>,
}

impl Intake for Recorder {
    async fn check_recipient(&self, _mail_from: &str, rcpt: &str) -> Result<(), Failure> {
        if rcpt.contains("refuse") {
            return Err(Failure::RecipientUnknown);
        }
        self.checked.lock().unwrap().push(rcpt.to_string());
        Ok(())
    }

    async fn deliver(&self, tx: Transaction) -> Vec<Reply> {
        assert!(!tx.recipients.is_empty() && tx.recipients.len() <= MAX_RECIPIENTS);
        assert!(tx.data.len() as u64 <= MAX_SIZE, "over the size limit");
        let checked = self.checked.lock().unwrap();
        for rcpt in &tx.recipients {
            assert!(checked.contains(rcpt), "{rcpt:?} was never checked");
        }
        tx.recipients
            .iter()
            .map(|_| Reply::queued("queued"))
            .collect()
    }
}

fuzz_target!(|input: &[u8]| {
    let config = LmtpConfig {
        hostname: "lmtp.fuzz.test".into(),
        max_message_size: MAX_SIZE,
        max_recipients: MAX_RECIPIENTS,
        max_line: 64,
        idle_timeout: Duration::from_secs(60),
        transaction_timeout: Duration::from_secs(60),
        max_connections: 1,
    };
    let (client, server) = tokio::io::duplex(4096);
    let output = RUNTIME.block_on(async {
        let session = drive(
            server,
            Arc::new(config),
            Arc::new(Recorder::default()),
            CancellationToken::new(),
        );
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let talk = async {
            // The server may close early (QUIT): then the rest is not read, which is fine.
            let _ = to_server.write_all(input).await;
            let _ = to_server.shutdown().await;
        };
        let mut output = Vec::new();
        let listen = from_server.read_to_end(&mut output);
        let ((), (), read) = tokio::join!(session, talk, listen);
        read.expect("in-memory read");
        output
    });
    let text = std::str::from_utf8(&output).expect("replies are ASCII");
    assert!(text.starts_with("220 "), "{text:?}");
    assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
    for line in text.split_terminator("\r\n") {
        let ok = line.len() >= 4
            && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            && matches!(line.as_bytes()[3], b' ' | b'-')
            && line.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        assert!(ok, "malformed reply line {line:?}");
    }
});
