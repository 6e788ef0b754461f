//! The engine's side of receiving: the spool file of a transfer coming in, and the inbox call
//! for a complete envelope (in a task of its own; the result goes back into the core).

use std::fs::OpenOptions;

use toxmail_protocol::{MessageId, NackCode, PublicKey};

use super::core::{
    AcceptOutcome, FileKey, Input, check_deposit_header, check_header, resume_offset,
    resumed_refusal,
};
use super::engine::Engine;
use super::{DepositRefusal, Inbox, Refusal};

impl<I: Inbox> Engine<I> {
    /// Opens the spool, resumes from what it holds (from 0 when it holds more than offered, from
    /// the last byte when it holds all of it), and accepts the file.
    pub(super) async fn accept(
        &mut self,
        key: FileKey,
        from: PublicKey,
        id: MessageId,
        size: u64,
    ) -> AcceptOutcome {
        let path = self.spool_path(&from, &id);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let spool = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open spool file");
                return AcceptOutcome::SpoolUnavailable;
            }
        };
        let held = spool.metadata().map(|m| m.len()).unwrap_or(0);
        let offset = resume_offset(held, size).unwrap_or_else(|| {
            let _ = spool.set_len(0);
            0
        });
        if let Err(e) = self.handle.file_accept(key.0, key.1, offset).await {
            tracing::debug!(peer = %from, %id, error = %e, "could not accept file");
            return AcceptOutcome::NotAccepted;
        }
        self.spools.insert(key, spool);
        AcceptOutcome::Accepted { offset }
    }

    /// Reads the complete envelope from the spool, checks its header and hands it to the inbox,
    /// in a task of its own; the result comes back as an input.
    pub(super) fn store(
        &self,
        from: PublicKey,
        id: MessageId,
        resumed: bool,
        relayed_to: Option<PublicKey>,
        deposit: Option<toxmail_protocol::Deposit>,
    ) {
        let path = self.spool_path(&from, &id);
        let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
        tokio::spawn(async move {
            let bytes = tokio::fs::read(&path).await;
            let done = match deposit {
                Some(deposit) => {
                    let result = match bytes {
                        Ok(bytes) => match check_deposit_header(&bytes, from, &deposit) {
                            Ok(()) => inbox.store_deposit(from, deposit, bytes).await,
                            Err(refusal) => Err(refusal),
                        },
                        Err(e) => Err(DepositRefusal::new(
                            toxmail_protocol::RelayRefusal::StorageFailure,
                            format!("spool read: {e}"),
                        )),
                    };
                    Input::Deposited { from, id, result }
                }
                None => {
                    let (origin, result) = match bytes {
                        Ok(bytes) => match check_header(&bytes, from, id, relayed_to) {
                            Ok(origin) => (origin, inbox.store(origin, id, bytes).await),
                            Err(refusal) => (from, Err(refusal)),
                        },
                        Err(e) => {
                            let detail = format!("spool read: {e}");
                            (from, Err(Refusal::new(NackCode::StorageFailure, detail)))
                        }
                    };
                    let result = result.map_err(|refusal| resumed_refusal(refusal, resumed));
                    Input::Stored {
                        from,
                        origin,
                        id,
                        result,
                    }
                }
            };
            let _ = internal.send(done);
        });
    }
}
