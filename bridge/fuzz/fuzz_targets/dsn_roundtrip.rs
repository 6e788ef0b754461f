//! Delivery status notifications round-trip: a report built from arbitrary field values is either
//! refused with an error, or is a sound message (7-bit, CRLF, lines within 998 bytes) that
//! mail-parser reads back to the same fields: sender, subject, reply headers, queue id, and one
//! delivery-status group per recipient with its address, action, status and diagnostic.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mail_parser::{Message, MessageParser, MimeHeaders};
use toxmail_bridge::delivery::dsn::{self, Action, RecipientStatus, Report};

const HOST: &str = "mx.fuzz.test";

/// A string that is often a plain address (so reports get built) and sometimes anything.
fn address(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 4)? {
        return u.arbitrary();
    }
    let alphabet = b"abcxyz019.-_+=@";
    let len = u.int_in_range(0..=24)?;
    let mut local = String::new();
    for _ in 0..len {
        local.push(char::from(*u.choose(alphabet)?));
    }
    Ok(format!("{local}@b.test"))
}

fn time(u: &mut Unstructured) -> Result<Option<SystemTime>> {
    let secs: Option<u32> = u.arbitrary()?;
    Ok(secs.map(|s| UNIX_EPOCH + Duration::from_secs(u64::from(s))))
}

fn recipient(u: &mut Unstructured) -> Result<RecipientStatus> {
    let action = *u.choose(&[
        Action::Failed,
        Action::Delayed,
        Action::Relayed,
        Action::Delivered,
    ])?;
    let class = match action {
        Action::Failed => 5,
        Action::Delayed => 4,
        _ => 2,
    };
    // Mostly a class that fits the action, sometimes anything.
    let class = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        class
    };
    Ok(RecipientStatus {
        final_recipient: address(u)?,
        action,
        status: (class, u.int_in_range(0..=1000)?, u.int_in_range(0..=1000)?),
        diagnostic: u.arbitrary()?,
        // Built by the notifier from a checked ORCPT; here anything, for the structure checks.
        original_recipient: u.arbitrary()?,
        last_attempt: time(u)?,
        will_retry_until: time(u)?,
    })
}

fn report(u: &mut Unstructured) -> Result<Report> {
    let count = u.int_in_range(0..=4)?;
    let recipients = (0..count).map(|_| recipient(u)).collect::<Result<_>>()?;
    Ok(Report {
        reporting_mta: u.arbitrary()?,
        original_sender: address(u)?,
        original_message_id: u.arbitrary()?,
        original_subject: u.arbitrary()?,
        envelope_id: u.arbitrary()?,
        original_queue_id: u.arbitrary()?,
        arrival: time(u)?,
        recipients,
        original_headers: u.arbitrary()?,
        // RET=FULL's message/rfc822 part is not generated: the part count below assumes none.
        original_message: None,
    })
}

