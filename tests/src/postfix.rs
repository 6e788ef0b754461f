//! Private Postfix instances for end-to-end tests: one mail site per temp dir, own config, queue and
//! Maildirs, smtpd on a free 127.0.0.1 port, an optional `smtp-sink` catching plain outbound mail.
//! Started with `postfix -c <dir>/etc start` (needs root), stopped and removed on drop.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Debian's master.cf, copied so each site runs the services (and chroot column) the distro ships.
const DISTRO_MASTER_CF: &str = "/etc/postfix/master.cf";
/// Maildirs belong to nobody:nogroup; virtual(8) needs a uid ≥ `virtual_minimum_uid` (100).
const MAILBOX_OWNER: &str = "nobody";
/// Set to keep a site's dir after the test (it is still stopped), for reading logs and queue files.
const KEEP_ENV: &str = "TOXMAIL_KEEP_POSTFIX";
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What one test mail site looks like.
#[derive(Clone, Debug, Default)]
pub struct SiteConfig {
    /// `multi_instance_name` (log lines read `site-a/smtpd[…]`) and part of the dir name.
    pub name: String,
    /// The site's virtual mailbox domain.
    pub domain: String,
    /// Local parts that get a Maildir under `<dir>/mail/<domain>/<local>/`.
    pub mailboxes: Vec<String>,
    /// e.g. `socketmap:inet:127.0.0.1:PORT:transport`; the socketmap may answer
    /// `toxlmtp:inet:[127.0.0.1]:PORT` to use the LMTP service this harness adds to master.cf.
    pub transport_maps: Option<String>,
    /// Plain outbound mail goes to an `smtp-sink` (see [`PostfixSite::sink_messages`]). Without
    /// it, `default_transport = retry:…`: smtpd answers RCPT for foreign domains with 450 4.4.1,
    /// and mail queued some other way (bounces) stays deferred. Nothing ever leaves loopback.
    pub relay_sink: bool,
    /// main.cf settings; a key set here replaces the harness default.
    pub extra_main_cf: Vec<(String, String)>,
    /// Lines appended to master.cf.
    pub extra_master_cf: Vec<String>,
}

impl SiteConfig {
    pub fn new(name: &str, domain: &str, mailboxes: &[&str]) -> SiteConfig {
        SiteConfig {
            name: name.into(),
            domain: domain.into(),
            mailboxes: mailboxes.iter().map(|m| m.to_string()).collect(),
            ..SiteConfig::default()
        }
    }
}

/// A running private Postfix. Drop runs `postfix stop`, waits for master to exit, kills the sink
/// and removes the dir.
#[derive(Debug)]
pub struct PostfixSite {
    cfg: SiteConfig,
    dir: Option<tempfile::TempDir>,
    smtp: SocketAddr,
    sink: Option<(Child, SocketAddr)>,
}

