//! The mixed-recipient milter (`smtpd_milters`): a message whose recipients are partly reached
//! over Tox (end-to-end encrypted) and partly by ordinary mail is accepted with a notice to the
//! sender (`warn`), refused at end of data (`reject`), or let through (`allow`).
//!
//! Each recipient is classified from Postfix's `{rcpt_mailer}`/`{rcpt_host}` macros, i.e. the
//! transport our socketmap answered; only without them is the resolver asked, briefly. The milter
//! adds no header (nothing in the message reveals who uses Tox) and never sees bodies.
//! `session.rs` holds the state, `recipients.rs` the decisions, `notice.rs` the texts.
//!
//! Postfix (main.cf):
//! - `smtpd_milters = inet:127.0.0.1:8892`, listed last so that no later milter can refuse a
//!   message after its notice went out. (A unix socket works too, but its path is relative to
//!   the queue directory when smtpd is chrooted.)
//! - `milter_default_action = accept`: a bridge that is down (or hung past Postfix's milter
//!   timeouts) then costs a logged warning, not mail (the default, `tempfail`, answers 451 to
//!   everything while it is down). To keep
//!   other milters' default, set it for this one only:
//!   `smtpd_milters = …, { inet:127.0.0.1:8892, default_action=accept }` (no spaces around `=`).
//! - `milter_protocol = 6` (the default since Postfix 2.6).
//! - `non_smtpd_milters` runs milters inside cleanup for sendmail(1) (webmail, scripts), qmqpd
//!   and `postsuper -r`. Postfix forbids only refusing single (simulated) recipients there, which
//!   this milter never does. Cleanup passes no `{rcpt_mailer}`, so the resolver classifies (the
//!   same answer the socketmap gives, within 500 ms). `warn` works as over SMTP. A `reject` at
//!   end of message cannot reach the author's client: cleanup bounces the message to the sender
//!   with our text as the reason, and `postsuper -r` re-filters queued mail. So with `reject`,
//!   either leave the milter out of `non_smtpd_milters` (sendmail(1) mail then goes unchecked)
//!   or have webmail submit over SMTP, where the refusal is shown at once.

mod notice;
mod recipients;
mod session;

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::time::Duration;

use indymilter::{
    Actions, Callbacks, Context, EitherListener, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, Status,
};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NextHop;
use crate::resolve::Resolver;
use session::{RcptInfo, Session, Shared};

/// Milter connections served at once. Postfix holds one per smtpd process (100 by default) and
/// one per cleanup process; a connection over the limit would wait and delay its mail.
const MAX_CONNECTIONS: usize = 1000;
/// How long shutdown waits for notices still being sent.
const NOTICE_DRAIN: Duration = Duration::from_secs(10);

/// What to do with a message that has both Tox and ordinary recipients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixedPolicy {
    /// Accept, and tell the sender which copies were not end-to-end encrypted.
    #[default]
    Warn,
    /// Refuse the message (550 5.7.1) naming the recipients not reachable over Tox.
    Reject,
    /// Accept silently.
    Allow,
}

#[derive(Clone, Debug)]
pub struct MilterConfig {
    pub policy: MixedPolicy,
    /// The `{rcpt_mailer}` value that means "Tox", e.g. `toxlmtp`; or a whole
    /// `transport:nexthop` such as `lmtp:inet:[127.0.0.1]:2424` when the transport is shared
    /// with local delivery.
    pub tox_transport: String,
    /// Used in the notice's From (`MAILER-DAEMON@hostname`), Message-ID and EHLO.
    pub hostname: String,
    /// Where notices are injected: the local MTA on loopback.
    pub notice_hop: NextHop,
    /// Clients whose mail is a local submission (with SASL-authenticated ones): the only mail
    /// the policy applies to.
    pub submission_networks: Vec<ipnet::IpNet>,
    /// A whole milter message (not one read) must arrive within this long, and the next one
    /// within it too; else the connection is closed. Postfix waits up to `smtpd_timeout` (300 s)
    /// on its SMTP client between commands.
    pub timeout: std::time::Duration,
}

/// Default [`MilterConfig::timeout`].
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Where the milter listens.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Serves Postfix's milter connections until `shutdown`, then waits up to 10 s for notices
/// still being sent.
pub async fn serve(
    listener: Listener,
    config: MilterConfig,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        config,
        resolver,
        notices: TaskTracker::new(),
    });
    let listener = match listener {
        Listener::Tcp(l) => EitherListener::Tcp(l),
        Listener::Unix(l) => EitherListener::Unix(l),
    };
    let milter_config = indymilter::Config {
        max_connections: MAX_CONNECTIONS,
        connection_timeout: shared.config.timeout,
        ..indymilter::Config::default()
    };
    let run = indymilter::run(
        listener,
        callbacks(shared.clone()),
        milter_config,
        shutdown.cancelled(),
    );
    if let Err(e) = run.await {
        tracing::error!(error = %e, "milter stopped accepting connections");
    }
    shared.notices.close();
    if tokio::time::timeout(NOTICE_DRAIN, shared.notices.wait())
        .await
        .is_err()
    {
        tracing::warn!("milter shut down with notices still being sent");
    }
}

