//! The typed events a node reports to async code, in the order c-toxcore raised them.

use toxmail_protocol::PublicKey;

pub use crate::instance::{Connection, FileControl};

/// A friend's number inside one instance (stable across restarts through the savedata).
pub type FriendNumber = u32;
/// A file transfer's number, unique per friend and direction while the transfer lives.
pub type FileNumber = u32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SelfConnection(Connection),
    /// Someone who knows our full Tox ID (nospam included) asks to become a friend.
    FriendRequest {
        public_key: PublicKey,
        message: Vec<u8>,
    },
    FriendConnection {
        friend: FriendNumber,
        public_key: PublicKey,
        status: Connection,
    },
    /// A lossless custom packet (first byte 160..=191).
    Packet {
        friend: FriendNumber,
        public_key: PublicKey,
        data: Vec<u8>,
    },
    /// An incoming file transfer, paused until accepted or cancelled.
    FileRecv {
        friend: FriendNumber,
        public_key: PublicKey,
        file: FileNumber,
        kind: u32,
        size: u64,
        file_id: [u8; 32],
        name: Vec<u8>,
    },
    /// Bytes of an incoming file; an empty `data` means the transfer ended.
    FileChunk {
        friend: FriendNumber,
        file: FileNumber,
        position: u64,
        data: Vec<u8>,
    },
    /// The peer paused, resumed or cancelled a transfer.
    FileControl {
        friend: FriendNumber,
        file: FileNumber,
        control: FileControl,
    },
    /// Every byte of an outgoing file was handed to c-toxcore.
    FileSent {
        friend: FriendNumber,
        file: FileNumber,
    },
    /// An outgoing file stopped before the end (friend went offline or cancelled).
    FileSendAborted {
        friend: FriendNumber,
        file: FileNumber,
    },
}
