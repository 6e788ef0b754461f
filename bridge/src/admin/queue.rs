//! `queue`: the outbound queue.

use super::{Result, secs, store};
use crate::config::Config;

pub async fn queue_list(config: &Config) -> Result {
    let rows = store(config)?
        .queue_list()
        .await
        .map_err(|e| e.to_string())?;
    println!("id\tstate\tattempts\tnext_attempt\texpires\trecipient\tsender\tlast_error");
    for r in &rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t<{}>\t{}",
            r.id,
            r.state,
            r.attempts,
            secs(r.next_attempt),
            secs(r.expires),
            r.recipient,
            r.envelope_sender,
            r.last_error.as_deref().unwrap_or("")
        );
    }
    println!("{} message copies", rows.len());
    Ok(())
}
