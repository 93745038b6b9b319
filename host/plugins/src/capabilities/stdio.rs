//! Captured stdout/stderr. Guests built by standard toolchains print (Python tracebacks,
//! `console.log`, Rust panics); the text is kept in a capped per-call buffer and forwarded
//! to the call's log when the call ends. Writes beyond the cap are accepted and discarded:
//! unlike `MemoryOutputPipe`, a full buffer must not trap the guest.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per stream per call.
pub const MAX_CAPTURE_BYTES: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    discarded: usize,
}

/// One captured stream. Clones share the buffer.
#[derive(Debug, Clone, Default)]
pub struct CapturedPipe(Arc<Mutex<Buffer>>);

impl CapturedPipe {
    pub fn new() -> Self {
        Self::default()
    }

    fn append(&self, data: &[u8]) {
        // A poisoned lock only means another writer panicked mid-append; the bytes are
        // still a valid prefix, so keep going.
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_CAPTURE_BYTES.saturating_sub(buf.bytes.len());
        let keep = data.len().min(room);
        buf.bytes.extend_from_slice(&data[..keep]);
        buf.discarded += data.len() - keep;
    }

    /// The captured text split into lines (lossy UTF-8), and how many bytes were discarded.
    pub fn take_lines(&self) -> (Vec<String>, usize) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut buf.bytes);
        let discarded = std::mem::take(&mut buf.discarded);
        let text = String::from_utf8_lossy(&bytes);
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        (lines, discarded)
    }
}

impl IsTerminal for CapturedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: excess is discarded, so the guest never blocks or traps.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_capped_prefix_and_never_refuses_a_write() {
        let mut pipe = CapturedPipe::new();
        for _ in 0..100 {
            OutputStream::write(&mut pipe, Bytes::from_static(b"hello world\n")).unwrap();
            assert!(pipe.check_write().unwrap() > 0);
        }
        OutputStream::write(&mut pipe, Bytes::from(vec![b'x'; MAX_CAPTURE_BYTES])).unwrap();
        let (lines, discarded) = pipe.take_lines();
        assert_eq!(lines[0], "hello world");
        assert_eq!(lines.iter().filter(|l| *l == "hello world").count(), 100);
        assert_eq!(discarded, 1200);
        let (lines, discarded) = pipe.take_lines();
        assert!(lines.is_empty());
        assert_eq!(discarded, 0);
    }
}
