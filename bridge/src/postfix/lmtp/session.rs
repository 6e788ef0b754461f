//! The LMTP state machine: connection state (LHLO, pending XFORWARD attributes) and transaction
//! state (MAIL .. final dot) as separate structs. It decides every reply; the connection driver
//! only moves bytes.

use std::sync::Arc;

use tracing::{Instrument, debug, info, info_span, warn};

use super::codec::Body;
use super::command::{Command, XAttr};
use super::{Intake, LmtpConfig, Transaction};
use crate::dsn_request::{MailDsn, RcptDsn};
use crate::reply::{Failure, Reply};
use toxmail_protocol::Extensions;

/// What the driver does after a command.
#[derive(Debug)]
pub enum Outcome {
    Reply(Reply),
    /// Send the 354 and read a message body.
    StartData(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
}

/// Lives as long as the connection.
#[derive(Debug, Default)]
struct ConnectionState {
    lhlo_seen: bool,
    /// XFORWARD values for the next transaction, indexed like `XAttr::ALL`.
    xforward: [Option<String>; XAttr::ALL.len()],
}

impl ConnectionState {
    fn xforward(&self, attr: XAttr) -> Option<&str> {
        self.xforward[attr.index()].as_deref()
    }
}

/// Lives from MAIL to the final dot, RSET or LHLO.
#[derive(Debug)]
struct TransactionState {
    mail_from: String,
    /// Accepted recipients in RCPT order; duplicates stay, each gets its own reply.
    recipients: Vec<String>,
    /// XFORWARD IDENT: the Postfix queue id.
    ident: Option<String>,
    /// RET and ENVID of MAIL.
    dsn: MailDsn,
    /// NOTIFY and ORCPT of each accepted recipient, in the order of `recipients`.
    recipient_dsn: Vec<RcptDsn>,
    /// MAIL's SMTPUTF8 and BODY=.
    extensions: Extensions,
}

/// One connection's LMTP state machine.
#[derive(Debug)]
pub struct Session<I> {
    config: Arc<LmtpConfig>,
    intake: Arc<I>,
    conn: ConnectionState,
    tx: Option<TransactionState>,
}

/// The intake's replies, or 451 for all if it broke the one-reply-per-recipient contract.
fn checked(replies: Vec<Reply>, count: usize, size: usize) -> Vec<Reply> {
    if replies.len() != count {
        let got = replies.len();
        warn!(got, count, "intake returned the wrong number of replies");
        return vec![Failure::LocalError("reply count mismatch".into()).reply(); count];
    }
    let accepted = replies.iter().filter(|r| r.is_success()).count();
    info!(
        size,
        accepted,
        refused = count - accepted,
        "message handled"
    );
    replies
}

/// A non-ASCII address only in a transaction that gave SMTPUTF8 (RFC 6531 §3.4).
fn utf8_allowed(address: &str, extensions: &Extensions) -> Result<(), Failure> {
    if address.is_ascii() || extensions.smtputf8 {
        Ok(())
    } else {
        Err(Failure::NeedsSmtputf8)
    }
}

fn sequence(hint: &str) -> Reply {
    Failure::BadSequence(hint.to_string()).reply()
}

impl<I: Intake> Session<I> {
    pub fn new(config: Arc<LmtpConfig>, intake: Arc<I>) -> Self {
        Session {
            config,
            intake,
            conn: ConnectionState::default(),
            tx: None,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.config.hostname)
    }

    /// One command line, parsed or refused by the parser.
    pub async fn on_command(&mut self, parsed: Result<Command, Failure>) -> Outcome {
        let command = match parsed {
            Ok(command) => command,
            Err(failure) => return Outcome::Reply(self.refuse(failure)),
        };
        let reply = match command {
            Command::Lhlo => self.lhlo(),
            Command::Helo => self.refuse(Failure::NotLmtp),
            Command::Mail {
                from,
                size,
                dsn,
                extensions,
            } => self.mail(from, size, dsn, extensions),
            Command::Rcpt { to, dsn } => self.rcpt(to, dsn).await,
            Command::Data => return self.data(),
            Command::Rset => {
                self.end_transaction();
                Reply::done()
            }
            Command::Noop => Reply::done(),
            Command::Quit => return Outcome::Close(Reply::closing()),
            Command::Vrfy => Reply::cannot_verify(),
            Command::Xforward(attrs) => self.xforward(attrs),
        };
        Outcome::Reply(reply)
    }

    fn refuse(&self, failure: Failure) -> Reply {
        debug!(%failure, "command refused");
        failure.reply()
    }

    fn lhlo(&mut self) -> Reply {
        self.end_transaction();
        self.conn.lhlo_seen = true;
        let xforward: Vec<&str> = XAttr::ALL.iter().map(|a| a.keyword()).collect();
        let extensions = [
            "PIPELINING".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "DSN".to_string(),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            format!("SIZE {}", self.config.max_message_size),
            format!("XFORWARD {}", xforward.join(" ")),
        ];
        Reply::lhlo(&self.config.hostname, &extensions)
    }

