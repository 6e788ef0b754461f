//! `postfix-config`: the main.cf and master.cf lines for this configuration.

use crate::config::{Config, NextHop};

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
