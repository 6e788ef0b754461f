//! What a node is started with: network settings, where its savedata lives, whom it bootstraps from.
//! `Options::loopback` is the profile every test, demo and benchmark uses.

use std::net::SocketAddr;
use std::path::PathBuf;

use toxmail_protocol::PublicKey;
use zeroize::Zeroizing;

/// A DHT node to bootstrap from: its address and DHT public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapNode {
    pub addr: SocketAddr,
    pub dht_key: PublicKey,
}

/// Settings for one Tox instance. Built with [`Options::loopback`] or [`Options::new`] and the setters.
#[derive(Clone)]
pub struct Options {
    pub ipv6: bool,
    pub udp: bool,
    pub local_discovery: bool,
    pub hole_punching: bool,
    pub dht_announcements: bool,
    /// UDP port range to bind (c-toxcore takes the first free one).
    pub start_port: u16,
    pub end_port: u16,
    /// TCP relay server port; 0 = no relay server.
    pub tcp_port: u16,
    /// Where the full savedata is kept; `None` = an ephemeral identity.
    pub savedata_path: Option<PathBuf>,
    /// Encrypts the savedata file with toxencryptsave when set; wiped from memory on drop.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    pub bootstrap: Vec<BootstrapNode>,
    /// Name shown to friends (≤ 128 bytes).
    pub name: String,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("ipv6", &self.ipv6)
            .field("udp", &self.udp)
            .field("local_discovery", &self.local_discovery)
            .field("hole_punching", &self.hole_punching)
            .field("dht_announcements", &self.dht_announcements)
            .field("ports", &(self.start_port..=self.end_port))
            .field("tcp_port", &self.tcp_port)
            .field("savedata_path", &self.savedata_path)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// The UDP port range the loopback profile binds in; c-toxcore picks the first free port.
pub const LOOPBACK_PORTS: (u16, u16) = (34100, 34999);

impl Options {
    /// c-toxcore's own defaults (IPv6, LAN discovery and hole punching on), no savedata, no bootstrap.
    pub fn new() -> Self {
        Options {
            ipv6: true,
            udp: true,
            local_discovery: true,
            hole_punching: true,
            dht_announcements: true,
            start_port: 33445,
            end_port: 33545,
            tcp_port: 0,
            savedata_path: None,
            passphrase: None,
            bootstrap: Vec::new(),
            name: String::new(),
        }
    }

    /// Loopback-only profile: IPv6, LAN discovery, hole punching and DHT announcements off, no TCP
    /// relay, ports in [`LOOPBACK_PORTS`]. Bootstrap nodes must be ones the caller started on 127.0.0.1.
    pub fn loopback() -> Self {
        Options {
            ipv6: false,
            local_discovery: false,
            hole_punching: false,
            dht_announcements: false,
            start_port: LOOPBACK_PORTS.0,
            end_port: LOOPBACK_PORTS.1,
            ..Options::new()
        }
    }

    pub fn savedata(mut self, path: impl Into<PathBuf>) -> Self {
        self.savedata_path = Some(path.into());
        self
    }

    /// Takes the bytes over (moved, not copied) and wipes them when the options are dropped.
    pub fn passphrase(mut self, passphrase: impl Into<Vec<u8>>) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    pub fn bootstrap_from(mut self, node: BootstrapNode) -> Self {
        self.bootstrap.push(node);
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}
