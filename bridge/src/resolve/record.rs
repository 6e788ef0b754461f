//! Tox DNS discovery records (protocols.md §6): `v=tox1;id=<76 hex>[;sign=…][;relay=<76 hex>]…`,
//! and the choice of one record among the TXT records found at a name.

use toxmail_protocol::{IdError, ToxId};

/// A usable `tox1` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToxRecord {
    pub id: ToxId,
    /// Relay nodes the owner receives through while offline (`relay=`, may repeat).
    pub relays: Vec<ToxId>,
    /// ToxMe's `sign=`: kept as text, never verified (it was signed by the ToxMe server's key).
    pub sign: Option<String>,
}

/// Why one TXT record is not a usable Tox record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a Tox record (no v=toxN)")]
    NotTox,
    #[error("Tox record version {0} is not supported")]
    Unsupported(String),
    #[error("Tox record has no id=")]
    MissingId,
    #[error("Tox record id= is invalid: {0}")]
    BadId(IdError),
    #[error("Tox record relay= is invalid: {0}")]
    BadRelay(IdError),
    #[error("TXT record is not UTF-8")]
    NotUtf8,
}

/// Parses one TXT record given as its character-strings, which are concatenated first (a long
/// value is split into strings of at most 255 bytes).
///
/// Tolerant where it costs nothing: `;`-separated `key=value` pairs in any order, spaces around
/// keys, values and separators, empty pairs, keys and the version in any case, unknown keys
/// ignored. Strict where it matters: the id and every relay must carry a valid checksum.
pub fn parse_record<S: AsRef<[u8]>>(strings: &[S]) -> Result<ToxRecord, RecordError> {
    let bytes: Vec<u8> = strings.iter().flat_map(|s| s.as_ref().to_vec()).collect();
    let text = std::str::from_utf8(&bytes).map_err(|_| RecordError::NotUtf8)?;
    let pairs: Vec<(String, &str)> = text
        .split(';')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim().to_ascii_lowercase(), value.trim()))
        })
        .collect();
    let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v);

    let version = first("v").ok_or(RecordError::NotTox)?.to_ascii_lowercase();
    match version.strip_prefix("tox") {
        Some("1") => {}
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(RecordError::Unsupported(version));
        }
        _ => return Err(RecordError::NotTox),
    }
    let id = first("id")
        .ok_or(RecordError::MissingId)?
        .parse::<ToxId>()
        .map_err(RecordError::BadId)?;
    let relays = pairs
        .iter()
        .filter(|(k, _)| k == "relay")
        .map(|(_, v)| v.parse::<ToxId>().map_err(RecordError::BadRelay))
        .collect::<Result<Vec<_>, _>>()?;
    let sign = first("sign").map(str::to_string);
    Ok(ToxRecord { id, relays, sign })
}

/// The outcome for all TXT records at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Found(ToxRecord),
    /// TXT records exist but none is a usable `tox1` record; the text says why, for the bounce.
    Unusable(String),
}

