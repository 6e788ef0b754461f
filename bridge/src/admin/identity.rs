//! `identity`: the Tox identities of local mailboxes.

use toxmail_protocol::ToxId;

use super::{Result, normalised, store};
use crate::config::Config;
use crate::identity;

pub async fn identity_add(config: &Config, address: &str) -> Result {
    let address = normalised(config, address)?;
    let store = store(config)?;
    let id = identity::create(config, &address)
        .await
        .map_err(|e| e.to_string())?;
    store
        .add_identity(&address, &id)
        .await
        .map_err(|e| e.to_string())?;
    println!("identity {address}");
    println!("Tox ID: {id}");
    if let Some(record) = identity::dns_record(&address, &id, &config.own_relays()) {
        println!("publish in DNS: {record}");
    }
    println!("or give out the address {id}@tox");
    Ok(())
}

/// Each identity with the Tox ID its savedata actually holds; a listed identity whose savedata
/// is missing, unreadable or holds another key is shown as such, and the command fails.
pub async fn identity_list(config: &Config) -> Result {
    let pass = identity::read_key_file(&config.bridge.key_file).map_err(|e| e.to_string())?;
    let rows = store(config)?
        .identities()
        .await
        .map_err(|e| e.to_string())?;
    let mut broken = 0;
    for row in rows {
        match identity::verify(config, &row.address, &row.tox_id, &pass).await {
            Ok(loaded) => println!("{}\t{loaded}", row.address),
            Err(e) => {
                broken += 1;
                println!("{}\t{}\tNOT LOADABLE: {e}", row.address, row.tox_id);
            }
        }
    }
    match broken {
        0 => Ok(()),
        n => Err(format!(
            "{n} identit{} cannot be loaded",
            if n == 1 { "y" } else { "ies" }
        )),
    }
}
pub async fn identity_rotate_nospam(config: &Config, address: &str) -> Result {
    let address = match address {
        crate::identity::DEFAULT_IDENTITY => address.to_string(),
        _ => normalised(config, address)?,
    };
    let store = store(config)?;
    let rows = store.identities().await.map_err(|e| e.to_string())?;
    let row = rows
        .iter()
        .find(|r| r.address == address)
        .ok_or_else(|| format!("no identity {address}"))?;
    let nospam = u32::from_be_bytes(
        toxmail_protocol::MessageId::random().0[..4]
            .try_into()
            .unwrap_or_default(),
    );
    let id = ToxId::new(row.tox_id.public_key(), nospam);
    store
        .set_identity_tox_id(&address, &id)
        .await
        .map_err(|e| e.to_string())?;
    println!("identity {address}");
    println!("new Tox ID: {id}");
    println!("the running bridge takes it within seconds; new friend requests need the new ID");
    if let Some(record) = identity::dns_record(&address, &id, &config.own_relays()) {
        println!("publish in DNS: {record}");
    }
    Ok(())
}

/// Removes a local mailbox's identity row. Refused while copies depend on it unless `force`.
/// Its savedata (the secret key) is kept, renamed `<name>.removed-<time>`, so a mistake can be
/// undone; the default identity cannot be removed (a new one would be made at the next start).
pub async fn identity_remove(config: &Config, address: &str, force: bool) -> Result {
    if address == identity::DEFAULT_IDENTITY {
        return Err("the default identity cannot be removed (the bridge makes a new one at start-up); nothing changed".into());
    }
    let address = normalised(config, address)?;
    let store = store(config)?;
    let rows = store.identities().await.map_err(|e| e.to_string())?;
    let row = rows
        .iter()
        .find(|r| r.address == address)
        .ok_or_else(|| format!("no identity {address}; nothing changed"))?;
    let (outbound, inbound) = store
        .identity_in_use(&address)
        .await
        .map_err(|e| e.to_string())?;
    if outbound + inbound > 0 && !force {
        return Err(format!(
            "identity {address} has {outbound} queued outbound cop(ies) and {inbound} received \
             message(s) not yet injected; let them finish or deal with them (`queue list`), or \
             add --force; nothing changed"
        ));
    }
    if !store
        .remove_identity(&address)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!("no identity {address}; nothing changed"));
    }
    println!("removed identity {address} (Tox ID {})", row.tox_id);
    let path = identity::savedata_path(&config.bridge.state_dir, &address);
    println!("{}", keep_savedata(&path)?);
    println!(
        "to undo: rename the file back to {} and run in the database: INSERT INTO identities \
         (address, tox_id) VALUES ('{}', '\\x{}');",
        path.display(),
        address.replace('\'', "''"),
        hex::encode(row.tox_id.as_bytes())
    );
    if outbound + inbound > 0 {
        println!(
            "after the next restart its {outbound} queued cop(ies) fail with a DSN to their \
             senders and its {inbound} received message(s) stay uninjected"
        );
    }
    println!(
        "the running bridge stops treating {address} as local within seconds; its Tox node runs \
         until the bridge is restarted"
    );
    Ok(())
}

/// Renames a removed identity's savedata `<name>.tox.removed-<UTC time>`; says where it is.
fn keep_savedata(path: &std::path::Path) -> std::result::Result<String, String> {
    let stamp = super::utc(std::time::SystemTime::now()).replace([' ', ':', '-'], "");
    let kept = path.with_extension(format!("tox.removed-{stamp}"));
    match std::fs::rename(path, &kept) {
        Ok(()) => Ok(format!(
            "its savedata (secret key) is kept as {}",
            kept.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(format!("it had no savedata at {}", path.display()))
        }
        Err(e) => Err(format!(
            "the row is removed, but its savedata stays at {}: cannot rename it: {e}",
            path.display()
        )),
    }
}
