//! The live demo (README's main job): two mail sites on one machine, each a private PostgreSQL,
//! Postfix and `toxmail-bridge run`. A mail sent through Postfix at site A arrives in bob's Maildir
//! at site B over a private Tox network on 127.0.0.1; every step is narrated. `--keep` keeps the
//! work dir (configs, logs, a copy of each Postfix site and database dump) for inspection.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::dns::DnsServer;
use toxmail_tests::site::{Site, SiteSpec, bridge_binary};
use toxmail_tests::{smtp, wait_for};

/// How long the demo waits for bob's copy to land.
const DELIVERY_SECS: u64 = 120;

type Result<T = ()> = std::result::Result<T, String>;

/// One indented line of narration.
macro_rules! say {
    ($($arg:tt)*) => { println!("   {}", format_args!($($arg)*)) };
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args == ["--keep"];
    if !keep && !args.is_empty() {
        eprintln!("usage: toxmail-demo [--keep]  (--keep: keep the work dir to look at)");
        return ExitCode::from(2);
    }
    let root = tempfile::Builder::new().prefix("toxmail-demo-").tempdir();
    let root = root.expect("create a temp dir");
    println!("toxmail demo: two mail sites on one machine, talking only over loopback");
    println!("work dir: {}", root.path().display());
    let started = Instant::now();
    // A panic in the harness (a service that would not start) ends this task, not the demo; so
    // does Ctrl-C, and dropping the task's future stops every service it had started.
    let mut task = tokio::spawn(run(root.path().to_path_buf(), keep));
    let outcome = tokio::select! {
        outcome = &mut task => outcome,
        _ = tokio::signal::ctrl_c() => {
            task.abort();
            let _ = task.await;
            eprintln!("\ninterrupted: everything stopped");
            return ExitCode::from(130);
        }
    };
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("a service failed to start (see the message above)".to_string()),
    };
    if let Some(e) = &failure {
        eprintln!("\nDEMO FAILED: {e}");
        for log in ["site-a", "site-b"].map(|s| root.path().join(s).join("bridge.log")) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            eprintln!("\n===== {} =====\n{text}", log.display());
        }
    }
    if keep {
        let kept = root.keep();
        println!("\nkept {} for you to look at", kept.display());
    }
    if failure.is_some() {
        return ExitCode::FAILURE;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("\ndemo finished in {secs:.1} s");
    ExitCode::SUCCESS
}

/// Steps 1 to 4 start the services, 5 to 8 are in their own functions, 9 stops everything.
async fn run(root: PathBuf, keep: bool) -> Result {
    step("1. a private Tox network");
    let boot = BootstrapDaemon::start(&root).map_err(|e| format!("tox-bootstrapd: {e}"))?;
    let (addr, key) = (boot.node.addr, boot.node.dht_key);
    say!("tox-bootstrapd on {addr} (DHT key {key})");
    say!("every Tox node here bootstraps from it alone: no public Tox node is ever contacted");

    step("2. site B (b.test): PostgreSQL, Postfix, toxmail-bridge");
    let mut b = Site::prepare(&root, spec("site-b", "b.test", "bob"), &boot.node);
    b.start_bridge();
    describe(&b);
    let bob_id = b.identities["bob@b.test"];
    say!("bob@b.test got a Tox identity; its Tox ID is {bob_id}");
    say!("site B publishes it in DNS: bob._tox.b.test. IN TXT \"v=tox1;id={bob_id}\"");

    step("3. a DNS server on loopback");
    let dns = DnsServer::start(&[("bob._tox.b.test", vec![format!("v=tox1;id={bob_id}")])]);
    let dns = dns.map_err(|e| format!("dnsmasq: {e}"))?;
    let dns_addr = dns.addr();
    say!("dnsmasq on {dns_addr} serves bob._tox.b.test and nothing else");

    step("4. site A (a.test), whose bridge asks that DNS for b.test's Tox records");
    let mut a_spec = spec("site-a", "a.test", "alice");
    a_spec.dns_domains = vec!["b.test".into()];
    a_spec.nameserver = Some(dns_addr);
    a_spec.relay_sink = true;
    // Postfix A runs the bridge's milter: alice hears which of her recipients went the plain way.
    a_spec.milter = Some("warn".into());
    let mut a = Site::prepare(&root, a_spec, &boot.node);
    a.start_bridge();
    describe(&a);
    say!("alice@a.test's Tox ID is {}", a.identities["alice@a.test"]);
    let sink = a.postfix.sink_addr().expect("site A has a sink");
    say!("plain outbound mail goes to an smtp-sink on {sink}, standing in for the Internet");
    say!("Postfix A asks the bridge's milter about each mail (policy \"warn\")");

    let mut result = deliver(&a, &b).await;
    if result.is_ok() {
        result = show_warning(&a).await;
    }
    step("9. stopping everything");
    if keep {
        save_for_inspection(&root, &a, &b);
    }
    a.stop_bridge();
    b.stop_bridge();
    say!("bridges stopped (SIGTERM); now Postfix, PostgreSQL, dnsmasq, tox-bootstrapd");
    drop((a, b, dns, boot));
    say!("all stopped");
    result
}

