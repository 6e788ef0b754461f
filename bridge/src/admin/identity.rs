//! `identity`: the Tox identities of local mailboxes.

use std::path::{Path, PathBuf};

use toxmail_protocol::ToxId;
use zeroize::Zeroizing;

use super::bundle::{self, Bundle, Entry};
use super::{Result, normalised, store};
use crate::config::Config;
use crate::identity;
use crate::store::{IdentityRow, Store};

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

/// Writes a bundle of one identity (`Some(address)`) or all of them (`None`) to `out`, a new
/// file: address, Tox ID and savedata, sealed under the bundle passphrase.
pub async fn identity_export(
    config: &Config,
    address: Option<&str>,
    out: &Path,
    passphrase_file: Option<&Path>,
) -> Result {
    let passphrase = bundle::read_passphrase(passphrase_file)?;
    if out.exists() {
        return Err(format!("{} exists already; nothing written", out.display()));
    }
    let key = identity::read_key_file(&config.bridge.key_file).map_err(|e| e.to_string())?;
    let rows = store(config)?
        .identities()
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<IdentityRow> = match address {
        None => rows,
        Some(address) => {
            let address = identity_address(config, address)?;
            let row = rows.into_iter().find(|r| r.address == address);
            vec![row.ok_or_else(|| format!("no identity {address}"))?]
        }
    };
    if rows.is_empty() {
        return Err("no identities to export".into());
    }
    let mut identities = Vec::new();
    for row in &rows {
        identities.push(exported(config, row, &key).await?);
    }
    let bundle = Bundle {
        source: config.bridge.hostname.clone(),
        identities,
    };
    let bytes = bundle::seal(&bundle, &passphrase).map_err(|e| e.to_string())?;
    write_new(out, &bytes).map_err(|e| format!("{}: {e}; nothing written", out.display()))?;
    for entry in &bundle.identities {
        println!("exported {}\t{}", entry.address, entry.tox_id);
    }
    println!(
        "{} identit{} in {}; stop this bridge before the new host starts them (one Tox key \
         online at two hosts splits its mail)",
        rows.len(),
        if rows.len() == 1 { "y" } else { "ies" },
        out.display()
    );
    Ok(())
}

/// `default` names the site's default identity; anything else is a mail address.
fn identity_address(config: &Config, address: &str) -> std::result::Result<String, String> {
    match address {
        identity::DEFAULT_IDENTITY => Ok(address.to_string()),
        _ => normalised(config, address),
    }
}

/// One identity's bundle entry: its savedata decrypted with this host's key file, after
/// checking that it holds the key the database lists.
async fn exported(
    config: &Config,
    row: &IdentityRow,
    key: &[u8],
) -> std::result::Result<Entry, String> {
    identity::verify(config, &row.address, &row.tox_id, key)
        .await
        .map_err(|e| format!("{e}; nothing written"))?;
    let path = identity::savedata_path(&config.bridge.state_dir, &row.address);
    let savedata = tox_runtime::read_savedata(&path, Some(key))
        .map_err(|e| format!("identity {}: {e}; nothing written", row.address))?
        .ok_or_else(|| format!("identity {}: {} vanished", row.address, path.display()))?;
    Ok(Entry {
        address: row.address.clone(),
        tox_id: row.tox_id,
        savedata,
    })
}

/// Creates `path` with `bytes` (mode 0600), failing if it exists; never leaves a partial file.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".toxmail-bundle.")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// What importing one bundle entry does here.
enum Step {
    /// Listed here with the same key and its savedata in place.
    Unchanged,
    /// Listed here with the same key, savedata missing: the file is written.
    Restore,
    /// New here: the file is written and the row inserted.
    Add,
}

/// Imports a bundle: every identity in it is checked against this site first (an address
/// listed here with another key, a key listed under another address, a stray savedata file
/// refuse the whole import), its savedata is written encrypted with this host's key file and
/// loaded once from a staging directory, then moved into place and listed in the database in
/// one transaction. Any failure leaves the site as it was.
pub async fn identity_import(
    config: &Config,
    path: &Path,
    passphrase_file: Option<&Path>,
) -> Result {
    let passphrase = bundle::read_passphrase(passphrase_file)?;
    let key = identity::read_key_file(&config.bridge.key_file).map_err(|e| e.to_string())?;
    let bundle = read_bundle(path, &passphrase)?;
    let store = store(config)?;
    let rows = store.identities().await.map_err(|e| e.to_string())?;
    let mut steps = Vec::new();
    for entry in &bundle.identities {
        steps.push(plan(config, &rows, entry).map_err(|e| format!("{e}; nothing imported"))?);
    }
    let writes: Vec<&Entry> = bundle
        .identities
        .iter()
        .zip(&steps)
        .filter(|(_, s)| !matches!(s, Step::Unchanged))
        .map(|(e, _)| e)
        .collect();
    let staging = stage(config, &writes, &key)
        .await
        .map_err(|e| format!("{e}; nothing imported"))?;
    let added: Vec<(String, ToxId)> = bundle
        .identities
        .iter()
        .zip(&steps)
        .filter(|(_, s)| matches!(s, Step::Add))
        .map(|(e, _)| (e.address.clone(), e.tox_id))
        .collect();
    commit(config, &store, staging, &writes, &added)
        .await
        .map_err(|e| format!("{e}; nothing imported"))?;
    report(config, &bundle, &steps);
    println!("start the bridge here; its peers reach these identities at their old Tox IDs");
    Ok(())
}

