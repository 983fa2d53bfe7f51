//! The on-failure file as `redrive` handles it: read once, then written back with only
//! the lines to keep, through a temporary file renamed over it, so that a reader (or a
//! crash) never sees half of it.
//!
//! The stack may append lines while a redrive runs: the trigger appends one whole line
//! for every batch it gives up on, under the file's lock (`streams::on_failure::lock`).
//! The rewrite takes the same lock, reads the file again and carries over whatever was
//! appended since the first read, then renames; so no appended line is lost. A file that
//! changed in any other way (another redrive rewrote it) is left alone.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The on-failure file as it was read.
#[derive(Clone, Debug)]
pub(super) struct FailureFile {
    path: PathBuf,
    text: String,
}

/// One line that is not blank, numbered from 1 as an editor numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Line<'a> {
    /// Its line number.
    pub number: usize,
    /// Its text, without the newline.
    pub text: &'a str,
}

/// The rewrite did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// Reading, writing or renaming failed.
    #[error("cannot rewrite {path}: {source}")]
    Io {
        /// The on-failure file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file changed other than by lines appended at its end.
    #[error(
        "{0} changed while redrive ran (not by lines appended to it), so it was left as it \
         is: the lines replayed are still in it"
    )]
    Changed(PathBuf),
}

impl FailureFile {
    /// Reads `path`; a file that does not exist is empty.
    pub async fn read(path: &Path) -> std::io::Result<Self> {
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(err),
        };
        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }

    /// The lines that are not blank, in order.
    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.text
            .lines()
            .enumerate()
            .filter(|(_, text)| !text.trim().is_empty())
            .map(|(index, text)| Line {
                number: index + 1,
                text,
            })
    }

    /// Rewrites the file with `keep` (lines as read, in order), plus any lines appended
    /// since it was read.
    pub async fn rewrite(&self, keep: &[&str]) -> Result<(), RewriteError> {
        let this = self.clone();
        let keep: Vec<String> = keep.iter().map(|line| (*line).to_owned()).collect();
        tokio::task::spawn_blocking(move || this.rewrite_now(&keep))
            .await
            .map_err(|err| RewriteError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(err),
            })?
    }

    fn rewrite_now(&self, keep: &[String]) -> Result<(), RewriteError> {
        let io = |source| RewriteError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text: String = keep.iter().map(|line| format!("{line}\n")).collect();
        let temporary = self.temporary_path();
        let result = (|| {
            let _lock = crate::streams::on_failure::lock(&self.path).map_err(io)?;
            let now = match std::fs::read_to_string(&self.path) {
                Ok(now) => now,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(err) => return Err(io(err)),
            };
            let appended = now
                .strip_prefix(self.text.as_str())
                .ok_or_else(|| RewriteError::Changed(self.path.clone()))?;
            text.push_str(appended);
            let mut file = std::fs::File::create(&temporary).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&temporary, &self.path).map_err(io)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }

    /// A name beside the file (the rename stays on one file system), this process's own.
    fn temporary_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path
            .with_file_name(format!(".{name}.redrive-{}.tmp", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("deltacast-redrive-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("stream-failures.jsonl");
        std::fs::write(&path, text).expect("written");
        path
    }

    fn clean_up(path: &Path) {
        let dir = path.parent().expect("a folder");
        // The lock file stays, as lock files do; nothing else may.
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .expect("listing")
            .map(|entry| entry.expect("entry").file_name())
            .filter(|name| !name.to_string_lossy().ends_with(".lock"))
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        std::fs::remove_dir_all(dir).expect("removed");
    }

    #[tokio::test]
    async fn lines_are_numbered_as_in_an_editor_and_blank_ones_skipped() {
        let path = temp_file("{\"a\":1}\n\n  \nnot json\n{\"b\":2}");
        let file = FailureFile::read(&path).await.expect("read");
        let lines: Vec<_> = file.lines().collect();
        assert_eq!(
            lines,
            [
                Line {
                    number: 1,
                    text: "{\"a\":1}"
                },
                Line {
                    number: 4,
                    text: "not json"
                },
                Line {
                    number: 5,
                    text: "{\"b\":2}"
                },
            ]
        );
        clean_up(&path);
    }

    #[tokio::test]
    async fn a_missing_file_has_no_lines() {
        let path = std::env::temp_dir().join(format!(
            "deltacast-none-{:016x}.jsonl",
            rand::random::<u64>()
        ));
        let file = FailureFile::read(&path).await.expect("read");
        assert_eq!(file.lines().count(), 0);
    }

    #[tokio::test]
    async fn the_rewrite_keeps_only_the_given_lines() {
        let path = temp_file("one\ntwo\nthree\n");
        let file = FailureFile::read(&path).await.expect("read");
        file.rewrite(&["one", "three"]).await.expect("rewritten");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\nthree\n");
        file.rewrite(&[])
            .await
            .expect_err("the file is no longer what was read");
        let file = FailureFile::read(&path).await.expect("read");
        file.rewrite(&[]).await.expect("rewritten");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        clean_up(&path);
    }

    #[tokio::test]
    async fn lines_appended_while_redriving_are_kept() {
        let path = temp_file("one\ntwo\n");
        let file = FailureFile::read(&path).await.expect("read");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"three\n"))
            .expect("appended");
        file.rewrite(&["two"]).await.expect("rewritten");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\nthree\n");
        clean_up(&path);
    }

    #[tokio::test]
    async fn a_file_changed_otherwise_is_left_as_it_is() {
        let path = temp_file("one\ntwo\n");
        let file = FailureFile::read(&path).await.expect("read");
        std::fs::write(&path, "two\n").expect("rewritten by someone else");
        let err = file.rewrite(&[]).await.expect_err("refused");
        assert!(matches!(err, RewriteError::Changed(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        clean_up(&path);
    }
}
