//! The roster: what the operator decided in the database (identities and their Tox IDs, contacts,
//! blocked keys) kept in step with the resolver, the couriers and admission, every few seconds.
//! A contact removed ends its friendship; a blocked key loses it and is ignored from then on; an
//! identity whose nospam the operator rotated (`identity rotate-nospam`) gets it on its node.
//! DNS keys pinned on first use go the other way: the resolver learns them, `record_pins` writes
//! them down, and the next load brings the operator's decisions (accepted keys, removed pins).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::Courier;
use toxmail_protocol::{PublicKey, ToxId};

use crate::delivery::inbound::InboundContext;
use crate::resolve::pins::PinEvent;
use crate::resolve::{Directory, Resolver};
use crate::store::{ContactRow, IdentityRow, Store};

/// How often the database is read again.
const REFRESH: Duration = Duration::from_secs(5);

/// Pin events waiting to be written, at most; beyond, a first use is simply seen again later.
pub const PIN_EVENTS: usize = 1024;

/// Our own identities, by address and as `<ToxID>@tox`, are local: mail to them never loops
/// back out over Tox.
pub fn directory(ids: Vec<IdentityRow>, contacts: Vec<ContactRow>) -> Directory {
    let local = ids
        .iter()
        .flat_map(|r| [r.address.clone(), format!("{}@tox", r.tox_id)])
        .collect();
    Directory {
        contacts: contacts
            .into_iter()
            .map(|c| (c.address, c.tox_id))
            .collect(),
        local,
    }
}

/// Loads contacts and identities into the resolver once; false if the database did not answer.
pub async fn load_resolver(store: &Store, resolver: &Resolver) -> bool {
    let (Ok(ids), Ok(contacts), Ok(pins)) = (
        store.identities().await,
        store.contacts().await,
        store.pin_map().await,
    ) else {
        return false;
    };
    resolver.set_directory(directory(ids, contacts));
    resolver.set_pins(pins);
    true
}

/// Writes down what the resolver learned: first-use pins, and changes it refused. A write that
/// fails is logged and dropped: the pin stays in the resolver's memory and is offered again
/// after a restart, the change is seen again at the next lookup.
pub async fn record_pins(
    store: Store,
    mut events: tokio::sync::mpsc::Receiver<PinEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let result = match &event {
            PinEvent::Learned { address, id } => {
                let key = id.public_key();
                store.pin_first(address, &key).await.map(|new| {
                    if new {
                        tracing::info!(%address, %key, "Tox key from DNS pinned");
                    }
                })
            }
            PinEvent::Changed {
                address,
                pinned,
                seen,
            } => store.pin_changed(address, pinned, seen.as_ref()).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "DNS key pin not recorded");
        }
    }
}

#[derive(Debug)]
pub struct Roster {
    pub store: Store,
    pub resolver: Arc<Resolver>,
    /// Identity address → its courier.
    pub couriers: HashMap<String, Courier>,
    pub inbound: Arc<InboundContext>,
    contacts: HashSet<PublicKey>,
    blocked: HashSet<PublicKey>,
    /// Each identity's Tox ID as last applied: only a row that changed is taken to its node.
    applied: HashMap<String, ToxId>,
}

impl Roster {
    pub fn new(
        store: Store,
        resolver: Arc<Resolver>,
        couriers: HashMap<String, Courier>,
        inbound: Arc<InboundContext>,
    ) -> Roster {
        Roster {
            store,
            resolver,
            couriers,
            inbound,
            contacts: HashSet::new(),
            blocked: HashSet::new(),
            applied: HashMap::new(),
        }
    }

    /// Reads the database and applies what changed; false if it did not answer.
    pub async fn load(&mut self) -> bool {
        let (Ok(ids), Ok(contacts), Ok(blocked), Ok(pins)) = (
            self.store.identities().await,
            self.store.contacts().await,
            self.store.blocked_keys().await,
            self.store.pin_map().await,
        ) else {
            return false;
        };
        let contact_keys: HashSet<PublicKey> =
            contacts.iter().map(|c| c.tox_id.public_key()).collect();
        let blocked: HashSet<PublicKey> = blocked.into_iter().collect();
        *self
            .inbound
            .blocked
            .write()
            .unwrap_or_else(|e| e.into_inner()) = blocked.clone();
        for courier in self.couriers.values() {
            for pk in contact_keys.difference(&self.contacts) {
                courier.allow_contact(*pk);
            }
            for pk in self.contacts.difference(&contact_keys) {
                courier.revoke(*pk);
            }
            for pk in blocked.difference(&self.blocked) {
                courier.block(*pk);
            }
            for pk in self.blocked.difference(&blocked) {
                courier.unblock(*pk);
            }
        }
        self.rotate_nospams(&ids).await;
        self.resolver.set_directory(directory(ids, contacts));
        self.resolver.set_pins(pins);
        self.contacts = contact_keys;
        self.blocked = blocked;
        true
    }

    /// Gives an identity's node the nospam its database row names (same key only), for rows
    /// that changed since the last load (all of them at the first, in case the operator rotated
    /// while the bridge was stopped).
    async fn rotate_nospams(&mut self, ids: &[IdentityRow]) {
        for row in ids {
            if self.applied.get(&row.address) == Some(&row.tox_id) {
                continue;
            }
            let Some(courier) = self.couriers.get(&row.address) else {
                continue;
            };
            let node = courier.node();
            let Ok(info) = node.info().await else {
                continue; // asked again at the next load
            };
            if info.address != row.tox_id && info.public_key == row.tox_id.public_key() {
                match node.set_nospam(row.tox_id.nospam()).await {
                    Ok(id) => {
                        tracing::info!(identity = %row.address, tox_id = %id, "nospam rotated")
                    }
                    Err(e) => {
                        tracing::warn!(identity = %row.address, error = %e, "nospam not rotated");
                        continue;
                    }
                }
            }
            self.applied.insert(row.address.clone(), row.tox_id);
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            self.load().await;
        }
    }
}
