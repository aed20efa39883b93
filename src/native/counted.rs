//! Every native client socket counts what it carries, so a load figure can read the
//! heartbeat traffic of thousands of clients without a proxy in between: the bytes of
//! the TCP stream each way (WebSocket frames with their headers, as a proxy forwarding
//! them would count), and the reads and writes that carried them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

static BYTES_UP: AtomicU64 = AtomicU64::new(0);
static BYTES_DOWN: AtomicU64 = AtomicU64::new(0);
static WRITES_UP: AtomicU64 = AtomicU64::new(0);
static READS_DOWN: AtomicU64 = AtomicU64::new(0);

/// What every native client socket of this process has carried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketTraffic {
    /// Client to server.
    pub bytes_up: u64,
    /// Server to client.
    pub bytes_down: u64,
    /// Writes that sent something (about one TCP segment each at heartbeat rates).
    pub writes_up: u64,
    /// Reads that received something.
    pub reads_down: u64,
}

/// The counts so far, summed over every native client socket of this process (a figure
/// reading the difference over a window must be the only one running).
pub fn socket_traffic() -> SocketTraffic {
    SocketTraffic {
        bytes_up: BYTES_UP.load(Ordering::Relaxed),
        bytes_down: BYTES_DOWN.load(Ordering::Relaxed),
        writes_up: WRITES_UP.load(Ordering::Relaxed),
        reads_down: READS_DOWN.load(Ordering::Relaxed),
    }
}

/// A client's TCP stream, counted.
pub(super) struct Counted(pub(super) TcpStream);

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.0).poll_read(cx, buf);
        let got = (buf.filled().len() - before) as u64;
        if got > 0 {
            BYTES_DOWN.fetch_add(got, Ordering::Relaxed);
            READS_DOWN.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.0).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                BYTES_UP.fetch_add(n as u64, Ordering::Relaxed);
                WRITES_UP.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
