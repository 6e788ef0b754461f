//! The bridge's PostgreSQL store: the outbound queue (`queue`) and the receipts that close it
//! (`receipts`), inbound dedup and injection (`inbound`), identities and contacts (`directory`),
//! the delivery events outbox (`events`), the purge of finished history (`retention`), versioned
//! schema (`migrations`).
//! Only sealed envelopes and delivery metadata are stored, never plaintext mail. Every method
//! runs in its own transaction (or statement) and is committed when it returns `Ok`.

mod directory;
mod enqueue;
mod events;
mod inbound;
pub mod lease;
mod migrations;
mod notices;
mod operator;
mod pins;
mod presence;
mod queue;
mod receipts;
pub mod retention;
mod schedule;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use toxmail_protocol::{MessageId, PublicKey, ToxId};

pub use directory::{ContactRow, IdentityRow};
pub use enqueue::UnsealedCopy;
pub use inbound::{InboundKey, InboundRow, NewInbound};
pub use migrations::SchemaState;
pub use notices::CopyInfo;
pub use operator::{OperatorError, QueueEntry, QueuePage};
pub use pins::PinRow;
pub use presence::PresenceMap;
pub use queue::{Enqueued, GiveUp, NewOutbound, OutboundRow, QueuedPeer};
pub use receipts::in_custody_of;
pub use retention::Purged;
pub use stats::{QueueStats, RecentError};

/// How long to wait for a free pooled connection, and to open a new one (TCP connect plus
/// startup): a database that is down must fail a caller within seconds, not hang it.
const POOL_TIMEOUT: Duration = Duration::from_secs(2);
/// Socket-level connect limit, unless the URL sets `connect_timeout` itself.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Drops a connection whose server stopped acknowledging what we send (host gone).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a store operation failed. `is_temporary()` is the only classification callers need.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Cannot reach or use the database: connect, pool, I/O, shutdown, authentication.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The server refused this time but may accept a retry: serialization failure, deadlock,
    /// lock timeout, out of disk or memory, statement cancelled.
    #[error("database busy: {0}")]
    Transient(String),
    /// A row with that key already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No row with that key.
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other database error: a bug in a statement or a constraint the input breaks.
    #[error("database query failed: {0}")]
    Query(String),
    /// A stored value is not one this code writes (a Tox ID with a bad checksum, …).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The connection string or pool settings are invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A migration failed or the schema is newer than this bridge.
    #[error("migration {version}: {reason}")]
    Migration { version: i32, reason: String },
}

impl StoreError {
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Transient(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let classified = classify(&e);
        if !matches!(classified, StoreError::Conflict(_)) {
            toxmail_relay::metrics::DATABASE_ERRORS.inc();
        }
        classified
    }
}

fn classify(e: &tokio_postgres::Error) -> StoreError {
    let text = render(e);
    let Some(code) = e.code() else {
        return if e.is_closed() || has_io_source(e) || is_connection_kind(e) {
            StoreError::Unavailable(text)
        } else {
            // Encoding/decoding of parameters and columns: our bug.
            StoreError::Query(text)
        };
    };
    let class = code.code();
    if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::EXCLUSION_VIOLATION {
        StoreError::Conflict(text)
    } else if class.starts_with("08") // connection exception
        || class.starts_with("28") // invalid authorization
        || class.starts_with("57P") // shutting down, cannot connect now
        || *code == SqlState::INVALID_CATALOG_NAME
    {
        StoreError::Unavailable(text)
    } else if class.starts_with("40") // serialization failure, deadlock
        || class.starts_with("53") // insufficient resources
        || class.starts_with("58") // system (I/O) error
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
    {
        StoreError::Transient(text)
    } else {
        StoreError::Query(text)
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => match StoreError::from(e) {
                // Whatever stopped a new connection, the database is not usable right now.
                StoreError::Query(text) => StoreError::Unavailable(text),
                other => other,
            },
            other => {
                toxmail_relay::metrics::DATABASE_ERRORS.inc();
                StoreError::Unavailable(format!("connection pool: {other}"))
            }
        }
    }
}

/// tokio-postgres's `Display` omits the cause ("db error"); the chain carries the server text.
fn render(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Kinds without a SQLSTATE or I/O cause that still mean "cannot talk to the server"; the
/// crate exposes them only through their text.
fn is_connection_kind(e: &tokio_postgres::Error) -> bool {
    let text = e.to_string();
    ["error connecting", "timeout", "authentication", "TLS"]
        .iter()
        .any(|kind| text.contains(kind))
}

/// A cloneable handle on the connection pool; all store operations hang off it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// Where the database is, for errors: host:port, database and user (never the password).
    place: Arc<str>,
    /// Set when `[events]` is on: state changes then write their events (`with_events`).
    events: Option<Arc<crate::events::Outbox>>,
    /// The connection settings, for the lease keeper's own connection.
    config: Arc<tokio_postgres::Config>,
    /// Set by `fenced`: claims and settlements only for identities this bridge leases.
    owner: Option<lease::Owner>,
}

