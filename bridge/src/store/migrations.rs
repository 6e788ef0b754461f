//! Versioned schema migrations: the SQL files in `migrations/`, compiled in, applied in order,
//! each in one transaction together with its `schema_migrations` row.

use deadpool_postgres::Client;

use super::StoreError;

/// One schema step. Versions start at 1 and increase by one; a released file never changes.
struct Migration {
    version: i32,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("migrations/0002_notices.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("migrations/0003_relays.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("migrations/0004_inbound_by_sealer.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("migrations/0005_blocked_keys.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("migrations/0006_dns_pins.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("migrations/0007_events.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("migrations/0008_delay_notice_index.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("migrations/0009_peer_presence.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("migrations/0010_outbound_by_peer.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("migrations/0011_retention.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("migrations/0012_failure_status.sql"),
    },
    Migration {
        version: 13,
        sql: include_str!("migrations/0013_identity_lease.sql"),
    },
    Migration {
        version: 14,
        sql: include_str!("migrations/0014_dsn_requests.sql"),
    },
];

/// Serialises bridges migrating the same database at once ("toxmigr" in ASCII).
const LOCK_KEY: i64 = 0x0074_6f78_6d69_6772;

/// `SET LOCAL`: no "already exists, skipping" NOTICE in the logs at every start.
const CREATE_TABLE: &str = "SET LOCAL client_min_messages = warning;
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies the pending migrations and returns how many ran. Refuses a database whose schema is
/// newer than this code knows: running old code on it could corrupt the queue.
pub(super) async fn apply(client: &mut Client) -> Result<u32, StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied = 0;
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        tx.batch_execute(CREATE_TABLE).await?;
        let current: Option<i32> = tx
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await?
            .get(0);
        let current = current.unwrap_or(0);
        if current > latest {
            return Err(StoreError::Migration {
                version: current,
                reason: format!("database schema is newer than this bridge (knows {latest})"),
            });
        }
        if current >= migration.version {
            tx.commit().await?; // releases the lock; at most the empty table was created
            continue;
        }
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| failed(migration.version, e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())",
            &[&migration.version],
        )
        .await?;
        tx.commit().await?;
        tracing::debug!(version = migration.version, "migration applied");
        applied += 1;
    }
    Ok(applied)
}

/// Where a database's schema stands against the migrations this code carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// Every migration applied, none unknown.
    Current { version: i32 },
    /// Migrations this code carries are not applied yet (`toxmail-bridge migrate`).
    Pending { version: i32, latest: i32 },
    /// The database was migrated by a newer bridge: this code must not use it.
    Newer { version: i32, latest: i32 },
}

/// Reads the applied version without changing anything (no table is created).
pub(super) async fn state(client: &Client) -> Result<SchemaState, StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let version = match exists {
        false => 0,
        true => client
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await?
            .get::<_, Option<i32>>(0)
            .unwrap_or(0),
    };
    Ok(match version {
        v if v < latest => SchemaState::Pending { version, latest },
        v if v > latest => SchemaState::Newer { version, latest },
        _ => SchemaState::Current { version },
    })
}

/// A temporary failure stays temporary; anything else names the migration that broke.
fn failed(version: i32, e: tokio_postgres::Error) -> StoreError {
    match StoreError::from(e) {
        temporary if temporary.is_temporary() => temporary,
        other => StoreError::Migration {
            version,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_versions_start_at_one_and_increase_by_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i32 + 1);
            assert!(!migration.sql.trim().is_empty());
        }
    }
}
