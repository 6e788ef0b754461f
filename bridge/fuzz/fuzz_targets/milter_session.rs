//! The mixed-recipient milter from arbitrary milter packets: one in-memory connection through
//! indymilter into the bridge's real callbacks and session (classification, Message-ID, verdict,
//! reject text, notice). Never a panic or a hang, and every byte sent back is a well-formed milter
//! packet; a reject carries a one-line reply with the policy's code.
//!
//! Input: byte 0 picks the policy (bits 0-1: warn, reject, allow, reject) and whether the
//! session starts with Postfix's option negotiation (bit 2 clear) or raw; then packets as
//! `command byte, length byte, data`, framed for the wire as the milter protocol does
//! (a 4-byte big-endian length, the command, the data).
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use toxmail_bridge::config::NextHop;
use toxmail_bridge::postfix::milter::fuzzing::serve_stream;
use toxmail_bridge::postfix::milter::{MilterConfig, MixedPolicy};
use toxmail_bridge::resolve::{Resolver, ResolverConfig};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

/// Where `warn` notices go: a loopback port nothing listens on (bound once, then released), so
/// a notice is composed in full and then refused at connect.
static NOTICE_HOP: LazyLock<SocketAddr> = LazyLock::new(|| {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    probe.local_addr().expect("local address")
});

fn packet(out: &mut Vec<u8>, command: u8, data: &[u8]) {
    let len = u32::try_from(data.len() + 1).expect("small");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(command);
    out.extend_from_slice(data);
}

/// The packets a mixed message from a local submission would bring, before the fuzzed ones.
fn negotiation(out: &mut Vec<u8>) {
    let mut optneg = Vec::new();
    for word in [6u32, 0x1ff, 0x1f_ffff] {
        optneg.extend_from_slice(&word.to_be_bytes());
    }
    packet(out, b'O', &optneg);
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, mut rest)) = input.split_first() else {
        return;
    };
    let policy = [
        MixedPolicy::Warn,
        MixedPolicy::Reject,
        MixedPolicy::Allow,
        MixedPolicy::Reject,
    ][usize::from(mode & 3)];
    let mut wire = Vec::new();
    if mode & 4 == 0 {
        negotiation(&mut wire);
    }
    while let [command, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        packet(&mut wire, *command, &tail[..len]);
        rest = &tail[len..];
    }
    wire.extend_from_slice(rest);

    let config = MilterConfig {
        policy,
        tox_transport: "toxlmtp".into(),
        hostname: "mx.fuzz.test".into(),
        notice_hop: NextHop {
            lmtp: false,
            addr: *NOTICE_HOP,
        },
        submission_networks: vec!["127.0.0.0/8".parse().unwrap()],
        timeout: Duration::from_secs(60),
    };
    let resolver = Arc::new(Resolver::new(ResolverConfig::default()));
    let (client, server) = tokio::io::duplex(64 * 1024);
    let output = RUNTIME.block_on(async {
        let (mut from_milter, mut to_milter) = tokio::io::split(client);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let talk = async {
            // The milter may close early (a broken packet): the rest is then not read.
            let _ = to_milter.write_all(&wire).await;
            let _ = to_milter.shutdown().await;
        };
        let listen = async {
            let mut output = Vec::new();
            from_milter
                .read_to_end(&mut output)
                .await
                .expect("in-memory read");
            let _ = done_tx.send(());
            output
        };
        let serve = serve_stream(server, config, resolver, done_rx);
        let ((), (), output) = tokio::join!(serve, talk, listen);
        output
    });

    let mut rest = output.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(4).expect("a whole length");
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        assert!(len >= 1, "empty packet");
        let (body, tail) = tail.split_at_checked(len).expect("a whole packet");
        let (&command, data) = body.split_first().unwrap();
        if command == b'y' {
            // SMFIR_REPLYCODE: "550 5.7.1 text" NUL, one line.
            let text = data.strip_suffix(b"\0").expect("NUL-terminated reply");
            assert!(
                text.starts_with(b"550 5.7.1 "),
                "{:?}",
                String::from_utf8_lossy(text)
            );
            assert!(!text.contains(&b'\0') && !text.contains(&b'\r') && !text.contains(&b'\n'));
        }
        rest = tail;
    }
});
