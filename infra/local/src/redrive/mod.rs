//! `deltacast-local redrive` (`make redrive`): replays what the stream trigger gave up on.
//! The trigger records each batch it discards as a line of the on-failure file, shaped
//! like Lambda's on-failure destination message: a shard and a range of sequence numbers,
//! not the records. So a replay reads the range back from DynamoDB Local's stream, builds
//! the event the trigger built (`streams::read_range`, with the trigger's filters from the
//! template) and hands it to the named function through the running stack's Invoke API,
//! the same process pool the trigger uses.
//!
//! A line counts as replayed when the function answers without a function error and
//! without `batchItemFailures`; replayed lines leave the file, every other line stays
//! (unreadable ones too) and is reported, so a redrive can simply be run again. Lines are
//! replayed one after another in file order: the older batch of a shard first.
//!
//! ## Layout
//! - `entry`: one line read back (function, region, shard and range).
//! - `file`: reading the file and rewriting it atomically with the lines to keep.
//! - `client`: the Invoke API over HTTP.
//! - here: the run over the file and its report.

mod client;
mod entry;
mod file;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::stack::local_sdk_config;
use crate::streams::filter::FilterCriteria;
use crate::streams::{ReplayError, read_range};
use crate::template::{StackSpec, TemplateError};
pub use client::ClientError;
use client::{Answer, InvokeClient};
pub use entry::{Entry, EntryError};
use file::FailureFile;
pub use file::RewriteError;

/// Where the failures are and what to replay them through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedriveOptions {
    /// The on-failure file (`.local/stream-failures.jsonl`).
    pub file: PathBuf,
    /// The running stack's gateway, whose Invoke API runs the functions.
    pub endpoint: String,
    /// DynamoDB Local, whose stream holds the records.
    pub dynamodb_endpoint: String,
    /// The template, for each trigger's filters.
    pub template: PathBuf,
}

impl RedriveOptions {
    /// `make dev`'s defaults for a checkout at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            file: root.join(".local/stream-failures.jsonl"),
            endpoint: "http://127.0.0.1:3001".into(),
            dynamodb_endpoint: "http://127.0.0.1:8000".into(),
            template: root.join("template.yaml"),
        }
    }
}

/// The redrive could not run (no line was replayed, the file is as it was), or ran but
/// could not rewrite the file.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The on-failure file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The template, which has the triggers' filters, is unusable.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// `--endpoint` is no URL of the stack.
    #[error(transparent)]
    Endpoint(#[from] ClientError),
    /// Lines were replayed but the file could not be rewritten: they would be replayed
    /// again by the next redrive. The report says which.
    #[error("{source}")]
    Rewrite {
        /// What was replayed and kept.
        report: Report,
        /// Why the file was not rewritten.
        source: RewriteError,
    },
}

/// What became of each line.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The on-failure file.
    pub file: PathBuf,
    /// One per line that is not blank, in file order.
    pub entries: Vec<EntryReport>,
}

/// What became of one line.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryReport {
    /// Its line number in the file as read.
    pub line: usize,
    /// What it names, when it could be read.
    pub entry: Option<Entry>,
    /// Replayed or kept.
    pub outcome: Outcome,
}

/// Replayed, or kept and why.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The function processed the records; the line left the file.
    Replayed {
        /// Records the function was given.
        records: usize,
    },
    /// The line stays in the file.
    Kept(Kept),
}

/// Why a line stays in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Kept {
    /// The line is not an on-failure record.
    Unreadable(EntryError),
    /// The template has no (usable) stream trigger for the function.
    NoTrigger(String),
    /// The records could not be read back (left the stream, or the stream failed).
    Stream(ReplayError),
    /// None of the range's records passes the trigger's filters: there is nothing to send.
    NothingToSend,
    /// The function failed.
    FunctionError {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// The function answered `batchItemFailures`: it could not process all the records.
    ReportedFailures(Value),
    /// The Invoke API refused (unknown function, throttled, ...).
    Refused {
        /// The HTTP status.
        status: u16,
        /// `x-amzn-ErrorType`.
        kind: String,
        /// The message.
        message: String,
    },
    /// The invocation failed on the way (the stack not running, stopped, timed out).
    Invoke(String),
    /// Not tried: an earlier line found the stack unreachable.
    NotTried,
}

