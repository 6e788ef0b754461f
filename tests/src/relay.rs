//! A `toxmail-relay` process for tests: its own config, state dir and private PostgreSQL, on
//! the loopback Tox network of the test. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use tox_runtime::BootstrapNode;
use tox_runtime::transfer::{Courier, PeerEvent};
use toxmail_protocol::{Register, RelayFrame, ToxId};

use crate::postgres::PgServer;

/// The toxmail-relay binary built next to the running test binary.
pub fn relay_binary() -> PathBuf {
    let bridge = crate::site::bridge_binary();
    let bin = bridge.with_file_name("toxmail-relay");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first",
        bin.display()
    );
    bin
}

#[derive(Debug)]
pub struct RelayProcess {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pg: PgServer,
    /// Known once the relay has run (its `relay.id` file).
    pub address: Option<ToxId>,
    child: Option<Child>,
    /// The relay's `/metrics`, `/healthz`, `/readyz` listener.
    pub metrics: std::net::SocketAddr,
}

impl RelayProcess {
    /// Writes the config (`policy` lines go into `[policy]`), migrates, and starts the relay.
    pub fn start(dir: &Path, bootstrap: &BootstrapNode, policy: &str) -> RelayProcess {
        std::fs::create_dir_all(dir).unwrap();
        let pg = PgServer::start().expect("PostgreSQL for the relay");
        let config = dir.join("relay.toml");
        let port = crate::bootstrapd::free_udp_port();
        let metrics: std::net::SocketAddr =
            ([127, 0, 0, 1], crate::postgres::free_tcp_port().unwrap()).into();
        let text = format!(
            "[relay]\nstate_dir = \"{state}\"\n\n[database]\nurl = \"{url}\"\nmax_connections = 4\n\n\
             [tox]\nport_range = [{lo}, {hi}]\nbootstrap = [{{ address = \"{addr}\", key = \"{key}\" }}]\n\n\
             [metrics]\nlisten = \"{metrics}\"\n\n[policy]\n{policy}\n",
            state = dir.join("state").display(),
            url = pg.url(),
            // Ports of its own, kept across restarts (see tests/e2e/relay.rs, `opts`).
            lo = port,
            hi = port.saturating_add(9),
            addr = bootstrap.addr,
            key = bootstrap.dht_key,
        );
        std::fs::write(&config, text).unwrap();
        let mut relay = RelayProcess {
            dir: dir.to_path_buf(),
            config,
            pg,
            address: None,
            child: None,
            metrics,
        };
        relay.admin(&["migrate"]).expect("relay migrate");
        relay.run();
        relay
    }

    /// Runs an admin subcommand; its stdout, or its stderr as the error.
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        crate::site::run_admin(&relay_binary(), &self.config, args)
    }

    /// Starts `toxmail-relay run` and waits until it has written its Tox ID.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "relay already running");
        let id_file = self.dir.join("state").join("relay.id");
        let _ = std::fs::remove_file(&id_file);
        let log = self.dir.join("relay.log");
        let child = crate::site::spawn_daemon(&relay_binary(), &self.config, &log);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&id_file)
                && let Some(id) = text.lines().find_map(|l| l.strip_prefix("tox_id "))
            {
                self.address = Some(id.parse().expect("relay.id holds a Tox ID"));
                crate::assert_logs_libtoxcore("toxmail-relay", &self.log());
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("relay exited: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "relay did not start\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn address(&self) -> ToxId {
        self.address.expect("the relay has run")
    }

    /// The relay as a DHT bootstrap node (its `relay.id`: DHT key and UDP port on 127.0.0.1).
    pub fn dht_node(&self) -> BootstrapNode {
        let text = std::fs::read_to_string(self.dir.join("state").join("relay.id")).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{name} in relay.id"))
                .to_string()
        };
        BootstrapNode {
            addr: ([127, 0, 0, 1], field("udp_port").parse::<u16>().unwrap()).into(),
            dht_key: field("dht_key").parse().unwrap(),
        }
    }

    /// Makes `courier` befriend and trust this relay, then registers with it for an hour once
    /// it is online; panics unless the relay answers `Holding` in time.
    pub async fn register(&self, courier: &Courier, connect: Duration) {
        let mut events = courier.subscribe();
        let key = self.address().public_key();
        courier.add_relay(self.address()).await.unwrap();
        let online = async {
            while let Some(e) = events.recv().await {
                if e == PeerEvent::Online(key) {
                    return;
                }
            }
        };
        tokio::time::timeout(connect, online)
            .await
            .unwrap_or_else(|_| panic!("relay not online\n{}", self.log()));
        let expires = crate::peers::now() + 3600;
        let frame = RelayFrame::Register(Register { expires });
        assert!(courier.send_relay_frame(key, frame).await, "Register sent");
        let holding = async {
            while let Some(e) = events.recv().await {
                if let PeerEvent::Relay {
                    frame: RelayFrame::Holding(h),
                    ..
                } = e
                {
                    return h;
                }
            }
            panic!("event stream ended");
        };
        let h = tokio::time::timeout(Duration::from_secs(10), holding)
            .await
            .expect("registration answered with Holding");
        assert!(
            h.expires > crate::peers::now(),
            "registration in force: {h:?}"
        );
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running relay's process id (for its `/proc` figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default()
    }

    /// How many envelopes the relay's database holds.
    pub async fn held(&self) -> i64 {
        let (client, conn) = tokio_postgres::connect(&self.pg.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the relay's database");
        tokio::spawn(conn);
        client
            .query_one("SELECT count(*) FROM held", &[])
            .await
            .expect("count held")
            .get(0)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
