//! Postfix socketmap server for transport_maps.
