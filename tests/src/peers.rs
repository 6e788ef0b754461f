//! Tox peers for tests: nodes with savedata in a temp dir, loopback profile, and a courier.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tox_runtime::transfer::{Courier, CourierTask, TransferConfig};
use tox_runtime::{Node, NodeInfo, Options};
use toxmail_protocol::{Letter, MessageId, Metadata, PublicKey, SecretKey, seal};

use crate::inbox::OpeningInbox;

/// One running peer: node + courier + the inbox that receives for it.
#[derive(Debug)]
pub struct Peer {
    pub dir: PathBuf,
    pub info: NodeInfo,
    pub secret: SecretKey,
    pub courier: Courier,
    pub task: CourierTask,
    pub inbox: OpeningInbox,
}

impl Peer {
    /// Starts (or restarts, from the savedata in `dir`) a peer on the loopback profile.
    pub async fn start(dir: &Path, options: Options, store_delay: Duration) -> Peer {
        Peer::start_with(dir, options, store_delay, |_| {}).await
    }

    /// Like [`Peer::start`], with a chance to adjust the transfer configuration.
    pub async fn start_with(
        dir: &Path,
        options: Options,
        store_delay: Duration,
        configure: impl FnOnce(&mut TransferConfig),
    ) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        let node = Node::start(options.savedata(dir.join("node.tox")))
            .await
            .unwrap();
        let secret = node.handle.secret_key().await.unwrap();
        let info = node.info;
        let inbox = OpeningInbox::new(secret.clone(), dir.join("inbox"), store_delay);
        let mut config = TransferConfig::new(dir.join("spool"));
        configure(&mut config);
        let (courier, task) = Courier::start(node, inbox.clone(), config);
        Peer {
            dir: dir.to_path_buf(),
            info,
            secret,
            courier,
            task,
            inbox,
        }
    }

    pub async fn simple(dir: &Path) -> Peer {
        Peer::start(dir, Options::loopback(), Duration::ZERO).await
    }

    pub fn public_key(&self) -> PublicKey {
        self.info.public_key
    }

    /// This node's friend number for `peer`, for sending raw frames below the courier; panics
    /// if `peer` is not a friend.
    pub async fn friend_number(&self, peer: PublicKey) -> tox_runtime::FriendNumber {
        let friends = self.courier.node().friends().await.unwrap();
        friends
            .into_iter()
            .find(|f| f.public_key == peer)
            .unwrap_or_else(|| panic!("{peer} is not a friend"))
            .friend
    }
}

/// Loopback options bootstrapping from `boot`, with ports of this node's own (`port`..`port`+9):
/// a node that stops must not leave its UDP port to another node, or the DHT and its friends
/// take one for the other until their entries time out (seen as >90 s friend connections).
pub fn loopback_own_ports(boot: &tox_runtime::BootstrapNode, port: u16) -> Options {
    let mut o = Options::loopback().bootstrap_from(boot.clone());
    o.start_port = port;
    o.end_port = port.saturating_add(9);
    o
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A letter with an RFC 5322 body of about `size` bytes and its sealed envelope.
pub fn sealed_mail(from: &SecretKey, to: &PublicKey, size: usize) -> (Letter, Arc<[u8]>) {
    let mut message = b"From: a@a.test\r\nTo: b@b.test\r\nSubject: test\r\n\r\n".to_vec();
    let mut i = 0u32;
    while message.len() < size {
        message.extend_from_slice(format!("line {i:08} of the test body\r\n").as_bytes());
        i += 1;
    }
    message.truncate(size);
    let letter = Letter {
        message_id: MessageId::random(),
        metadata: Metadata {
            envelope_sender: "a@a.test".into(),
            recipient: "b@b.test".into(),
            queue_id: "4XyZ1".into(),
            created: now(),
            expires: now() + 86400,
            extensions: Default::default(),
        },
        message,
    };
    let envelope = seal(&letter, from, to).unwrap();
    (letter, envelope.into())
}
