//! A reusable read buffer for the workloads: reads land in place, consumed bytes are dropped by
//! moving two indices, and the storage is reused for the life of a connection (no per-request
//! allocation).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What one [`ReadBuffer::fill`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// This many bytes were appended.
    Read(usize),
    /// The peer closed its side.
    Eof,
    /// The buffer holds `limit` unconsumed bytes: the peer sent more than a message may be.
    Full,
}

/// Bytes read from a stream and not yet consumed, in a buffer that grows up to a limit.
pub(crate) struct ReadBuffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
}

impl ReadBuffer {
    /// An empty buffer that starts with `initial` bytes of room and never holds more than `limit`.
    pub(crate) fn new(initial: usize, limit: usize) -> Self {
        ReadBuffer {
            bytes: vec![0; initial.max(1)],
            start: 0,
            end: 0,
            limit: limit.max(initial),
        }
    }

    /// The unconsumed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Drops the first `count` unconsumed bytes (at most all of them).
    pub(crate) fn consume(&mut self, count: usize) {
        self.start = (self.start + count).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything (for a new connection).
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads once from `stream` into free room, compacting or growing first if there is none.
    pub(crate) async fn fill<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<Fill> {
        if self.end == self.bytes.len() {
            if self.start > 0 {
                self.bytes.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.bytes.len() < self.limit {
                let grown = (self.bytes.len() * 2).min(self.limit);
                self.bytes.resize(grown, 0);
            } else {
                return Ok(Fill::Full);
            }
        }
        let read = stream.read(&mut self.bytes[self.end..]).await?;
        if read == 0 {
            return Ok(Fill::Eof);
        }
        self.end += read;
        Ok(Fill::Read(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_compacts_then_grows_then_reports_full() {
        let mut source: &[u8] = b"abcdefghij";
        let mut buffer = ReadBuffer::new(4, 6);
        assert_eq!(buffer.fill(&mut source).await.unwrap(), Fill::Read(4));
        buffer.consume(2);
        assert_eq!(buffer.fill(&mut source).await.unwrap(), Fill::Read(2));
        assert_eq!(buffer.data(), b"cdef");
        assert_eq!(buffer.fill(&mut source).await.unwrap(), Fill::Read(2));
        assert_eq!(buffer.data(), b"cdefgh");
        assert_eq!(buffer.fill(&mut source).await.unwrap(), Fill::Full);
        buffer.consume(6);
        assert_eq!(buffer.fill(&mut source).await.unwrap(), Fill::Read(2));
        assert_eq!(buffer.fill(&mut source).await.unwrap(), Fill::Eof);
        assert_eq!(buffer.data(), b"ij");
    }
}
