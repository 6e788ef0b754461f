//! Checks on the daemons' command lines: every subcommand, argument and flag has help text.

/// Each subcommand, argument and flag under `cmd` (itself included) without help text, as a
/// path like `toxmail-bridge queue retry <id>`; clap's own `help` and `version` are skipped.
pub fn undocumented(cmd: &clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    walk(cmd, "", &mut missing);
    missing
}

/// Fails (for a daemon's unit test) when clap finds `cmd` inconsistent or an entry has no help text.
pub fn assert_documented(cmd: clap::Command) {
    cmd.clone().debug_assert();
    let missing = undocumented(&cmd);
    assert!(missing.is_empty(), "no help text: {missing:?}");
}

fn walk(cmd: &clap::Command, parent: &str, missing: &mut Vec<String>) {
    let path = format!("{parent} {}", cmd.get_name()).trim().to_string();
    let blank = |text: Option<&clap::builder::StyledStr>| {
        text.is_none_or(|t| t.to_string().trim().is_empty())
    };
    if blank(cmd.get_about()) {
        missing.push(path.clone());
    }
    for arg in cmd.get_arguments() {
        let builtin = matches!(arg.get_id().as_str(), "help" | "version");
        if !builtin && blank(arg.get_help()) {
            missing.push(format!("{path} <{}>", arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(sub, &path, missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subcommand_or_argument_without_help_is_named() {
        let cmd = clap::Command::new("tool")
            .about("does things")
            .arg(clap::Arg::new("config").long("config").help("file"))
            .subcommand(
                clap::Command::new("show")
                    .arg(clap::Arg::new("id"))
                    .arg(clap::Arg::new("all").long("all").help("   ")),
            );
        assert_eq!(
            undocumented(&cmd),
            ["tool show", "tool show <id>", "tool show <all>"]
        );
    }
}
