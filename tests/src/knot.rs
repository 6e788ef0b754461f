//! A private DNSSEC-signed zone for tests: Knot DNS (package knot) on 127.0.0.1 and a reserved
//! port, UDP and TCP, authoritative for one zone that it signs itself (one ECDSA P-256 key,
//! NSEC denials). The key is new for every server, and [`SignedZone::trust_anchor`] is a file
//! naming it, in the zone-file syntax resolvers read trust anchors from. Killed on drop.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for the zone to be signed and served.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct SignedZone {
    child: Child,
    addr: SocketAddr,
    anchor: PathBuf,
    _dir: tempfile::TempDir,
}

impl SignedZone {
    /// Serves `zone` (e.g. `b.test`) signed, with the TXT `records` given as names (relative to
    /// nothing: fully spelled out, e.g. `bob._tox.b.test`) and their character-strings.
    pub fn start(zone: &str, records: &[(&str, Vec<String>)]) -> io::Result<SignedZone> {
        let zone = zone.trim_end_matches('.');
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        for sub in ["zones", "db"] {
            std::fs::create_dir(root.join(sub))?;
        }
        std::fs::write(
            root.join("zones").join(format!("{zone}.zone")),
            zone_file(zone, records)?,
        )?;
        let config = root.join("knot.conf");
        let log = root.join("knotd.log");
        let anchor = root.join("anchor.keys");
        // The port is free when checked and taken by knotd a moment later; retry the rare loss.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_udp_and_tcp_port()?;
            std::fs::write(&config, knot_conf(root, zone, port))?;
            let mut child = Command::new("knotd")
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log)?)
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("knotd (package knot): {e}")))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_until_signed(&mut child, addr, zone, &config, &log, &anchor) {
                Ok(()) => {
                    return Ok(SignedZone {
                        child,
                        addr,
                        anchor,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !e.to_string().contains("in use") {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("knotd did not start")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zone's key as a trust anchor file (`zone. 300 IN DNSKEY 257 3 13 …`).
    pub fn trust_anchor(&self) -> &Path {
        &self.anchor
    }
}

/// Waits until knotd serves the zone's DNSKEY, then writes the trust anchor from it.
fn wait_until_signed(
    child: &mut Child,
    addr: SocketAddr,
    zone: &str,
    config: &Path,
    log: &Path,
    anchor: &Path,
) -> io::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(io::Error::other(format!("knotd exited ({status}): {log}")));
        }
        let out = Command::new("knotc")
            .arg("-c")
            .arg(config)
            .args(["zone-read", zone, "@", "DNSKEY"])
            .stderr(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let keys: Vec<String> = text.lines().filter_map(anchor_line).collect();
        if out.status.success() && !keys.is_empty() && answers(addr) {
            std::fs::write(anchor, keys.join("\n") + "\n")?;
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(io::Error::other(format!(
                "zone not signed within 20 s: {log}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True once knotd answers a query (the root's SOA: refused, but answered) on its UDP port.
fn answers(addr: SocketAddr) -> bool {
    let query = [0x6b, 0x6e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reply = [0u8; 512];
    socket.send_to(&query, addr).is_ok()
        && matches!(socket.recv_from(&mut reply), Ok((n, _)) if n >= 12 && reply[..2] == query[..2])
}

impl Drop for SignedZone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[b.test.] b.test. 300 DNSKEY 257 3 13 <key>` (knotc) → `b.test. 300 IN DNSKEY 257 3 13 <key>`.
fn anchor_line(line: &str) -> Option<String> {
    let rest = line.split_once("] ").map_or(line, |(_, r)| r);
    let mut fields = rest.split_whitespace();
    let (name, ttl, kind) = (fields.next()?, fields.next()?, fields.next()?);
    (kind == "DNSKEY").then(|| {
        let data: Vec<&str> = fields.collect();
        format!("{name} {ttl} IN DNSKEY {}", data.join(" "))
    })
}

fn zone_file(zone: &str, records: &[(&str, Vec<String>)]) -> io::Result<String> {
    let mut out = format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ SOA ns.{zone}. admin.{zone}. 1 3600 900 86400 300\n\
         @ NS ns.{zone}.\nns A 127.0.0.1\n"
    );
    for (name, strings) in records {
        let name = name.trim_end_matches('.');
        let ok = name.ends_with(zone)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            let what = format!("record {name:?} is not a plain name in {zone}");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        }
        let _ = write!(out, "{name}. TXT");
        for s in strings {
            if s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                let what = format!("unsupported character-string {s:?}");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
            }
            let _ = write!(out, " \"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        }
        out.push('\n');
    }
    Ok(out)
}

fn knot_conf(root: &Path, zone: &str, port: u16) -> String {
    let root = root.display();
    format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {root}\n\
         database:\n    storage: {root}/db\n\
         log:\n  - target: stderr\n    any: info\n\
         policy:\n  - id: one-key\n    algorithm: ecdsap256sha256\n    single-type-signing: on\n    nsec3: off\n\
         template:\n  - id: default\n    storage: {root}/zones\n    file: \"%s.zone\"\n\
         \x20   dnssec-signing: on\n    dnssec-policy: one-key\n    zonefile-sync: -1\n\
         \x20   zonefile-load: difference-no-serial\n    journal-content: all\n\
         zone:\n  - domain: {zone}\n"
    )
}

fn free_udp_and_tcp_port() -> io::Result<u16> {
    for _ in 0..20 {
        let port = crate::ports::free_tcp_port()?;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no port free for both UDP and TCP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knotc_dnskey_lines_become_trust_anchor_lines() {
        assert_eq!(
            anchor_line("[b.test.] b.test. 300 DNSKEY 257 3 13 AbC/d+==").as_deref(),
            Some("b.test. 300 IN DNSKEY 257 3 13 AbC/d+==")
        );
        assert_eq!(anchor_line("[b.test.] b.test. 300 SOA x"), None);
        assert_eq!(anchor_line(""), None);
    }

    #[test]
    fn signed_zone_starts_and_names_its_key() {
        let zone = SignedZone::start("b.test", &[("bob._tox.b.test", vec!["v=tox1".into()])])
            .expect("knotd starts");
        let anchor = std::fs::read_to_string(zone.trust_anchor()).unwrap();
        assert!(
            anchor.starts_with("b.test. 300 IN DNSKEY 257 3 13 "),
            "{anchor}"
        );
    }
}
