//! The relay's PostgreSQL store: held envelopes, registrations and deposit quotas (`mailbox`),
//! held envelopes listed and read in pages for the hand-on (`hand_on`), receipts owed to
//! depositors (`receipts`),
//! versioned schema (`migrations`). Every method is one transaction, committed when it returns Ok.

mod hand_on;
mod mailbox;
mod migrations;
mod receipts;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use hand_on::{Cursor, Listed};
pub use mailbox::{DepositLimits, Held, HoldRefusal, Limit, Status};
pub use receipts::Receipt;

const POOL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Cannot reach or use the database right now; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed for another reason (a bug, a broken constraint).
    #[error("database query failed: {0}")]
    Query(String),
    /// A stored value is not one this code writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("migration {version}: {reason}")]
    Migration { version: i32, reason: String },
}

impl StoreError {
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        crate::metrics::DATABASE_ERRORS.inc();
        let text = render(&e);
        match e.code().map(|c| c.code().to_string()) {
            None => StoreError::Unavailable(text),
            Some(c)
                if ["08", "28", "40", "53", "57", "58"]
                    .iter()
                    .any(|p| c.starts_with(p)) =>
            {
                StoreError::Unavailable(text)
            }
            Some(_) => StoreError::Query(text),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            // The server's own words (authentication failed, no such database), not "db error".
            PoolError::Backend(e) => match StoreError::from(e) {
                // Whatever stopped a new connection, the database is not usable right now.
                StoreError::Query(text) => StoreError::Unavailable(text),
                other => other,
            },
            other => {
                crate::metrics::DATABASE_ERRORS.inc();
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

/// A cloneable handle on the connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Builds the pool; no connection is made until the first operation.
    pub fn connect(url: &str, max_connections: usize) -> Result<Store, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(render(&e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("toxmail-relay");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store { pool })
    }

    /// Applies every pending migration, each in its own transaction; returns how many ran.
    pub async fn migrate(&self) -> Result<u32, StoreError> {
        let mut client = self.client().await?;
        migrations::apply(&mut client).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }
}
