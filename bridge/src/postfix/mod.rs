//! What Postfix talks to: the socketmap (routing) and the LMTP server (intake).

pub mod lmtp;
pub mod milter;
pub mod socketmap;
