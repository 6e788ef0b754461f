//! The mixed-recipient milter behind a real, private Postfix (`toxmail_tests::postfix`, needs
//! root; run inside `unshare -n` with `lo` up). Instead of a bridge, a static `texthash:`
//! transport map routes bob@b.test and carol@b.test to `toxlmtp:inet:[127.0.0.1]:<dead port>`,
//! which is what our socketmap answers for Tox recipients, so Postfix hands the milter
//! `{rcpt_mailer}=toxlmtp` for them; their copies stay deferred. dave@ and erin@plain.test are
//! relayed to smtp-sink; alice@a.test is a local Maildir, so notices can be read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_parser::{Message, MessageParser};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use toxmail_bridge::config::NextHop;
use toxmail_bridge::postfix::milter::{Listener, MilterConfig, MixedPolicy, serve};
use toxmail_bridge::resolve::{Directory, Resolver, ResolverConfig};
use toxmail_protocol::{PublicKey, ToxId};
use toxmail_tests::postfix::{PostfixSite, SiteConfig};
use toxmail_tests::{smtp, wait_for};

const DELIVERY: Duration = Duration::from_secs(20);
/// How long a notice that should not come is waited for, once the message was handled.
const NO_NOTICE: Duration = Duration::from_secs(2);
const ALICE: &str = "alice@a.test";
const MIXED: [&str; 2] = ["bob@b.test", "dave@plain.test"];

#[derive(Clone, Copy, Debug, Default)]
struct Setup {
    /// The milter's policy; `None`: no milter listens (Postfix's default action applies).
    policy: Option<MixedPolicy>,
    /// `tox_transport` is the whole `toxlmtp:inet:[127.0.0.1]:PORT`, as a site whose socketmap
    /// answers with a transport shared with local delivery would set it.
    match_nexthop: bool,
    /// Also `non_smtpd_milters = $smtpd_milters` (sendmail(1) submissions).
    non_smtpd: bool,
    /// `default_action=accept` for this milter only (`{ inet:…, default_action=accept }`)
    /// instead of the global `milter_default_action = accept`.
    per_milter_default: bool,
    /// The test's client (127.0.0.1) is outside `submission_networks`: mail from elsewhere.
    outside: bool,
}

impl Setup {
    fn policy(policy: MixedPolicy) -> Setup {
        Setup {
            policy: Some(policy),
            ..Setup::default()
        }
    }
}

/// A Postfix site whose `smtpd_milters` is our milter (when `policy` is given), or a dead port.
struct Fixture {
    site: PostfixSite,
    shutdown: CancellationToken,
    milter: Option<JoinHandle<()>>,
    _maps: tempfile::TempDir,
}

impl Fixture {
    async fn start(name: &str, setup: Setup) -> Fixture {
        toxmail_tests::init_logging();
        let (maps, tox_nexthop) = transport_map();
        // Served before Postfix starts: smtpd talks to its milters before it greets.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let milter_addr = listener.local_addr().unwrap();
        // Notices go to a second smtpd of the site, on a port known before it starts.
        let notice_addr = free_port();
        let shutdown = CancellationToken::new();
        let milter = setup.policy.map(|policy| {
            let config = MilterConfig {
                policy,
                tox_transport: match setup.match_nexthop {
                    true => tox_nexthop,
                    false => "toxlmtp".into(),
                },
                hostname: "mx.a.test".into(),
                notice_hop: NextHop {
                    lmtp: false,
                    addr: notice_addr,
                },
                submission_networks: vec![match setup.outside {
                    true => "127.0.0.2/32".parse().unwrap(),
                    false => "127.0.0.0/8".parse().unwrap(),
                }],
                timeout: toxmail_bridge::postfix::milter::DEFAULT_TIMEOUT,
            };
            let listener = Listener::Tcp(listener);
            tokio::spawn(serve(listener, config, tox_contacts(), shutdown.clone()))
        });
        let cfg = site_config(name, setup, &maps, milter_addr, notice_addr);
        let site = tokio::task::spawn_blocking(move || PostfixSite::start(cfg));
        let site = site.await.unwrap().expect("postfix site starts");
        let _maps = maps;
        Fixture {
            site,
            shutdown,
            milter,
            _maps,
        }
    }

