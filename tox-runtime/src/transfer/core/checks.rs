//! Pure checks of a complete envelope against what was offered, run by the shell before the
//! inbox sees it, and the rule for refusals of resumed transfers.

use toxmail_protocol::{
    Deposit, MessageId, NackClass, NackCode, PublicKey, RelayRefusal, peek_header,
};

use crate::transfer::{DepositRefusal, Refusal};

/// The envelope must be the one offered (same id) and sealed by the friend who sent it, or, when
/// that friend is a relay we trust (`relayed_to` = our key), sealed to us. Returns the sealer.
pub(crate) fn check_header(
    bytes: &[u8],
    from: PublicKey,
    id: MessageId,
    relayed_to: Option<PublicKey>,
) -> Result<PublicKey, Refusal> {
    let header = peek_header(bytes)
        .map_err(|e| Refusal::new(NackCode::Malformed, format!("envelope header: {e}")))?;
    if header.message_id != id {
        // Another envelope's bytes under this offer: a transfer mixed up on the way (file
        // numbers reused under load), not a forgery, which `open` would catch. The sender
        // offers it again; the spool is discarded.
        tracing::info!(offered = %id, found = %header.message_id, "envelope id differs from the offer");
        return Err(Refusal {
            class: NackClass::Temporary,
            code: NackCode::Malformed,
            detail: "the transfer carried another envelope; offer it again".into(),
        });
    }
    match relayed_to {
        _ if header.sender == from => Ok(from),
        Some(us) if header.recipient == us => Ok(header.sender),
        Some(_) => Err(Refusal::new(
            NackCode::WrongRecipient,
            "relayed envelope not sealed to us",
        )),
        None => Err(Refusal::new(
            NackCode::Forged,
            "envelope not sealed by the sending friend",
        )),
    }
}

/// A deposit must be sealed by the depositor, under the offered id, to the recipient it named.
pub(crate) fn check_deposit_header(
    bytes: &[u8],
    from: PublicKey,
    d: &Deposit,
) -> Result<(), DepositRefusal> {
    let malformed = |detail: String| DepositRefusal::new(RelayRefusal::Malformed, detail);
    check_header(bytes, from, d.message_id, None).map_err(|r| DepositRefusal {
        class: r.class, // temporary when the transfer was mixed up: deposit it again
        ..malformed(r.detail)
    })?;
    let header = peek_header(bytes).map_err(|e| malformed(e.to_string()))?;
    if header.recipient != d.recipient {
        return Err(malformed(
            "envelope sealed to another key than the deposit names".into(),
        ));
    }
    Ok(())
}

/// Where a transfer of `size` bytes resumes when its spool already holds `held` bytes: from what
/// it holds, but at most from the last byte (c-toxcore seeks only to a position before the end;
/// a spool holding every byte, whose store a restart cut short, takes the last byte again).
/// `None` when the spool holds more than offered: it is not this envelope's, and is emptied
/// and filled from byte 0.
pub(crate) fn resume_offset(held: u64, size: u64) -> Option<u64> {
    (held <= size).then(|| held.min(size.saturating_sub(1)))
}

/// A permanent refusal of a *resumed* transfer may come from the part kept before the break
/// (a power loss after bytes were reported written, a spool damaged on disk) rather than from
/// the sender: it becomes a temporary one that makes the sender offer again, and the spool is
/// discarded (`Malformed` + temporary, as for a mixed-up transfer), so the next attempt starts
/// from byte 0 and gets the real verdict. The price is one more transfer at worst.
pub(crate) fn resumed_refusal(refusal: Refusal, resumed: bool) -> Refusal {
    if !resumed || refusal.class != NackClass::Permanent {
        return refusal;
    }
    tracing::info!(code = ?refusal.code, detail = %refusal.detail, "resumed envelope refused; fetching it again from the start");
    Refusal {
        class: NackClass::Temporary,
        code: NackCode::Malformed,
        detail: "the resumed transfer did not give a valid envelope; offer it again".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_resumes_from_the_spool_but_before_the_end_and_restarts_over_a_longer_one() {
        assert_eq!(resume_offset(0, 100), Some(0));
        assert_eq!(resume_offset(40, 100), Some(40));
        assert_eq!(
            resume_offset(100, 100),
            Some(99),
            "a complete spool takes the last byte"
        );
        assert_eq!(resume_offset(101, 100), None, "not this envelope's");
    }

    #[test]
    fn a_resumed_transfer_is_never_refused_for_good_only_fetched_again() {
        let forged = Refusal::new(NackCode::Forged, "does not open");
        assert_eq!(forged.class, NackClass::Permanent);
        let again = resumed_refusal(forged.clone(), true);
        assert_eq!(
            (again.class, again.code),
            (NackClass::Temporary, NackCode::Malformed)
        );
        // A transfer from byte 0 gets the verdict as it is.
        assert_eq!(resumed_refusal(forged, false).class, NackClass::Permanent);
        // Temporary refusals pass unchanged.
        let busy = Refusal {
            class: NackClass::Temporary,
            code: NackCode::Busy,
            detail: "busy".into(),
        };
        assert_eq!(resumed_refusal(busy, true).code, NackCode::Busy);
    }
}
