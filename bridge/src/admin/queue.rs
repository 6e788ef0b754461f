//! `queue`: the outbound queue. `list` and `show` say why each copy waits; `retry`, `delete`
//! and `bounce` are the operator's decisions on one copy. None of them reads an envelope.
//! The running bridge reads the queue again at least every minute (`delivery::SAFETY_POLL`):
//! a copy made due is sent then, a deleted or bounced copy's delivery is stopped then.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{Result, field, store, utc, when};
use crate::config::Config;
use crate::delivery::notify::operator_bounce_reason;
use crate::events::DsnStatus;
use crate::store::{PresenceMap, QueueEntry};

/// When the running bridge notices what `queue` commands wrote, at the latest.
const PICKED_UP: &str = "within a minute";

/// The connection of each identity in the running bridge, or why it cannot be asked.
type Live = std::result::Result<HashMap<String, String>, String>;

/// Copies `queue list` prints at once unless told otherwise.
pub const DEFAULT_PAGE: i64 = 100;

/// Prints up to `limit` copies still in the queue with an id above `after`, and how to get the
/// next page when there are more.
pub async fn queue_list(config: &Config, after: i64, limit: i64) -> Result {
    let store = store(config)?;
    let page = store
        .queue_page(after, limit)
        .await
        .map_err(|e| e.to_string())?;
    let rows = &page.entries;
    let presence = store.presence().await.map_err(|e| e.to_string())?;
    let live = crate::status::live(config).await;
    let now = SystemTime::now();
    println!("id\tstate\tattempts\tcreated\tnext_attempt\texpires\trecipient\tsender\twhy");
    for r in rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t<{}>\t{}",
            r.id,
            r.state,
            r.attempts,
            when(r.created, now),
            when(r.next_attempt, now),
            when(r.expires, now),
            field(&r.recipient),
            field(&r.envelope_sender),
            field(&why(r, now, &live, seen(&presence, r)))
        );
    }
    println!(
        "{}",
        page_summary(rows.len(), after, rows.last().map(|r| r.id), page.more)
    );
    if let Err(daemon) = &live
        && !rows.is_empty()
    {
        println!("the running bridge: {daemon}");
    }
    Ok(())
}

/// The last line of `queue list`: how many copies it showed and, when more follow, the command
/// for the next page.
fn page_summary(shown: usize, after: i64, last: Option<i64>, more: i64) -> String {
    let from = match after {
        0 => String::new(),
        after => format!(" after id {after}"),
    };
    match (last, more) {
        (Some(last), 1..) => format!(
            "{shown} message copies{from} shown; {more} more: toxmail-bridge queue list --after {last}"
        ),
        _ => format!("{shown} message copies{from}"),
    }
}

/// Why a copy is where it is, in one line: its state, the sending identity's connection in the
/// running bridge (`live`), the peer's presence as that bridge last recorded it, relay custody,
/// the next attempt and the last attempt's error.
pub fn why(e: &QueueEntry, now: SystemTime, live: &Live, presence: Option<&Seen>) -> String {
    if e.state == "delivered" {
        return "delivered".into();
    }
    if e.state == "failed" {
        return format!(
            "given up ({}); its failed DSN goes out at the bridge's next pass",
            e.last_error.as_deref().unwrap_or("no reason recorded")
        );
    }
    let mut why = vec![waiting(e, now, live, presence)];
    if let Some(at) = e.relayed_at {
        why.push(format!(
            "in relay custody at {} relay(s) since {} (the peer fetches it there)",
            e.custodians(),
            utc(at)
        ));
    }
    if e.last_error.is_some() && e.next_attempt > now {
        why.push(format!("next attempt {}", when(e.next_attempt, now)));
    }
    if let Some(last) = &e.last_error {
        why.push(format!("last attempt: {last}"));
    }
    why.join("; ")
}

/// (online, since when) of a copy's peer, as seen by its sending identity.
pub type Seen = (bool, SystemTime);

/// What a queued copy waits for.
fn waiting(e: &QueueEntry, now: SystemTime, live: &Live, presence: Option<&Seen>) -> String {
    let identity = &e.sender_identity;
    if e.expires <= now {
        return "expired; the bridge gives up on it at its next pass".into();
    }
    if let Ok(identities) = live {
        match identities.get(identity) {
            None => {
                return format!(
                    "the sending identity {identity} is not running in the bridge (identities \
                     added since it started need a restart)"
                );
            }
            Some(line) if line.starts_with("connection=none") => {
                return format!(
                    "the sending identity {identity} is not connected to the Tox network ({line})"
                );
            }
            Some(_) => {}
        }
    }
    match presence {
        Some((false, since)) => return format!("peer offline since {}", when(*since, now)),
        Some((true, since)) if e.last_error.is_none() || e.next_attempt <= now => {
            return format!(
                "peer online since {}: the transfer is in progress or its answer awaited",
                utc(*since)
            );
        }
        Some((true, since)) => return format!("peer online since {}", utc(*since)),
        None => {}
    }
    match (e.attempts, e.next_attempt > now, &e.last_error) {
        (0, _, _) => "waiting for the peer to come online (no attempt yet)".into(),
        // Taken by the bridge's last claim, and no failure recorded since.
        (_, true, None) => format!(
            "leased by the running bridge: waiting for the peer to come online, or the transfer \
             is in progress (lease ends {})",
            utc(e.next_attempt)
        ),
        (_, true, Some(_)) => {
            "waiting for the peer, or for the next attempt after a failure".into()
        }
        (_, false, _) => format!("due now; the bridge takes it {PICKED_UP}"),
    }
}

