//! A private PostgreSQL 15 (Debian package `postgresql`) for tests: its own cluster in a temp dir,
//! on 127.0.0.1 at a free port plus a socket dir inside the temp dir, trust auth, `fsync=on`.
//! Never touches the system's service. Stopped and removed on drop; if the test process dies
//! without dropping it, a guardian shell notices its stdin closing and does the same.
//! Clusters are copied from a template (initdb + database) built once per PostgreSQL version.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

/// Debian's versioned binaries: `/usr/bin/pg_*` are wrappers that pick a cluster.
const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The database `start` creates and `url` names.
pub const DATABASE: &str = "toxmail";
/// Attempts to find a port nobody else grabbed between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;
/// Part of the template cache key: change it when `build_cluster` changes.
const TEMPLATE_FORMAT: u32 = 2;

/// Settings appended to the cluster's `postgresql.auto.conf`; `{sock}` is the socket dir.
const SETTINGS: &str = "\
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock}'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 16MB
max_connections = 40
wal_level = minimal
max_wal_senders = 0
timezone = 'UTC'
logging_collector = off
";

/// Waits for the guardian's stdin to close (the test process ended), then runs its arguments
/// (the stop command) and removes the dir. Ignores the terminal's signals so a Ctrl-C of the
/// test run does not kill it before it cleans up.
const GUARDIAN: &str = "trap '' INT TERM HUP QUIT; read _; \"$@\" >/dev/null 2>&1; rm -rf \"$DIR\"";

/// One running (or deliberately stopped) private server.
#[derive(Debug)]
pub struct PgServer {
    dir: TempDir,
    port: u16,
    /// True when we are root and every server command must run as the `postgres` user.
    as_postgres: bool,
    guardian: Child,
}

impl PgServer {
    /// `start` on a blocking thread, for async tests; panics when the server cannot start.
    pub async fn started() -> PgServer {
        tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("PgServer::start does not panic")
            .expect("start private PostgreSQL")
    }

    /// Creates a cluster holding an empty database `toxmail` (a copy of the template, or initdb
    /// where no template can be cached), starts it and waits until it accepts connections.
    pub fn start() -> io::Result<PgServer> {
        let as_postgres = running_as_root();
        let dir = private_dir("toxmail-pg-", as_postgres)?;
        let guardian = spawn_guardian(dir.path(), as_postgres)?;
        let mut server = PgServer {
            dir,
            port: 0,
            as_postgres,
            guardian,
        };
        let data = server.data_dir();
        match template(as_postgres) {
            Ok(template) => copy_tree(&template.join("data"), &data)?,
            Err(e) => {
                eprintln!("PostgreSQL template unavailable ({e}); building this cluster afresh");
                build_cluster(&data, as_postgres)?;
            }
        }
        let settings = SETTINGS.replace("{sock}", &server.socket_dir().display().to_string());
        let auto_conf = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto_conf)?;
        conf.push_str(&settings);
        std::fs::write(&auto_conf, conf)?;
        server.start_on_free_port()?;
        Ok(server)
    }

    /// A libpq-style connection string for tokio-postgres.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={DATABASE}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket dir, for clients that prefer a UNIX socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Stops the server (fast shutdown: clients are disconnected); the data stays for `restart`.
    pub fn stop(&self) {
        let out = self
            .server_command("pg_ctl")
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(self.data_dir())
            .output()
            .expect("run pg_ctl stop");
        check("pg_ctl stop", out).unwrap();
    }

    /// Starts the stopped server again on the same port and waits until it accepts connections.
    pub fn restart(&self) {
        if let Err(e) = self.pg_ctl_start(self.port) {
            panic!("{e}");
        }
    }

    /// `pg_dump --data-only` of the `toxmail` database: every stored value, for checks that a
    /// secret appears nowhere. `bytea` is rendered in escape format, so printable ASCII stored
    /// in a bytea column appears verbatim (hex output would hide a marker); use ASCII markers.
    pub fn dump(&self) -> Vec<u8> {
        let out = self
            .client_command("pg_dump")
            .env("PGOPTIONS", "-c bytea_output=escape")
            .args(["--data-only", "--dbname", DATABASE])
            .output()
            .expect("run pg_dump");
        check("pg_dump", out).unwrap()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn start_on_free_port(&mut self) -> io::Result<()> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_tcp_port()?;
            match self.pg_ctl_start(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no start attempt")))
    }

    fn pg_ctl_start(&self, port: u16) -> io::Result<()> {
        let out = self
            .server_command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o"])
            .arg(format!("-p {port}"))
            .arg("-l")
            .arg(self.log_file())
            .arg("-D")
            .arg(self.data_dir())
            .output()?;
        check("pg_ctl start", out).map(drop).map_err(|e| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            io::Error::other(format!("{e}\nserver log:\n{}", tail.join("\n")))
        })
    }

    /// A server binary (pg_ctl), run as `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        server_command(self.as_postgres, self.dir.path(), program)
    }

    /// A client binary (pg_dump) connecting over TCP with trust auth.
    fn client_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(Path::new(BIN).join(program));
        clear_pg_env(&mut cmd);
        cmd.stdin(Stdio::null())
            .args(["--no-password", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string());
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // The guardian is for a process that dies without dropping; here we clean up ourselves.
        let _ = self.guardian.kill();
        let _ = self.guardian.wait();
        let _ = self
            .server_command("pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The TempDir field removes the directory after this.
    }
}

