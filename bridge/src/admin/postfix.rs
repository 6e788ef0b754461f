//! `postfix-config`: the master.cf and main.cf settings for this configuration, merged with
//! Postfix's current ones (`postconf.rs`), in the order they must be applied (master.cf first:
//! main.cf names its services), the message size advice, then the same as `postconf` commands.

use super::postconf::{Current, append_milter, postconf_command, prepend_table, shell_quote};
use crate::config::{Config, NextHop};

/// Postfix's `message_size_limit` when main.cf does not set it.
const POSTFIX_DEFAULT_SIZE: u64 = 10_240_000;

/// `inet:host:port` or `unix:path`, as Postfix writes socket addresses.
fn postfix_socket(listen: &str) -> String {
    listen
        .strip_prefix("unix:")
        .map_or_else(|| format!("inet:{listen}"), |p| format!("unix:{p}"))
}

/// One master.cf entry.
struct Service {
    comment: String,
    name: String,
    kind: &'static str,
    /// private, unpriv, chroot, wakeup, maxproc, command
    columns: [&'static str; 6],
    options: Vec<String>,
}

impl Service {
    fn master_cf(&self) -> String {
        let c = &self.columns;
        let mut out = format!(
            "{:<9} {:<5} {:<7} {:<7} {:<7} {:<7} {:<7} {}\n",
            self.name, self.kind, c[0], c[1], c[2], c[3], c[4], c[5]
        );
        for o in &self.options {
            out.push_str(&format!("  -o {o}\n"));
        }
        out
    }

