//! Identity leases: which bridge acts for each identity when several run on one database.
//!
//! A bridge takes the leases of every identity at once or none ([`LeaseKeeper::try_acquire`],
//! one transaction under a table lock, so two bridges starting together never split a site),
//! renews them every third of their length, and gives them back when it stops. A lease is free
//! when it expired, or when the PostgreSQL session that renews it ended (the holder was killed or
//! lost its connection): a standby takes over within one poll, not one lease length.
//!
//! Fencing: a store made with [`Store::fenced`] adds to every statement that claims or settles
//! a row of an identity the condition that this bridge holds that identity's lease, unexpired
//! at the database's clock. A bridge that was paused, lost its connection or its lease cannot
//! claim, mark, inject or notify anything after another took over. A bridge that finds it lost
//! a lease stops (the service manager starts it again, as a standby), so the same process never
//! holds an identity twice and a statement it prepared under an old lease cannot pass under a
//! new one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_postgres::NoTls;

use super::{Store, StoreError};

/// This process's name in `identity_lease.owner`: 128 random bits in hex, new at every start.
/// Only these hex digits are ever put into statement text ([`Store::fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(Arc<str>);

impl Owner {
    pub fn random() -> Owner {
        let bytes = toxmail_protocol::MessageId::random().0;
        Owner(hex::encode(&bytes[..16]).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who holds a lease this bridge could not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub identity: String,
    /// Host name and process id of the holder, as it recorded them.
    pub name: String,
    pub expires: SystemTime,
}

/// What [`LeaseKeeper::try_acquire`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Every identity's lease, each with its fence (one more at every change of owner).
    All(Vec<(String, i64)>),
    /// Another live bridge holds at least this one: nothing was taken.
    Held(Holder),
}

/// The result of a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Another bridge took these identities: this one must stop acting for them.
    Lost(Vec<String>),
}

