//! Postfix's current settings as `postfix-config` needs them: read with `postconf -h`, and the
//! pure merge of the bridge's entries into Postfix's table and milter lists.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the operator told `postfix-config` about the Postfix it configures.
#[derive(Debug, Clone, Default)]
pub struct PostfixSite {
    /// `--existing`: the current `transport_maps`, instead of asking postconf.
    pub transport_maps: Option<String>,
    /// `--existing-milters`: the current `smtpd_milters`, instead of asking postconf.
    pub smtpd_milters: Option<String>,
    /// `--postfix-config-dir`: `postconf -c DIR`.
    pub config_dir: Option<PathBuf>,
}

/// Postfix's current values; `None` where they could not be read (`source` says why).
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub transport_maps: Option<String>,
    pub smtpd_milters: Option<String>,
    pub message_size_limit: Option<u64>,
    pub mailbox_size_limit: Option<u64>,
    pub virtual_mailbox_limit: Option<u64>,
    /// Where the values come from ("postconf -c DIR"), or why postconf could not give them.
    pub source: Result<String, String>,
    /// `postconf -c DIR` for the printed commands.
    pub config_dir: Option<PathBuf>,
}

impl Default for Current {
    fn default() -> Current {
        Current {
            transport_maps: None,
            smtpd_milters: None,
            message_size_limit: None,
            mailbox_size_limit: None,
            virtual_mailbox_limit: None,
            source: Err("not read".into()),
            config_dir: None,
        }
    }
}

/// The parameters read, in the order `postconf -h` prints them.
const PARAMETERS: [&str; 5] = [
    "transport_maps",
    "smtpd_milters",
    "message_size_limit",
    "mailbox_size_limit",
    "virtual_mailbox_limit",
];

impl Current {
    /// Runs `postconf [-c DIR] -h …` once; values given on the command line win.
    pub fn read(site: &PostfixSite) -> Current {
        let mut current = match postconf_values(site.config_dir.as_deref()) {
            Ok(values) => Current {
                transport_maps: Some(values[0].clone()),
                smtpd_milters: Some(values[1].clone()),
                message_size_limit: values[2].parse().ok(),
                mailbox_size_limit: values[3].parse().ok(),
                virtual_mailbox_limit: values[4].parse().ok(),
                source: Ok(postconf_command(site.config_dir.as_deref())),
                config_dir: None,
            },
            Err(why) => Current {
                source: Err(why),
                ..Current::default()
            },
        };
        current.config_dir = site.config_dir.clone();
        if let Some(v) = &site.transport_maps {
            current.transport_maps = Some(v.clone());
        }
        if let Some(v) = &site.smtpd_milters {
            current.smtpd_milters = Some(v.clone());
        }
        current
    }
}

/// `postconf` or `postconf -c DIR`, as printed in commands.
pub fn postconf_command(dir: Option<&Path>) -> String {
    match dir {
        Some(dir) => format!("postconf -c {}", shell_quote(&dir.display().to_string())),
        None => "postconf".into(),
    }
}

