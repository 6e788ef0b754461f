//! The admin subcommands: each opens what it needs, does one thing, and prints plain text.

use std::time::{SystemTime, UNIX_EPOCH};

use toxmail_protocol::ToxId;

use crate::app::resolver_config;
use crate::config::{Config, NextHop};
use crate::identity;
use crate::resolve::{Resolver, Route, RouteSource};
use crate::store::Store;

type Result = std::result::Result<(), String>;

fn store(config: &Config) -> std::result::Result<Store, String> {
    Store::connect(&config.database.url, 2).map_err(|e| e.to_string())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn normalised(config: &Config, address: &str) -> std::result::Result<String, String> {
    crate::resolve::normalise(address, config.resolver.recipient_delimiter.as_deref())
        .ok_or_else(|| format!("{address:?} is not a mail address"))
}

pub async fn migrate(config: &Config) -> Result {
    let n = store(config)?.migrate().await.map_err(|e| e.to_string())?;
    println!("applied {n} migration(s)");
    Ok(())
}

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

pub async fn queue_list(config: &Config) -> Result {
    let rows = store(config)?
        .queue_list()
        .await
        .map_err(|e| e.to_string())?;
    println!("id\tstate\tattempts\tnext_attempt\texpires\trecipient\tsender\tlast_error");
    for r in &rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t<{}>\t{}",
            r.id,
            r.state,
            r.attempts,
            secs(r.next_attempt),
            secs(r.expires),
            r.recipient,
            r.envelope_sender,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    println!("{} message copies", rows.len());
    Ok(())
}

/// `inet:host:port` or `unix:path`, as Postfix writes socket addresses.
fn postfix_socket(listen: &str) -> String {
    listen
        .strip_prefix("unix:")
        .map_or_else(|| format!("inet:{listen}"), |p| format!("unix:{p}"))
}

pub fn postfix_config(config: &Config) -> String {
    let mut out = format!(
        "# --- main.cf (toxmail-bridge) ---\n\
         # Ask the bridge first which recipients go over Tox; keep your other tables after it.\n\
         transport_maps = socketmap:{sock}:{map}\n\
         # Postfix hands each Tox recipient to the bridge; 50 per LMTP delivery.\n\
         toxlmtp_destination_recipient_limit = 50\n\
         # Unique queue ids: the bridge uses them (XFORWARD IDENT) to queue a retried delivery once.\n\
         enable_long_queue_ids = yes\n",
        sock = postfix_socket(&config.socketmap.listen),
        map = config.socketmap.map_name
    );
    if !config.milter.listen.is_empty() {
        out.push_str(&format!(
            "# Warn senders (or refuse, by policy) when one message mixes Tox and plain recipients.\n\
             # accept: a stopped bridge never blocks mail. List this milter last.\n\
             smtpd_milters = {{ {sock}, default_action=accept }}\n\
             milter_protocol = 6\n\
             # Optional, for sendmail(1)/webmail submissions (see docs/postfix.md before using reject):\n\
             # non_smtpd_milters = $smtpd_milters\n",
            sock = postfix_socket(&config.milter.listen)
        ));
    }
    out.push_str(
        "\n# --- master.cf (toxmail-bridge) ---\n\
         # The LMTP client that talks to the bridge; XFORWARD gives it Postfix's queue id.\n\
         toxlmtp   unix  -       -       n       -       -       lmtp\n  \
           -o lmtp_send_xforward_command=yes\n",
    );
    out.push_str(&lmtp_route(config));
    out.push_str(&injection_service(&config.next_hop()));
    out
}

/// How Postfix reaches the bridge's LMTP server: the transport the socketmap answers, and for a
/// UNIX socket the directory it needs; a TCP port gets a warning.
fn lmtp_route(config: &Config) -> String {
    let transport = config.socketmap_nexthop();
    match crate::config::parse_listen(&config.lmtp.listen) {
        Ok(crate::config::ListenAddr::Unix(path)) => {
            let dir = path.parent().unwrap_or(std::path::Path::new("/"));
            format!(
                "\n# The socketmap routes Tox recipients to {transport}\n\
                 # (a path relative to queue_directory works for a chrooted lmtp too). The bridge\n\
                 # makes the socket mode 0660 with the group of its directory; create that once:\n\
                 #   install -d -o toxmail -g postfix -m 2750 {dir}\n\n",
                dir = dir.display()
            )
        }
        _ => format!(
            "\n# The socketmap routes Tox recipients to {transport}. Any local user can connect\n\
             # to that port and hand in mail as any identity: prefer [lmtp] listen = \"unix:...\".\n\n"
        ),
    }
}

/// The smtpd the bridge injects received mail into (`inbound.next_hop`): it takes mail for this
/// site's own domains only and trusts no client, so even a recipient that got past the bridge's
/// checks cannot make it relay; pipelining before the greeting and bare newlines are refused.
pub fn injection_service(hop: &NextHop) -> String {
    if hop.lmtp {
        return "# inbound.next_hop is LMTP: the bridge injects into the mailbox server directly.\n"
            .into();
    }
    if hop.addr.port() == 25 {
        return "# inbound.next_hop is port 25, the ordinary smtpd, which trusts mynetworks: give the\n\
                # bridge a service of its own (inbound.next_hop = \"smtp:127.0.0.1:10026\", and\n\
                # inbound.notice_hop = \"smtp:127.0.0.1:25\" for the DSNs it sends), then run this again.\n"
            .into();
    }
    format!(
        "# {INJECTION_MARK}: received mail from the bridge (inbound.next_hop), local domains only.\n\
         # The bridge's DSNs go to inbound.notice_hop (your ordinary smtpd), not here.\n\
         {addr} inet  n       -       n       -       -       smtpd\n  \
           -o syslog_name=postfix/toxmail-inject\n  \
           -o mynetworks=\n  \
           -o smtpd_client_restrictions=\n  \
           -o smtpd_helo_restrictions=\n  \
           -o smtpd_sender_restrictions=\n  \
           -o smtpd_relay_restrictions=reject_unauth_destination\n  \
           -o smtpd_recipient_restrictions=reject_unauth_destination\n  \
           -o smtpd_data_restrictions=reject_unauth_pipelining\n  \
           -o smtpd_forbid_unauth_pipelining=yes\n  \
           -o smtpd_forbid_bare_newline=yes\n",
        addr = hop.addr
    )
}

/// The comment line that opens the injection service in `postfix-config`'s output.
pub const INJECTION_MARK: &str = "toxmail injection service";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_config_names_the_sockets_and_the_milter_only_when_enabled() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bridge.example.toml"),
        )
        .unwrap();
        let mut config = Config::parse(std::path::Path::new("x.toml"), &text).unwrap();
        let out = postfix_config(&config);
        assert!(out.contains("transport_maps = socketmap:inet:127.0.0.1:9025:transport"));
        assert!(out.contains("toxlmtp   unix"));
        assert!(!out.contains("smtpd_milters"));
        assert!(
            out.contains("routes Tox recipients to toxlmtp:unix:toxmail/lmtp"),
            "{out}"
        );
        assert!(
            out.contains("install -d -o toxmail -g postfix -m 2750 /var/spool/postfix/toxmail")
        );
        config.lmtp.listen = "127.0.0.1:2424".into();
        let out = postfix_config(&config);
        assert!(
            out.contains("to toxlmtp:inet:[127.0.0.1]:2424. Any local user"),
            "{out}"
        );
        config.milter.listen = "127.0.0.1:8892".into();
        let out = postfix_config(&config);
        assert!(out.contains("smtpd_milters = { inet:127.0.0.1:8892, default_action=accept }"));
    }

    #[test]
    fn the_injection_service_trusts_no_client_and_takes_local_domains_only() {
        let hop = crate::config::parse_next_hop("smtp:127.0.0.1:10026").unwrap();
        let out = injection_service(&hop);
        assert!(
            out.contains("127.0.0.1:10026 inet  n       -       n"),
            "{out}"
        );
        for option in [
            "-o mynetworks=\n",
            "-o smtpd_relay_restrictions=reject_unauth_destination",
            "-o smtpd_recipient_restrictions=reject_unauth_destination",
            "-o smtpd_forbid_unauth_pipelining=yes",
        ] {
            assert!(out.contains(option), "{option}: {out}");
        }
        let port25 = crate::config::parse_next_hop("smtp:127.0.0.1:25").unwrap();
        assert!(!injection_service(&port25).contains("inet"));
    }
}
