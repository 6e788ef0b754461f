//! A private RabbitMQ broker (Debian package `rabbitmq-server`) for tests: its own node name,
//! AMQP, distribution and epmd ports, data, logs, config and Erlang cookie in a temp dir, listening
//! on 127.0.0.1 only, no plugins. `stop` and `start` again keep its data (durable queues and
//! their messages survive). Dropped: every process it started is killed; if the test process
//! dies without dropping it, a guardian shell does the same.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ports::free_tcp_port;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const EPMD: &str = "/usr/bin/epmd";
/// A broker on a busy 2-core machine takes ~5 s to boot; allow a wide margin.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills the process groups and processes listed in `$DIR/pids` once its stdin closes (the test
/// process ended without dropping the broker), then removes the dir.
const GUARDIAN: &str = "trap '' INT TERM HUP QUIT; read _; \
    for p in $(cat \"$DIR/pids\" 2>/dev/null); do kill -KILL -- -$p $p 2>/dev/null; done; \
    rm -rf \"$DIR\"";

#[derive(Debug)]
pub struct RabbitMq {
    dir: TempDir,
    port: u16,
    dist_port: u16,
    epmd_port: u16,
    node: String,
    epmd: Child,
    /// `rabbitmq-server` (the leader of its own process group, beam.smp inside it).
    server: Option<Child>,
    guardian: Child,
}

impl RabbitMq {
    /// Starts a broker and waits until it answers the AMQP protocol header.
    pub fn start() -> io::Result<RabbitMq> {
        let dir = tempfile::Builder::new()
            .prefix("toxmail-rabbitmq-")
            .tempdir()?;
        let (port, dist_port, epmd_port) = (free_tcp_port()?, free_tcp_port()?, free_tcp_port()?);
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let config = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\n\
             log.console = false\nlog.file.level = info\n"
        );
        std::fs::write(dir.path().join("rabbitmq.conf"), config)?;
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
        // Read instead of /etc/rabbitmq/rabbitmq-env.conf, which could name other ports.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "")?;
        let guardian = Command::new("sh")
            .args(["-c", GUARDIAN, "toxmail-rabbitmq-guardian"])
            .env("DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Our own epmd, in the foreground as our child, so the broker never shares one.
        let epmd = Command::new(EPMD)
            .args(["-port", &epmd_port.to_string()])
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let node = format!("toxmail-{}-{port}@localhost", std::process::id());
        let mut broker = RabbitMq {
            dir,
            port,
            dist_port,
            epmd_port,
            node,
            epmd,
            server: None,
            guardian,
        };
        broker.start_again()?;
        Ok(broker)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (guest may log in over loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the stopped broker on the same ports and data, and waits until it answers AMQP.
    pub fn start_again(&mut self) -> io::Result<()> {
        assert!(self.server.is_none(), "broker already running");
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))?;
        let mut cmd = Command::new(SERVER);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", d.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("rabbitmq.pid"))
            .current_dir(d)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        let child = cmd.spawn()?;
        let pids = format!("{}\n{}\n", child.id(), self.epmd.id());
        std::fs::write(d.join("pids"), pids)?;
        self.server = Some(child);
        while !answers_amqp(self.port) {
            if let Some(status) = self.server.as_mut().unwrap().try_wait()? {
                self.server = None;
                return Err(io::Error::other(format!(
                    "rabbitmq-server exited: {status}\n{}",
                    self.log_tail()
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(io::Error::other(format!(
                    "rabbitmq-server not answering after {START_TIMEOUT:?}\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("rabbitmq {} up in {:?}", self.node, started.elapsed());
        Ok(())
    }

    /// Stops the broker (SIGTERM to its process group: a clean shutdown) and waits until it
    /// exited; its data stays for `start_again`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        signal_group(&child, "TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                signal_group(&child, "KILL");
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // beam.smp may outlive the script by a moment; the port must be closed before we return.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for file in [self.dir.path().join("server.log"), self.log_file()] {
            let log = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str(&format!("== {}\n", file.display()));
            text.extend(lines.into_iter().rev().map(|l| format!("{l}\n")));
        }
        text
    }

    fn log_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node))
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            signal_group(&child, "KILL");
            let _ = child.wait();
        }
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
        let _ = self.guardian.kill();
        let _ = self.guardian.wait();
    }
}

/// Sends `signal` to the process group `child` leads (the script, beam.smp and its helpers).
fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{}", child.id()))
        .stderr(Stdio::null())
        .status();
}

/// True when something on `port` answers the AMQP 0-9-1 header with a connection.start frame.
fn answers_amqp(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut frame = [0u8; 7];
    // Frame type 1 (method) on channel 0.
    stream.read_exact(&mut frame).is_ok() && frame[0] == 1 && frame[1..3] == [0, 0]
}
