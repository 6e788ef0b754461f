//! LMTP replies.
