//! How far the reader of one of a process's output pipes has got, so that a log tail can
//! wait for the lines a function wrote just before it answered.
//!
//! The pipe's reader (see `logs`) and the Runtime API are separate tasks: a line written
//! just before the response may still sit in the pipe, or in the reader's buffer, when the
//! response arrives. Bytes a process wrote before it sent its response are in the pipe by
//! then (a write to a pipe has completed when it returns), so they have all been forwarded
//! once, *after* the response, the pipe holds nothing unread (Linux's `FIONREAD`) and the
//! reader is waiting for more, having forwarded every whole line it read. [`Watched`]
//! keeps that second fact for nothing more than two atomic stores per read of the pipe
//! (not per line); only a tail asks the first, so invocations that ask for no tail pay
//! nothing else. Elsewhere than on Linux the pipe cannot be asked, and only its end (the
//! process is gone) proves that everything was read.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, ReadBuf};

/// How far the reader of one pipe has got.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The reader's last read found the pipe empty (it waits for more), so every whole
    /// line it read before has been forwarded.
    waiting: AtomicBool,
    /// The pipe is closed and everything in it was read.
    ended: AtomicBool,
    /// A duplicate of the pipe's read end, through which to ask how much is unread.
    #[cfg(target_os = "linux")]
    pipe: Option<std::os::fd::OwnedFd>,
}

impl Progress {
    /// The progress of a reader of `pipe`.
    #[cfg(target_os = "linux")]
    pub(super) fn of(pipe: &impl std::os::fd::AsFd) -> Self {
        Self {
            // Without a duplicate the pipe cannot be asked; tails then wait their limit.
            pipe: pipe.as_fd().try_clone_to_owned().ok(),
            ..Self::default()
        }
    }

    /// The progress of a reader of `pipe`.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn of<P>(_pipe: &P) -> Self {
        Self::default()
    }

    /// Whether every whole line written to the pipe before this call has been forwarded.
    /// The pipe is asked first, the reader second: a reader that waits after the pipe was
    /// found empty has read, and forwarded, all that was in it.
    pub(super) fn caught_up(&self) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return true;
        }
        self.unread() == Some(0) && self.waiting.load(Ordering::Acquire)
    }

    /// How many bytes the pipe holds unread, if it can be asked.
    #[cfg(target_os = "linux")]
    fn unread(&self) -> Option<usize> {
        use std::os::fd::AsRawFd;

        let pipe = self.pipe.as_ref()?;
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which points to a live
        // c_int; the descriptor is owned by `self` and stays open for the call.
        let asked = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut unread) };
        if asked == -1 {
            return None;
        }
        usize::try_from(unread).ok()
    }

    /// How many bytes the pipe holds unread: unknown off Linux.
    #[cfg(not(target_os = "linux"))]
    fn unread(&self) -> Option<usize> {
        None
    }
}

/// A pipe whose reads are recorded in a [`Progress`].
pub(super) struct Watched<R> {
    pipe: R,
    progress: Arc<Progress>,
}

impl<R> Watched<R> {
    /// `pipe`, its reads recorded in `progress`.
    pub(super) fn new(pipe: R, progress: Arc<Progress>) -> Self {
        Self { pipe, progress }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Not waiting while the read is under way: whatever it brings is not forwarded yet.
        this.progress.waiting.store(false, Ordering::Release);
        let filled = buffer.filled().len();
        let polled = Pin::new(&mut this.pipe).poll_read(context, buffer);
        match &polled {
            // A buffered reader reads the pipe only once it has handed out all it had.
            Poll::Pending => this.progress.waiting.store(true, Ordering::Release),
            Poll::Ready(Ok(())) if buffer.filled().len() > filled => {}
            Poll::Ready(_) => this.progress.ended.store(true, Ordering::Release),
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    #[tokio::test]
    async fn a_reader_is_caught_up_only_once_it_has_read_what_was_written_and_waits() {
        // GIVEN a watched pipe with nothing written yet
        let (mut writer, reader) = tokio::net::unix::pipe::pipe().expect("a pipe");
        let progress = Arc::new(Progress::of(&reader));
        let mut lines = BufReader::new(Watched::new(reader, progress.clone())).lines();
        assert!(!progress.caught_up(), "the reader has not read yet");

        // WHEN a line is written and not read yet
        writer.write_all(b"one\n").await.expect("written");
        // THEN it is not caught up; once the line is read and the reader waits, it is
        assert!(!progress.caught_up());
        assert_eq!(
            lines.next_line().await.expect("read").as_deref(),
            Some("one")
        );
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), lines.next_line());
        assert!(waiting.await.is_err(), "nothing more to read");
        if cfg!(target_os = "linux") {
            assert!(progress.caught_up());
        }

        // AND a closed pipe that was read to its end is caught up anywhere
        drop(writer);
        assert_eq!(lines.next_line().await.expect("read"), None);
        assert!(progress.caught_up());
    }
}