    /// `postconf -Me 'name/type=…'`: adds the entry, or replaces one of the same name and type.
    fn command(&self, postconf: &str) -> String {
        let mut line = format!("{} {} {}", self.name, self.kind, self.columns.join(" "));
        for o in &self.options {
            line.push_str(&format!(" -o {o}"));
        }
        let entry = format!("{}/{}={line}", self.name, self.kind);
        format!("{postconf} -Me {}\n", shell_quote(&entry))
    }
}

/// One main.cf parameter; `complete` is false when it should hold the site's existing values
/// too but they could not be read.
struct Setting {
    comment: String,
    name: &'static str,
    value: String,
    complete: bool,
}

pub fn postfix_config(config: &Config, current: &Current) -> String {
    let postconf = postconf_command(current.config_dir.as_deref());
    let services = master_services(config);
    let settings = main_settings(config, current);
    let mut out = header(current);
    out.push_str("# --- 1. master.cf (toxmail-bridge): first, main.cf names these services ---\n");
    for s in &services {
        out.push_str(&s.comment);
        out.push_str(&s.master_cf());
        out.push('\n');
    }
    if let Some(note) = injection_note(&config.next_hop()) {
        out.push_str(note);
        out.push('\n');
    }
    out.push_str("# --- 2. main.cf (toxmail-bridge) ---\n");
    for s in &settings {
        out.push_str(&s.comment);
        out.push_str(&format!("{} = {}\n", s.name, s.value));
    }
    out.push_str(&lmtp_route(config));
    out.push_str(&size_advice(
        config.lmtp.max_message_size,
        current,
        &postconf,
    ));
    out.push_str("\n# --- 4. the same as commands, in this order (as root) ---\n");
    if let Some(dir) = lmtp_socket_dir(config) {
        out.push_str(&format!("install -d -o toxmail -g postfix -m 2750 {dir}\n"));
    }
    for s in &services {
        out.push_str(&s.command(&postconf));
    }
    for s in &settings {
        let assignment = shell_quote(&format!("{} = {}", s.name, s.value));
        match s.complete {
            true => out.push_str(&format!("{postconf} -e {assignment}\n")),
            false => out.push_str(&format!(
                "# (add your existing entries first) {postconf} -e {assignment}\n"
            )),
        }
    }
    let reload = match &current.config_dir {
        Some(dir) => format!(
            "postfix -c {} reload",
            shell_quote(&dir.display().to_string())
        ),
        None => "postfix reload".into(),
    };
    out.push_str(&format!("{reload}\n"));
    out
}

fn header(current: &Current) -> String {
    let source = match &current.source {
        Ok(cmd) => format!("# Postfix's current settings were read with `{cmd} -h`"),
        Err(why) => format!("# Postfix's current settings could not be read ({why})"),
    };
    format!(
        "# toxmail-bridge postfix-config: the Postfix settings for this bridge.toml.\n\
         {source}.\n\
         # Apply master.cf first, then main.cf (postconf warns about main.cf parameters of a\n\
         # service master.cf does not have yet), then reload Postfix; section 4 does all of it.\n\n"
    )
}

fn master_services(config: &Config) -> Vec<Service> {
    let mut services = vec![Service {
        comment:
            "# The LMTP client that talks to the bridge; XFORWARD gives it Postfix's queue id,\n\
                  # which the bridge uses to queue a retried delivery once. Not the stock `lmtp`.\n"
                .into(),
        name: "toxlmtp".into(),
        kind: "unix",
        columns: ["-", "-", "n", "-", "-", "lmtp"],
        options: vec!["lmtp_send_xforward_command=yes".into()],
    }];
    services.extend(injection_service_entry(&config.next_hop()));
    services
}

fn main_settings(config: &Config, current: &Current) -> Vec<Setting> {
    let socketmap = format!(
        "socketmap:{}:{}",
        postfix_socket(&config.socketmap.listen),
        config.socketmap.map_name
    );
    let mut settings = vec![match &current.transport_maps {
        Some(existing) => Setting {
            comment:
                "# Ask the bridge first which recipients go over Tox; your tables follow it.\n"
                    .into(),
            name: "transport_maps",
            value: prepend_table(existing, &socketmap),
            complete: true,
        },
        None => Setting {
            comment:
                "# Ask the bridge first which recipients go over Tox. Your current value could\n\
                      # not be read: append your existing tables after the socketmap, or they are\n\
                      # lost (or run again with --existing \"$(postconf -h transport_maps)\").\n"
                    .into(),
            name: "transport_maps",
            value: socketmap,
            complete: false,
        },
    }];
    settings.push(Setting {
        comment: "# Postfix hands each Tox recipient to the bridge; 50 per LMTP delivery.\n".into(),
        name: "toxlmtp_destination_recipient_limit",
        value: "50".into(),
        complete: true,
    });
    settings.push(Setting {
        comment: "# Unique queue ids: the bridge uses them (XFORWARD IDENT) to queue a retried delivery once.\n".into(),
        name: "enable_long_queue_ids",
        value: "yes".into(),
        complete: true,
    });
    if !config.milter.listen.is_empty() {
        settings.extend(milter_settings(config, current));
    }
    settings
}

fn milter_settings(config: &Config, current: &Current) -> Vec<Setting> {
    let socket = postfix_socket(&config.milter.listen);
    let (value, complete, note) = match &current.smtpd_milters {
        Some(existing) => (
            append_milter(existing, &socket),
            true,
            "# Your milters first, the bridge's last: it reports only on mail they let through.\n",
        ),
        None => (
            append_milter("", &socket),
            false,
            "# Your current smtpd_milters could not be read: put your milters before this one.\n",
        ),
    };
    vec![
        Setting {
            comment: format!(
                "# Warn senders (or refuse, by policy) when one message mixes Tox and plain recipients.\n\
                 # default_action=accept: a stopped bridge never blocks mail.\n{note}\
                 # Optional, for sendmail(1)/webmail submissions (docs/postfix.md before using reject):\n\
                 # non_smtpd_milters = $smtpd_milters\n"
            ),
            name: "smtpd_milters",
            value,
            complete,
        },
        Setting {
            comment: String::new(),
            name: "milter_protocol",
            value: "6".into(),
            complete: true,
        },
    ]
}

/// The directory of the LMTP socket, when LMTP listens on a UNIX socket.
fn lmtp_socket_dir(config: &Config) -> Option<String> {
    match crate::config::parse_listen(&config.lmtp.listen) {
        Ok(crate::config::ListenAddr::Unix(path)) => Some(
            path.parent()
                .unwrap_or(std::path::Path::new("/"))
                .display()
                .to_string(),
        ),
        _ => None,
    }
}

/// How Postfix reaches the bridge's LMTP server: the transport the socketmap answers, and for a
/// UNIX socket the directory it needs; a TCP port gets a warning.
fn lmtp_route(config: &Config) -> String {
    let transport = config.socketmap_nexthop();
    match lmtp_socket_dir(config) {
        Some(dir) => format!(
            "\n# The socketmap routes Tox recipients to {transport}\n\
             # (a path relative to queue_directory works for a chrooted lmtp too). The bridge\n\
             # makes the socket mode 0660 with the group of its directory; create that once:\n\
             #   install -d -o toxmail -g postfix -m 2750 {dir}\n"
        ),
        None => format!(
            "\n# The socketmap routes Tox recipients to {transport}. Any local user can connect\n\
             # to that port and hand in mail as any identity: prefer [lmtp] listen = \"unix:...\".\n"
        ),
    }
}

/// `message_size_limit` against `[lmtp] max_message_size`: a message Postfix takes and the bridge
/// refuses bounces after queueing; one a peer's bridge sends that our Postfix refuses at injection
/// bounces after the ack. The two should be equal, at this site and its peers.
fn size_advice(bridge: u64, current: &Current, postconf: &str) -> String {
    let mut out = String::from("\n# --- 3. message size ---\n");
    let postfix = current.message_size_limit;
    let shown = postfix.map_or_else(
        || format!("unknown (Postfix's default is {POSTFIX_DEFAULT_SIZE})"),
        |p| p.to_string(),
    );
    out.push_str(&format!(
        "# The bridge takes messages up to {bridge} bytes ([lmtp] max_message_size); Postfix's\n\
         # message_size_limit is {shown}.\n"
    ));
    match postfix {
        Some(p) if p == bridge => {
            out.push_str("# They match: nothing to do.\n");
            return out;
        }
        Some(p) if p == 0 || p > bridge => out.push_str(
            "# Postfix accepts messages the bridge refuses (552 5.3.4): they bounce after queueing.\n",
        ),
        _ => out.push_str(
            "# Larger mail from your users is refused at SMTP, but a peer's bridge may send larger\n\
             # messages: yours takes them and your Postfix refuses them at injection (they bounce).\n",
        ),
    }
    let set_postfix = shell_quote(&format!("message_size_limit = {bridge}"));
    match postfix {
        Some(0) => out.push_str(&format!(
            "# Make them equal, here and at the sites you exchange Tox mail with:\n\
             #   {postconf} -e {set_postfix}\n"
        )),
        _ => out.push_str(&format!(
            "# Make them equal, here and at the sites you exchange Tox mail with. Either set\n\
             # [lmtp] max_message_size = {} in bridge.toml, or set Postfix's to the bridge's:\n\
             #   {postconf} -e {set_postfix}\n",
            postfix.map_or("<your message_size_limit>".into(), |p| p.to_string()),
        )),
    }
    for (name, limit) in [
        ("mailbox_size_limit", current.mailbox_size_limit),
        ("virtual_mailbox_limit", current.virtual_mailbox_limit),
    ] {
        // local(8) and virtual(8) refuse to run with a mailbox limit below the message limit.
        if limit.is_none_or(|l| l != 0 && l < bridge) {
            out.push_str(&format!(
                "#   {postconf} -e {}   (must not be below message_size_limit; 0 = none)\n",
                shell_quote(&format!("{name} = {bridge}"))
            ));
        }
    }
    out
}

/// The smtpd the bridge injects received mail into (`inbound.next_hop`): it takes mail for this
/// site's own domains only and trusts no client, so even a recipient that got past the bridge's
/// checks cannot make it relay; pipelining before the greeting and bare newlines are refused.
fn injection_service_entry(hop: &NextHop) -> Option<Service> {
    if hop.lmtp || hop.addr.port() == 25 {
        return None;
    }
    Some(Service {
        comment: format!(
            "# {INJECTION_MARK}: received mail from the bridge (inbound.next_hop), local domains only.\n\
             # The bridge's DSNs go to inbound.notice_hop (your ordinary smtpd), not here.\n"
        ),
        name: hop.addr.to_string(),
        kind: "inet",
        columns: ["n", "-", "n", "-", "-", "smtpd"],
        options: [
            "syslog_name=postfix/toxmail-inject",
            "mynetworks=",
            "smtpd_client_restrictions=",
            "smtpd_helo_restrictions=",
            "smtpd_sender_restrictions=",
            "smtpd_relay_restrictions=reject_unauth_destination",
            "smtpd_recipient_restrictions=reject_unauth_destination",
            "smtpd_data_restrictions=reject_unauth_pipelining",
            "smtpd_forbid_unauth_pipelining=yes",
            "smtpd_forbid_bare_newline=yes",
        ]
        .map(String::from)
        .to_vec(),
    })
}

/// What stands instead of the injection service when `inbound.next_hop` needs none.
fn injection_note(hop: &NextHop) -> Option<&'static str> {
    if hop.lmtp {
        return Some(
            "# inbound.next_hop is LMTP: the bridge injects into the mailbox server directly.\n",
        );
    }
    (hop.addr.port() == 25).then_some(
        "# inbound.next_hop is port 25, the ordinary smtpd, which trusts mynetworks: give the\n\
         # bridge a service of its own (inbound.next_hop = \"smtp:127.0.0.1:10026\", and\n\
         # inbound.notice_hop = \"smtp:127.0.0.1:25\" for the DSNs it sends), then run this again.\n",
    )
}

/// The master.cf block of the injection service for `hop`, with its comment; or the note saying
/// why there is none.
pub fn injection_service(hop: &NextHop) -> String {
    match injection_service_entry(hop) {
        Some(s) => format!("{}{}", s.comment, s.master_cf()),
        None => injection_note(hop).unwrap_or_default().into(),
    }
}

/// The comment line that opens the injection service in `postfix-config`'s output.
pub const INJECTION_MARK: &str = "toxmail injection service";

#[cfg(test)]
mod tests;