/// Steps 5 to 7: how Postfix A routes, the SMTP transaction, and what arrived where.
async fn deliver(a: &Site, b: &Site) -> Result {
    step("5. how Postfix A routes recipients");
    let map = format!("socketmap:inet:{}:transport", a.socketmap);
    let config = a.config.display();
    for rcpt in ["bob@b.test", "carol@plain.test"] {
        say!("$ toxmail-bridge --config {config} resolve {rcpt}");
        say!("  {}", a.admin(&["resolve", rcpt])?.trim_end());
        say!("$ postmap -q {rcpt} {map}");
        say!("  {}", postmap(a, rcpt, &map)?);
    }
    say!("so Postfix hands bob's copy to bridge A over LMTP; carol's takes the normal route");

    step("6. alice@a.test sends a mail over SMTP to Postfix A");
    let marker = format!("MARKER-{}", toxmail_protocol::MessageId::random());
    let body = format!("Hello Bob,\n\nthis travelled over Tox. Code word: {marker}\n\nAlice\n");
    let rcpts = ["bob@b.test", "carol@plain.test"];
    let message = smtp::message("alice@a.test", &rcpts, "Hello over Tox", &body);
    let sent = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &rcpts, &message).await;
    let sent = sent.map_err(|e| format!("SMTP to Postfix A: {e}"))?;
    say!("MAIL FROM:<alice@a.test>  {}", sent.mail);
    for (rcpt, reply) in rcpts.iter().zip(&sent.rcpt) {
        say!("RCPT TO:<{rcpt}>  {reply}");
    }
    if let Some(data) = &sent.data {
        say!("DATA  {data}");
    }
    if !sent.accepted() {
        return Err(format!("Postfix A refused the mail: {sent:?}"));
    }
    say!("the body carries the marker {marker}");
    let accepted = Instant::now();

    step("7. delivery");
    say!("bridge A seals bob's copy to his key, queues it, finds bob's Tox ID on the DHT,");
    say!("befriends it and sends the envelope; bridge B opens it and hands it to Postfix B");
    show_queued(a, &marker).await?;
    wait_for_delivery(a, b, accepted).await?;
    show_delivered(a, b, &marker)
}

/// What site A's database holds while bob's copy waits in bridge A's queue.
async fn show_queued(a: &Site, marker: &str) -> Result {
    let mut list = None;
    wait_for(Duration::from_secs(5), || {
        list = bob_in_queue(a);
        list.is_some()
    })
    .await;
    let Some(list) = list else {
        return Ok(()); // delivered already: the queue lists only undelivered copies
    };
    let config = a.config.display();
    say!("$ toxmail-bridge --config {config} queue list");
    list.lines()
        .for_each(|line| say!("  {}", line.replace('\t', "  ")));
    check_database(a, marker, "while bob's copy is queued")
}

/// Bridge A's `queue list` while it lists bob's copy as not delivered (queued, or failed).
fn bob_in_queue(a: &Site) -> Option<String> {
    let list = a.admin(&["queue", "list"]).ok();
    list.filter(|list| list.contains("bob@b.test"))
}

/// A `pg_dump` of the site's database must not contain the marker from the body.
fn check_database(site: &Site, marker: &str, when: &str) -> Result {
    let dump = site.pg.dump();
    let found = dump.windows(marker.len()).any(|w| w == marker.as_bytes());
    let (domain, size) = (&site.spec.domain, dump.len());
    let verdict = if found { "FOUND" } else { "not found" };
    say!("{domain}'s database {when}: pg_dump is {size} bytes; the marker: {verdict}");
    if found {
        return Err(format!("plain text stored in {domain}'s database"));
    }
    Ok(())
}

/// Polls until carol's copy reached the sink, bob's his Maildir, and bridge A got site B's
/// acknowledgement; says when each happened.
async fn wait_for_delivery(a: &Site, b: &Site, sent: Instant) -> Result {
    let (mut plain, mut tox, mut acked) = (false, false, false);
    let done = wait_for(Duration::from_secs(DELIVERY_SECS), || {
        let secs = sent.elapsed().as_secs_f64();
        if !plain && !a.postfix.sink_messages().is_empty() {
            plain = true;
            say!("carol@plain.test: reached the smtp-sink after {secs:.1} s (normal route)");
        }
        if !tox && !maildir_files(b, "bob").is_empty() {
            tox = true;
            say!("bob@b.test: landed in bob's Maildir at site B after {secs:.1} s, over Tox");
        }
        if tox && !acked && bob_in_queue(a).is_none() {
            acked = true;
            say!("bridge A has site B's acknowledgement: bob's copy is marked delivered");
        }
        plain && tox && acked
    });
    if !done.await {
        return Err(format!("no delivery within {DELIVERY_SECS} s"));
    }
    Ok(())
}