/// What the import did, identity by identity, and what would keep an identity's mail out.
fn report(config: &Config, bundle: &Bundle, steps: &[Step]) {
    println!("bundle from {}", bundle.source);
    let local = config.local_domains();
    for entry in &bundle.identities {
        let domain = entry.address.rsplit_once('@').map(|(_, d)| d);
        if domain.is_some_and(|d| !local.iter().any(|l| l.eq_ignore_ascii_case(d))) {
            println!(
                "warning: {} is not in inbound.local_domains: mail to it is refused here",
                entry.address
            );
        }
    }
    for (entry, step) in bundle.identities.iter().zip(steps) {
        let done = match step {
            Step::Unchanged => "already here, unchanged",
            Step::Restore => "savedata restored",
            Step::Add => "imported",
        };
        println!("{}\t{}\t{done}", entry.address, entry.tox_id);
    }
}

fn read_bundle(path: &Path, passphrase: &[u8]) -> std::result::Result<Bundle, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("bundle {shown}: {e}"))?;
    if meta.len() > bundle::MAX_BUNDLE_BYTES {
        return Err(format!("bundle {shown}: too large; nothing imported"));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("bundle {shown}: {e}"))?);
    bundle::open(&bytes, passphrase).map_err(|e| format!("bundle {shown}: {e}; nothing imported"))
}

/// Decides what importing `entry` does, refusing what would replace or shadow a key.
fn plan(config: &Config, rows: &[IdentityRow], entry: &Entry) -> std::result::Result<Step, String> {
    let address = &entry.address;
    let key = entry.tox_id.public_key();
    if address != identity::DEFAULT_IDENTITY && normalised(config, address)? != *address {
        return Err(format!(
            "bundle lists {address:?}, not a normalised address"
        ));
    }
    if let Some(other) = rows
        .iter()
        .find(|r| r.address != *address && r.tox_id.public_key() == key)
    {
        return Err(format!(
            "identity {address}: its key {key} is listed here already as {}",
            other.address
        ));
    }
    let savedata = identity::savedata_path(&config.bridge.state_dir, address);
    match rows.iter().find(|r| r.address == *address) {
        Some(row) if row.tox_id.public_key() != key => Err(format!(
            "identity {address} exists here with key {}, the bundle holds {key}; refusing to \
             overwrite it",
            row.tox_id.public_key()
        )),
        Some(_) if savedata.exists() => Ok(Step::Unchanged),
        Some(_) => Ok(Step::Restore),
        None if savedata.exists() => Err(format!(
            "identity {address}: {} exists but the database does not list it; move it away \
             first",
            savedata.display()
        )),
        None => Ok(Step::Add),
    }
}

/// Writes each savedata, encrypted with this host's key file, below a staging directory in
/// `state_dir`, and loads it from there as the bridge will (same key as the bundle says).
async fn stage(
    config: &Config,
    writes: &[&Entry],
    key: &[u8],
) -> std::result::Result<tempfile::TempDir, String> {
    let state_dir = &config.bridge.state_dir;
    let shown = state_dir.display();
    std::fs::create_dir_all(state_dir.join("identities"))
        .map_err(|e| format!("bridge.state_dir {shown}: {e}"))?;
    let staging = tempfile::Builder::new()
        .prefix(".import.")
        .tempdir_in(state_dir)
        .map_err(|e| format!("bridge.state_dir {shown}: {e}"))?;
    std::fs::create_dir(staging.path().join("identities"))
        .map_err(|e| format!("{}: {e}", staging.path().display()))?;
    let mut staged = config.clone();
    staged.bridge.state_dir = staging.path().to_path_buf();
    for entry in writes {
        let path = identity::savedata_path(staging.path(), &entry.address);
        tox_runtime::write_savedata(&path, Some(key), &entry.savedata)
            .map_err(|e| format!("identity {}: {e}", entry.address))?;
        identity::verify(&staged, &entry.address, &entry.tox_id, key)
            .await
            .map_err(|e| format!("the bundle's savedata for {e}"))?;
    }
    Ok(staging)
}

/// Moves the staged files into place and lists the new identities; undoes the moves when the
/// database refuses.
async fn commit(
    config: &Config,
    store: &Store,
    staging: tempfile::TempDir,
    writes: &[&Entry],
    added: &[(String, ToxId)],
) -> std::result::Result<(), String> {
    let mut placed: Vec<PathBuf> = Vec::new();
    let undo = |placed: &[PathBuf]| {
        for path in placed {
            let _ = std::fs::remove_file(path);
        }
    };
    for entry in writes {
        let from = identity::savedata_path(staging.path(), &entry.address);
        let to = identity::savedata_path(&config.bridge.state_dir, &entry.address);
        if let Err(e) = std::fs::rename(&from, &to) {
            undo(&placed);
            return Err(format!("{}: {e}", to.display()));
        }
        placed.push(to);
    }
    let identities = config.bridge.state_dir.join("identities");
    let synced = std::fs::File::open(&identities).and_then(|d| d.sync_all());
    if let Err(e) = synced {
        undo(&placed);
        return Err(format!("{}: {e}", identities.display()));
    }
    if let Err(e) = store.add_identities(added).await {
        undo(&placed);
        return Err(e.to_string());
    }
    Ok(())
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
