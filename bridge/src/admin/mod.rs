//! The admin subcommands: each opens what it needs, does one thing, and prints plain text.
//! One file per group: `identity`, `check` (check-config), `queue`, `postfix` (postfix-config, with
//! `postconf` reading and merging Postfix's current settings).

use std::time::{SystemTime, UNIX_EPOCH};

use toxmail_protocol::ToxId;

use crate::app::resolver_config;
use crate::config::Config;
use crate::resolve::{Resolver, Route, RouteSource};
use crate::store::Store;

type Result = std::result::Result<(), String>;

mod bundle;
mod check;
mod identity;
mod postconf;
mod postfix;
mod queue;

pub use check::check_config;
pub use identity::{
    identity_add, identity_export, identity_import, identity_list, identity_remove,
    identity_rotate_nospam,
};
pub use postconf::{Current as PostfixCurrent, PostfixSite};
pub use postfix::{INJECTION_MARK, injection_service, postfix_config};
pub use queue::{DEFAULT_PAGE, queue_bounce, queue_delete, queue_list, queue_retry, queue_show};

pub(crate) fn store(config: &Config) -> std::result::Result<Store, String> {
    Store::connect(&config.database.url, 2).map_err(|e| e.to_string())
}

/// `text` safe for one tab-separated field on a terminal: control characters (tabs, line
/// breaks, escape sequences a peer may have put into an error text) become `?`.
pub(crate) fn field(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `2026-12-03 07:40:12Z`: UTC to the second, sorts and greps as text.
pub(crate) fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d) = crate::delivery::trace::civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}Z")
}

/// `2026-12-03 07:40:12Z (in 5m 00s)` or `… (3h 07m ago)`, relative to `now`.
pub(crate) fn when(t: SystemTime, now: SystemTime) -> String {
    let relative = match t.duration_since(now) {
        Ok(ahead) => format!("in {}", crate::status::human(ahead)),
        Err(behind) => format!("{} ago", crate::status::human(behind.duration())),
    };
    format!("{} ({relative})", utc(t))
}

pub(crate) fn normalised(config: &Config, address: &str) -> std::result::Result<String, String> {
    crate::resolve::normalise(address, config.resolver.recipient_delimiter.as_deref())
        .ok_or_else(|| format!("{address:?} is not a mail address"))
}

pub async fn migrate(config: &Config) -> Result {
    let n = store(config)?.migrate().await.map_err(|e| e.to_string())?;
    println!("applied {n} migration(s)");
    Ok(())
}

pub async fn contact_add(config: &Config, address: &str, tox_id: &str) -> Result {
    let address = normalised(config, address)?;
    let id: ToxId = tox_id.parse().map_err(|e| format!("{tox_id:?}: {e}"))?;
    store(config)?
        .add_contact(&address, &id)
        .await
        .map_err(|e| e.to_string())?;
    println!("contact {address} -> {id}");
    Ok(())
}

pub async fn contact_list(config: &Config) -> Result {
    for row in store(config)?.contacts().await.map_err(|e| e.to_string())? {
        println!("{}\t{}", row.address, row.tox_id);
    }
    Ok(())
}

pub async fn contact_remove(config: &Config, address: &str) -> Result {
    let address = normalised(config, address)?;
    match store(config)?
        .remove_contact(&address)
        .await
        .map_err(|e| e.to_string())?
    {
        true => {
            println!("removed {address}; the running bridge ends its friendship within seconds")
        }
        false => return Err(format!("no contact {address}")),
    }
    Ok(())
}

/// A public key from 64 hex digits, or the key of a full 76-digit Tox ID.
fn parse_key(text: &str) -> std::result::Result<toxmail_protocol::PublicKey, String> {
    let text = text.trim();
    if let Ok(id) = text.parse::<ToxId>() {
        return Ok(id.public_key());
    }
    text.parse::<toxmail_protocol::PublicKey>()
        .map_err(|e| format!("{text:?} is neither a public key nor a Tox ID: {e}"))
}