/// What a header value becomes: printable ASCII, whitespace runs as one space, trimmed.
fn clean(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| match c {
            c if c.is_ascii_graphic() => c.to_string(),
            c if c.is_whitespace() || c.is_control() => " ".into(),
            '\u{2026}' => "...".into(),
            _ => "?".into(),
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Folding may cut a run longer than 900 bytes, and unfolding then reads a space there.
fn same_text(got: &str, want: &str) {
    if want.split(' ').any(|w| w.len() > 900) {
        assert_eq!(got.replace(' ', ""), want.replace(' ', ""));
    } else {
        assert_eq!(got, want);
    }
}

fn unfold(value: &str) -> String {
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_string()
}

fn header(message: &Message<'_>, name: &str) -> Option<String> {
    message.header_raw(name).map(unfold)
}

/// The message/delivery-status body as unfolded field groups.
fn status_groups(body: &str) -> Vec<Vec<(String, String)>> {
    let unfolded = body.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n\r\n")
        .filter(|group| !group.trim().is_empty())
        .map(|group| {
            let field = |line: &str| {
                let (name, value) = line.split_once(':').expect("name: value");
                (name.to_string(), value.trim().to_string())
            };
            group
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(field)
                .collect()
        })
        .collect()
}

fn get<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = group.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
    let value = found.next().map(|(_, v)| v.as_str());
    assert!(found.next().is_none(), "{name} twice");
    value
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(report) = report(&mut u) else {
        return;
    };
    let Ok(bytes) = dsn::build(
        &report,
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        HOST,
    ) else {
        return; // refused: an error, nothing sent
    };

    assert!(bytes.is_ascii(), "7-bit");
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.ends_with("\r\n"));
    assert!(
        !text.replace("\r\n", "").contains(['\r', '\n']),
        "bare CR or LF"
    );
    assert!(
        text.split("\r\n").all(|l| l.len() <= 998),
        "line over 998 bytes"
    );

    let message = MessageParser::default().parse(&bytes).expect("parses");
    let sender = report.original_sender.trim();
    let sender = sender
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(sender);
    let to = message
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    assert_eq!(to, Some(sender.trim()));
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address());
    assert_eq!(from, Some("MAILER-DAEMON@mx.fuzz.test"));
    assert_eq!(
        header(&message, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let in_reply_to = header(&message, "In-Reply-To");
    assert_eq!(in_reply_to, header(&message, "References"));
    if let Some(id) = &in_reply_to {
        assert!(
            id.starts_with('<') && id.ends_with('>') && !id.contains(' '),
            "{id:?}"
        );
    }
    let queue_id = report.original_queue_id.as_deref().map(clean);
    let queue_id = queue_id.filter(|q| !q.is_empty());
    let got_queue_id = header(&message, dsn::QUEUE_ID_FIELD);
    assert_eq!(got_queue_id.is_some(), queue_id.is_some());
    if let (Some(got), Some(want)) = (&got_queue_id, &queue_id) {
        same_text(got, want);
    }

    let root = message.root_part();
    let ct = root.content_type().expect("root content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    let parts = root.sub_parts().expect("multipart");
    assert!(
        parts.len() == 2 || parts.len() == 3,
        "{} parts",
        parts.len()
    );
    let kind = |id: u32| {
        let ct = message.parts[id as usize]
            .content_type()
            .expect("part type");
        format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
    };
    assert_eq!(kind(parts[0]), "text/plain");
    assert_eq!(kind(parts[1]), "message/delivery-status");
    assert_eq!(
        parts.len() == 3,
        report.original_headers.is_some_and(|h| {
            // The header section ends at the first empty line, and is kept only within 64 KiB.
            let first = h.split(|b| *b == b'\n').next().unwrap_or_default();
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            !first.is_empty() && first.len() + 2 <= 64 * 1024
        })
    );

    let status = std::str::from_utf8(message.parts[parts[1] as usize].contents()).unwrap();
    let groups = status_groups(status);
    assert_eq!(groups.len(), 1 + report.recipients.len(), "{groups:?}");
    let want_sender = format!("rfc822; {}", sender.trim());
    assert_eq!(
        get(&groups[0], dsn::SENDER_FIELD),
        Some(want_sender.as_str())
    );
    for (group, r) in groups[1..].iter().zip(&report.recipients) {
        let final_recipient = format!("rfc822; {}", r.final_recipient);
        assert_eq!(
            get(group, "Final-Recipient"),
            Some(final_recipient.as_str())
        );
        assert_eq!(get(group, "Action"), Some(r.action.keyword()));
        let (class, subject, detail) = r.status;
        let status = format!("{class}.{subject}.{detail}");
        assert_eq!(get(group, "Status"), Some(status.as_str()));
        let mut diagnostic = clean(&r.diagnostic);
        if diagnostic.len() > 4000 {
            diagnostic.truncate(4000);
            diagnostic.push_str("...");
        }
        match get(group, "Diagnostic-Code") {
            None => assert!(diagnostic.is_empty()),
            Some(got) => same_text(got, &format!("X-tox; {diagnostic}")),
        }
        let retry = get(group, "Will-Retry-Until").is_some();
        assert_eq!(
            retry,
            r.action == Action::Delayed && r.will_retry_until.is_some()
        );
    }
});
