//! Versioned schema migrations: the SQL files in `migrations/`, compiled in, applied in order,
//! each in one transaction together with its `relay_schema_migrations` row.

use deadpool_postgres::Client;

use super::StoreError;

const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_held_by_recipient.sql")),
    (3, include_str!("migrations/0003_held_total.sql")),
    (4, include_str!("migrations/0004_receipts.sql")),
];

/// Serialises relays migrating the same database at once ("toxrelay" in ASCII).
const LOCK_KEY: i64 = 0x746f_7872_656c_6179;

pub(super) async fn apply(client: &mut Client) -> Result<u32, StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    let mut applied = 0;
    for &(version, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        // No "already exists, skipping" NOTICE in the logs at every start.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS relay_schema_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let current: Option<i32> = tx
            .query_one("SELECT max(version) FROM relay_schema_migrations", &[])
            .await?
            .get(0);
        let current = current.unwrap_or(0);
        if current > latest {
            return Err(StoreError::Migration {
                version: current,
                reason: format!("database schema is newer than this relay (knows {latest})"),
            });
        }
        if current >= version {
            tx.commit().await?;
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration {
                version,
                reason: super::render(&e),
            })?;
        tx.execute(
            "INSERT INTO relay_schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        applied += 1;
    }
    Ok(applied)
}
