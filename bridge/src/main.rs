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
    /// Load and validate the configuration, then check the key file and the database.
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
        address: String,
        /// Pin the key DNS gives now (after checking it out of band), or forget the pin when DNS
        /// has no usable record any more.
        #[arg(long)]
        accept_new_key: bool,
    },
    /// Tox keys learned from DNS and pinned on first use.
    #[command(subcommand)]
    Pins(PinsCmd),
    /// The outbound queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Print the main.cf and master.cf fragments for this configuration.
    PostfixConfig,
    /// Identities and their connection, the queue by state with its oldest copy, recent errors.
    Status,
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// Create the Tox identity of a local mailbox; prints its Tox ID and the DNS record to publish.
    Add {
        address: String,
    },
    List,
    /// Give an identity a new nospam: its old Tox ID no longer admits new friend requests
    /// (existing friends keep working); prints the new Tox ID and DNS record.
    RotateNospam {
        address: String,
    },
}

#[derive(Subcommand)]
enum BlockCmd {
    /// A public key (64 hex digits) or a full Tox ID (76).
    Add {
        key: String,
    },
    List,
    Remove {
        key: String,
    },
}

#[derive(Subcommand)]
enum ContactCmd {
    Add { address: String, tox_id: String },
    List,
    Remove { address: String },
}

#[derive(Subcommand)]
enum PinsCmd {
    /// Each pinned address with its key, and what DNS says when it differs.
    List,
    /// Forget an address's pin: the next DNS answer is pinned anew.
    Remove { address: String },
}

#[derive(Subcommand)]
enum QueueCmd {
    List,
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
    let listeners = app::Listeners::bind(&config).await.map_err(err)?;
    app::run(config, listeners, shutdown)
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
        Command::Queue(QueueCmd::List) => admin::queue_list(&config).await,
        Command::Status => toxmail_bridge::status::status(&config).await,
        Command::PostfixConfig => {
            print!("{}", admin::postfix_config(&config));
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