    fn mail(
        &mut self,
        from: String,
        size: Option<u64>,
        dsn: MailDsn,
        extensions: Extensions,
    ) -> Reply {
        if !self.conn.lhlo_seen {
            return sequence("send LHLO first");
        }
        if self.tx.is_some() {
            return sequence("nested MAIL command");
        }
        let limit = self.config.max_message_size;
        if size.is_some_and(|size| size > limit) {
            return self.refuse(Failure::MessageTooBig { limit });
        }
        if let Err(failure) = utf8_allowed(&from, &extensions) {
            return self.refuse(failure);
        }
        let ident = self.conn.xforward(XAttr::Ident).map(str::to_string);
        debug!(
            ident = ident.as_deref().unwrap_or("-"),
            "transaction started"
        );
        self.tx = Some(TransactionState {
            mail_from: from,
            recipients: Vec::new(),
            ident,
            dsn,
            recipient_dsn: Vec::new(),
            extensions,
        });
        Reply::sender_ok()
    }

    async fn rcpt(&mut self, to: String, dsn: RcptDsn) -> Reply {
        let Some(tx) = &mut self.tx else {
            return sequence("need MAIL command");
        };
        if tx.recipients.len() >= self.config.max_recipients {
            return Failure::TooManyRecipients.reply();
        }
        if let Err(failure) = utf8_allowed(&to, &tx.extensions) {
            debug!(%failure, "recipient refused");
            return failure.reply();
        }
        match self.intake.check_recipient(&tx.mail_from, &to).await {
            Ok(()) => {
                tx.recipients.push(to);
                tx.recipient_dsn.push(dsn);
                Reply::recipient_ok()
            }
            Err(failure) => {
                info!(%failure, "recipient refused");
                let reply = failure.reply();
                crate::metrics::LMTP_RECIPIENTS
                    .with_label_values(&[crate::metrics::reply_result(&reply)])
                    .inc();
                reply
            }
        }
    }

    fn data(&mut self) -> Outcome {
        let reply = match &self.tx {
            None => sequence("need MAIL command"),
            Some(tx) if tx.recipients.is_empty() => sequence("no valid recipients"),
            Some(_) => return Outcome::StartData(Reply::start_data()),
        };
        Outcome::Reply(reply)
    }

    fn xforward(&mut self, attrs: Vec<(XAttr, Option<String>)>) -> Reply {
        if !self.conn.lhlo_seen {
            return sequence("send LHLO first");
        }
        if self.tx.is_some() {
            return sequence("XFORWARD inside a mail transaction");
        }
        for (attr, value) in attrs {
            self.conn.xforward[attr.index()] = value;
        }
        Reply::done()
    }

    /// The body after its final dot: one reply per accepted recipient, in RCPT order.
    pub async fn on_body(&mut self, body: Body) -> Vec<Reply> {
        let Some(tx) = self.tx.take() else {
            // The driver reads a body only after `StartData`, which needs a transaction.
            return vec![Failure::LocalError("body without transaction".into()).reply()];
        };
        self.end_transaction();
        let count = tx.recipients.len();
        let ident = tx.ident.clone().unwrap_or_else(|| "-".into());
        let span = info_span!("message", queue_id = %ident, recipients = count);
        let data = match body {
            Body::Complete(data) => data,
            Body::TooBig => {
                let failure = Failure::MessageTooBig {
                    limit: self.config.max_message_size,
                };
                span.in_scope(|| info!(%failure, "message refused"));
                let replies = vec![failure.reply(); count];
                crate::metrics::count_transaction(&replies);
                return replies;
            }
        };
        let size = data.len();
        let transaction = Transaction {
            mail_from: tx.mail_from,
            recipients: tx.recipients,
            data,
            ident: tx.ident,
            dsn: tx.dsn,
            recipient_dsn: tx.recipient_dsn,
            extensions: tx.extensions,
        };
        let replies = self
            .intake
            .deliver(transaction)
            .instrument(span.clone())
            .await;
        let replies = span.in_scope(|| checked(replies, count, size));
        crate::metrics::count_transaction(&replies);
        replies
    }

    pub fn on_line_too_long(&self) -> Reply {
        self.refuse(Failure::LineTooLong)
    }

    /// Between MAIL and the end of the transaction.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    pub fn on_idle_timeout(&self) -> Reply {
        info!(in_transaction = self.tx.is_some(), "idle timeout");
        Failure::IdleTimeout.reply()
    }

    pub fn on_shutdown(&self) -> Reply {
        info!("closing for shutdown");
        Failure::ShuttingDown.reply()
    }

    /// XFORWARD attributes describe one message (XFORWARD_README): drop them with the transaction.
    fn end_transaction(&mut self) {
        self.tx = None;
        self.conn.xforward = Default::default();
    }
}
