//! A private `tox-bootstrapd` (Debian package toxcore-utils) on 127.0.0.1, LAN discovery, IPv6 and
//! TCP relay off, bootstrapping from nobody. Killed on drop.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tox_runtime::BootstrapNode;
use toxmail_protocol::PublicKey;

#[derive(Debug)]
pub struct BootstrapDaemon {
    child: Child,
    pub node: BootstrapNode,
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

impl BootstrapDaemon {
    pub fn start(dir: &Path) -> std::io::Result<BootstrapDaemon> {
        let port = free_udp_port();
        let keys = dir.join("keys");
        let config = dir.join("tox-bootstrapd.conf");
        std::fs::write(
            &config,
            format!(
                "port = {port}\nkeys_file_path = \"{}\"\npid_file_path = \"{}\"\n\
                 enable_ipv6 = false\nenable_ipv4_fallback = true\nenable_lan_discovery = false\n\
                 enable_tcp_relay = false\ntcp_relay_ports = []\nenable_motd = false\nmotd = \"\"\n\
                 bootstrap_nodes = ()\n",
                keys.display(),
                dir.join("pid").display()
            ),
        )?;
        let child = Command::new("tox-bootstrapd")
            .args(["--config"])
            .arg(&config)
            .args(["--foreground", "--log-backend", "stdout"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut daemon = BootstrapDaemon {
            child,
            node: BootstrapNode {
                addr: ([127, 0, 0, 1], port).into(),
                dht_key: PublicKey([0; 32]),
            },
        };
        // Its DHT public key is the first 32 bytes of the 64-byte keys file it creates on start.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(bytes) = std::fs::read(&keys)
                && bytes.len() == 64
            {
                daemon.node.dht_key = PublicKey::from_slice(&bytes[..32]).expect("32 bytes");
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "tox-bootstrapd exited: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("tox-bootstrapd wrote no keys file"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BootstrapDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
