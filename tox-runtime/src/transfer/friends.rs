//! The engine's friendships: friend requests judged by the policy and the stranger bounds, first
//! contact, the operator's revocations, strangers dropped after their grace; and the spool sweep.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use toxmail_protocol::{MessageId, PublicKey, friend_request_message};

use super::core::Input;
use super::engine::Engine;
use super::policy::Verdict;
use super::{DeliveryError, Destination, Inbox};

/// As c-toxcore's `MAX_RECEIVED_STORED`: it remembers this many requesters.
const IGNORED_REMEMBERED: usize = 32;

/// Bounds on how often `refriend_silent` looks (a quarter of `refriend_after` in between).
const REFRIEND_CHECK_MIN: Duration = Duration::from_secs(1);
const REFRIEND_CHECK_MAX: Duration = Duration::from_secs(60);

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
            return self.remember_ignored(from);
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
            return self.remember_ignored(from);
        }
        if verdict != Verdict::Accept {
            self.stats
                .friend_requests_ignored
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %from, ?verdict, "friend request ignored");
            return self.remember_ignored(from);
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

    /// c-toxcore keeps the keys of the last `IGNORED_REMEMBERED` requests it passed on and drops
    /// further requests from them unseen, also after we ignored one.
    fn remember_ignored(&mut self, from: PublicKey) {
        if !self.ignored.contains(&from) {
            if self.ignored.len() == IGNORED_REMEMBERED {
                self.ignored.pop_front();
            }
            self.ignored.push_back(from);
        }
    }

    /// After the operator changed their mind about `key` (made it a contact, unblocked it): a
    /// request of its we ignored this run would make c-toxcore drop its next ones unseen until
    /// this node restarts. Adding and deleting the friend clears c-toxcore's memory of it.
    pub(super) async fn forget_ignored_request(&mut self, key: PublicKey) {
        let Some(at) = self.ignored.iter().position(|k| *k == key) else {
            return;
        };
        self.ignored.remove(at);
        if self.core.is_friend(&key) {
            return;
        }
        let cleared = match self.handle.friend_add_norequest(key).await {
            Ok(_) => self.handle.friend_delete(key).await,
            Err(e) => Err(e),
        };
        match cleared {
            Ok(()) => tracing::info!(peer = %key, "its next friend request will be heard"),
            Err(e) => {
                tracing::warn!(peer = %key, error = %e, "its next friend request may go unheard until a restart")
            }
        }
    }

    /// Makes `to` a friend unless it is one: first contact sends a friend request. A full
    /// address is remembered for asking again (`refriend_silent`).
    pub(super) async fn befriend(&mut self, to: Destination) -> Result<(), DeliveryError> {
        let pk = to.public_key();
        if let Destination::Address(address) = to {
            self.addresses.insert(pk, address);
        }
        if self.core.is_friend(&pk) {
            return Ok(());
        }
        let Destination::Address(address) = to else {
            return Err(DeliveryError::UnknownFriend(pk));
        };
        let hello = friend_request_message(&self.config.request_note);
        let friend = self.handle.friend_add(address, hello).await?;
        tracing::info!(peer = %pk, "friend request sent");
        self.heard.insert(pk, Instant::now());
        self.feed(Input::Friend { pk, friend }).await;
        Ok(())
    }

    /// Asks again the friends we have mail for that stayed offline, unheard, for
    /// `refriend_after` (doubled after each time asked, up to 64 times, until it comes online): a peer that ended the friendship (contact removed, blocked, its friend
    /// list lost) looks exactly like one that is offline, and would never come online for us
    /// again. The friend is deleted and added with a new request under a new friend number; a
    /// peer that still has us sees the request as us coming online. Its deliveries keep waiting
    /// in the core, which only learns the new friend number.
    pub(super) async fn refriend_silent(&mut self) {
        let every = (self.config.refriend_after / 4).clamp(REFRIEND_CHECK_MIN, REFRIEND_CHECK_MAX);
        if self.last_refriend_check.elapsed() < every {
            return;
        }
        self.last_refriend_check = Instant::now();
        let mut silent: Vec<PublicKey> = self
            .waiting_peers()
            .filter(|pk| self.core.peers.get(pk).is_some_and(|p| !p.online))
            .filter(|pk| {
                let heard = self.heard.get(pk).copied().unwrap_or(self.started);
                let times = self.asked_again.get(pk).copied().unwrap_or(0);
                heard.elapsed() >= self.config.refriend_after * 2u32.pow(times.min(6))
            })
            .filter(|pk| self.addresses.contains_key(pk))
            .collect();
        silent.sort_unstable();
        silent.dedup();
        for pk in silent {
            let address = self.addresses[&pk];
            self.heard.insert(pk, Instant::now());
            *self.asked_again.entry(pk).or_default() += 1;
            // Fails harmlessly when an earlier attempt deleted it and could not add it back.
            if let Err(e) = self.handle.friend_delete(pk).await {
                tracing::debug!(peer = %pk, error = %e, "friend not deleted before asking again");
            }
            let hello = friend_request_message(&self.config.request_note);
            match self.handle.friend_add(address, hello).await {
                Ok(friend) => {
                    self.stats
                        .friend_requests_resent
                        .fetch_add(1, Ordering::Relaxed);
                    let quiet = self.config.refriend_after.as_secs();
                    tracing::info!(peer = %pk, quiet_secs = quiet, "friend with mail waiting stayed offline; friend request sent again in case it dropped us");
                    self.feed(Input::Friend { pk, friend }).await;
                }
                Err(e) => {
                    tracing::warn!(peer = %pk, error = %e, "could not send the friend request again; trying later")
                }
            }
        }
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