/// The presence of `e`'s peer as its sending identity saw it.
fn seen<'a>(presence: &'a PresenceMap, e: &QueueEntry) -> Option<&'a Seen> {
    presence.get(&(e.sender_identity.clone(), e.peer.public_key()))
}

/// The copy `id`, or the error that names an unknown one.
async fn entry(store: &crate::store::Store, id: i64) -> std::result::Result<QueueEntry, String> {
    store
        .queue_entry(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| crate::store::OperatorError::Unknown(id).to_string())
}

pub async fn queue_show(config: &Config, id: i64) -> Result {
    let store = store(config)?;
    let e = entry(&store, id).await?;
    let presence = store.presence().await.map_err(|e| e.to_string())?;
    let live = crate::status::live(config).await;
    let now = SystemTime::now();
    let opt = |t: Option<SystemTime>| t.map_or("-".to_string(), |t| when(t, now));
    let relays = |r: &[toxmail_protocol::ToxId]| match r {
        [] => "none".to_string(),
        r => r
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    let lines = [
        ("id", e.id.to_string()),
        ("message_id", e.message_id.to_string()),
        (
            "postfix_queue_id",
            e.idem_key
                .clone()
                .filter(|k| !k.starts_with(crate::intake::DERIVED_KEY_PREFIX))
                .unwrap_or("-".into()),
        ),
        ("state", e.state.clone()),
        ("why", why(&e, now, &live, seen(&presence, &e))),
        (
            "peer_presence",
            seen(&presence, &e).map_or("not recorded".into(), |(online, since)| {
                let state = if *online { "online" } else { "offline" };
                format!("{state} since {}", when(*since, now))
            }),
        ),
        ("sender", format!("<{}>", e.envelope_sender)),
        ("sender_identity", e.sender_identity.clone()),
        ("recipient", e.recipient.clone()),
        ("peer", e.peer.to_string()),
        ("attempts", e.attempts.to_string()),
        ("created", when(e.created, now)),
        ("next_attempt", when(e.next_attempt, now)),
        ("expires", when(e.expires, now)),
        ("delivered", opt(e.delivered_at)),
        ("envelope_bytes", e.envelope_bytes.to_string()),
        ("peer_relays", relays(&e.relays)),
        ("relayed", opt(e.relayed_at)),
        ("relayed_to", e.relayed_to.clone().unwrap_or("-".into())),
        ("last_error", e.last_error.clone().unwrap_or("-".into())),
        ("delay_dsn", notice(&e).into()),
    ];
    for (key, value) in lines {
        println!("{key}\t{}", field(&value));
    }
    Ok(())
}

/// Where the copy's DSNs stand.
fn notice(e: &QueueEntry) -> &'static str {
    match (e.state.as_str(), e.delay_notified) {
        ("failed", _) => "failed DSN pending (sent, then the copy is removed)",
        (_, true) => "delayed DSN sent",
        _ => "none sent",
    }
}

pub async fn queue_retry(config: &Config, id: Option<i64>) -> Result {
    let due = store(config)?
        .retry_now(id)
        .await
        .map_err(|e| field(&e.to_string()))?;
    match due.len() {
        0 => println!("no queued copies: nothing to retry"),
        n => println!(
            "{n} cop{} due now: {}; the running bridge takes {} {PICKED_UP} (a copy whose peer \
             it is already waiting for stays with that attempt)",
            if n == 1 { "y" } else { "ies" },
            join(&due),
            if n == 1 { "it" } else { "them" },
        ),
    }
    Ok(())
}

pub async fn queue_delete(config: &Config, id: i64, force: bool) -> Result {
    let e = store(config)?
        .delete_copy(id, force)
        .await
        .map_err(|e| field(&e.to_string()))?;
    println!(
        "deleted copy {} ({}) from <{}> to {}, {} attempt(s); no DSN is sent",
        e.id,
        e.message_id,
        field(&e.envelope_sender),
        field(&e.recipient),
        e.attempts
    );
    if e.state == "queued" {
        println!(
            "a running bridge stops delivering it {PICKED_UP}; a transfer that completes before \
             then reaches the recipient once (the bridge logs that the row is gone)"
        );
    }
    if let Some(relays) = &e.relayed_to {
        println!("relay node(s) {relays} still hold it and may hand it to the recipient");
    }
    Ok(())
}