fn postconf_values(dir: Option<&Path>) -> Result<Vec<String>, String> {
    // Without main.cf postconf fails, and Postfix programs sleep a second before a fatal exit.
    let main_cf = match dir {
        Some(dir) => dir.join("main.cf"),
        None => Path::new(&postconf(&["-d", "-h", "config_directory"])?).join("main.cf"),
    };
    if !main_cf.exists() {
        return Err(format!("{} does not exist", main_cf.display()));
    }
    let mut cmd = Command::new("postconf");
    if let Some(dir) = dir {
        cmd.arg("-c").arg(dir);
    }
    let out = cmd
        .arg("-h")
        .args(PARAMETERS)
        .output()
        .map_err(|e| format!("could not run postconf: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "postconf failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if values.len() != PARAMETERS.len() {
        return Err(format!("postconf printed {} lines, not 5", values.len()));
    }
    Ok(values)
}

/// Runs postconf without `-c` and returns its output, trimmed.
fn postconf(args: &[&str]) -> Result<String, String> {
    let out = Command::new("postconf")
        .args(args)
        .output()
        .map_err(|e| format!("could not run postconf: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(format!(
            "postconf failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Splits a Postfix list value the way Postfix does: on commas and white space outside `{ … }`.
pub fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' | ' ' | '\t' | '\r' | '\n' if depth == 0 => {
                if !item.is_empty() {
                    items.push(std::mem::take(&mut item));
                }
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    if !item.trim().is_empty() {
        items.push(item);
    }
    items
}

/// `ours` first, then the existing tables in their order without `ours`: a Tox route wins, and
/// merging the result again gives the same value.
pub fn prepend_table(existing: &str, ours: &str) -> String {
    let mut items = vec![ours.to_string()];
    items.extend(split_list(existing).into_iter().filter(|t| t != ours));
    items.join(", ")
}

/// The existing milters first, then ours (`{ socket, default_action=accept }`), without any other
/// entry for our socket: the bridge only reports on mail the other milters let through.
pub fn append_milter(existing: &str, socket: &str) -> String {
    let mut items: Vec<String> = split_list(existing)
        .into_iter()
        .filter(|m| milter_socket(m) != socket)
        .collect();
    items.push(format!("{{ {socket}, default_action=accept }}"));
    items.join(", ")
}

/// The socket of a milter entry: itself, or the first word inside `{ … }`.
fn milter_socket(entry: &str) -> &str {
    match entry.strip_prefix('{') {
        Some(inner) => inner
            .trim_end_matches('}')
            .split([',', ' ', '\t', '\n'])
            .find(|w| !w.is_empty())
            .unwrap_or(""),
        None => entry,
    }
}

/// Single-quoted for sh: `'` becomes `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SM: &str = "socketmap:inet:127.0.0.1:9025:transport";

    #[test]
    fn split_list_keeps_braced_entries_whole() {
        assert_eq!(
            split_list(" hash:/a,  pcre:/b\n\tldap:/c ,"),
            ["hash:/a", "pcre:/b", "ldap:/c"]
        );
        assert_eq!(
            split_list("{ inet:1:2, default_action=accept }, unix:/m"),
            ["{ inet:1:2, default_action=accept }", "unix:/m"]
        );
        assert_eq!(
            split_list("inline:{ {a=b}, {c=d} } hash:/x"),
            ["inline:{ {a=b}, {c=d} }", "hash:/x"]
        );
        assert!(split_list("").is_empty());
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn prepend_table_puts_the_socketmap_first_and_keeps_the_rest_in_order() {
        assert_eq!(prepend_table("", SM), SM);
        assert_eq!(
            prepend_table("hash:/etc/postfix/transport", SM),
            format!("{SM}, hash:/etc/postfix/transport")
        );
        assert_eq!(
            prepend_table("hash:/t,pcre:/p $other_maps", SM),
            format!("{SM}, hash:/t, pcre:/p, $other_maps")
        );
        // Already present, anywhere: moved to the front, never twice.
        assert_eq!(
            prepend_table(&format!("hash:/t, {SM}"), SM),
            format!("{SM}, hash:/t")
        );
    }

    #[test]
    fn merging_its_own_result_again_changes_nothing() {
        for existing in [
            "",
            "hash:/t",
            "hash:/t, pcre:/p",
            SM,
            "proxy:ldap:/opt/z.cf",
        ] {
            let once = prepend_table(existing, SM);
            assert_eq!(prepend_table(&once, SM), once, "{existing}");
            let milters = append_milter(existing, "inet:127.0.0.1:8892");
            assert_eq!(
                append_milter(&milters, "inet:127.0.0.1:8892"),
                milters,
                "{existing}"
            );
        }
    }

    #[test]
    fn append_milter_goes_last_and_replaces_an_entry_for_the_same_socket() {
        let ours = "{ inet:127.0.0.1:8892, default_action=accept }";
        assert_eq!(append_milter("", "inet:127.0.0.1:8892"), ours);
        assert_eq!(
            append_milter("inet:127.0.0.1:8891", "inet:127.0.0.1:8892"),
            format!("inet:127.0.0.1:8891, {ours}")
        );
        assert_eq!(
            append_milter(
                "inet:127.0.0.1:8892, { unix:/run/dkim.sock, default_action=tempfail }",
                "inet:127.0.0.1:8892"
            ),
            format!("{{ unix:/run/dkim.sock, default_action=tempfail }}, {ours}")
        );
        assert_eq!(
            append_milter(
                "{inet:127.0.0.1:8892,default_action=tempfail}",
                "inet:127.0.0.1:8892"
            ),
            ours
        );
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
