//! The directory: local identities (address → our Tox ID) and contacts (remote address → their
//! Tox ID). Tox IDs are stored as their 38 raw bytes and checked again when read.

use std::time::SystemTime;

use toxmail_protocol::{PublicKey, ToxId};

use super::{Store, StoreError, public_key_from, tox_id_from};

/// A local address and the Tox ID mail to it arrives at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub address: String,
    pub tox_id: ToxId,
    pub created: SystemTime,
}

/// A remote address and the Tox ID its mail goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRow {
    pub address: String,
    pub tox_id: ToxId,
    pub added: SystemTime,
}

impl Store {
    /// Adds a local identity; `Conflict` if the address already has one.
    pub async fn add_identity(&self, address: &str, tox_id: &ToxId) -> Result<(), StoreError> {
        self.add_identities(&[(address.to_owned(), *tox_id)]).await
    }

    /// Adds several identities in one transaction: all of them, or none (`Conflict` naming the
    /// first address that exists already).
    pub async fn add_identities(&self, rows: &[(String, ToxId)]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for (address, tox_id) in rows {
            tx.execute(
                "INSERT INTO identities (address, tox_id) VALUES ($1, $2)",
                &[address, &&tox_id.as_bytes()[..]],
            )
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("identity {address} already exists"))
                }
                other => other,
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// All local identities, by address.
    pub async fn identities(&self) -> Result<Vec<IdentityRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT address, tox_id, created FROM identities ORDER BY address",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(IdentityRow {
                    address: row.try_get(0)?,
                    tox_id: tox_id_from(row.try_get(1)?, "identities.tox_id")?,
                    created: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Adds a contact or replaces the Tox ID of an existing one (keeping when it was added).
    pub async fn add_contact(&self, address: &str, tox_id: &ToxId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO contacts (address, tox_id) VALUES ($1, $2) \
                 ON CONFLICT (address) DO UPDATE SET tox_id = EXCLUDED.tox_id",
                &[&address, &&tox_id.as_bytes()[..]],
            )
            .await?;
        Ok(())
    }

    /// Removes a contact; false if there was none.
    pub async fn remove_contact(&self, address: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let removed = client
            .execute("DELETE FROM contacts WHERE address = $1", &[&address])
            .await?;
        Ok(removed > 0)
    }

    /// All contacts, by address.
    pub async fn contacts(&self) -> Result<Vec<ContactRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT address, tox_id, added FROM contacts ORDER BY address",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ContactRow {
                    address: row.try_get(0)?,
                    tox_id: tox_id_from(row.try_get(1)?, "contacts.tox_id")?,
                    added: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Replaces an identity's Tox ID (same key, new nospam); false if there is no such identity.
    pub async fn set_identity_tox_id(
        &self,
        address: &str,
        tox_id: &ToxId,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE identities SET tox_id = $2 WHERE address = $1",
                &[&address, &&tox_id.as_bytes()[..]],
            )
            .await?;
        Ok(n > 0)
    }

    /// Blocks a key; false if it was blocked already.
    pub async fn block_key(&self, key: &PublicKey) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO blocked_keys (public_key) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&&key.0[..]],
            )
            .await?;
        Ok(n > 0)
    }

    /// Unblocks a key; false if it was not blocked.
    pub async fn unblock_key(&self, key: &PublicKey) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM blocked_keys WHERE public_key = $1",
                &[&&key.0[..]],
            )
            .await?;
        Ok(n > 0)
    }

    /// Every blocked key.
    pub async fn blocked_keys(&self) -> Result<Vec<PublicKey>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT public_key FROM blocked_keys ORDER BY added", &[])
            .await?;
        rows.iter()
            .map(|row| public_key_from(row.try_get(0)?, "blocked_keys.public_key"))
            .collect()
    }
}
