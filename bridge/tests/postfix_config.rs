//! `postfix-config` against the real `postconf` (Debian package postfix, scripts/deps.sh) of a
//! private Postfix configuration directory (`postconf -c DIR`; nothing is started): the printed
//! commands, run in the printed order, keep the site's existing transport table after the
//! socketmap, never make postconf warn, and running the whole thing again changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SOCKETMAP: &str = "socketmap:inet:127.0.0.1:9025:transport";
const MILTER: &str = "{ inet:127.0.0.1:8892, default_action=accept }";

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A Postfix config dir: Debian's master.cf and a main.cf with a transport table and a milter.
fn postfix_dir(dir: &Path) -> PathBuf {
    let etc = dir.join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::copy("/etc/postfix/master.cf", etc.join("master.cf"))
        .expect("/etc/postfix/master.cf (Debian package postfix, scripts/deps.sh)");
    std::fs::write(
        etc.join("main.cf"),
        "compatibility_level = 3.6\n\
         myhostname = mx.example.org\n\
         transport_maps = hash:/etc/postfix/transport\n\
         smtpd_milters = inet:127.0.0.1:8891\n",
    )
    .unwrap();
    etc
}

/// The example bridge.toml as shipped: its milter is on, with the "warn" policy.
fn bridge_config(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("deploy/bridge.example.toml")).unwrap();
    assert!(
        example.contains("\n[milter]\nlisten = \"127.0.0.1:8892\"")
            && example.contains("policy = \"warn\""),
        "the example config ships the milter on, warning"
    );
    let path = dir.join("bridge.toml");
    std::fs::write(&path, example).unwrap();
    path
}

fn postconf(etc: &Path, args: &[&str]) -> Output {
    Command::new("postconf")
        .arg("-c")
        .arg(etc)
        .args(args)
        .output()
        .expect("postconf (Debian package postfix, scripts/deps.sh)")
}

fn value(etc: &Path, name: &str) -> String {
    text(&postconf(etc, &["-h", name]).stdout)
        .trim()
        .to_string()
}

fn postfix_config(config: &Path, etc: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_toxmail-bridge"))
        .arg("--config")
        .arg(config)
        .arg("postfix-config")
        .arg("--postfix-config-dir")
        .arg(etc)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The postconf commands of section 4, in order.
fn postconf_commands(printed: &str) -> Vec<String> {
    let section = &printed[printed.find("--- 4.").expect("commands section")..];
    section
        .lines()
        .filter(|l| l.starts_with("postconf "))
        .map(String::from)
        .collect()
}

/// Postfix programs wait about 2 s when a config file was changed within the last second (a
/// write may be under way); the files here are complete, so they are dated a minute back.
fn backdate(etc: &Path) {
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for file in ["main.cf", "master.cf"] {
        let f = std::fs::File::options().write(true).open(etc.join(file));
        f.unwrap().set_modified(past).unwrap();
    }
}

/// Runs each command with sh; after each, `postconf -n` must not warn.
fn apply(commands: &[String], etc: &Path) {
    for command in commands {
        let out = Command::new("sh").arg("-c").arg(command).output().unwrap();
        assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{command}");
        backdate(etc);
        let check = postconf(etc, &["-n"]);
        assert_eq!(text(&check.stderr), "", "postconf -n after {command}");
    }
}

#[test]
fn postfix_config_applied_in_order_keeps_the_existing_table_and_never_warns() {
    let dir = tempfile::tempdir().unwrap();
    let etc = postfix_dir(dir.path());
    backdate(&etc);
    let config = bridge_config(dir.path());

    let printed = postfix_config(&config, &etc);
    let commands = postconf_commands(&printed);
    assert!(commands[0].contains(" -Me 'toxlmtp/unix="), "{printed}");
    apply(&commands, &etc);

    assert_eq!(
        value(&etc, "transport_maps"),
        format!("{SOCKETMAP}, hash:/etc/postfix/transport")
    );
    assert_eq!(
        value(&etc, "smtpd_milters"),
        format!("inet:127.0.0.1:8891, {MILTER}")
    );
    assert_eq!(value(&etc, "toxlmtp_destination_recipient_limit"), "50");
    let service = text(&postconf(&etc, &["-M", "toxlmtp/unix"]).stdout);
    assert!(
        service.contains("lmtp -o lmtp_send_xforward_command=yes"),
        "{service}"
    );

    // Again, against the result: the same commands, and the same configuration after them.
    let main_cf = std::fs::read_to_string(etc.join("main.cf")).unwrap();
    let master_cf = std::fs::read_to_string(etc.join("master.cf")).unwrap();
    let again = postconf_commands(&postfix_config(&config, &etc));
    assert_eq!(again, commands);
    apply(&again, &etc);
    assert_eq!(
        std::fs::read_to_string(etc.join("main.cf")).unwrap(),
        main_cf
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("master.cf")).unwrap(),
        master_cf
    );
}

#[test]
fn main_cf_before_master_cf_makes_postconf_warn() {
    // Why the order matters (and that the check above can fail).
    let dir = tempfile::tempdir().unwrap();
    let etc = postfix_dir(dir.path());
    let out = postconf(&etc, &["-e", "toxlmtp_destination_recipient_limit = 50"]);
    assert!(out.status.success());
    backdate(&etc);
    let check = postconf(&etc, &["-n"]);
    assert!(
        text(&check.stderr).contains("unused parameter: toxlmtp_destination_recipient_limit"),
        "{}",
        text(&check.stderr)
    );
}

#[test]
fn postfix_config_without_postconf_says_so_and_keeps_the_tables_comment() {
    let dir = tempfile::tempdir().unwrap();
    let config = bridge_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_toxmail-bridge"))
        .arg("--config")
        .arg(&config)
        .arg("postfix-config")
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("could not be read (could not run postconf:"),
        "{printed}"
    );
    assert!(printed.contains("append your existing tables after the socketmap"));
    assert!(printed.contains(&format!("\ntransport_maps = {SOCKETMAP}\n")));
    assert!(
        postconf_commands(&printed)
            .iter()
            .all(|c| !c.contains("transport_maps"))
    );

    let given = Command::new(env!("CARGO_BIN_EXE_toxmail-bridge"))
        .arg("--config")
        .arg(&config)
        .args([
            "postfix-config",
            "--existing",
            "hash:/etc/postfix/transport",
        ])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let printed = text(&given.stdout);
    assert!(printed.contains(&format!(
        "postconf -e 'transport_maps = {SOCKETMAP}, hash:/etc/postfix/transport'"
    )));
}
