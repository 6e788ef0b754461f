//! `toxmail-bridge`: the command line. It wires; the work is in the library (`app::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tox_runtime::service_manager;
use toxmail_bridge::config::{Config, DEFAULT_PATH};
use toxmail_bridge::{admin, app};

#[derive(Parser)]
#[command(
    name = "toxmail-bridge",
    version,
    about = "Postfix transport to end-to-end encrypted mail over Tox"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (socketmap, LMTP, Tox delivery, injection).
    Run,
    /// Create or update the database schema.
    Migrate,
    /// Check the configuration, state_dir, key file, database (reachable, schema current),
    /// every identity's savedata and the bootstrap nodes; prints each problem, fails on any.
    CheckConfig,
    /// Local mailboxes with a Tox identity of their own.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Addresses the operator maps to Tox IDs by hand.
    #[command(subcommand)]
    Contact(ContactCmd),
    /// Tox keys whose friendship is ended and whose mail is refused.
    #[command(subcommand)]
    Block(BlockCmd),
    /// Print the routing decision for an address and why.
    Resolve {
        /// A mail address (`user@domain` or `<ToxID>@tox`).
        address: String,
        /// Pin the key DNS gives now (after checking it out of band), or forget the pin when DNS
        /// has no usable record any more.
        #[arg(long)]
        accept_new_key: bool,
    },
    /// Tox keys learned from DNS and pinned on first use.
    #[command(subcommand)]
    Pins(PinsCmd),
    /// The outbound queue: why copies wait, and the operator's decisions on them.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Print the master.cf and main.cf settings for this configuration, merged with Postfix's
    /// current ones (read with postconf), then the same as postconf commands.
    PostfixConfig(PostfixConfigArgs),
    /// Identities and their connection, the queue by state with its oldest copy, recent errors.
    Status,
}

