//! `toxmail-bridge-bench intake` (issue 12, bounded intake): one LMTP transaction of 50
//! recipients × a 50 MiB message, every recipient a Tox ID nobody runs (`<ID>@tox`, no DNS), so
//! every copy is sealed and committed and stays queued. Prints the bridge's peak resident memory
//! during the transaction (VmHWM, reset just before it through `clear_refs`), the time from MAIL
//! to the last reply, and what was committed.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::block_in_place;
use toxmail_bridge::address::{ReversePath, mail_from_line};
use toxmail_protocol::{SecretKey, ToxId, public_key_of};
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;

use super::{Result, SENDER, bridge_proc, connect, restart_on_empty_queue, spec, tail};

const RECIPIENTS: usize = 50;
/// The default `[lmtp] max_message_size`, exactly: the largest message a default bridge takes.
const MESSAGE: usize = 50 * 1024 * 1024;
/// Bytes of the body written per call.
const WRITE_CHUNK: usize = 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// Runs the intake benchmark on a fresh site and prints its figures.
pub async fn run() -> Result<()> {
    let root = tempfile::tempdir()?;
    let boot = BootstrapDaemon::start(root.path())?;
    let mut site = block_in_place(|| {
        Site::prepare(root.path(), spec("site-a", "alice", "a.test"), &boot.node)
    });
    let db = connect(&site).await?;
    restart_on_empty_queue(&mut site, &db).await?;
    let proc = bridge_proc(&site).ok_or("bridge process not found")?;
    let before_kb = status_kb(&proc, "VmRSS:")?;
    // Writing 5 resets the peak (VmHWM) to the current resident size (proc(5)).
    std::fs::write(proc.join("clear_refs"), "5")?;

    let recipients: Vec<ToxId> = (0..RECIPIENTS).map(peer).collect();
    let start = Instant::now();
    let (replies, body_secs) = transaction(&site, &recipients).await?;
    let total = start.elapsed().as_secs_f64();
    let peak_kb = status_kb(&proc, "VmHWM:")?;
    let after_kb = status_kb(&proc, "VmRSS:")?;

    let accepted = replies.iter().filter(|r| r.starts_with("250")).count();
    if accepted != RECIPIENTS {
        let log = tail(&site.bridge_log());
        return Err(format!("{accepted} of {RECIPIENTS} accepted: {replies:?}\n{log}").into());
    }
    let row = db
        .query_one(
            "SELECT count(*), coalesce(sum(octet_length(envelope)), 0)::int8 FROM outbound",
            &[],
        )
        .await?;
    let (rows, bytes): (i64, i64) = (row.get(0), row.get(1));
    if rows != RECIPIENTS as i64 {
        return Err(format!("{rows} rows committed, expected {RECIPIENTS}").into());
    }
    let bound = 2.0 * MESSAGE as f64 / MIB + 64e6 / MIB;
    println!(
        "\nIntake: one LMTP transaction, {RECIPIENTS} Tox recipients × {} MiB\n",
        MESSAGE as f64 / MIB
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| bridge RSS before, MiB | {:.0} |",
        before_kb as f64 / 1024.0
    );
    println!(
        "| bridge peak RSS (VmHWM) during the transaction, MiB | {:.0} |",
        peak_kb as f64 / 1024.0
    );
    println!("| bound: 2 × message + 64 MB, MiB | {bound:.0} |");
    println!(
        "| bridge RSS after, MiB | {:.0} |",
        after_kb as f64 / 1024.0
    );
    println!("| sending the body, s | {body_secs:.1} |");
    println!("| MAIL to the last of {RECIPIENTS} replies, s | {total:.1} |");
    println!(
        "| committed: rows / envelope MiB | {rows} / {:.0} |",
        bytes as f64 / MIB
    );
    Ok(())
}

/// A valid Tox ID nobody runs, one per `i`.
fn peer(i: usize) -> ToxId {
    let mut secret = [0x33u8; 32];
    secret[..8].copy_from_slice(&(i as u64).to_be_bytes());
    ToxId::new(public_key_of(&SecretKey::from(secret)), 0x0bad_cafe)
}

/// One LMTP transaction; the replies after the final dot and the seconds the body took to send.
async fn transaction(site: &Site, recipients: &[ToxId]) -> Result<(Vec<String>, f64)> {
    let stream = TcpStream::connect(site.lmtp).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, "220").await?;
    write.write_all(b"LHLO bench.test\r\n").await?;
    expect(&mut read, "250").await?;
    let sender = ReversePath::parse(SENDER)?;
    write.write_all(mail_from_line(&sender).as_bytes()).await?;
    expect(&mut read, "250").await?;
    for rcpt in recipients {
        // `<ToxID>@tox` is longer than `MailAddress` allows; a `ToxId` is hex digits only.
        let line = ["RCPT TO:<", &rcpt.to_string(), "@tox>\r\n"].concat();
        write.write_all(line.as_bytes()).await?;
        expect(&mut read, "250").await?;
    }
    write.write_all(b"DATA\r\n").await?;
    expect(&mut read, "354").await?;
    let start = Instant::now();
    let body = body();
    for chunk in body.chunks(WRITE_CHUNK) {
        write.write_all(chunk).await?;
    }
    write.write_all(b".\r\n").await?;
    let body_secs = start.elapsed().as_secs_f64();
    let mut replies = Vec::new();
    for _ in recipients {
        replies.push(line(&mut read).await?);
    }
    write.write_all(b"QUIT\r\n").await?;
    Ok((replies, body_secs))
}

/// Exactly `MESSAGE` bytes: headers, then 100-byte lines of varied text (no leading dots).
fn body() -> Vec<u8> {
    let mut body = b"From: alice@a.test\r\nSubject: intake bench\r\n\r\n".to_vec();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while body.len() + 100 <= MESSAGE {
        for _ in 0..98 {
            // xorshift: text that does not compress to nothing.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            body.push(b'a' + (state % 26) as u8);
        }
        body.extend_from_slice(b"\r\n");
    }
    body.resize(MESSAGE - 2, b'z');
    body.extend_from_slice(b"\r\n");
    body
}

async fn line(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<String> {
    let mut line = String::new();
    if read.read_line(&mut line).await? == 0 {
        return Err("connection closed".into());
    }
    Ok(line.trim_end().to_string())
}

/// Reads one reply (all its lines) and checks its code.
async fn expect(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, code: &str) -> Result<()> {
    loop {
        let line = line(read).await?;
        if !line.starts_with(code) {
            return Err(format!("expected {code}, got {line:?}").into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

fn status_kb(proc: &std::path::Path, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(proc.join("status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or("no such field in /proc/<pid>/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad status line")?
        .parse()?)
}
