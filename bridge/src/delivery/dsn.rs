//! Delivery status notifications (placeholder; issue 4).
