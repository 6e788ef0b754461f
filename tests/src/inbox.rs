//! A test inbox that does what the bridge's will: open the envelope with the node's secret key,
//! check the sender, and keep it. Envelopes are kept as files so dedup survives restarts; each
//! store is recorded with the instant it returned, to check acks never precede the store.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tox_runtime::transfer::{Inbox, Refusal};
use toxmail_protocol::{MessageId, NackCode, PublicKey, SecretKey, open};

#[derive(Clone, Debug)]
pub struct Delivered {
    pub from: PublicKey,
    pub id: MessageId,
    pub message: Vec<u8>,
    pub stored_at: Instant,
}

#[derive(Clone)]
pub struct OpeningInbox {
    key: Arc<SecretKey>,
    dir: PathBuf,
    delay: Duration,
    pub delivered: Arc<Mutex<Vec<Delivered>>>,
    /// One store at a time: the same message may arrive from two relays at once.
    storing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for OpeningInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningInbox")
            .field("dir", &self.dir)
            .finish()
    }
}

impl OpeningInbox {
    /// `delay` makes every store take that long, so a test can see the ack wait for it.
    pub fn new(key: SecretKey, dir: PathBuf, delay: Duration) -> Self {
        std::fs::create_dir_all(&dir).expect("inbox dir");
        OpeningInbox {
            key: Arc::new(key),
            dir,
            delay,
            delivered: Arc::default(),
            storing: Arc::default(),
        }
    }

    fn path(&self, id: &MessageId) -> PathBuf {
        self.dir.join(format!("{id}.env"))
    }

    pub fn count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }

    pub fn stored_files(&self) -> usize {
        std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0)
    }
}

impl Inbox for OpeningInbox {
    async fn contains(&self, _from: PublicKey, id: MessageId) -> bool {
        self.path(&id).exists()
    }

    async fn store(
        &self,
        from: PublicKey,
        id: MessageId,
        envelope: Vec<u8>,
    ) -> Result<(), Refusal> {
        let opened = open(&envelope, &self.key).map_err(|e| Refusal::for_open_error(&e))?;
        if opened.sender != from {
            return Err(Refusal::new(NackCode::Forged, "sealed by another key"));
        }
        let _one_at_a_time = self.storing.lock().await;
        if self.path(&id).exists() {
            return Ok(()); // a duplicate is success, stored once
        }
        tokio::time::sleep(self.delay).await;
        tox_runtime::write_atomically(&self.path(&id), &envelope)
            .map_err(|e| Refusal::new(NackCode::StorageFailure, e.to_string()))?;
        self.delivered.lock().unwrap().push(Delivered {
            from,
            id,
            message: opened.letter.message,
            stored_at: Instant::now(),
        });
        Ok(())
    }
}