    async fn send(&self, from: &str, to: &[&str]) -> (smtp::SmtpOutcome, Vec<u8>) {
        let message = smtp::message(
            if from.is_empty() { ALICE } else { from },
            to,
            "hello",
            "Hi all.\n",
        );
        let outcome = smtp::send(self.site.smtp_addr(), from, to, &message)
            .await
            .unwrap();
        (outcome, message)
    }

    /// Waits until `cond` holds for the site; fails with its log.
    async fn await_site(&self, mut cond: impl FnMut(&PostfixSite) -> bool) {
        let site = &self.site;
        let held = wait_for(DELIVERY, || cond(site)).await;
        assert!(held, "{}", site.maillog());
    }

    async fn await_sink(&self, n: usize) {
        self.await_site(|site| site.sink_messages().len() == n)
            .await;
    }

    async fn await_alice(&self, n: usize) -> Vec<Vec<u8>> {
        self.await_site(|site| site.maildir_messages("alice").len() == n)
            .await;
        self.site.maildir_messages("alice")
    }

    /// No notice reaches alice, and Postfix never saw one.
    async fn assert_no_notice(&self) {
        let site = &self.site;
        let arrived = wait_for(NO_NOTICE, || !site.maildir_messages("alice").is_empty()).await;
        assert!(!arrived, "unexpected notice");
        assert!(
            !site.maillog().contains("toxmail-notice"),
            "{}",
            site.maillog()
        );
    }

