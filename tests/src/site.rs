//! A whole toxmail mail site for end-to-end tests: a private PostgreSQL, a private Postfix whose
//! transport_maps asks the site's bridge, and the bridge itself as a separate process
//! (`toxmail-bridge run`), bootstrapping its Tox identities from a tox-bootstrapd on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tox_runtime::BootstrapNode;
use toxmail_protocol::ToxId;

use crate::postfix::{PostfixSite, SiteConfig};
use crate::postgres::{PgServer, free_tcp_port};

/// What one site looks like.
#[derive(Clone, Debug, Default)]
pub struct SiteSpec {
    pub name: String,
    pub domain: String,
    /// Local parts with a Maildir at this site.
    pub mailboxes: Vec<String>,
    /// Addresses that get a Tox identity of their own (`identity add`).
    pub identities: Vec<String>,
    /// Domains whose DNS the bridge may ask, and the nameserver to ask.
    pub dns_domains: Vec<String>,
    pub nameserver: Option<SocketAddr>,
    /// Plain (non-Tox, non-local) mail goes to an smtp-sink.
    pub relay_sink: bool,
    /// More lines for the bridge's TOML config, appended at the end of the named section.
    pub extra_queue: String,
    pub extra_tox: String,
    /// Run the bridge's milter and put it in Postfix's smtpd_milters (default action accept).
    pub milter: Option<String>,
    /// Whole TOML sections appended to the bridge's config.
    pub extra_sections: String,
    /// UDP ports of this site's Tox nodes; default the shared loopback range. A scenario that
    /// stops one site while others start gives each its own, so no node inherits another's port.
    pub tox_ports: Option<(u16, u16)>,
    /// LMTP on a UNIX socket in Postfix's queue directory (`toxmail/lmtp`, as deploy/ advises)
    /// instead of a loopback TCP port.
    pub lmtp_unix: bool,
    /// The bridge logs JSON lines (`TOXMAIL_LOG_FORMAT=json`).
    pub json_logs: bool,
    /// The socketmap's answer for Tox recipients (`[socketmap] nexthop`), e.g. Postfix's stock
    /// `lmtp:inet:[127.0.0.1]:PORT`; default the harness's `toxlmtp` service to `[lmtp]`.
    pub socketmap_nexthop: Option<String>,

    /// More main.cf settings for this site's Postfix (`smtputf8_enable = yes`, ...).
    pub postfix_main_cf: Vec<(String, String)>,
}

/// The toxmail-bridge binary built next to the running test binary.
pub fn bridge_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target dir")
    } else {
        dir
    };
    let bin = dir.join("toxmail-bridge");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first",
        bin.display()
    );
    bin
}

