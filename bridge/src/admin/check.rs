//! `check-config`: the configuration, the state directory, the key file, the database and its
//! schema, each identity's savedata, and the Tox bootstrap nodes. Every problem is printed on a
//! line of its own (naming the file, the key or the database's host:port) before the command
//! fails; warnings are printed and do not fail it.

use std::path::Path;

use super::{Result, store};
use crate::config::Config;
use crate::identity;
use crate::store::SchemaState;

pub async fn check_config(config: &Config) -> Result {
    let mut problems = state_dir_problems(&config.bridge.state_dir);
    problems.extend(bootstrap_problems(config));
    let pass = match identity::read_key_file(&config.bridge.key_file) {
        Ok(pass) => Some(pass),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mut warnings = warnings(config);
    let identities = check_database(
        config,
        pass.as_ref().map(|p| p.as_slice()),
        &mut problems,
        &mut warnings,
    )
    .await;
    for warning in &warnings {
        println!("warning: {warning}");
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("problem: {problem}");
        }
        return Err(format!(
            "check-config found {} problem{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ));
    }
    let n = identities.unwrap_or(0);
    println!(
        "configuration OK; state_dir writable; key file readable; database reachable and \
         migrated; {n} identit{} with their savedata",
        if n == 1 { "y" } else { "ies" }
    );
    Ok(())
}

/// Warnings that depend on the configuration and this build alone: printed by `check-config`,
/// never failing it.
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.tox.bootstrap.is_empty() && config.tox.local_discovery {
        warnings.push(
            "tox.bootstrap is empty: the identities find only peers that local discovery \
             reaches on this network"
                .to_string(),
        );
    }
    if let Some(advisory) =
        tox_runtime::libtoxcore::advisory(tox_runtime::libtoxcore::Version::running())
    {
        warnings.push(advisory);
    }
    warnings
}

/// The state directory must exist and take new files: savedata, its temp files and the spool.
fn state_dir_problems(dir: &Path) -> Vec<String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![format!(
                "bridge.state_dir {shown} does not exist: create it, owned by the user the \
                 bridge runs as, mode 0700"
            )];
        }
        Err(e) => return vec![format!("bridge.state_dir {shown}: {e}")],
        Ok(meta) if !meta.is_dir() => {
            return vec![format!("bridge.state_dir {shown} is not a directory")];
        }
        Ok(_) => {}
    }
    let below = ["identities", "spool"].map(|d| dir.join(d));
    std::iter::once(dir)
        .chain(below.iter().map(|p| p.as_path()).filter(|p| p.is_dir()))
        .filter_map(|d| {
            // An unnamed file, gone when closed: the check leaves nothing behind.
            tempfile::tempfile_in(d).err().map(|e| {
                format!(
                    "bridge.state_dir: cannot create files in {}: {e}",
                    d.display()
                )
            })
        })
        .collect()
}

/// Without a bootstrap node (and without local discovery) no identity ever joins the network.
/// The entries are socket addresses already checked at load; nothing is sent to them here.
fn bootstrap_problems(config: &Config) -> Vec<String> {
    if config.tox.bootstrap.is_empty() && !config.tox.local_discovery {
        return vec![
            "tox.bootstrap: no bootstrap node configured (and tox.local_discovery is off): the \
             identities cannot join the Tox network; add { address = \"ip:port\", key = \"…\" } \
             entries"
                .to_string(),
        ];
    }
    config
        .tox
        .bootstrap
        .iter()
        .filter(|b| b.address.port() == 0 || b.address.ip().is_unspecified())
        .map(|b| {
            format!(
                "tox.bootstrap: {} is not an address a node can be reached at",
                b.address
            )
        })
        .collect()
}

/// The database: reachable, migrated to exactly this bridge's schema, and every identity it
/// lists loadable (when the key file could be read). Returns how many identities it lists.
async fn check_database(
    config: &Config,
    pass: Option<&[u8]>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<usize> {
    let store = match store(config) {
        Ok(store) => store,
        Err(e) => {
            problems.push(format!("database.url: {e}"));
            return None;
        }
    };
    let place = store.place().to_string();
    let problem = match store.schema_state().await {
        Ok(SchemaState::Current { .. }) => {
            return identities_and_pins(config, &store, pass, problems, warnings).await;
        }
        Err(e) => e.to_string(),
        Ok(SchemaState::Pending { version, latest }) => format!(
            "{place}: schema version {version}, this bridge needs {latest}: run \
             toxmail-bridge migrate"
        ),
        Ok(SchemaState::Newer { version, latest }) => format!(
            "{place}: schema version {version} is newer than this bridge knows ({latest}): \
             this toxmail-bridge binary is older than the database; run the newer one"
        ),
    };
    problems.push(problem);
    None
}

async fn identities_and_pins(
    config: &Config,
    store: &crate::store::Store,
    pass: Option<&[u8]>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<usize> {
    let rows = match store.identities().await {
        Ok(rows) => rows,
        Err(e) => {
            problems.push(e.to_string());
            return None;
        }
    };
    if let Err(e) = config.tox.ports(rows.len()) {
        problems.push(e);
    }
    if let Some(pass) = pass {
        for row in &rows {
            if let Err(e) = identity::verify(config, &row.address, &row.tox_id, pass).await {
                problems.push(e.to_string());
            }
        }
    }
    match store.pins().await {
        Err(e) => problems.push(e.to_string()),
        Ok(pins) => warnings.extend(pins.iter().filter(|p| p.changed.is_some()).map(|pin| {
            format!(
                "the Tox key in DNS for {} differs from the pinned one; its mail waits \
                 (toxmail-bridge pins list, resolve --accept-new-key)",
                pin.address
            )
        })),
    }
    Some(rows.len())
}
