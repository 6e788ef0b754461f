//! A private Dovecot LMTP server (Debian package `dovecot-lmtpd`), the anchor the bridge's LMTP
//! ingest is measured against: LMTP only, on 127.0.0.1 at a free port, with its config, runtime
//! files, log and Maildirs in a temp dir. Needs root (like the Postfix harness): Dovecot's master
//! drops to its own users and writes mail as `nobody`. Stopped with `doveadm stop` on drop.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::postgres::free_tcp_port;

/// Maildirs belong to this user; Dovecot refuses to deliver as root.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts to find a port nobody else grabbed between our probe and Dovecot's bind.
const PORT_ATTEMPTS: usize = 4;

/// One running instance. Every recipient `user@anything` gets `<dir>/mail/user/Maildir`.
#[derive(Debug)]
pub struct DovecotLmtp {
    dir: TempDir,
    addr: SocketAddr,
}

impl DovecotLmtp {
    /// Writes the config, starts `dovecot` and returns once its LMTP port greets with a token
    /// unique to this instance.
    pub fn start() -> io::Result<DovecotLmtp> {
        let dir = tempfile::Builder::new().prefix("dovecot-lmtp-").tempdir()?;
        // Dovecot's unprivileged processes and the mail user must walk into it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail)?;
        chown(&mail, Some(MAIL_UID), Some(MAIL_GID))?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let addr: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
            match start_on(dir.path(), addr) {
                Ok(()) => return Ok(DovecotLmtp { dir, addr }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no start attempt")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Removes every mailbox (Dovecot slows down as a Maildir grows); Dovecot creates them
    /// again on the next delivery. Call it between runs, not while a session is delivering.
    pub fn clear_mail(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(self.mail_dir())? {
            std::fs::remove_dir_all(entry?.path())?;
        }
        Ok(())
    }

    /// Messages delivered to `user`'s INBOX (files in `new/` and `cur/`).
    pub fn delivered(&self, user: &str) -> usize {
        let maildir = self.mail_dir().join(user).join("Maildir");
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(maildir.join(sub)).ok())
            .map(|entries| entries.count())
            .sum()
    }

    /// Dovecot's own log, for when something fails.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }
}

impl Drop for DovecotLmtp {
    fn drop(&mut self) {
        stop(self.dir.path());
    }
}

/// Writes the config for `addr` and starts the master; on failure it is stopped again.
fn start_on(dir: &Path, addr: SocketAddr) -> io::Result<()> {
    let token = token(dir);
    std::fs::write(dir.join("dovecot.conf"), config(dir, addr, &token))?;
    // The master daemonises and keeps its inherited stdout/stderr open: never pipe them
    // (waiting for their EOF would hang), send its start-up errors to a file instead.
    let errors = dir.join("start.err");
    let status = dovecot(dir, "dovecot", &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors)?)
        .status()?;
    if !status.success() {
        let text = std::fs::read_to_string(&errors).unwrap_or_default();
        return Err(io::Error::other(format!(
            "dovecot failed ({status}): {text}"
        )));
    }
    match crate::smtp::await_greeting(addr, &token, START_TIMEOUT) {
        Ok(()) => Ok(()),
        Err(e) => {
            stop(dir);
            let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
            let kind = if log.contains("Address already in use") {
                ErrorKind::AddrInUse
            } else {
                e.kind()
            };
            Err(io::Error::new(kind, format!("{e}\ndovecot log:\n{log}")))
        }
    }
}

/// `doveadm stop`, then waits for the master to exit so nothing writes into a removed dir.
fn stop(dir: &Path) {
    let pid = std::fs::read_to_string(dir.join("run/master.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let _ = dovecot(dir, "doveadm", &["stop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A greeting token unique to this dir, so a reused port answering is recognised.
fn token(dir: &Path) -> String {
    let base = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    base.unwrap_or_default().replace(['.', '-'], "")
}

fn dovecot(dir: &Path, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-c").arg(dir.join("dovecot.conf")).args(args);
    cmd
}

/// LMTP only; mail is fsynced before the 250 (`mail_fsync = optimized`, the default).
fn config(dir: &Path, addr: SocketAddr, token: &str) -> String {
    let dir = dir.display();
    let (ip, port) = (addr.ip(), addr.port());
    format!(
        "base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = lmtp
listen = {ip}
ssl = no
hostname = lmtp{token}
mail_location = maildir:{dir}/mail/%n/Maildir
first_valid_uid = {MAIL_UID}
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={dir}/mail/%n
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
  inet_listener lmtp {{
    address = {ip}
    port = {port}
  }}
}}
"
    )
}