impl Report {
    /// How many lines were replayed.
    pub fn replayed(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Replayed { .. }))
            .count()
    }

    /// How many lines stay in the file.
    pub fn kept(&self) -> usize {
        self.entries.len() - self.replayed()
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        if self.entries.is_empty() {
            return format!("redrive: nothing to replay in {}", self.file.display());
        }
        format!(
            "redrive: {} replayed, {} kept in {}",
            self.replayed(),
            self.kept(),
            self.file.display()
        )
    }
}

impl fmt::Display for EntryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(entry) = &self.entry {
            write!(
                f,
                " ({}, {} {}..{})",
                entry.function, entry.range.shard_id, entry.range.first, entry.range.last
            )?;
        }
        match &self.outcome {
            Outcome::Replayed { records } => write!(f, ": replayed {records} record(s)"),
            Outcome::Kept(why) => write!(f, ": kept: {why}"),
        }
    }
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kept::Unreadable(err) => write!(f, "{err}"),
            Kept::NoTrigger(message) => write!(f, "{message}"),
            Kept::Stream(err) => write!(f, "{err}"),
            Kept::NothingToSend => write!(f, "no record of the range passes the trigger's filters"),
            Kept::FunctionError {
                error_type,
                error_message,
            } => write!(f, "function error {error_type}: {error_message}"),
            Kept::ReportedFailures(failures) => {
                write!(f, "the function reported batchItemFailures {failures}")
            }
            Kept::Refused {
                status,
                kind,
                message,
            } => write!(f, "the Invoke API answered {status} {kind}: {message}"),
            Kept::Invoke(message) => write!(f, "{message}"),
            Kept::NotTried => write!(f, "not tried: the stack is unreachable"),
        }
    }
}

/// Replays every line of the on-failure file, then rewrites it without the lines
/// replayed (it is left untouched when none was).
pub async fn redrive(options: &RedriveOptions) -> Result<Report, RedriveError> {
    let client = InvokeClient::new(&options.endpoint)?;
    let spec = StackSpec::load(&options.template)?;
    let failures = FailureFile::read(&options.file)
        .await
        .map_err(|source| RedriveError::Read {
            path: options.file.clone(),
            source,
        })?;
    let streams =
        aws_sdk_dynamodbstreams::Client::new(&local_sdk_config(&options.dynamodb_endpoint).await);
    let mut run = Run {
        client,
        streams,
        spec,
        filters: BTreeMap::new(),
        unreachable: false,
    };
    let mut entries = Vec::new();
    let mut keep = Vec::new();
    for line in failures.lines() {
        let (entry, outcome) = match Entry::parse(line.text) {
            Ok(entry) => {
                let outcome = run.replay(&entry).await;
                (Some(entry), outcome)
            }
            Err(err) => (None, Outcome::Kept(Kept::Unreadable(err))),
        };
        if matches!(outcome, Outcome::Kept(_)) {
            keep.push(line.text);
        }
        entries.push(EntryReport {
            line: line.number,
            entry,
            outcome,
        });
    }
    let report = Report {
        file: options.file.clone(),
        entries,
    };
    if report.replayed() > 0
        && let Err(source) = failures.rewrite(&keep).await
    {
        return Err(RedriveError::Rewrite { report, source });
    }
    Ok(report)
}

/// What one redrive reuses from line to line.
struct Run {
    client: InvokeClient,
    streams: aws_sdk_dynamodbstreams::Client,
    spec: StackSpec,
    /// Each function's compiled filters (or why it has none).
    filters: BTreeMap<String, Result<FilterCriteria, String>>,
    unreachable: bool,
}