pub async fn queue_bounce(config: &Config, id: i64, force: bool) -> Result {
    let store = store(config)?;
    let e = entry(&store, id).await?;
    let reason = operator_bounce_reason(e.attempts, e.last_error.as_deref());
    let status = DsnStatus::from(crate::delivery::notify::status_for(&reason));
    let e = store
        .bounce_copy(id, &reason, status, force)
        .await
        .map_err(|e| field(&e.to_string()))?;
    let dsn = match e.envelope_sender.is_empty() {
        true => "removes the copy (the sender is <>: no DSN is sent)".to_string(),
        false => format!("sends the sender the failed DSN ({status}) and removes the copy"),
    };
    println!(
        "copy {} ({}) from <{}> to {} given up: the running bridge stops delivering it and \
         {dsn} {PICKED_UP}",
        e.id,
        e.message_id,
        field(&e.envelope_sender),
        field(&e.recipient)
    );
    Ok(())
}

fn join(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_next_page_only_when_there_is_one() {
        assert_eq!(page_summary(3, 0, Some(9), 0), "3 message copies");
        assert_eq!(page_summary(0, 0, None, 0), "0 message copies");
        assert_eq!(
            page_summary(2, 0, Some(5), 7),
            "2 message copies shown; 7 more: toxmail-bridge queue list --after 5"
        );
        assert_eq!(
            page_summary(1, 5, Some(8), 0),
            "1 message copies after id 5"
        );
    }
    use std::time::Duration;
    use toxmail_protocol::{MessageId, PublicKey, ToxId};

    fn entry(now: SystemTime) -> QueueEntry {
        QueueEntry {
            id: 7,
            message_id: MessageId([1; 32]),
            idem_key: None,
            recipient: "bob@b.example".into(),
            envelope_sender: "alice@a.example".into(),
            sender_identity: "alice@a.example".into(),
            peer: ToxId::new(PublicKey([2; 32]), 1),
            state: "queued".into(),
            attempts: 0,
            created: now - Duration::from_secs(600),
            next_attempt: now - Duration::from_secs(1),
            expires: now + Duration::from_secs(86_400),
            delivered_at: None,
            last_error: None,
            envelope_bytes: 100,
            relays: vec![],
            relayed_at: None,
            relayed_to: None,
            delay_notified: false,
        }
    }

    #[test]
    fn why_names_the_reason_a_copy_waits() {
        let now = SystemTime::now();
        let down: Live = Err("not reachable".into());
        let why = |e: &QueueEntry, live: &Live| why(e, now, live, None);
        assert_eq!(
            why(&entry(now), &down),
            "waiting for the peer to come online (no attempt yet)"
        );

        let leased = QueueEntry {
            attempts: 1,
            next_attempt: now + Duration::from_secs(3000),
            ..entry(now)
        };
        assert!(why(&leased, &down).starts_with("leased by the running bridge"));

        let backoff = QueueEntry {
            last_error: Some("timed out".into()),
            ..leased.clone()
        };
        let text = why(&backoff, &down);
        assert!(text.contains("; next attempt 20"), "{text}");
        assert!(text.ends_with("; last attempt: timed out"), "{text}");

        let relayed = QueueEntry {
            relayed_at: Some(now),
            relayed_to: Some("A,B".into()),
            ..leased.clone()
        };
        assert!(why(&relayed, &down).contains("; in relay custody at 2 relay(s) since"));

        let offline: Live = Ok(HashMap::from([(
            "alice@a.example".to_string(),
            "connection=none friends=0/3".to_string(),
        )]));
        assert!(why(&leased, &offline).contains("not connected to the Tox network"));
        assert!(why(&leased, &Ok(HashMap::new())).contains("not running in the bridge"));

        let failed = QueueEntry {
            state: "failed".into(),
            last_error: Some("expired".into()),
            ..entry(now)
        };
        assert!(why(&failed, &down).starts_with("given up (expired)"));
    }

    #[test]
    fn why_says_since_when_the_peer_is_offline_or_online() {
        let now = SystemTime::now();
        let down: Live = Err("not reachable".into());
        let hour_ago = now - Duration::from_secs(3600);
        let leased = QueueEntry {
            attempts: 1,
            next_attempt: now + Duration::from_secs(3000),
            ..entry(now)
        };
        let text = why(&leased, now, &down, Some(&(false, hour_ago)));
        assert!(text.starts_with("peer offline since 20"), "{text}");
        assert!(text.ends_with("(1h 00m ago)"), "{text}");
        let text = why(&leased, now, &down, Some(&(true, hour_ago)));
        assert!(text.contains("the transfer is in progress"), "{text}");
        let backoff = QueueEntry {
            last_error: Some("refused by the peer (Busy): later".into()),
            ..leased
        };
        let text = why(&backoff, now, &down, Some(&(true, hour_ago)));
        assert!(!text.contains("in progress"), "{text}");
        assert!(
            text.ends_with("last attempt: refused by the peer (Busy): later"),
            "{text}"
        );
    }
}
