//! A private DNS server for tests: Debian's dnsmasq (package dnsmasq-base) on 127.0.0.1 and a free
//! port, UDP and TCP, serving only the TXT records it is given. Killed on drop.
//!
//! What it answers, checked by the tests at the bottom of this file:
//! - a served name: NOERROR, authoritative, one TXT record per entry, TTL `DnsOptions::ttl`;
//! - any other name: NXDOMAIN, and NODATA (NOERROR, no answer) for a parent of a served name
//!   or another type at a served name. That comes from `--local=/#/`; without it dnsmasq has no
//!   upstream (`--no-resolv`) and answers REFUSED ("EDE: not ready") for every unserved name;
//! - a name in `DnsOptions::refused_domains` (or below one): REFUSED, kept for tests of
//!   temporary DNS failures (`--server=/domain/#` sends the domain to the missing upstream).
//!
//! Records go through a config file, not `--txt-record` arguments: on the command line dnsmasq
//! keeps the double quotes as part of the data, only its config-file reader unquotes.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for dnsmasq to answer its first query.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The name `start` asks while waiting; left out of [`DnsServer::queries`].
const PROBE_NAME: &str = "ready.invalid";

/// Knobs beyond the records themselves.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// TTL of every served record (dnsmasq `--local-ttl`; its default, 0, would defeat caching).
    pub ttl: u32,
    /// Domains answered with REFUSED instead of NXDOMAIN.
    pub refused_domains: Vec<String>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            ttl: 300,
            refused_domains: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct DnsServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DnsServer {
    /// Serves `records`: each is a name and the character-strings of one TXT record (a name may
    /// appear several times for several records). Unserved names get NXDOMAIN.
    pub fn start(records: &[(&str, Vec<String>)]) -> io::Result<DnsServer> {
        Self::start_with(records, &DnsOptions::default())
    }

    pub fn start_with(records: &[(&str, Vec<String>)], options: &DnsOptions) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("dnsmasq.conf");
        std::fs::write(&config, config_file(records)?)?;
        let log = dir.path().join("dnsmasq.log");
        // The port is free when checked and taken by dnsmasq a moment later; retry the rare loss.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_udp_and_tcp_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut child = spawn(&config, &log, port, options)?;
            match wait_until_answering(&mut child, addr, &log) {
                Ok(()) => {
                    return Ok(DnsServer {
                        child,
                        addr,
                        log,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("dnsmasq did not start")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `records` instead, on the same address (what a changed zone, or an attacker who
    /// took over the answers, looks like to the resolver): dnsmasq is restarted with them.
    pub fn replace(
        &mut self,
        records: &[(&str, Vec<String>)],
        options: &DnsOptions,
    ) -> io::Result<()> {
        let config = self._dir.path().join("dnsmasq.conf");
        std::fs::write(&config, config_file(records)?)?;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut last_error = None;
        // The old process's sockets are gone once it is reaped; a bind can still lose a race
        // with a client's ephemeral port now and then, so try a few times.
        for _ in 0..5 {
            let mut child = spawn(&config, &self.log, self.addr.port(), options)?;
            match wait_until_answering(&mut child, self.addr, &self.log) {
                Ok(()) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("dnsmasq did not restart")))
    }

    /// Names queried so far, in order, as dnsmasq logged them (`--log-queries`). The log is
    /// written asynchronously: to prove a name was *not* queried, first wait for a later query
    /// to show up.
    pub fn queries(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let rest = &line[line.find("query[")?..];
                let name = rest.split(' ').nth(1)?;
                (name != PROBE_NAME).then(|| name.to_string())
            })
            .collect()
    }
}

fn wait_until_answering(child: &mut Child, addr: SocketAddr, log: &Path) -> io::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(io::Error::other(format!(
                "dnsmasq exited ({status}): {log}"
            )));
        }
        if probe(addr, PROBE_NAME).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other("dnsmasq did not answer within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, log: &Path, port: u16, options: &DnsOptions) -> io::Result<Child> {
    let mut command = Command::new("dnsmasq");
    command
        .arg(format!("--conf-file={}", config.display()))
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--log-queries",
            "--log-facility=-",
            "--local=/#/",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--local-ttl={}", options.ttl));
    for domain in &options.refused_domains {
        command.arg(format!("--server=/{domain}/#"));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("dnsmasq (package dnsmasq-base): {e}")))
}

/// `txt-record=name,"s1","s2"` lines; strings are printable ASCII of at most 255 bytes.
fn config_file(records: &[(&str, Vec<String>)]) -> io::Result<String> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let mut out = String::new();
    for (name, strings) in records {
        let name_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if name.is_empty() || !name_ok {
            return Err(invalid(format!("unsupported record name {name:?}")));
        }
        out.push_str("txt-record=");
        out.push_str(name.trim_end_matches('.'));
        for s in strings {
            if s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(invalid(format!("unsupported character-string {s:?}")));
            }
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = write!(out, ",\"{escaped}\"");
        }
        out.push('\n');
    }
    Ok(out)
}

fn free_udp_and_tcp_port() -> io::Result<u16> {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no port free for both UDP and TCP"))
}

/// Response code and answer count of a TXT query for `name` over UDP.
fn probe(addr: SocketAddr, name: &str) -> io::Result<(u8, u16)> {
    let mut query = vec![0x7e, 0x57, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 16, 0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    socket.send_to(&query, addr)?;
    let mut reply = [0u8; 1500];
    let (len, _) = socket.recv_from(&mut reply)?;
    if len < 12 || reply[..2] != query[..2] {
        return Err(io::Error::other("not a DNS reply"));
    }
    Ok((reply[3] & 0x0f, u16::from_be_bytes([reply[6], reply[7]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOERROR: u8 = 0;
    const NXDOMAIN: u8 = 3;
    const REFUSED: u8 = 5;

    #[test]
    fn dnsmasq_answers_served_names_and_nxdomain_for_the_rest() {
        let records = [
            ("alice._tox.b.test", vec!["v=tox1;".into(), "x\"y,z".into()]),
            ("alice._tox.b.test", vec!["second".into()]),
        ];
        let options = DnsOptions {
            refused_domains: vec!["down.test".into()],
            ..DnsOptions::default()
        };
        let server = DnsServer::start_with(&records, &options).expect("dnsmasq starts");
        let addr = server.addr();
        assert_eq!(probe(addr, "alice._tox.b.test.").unwrap(), (NOERROR, 2));
        assert_eq!(probe(addr, "bob._tox.b.test.").unwrap(), (NXDOMAIN, 0));
        assert_eq!(probe(addr, "other.example.").unwrap(), (NXDOMAIN, 0));
        // A parent of a served name exists, without data.
        assert_eq!(probe(addr, "_tox.b.test.").unwrap(), (NOERROR, 0));
        assert_eq!(probe(addr, "x._tox.down.test.").unwrap(), (REFUSED, 0));
        // TCP is served too.
        assert!(std::net::TcpStream::connect(addr).is_ok());
        assert!(wait(|| server
            .queries()
            .contains(&"x._tox.down.test".to_string())));
    }

    #[test]
    fn records_with_unsupported_bytes_are_refused_before_starting() {
        let bad = [("a.test", vec!["tab\there".to_string()])];
        assert!(DnsServer::start(&bad).is_err());
        let long = [("a.test", vec!["x".repeat(256)])];
        assert!(DnsServer::start(&long).is_err());
    }

    fn wait(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}