impl Run {
    async fn replay(&mut self, entry: &Entry) -> Outcome {
        if self.unreachable {
            return Outcome::Kept(Kept::NotTried);
        }
        let filters = match self.filters_of(&entry.function) {
            Ok(filters) => filters,
            Err(message) => return Outcome::Kept(Kept::NoTrigger(message)),
        };
        let replay = match read_range(&self.streams, &entry.range, &filters, &entry.region).await {
            Ok(replay) => replay,
            Err(err) => return Outcome::Kept(Kept::Stream(err)),
        };
        if replay.records == 0 {
            return Outcome::Kept(Kept::NothingToSend);
        }
        match self.client.invoke(&entry.function_arn, &replay.event).await {
            Ok(Answer::Response(response)) => match failures_in(&response) {
                None => Outcome::Replayed {
                    records: replay.records,
                },
                Some(failures) => Outcome::Kept(Kept::ReportedFailures(failures)),
            },
            Ok(Answer::FunctionError {
                error_type,
                error_message,
            }) => Outcome::Kept(Kept::FunctionError {
                error_type,
                error_message,
            }),
            Ok(Answer::Refused {
                status,
                kind,
                message,
            }) => Outcome::Kept(Kept::Refused {
                status,
                kind,
                message,
            }),
            Err(err) => {
                self.unreachable = matches!(err, ClientError::Unreachable { .. });
                Outcome::Kept(Kept::Invoke(err.to_string()))
            }
        }
    }

    /// The filters of `function`'s stream trigger in the template.
    fn filters_of(&mut self, function: &str) -> Result<FilterCriteria, String> {
        let spec = &self.spec;
        self.filters
            .entry(function.to_owned())
            .or_insert_with(|| {
                let trigger = spec
                    .stream_triggers
                    .iter()
                    .find(|trigger| trigger.function == function)
                    .ok_or_else(|| format!("the template has no stream trigger for {function}"))?;
                FilterCriteria::new(&trigger.filters)
                    .map_err(|err| format!("the stream trigger of {function}: {err}"))
            })
            .clone()
    }
}

/// The `batchItemFailures` of a response, when it reports any (an empty list, `null` or
/// none at all is success, as the trigger reads it).
fn failures_in(response: &Value) -> Option<Value> {
    match response.get("batchItemFailures") {
        None | Some(Value::Null) => None,
        Some(Value::Array(failures)) if failures.is_empty() => None,
        Some(failures) => Some(failures.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_response_without_batch_item_failures_is_a_replay() {
        assert_eq!(failures_in(&json!({})), None);
        assert_eq!(failures_in(&Value::Null), None);
        assert_eq!(failures_in(&json!({"batchItemFailures": null})), None);
        assert_eq!(failures_in(&json!({"batchItemFailures": []})), None);
        let failures = json!([{"itemIdentifier": "101"}]);
        assert_eq!(
            failures_in(&json!({ "batchItemFailures": failures })),
            Some(failures)
        );
        assert_eq!(
            failures_in(&json!({"batchItemFailures": "all"})),
            Some(json!("all"))
        );
    }

    #[tokio::test]
    async fn unreadable_lines_are_kept_and_reported_and_a_file_with_nothing_replayed_is_untouched()
    {
        let dir =
            std::env::temp_dir().join(format!("deltacast-redrive-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("failures.jsonl");
        let text = "not json\n\n{\"requestContext\":{}}\n";
        std::fs::write(&path, text).expect("written");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let options = RedriveOptions {
            file: path.clone(),
            // Nothing is invoked: no line names records.
            endpoint: "http://127.0.0.1:9".into(),
            dynamodb_endpoint: "http://127.0.0.1:9".into(),
            template: root.join("template.yaml"),
        };
        let report = redrive(&options).await.expect("a report");
        assert_eq!(report.replayed(), 0);
        let lines: Vec<_> = report.entries.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 3]);
        assert!(
            report
                .entries
                .iter()
                .all(|e| matches!(e.outcome, Outcome::Kept(Kept::Unreadable(_)))),
            "{report:?}"
        );
        assert!(
            report.entries[0]
                .to_string()
                .starts_with("line 1: kept: not an on-failure record"),
            "{}",
            report.entries[0]
        );
        assert_eq!(
            report.summary(),
            format!("redrive: 0 replayed, 2 kept in {}", path.display())
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "untouched");
        std::fs::remove_dir_all(dir).expect("removed");
    }

    #[tokio::test]
    async fn a_missing_file_has_nothing_to_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut options = RedriveOptions::new(&root);
        options.file = std::env::temp_dir().join(format!(
            "deltacast-none-{:016x}.jsonl",
            rand::random::<u64>()
        ));
        let report = redrive(&options).await.expect("a report");
        assert!(report.entries.is_empty());
        assert!(
            report.summary().contains("nothing to replay"),
            "{}",
            report.summary()
        );
        assert!(!options.file.exists(), "not created");
    }
}
