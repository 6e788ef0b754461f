//! Seal and open throughput for 10 KB, 1 MB and 20 MB messages, without a bench framework:
//! each figure is the median of several timed runs, printed as `seal 10KB: 612.3 MB/s`, next
//! to an `anchor` line for the bare cipher. Run with `cargo bench -p toxmail-protocol`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crypto_box::SalsaBox;
use crypto_box::aead::AeadInPlace;
use toxmail_protocol::{
    Letter, MessageId, Metadata, SecretKey, open, public_key_of, seal, seal_compressed,
};

const RUNS: usize = 7;
/// Each run repeats the operation until it has processed at least this many bytes.
const BYTES_PER_RUN: usize = 40 << 20;

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("envelope bench: pass --bench (cargo bench) to measure");
        return;
    }
    let sender = SecretKey::from([0x11; 32]);
    let recipient = SecretKey::from([0x22; 32]);
    let recipient_pk = public_key_of(&recipient);

    for (label, size) in [("10KB", 10 * 1024), ("1MB", 1 << 20), ("20MB", 20 << 20)] {
        let letter = letter_of(size);
        let iterations = (BYTES_PER_RUN / size).max(1);

        let seal_rate = median_rate(size * iterations, || {
            for _ in 0..iterations {
                black_box(seal(black_box(&letter), &sender, &recipient_pk).unwrap());
            }
        });
        let sealed = seal(&letter, &sender, &recipient_pk).unwrap();
        let open_rate = median_rate(size * iterations, || {
            for _ in 0..iterations {
                black_box(open(black_box(&sealed), &recipient).unwrap());
            }
        });
        let anchor_rate = anchor_rate(size, iterations);
        println!("seal {label}: {seal_rate:.1} MB/s");
        println!("open {label}: {open_rate:.1} MB/s");
        println!("anchor {label}: {anchor_rate:.1} MB/s (bare SalsaBox encrypt, key precomputed)");

        // Envelope version 2 on mail-like text: rate in message bytes, and the envelope size.
        let mut text = letter_of(size);
        text.message = mail_text(size);
        let compressed = seal_compressed(&text, &sender, &recipient_pk).unwrap();
        let plain = seal(&text, &sender, &recipient_pk).unwrap();
        let seal_rate = median_rate(size * iterations, || {
            for _ in 0..iterations {
                black_box(seal_compressed(black_box(&text), &sender, &recipient_pk).unwrap());
            }
        });
        let open_rate = median_rate(size * iterations, || {
            for _ in 0..iterations {
                black_box(open(black_box(&compressed), &recipient).unwrap());
            }
        });
        println!(
            "seal_compressed text {label}: {seal_rate:.1} MB/s, envelope {} bytes (version 1: {})",
            compressed.len(),
            plain.len()
        );
        println!("open compressed text {label}: {open_rate:.1} MB/s");
    }
}

/// Text that compresses about as a letter does: varied words and numbers, not one repeated line.
fn mail_text(size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "garden", "tomatoes", "Sunday", "visit", "the", "we", "train", "photos", "grandma",
        "birthday", "school", "weather", "and", "rain", "dinner", "soon",
    ];
    let mut out = Vec::with_capacity(size + 64);
    let mut state: u32 = 0x9e37_79b9;
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
        out.extend_from_slice(if state.is_multiple_of(11) {
            b".\r\n"
        } else {
            b" "
        });
        if state.is_multiple_of(37) {
            out.extend_from_slice(format!("{} ", state % 1000).as_bytes());
        }
    }
    out.truncate(size);
    out
}

/// The same cipher without envelope work or key agreement, measured in the same run so the
/// ratio survives this machine's run-to-run noise.
fn anchor_rate(size: usize, iterations: usize) -> f64 {
    let cipher = SalsaBox::new(
        &SecretKey::from([0x22; 32]).public_key(),
        &SecretKey::from([0x11; 32]),
    );
    let mut buffer = vec![0x5a; size];
    median_rate(size * iterations, || {
        for _ in 0..iterations {
            let tag = cipher.encrypt_in_place_detached(&[0x33; 24].into(), b"", &mut buffer);
            black_box(tag.unwrap());
        }
    })
}

fn letter_of(size: usize) -> Letter {
    Letter {
        message_id: MessageId::random(),
        metadata: Metadata {
            envelope_sender: "alice@example.org".into(),
            recipient: "bob@example.net".into(),
            queue_id: "4ABCD1234".into(),
            created: 1_700_000_000,
            expires: 1_700_432_000,
            extensions: Default::default(),
        },
        message: (0..size).map(|i| (i % 251) as u8).collect(),
    }
}

/// Median throughput in MB/s (10^6 bytes) of `RUNS` runs of `run`, each moving `bytes`.
fn median_rate(bytes: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm-up: page in buffers, fill caches
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    bytes as f64 / times[RUNS / 2].as_secs_f64() / 1e6
}
