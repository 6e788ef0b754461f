//! Peer presence as the running bridge's nodes see it (`peer_presence`): only a change of state
//! moves `since`, so a row says how long a peer has been offline (or online).

use std::collections::HashMap;
use std::time::SystemTime;

use toxmail_protocol::PublicKey;

use super::{Store, StoreError, public_key_from};

/// (identity address, peer key) → (online, since when).
pub type PresenceMap = HashMap<(String, PublicKey), (bool, SystemTime)>;

impl Store {
    /// Records that `identity`'s node saw `peer` come online or go offline.
    pub async fn set_presence(
        &self,
        identity: &str,
        peer: &PublicKey,
        online: bool,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO peer_presence (identity, peer_key, online) VALUES ($1, $2, $3) \
                 ON CONFLICT (identity, peer_key) DO UPDATE SET online = EXCLUDED.online, \
                 since = now() WHERE peer_presence.online <> EXCLUDED.online",
                &[&identity, &&peer.0[..], &online],
            )
            .await?;
        Ok(())
    }

    /// Every peer of `identity` is offline as of now (its node starts or stops).
    pub async fn reset_presence(&self, identity: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE peer_presence SET online = false, since = now() \
                 WHERE identity = $1 AND online",
                &[&identity],
            )
            .await?;
        Ok(())
    }

    /// Every recorded peer presence.
    pub async fn presence(&self) -> Result<PresenceMap, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT identity, peer_key, online, since FROM peer_presence",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let key = public_key_from(r.try_get(1)?, "peer_presence.peer_key")?;
                Ok(((r.try_get(0)?, key), (r.try_get(2)?, r.try_get(3)?)))
            })
            .collect()
    }
}
