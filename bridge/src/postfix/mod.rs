//! What Postfix talks to: the socketmap (routing), the LMTP server (intake) and the milter, on
//! TCP ports or on UNIX sockets bound by [`socket`].

pub mod lmtp;
pub mod milter;
pub mod socket;
pub mod socketmap;