impl PostfixSite {
    /// Starts the site and returns once its smtpd answers with its own greeting. Ports are picked
    /// free and can be taken by a parallel test before Postfix binds them: then it starts afresh.
    pub fn start(cfg: SiteConfig) -> std::io::Result<PostfixSite> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match PostfixSite::start_once(cfg.clone()) {
                Err(e) if e.kind() == ErrorKind::AddrInUse && attempt < 4 => {
                    tracing::warn!(site = %cfg.name, "port clash, restarting: {e}")
                }
                other => return other,
            }
        }
    }

    fn start_once(cfg: SiteConfig) -> std::io::Result<PostfixSite> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("postfix-{}-", cfg.name))
            .tempdir()?;
        // The postfix user (queue, sink) and the mailbox owner must be able to walk into it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let mut site = PostfixSite {
            smtp: ([127, 0, 0, 1], free_tcp_port()?).into(),
            dir: Some(dir),
            sink: None,
            cfg,
        };
        // Every listener greets with a token unique to this dir, so a greeting from another
        // test's process on a reused port is recognised as a clash.
        let token = site.token();
        site.create_layout()?;
        if site.cfg.relay_sink {
            site.start_sink(&token)?;
        }
        let main_cf = site.main_cf(&token);
        std::fs::write(site.etc().join("main.cf"), main_cf)?;
        std::fs::write(site.etc().join("master.cf"), site.master_cf()?)?;
        for file in ["main.cf", "master.cf", "vmailbox"] {
            backdate(&site.etc().join(file))?;
        }
        let out = site.command("postfix", &["start"]).output()?;
        if !out.status.success() {
            let log = site.maillog();
            let clash = log.contains("Address already in use");
            let kind = if clash {
                ErrorKind::AddrInUse
            } else {
                ErrorKind::Other
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(std::io::Error::new(
                kind,
                format!("postfix start: {stderr}\n{log}"),
            ));
        }
        crate::smtp::await_greeting(site.smtp, &token, START_TIMEOUT)?;
        Ok(site)
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
    }

    /// Where smtp-sink listens, when the site has one.
    pub fn sink_addr(&self) -> Option<SocketAddr> {
        self.sink.as_ref().map(|(_, addr)| *addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir lives until drop").path()
    }

    /// The instance's `queue_directory`, where its daemons run.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir().join("queue")
    }

    /// A directory `<queue_directory>/<name>` for a socket Postfix connects to, as an operator
    /// makes it: group postfix, setgid, mode 2750 (owner root here, the bridge's user in production).
    pub fn socket_dir(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.queue_dir().join(name);
        let (_, gid) = user_ids("postfix")?;
        std::fs::create_dir(&dir)?;
        chown(&dir, None, Some(gid))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2750))?;
        Ok(dir)
    }

    /// Files in the mailbox's `new/` and `cur/`, oldest first, as virtual(8) wrote them: with
    /// `Delivered-To:` and `Return-Path:` prepended and LF (not CRLF) line endings.
    pub fn maildir_messages(&self, local: &str) -> Vec<Vec<u8>> {
        let mailbox = self.mailbox(local);
        let mut files = files_in(&mailbox.join("new"));
        files.extend(files_in(&mailbox.join("cur")));
        files.sort();
        files.into_iter().map(|(_, _, bytes)| bytes).collect()
    }

    /// Messages smtp-sink received, oldest first. Each starts with smtp-sink's own headers
    /// (`X-Client-Addr`, `X-Mail-Args`, one `X-Rcpt-Args` per recipient, a `Received:`), then the
    /// message with LF line endings, then an empty line. Files still being written are skipped.
    pub fn sink_messages(&self) -> Vec<Vec<u8>> {
        let mut files = files_in(&self.dir().join("sink"));
        files.sort();
        files
            .into_iter()
            .map(|(_, _, bytes)| bytes)
            .filter(|bytes| bytes.ends_with(b"\n\n"))
            .collect()
    }

    /// The instance's log (`maillog_file`), written by postlogd.
    pub fn maillog(&self) -> String {
        let bytes = std::fs::read(self.dir().join("maillog")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Asks qmgr to retry every deferred message now.
    pub fn flush(&self) {
        self.run("postqueue", &["-f"]);
    }

    /// Queue ids of every message still queued (any queue: incoming, active, deferred, hold).
    pub fn queue_ids(&self) -> Vec<String> {
        let json = self.run("postqueue", &["-j"]);
        json.lines().filter_map(json_queue_id).collect()
    }

    /// Sets one main.cf parameter (`"key = value"`) and reloads. Reload is asynchronous: idle
    /// daemons restart with the new value as they finish, so poll for its effect.
    pub fn postconf(&self, setting: &str) {
        self.run("postconf", &["-e", setting]);
        backdate(&self.etc().join("main.cf")).expect("backdate main.cf");
        self.run("postfix", &["reload"]);
    }

    fn token(&self) -> String {
        let base = self.dir().file_name().expect("temp dir has a name");
        base.to_string_lossy().replace(['.', '-'], "")
    }

    fn etc(&self) -> PathBuf {
        self.dir().join("etc")
    }

    fn mailbox(&self, local: &str) -> PathBuf {
        self.dir().join("mail").join(&self.cfg.domain).join(local)
    }

    /// A Postfix command pointed at this instance.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(self.etc()).args(args);
        cmd
    }

    /// Submits `message` with this instance's own sendmail(1) (`-f sender -- recipients`), as
    /// webmail in sendmail mode and PHP's `mail()` do; pickup(8) then queues it.
    pub fn sendmail(&self, sender: &str, recipients: &[&str], message: &[u8]) {
        self.sendmail_with(sender, &[], recipients, message);
    }

    /// [`PostfixSite::sendmail`] with more options before the recipients (`-N failure`, `-V id`).
    pub fn sendmail_with(
        &self,
        sender: &str,
        options: &[&str],
        recipients: &[&str],
        message: &[u8],
    ) {
        use std::io::Write as _;
        let mut child = Command::new("/usr/sbin/sendmail")
            .env("MAIL_CONFIG", self.etc())
            .args(["-f", sender])
            .args(options)
            .arg("--")
            .args(recipients)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sendmail");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().expect("sendmail");
        assert!(
            out.status.success(),
            "sendmail: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a Postfix command and returns its stdout; panics when it fails (a broken harness).
    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program, args).output();
        let out = out.unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// etc/ and queue/ stay root's (postfix check insists), data/ and sink/ belong to postfix,
    /// the Maildir parents to the mailbox owner. `postfix start` creates the queue subdirs.
    fn create_layout(&self) -> std::io::Result<()> {
        let postfix = Some(user_ids("postfix")?);
        let owner = Some(user_ids(MAILBOX_OWNER)?);
        let subdirs = [
            ("etc", None),
            ("queue", None),
            ("mail", None),
            ("data", postfix),
        ];
        for (sub, ids) in subdirs.into_iter().chain([("sink", postfix)]) {
            mkdir(&self.dir().join(sub), ids)?;
        }
        mkdir(&self.dir().join("mail").join(&self.cfg.domain), owner)?;
        let mut vmailbox = String::new();
        for local in &self.cfg.mailboxes {
            mkdir(&self.mailbox(local), owner)?;
            let domain = &self.cfg.domain;
            vmailbox.push_str(&format!("{local}@{domain} {domain}/{local}/\n"));
        }
        std::fs::write(self.etc().join("vmailbox"), vmailbox)
    }

    fn start_sink(&mut self, token: &str) -> std::io::Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
        let template = self.dir().join("sink").join("%Y%m%d%H%M%S.");
        let log = std::fs::File::create(self.dir().join("sink.log"))?;
        let child = Command::new("smtp-sink")
            .args(["-u", "postfix", "-h", &format!("sink{token}"), "-d"])
            .arg(&template)
            .args([&addr.to_string(), "64"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.sink = Some((child, addr));
        crate::smtp::await_greeting(addr, &format!("sink{token}"), START_TIMEOUT)
    }

    /// The harness defaults, the route for plain mail, then `transport_maps` and the test's own
    /// settings; a key given again replaces the earlier value.
    fn main_cf(&self, token: &str) -> String {
        let (dir, name, domain) = (self.dir().display(), &self.cfg.name, &self.cfg.domain);
        let (uid, gid) = user_ids(MAILBOX_OWNER).unwrap_or((65534, 65534));
        let plain = match &self.sink {
            Some((_, sink)) => format!("relayhost = [{}]:{}", sink.ip(), sink.port()),
            None => "default_transport = retry:4.4.1 this test site has no route out".into(),
        };
        // Without meta_directory and shlib_directory `postfix start` fails silently: its
        // integrity check reads postfix-files there.
        let defaults = format!(
            "compatibility_level = 3.6
            multi_instance_name = {name}
            queue_directory = {dir}/queue
            data_directory = {dir}/data
            meta_directory = /etc/postfix
            shlib_directory = /usr/lib/postfix
            maillog_file = {dir}/maillog
            maillog_file_prefixes = /var, /dev/stdout, {dir}
            myhostname = mx.{domain}
            mydestination = localhost
            smtpd_banner = $myhostname ESMTP {token}
            inet_interfaces = loopback-only
            inet_protocols = ipv4
            mynetworks = 127.0.0.0/8
            smtpd_peername_lookup = no
            alias_maps =
            alias_database =
            virtual_mailbox_domains = {domain}
            virtual_mailbox_base = {dir}/mail
            virtual_mailbox_maps = texthash:{dir}/etc/vmailbox
            virtual_uid_maps = static:{uid}
            virtual_gid_maps = static:{gid}
            recipient_delimiter = +
            smtputf8_enable = no
            enable_long_queue_ids = yes
            queue_run_delay = 1s
            minimal_backoff_time = 2s
            maximal_backoff_time = 10s
            {plain}"
        );
        let mut settings: Vec<(String, String)> = defaults
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let maps = self.cfg.transport_maps.iter();
        let extra = maps.map(|m| ("transport_maps".to_string(), m.clone()));
        for (key, value) in extra.chain(self.cfg.extra_main_cf.iter().cloned()) {
            settings.retain(|(k, _)| *k != key);
            settings.push((key, value));
        }
        settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }

    /// Debian's master.cf with its `smtp inet` listener moved to our port (same columns, so the
    /// same chroot), plus the bridge's LMTP service and the test's own lines.
    fn master_cf(&self) -> std::io::Result<String> {
        let distro = std::fs::read_to_string(DISTRO_MASTER_CF)?;
        let starts = |line: &str, head: &[&str]| {
            line.split_whitespace()
                .take(head.len())
                .eq(head.iter().copied())
        };
        let mut lines: Vec<String> = Vec::new();
        for line in distro.lines() {
            if starts(line, &["smtp", "inet"]) {
                let columns = line.trim_start_matches("smtp").trim_start();
                lines.push(format!("#{line}\n{} {columns}", self.smtp));
            } else {
                lines.push(line.to_string());
            }
        }
        // retry: where a site without a sink routes plain mail; error: for `error:` map answers.
        let services = [&["smtp", "inet"][..], &["error"], &["retry"]];
        if let Some(missing) = services
            .iter()
            .find(|s| !distro.lines().any(|l| starts(l, s)))
        {
            let msg = format!("no {missing:?} service in {DISTRO_MASTER_CF}");
            return Err(std::io::Error::other(msg));
        }
        // The bridge's LMTP listener: a socketmap answer `toxlmtp:inet:[127.0.0.1]:PORT` selects
        // it. XFORWARD gives the bridge Postfix's queue id (IDENT) as an idempotency key.
        lines.push("toxlmtp unix - - n - - lmtp\n  -o lmtp_send_xforward_command=yes".into());
        lines.extend(self.cfg.extra_master_cf.iter().cloned());
        Ok(lines.join("\n") + "\n")
    }

    /// master's pid, from `queue/pid/master.pid` (a right-aligned number).
    fn master_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir().join("queue/pid/master.pid")).ok()?;
        text.trim().parse().ok()
    }
}