/// A pristine cluster (initdb, then the database created) shared by all test processes, in the
/// cargo target dir beside the test binaries: copying it is several times faster than initdb.
/// Built aside and renamed into place, so a cache dir that exists is complete.
fn template(as_postgres: bool) -> io::Result<PathBuf> {
    let version = check(
        "postgres -V",
        Command::new(Path::new(BIN).join("postgres"))
            .arg("-V")
            .output()?,
    )?;
    let mut key = DefaultHasher::new();
    (version, TEMPLATE_FORMAT, as_postgres).hash(&mut key);
    let cache_root = cache_root()?;
    let cache = cache_root.join(format!("toxmail-pg-template-{:016x}", key.finish()));
    if cache.exists() {
        return Ok(cache);
    }
    let build = private_dir("toxmail-pg-build-", as_postgres)?;
    build_cluster(&build.path().join("data"), as_postgres)?;
    let staging = tempfile::Builder::new()
        .prefix(".toxmail-pg-staging-")
        .tempdir_in(&cache_root)?;
    copy_tree(&build.path().join("data"), &staging.path().join("data"))?;
    match std::fs::rename(staging.path(), &cache) {
        Ok(()) => {
            let _ = staging.keep();
        }
        // Another process won the race; its template is as good as ours.
        Err(_) if cache.exists() => {}
        Err(e) => return Err(e),
    }
    Ok(cache)
}

/// `target/<profile>/` for test and bench binaries (which live in its `deps/`), else the
/// binary's own dir. Where that is not writable, `start` falls back to initdb.
fn cache_root() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

/// initdb into `data` (whose parent belongs to the server user), then creates the database in
/// single-user mode, so no server has to start.
fn build_cluster(data: &Path, as_postgres: bool) -> io::Result<()> {
    let work = data.parent().unwrap_or(Path::new("/"));
    // --no-sync and -F only skip flushes while building (a test never survives an OS crash);
    // the running server still fsyncs every commit.
    let out = server_command(as_postgres, work, "initdb")
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--wal-segsize=1", "--no-sync", "--no-instructions", "-D"])
        .arg(data)
        .output()?;
    check("initdb", out)?;
    let mut single = server_command(as_postgres, work, "postgres")
        .args(["--single", "-F", "-D"])
        .arg(data)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = single.stdin.take() {
        writeln!(stdin, "CREATE DATABASE {DATABASE}")?;
    }
    let out = single.wait_with_output()?;
    // Single-user mode reports a failed statement but still exits 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ERROR") {
        return Err(io::Error::other(format!(
            "CREATE DATABASE failed: {stderr}"
        )));
    }
    check("postgres --single", out).map(drop)
}

/// `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A 0700 temp dir with a `sock` dir; owned by `postgres` when we are root (initdb refuses root).
fn private_dir(prefix: &str, as_postgres: bool) -> io::Result<TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    std::fs::create_dir(dir.path().join("sock"))?;
    if as_postgres {
        let out = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .output()?;
        check("chown", out)?;
    }
    Ok(dir)
}

/// `cp -a`: keeps owners (the server user) and the 0700 mode PostgreSQL insists on.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output()?;
    check("cp -a", out).map(drop)
}

fn server_command(as_postgres: bool, cwd: &Path, program: &str) -> Command {
    let mut cmd = as_user(as_postgres, &Path::new(BIN).join(program));
    cmd.current_dir(cwd).stdin(Stdio::null());
    clear_pg_env(&mut cmd);
    cmd
}

pub use crate::ports::free_tcp_port;

fn as_user(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// The caller's libpq variables must not redirect our tools to another server.
fn clear_pg_env(cmd: &mut Command) {
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGDATA",
    ] {
        cmd.env_remove(var);
    }
}

fn spawn_guardian(dir: &Path, as_postgres: bool) -> io::Result<Child> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", GUARDIAN, "toxmail-pg-guardian"]);
    if as_postgres {
        cmd.args(["runuser", "-u", "postgres", "--"]);
    }
    cmd.arg(Path::new(BIN).join("pg_ctl"))
        .args(["stop", "-m", "immediate", "-D"])
        .arg(dir.join("data"))
        .env("DIR", dir)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn check(what: &str, out: Output) -> io::Result<Vec<u8>> {
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn query_text(url: &str, sql: &str) -> Result<String, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one(sql, &[]).await?;
        Ok(row.get(0))
    }

    #[tokio::test]
    async fn pg_server_is_private_durable_restartable_and_removed_on_drop() {
        let server = PgServer::started().await;
        let url = server.url();
        assert_eq!(query_text(&url, "SHOW fsync").await.unwrap(), "on");
        assert_eq!(
            query_text(&url, "SHOW listen_addresses").await.unwrap(),
            "127.0.0.1"
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('MARKER-harness')")
            .await
            .unwrap();
        let dump = server.dump();
        assert!(dump.windows(14).any(|w| w == b"MARKER-harness"));

        server.stop();
        assert!(query_text(&url, "SELECT 'x'").await.is_err());
        server.restart();
        assert_eq!(
            query_text(&url, "SELECT v FROM t").await.unwrap(),
            "MARKER-harness"
        );

        let dir = server.dir.path().to_path_buf();
        drop(server);
        assert!(!dir.exists());
        assert!(query_text(&url, "SELECT 'x'").await.is_err());
    }
}
