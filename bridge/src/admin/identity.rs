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