pub async fn block(config: &Config, key: &str, add: bool) -> Result {
    let key = parse_key(key)?;
    let store = store(config)?;
    let changed = match add {
        true => store.block_key(&key).await,
        false => store.unblock_key(&key).await,
    }
    .map_err(|e| e.to_string())?;
    match (add, changed) {
        (true, true) => {
            println!("blocked {key}; the running bridge ends its friendship within seconds")
        }
        (true, false) => println!("{key} was blocked already"),
        (false, true) => println!("unblocked {key}"),
        (false, false) => return Err(format!("{key} is not blocked")),
    }
    Ok(())
}

pub async fn block_list(config: &Config) -> Result {
    for key in store(config)?
        .blocked_keys()
        .await
        .map_err(|e| e.to_string())?
    {
        println!("{key}");
    }
    Ok(())
}

/// Prints how `address` routes and why. With `accept_new_key`, takes what DNS says now as the
/// operator's decision: its key becomes the pin, or, when DNS has no usable record any more, the
/// pin is removed (mail to the address then goes as ordinary mail).
pub async fn resolve(config: &Config, address: &str, accept_new_key: bool) -> Result {
    let resolver = Resolver::new(resolver_config(config));
    let store = store(config);
    if let Ok(store) = &store {
        crate::roster::load_resolver(store, &resolver).await;
    }
    if !accept_new_key {
        println!("{}", resolver.explain(address).await);
        return Ok(());
    }
    let store = store?;
    let Some((key, answer)) = resolver.dns_answer(address).await else {
        return Err(format!(
            "{address} is not looked up in DNS (resolver.dns_domains)"
        ));
    };
    match answer {
        Route::Tox {
            peer,
            source: RouteSource::Dns,
            ..
        } => {
            let pk = peer.public_key();
            store.pin_set(&key, &pk).await.map_err(|e| e.to_string())?;
            println!(
                "{key}: pinned Tox key {pk} (from DNS: {peer}); the running bridge uses it within seconds"
            );
        }
        Route::TempFail(why) => {
            return Err(format!(
                "{key}: DNS did not answer ({why}); nothing changed"
            ));
        }
        other => {
            let removed = store.pin_remove(&key).await.map_err(|e| e.to_string())?;
            let was = if removed {
                "pin removed"
            } else {
                "nothing was pinned"
            };
            println!(
                "{key}: DNS has no usable Tox record ({other}); {was}: mail to it goes as ordinary mail"
            );
        }
    }
    Ok(())
}

pub async fn pins_list(config: &Config) -> Result {
    let rows = store(config)?.pins().await.map_err(|e| e.to_string())?;
    let at = |t| when(t, SystemTime::now());
    println!("address\tpinned_key\tpinned\tdns_now");
    for row in &rows {
        let now = match &row.changed {
            None => "same".to_string(),
            Some((since, Some(id))) => format!("CHANGED since {}: {id}", at(*since)),
            Some((since, None)) => format!("CHANGED since {}: no usable record", at(*since)),
        };
        println!(
            "{}\t{}\t{}\t{now}",
            row.address,
            row.public_key,
            at(row.pinned)
        );
    }
    println!("{} pinned address(es)", rows.len());
    Ok(())
}

pub async fn pins_remove(config: &Config, address: &str) -> Result {
    let address = normalised(config, address)?;
    match store(config)?
        .pin_remove(&address)
        .await
        .map_err(|e| e.to_string())?
    {
        true => println!("{address}: pin removed; the next DNS answer is pinned anew"),
        false => return Err(format!("nothing pinned for {address}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_read_in_utc_with_how_far_off_they_are() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_283_612); // 2026-12-03 07:40:12Z
        assert_eq!(utc(at), "2026-12-03 07:40:12Z");
        let now = at + Duration::from_secs(3 * 3600 + 7 * 60);
        assert_eq!(when(at, now), "2026-12-03 07:40:12Z (3h 07m ago)");
        assert_eq!(
            when(now + Duration::from_secs(300), now),
            "2026-12-03 10:52:12Z (in 5m 00s)"
        );
    }
}