    /// Postfix talked to the milter without complaint (not silently skipped by default_action).
    fn assert_milter_healthy(&self) {
        let log = self.site.maillog();
        let complaints: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("warning") && l.to_lowercase().contains("milter"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:#?}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        if let Some(milter) = self.milter {
            tokio::time::timeout(DELIVERY, milter)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

/// Site a.test with the transport map, smtp-sink, our milter and a second smtpd for notices.
fn site_config(
    name: &str,
    setup: Setup,
    maps: &tempfile::TempDir,
    milter: SocketAddr,
    notices: SocketAddr,
) -> SiteConfig {
    let mut cfg = SiteConfig::new(name, "a.test", &["alice"]);
    cfg.relay_sink = true;
    let map = maps.path().join("transport");
    cfg.transport_maps = Some(format!("texthash:{}", map.display()));
    let (milters, default_action) = match setup.per_milter_default {
        true => (
            format!("{{ inet:{milter}, default_action=accept }}"),
            "tempfail",
        ),
        false => (format!("inet:{milter}"), "accept"),
    };
    cfg.extra_main_cf = vec![
        ("smtpd_milters".into(), milters),
        ("milter_default_action".into(), default_action.into()),
        ("milter_protocol".into(), "6".into()),
    ];
    if setup.non_smtpd {
        let setting = ("non_smtpd_milters".into(), "$smtpd_milters".into());
        cfg.extra_main_cf.push(setting);
    }
    cfg.extra_master_cf = vec![format!("{notices} inet n - y - - smtpd")];
    cfg
}

/// A resolver that knows bob and carol as Tox contacts, as the bridge's would. Postfix's
/// smtpd hands the milter `{rcpt_mailer}`, so only cleanup (`non_smtpd_milters`), which does
/// not, makes the milter ask it.
fn tox_contacts() -> Arc<Resolver> {
    let resolver = Resolver::new(ResolverConfig::default());
    let peer = ToxId::new(PublicKey([7; 32]), 1);
    let contacts = ["bob@b.test", "carol@b.test"].map(|a| (a.to_string(), peer));
    resolver.set_directory(Directory {
        contacts: contacts.into_iter().collect(),
        local: Default::default(),
    });
    Arc::new(resolver)
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `<dir>/transport`: the Tox recipients routed as the bridge's socketmap would route them.
fn transport_map() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hop = format!("toxlmtp:inet:[127.0.0.1]:{}", free_port().port());
    let map = format!("bob@b.test {hop}\ncarol@b.test {hop}\n");
    std::fs::write(dir.path().join("transport"), map).unwrap();
    (dir, hop)
}

fn parse(bytes: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(bytes)
        .expect("parsable message")
}

/// Header lines of an smtp-sink file, without smtp-sink's own (`X-Rcpt-Args:` and the like).
fn sink_headers(sunk: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(sunk);
    let head = text.split("\n\n").next().unwrap_or_default();
    let own = ["X-Rcpt-Args:", "X-Mail-Args:", "X-Client-Addr:"];
    let theirs = |l: &&str| !own.iter().any(|o| l.starts_with(o));
    head.lines().filter(theirs).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_with_warn_policy_are_accepted_and_the_sender_notified_once() {
    let f = Fixture::start("milter-warn", Setup::policy(MixedPolicy::Warn)).await;
    let (outcome, original) = f.send(ALICE, &MIXED).await;
    assert!(outcome.accepted(), "{outcome:?}");
    assert_eq!(outcome.rcpt_codes(), [250, 250]);

    let notices = f.await_alice(1).await;
    let notice = parse(&notices[0]);
    let original = parse(&original);
    assert_eq!(notice.header_raw("Return-Path").map(str::trim), Some("<>"));
    let auto = notice.header("Auto-Submitted").and_then(|h| h.as_text());
    assert_eq!(auto, Some("auto-replied"));
    assert_eq!(notice.in_reply_to().as_text(), original.message_id());
    assert!(notice.subject().unwrap().contains("end-to-end encrypted"));
    let from = notice
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address());
    assert_eq!(from, Some("MAILER-DAEMON@mx.a.test"));
    let body = notice.body_text(0).unwrap();
    let tox = body.find("over Tox").unwrap();
    let plain = body.find("ordinary mail").unwrap();
    let (bob, dave) = (
        body.find("bob@b.test").unwrap(),
        body.find("dave@plain.test").unwrap(),
    );
    assert!(tox < bob && bob < plain && plain < dave, "{body}");

    f.await_sink(1).await;
    let site = &f.site;
    let headers = sink_headers(&site.sink_messages()[0]);
    assert!(
        headers.iter().any(|h| h.starts_with("Subject: hello")),
        "{headers:#?}"
    );
    let leaks: Vec<&String> = headers
        .iter()
        .filter(|h| h.to_lowercase().contains("tox"))
        .collect();
    assert!(leaks.is_empty(), "{leaks:#?}");

    // Exactly one notice, and it did not trigger another (it comes from <>).
    assert!(!wait_for(NO_NOTICE, || site.maildir_messages("alice").len() > 1).await);
    assert_eq!(
        site.maillog().matches("toxmail-notice").count(),
        1,
        "{}",
        site.maillog()
    );
    f.assert_milter_healthy();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_with_reject_policy_are_refused_at_end_of_data() {
    let setup = Setup {
        match_nexthop: true,
        ..Setup::policy(MixedPolicy::Reject)
    };
    let f = Fixture::start("milter-reject", setup).await;
    let rcpts = ["bob@b.test", "dave@plain.test", "erin@plain.test"];
    let (outcome, _) = f.send(ALICE, &rcpts).await;
    assert_eq!(outcome.rcpt_codes(), [250, 250, 250]);
    let reply = outcome.data.clone().expect("DATA was sent");
    assert_eq!(reply.code, 550, "{outcome:?}");
    assert_eq!(
        reply.text,
        "5.7.1 recipients dave@plain.test, erin@plain.test are not reachable over Tox; \
         send to them separately"
    );
    let site = &f.site;
    assert!(
        site.queue_ids().is_empty(),
        "a refused message is never queued"
    );
    assert!(site.sink_messages().is_empty());
    f.assert_no_notice().await;

    // The same sender's single-kind messages still pass.
    let (outcome, _) = f.send(ALICE, &["dave@plain.test"]).await;
    assert!(outcome.accepted(), "{outcome:?}");
    f.await_sink(1).await;
    f.assert_milter_healthy();
    f.stop().await;
}

/// Issue 8: mail that is not a local submission (here: a client outside `submission_networks`,
/// not authenticated) is neither refused nor answered with a notice, under any policy: its
/// sender is forgeable, and either would tell a stranger which recipients use Tox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_from_outside_the_submission_networks_get_no_notice_or_refusal() {
    let setup = Setup {
        outside: true,
        ..Setup::policy(MixedPolicy::Reject)
    };
    let f = Fixture::start("milter-outside", setup).await;
    let (outcome, _) = f.send(ALICE, &MIXED).await;
    assert!(outcome.accepted(), "not refused: {outcome:?}");
    f.await_sink(1).await;
    f.assert_no_notice().await;
    f.assert_milter_healthy();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_with_allow_policy_get_no_notice() {
    let f = Fixture::start("milter-allow", Setup::policy(MixedPolicy::Allow)).await;
    let (outcome, _) = f.send(ALICE, &MIXED).await;
    assert!(outcome.accepted(), "{outcome:?}");
    f.await_sink(1).await;
    f.assert_no_notice().await;
    f.assert_milter_healthy();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_plain_or_all_tox_recipients_get_no_notice() {
    let f = Fixture::start("milter-single", Setup::policy(MixedPolicy::Warn)).await;
    let (outcome, _) = f.send(ALICE, &["dave@plain.test", "erin@plain.test"]).await;
    assert!(outcome.accepted(), "{outcome:?}");
    f.await_sink(1).await;
    let (outcome, _) = f.send(ALICE, &["bob@b.test", "carol@b.test"]).await;
    assert!(outcome.accepted(), "{outcome:?}");
    // qmgr tried the Tox copies (to a dead port), so the milter had its say long ago.
    f.await_site(|site| site.maillog().contains("to=<carol@b.test>"))
        .await;
    f.assert_no_notice().await;
    f.assert_milter_healthy();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_recipients_from_the_null_sender_get_no_notice() {
    let f = Fixture::start("milter-null", Setup::policy(MixedPolicy::Warn)).await;
    let (outcome, _) = f.send("", &MIXED).await;
    assert!(outcome.accepted(), "{outcome:?}");
    f.await_sink(1).await;
    f.assert_no_notice().await;
    f.assert_milter_healthy();
    f.stop().await;
}

/// Postfix's behaviour, documented by test: with `milter_default_action = accept`, or
/// `default_action=accept` for our milter only, a milter that is not running costs a logged
/// warning, not mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milter_down_with_default_action_accept_still_delivers() {
    let per_milter = Setup {
        per_milter_default: true,
        ..Setup::default()
    };
    for (name, setup) in [
        ("milter-down", Setup::default()),
        ("milter-down-own", per_milter),
    ] {
        let f = Fixture::start(name, setup).await;
        let (outcome, _) = f.send(ALICE, &["dave@plain.test"]).await;
        assert!(outcome.accepted(), "{outcome:?}");
        let (outcome, _) = f.send(ALICE, &MIXED).await;
        assert!(outcome.accepted(), "{outcome:?}");
        f.await_sink(2).await;
        let log = f.site.maillog();
        assert!(
            log.contains("connect to Milter service inet:127.0.0.1:"),
            "{log}"
        );
        f.assert_no_notice().await;
        f.stop().await;
    }
}

/// Submits with the site's sendmail(1) (postdrop → pickup → cleanup).
fn sendmail(site: &PostfixSite, from: &str, to: &[&str], message: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("sendmail")
        .arg("-C")
        .arg(site.dir().join("etc"))
        .args(["-f", from, "-i", "--"])
        .args(to)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    assert!(child.wait().unwrap().success());
}

/// sendmail(1) mail passes `non_smtpd_milters` inside cleanup, which gives the milter no
/// `{rcpt_mailer}`: the resolver classifies, and the notice still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_submission_with_warn_policy_is_classified_by_the_resolver() {
    let setup = Setup {
        non_smtpd: true,
        ..Setup::policy(MixedPolicy::Warn)
    };
    let f = Fixture::start("milter-pickup-warn", setup).await;
    let message = smtp::message(ALICE, &MIXED, "hello", "Hi all.\n");
    sendmail(&f.site, ALICE, &MIXED, &message);
    let notices = f.await_alice(1).await;
    let notice = parse(&notices[0]);
    assert_eq!(notice.in_reply_to().as_text(), parse(&message).message_id());
    f.await_sink(1).await;
    f.assert_milter_healthy();
    f.stop().await;
}

/// Under `reject`, a sendmail(1) submission cannot be refused to its author's client: Postfix
/// bounces it to the sender with our text as the reason, and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_submission_with_reject_policy_bounces_to_the_sender() {
    let setup = Setup {
        non_smtpd: true,
        ..Setup::policy(MixedPolicy::Reject)
    };
    let f = Fixture::start("milter-pickup-reject", setup).await;
    let message = smtp::message(ALICE, &MIXED, "hello", "Hi all.\n");
    sendmail(&f.site, ALICE, &MIXED, &message);
    let bounce = String::from_utf8_lossy(&f.await_alice(1).await[0]).into_owned();
    let site = &f.site;
    assert!(bounce.starts_with("Return-Path: <>"), "{bounce}");
    assert!(bounce.contains("Status: 5.7.1"), "{bounce}");
    assert!(
        bounce.contains("recipient dave@plain.test is not reachable over"),
        "{bounce}"
    );
    assert!(site.maillog().contains("milter-reject: END-OF-MESSAGE"));
    assert!(site.sink_messages().is_empty());
    assert!(!site.maillog().contains("toxmail-notice"));
    f.assert_milter_healthy();
    f.stop().await;
}

/// Issue 8: a milter client that drips a message byte by byte is closed once the whole message
/// is late, however regularly its bytes come; a well-behaved one on the same server is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_milter_client_dripping_a_message_is_closed_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = MilterConfig {
        policy: MixedPolicy::Warn,
        tox_transport: "toxlmtp".into(),
        hostname: "mx.a.test".into(),
        notice_hop: NextHop {
            lmtp: false,
            addr: free_port(),
        },
        submission_networks: vec!["127.0.0.0/8".parse().unwrap()],
        timeout: Duration::from_secs(2),
    };
    let server = tokio::spawn(serve(
        Listener::Tcp(listener),
        config,
        tox_contacts(),
        shutdown.clone(),
    ));
    // SMFIC_OPTNEG: length 13, 'O', version 6, all actions, all protocol steps; dripped.
    let mut optneg = vec![0, 0, 0, 13, b'O'];
    optneg.extend_from_slice(&6u32.to_be_bytes());
    optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
    optneg.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    let mut drip = tokio::net::TcpStream::connect(addr).await.unwrap();
    // All but the last byte, one every 200 ms: 3.2 s for a message due within 2 s.
    for b in &optneg[..optneg.len() - 1] {
        if drip.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), drip.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "connection still open");
    assert!(
        rest.is_empty(),
        "a dripped negotiation was answered: {rest:?}"
    );

    // A client that sends its negotiation whole is answered.
    let mut good = tokio::net::TcpStream::connect(addr).await.unwrap();
    good.write_all(&optneg).await.unwrap();
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), good.read_exact(&mut head))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(head[4], b'O', "option negotiation answered");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
}