/// Picks the record to use. Only `tox1` is supported, so "the highest version wins" reduces to
/// "the first valid `tox1` record wins"; `tox2`/`tox3` records are passed over.
///
/// Records exist but none is usable → [`Selection::Unusable`], which becomes a permanent error
/// and never ordinary mail: a `_tox` record says its owner receives over Tox, and quietly
/// sending such mail in clear over SMTP instead would defeat the point of publishing it.
pub fn select<S: AsRef<[u8]>>(records: &[Vec<S>]) -> Selection {
    let mut errors = Vec::new();
    for record in records {
        match parse_record(record) {
            Ok(found) => return Selection::Found(found),
            Err(e) => errors.push(e),
        }
    }
    // Say the most useful thing: a broken tox1 record beats "unsupported", which beats garbage.
    let rank = |e: &RecordError| match e {
        RecordError::MissingId | RecordError::BadId(_) | RecordError::BadRelay(_) => 0,
        RecordError::Unsupported(_) => 1,
        RecordError::NotTox | RecordError::NotUtf8 => 2,
    };
    match errors.iter().min_by_key(|e| rank(e)) {
        Some(e) if rank(e) < 2 => Selection::Unusable(e.to_string()),
        _ => Selection::Unusable("garbage TXT record, no v=tox1 record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::PublicKey;

    fn id(n: u8) -> ToxId {
        ToxId::new(PublicKey([n; 32]), u32::from(n))
    }

    fn one(text: &str) -> Result<ToxRecord, RecordError> {
        parse_record(&[text])
    }

    #[test]
    fn parses_minimal_and_tolerant_forms() {
        let expected = ToxRecord {
            id: id(1),
            relays: vec![],
            sign: None,
        };
        for text in [
            format!("v=tox1;id={}", id(1)),
            format!(" V = TOX1 ; ID = {} ; ", id(1).to_string().to_lowercase()),
            format!("id={};v=tox1;future=thing;;noequals", id(1)),
        ] {
            assert_eq!(one(&text), Ok(expected.clone()), "{text}");
        }
    }

    #[test]
    fn parses_sign_and_repeated_relays() {
        let text = format!(
            "v=tox1;id={};sign=AAAA+/==;relay={};relay={}",
            id(1),
            id(2),
            id(3)
        );
        let record = one(&text).unwrap();
        assert_eq!(record.sign.as_deref(), Some("AAAA+/=="));
        assert_eq!(record.relays, vec![id(2), id(3)]);
    }

    #[test]
    fn concatenates_character_strings() {
        let text = format!("v=tox1;id={}", id(9));
        let (a, b) = text.split_at(20);
        assert_eq!(parse_record(&[a, b]).unwrap().id, id(9));
    }

    #[test]
    fn rejects_bad_records() {
        let mut bad = id(1).to_string();
        bad.replace_range(0..1, if bad.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            one(&format!("v=tox1;id={bad}")),
            Err(RecordError::BadId(IdError::Checksum))
        );
        assert_eq!(
            one(&format!("v=tox1;id={};relay=zz", id(1))),
            Err(RecordError::BadRelay(IdError::Length {
                expected: 76,
                got: 2
            }))
        );
        assert_eq!(one("v=tox1"), Err(RecordError::MissingId));
        assert_eq!(
            one("v=tox2;pub=00;check=0000"),
            Err(RecordError::Unsupported("tox2".into()))
        );
        assert_eq!(one("v=spf1 -all"), Err(RecordError::NotTox));
        assert_eq!(one("hello"), Err(RecordError::NotTox));
        assert_eq!(parse_record(&[&[0xff_u8][..]]), Err(RecordError::NotUtf8));
    }

    #[test]
    fn select_takes_the_first_valid_tox1_record() {
        let good = format!("v=tox1;id={}", id(1));
        let other = format!("v=tox1;id={}", id(2));
        let records = vec![
            vec!["v=tox3;id=abc".to_string()],
            vec!["hello".to_string()],
            vec![good],
            vec![other],
        ];
        assert!(matches!(select(&records), Selection::Found(r) if r.id == id(1)));
    }

    #[test]
    fn select_explains_why_nothing_is_usable() {
        let garbage = vec![vec!["hello".to_string()], vec!["v=spf1".to_string()]];
        assert!(matches!(select(&garbage), Selection::Unusable(r) if r.contains("garbage TXT")));
        let tox3 = vec![vec!["v=tox3;id=abc".to_string()], vec!["hello".to_string()]];
        assert!(matches!(select(&tox3), Selection::Unusable(r) if r.contains("tox3")));
        let broken = vec![vec!["v=tox2".to_string()], vec!["v=tox1;id=00".to_string()]];
        assert!(matches!(select(&broken), Selection::Unusable(r) if r.contains("id=")));
    }
}
