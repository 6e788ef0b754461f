//! LMTP server.
