//! DNS-learned keys pinned on first use (`dns_pins`), see `resolve::pins`.

use std::collections::HashMap;
use std::time::SystemTime;

use toxmail_protocol::{PublicKey, ToxId};

use super::{Store, StoreError, public_key_from, tox_id_from};

/// One pinned address, with the change DNS shows, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    pub address: String,
    pub public_key: PublicKey,
    pub pinned: SystemTime,
    /// Since when DNS gives something else, and the Tox ID it gives (`None`: no usable record).
    pub changed: Option<(SystemTime, Option<ToxId>)>,
}

impl Store {
    /// Pins `key` for `address` unless something is pinned already (the first pin wins: two
    /// bridges, or two lookups, cannot replace each other's).
    pub async fn pin_first(&self, address: &str, key: &PublicKey) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO dns_pins (address, public_key) VALUES ($1, $2) \
                 ON CONFLICT (address) DO NOTHING",
                &[&address, &&key.0[..]],
            )
            .await?;
        Ok(n > 0)
    }

    /// Notes that DNS no longer gives the pinned key for `address` (the first sighting of a
    /// change keeps its time). Nothing happens if the pin was replaced meanwhile.
    pub async fn pin_changed(
        &self,
        address: &str,
        pinned: &PublicKey,
        seen: Option<&ToxId>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let seen = seen.map(|id| id.as_bytes().to_vec());
        client
            .execute(
                "UPDATE dns_pins SET pending_id = $3, \
                 changed_since = COALESCE(changed_since, now()) \
                 WHERE address = $1 AND public_key = $2",
                &[&address, &&pinned.0[..], &seen],
            )
            .await?;
        Ok(())
    }

    /// The operator's decision: pin `key` for `address` from now on, whatever was pinned.
    pub async fn pin_set(&self, address: &str, key: &PublicKey) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO dns_pins (address, public_key) VALUES ($1, $2) \
                 ON CONFLICT (address) DO UPDATE SET public_key = EXCLUDED.public_key, \
                 pinned = now(), pending_id = NULL, changed_since = NULL",
                &[&address, &&key.0[..]],
            )
            .await?;
        Ok(())
    }

    /// Forgets the pin of `address`; false if there was none.
    pub async fn pin_remove(&self, address: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM dns_pins WHERE address = $1", &[&address])
            .await?;
        Ok(n > 0)
    }

    /// Every pin, by address.
    pub async fn pins(&self) -> Result<Vec<PinRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT address, public_key, pinned, changed_since, pending_id \
                 FROM dns_pins ORDER BY address",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let since: Option<SystemTime> = row.try_get(3)?;
                let pending: Option<&[u8]> = row.try_get(4)?;
                let pending = pending
                    .map(|b| tox_id_from(b, "dns_pins.pending_id"))
                    .transpose()?;
                Ok(PinRow {
                    address: row.try_get(0)?,
                    public_key: public_key_from(row.try_get(1)?, "dns_pins.public_key")?,
                    pinned: row.try_get(2)?,
                    changed: since.map(|t| (t, pending)),
                })
            })
            .collect()
    }

    /// The pins as the resolver wants them: address → key.
    pub async fn pin_map(&self) -> Result<HashMap<String, PublicKey>, StoreError> {
        Ok(self
            .pins()
            .await?
            .into_iter()
            .map(|p| (p.address, p.public_key))
            .collect())
    }
}