/// Takes, renews and gives back this bridge's leases over a connection of its own (not one of
/// the pool's), whose session is what tells other bridges this one is alive.
pub struct LeaseKeeper {
    config: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
    owner: Owner,
    /// Host name and process id, for operators reading the table.
    name: String,
    length: Duration,
    held: Vec<String>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("length", &self.length)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

/// The holder's session as `pg_stat_activity` shows it, for the statements that write it.
const THIS_SESSION: &str = "pg_backend_pid(), \
    (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())";

impl LeaseKeeper {
    pub fn new(store: &Store, owner: Owner, name: &str, length: Duration) -> LeaseKeeper {
        LeaseKeeper {
            config: (*store.config).clone(),
            client: None,
            owner,
            name: name.to_string(),
            length,
            held: Vec::new(),
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// How long a lease lasts unless renewed.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The identities held since the last acquisition.
    pub fn held(&self) -> &[String] {
        &self.held
    }

    async fn client(&mut self) -> Result<&mut tokio_postgres::Client, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = self.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "lease connection ended");
                }
            });
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Takes the lease of every identity in `identities` if no other live bridge holds any of
    /// them; otherwise takes none and says who holds one.
    pub async fn try_acquire(&mut self, identities: &[String]) -> Result<Acquired, StoreError> {
        let (owner, name, secs) = (
            self.owner.0.to_string(),
            self.name.clone(),
            self.length.as_secs_f64(),
        );
        let client = self.client().await?;
        let tx = client.transaction().await?;
        // Serialises bridges taking leases; renewals wait the few milliseconds this lasts.
        tx.batch_execute("LOCK TABLE identity_lease IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        let held = tx
            .query_opt(
                "SELECT l.identity, l.holder_name, l.expires FROM identity_lease l
                 WHERE l.owner <> $1 AND l.expires > now() AND l.identity = ANY($2)
                   AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid
                               AND (a.backend_start = l.holder_start
                                    -- another role's session hides its start: alive
                                    OR a.backend_start IS NULL))
                 ORDER BY l.identity LIMIT 1",
                &[&owner, &identities],
            )
            .await?;
        if let Some(row) = held {
            return Ok(Acquired::Held(Holder {
                identity: row.try_get(0)?,
                name: row.try_get(1)?,
                expires: row.try_get(2)?,
            }));
        }
        let rows = tx
            .query(
                &format!(
                    "INSERT INTO identity_lease AS l
                         (identity, owner, fence, expires, holder_pid, holder_start, holder_name)
                     SELECT i, $1, 1, now() + make_interval(secs => $3), {THIS_SESSION}, $4
                     FROM unnest($2::text[]) AS i
                     ON CONFLICT (identity) DO UPDATE SET
                         fence = CASE WHEN l.owner = EXCLUDED.owner THEN l.fence
                                      ELSE l.fence + 1 END,
                         acquired = CASE WHEN l.owner = EXCLUDED.owner THEN l.acquired
                                         ELSE now() END,
                         owner = EXCLUDED.owner, expires = EXCLUDED.expires,
                         holder_pid = EXCLUDED.holder_pid, holder_start = EXCLUDED.holder_start,
                         holder_name = EXCLUDED.holder_name
                     RETURNING identity, fence"
                ),
                &[&owner, &identities, &secs, &name],
            )
            .await?;
        tx.commit().await?;
        let mut got = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, i64)>, StoreError>>()?;
        got.sort();
        self.held = got.iter().map(|(identity, _)| identity.clone()).collect();
        Ok(Acquired::All(got))
    }

    /// Extends every lease this bridge holds. A lease that expired while the database was out
    /// of reach and that nobody took is this bridge's again; one another bridge took is lost.
    pub async fn renew(&mut self) -> Result<Renewal, StoreError> {
        let (owner, secs) = (self.owner.0.to_string(), self.length.as_secs_f64());
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE identity_lease SET expires = now() + make_interval(secs => $2),
                         (holder_pid, holder_start) = (SELECT {THIS_SESSION})
                     WHERE owner = $1 RETURNING identity"
                ),
                &[&owner, &secs],
            )
            .await?;
        let renewed: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let lost: Vec<String> = self
            .held
            .iter()
            .filter(|i| !renewed.contains(i))
            .cloned()
            .collect();
        Ok(match lost.is_empty() {
            true => Renewal::Renewed,
            false => Renewal::Lost(lost),
        })
    }

    /// Gives every lease back (at a clean stop, after this bridge stopped acting): another
    /// bridge, or this one started again, takes them at once.
    pub async fn release(&mut self) -> Result<(), StoreError> {
        let owner = self.owner.0.to_string();
        let client = self.client().await?;
        client
            .execute(
                "UPDATE identity_lease SET expires = now(), holder_pid = NULL, \
                 holder_start = NULL WHERE owner = $1",
                &[&owner],
            )
            .await?;
        self.held.clear();
        Ok(())
    }
}

impl Store {
    /// This store with every claim and settlement fenced by `owner`'s leases.
    pub fn fenced(mut self, owner: &Owner) -> Store {
        self.owner = Some(owner.clone());
        self
    }

    /// The condition that this bridge holds the lease of the identity in `column`, to append to
    /// a `WHERE`; empty for an unfenced store (the admin CLI, tests of one bridge).
    pub(super) fn fence(&self, column: &str) -> String {
        match &self.owner {
            // The owner is hex digits this process made (`Owner::random`), never input.
            Some(owner) => format!(
                " AND EXISTS (SELECT 1 FROM identity_lease fence WHERE fence.identity = {column} \
                 AND fence.owner = '{}' AND fence.expires > now())",
                owner.as_str()
            ),
            None => String::new(),
        }
    }

    /// Every lease on record: (identity, holder name, fence, expires), for `status`.
    pub async fn leases(&self) -> Result<Vec<(String, String, i64, SystemTime)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT identity, holder_name, fence, expires FROM identity_lease ORDER BY identity",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }
}
