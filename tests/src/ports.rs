//! Listening ports for the services tests start. `bind(127.0.0.1:0)` hands out a port from the
//! kernel's ephemeral range, which every outgoing connection of every parallel test also draws
//! from, so a port picked that way could be taken as a client's local port before the service
//! bound it (seen: a bridge failing with "Address already in use" while the harness talked to
//! whatever held its port). Ports here come from below the ephemeral range, chosen at random,
//! and each is reserved across processes by an advisory lock held until this process exits.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::TcpListener;
use std::sync::Mutex;

/// How many ports below the ephemeral range are used.
const SPAN: u16 = 12_000;

/// Lock files of the ports this process reserved; never released before exit.
static RESERVED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// The low end of the kernel's ephemeral range (default 32768).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn random_below(n: u16) -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    (h.finish() % u64::from(n)) as u16
}

/// A TCP port on 127.0.0.1 that is free, outside the ephemeral range, and reserved for this
/// process (no other test process using this function gets it).
pub fn free_tcp_port() -> io::Result<u16> {
    let high = ephemeral_low();
    let low = high.saturating_sub(SPAN).max(1024);
    let dir = std::env::temp_dir().join("toxmail-ports");
    std::fs::create_dir_all(&dir)?;
    for _ in 0..200 {
        let port = low + random_below(high - low);
        let lock = File::create(dir.join(format!("tcp-{port}.lock")))?;
        if lock.try_lock().is_err() {
            continue; // another test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // something else listens there
        }
        RESERVED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lock);
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free TCP port below the ephemeral range",
    ))
}
