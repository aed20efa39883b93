//! The native client breaks its own socket the way it is told, as the load tool's storms
//! need without a proxy: what the other end of the TCP connection sees is a clean close,
//! a reset, or nothing at all (half-open), and in every case the client engine sees its
//! link close at once and opens a new one. The other end here is a bare WebSocket
//! acceptor, so what it reads is the TCP stream itself.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets (`wasm-pack test` builds every test target)

use futures_util::StreamExt;
use holdfast::engine::client::ClientConfig;
use holdfast::native::{socket_traffic, LinkBreak, NativeClient};
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

/// What the acceptor's end of the first socket saw after the break, and whether the
/// client opened a second socket.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The stream ended cleanly (FIN).
    End,
    /// The stream was reset (RST).
    Reset,
    /// Nothing within the wait: the connection is still open.
    Nothing,
}

async fn accept_ws(listener: &TcpListener) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

async fn break_and_watch(how: LinkBreak) -> Seen {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let client = NativeClient::start(&url, ClientConfig::new("ann"), Vec::new());
    let mut first = accept_ws(&listener).await;
    // The client's hello: the link is open on both sides.
    let hello = tokio::time::timeout(WAIT, first.next()).await.unwrap();
    assert!(matches!(&hello, Some(Ok(m)) if m.is_text()), "{hello:?}");
    let before = socket_traffic();
    assert!(before.bytes_up > 0 && before.writes_up > 0, "{before:?}");

    client.break_link(how);
    // The engine saw the link close at once: it opens another socket, whatever the
    // first one's far end saw.
    let _second = accept_ws(&listener).await;

    let mut tcp = first.into_inner();
    let mut buf = [0u8; 64];
    let seen = match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
        Ok(Ok(0)) => Seen::End,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => Seen::Reset,
        Ok(other) => panic!("unexpected read on the broken socket: {other:?}"),
        Err(_) => Seen::Nothing,
    };
    if seen == Seen::Nothing {
        // Half-open: the client still holds the socket and swallows what is sent into
        // it, until this end closes it.
        use tokio::io::AsyncWriteExt;
        tcp.write_all(b"\x81\x02hi").await.unwrap();
    }
    client.close_tab().await;
    seen
}

#[tokio::test]
async fn a_clean_break_ends_the_stream_with_a_fin() {
    assert_eq!(break_and_watch(LinkBreak::Close).await, Seen::End);
}

#[tokio::test]
async fn a_reset_break_resets_the_stream() {
    assert_eq!(break_and_watch(LinkBreak::Reset).await, Seen::Reset);
}

#[tokio::test]
async fn a_half_open_break_leaves_the_far_end_open_and_silent() {
    assert_eq!(break_and_watch(LinkBreak::HalfOpen).await, Seen::Nothing);
}
