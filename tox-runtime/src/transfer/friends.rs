//! The engine's friendships: friend requests judged by the policy and the stranger bounds, first
//! contact, the operator's revocations, strangers dropped after their grace; and the spool sweep.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use toxmail_protocol::{MessageId, PublicKey, friend_request_message};

use super::core::Input;
use super::engine::Engine;
use super::policy::Verdict;
use super::{DeliveryError, Destination, Inbox};

impl<I: Inbox> Engine<I> {
    pub(super) fn spool_path(&self, from: &PublicKey, id: &MessageId) -> PathBuf {
        self.config.spool_dir.join(format!("{from}-{id}.part"))
    }

    pub(super) async fn on_friend_request(&mut self, from: PublicKey, message: &[u8]) {
        if self.blocked.contains(&from) {
            self.stats
                .friend_requests_ignored
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %from, "friend request from a blocked key ignored");
            return;
        }
        let verdict = self.config.friend_policy.judge(&from, message);
        if verdict == Verdict::Accept
            && !self.known.contains(&from)
            && let Err(bound) = self.strangers.admit(from, Instant::now())
        {
            self.stats
                .friend_requests_bounded
                .fetch_add(1, Ordering::Relaxed);
            let pending = self.strangers.len();
            tracing::warn!(peer = %from, ?bound, pending, "stranger's friend request not taken: bound reached");
            return;
        }
        if verdict != Verdict::Accept {
            self.stats
                .friend_requests_ignored
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %from, ?verdict, "friend request ignored");
            return;
        }
        match self.handle.friend_add_norequest(from).await {
            Ok(friend) => {
                self.stats
                    .friend_requests_accepted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %from, "accepted toxmail friend request");
                if !self.core.is_friend(&from) {
                    self.feed(Input::Friend { pk: from, friend }).await;
                }
            }
            Err(e) => tracing::warn!(peer = %from, error = %e, "could not accept friend request"),
        }
    }

    /// Makes `to` a friend unless it is one: first contact sends a friend request.
    pub(super) async fn befriend(&mut self, to: Destination) -> Result<(), DeliveryError> {
        let pk = to.public_key();
        if self.core.is_friend(&pk) {
            return Ok(());
        }
        let Destination::Address(address) = to else {
            return Err(DeliveryError::UnknownFriend(pk));
        };
        let hello = friend_request_message(&self.config.request_note);
        let friend = self.handle.friend_add(address, hello).await?;
        tracing::info!(peer = %pk, "friend request sent");
        self.feed(Input::Friend { pk, friend }).await;
        Ok(())
    }

    /// Ends the friendship with `key` and takes back what vouched for it; with `block`, its
    /// friend requests are ignored from now on.
    pub(super) async fn revoke(&mut self, key: PublicKey, block: bool) {
        if block {
            self.blocked.insert(key);
        }
        self.config.friend_policy.forbid(&key);
        self.known.remove(&key);
        self.strangers.proven(&key);
        if self.core.is_friend(&key) {
            self.feed(Input::Unfriended(key)).await;
            match self.handle.friend_delete(key).await {
                Ok(()) => tracing::info!(peer = %key, block, "friendship ended by the operator"),
                Err(e) => tracing::warn!(peer = %key, error = %e, "could not end a friendship"),
            }
        }
    }

    /// Unfriends strangers that delivered nothing validly sealed within their grace period.
    pub(super) async fn drop_expired_strangers(&mut self) {
        for pk in self.strangers.expired(Instant::now()) {
            self.stats.strangers_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %pk, "stranger delivered nothing valid in time; unfriended");
            self.feed(Input::Unfriended(pk)).await;
            if let Err(e) = self.handle.friend_delete(pk).await {
                tracing::warn!(peer = %pk, error = %e, "could not unfriend a stranger");
            }
        }
    }

    /// Deletes abandoned partial envelopes: too old, or the oldest while over the byte cap.
    pub(super) fn sweep_spool(&mut self) {
        self.last_sweep = Instant::now();
        let active = self
            .core
            .active_spools()
            .iter()
            .map(|(from, id)| self.spool_path(from, id))
            .collect();
        let (age, cap) = (self.config.spool_max_age, self.config.spool_max_bytes);
        let dir = &self.config.spool_dir;
        match super::spool::sweep(dir, std::time::SystemTime::now(), age, cap, &active) {
            Ok(swept) if swept.files > 0 => {
                let stats = &self.stats.spool_files_swept;
                stats.fetch_add(swept.files, Ordering::Relaxed);
                tracing::info!(
                    files = swept.files,
                    bytes = swept.bytes,
                    "abandoned partial envelopes deleted"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "spool sweep failed"),
        }
    }
}
