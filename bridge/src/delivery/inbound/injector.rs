//! The injector: hands committed inbound mail to the local MTA, retrying with backoff. Each
//! envelope is opened again and its recipient bound again (local domains or identities may have
//! changed since the ack); forged trace headers are stripped and this bridge's own prepended. A
//! permanent refusal, or temporary ones past the queue lifetime, bounce to the sender (`bounce`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use toxmail_protocol::{open, public_key_of};

use toxmail_protocol::Letter;

use super::InboundContext;
use super::admission::{self, Verdict};
use super::bounce::{self, AfterFailure, after_failure};
use crate::address::ReversePath;
use crate::delivery::dsn::Action;
use crate::delivery::{smtp_client, trace};
use crate::events::DsnStatus;
use crate::metrics::{self, Inbound};
use crate::store::InboundRow;

/// Hands committed inbound mail to the local MTA, retrying with backoff until it succeeds.
pub async fn run_injector(ctx: Arc<InboundContext>, shutdown: CancellationToken) {
    if let Err(e) = ctx.store.release_inbound_leases().await {
        tracing::debug!(error = %e, "could not release inbound leases");
    }
    loop {
        match ctx.store.claim_inbound(20, Duration::from_secs(300)).await {
            Ok(rows) => {
                for row in rows {
                    inject(&ctx, row).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "inbound queue not readable"),
        }
        // Sleep until an inbound commit wakes us or a deferred row falls due.
        let due = ctx.store.next_inbound_due().await.unwrap_or(None);
        if !crate::delivery::idle(&ctx.injector, due, &shutdown).await {
            return;
        }
    }
}

async fn inject(ctx: &InboundContext, row: InboundRow) {
    let (id, key) = (row.message_id, row.key());
    let Some(secret) = ctx.keys.get(&row.identity) else {
        tracing::error!(%id, identity = %row.identity, "inbound mail for an identity not loaded");
        return;
    };
    let opened = match open(&row.envelope, secret) {
        Ok(o) => o,
        Err(e) => {
            // Opened at admission with this key: the row or the key changed under us.
            tracing::error!(%id, error = %e, "stored inbound envelope cannot be opened");
            let reason = format!("cannot open: {e}");
            metrics::inbound(Inbound::Failed);
            let status = DsnStatus(5, 0, 0);
            let _ = (ctx.store)
                .mark_inbound_failed(&key, &reason, &row.identity, status)
                .await;
            return;
        }
    };
    let letter = opened.letter;
    let meta = &letter.metadata;
    let Ok(sender) = admission::parse_sender(&meta.envelope_sender) else {
        // Admission refuses such senders; a row from before it cannot be bounced.
        metrics::inbound(Inbound::Failed);
        let (reason, status) = ("sender is not an address", DsnStatus(5, 1, 7));
        let _ = (ctx.store)
            .mark_inbound_failed(&key, reason, &meta.recipient, status)
            .await;
        return;
    };
    let secret_key = public_key_of(secret);
    let rcpt =
        match admission::bind_recipient(&meta.recipient, &row.identity, &secret_key, &ctx.site) {
            Ok(rcpt) => rcpt,
            Err(refusal) => {
                // The site changed since the ack (a domain or identity removed): bounce.
                let diagnostic = format!("no longer a mailbox of this site: {}", refusal.detail);
                let outcome = AfterFailure::Bounce {
                    status: (5, 1, 1),
                    diagnostic,
                };
                return give_up_or_retry(ctx, &row, &letter, &sender, outcome).await;
            }
        };
    let verdict = Verdict::from_db(&row.sender_verdict);
    let now = SystemTime::now();
    let mut message = trace::trace_headers(&ctx.hostname, &row.sender_key, &id, now);
    message.push_str(&trace::authentication_results(
        &ctx.hostname,
        verdict,
        &sender,
    ));
    let mut message = message.into_bytes();
    message.extend_from_slice(&trace::strip_forged_headers(&letter.message, &ctx.hostname));
    let (hop, host, ext) = (&ctx.next_hop, &ctx.hostname, &meta.extensions);
    match smtp_client::send_with(hop, host, &sender, &rcpt, &message, ext).await {
        Ok(()) => {
            tracing::info!(%id, "injected into the local MTA");
            metrics::inbound(Inbound::Injected);
            if let Err(e) = ctx.store.mark_injected(&key, &meta.recipient).await {
                tracing::error!(%id, error = %e, "injected but not marked; it may be injected again");
            }
        }
        Err(e) => {
            let outcome = after_failure(&e, row.attempts, row.received, ctx.lifetime, now);
            match &outcome {
                AfterFailure::Retry(at) => {
                    let retry_in = at.duration_since(now).unwrap_or_default();
                    tracing::info!(%id, error = %e, ?retry_in, "injection deferred");
                }
                AfterFailure::Bounce { .. } => {
                    tracing::warn!(%id, error = %e, "local MTA refused the message; bouncing");
                }
            }
            give_up_or_retry(ctx, &row, &letter, &sender, outcome).await;
        }
    }
}

/// Reschedules the row, or bounces it to its sender and then marks it failed. A bounce that
/// cannot be sent leaves the row pending: it is tried again, so no path ends in silence.
async fn give_up_or_retry(
    ctx: &InboundContext,
    row: &InboundRow,
    letter: &Letter,
    sender: &ReversePath,
    outcome: AfterFailure,
) {
    let (id, key) = (row.message_id, row.key());
    let (status, diagnostic) = match outcome {
        AfterFailure::Retry(at) => {
            let _ = ctx.store.reschedule_inbound(&key, at, "deferred").await;
            return;
        }
        AfterFailure::Bounce { status, diagnostic } => (status, diagnostic),
    };
    let recipient = &letter.metadata.recipient;
    match bounce::bounce(
        ctx,
        row,
        letter,
        sender,
        recipient,
        status,
        diagnostic.clone(),
    )
    .await
    {
        Ok(()) => {
            tracing::info!(%id, "bounced to the envelope sender");
            metrics::dsn_sent(Action::Failed);
            metrics::inbound(Inbound::Failed);
            let reason = format!("bounced: {diagnostic}");
            let status = DsnStatus::from(status);
            let _ = (ctx.store)
                .mark_inbound_failed(&key, &reason, recipient, status)
                .await;
        }
        Err(e) => {
            tracing::warn!(%id, error = %e, "bounce not sent; retrying the row later");
            let at = SystemTime::now() + Duration::from_secs(60);
            let _ = ctx.store.reschedule_inbound(&key, at, &diagnostic).await;
        }
    }
}
