//! Outbound delivery over Tox and inbound injection into the local MTA.