/// Runs `<binary> --config <config> <args>`; its stdout, or its stderr as the error.
pub fn run_admin(binary: &Path, config: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Starts `<binary> --config <config> run`, appending its output to `log`.
/// The daemons' log filter: `TOXMAIL_TEST_LOG` when set (e.g. `info,tox_runtime=debug` to follow
/// transfers in a benchmark or a failing test), else `info,toxcore=warn`.
fn daemon_log_filter() -> String {
    std::env::var("TOXMAIL_TEST_LOG").unwrap_or_else(|_| "info,toxcore=warn".into())
}

pub fn spawn_daemon(binary: &Path, config: &Path, log: &Path) -> Child {
    spawn_daemon_with(binary, config, log, &[])
}

/// [`spawn_daemon`] with more environment variables (`TOXMAIL_LOG_FORMAT`, …).
pub fn spawn_daemon_with(binary: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("TOXMAIL_LOG", daemon_log_filter())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}

#[derive(Debug)]
pub struct Site {
    pub spec: SiteSpec,
    pub dir: PathBuf,
    pub pg: PgServer,
    pub postfix: PostfixSite,
    pub config: PathBuf,
    /// The LMTP port; unused (nothing listens) when `lmtp_socket` is set.
    pub lmtp: SocketAddr,
    /// The LMTP socket, with [`SiteSpec::lmtp_unix`].
    pub lmtp_socket: Option<PathBuf>,
    pub socketmap: SocketAddr,
    /// The Postfix service the bridge injects received mail into (local domains only).
    pub inject: SocketAddr,
    /// The bridge's `/metrics`, `/healthz`, `/readyz` listener.
    pub metrics: SocketAddr,
    pub identities: HashMap<String, ToxId>,
    bridge: Option<Child>,
    /// A second bridge on the same config and database ([`Site::start_second_bridge`]).
    second: Option<Child>,
}

impl Site {
    /// Starts PostgreSQL and Postfix, writes the bridge config, migrates, creates identities.
    /// The bridge itself is started with [`Site::start_bridge`].
    pub fn prepare(root: &Path, spec: SiteSpec, bootstrap: &BootstrapNode) -> Site {
        let dir = root.join(&spec.name);
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PgServer::start().expect("postgres");
        let socketmap: SocketAddr = ([127, 0, 0, 1], free_tcp_port().unwrap()).into();
        let lmtp: SocketAddr = ([127, 0, 0, 1], free_tcp_port().unwrap()).into();
        let milter: Option<SocketAddr> = spec
            .milter
            .as_ref()
            .map(|_| ([127, 0, 0, 1], free_tcp_port().unwrap()).into());
        let mut extra_main_cf = match milter {
            Some(addr) => vec![
                ("smtpd_milters".into(), format!("inet:{addr}")),
                ("milter_default_action".into(), "accept".into()),
                ("milter_protocol".into(), "6".into()),
            ],
            None => Vec::new(),
        };
        extra_main_cf.extend(spec.postfix_main_cf.iter().cloned());
        let key_file = dir.join("bridge.key");
        std::fs::write(&key_file, b"test key file, 32 bytes or more!").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.join("bridge.toml");
        // The bridge injects into the service its own `postfix-config` prints, as an operator
        // would set it up; DSNs go to the site's ordinary smtpd (known once Postfix runs).
        let inject: SocketAddr = ([127, 0, 0, 1], free_tcp_port().unwrap()).into();
        let hops = Hops {
            inject,
            notice: inject,
        };
        let tcp = format!("listen = \"{lmtp}\"");
        let draft = bridge_config(&spec, &dir, &pg, hops, socketmap, &tcp, bootstrap);
        std::fs::write(&config, draft).unwrap();
        let fragment =
            run_admin(&bridge_binary(), &config, &["postfix-config"]).expect("postfix-config");
        let postfix = PostfixSite::start(SiteConfig {
            name: spec.name.clone(),
            domain: spec.domain.clone(),
            mailboxes: spec.mailboxes.clone(),
            transport_maps: Some(format!("socketmap:inet:{socketmap}:transport")),
            relay_sink: spec.relay_sink,
            extra_main_cf,
            extra_master_cf: vec![injection_service(&fragment)],
        })
        .expect("postfix");
        let hops = Hops {
            inject,
            notice: postfix.smtp_addr(),
        };
        let lmtp_socket = spec.lmtp_unix.then(|| {
            let dir = postfix.socket_dir("toxmail").expect("socket dir");
            dir.join("lmtp")
        });
        let lmtp_section = match &lmtp_socket {
            Some(path) => format!(
                "listen = \"unix:{}\"\npostfix_queue_directory = \"{}\"",
                path.display(),
                postfix.queue_dir().display()
            ),
            None => tcp,
        };
        let mut text = bridge_config(&spec, &dir, &pg, hops, socketmap, &lmtp_section, bootstrap);
        if let (Some(addr), Some(policy)) = (milter, &spec.milter) {
            text.push_str(&format!(
                "\n[milter]\nlisten = \"{addr}\"\npolicy = \"{policy}\"\n"
            ));
        }
        let metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port().unwrap()).into();
        text.push_str(&format!("\n[metrics]\nlisten = \"{metrics}\"\n"));
        text.push_str(&spec.extra_sections);
        std::fs::write(&config, text).unwrap();
        let mut site = Site {
            spec,
            dir,
            pg,
            postfix,
            config,
            lmtp,
            lmtp_socket,
            socketmap,
            inject,
            metrics,
            identities: HashMap::new(),
            bridge: None,
            second: None,
        };
        site.admin(&["migrate"]).expect("migrate");
        for address in site.spec.identities.clone() {
            let out = site
                .admin(&["identity", "add", &address])
                .expect("identity add");
            let id = out
                .lines()
                .find_map(|l| l.strip_prefix("Tox ID: "))
                .expect("Tox ID printed")
                .parse()
                .expect("valid Tox ID");
            site.identities.insert(address, id);
        }
        site
    }

    /// GETs `path` from the bridge's metrics listener: (status code, body).
    pub fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        crate::metrics::http_get(self.metrics, path)
    }

    /// Runs an admin subcommand; its stdout, or its stderr as the error.
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        run_admin(&bridge_binary(), &self.config, args)
    }

    /// Starts `toxmail-bridge run` and waits until it says it runs and its LMTP port answers.
    /// (A port answering is not enough: something else may hold it, and the bridge have exited.)
    pub fn start_bridge(&mut self) {
        assert!(self.bridge.is_none(), "bridge already running");
        let before = self.bridge_log().matches("toxmail-bridge running").count();
        let env: &[(&str, &str)] = if self.spec.json_logs {
            &[("TOXMAIL_LOG_FORMAT", "json")]
        } else {
            &[]
        };
        let log = self.dir.join("bridge.log");
        let child = spawn_daemon_with(&bridge_binary(), &self.config, &log, env);
        self.bridge = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let running =
            |site: &Site| site.bridge_log().matches("toxmail-bridge running").count() > before;
        let listening = |site: &Site| match &site.lmtp_socket {
            Some(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            None => std::net::TcpStream::connect(site.lmtp).is_ok(),
        };
        while !running(self) || !listening(self) {
            if let Some(status) = self.bridge.as_mut().unwrap().try_wait().unwrap() {
                panic!("bridge exited: {status}\n{}", self.bridge_log());
            }
            assert!(
                Instant::now() < deadline,
                "bridge not listening\n{}",
                self.bridge_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::assert_logs_libtoxcore("toxmail-bridge", &self.bridge_log());
    }

    /// The process id of the (first) bridge, while it runs.
    pub fn bridge_pid(&self) -> Option<u32> {
        self.bridge.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash.
    pub fn kill_bridge(&mut self) {
        if let Some(mut child) = self.bridge.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop_bridge(&mut self) {
        if let Some(mut child) = self.bridge.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    pub fn bridge_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bridge.log")).unwrap_or_default()
    }

    /// Starts a second `toxmail-bridge run` on the same config, state and database (another
    /// host's bridge, or the same one started twice by mistake), logging to `bridge2.log`, and
    /// waits until it says it is a standby behind the first.
    pub fn start_second_bridge(&mut self) {
        assert!(self.second.is_none(), "second bridge already running");
        let log = self.dir.join("bridge2.log");
        self.second = Some(spawn_daemon(&bridge_binary(), &self.config, &log));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.second_bridge_log().contains("standby") {
            if let Some(status) = self.second.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "second bridge exited: {status}\n{}",
                    self.second_bridge_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "second bridge not a standby\n{}",
                self.second_bridge_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn second_bridge_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bridge2.log")).unwrap_or_default()
    }

    /// SIGKILL to the second bridge.
    pub fn kill_second_bridge(&mut self) {
        if let Some(mut child) = self.second.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many times the identity `id` was told by a relay that its registration holds (the
    /// bridge's "registered with relay" lines name the identity's key: each identity registers
    /// on its own, the default identity too).
    pub fn relay_registrations(&self, id: &ToxId) -> usize {
        let key = format!("key={}", id.public_key());
        self.bridge_log()
            .lines()
            .filter(|l| l.contains("registered with relay") && l.contains(&key))
            .count()
    }

    pub fn address(&self, local: &str) -> String {
        format!("{local}@{}", self.spec.domain)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill_bridge();
        self.kill_second_bridge();
    }
}

/// The master.cf block of the injection service in `postfix-config`'s output.
fn injection_service(fragment: &str) -> String {
    let start = fragment
        .find("# toxmail injection service")
        .unwrap_or_else(|| panic!("no injection service in postfix-config:\n{fragment}"));
    let block = &fragment[start..];
    let end = block.find("\n\n").unwrap_or(block.len());
    block[..end].to_string()
}

/// Where the bridge injects received mail, and where its DSNs go.
#[derive(Clone, Copy)]
struct Hops {
    inject: SocketAddr,
    notice: SocketAddr,
}

fn bridge_config(
    spec: &SiteSpec,
    dir: &Path,
    pg: &PgServer,
    hops: Hops,
    socketmap: SocketAddr,
    lmtp: &str,
    bootstrap: &BootstrapNode,
) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let nameservers = spec
        .nameserver
        .map(|a| format!("\"{a}\""))
        .unwrap_or_default();
    format!(
        r#"[bridge]
hostname = "mx.{domain}"
state_dir = "{state}"
key_file = "{key}"

[database]
url = "{url}"
max_connections = 8

[socketmap]
listen = "{socketmap}"
{nexthop}

[lmtp]
{lmtp}

[resolver]
dns_domains = [{dns}]
nameservers = [{nameservers}]
recipient_delimiter = "+"

[tox]
port_range = [{port_lo}, {port_hi}]
bootstrap = [{{ address = "{boot}", key = "{bootkey}" }}]
{extra_tox}

[queue]
retry_min_secs = 1
retry_max_secs = 5
{extra_queue}

[inbound]
next_hop = "smtp:{inject}"
notice_hop = "smtp:{notice}"
local_domains = ["{domain}"]
"#,
        domain = spec.domain,
        nexthop = spec
            .socketmap_nexthop
            .as_ref()
            .map(|hop| format!("nexthop = {hop:?}"))
            .unwrap_or_default(),
        state = dir.join("state").display(),
        key = dir.join("bridge.key").display(),
        url = pg.url(),
        dns = list(&spec.dns_domains),
        boot = bootstrap.addr,
        bootkey = bootstrap.dht_key,
        inject = hops.inject,
        notice = hops.notice,
        extra_queue = spec.extra_queue,
        extra_tox = spec.extra_tox,
        port_lo = spec
            .tox_ports
            .map_or(tox_runtime::LOOPBACK_PORTS.0, |p| p.0),
        port_hi = spec
            .tox_ports
            .map_or(tox_runtime::LOOPBACK_PORTS.1, |p| p.1),
    )
}