/// The edges: each callback unpacks indymilter's context and calls one `Session` method.
fn callbacks(shared: Arc<Shared>) -> Callbacks<Session> {
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            negotiate(cx, &shared, actions, opts);
            Box::pin(async { Status::Continue })
        })
        .on_mail(|cx, args| {
            let sender = args.first().map(|a| lossy(a)).unwrap_or_default();
            let auth = cx.macros.get(c"{auth_authen}").map(lossy);
            let client = cx.macros.get(c"{client_addr}").map(lossy);
            let status = cx.data.as_mut().map_or(Status::Continue, |s| {
                s.mail(&sender, auth.as_deref(), client.as_deref())
            });
            Box::pin(async move { status })
        })
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        .on_header(|cx, name, value| {
            let (name, value) = (lossy(&name), lossy(&value));
            let status = cx.data.as_mut().map(|s| s.header(&name, &value));
            // Without a session nothing was negotiated: a plain Continue is right.
            Box::pin(async move { status.unwrap_or(Status::Continue) })
        })
        .on_eom(|cx| {
            let EomContext {
                data,
                macros,
                reply,
                ..
            } = cx;
            let queue_id = macros.get(c"i").map(lossy);
            let status = data
                .as_mut()
                .map_or(Status::Continue, |s| s.eom(queue_id, reply));
            Box::pin(async move { status })
        })
        .on_abort(|cx| {
            if let Some(session) = cx.data.as_mut() {
                session.abort();
            }
            Box::pin(async { Status::Continue })
        })
}

/// Asks for the macros we read, no message changes, no body, and no replies to headers.
fn negotiate(
    cx: &mut NegotiateContext<Session>,
    shared: &Arc<Shared>,
    actions: Actions,
    opts: ProtoOpts,
) {
    cx.requested_actions = actions & Actions::REQUEST_MACROS;
    // Callbacks we do not register (connect, helo, data, eoh, body, unknown) are already
    // switched off in `requested_opts`; ask only for what this MTA offers.
    let noreply_header = opts.contains(ProtoOpts::NOREPLY_HEADER);
    if noreply_header {
        cx.requested_opts |= ProtoOpts::NOREPLY_HEADER;
    }
    cx.requested_opts &= opts;
    // Postfix replaces all its macro lists with ours: stages not named here get none. The
    // sender comes from MAIL's argument; MAIL's macros tell a submission from other mail.
    let macros: [(MacroStage, &CStr); 3] = [
        (MacroStage::Mail, c"{auth_authen} {client_addr}"),
        (MacroStage::Rcpt, c"{rcpt_mailer} {rcpt_host} {rcpt_addr}"),
        (MacroStage::Eom, c"i"),
    ];
    for (stage, names) in macros {
        cx.requested_macros.insert(stage, names.to_owned());
    }
    cx.data = Some(Session::new(shared.clone(), noreply_header));
}

async fn rcpt(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let Context { data, macros, .. } = cx;
    let Some(session) = data.as_mut() else {
        return Status::Continue;
    };
    let address = macros.get(c"{rcpt_addr}").map(lossy);
    let info = RcptInfo {
        address: address
            .or_else(|| args.first().map(|a| lossy(a)))
            .unwrap_or_default(),
        mailer: macros.get(c"{rcpt_mailer}").map(lossy),
        host: macros.get(c"{rcpt_host}").map(lossy),
    };
    session.rcpt(info).await
}

/// The milter over one in-memory connection, for the fuzz targets in bridge/fuzz: every packet
/// Postfix could send goes through indymilter into the same callbacks and session as in
/// [`serve`], without a socket.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::io;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use indymilter::Listener;
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_util::task::TaskTracker;

    use super::{MilterConfig, Shared, callbacks};
    use crate::resolve::Resolver;

    /// Hands out one connection, then none.
    struct Once<S>(Option<S>);

    impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Listener for Once<S> {
        type Io = S;

        fn poll_accept(&mut self, _: &mut Context<'_>) -> Poll<io::Result<S>> {
            match self.0.take() {
                Some(stream) => Poll::Ready(Ok(stream)),
                None => Poll::Pending,
            }
        }
    }

    /// Serves `stream` as one milter connection until `done` completes (the caller's side of
    /// the stream has seen the end), then waits for the notices it started.
    pub async fn serve_stream<S>(
        stream: S,
        config: MilterConfig,
        resolver: Arc<Resolver>,
        done: impl std::future::Future,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            config,
            resolver,
            notices: TaskTracker::new(),
        });
        let milter_config = indymilter::Config {
            connection_timeout: shared.config.timeout,
            ..indymilter::Config::default()
        };
        let run = indymilter::run(
            Once(Some(stream)),
            callbacks(shared.clone()),
            milter_config,
            done,
        );
        run.await.expect("an in-memory listener does not fail");
        shared.notices.close();
        shared.notices.wait().await;
    }
}

fn lossy(text: &CStr) -> String {
    text.to_string_lossy().into_owned()
}