impl Drop for PostfixSite {
    fn drop(&mut self) {
        let master = self.master_pid();
        let _ = self
            .command("postfix", &["stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // `postfix stop` only signals master; wait so no daemon writes into a dir being removed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while master.is_some_and(process_alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some((mut child, _)) = self.sink.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take()
            && std::env::var_os(KEEP_ENV).is_some()
        {
            eprintln!("{KEEP_ENV}: kept {}", dir.keep().display());
        }
    }
}

/// Postfix will not read a table or main.cf modified in the last second or two: it polls until the
/// file looks settled (300 ms naps), which made every start ~2 s slower. Files we write are whole.
fn backdate(path: &Path) -> std::io::Result<()> {
    let past = SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(past)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn mkdir(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    std::fs::create_dir(path)?;
    owner.map_or(Ok(()), |(uid, gid)| chown(path, Some(uid), Some(gid)))
}

/// (uid, gid) of a user, from /etc/passwd.
fn user_ids(name: &str) -> std::io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, format!("no user {name}")))
}

/// Files directly in `dir` as (mtime, name, contents); empty when the dir does not exist.
fn files_in(dir: &Path) -> Vec<(SystemTime, PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
            let bytes = std::fs::read(&path).ok()?;
            path.is_file().then_some((modified, path, bytes))
        })
        .collect()
}

/// A process exists and is not a zombie (exited masters are reparented and may stay unreaped).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The `queue_id` of one `postqueue -j` line (one JSON object per message).
fn json_queue_id(line: &str) -> Option<String> {
    let rest = &line[line.find("\"queue_id\"")? + "\"queue_id\"".len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_queue_id_reads_postqueue_lines() {
        let line =
            r#"{"queue_name": "deferred", "queue_id": "4jZQWt221jz1SRs2", "arrival_time": 1}"#;
        assert_eq!(json_queue_id(line).as_deref(), Some("4jZQWt221jz1SRs2"));
        assert_eq!(json_queue_id("Mail queue is empty"), None);
    }
}
