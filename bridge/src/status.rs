//! `toxmail-bridge status`: what an operator asks first. Identities with their Tox IDs and, from
//! the running daemon (`GET /status` on its metrics listener), their connection and friends; the
//! queue by state with the oldest copy's age; the last errors copies and inbound mail met.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Config;
use crate::store::Store;

/// How many recent errors are listed.
const RECENT_ERRORS: i64 = 5;

pub async fn status(config: &Config) -> Result<(), String> {
    println!(
        "toxmail-bridge {} on libtoxcore {}",
        env!("CARGO_PKG_VERSION"),
        tox_runtime::libtoxcore_version()
    );
    let live = live(config).await;
    match &live {
        Ok(_) => println!("daemon: running (metrics on {})", config.metrics.listen),
        Err(why) => println!("daemon: {why}"),
    }
    let store = Store::connect(&config.database.url, 2).map_err(|e| e.to_string())?;
    let database = |e: crate::store::StoreError| format!("database: {e}");
    let identities = store.identities().await.map_err(database)?;
    println!("identities: {}", identities.len());
    for row in &identities {
        let now = match &live {
            Ok(lines) => lines
                .get(&row.address)
                .map_or("not running in the daemon", String::as_str),
            Err(_) => "-",
        };
        println!("  {}  {}  {now}", row.address, row.tox_id);
    }
    print_leases(&store.leases().await.map_err(database)?);
    let q = store.queue_stats().await.map_err(database)?;
    let oldest = if q.queued + q.relayed > 0 {
        format!("; oldest waiting {}", human(q.oldest))
    } else {
        String::new()
    };
    println!(
        "queue: {} waiting for the peer, {} in a relay's custody, {} failed (bounce pending){oldest}",
        q.queued, q.relayed, q.failed
    );
    let errors = store.recent_errors(RECENT_ERRORS).await.map_err(database)?;
    if errors.is_empty() {
        println!("recent errors: none");
    } else {
        println!("recent errors (newest first):");
        for e in errors {
            // Error texts can carry a peer's words: no control characters reach the terminal.
            println!(
                "  {} [{}]: {}",
                crate::admin::field(&e.what),
                e.state,
                crate::admin::field(&e.error)
            );
        }
    }
    Ok(())
}

/// Which bridge acts for the identities (several bridges on one database): one line per holder.
fn print_leases(leases: &[(String, String, i64, std::time::SystemTime)]) {
    let now = std::time::SystemTime::now();
    let mut holders: Vec<(&str, bool, usize, i64)> = Vec::new();
    for (_, holder, fence, expires) in leases {
        let live = *expires > now;
        match holders.iter_mut().find(|h| h.0 == holder && h.1 == live) {
            Some(h) => {
                h.2 += 1;
                h.3 = h.3.max(*fence);
            }
            None => holders.push((holder, live, 1, *fence)),
        }
    }
    if holders.is_empty() {
        println!("leases: none yet (taken when the daemon starts)");
    }
    for (holder, live, count, fence) in holders {
        let state = if live {
            "held by"
        } else {
            "lapsed, last held by"
        };
        // The holder's name is this site's own host name and pid, but it is read from the
        // database: no control characters reach the terminal.
        let holder = crate::admin::field(holder);
        println!("leases: {count} {state} {holder} (fence up to {fence})");
    }
}

/// Identity address → "connection=… friends=…" from the running daemon, or why there is none.
pub(crate) async fn live(config: &Config) -> Result<HashMap<String, String>, String> {
    let listen = &config.metrics.listen;
    if listen.is_empty() {
        return Err("unknown ([metrics] listen is off, so the daemon cannot be asked)".into());
    }
    let text = tox_runtime::exporter::fetch_status(listen)
        .await
        .map_err(|e| format!("not reachable on {listen}: {e} (is toxmail-bridge running?)"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("identity "))
        .filter_map(|l| l.split_once(' '))
        .map(|(a, rest)| (a.to_string(), rest.to_string()))
        .collect())
}

/// "45s", "12m 05s", "3h 07m", "2d 04h".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_says_them() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(725)), "12m 05s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 7 * 60)), "3h 07m");
        assert_eq!(human(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d 04h");
    }
}
