//! `toxmail-relay`: the command line. It wires; the work is in the library (`service::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tox_runtime::libtoxcore::Version;
use tox_runtime::service_manager;
use toxmail_relay::config::{Config, DEFAULT_PATH};
use toxmail_relay::service;
use toxmail_relay::store::Store;

#[derive(Parser)]
#[command(
    name = "toxmail-relay",
    version,
    about = "Holds sealed toxmail envelopes for offline recipients"
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
    /// Run the relay (Tox node, deposits, hand-on, purge).
    Run,
    /// Create or update the database schema.
    Migrate,
    /// Load and validate the configuration, then check the database.
    CheckConfig,
    /// The relay's Tox ID and what it holds.
    Status,
}

/// Text logs on stderr, filtered by `TOXMAIL_LOG`; one JSON object per line with
/// `TOXMAIL_LOG_FORMAT=json`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOXMAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,toxcore=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if std::env::var("TOXMAIL_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.with_ansi(false).init();
    }
}

async fn run(config: Config) -> Result<(), String> {
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
    service::run(config, shutdown)
        .await
        .map_err(|e| e.to_string())
}

async fn store(config: &Config) -> Result<Store, String> {
    Store::connect(&config.database.url, config.database.max_connections).map_err(|e| e.to_string())
}

async fn migrate(config: &Config) -> Result<(), String> {
    let n = store(config)
        .await?
        .migrate()
        .await
        .map_err(|e| e.to_string())?;
    println!("applied {n} migration(s)");
    Ok(())
}

async fn check_config(config: &Config) -> Result<(), String> {
    service::node_options(config).map_err(|e| e.to_string())?;
    if let Some(warning) = tox_runtime::libtoxcore::advisory(Version::running()) {
        println!("warning: {warning}");
    }
    let status = store(config).await?.status().await.map_err(|e| {
        // 42P01: undefined table, the one error `migrate` cures.
        let hint = match e.to_string().contains("does not exist") {
            true => " (run `toxmail-relay migrate` first: the schema is missing)",
            false => "",
        };
        format!("database: {e}{hint}")
    })?;
    println!(
        "configuration OK; database reachable, {} envelope(s) held",
        status.held
    );
    Ok(())
}

async fn status(config: &Config) -> Result<(), String> {
    match std::fs::read_to_string(service::id_file(config)) {
        Ok(contact) => print!("{contact}"),
        Err(_) => println!("tox_id unknown (the relay has not run yet)"),
    }
    let listen = &config.metrics.listen;
    if listen.is_empty() {
        println!("daemon: unknown ([metrics] listen is off, so the daemon cannot be asked)");
    } else {
        match tox_runtime::exporter::fetch_status(listen).await {
            Ok(text) => print!("daemon: running; {text}"),
            Err(e) => {
                println!("daemon: not reachable on {listen}: {e} (is toxmail-relay running?)")
            }
        }
    }
    let s = store(config)
        .await?
        .status()
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "held {} envelope(s), {} bytes, for {} recipient(s); {} registration(s)",
        s.held, s.held_bytes, s.recipients, s.registrations
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("toxmail-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run => run(config).await,
        Command::Migrate => migrate(&config).await,
        Command::CheckConfig => check_config(&config).await,
        Command::Status => status(&config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toxmail-relay: {e}");
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