/// Postfix's log lines, bob's Maildir file, and the marker's absence from both databases.
fn show_delivered(a: &Site, b: &Site, marker: &str) -> Result {
    let (lmtp, sink) = (a.lmtp, a.postfix.sink_addr().expect("site A has a sink"));
    say!("in the Postfix logs, {lmtp} is bridge A's LMTP, {sink} the smtp-sink:");
    show_maillog("Postfix A", a);
    show_maillog("Postfix B", b);
    let path = maildir_files(b, "bob").pop().ok_or("no mail")?;
    say!("bob's Maildir file: {}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let rule = "-".repeat(72);
    say!("{rule}");
    text.lines().for_each(|line| say!("| {line}"));
    say!("{rule}");
    for needle in ["Received: from tox", "X-Toxmail-Sender-Key:", marker] {
        if !text.contains(needle) {
            return Err(format!("the delivered message lacks {needle:?}"));
        }
    }
    check_database(a, marker, "after delivery")?;
    check_database(b, marker, "after delivery")?;
    say!("the bridges stored only sealed envelopes, and cleared them once delivered");
    Ok(())
}

/// Step 8: the milter's notice to alice, in her own Maildir at site A, naming carol's copy as
/// not end-to-end encrypted.
async fn show_warning(a: &Site) -> Result {
    step("8. alice's warning: one of her recipients was not reached over Tox");
    let arrived = wait_for(Duration::from_secs(30), || {
        !maildir_files(a, "alice").is_empty()
    });
    if !arrived.await {
        return Err("no notice reached alice's Maildir within 30 s".into());
    }
    let path = maildir_files(a, "alice").pop().ok_or("no notice")?;
    say!("the bridge's milter saw bob's and carol's copies take different ways, and sent alice");
    say!("a notice through Postfix A: {}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let rule = "-".repeat(72);
    say!("{rule}");
    text.lines().for_each(|line| say!("| {line}"));
    say!("{rule}");
    if !text.contains("carol@plain.test") || !text.contains("bob@b.test") {
        return Err("the notice does not name both recipients".into());
    }
    Ok(())
}

/// `postmap -q` against the socketmap, as trivial-rewrite asks it; NOTFOUND is an empty answer.
fn postmap(site: &Site, rcpt: &str, map: &str) -> Result<String> {
    let etc = site.postfix.dir().join("etc");
    for _ in 0..10 {
        let mut command = Command::new("postmap");
        command.arg("-c").arg(&etc).args(["-q", rcpt, map]);
        let out = command.output().map_err(|e| format!("postmap: {e}"))?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match out.status.code() {
            Some(0) if answer.starts_with("retry:") => {} // its first DNS lookup is under way
            Some(0) => return Ok(format!("{answer}   (found: a Tox route)")),
            Some(1) => return Ok("(not found: normal routing)".into()),
            _ => return Err(format!("postmap: {}", String::from_utf8_lossy(&out.stderr))),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("the socketmap kept answering retry for {rcpt}"))
}

/// Postfix's own log line per recipient: which transport took it, and the result.
fn show_maillog(name: &str, site: &Site) {
    let log = site.postfix.maillog();
    for line in log.lines().filter(|l| l.contains("status=")) {
        say!("{name}: {}", &line[line.find("to=<").unwrap_or(0)..]);
    }
}

/// Files delivered to a Maildir (in `new/`: no mail client moves them here).
fn maildir_files(site: &Site, local: &str) -> Vec<PathBuf> {
    let new = format!("mail/{}/{local}/new", site.spec.domain);
    let entries = std::fs::read_dir(site.postfix.dir().join(new))
        .into_iter()
        .flatten();
    entries.filter_map(|e| e.ok().map(|e| e.path())).collect()
}

fn spec(name: &str, domain: &str, user: &str) -> SiteSpec {
    SiteSpec {
        name: name.into(),
        domain: domain.into(),
        mailboxes: vec![user.into()],
        identities: vec![format!("{user}@{domain}")],
        ..SiteSpec::default()
    }
}

fn describe(site: &Site) {
    let (pg, smtp) = (site.pg.port(), site.postfix.smtp_addr());
    say!("PostgreSQL on 127.0.0.1:{pg}, Postfix SMTP on {smtp}");
    let (bridge, config) = (bridge_binary(), site.config.display());
    say!("{} --config {config} run", bridge.display());
    say!("  (socketmap on {}, LMTP on {})", site.socketmap, site.lmtp);
}

/// Copies what an operator may want to read out of the Postfix dirs (removed when Postfix
/// stops) into `site-x/postfix/` of the work dir, and dumps each database to `site-x/database.sql`.
fn save_for_inspection(root: &Path, a: &Site, b: &Site) {
    for site in [a, b] {
        let (dir, domain) = (root.join(&site.spec.name), &site.spec.domain);
        let to = dir.join("postfix");
        let _ = std::fs::create_dir_all(&to);
        let entries = ["etc", "mail", "maillog", "sink"].map(|e| site.postfix.dir().join(e));
        let copied = entries.iter().filter(|e| e.exists());
        let _ = Command::new("cp").arg("-a").args(copied).arg(&to).status();
        let _ = std::fs::write(dir.join("database.sql"), site.pg.dump());
        let shown = dir.display();
        say!("kept {domain}'s Postfix files and database dump in {shown}");
    }
}

fn step(title: &str) {
    println!("\n{title}");
}