#[derive(clap::Args)]
struct PostfixConfigArgs {
    /// The current transport_maps value to keep after the socketmap, instead of asking
    /// `postconf -h transport_maps` (e.g. when Postfix runs on another host or container).
    #[arg(long, value_name = "VALUE")]
    existing: Option<String>,
    /// The current smtpd_milters value to keep before the bridge's milter, instead of asking
    /// postconf.
    #[arg(long, value_name = "VALUE")]
    existing_milters: Option<String>,
    /// Postfix's configuration directory: read with `postconf -c DIR`, and named in the printed
    /// commands (default: postconf's own, usually /etc/postfix).
    #[arg(long, value_name = "DIR")]
    postfix_config_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// Create the Tox identity of a local mailbox; prints its Tox ID and the DNS record to publish.
    Add {
        /// The local mail address (normalised: lower case, no +extension).
        address: String,
    },
    /// Each identity with the Tox ID its savedata holds; fails if any cannot be loaded.
    List,
    /// Give an identity a new nospam: its old Tox ID no longer admits new friend requests
    /// (existing friends keep working); prints the new Tox ID and DNS record.
    RotateNospam {
        /// The identity's address (`default` for the site's default identity).
        address: String,
    },
    /// Write identities (Tox ID, savedata) to a passphrase-encrypted bundle for another host.
    /// The passphrase comes from --passphrase-file or TOXMAIL_BUNDLE_PASSPHRASE.
    Export {
        /// The identity's address (`default` for the site's default identity).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        address: Option<String>,
        /// Export every identity of this site.
        #[arg(long)]
        all: bool,
        /// The bundle file to create (it must not exist; written with mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// File holding the bundle passphrase (mode 0600, at least 16 bytes).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Add the identities of a bundle to this site, their savedata re-encrypted with this
    /// host's key file; refuses (changing nothing) a bad bundle or a conflicting identity.
    Import {
        /// The bundle file written by `identity export`.
        bundle: PathBuf,
        /// File holding the bundle passphrase (mode 0600, at least 16 bytes).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Remove a local mailbox's identity; its savedata is kept, renamed `<name>.removed-<time>`.
    Remove {
        /// The identity's address.
        address: String,
        /// Remove it even while queued copies or received mail still depend on it.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum BlockCmd {
    /// Block a key: its friendship ends, its requests and the mail it sealed are refused.
    Add {
        /// A public key (64 hex digits) or a full Tox ID (76).
        key: String,
    },
    /// Every blocked key.
    List,
    /// Unblock a key.
    Remove {
        /// A public key (64 hex digits) or a full Tox ID (76).
        key: String,
    },
}

#[derive(Subcommand)]
enum ContactCmd {
    /// Map an address to a Tox ID (replacing an earlier mapping).
    Add {
        /// The remote mail address.
        address: String,
        /// Its Tox ID (76 hex digits).
        tox_id: String,
    },
    /// Every contact with its Tox ID.
    List,
    /// Forget a contact; its friendship ends.
    Remove {
        /// The remote mail address.
        address: String,
    },
}

#[derive(Subcommand)]
enum PinsCmd {
    /// Each pinned address with its key, and what DNS says when it differs.
    List,
    /// Forget an address's pin: the next DNS answer is pinned anew.
    Remove {
        /// The pinned mail address.
        address: String,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Copies not yet delivered, with their times and why each waits (tab-separated), a page
    /// at a time by id; the last line says how many more there are and how to list them.
    List {
        /// At most this many copies.
        #[arg(long, value_name = "N", default_value_t = admin::DEFAULT_PAGE,
              value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// Only copies with a queue id above this one (the last id of the previous page).
        #[arg(long, value_name = "ID", default_value_t = 0,
              value_parser = clap::value_parser!(i64).range(0..))]
        after: i64,
    },
    /// Everything about one copy except its (sealed) content.
    Show {
        /// The copy's queue id (first column of `queue list`).
        id: i64,
    },
    /// Make a waiting copy due now; the running bridge tries it within a minute.
    Retry {
        /// The copy's queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every queued copy.
        #[arg(long)]
        all: bool,
    },
    /// Remove a copy from the queue without telling its sender (no DSN).
    Delete {
        /// The copy's queue id.
        id: i64,
        /// Delete it even while relay nodes hold it (they may still hand it on).
        #[arg(long)]
        force: bool,
    },
    /// Give up on a copy now: its sender gets the failed DSN (5.0.0) and the copy is removed.
    Bounce {
        /// The copy's queue id.
        id: i64,
        /// Bounce it even while relay nodes hold it (they may still hand it on).
        #[arg(long)]
        force: bool,
    },
}

/// Text logs on stderr, filtered by `TOXMAIL_LOG`; one JSON object per line with
/// `TOXMAIL_LOG_FORMAT=json`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOXMAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,toxcore=warn"));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if std::env::var("TOXMAIL_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn run_daemon(config: Config) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    service_manager::spawn_watchdog(shutdown.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        service_manager::stopping();
        stop.cancel();
    });
    let err = |e: app::AppError| e.to_string();
    if !app::wait_for_database(&config, &shutdown)
        .await
        .map_err(err)?
    {
        return Ok(());
    }
    // Several bridges may share the database: only the one holding the identities' leases
    // serves; the others wait here as standbys, their sockets not yet bound.
    let Some(leased) = app::take_leases(&config, &shutdown).await.map_err(err)? else {
        return Ok(());
    };
    let listeners = app::Listeners::bind(&config).await.map_err(err)?;
    app::run(config, listeners, leased, shutdown)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("toxmail-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run => run_daemon(config).await,
        Command::Migrate => admin::migrate(&config).await,
        Command::CheckConfig => admin::check_config(&config).await,
        Command::Identity(IdentityCmd::Add { address }) => {
            admin::identity_add(&config, &address).await
        }
        Command::Identity(IdentityCmd::List) => admin::identity_list(&config).await,
        Command::Identity(IdentityCmd::RotateNospam { address }) => {
            admin::identity_rotate_nospam(&config, &address).await
        }
        Command::Identity(IdentityCmd::Export {
            address,
            all: _,
            out,
            passphrase_file,
        }) => {
            let pass = passphrase_file.as_deref();
            admin::identity_export(&config, address.as_deref(), &out, pass).await
        }
        Command::Identity(IdentityCmd::Import {
            bundle,
            passphrase_file,
        }) => admin::identity_import(&config, &bundle, passphrase_file.as_deref()).await,
        Command::Identity(IdentityCmd::Remove { address, force }) => {
            admin::identity_remove(&config, &address, force).await
        }
        Command::Block(BlockCmd::Add { key }) => admin::block(&config, &key, true).await,
        Command::Block(BlockCmd::Remove { key }) => admin::block(&config, &key, false).await,
        Command::Block(BlockCmd::List) => admin::block_list(&config).await,
        Command::Contact(ContactCmd::Add { address, tox_id }) => {
            admin::contact_add(&config, &address, &tox_id).await
        }
        Command::Contact(ContactCmd::List) => admin::contact_list(&config).await,
        Command::Contact(ContactCmd::Remove { address }) => {
            admin::contact_remove(&config, &address).await
        }
        Command::Resolve {
            address,
            accept_new_key,
        } => admin::resolve(&config, &address, accept_new_key).await,
        Command::Pins(PinsCmd::List) => admin::pins_list(&config).await,
        Command::Pins(PinsCmd::Remove { address }) => admin::pins_remove(&config, &address).await,
        Command::Queue(QueueCmd::List { limit, after }) => {
            admin::queue_list(&config, after, limit).await
        }
        Command::Queue(QueueCmd::Show { id }) => admin::queue_show(&config, id).await,
        Command::Queue(QueueCmd::Retry { id, all: _ }) => admin::queue_retry(&config, id).await,
        Command::Queue(QueueCmd::Delete { id, force }) => {
            admin::queue_delete(&config, id, force).await
        }
        Command::Queue(QueueCmd::Bounce { id, force }) => {
            admin::queue_bounce(&config, id, force).await
        }
        Command::Status => toxmail_bridge::status::status(&config).await,
        Command::PostfixConfig(args) => {
            let current = admin::PostfixCurrent::read(&admin::PostfixSite {
                transport_maps: args.existing,
                smtpd_milters: args.existing_milters,
                config_dir: args.postfix_config_dir,
            });
            print!("{}", admin::postfix_config(&config, &current));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toxmail-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_and_argument_has_help_text() {
        toxmail_tests::cli::assert_documented(Cli::command());
    }
}
