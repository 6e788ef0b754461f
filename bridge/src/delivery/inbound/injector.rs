//! The injector: hands committed inbound mail to the local MTA, retrying with backoff. Each
//! envelope is opened again and admitted again (the directory or local domains may have changed
//! since the ack); forged trace headers are stripped and this bridge's own prepended.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use toxmail_protocol::{open, public_key_of};

use super::InboundContext;
use super::admission::{self, Verdict};
use crate::delivery::smtp_client::{self, SmtpError};
use crate::delivery::{backoff, trace};
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
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.injector.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
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
            let reason = format!("cannot open: {e}");
            let _ = ctx.store.mark_inbound_failed(&key, &reason).await;
            return;
        }
    };
    let letter = opened.letter;
    let meta = &letter.metadata;
    let bound = admission::bind_recipient(
        &meta.recipient,
        &row.identity,
        &public_key_of(secret),
        &ctx.site,
    );
    let sender = admission::parse_sender(&meta.envelope_sender);
    let (rcpt, sender) = match (bound, sender) {
        (Ok(rcpt), Ok(sender)) => (rcpt, sender),
        (Err(refusal), _) | (_, Err(refusal)) => {
            let _ = ctx.store.mark_inbound_failed(&key, &refusal.detail).await;
            return;
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
    match smtp_client::send(&ctx.next_hop, &ctx.hostname, &sender, &rcpt, &message).await {
        Ok(()) => {
            tracing::info!(%id, "injected into the local MTA");
            if let Err(e) = ctx.store.mark_injected(&key).await {
                tracing::error!(%id, error = %e, "injected but not marked; it may be injected again");
            }
        }
        Err(e @ SmtpError::Rejected { .. }) if e.is_permanent() => {
            tracing::warn!(%id, error = %e, "local MTA refused the message");
            let _ = ctx.store.mark_inbound_failed(&key, &e.to_string()).await;
        }
        Err(e) => {
            let wait = backoff(
                row.attempts,
                Duration::from_secs(5),
                Duration::from_secs(600),
            );
            tracing::info!(%id, error = %e, retry_in = ?wait, "injection deferred");
            let next = SystemTime::now() + wait;
            let _ = ctx
                .store
                .reschedule_inbound(&key, next, &e.to_string())
                .await;
        }
    }
}
