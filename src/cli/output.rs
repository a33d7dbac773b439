//! Command output on stdout. A reader that closes the pipe early, as
//! `head` does, ends the output but not the command. The rest of the
//! output is dropped without a message, and the exit code still reports
//! the command's work. Any other write error is reported and exits 74.

use std::io::{ErrorKind, StdoutLock, Write};
use std::process::ExitCode;

use super::{EXIT_IO, logging};

/// Standard output, locked, that drops what it is given once the reader
/// has closed the pipe (`EPIPE`) instead of failing.
pub struct Stdout {
    inner: StdoutLock<'static>,
    closed: bool,
}

impl Stdout {
    /// Locks standard output for the rest of the command.
    pub fn lock() -> Self {
        Self {
            inner: std::io::stdout().lock(),
            closed: false,
        }
    }

    /// Returns whether the reader has closed the pipe, so that a command
    /// can skip work whose only result is output.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Records a closed pipe as the end of the output and passes on any
    /// other result.
    fn absorb_closed_pipe<T>(&mut self, result: std::io::Result<T>, done: T) -> std::io::Result<T> {
        match result {
            Err(error) if error.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(done)
            }
            other => other,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let result = self.inner.write(buf);
        self.absorb_closed_pipe(result, buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush();
        self.absorb_closed_pipe(result, ())
    }
}

/// Writes `text` to stdout and flushes it, as [`write_with`] does.
pub fn print(text: &str) -> Result<(), ExitCode> {
    write_with(|out| out.write_all(text.as_bytes()))
}

/// Runs `write` on stdout, then flushes it. A closed pipe counts as
/// success. Any other failure is reported, and its exit code returned.
pub fn write_with(write: impl FnOnce(&mut Stdout) -> std::io::Result<()>) -> Result<(), ExitCode> {
    let mut stdout = Stdout::lock();
    write(&mut stdout)
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            logging::error(&format_args!("cannot write to stdout: {error}"));
            ExitCode::from(EXIT_IO)
        })
}
