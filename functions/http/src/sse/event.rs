//! The text of a server-sent event stream (WHATWG HTML, "Server-sent events"): events,
//! comments, the `retry:` hint, and the ids that let a client resume.
//!
//! An event's id is `<epoch>:<seq>`, the position just after it in the channel; a
//! client that reconnects sends the last one as `Last-Event-ID` and the stream resumes
//! after it. A channel with no history yet has position `0`.

/// Where a stream resumes: after `seq` of `epoch` (no epoch: from the start of the
/// channel's live epoch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// The epoch the seq counts in.
    pub epoch: Option<String>,
    /// The last seq the client has.
    pub seq: u64,
}

impl Position {
    /// The position as an event id.
    pub fn id(&self) -> String {
        match &self.epoch {
            Some(epoch) => format!("{epoch}:{}", self.seq),
            None => self.seq.to_string(),
        }
    }

    /// The position an event id names, or why it names none.
    pub fn parse(id: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "Last-Event-ID must be <epoch>:<seq> as the stream sent it, not {:?}",
                id.chars().take(64).collect::<String>()
            )
        };
        let (epoch, seq) = match id.rsplit_once(':') {
            Some((epoch, seq)) => (Some(epoch), seq),
            None => (None, id),
        };
        let seq = seq.parse::<u64>().map_err(|_| bad())?;
        let epoch = epoch.filter(|e| !e.is_empty());
        if epoch.is_some_and(|e| {
            e.len() > 64
                || !e
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(bad());
        }
        Ok(Self {
            epoch: epoch.map(str::to_owned),
            seq,
        })
    }
}

/// An event: `id:` (when given), `event:`, and `data` split into `data:` lines.
pub fn event(id: Option<&str>, name: &str, data: &str) -> String {
    let mut text = String::with_capacity(data.len() + 64);
    if let Some(id) = id {
        text.push_str("id: ");
        text.push_str(id);
        text.push('\n');
    }
    text.push_str("event: ");
    text.push_str(name);
    text.push('\n');
    for line in data.split('\n') {
        text.push_str("data: ");
        text.push_str(line.trim_end_matches('\r'));
        text.push('\n');
    }
    text.push('\n');
    text
}

/// A comment line, which clients ignore: a heartbeat.
pub fn comment(text: &str) -> String {
    format!(": {text}\n\n")
}

/// The reconnection delay a client should use, in milliseconds.
pub fn retry(ms: u64) -> String {
    format!("retry: {ms}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_round_trips_through_its_id() {
        for position in [
            Position {
                epoch: Some("k3j9x".into()),
                seq: 42,
            },
            Position {
                epoch: None,
                seq: 0,
            },
        ] {
            assert_eq!(Position::parse(&position.id()).unwrap(), position);
        }
        assert_eq!(
            Position::parse("7").unwrap(),
            Position {
                epoch: None,
                seq: 7
            }
        );
    }

    #[test]
    fn a_malformed_id_is_refused_naming_the_header() {
        for id in ["", "e:", "e:x", "e:-1", "a b:3", "e:1:2x"] {
            let error = Position::parse(id).unwrap_err();
            assert!(error.starts_with("Last-Event-ID must be"), "{id}: {error}");
        }
    }

    #[test]
    fn an_event_puts_each_line_of_its_data_on_a_data_line() {
        assert_eq!(
            event(Some("e:1"), "delta", "{\"a\":1}"),
            "id: e:1\nevent: delta\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(event(None, "x", "a\r\nb"), "event: x\ndata: a\ndata: b\n\n");
        assert_eq!(comment("heartbeat"), ": heartbeat\n\n");
        assert_eq!(retry(1000), "retry: 1000\n\n");
    }
}
