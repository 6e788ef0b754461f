use super::*;

fn example() -> Config {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bridge.example.toml"),
    )
    .unwrap();
    Config::parse(std::path::Path::new("x.toml"), &text).unwrap()
}

fn read(transport_maps: &str) -> Current {
    Current {
        transport_maps: Some(transport_maps.into()),
        smtpd_milters: Some(String::new()),
        message_size_limit: Some(10_240_000),
        mailbox_size_limit: Some(51_200_000),
        virtual_mailbox_limit: Some(51_200_000),
        source: Ok("postconf".into()),
        config_dir: None,
    }
}

#[test]
fn postfix_config_names_the_sockets_and_the_milter_only_when_enabled() {
    let mut config = example();
    // The shipped example has the milter on.
    let out = postfix_config(&config, &read(""));
    assert!(out.contains("smtpd_milters = { inet:127.0.0.1:8892, default_action=accept }"));
    config.milter.listen = String::new();
    let out = postfix_config(&config, &read(""));
    assert!(out.contains("\ntransport_maps = socketmap:inet:127.0.0.1:9025:transport\n"));
    assert!(out.contains("toxlmtp   unix  -       -       n"));
    assert!(!out.contains("smtpd_milters"));
    assert!(
        out.contains("routes Tox recipients to toxlmtp:unix:toxmail/lmtp"),
        "{out}"
    );
    assert!(out.contains("install -d -o toxmail -g postfix -m 2750 /var/spool/postfix/toxmail"));
    config.lmtp.listen = "127.0.0.1:2424".into();
    let out = postfix_config(&config, &read(""));
    assert!(
        out.contains("to toxlmtp:inet:[127.0.0.1]:2424. Any local user"),
        "{out}"
    );
    assert!(!out.contains("install -d"));
    config.milter.listen = "127.0.0.1:8892".into();
    let out = postfix_config(&config, &read(""));
    assert!(out.contains("smtpd_milters = { inet:127.0.0.1:8892, default_action=accept }"));
}

#[test]
fn master_cf_comes_before_main_cf_and_commands_keep_that_order() {
    let out = postfix_config(&example(), &read("hash:/etc/postfix/transport"));
    let master = out.find("--- 1. master.cf").unwrap();
    let main = out.find("--- 2. main.cf").unwrap();
    assert!(master < main, "{out}");
    let commands = &out[out.find("--- 4.").unwrap()..];
    let service = commands.find("postconf -Me 'toxlmtp/unix=toxlmtp unix - - n - - lmtp -o lmtp_send_xforward_command=yes'").unwrap();
    let maps = commands
        .find("postconf -e 'transport_maps = socketmap:inet:127.0.0.1:9025:transport, hash:/etc/postfix/transport'")
        .unwrap();
    let limit = commands
        .find("postconf -e 'toxlmtp_destination_recipient_limit = 50'")
        .unwrap();
    assert!(service < maps && service < limit, "{commands}");
    assert!(commands.trim_end().ends_with("postfix reload"));
}

#[test]
fn the_existing_tables_follow_the_socketmap_once() {
    let sm = "socketmap:inet:127.0.0.1:9025:transport";
    let out = postfix_config(&example(), &read(&format!("hash:/t, {sm}")));
    assert!(
        out.contains(&format!("\ntransport_maps = {sm}, hash:/t\n")),
        "{out}"
    );
}

#[test]
fn unread_tables_are_called_out_and_their_command_is_not_run() {
    let current = Current {
        source: Err("could not run postconf: not found".into()),
        ..Current::default()
    };
    let out = postfix_config(&example(), &current);
    assert!(out.contains("could not be read (could not run postconf: not found)"));
    assert!(out.contains("append your existing tables after the socketmap"));
    assert!(out.contains("\ntransport_maps = socketmap:inet:127.0.0.1:9025:transport\n"));
    assert!(out.contains("# (add your existing entries first) postconf -e 'transport_maps"));
    assert!(out.contains("message_size_limit is unknown"));
}

#[test]
fn commands_name_the_config_dir() {
    let mut current = read("");
    current.config_dir = Some("/srv/postfix b".into());
    let out = postfix_config(&example(), &current);
    assert!(out.contains("postconf -c '/srv/postfix b' -Me 'toxlmtp/unix="));
    assert!(out.contains("postfix -c '/srv/postfix b' reload"));
}

#[test]
fn size_advice_compares_the_two_limits() {
    let bridge = 52_428_800;
    let mut current = read("");
    let smaller = size_advice(bridge, &current, "postconf");
    assert!(
        smaller.contains("a peer's bridge may send larger"),
        "{smaller}"
    );
    assert!(smaller.contains("[lmtp] max_message_size = 10240000"));
    assert!(smaller.contains("postconf -e 'message_size_limit = 52428800'"));
    // Debian's defaults (51200000) are below 50 MiB: local(8) and virtual(8) would refuse to run.
    assert!(smaller.contains("postconf -e 'mailbox_size_limit = 52428800'"));
    assert!(smaller.contains("postconf -e 'virtual_mailbox_limit = 52428800'"));
    current.message_size_limit = Some(100_000_000);
    current.mailbox_size_limit = Some(0);
    let larger = size_advice(bridge, &current, "postconf");
    assert!(larger.contains("they bounce after queueing"), "{larger}");
    assert!(!larger.contains("mailbox_size_limit ="));
    current.message_size_limit = Some(bridge);
    assert!(size_advice(bridge, &current, "postconf").contains("nothing to do"));
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
