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
    identity_add, identity_export, identity_import, identity_list, identity_rotate_nospam,
};
pub use postconf::{Current as PostfixCurrent, PostfixSite};
pub use postfix::{INJECTION_MARK, injection_service, postfix_config};
pub use queue::queue_list;

pub(crate) fn store(config: &Config) -> std::result::Result<Store, String> {
    Store::connect(&config.database.url, 2).map_err(|e| e.to_string())
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    println!("address\tpinned_key\tpinned\tdns_now");
    for row in &rows {
        let now = match &row.changed {
            None => "same".to_string(),
            Some((since, Some(id))) => format!("CHANGED since {}: {id}", secs(*since)),
            Some((since, None)) => format!("CHANGED since {}: no usable record", secs(*since)),
        };
        println!(
            "{}\t{}\t{}\t{now}",
            row.address,
            row.public_key,
            secs(row.pinned)
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