impl Store {
    /// Builds the pool from a libpq-style connection string (`host=… port=… user=… dbname=…`
    /// or `postgresql://…`). No connection is made here: the first operation opens one.
    pub fn connect(url: &str, max_connections: usize) -> Result<Store, StoreError> {
        if max_connections == 0 {
            return Err(StoreError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(render(&e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("toxmail-bridge");
        }
        let place = describe(&config).into();
        let kept = Arc::new(config.clone());
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection the server closed is noticed without a round trip; a query on
                // one that died unnoticed fails as Unavailable and the next get opens anew.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store {
            pool,
            place,
            events: None,
            config: kept,
            owner: None,
        })
    }

    /// Applies every pending migration, each in its own transaction; returns how many ran.
    pub async fn migrate(&self) -> Result<u32, StoreError> {
        let mut client = self.client().await?;
        let applied = migrations::apply(&mut client).await?;
        if applied > 0 {
            tracing::info!(applied, "store migrations applied");
        }
        Ok(applied)
    }

    /// One round trip: Ok when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Where the schema stands against this code's migrations; changes nothing.
    pub async fn schema_state(&self) -> Result<SchemaState, StoreError> {
        migrations::state(&self.client().await?).await
    }

    /// "database at 127.0.0.1:5432 (db toxmail, user toxmail)": where this store connects.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// A pooled connection. A failure to get one names where the database is: the operator
    /// reading "connection refused" needs to know which host and port refused.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Unavailable(text) => {
                    StoreError::Unavailable(format!("{}: {text}", self.place))
                }
                other => other,
            })
    }
}

/// Names the database a connection string points at: hosts with ports, database and user.
/// The password is never part of it.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // libpq: one port for all hosts, or one per host; 5432 when none is given.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let hosts = match hosts.is_empty() {
        true => "localhost:5432".to_string(),
        false => hosts.join(","),
    };
    let user = config.get_user().unwrap_or("(the login user)");
    let db = config.get_dbname().unwrap_or(user);
    format!("database at {hosts} (db {db}, user {user})")
}

fn tox_id_from(bytes: &[u8], what: &str) -> Result<ToxId, StoreError> {
    ToxId::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// `outbound.relays`: the relays' Tox IDs, back to back.
fn relays_from(row: &tokio_postgres::Row) -> Result<Vec<ToxId>, StoreError> {
    row.try_get::<_, &[u8]>("relays")?
        .chunks(toxmail_protocol::TOX_ID_SIZE)
        .map(|c| tox_id_from(c, "outbound.relays"))
        .collect()
}

fn public_key_from(bytes: &[u8], what: &str) -> Result<PublicKey, StoreError> {
    PublicKey::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn message_id_from(bytes: &[u8], what: &str) -> Result<MessageId, StoreError> {
    MessageId::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_error_only_unavailable_and_transient_are_temporary() {
        let cases = [
            (StoreError::Unavailable(String::new()), true),
            (StoreError::Transient(String::new()), true),
            (StoreError::Conflict(String::new()), false),
            (StoreError::NotFound(String::new()), false),
            (StoreError::Query(String::new()), false),
            (StoreError::Corrupt(String::new()), false),
            (StoreError::Config(String::new()), false),
            (
                StoreError::Migration {
                    version: 1,
                    reason: String::new(),
                },
                false,
            ),
        ];
        for (error, temporary) in cases {
            assert_eq!(error.is_temporary(), temporary, "{error}");
        }
    }

    #[test]
    fn the_database_is_named_by_host_port_db_and_user_never_the_password() {
        let place = |url: &str| Store::connect(url, 1).unwrap().place().to_string();
        let tcp = place("host=127.0.0.1 port=5433 user=mail dbname=toxmail password=hunter2");
        assert_eq!(tcp, "database at 127.0.0.1:5433 (db toxmail, user mail)");
        let uri = place("postgresql://mail:hunter2@db.example:6000/queue");
        assert_eq!(uri, "database at db.example:6000 (db queue, user mail)");
        let socket = place("host=/run/postgresql user=toxmail");
        assert_eq!(
            socket,
            "database at /run/postgresql/.s.PGSQL.5432 (db toxmail, user toxmail)"
        );
    }

    #[test]
    fn connect_rejects_bad_url_and_zero_connections_without_connecting() {
        assert!(matches!(
            Store::connect("host=127.0.0.1 port=notaport", 4),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            Store::connect("host=127.0.0.1", 0),
            Err(StoreError::Config(_))
        ));
    }
}
