//! `check-config`: the configuration, the key file, the database and each identity's savedata.

use super::{Result, store};
use crate::config::Config;
use crate::identity;

pub async fn check_config(config: &Config) -> Result {
    let pass = identity::read_key_file(&config.bridge.key_file).map_err(|e| e.to_string())?;
    let store = store(config)?;
    store.ping().await.map_err(|e| e.to_string())?;
    let rows = store.identities().await.map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for row in &rows {
        if let Err(e) = identity::verify(config, &row.address, &row.tox_id, &pass).await {
            problems.push(e.to_string());
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let pins = store.pins().await.map_err(|e| e.to_string())?;
    for pin in pins.iter().filter(|p| p.changed.is_some()) {
        println!(
            "warning: the Tox key in DNS for {} differs from the pinned one; its mail waits \
             (toxmail-bridge pins list, resolve --accept-new-key)",
            pin.address
        );
    }
    println!(
        "configuration OK; key file readable; database reachable; {} identit{} with their savedata",
        rows.len(),
        if rows.len() == 1 { "y" } else { "ies" }
    );
    Ok(())
}
