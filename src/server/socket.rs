//! The socket layer: the listener and one WebSocket's reader and writer tasks.

use super::actor::{Cmd, Outbound};
use super::http::AppState;
use crate::protocol::{decode_client, encode, BadFrame};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Frames queued per socket before it counts as a dead (too slow) link.
const WRITER_QUEUE: usize = 4096;
/// Per-socket read buffer.
const READ_BUFFER: usize = 4 * 1024;
/// After we close a socket, how long the peer has to answer the close before the
/// socket is dropped anyway (a half-open peer never answers).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pending connections the kernel queues; a resume storm reconnects thousands at once.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with a backlog deep enough for a reconnect storm (the default 128
/// makes the kernel drop connects, which clients then retry seconds later).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub(crate) async fn ws_handler(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    // Let frames somewhat above the protocol limit through, so the engine can answer
    // `frame-too-large` instead of the socket dying without a word.
    let transport_limit = state.max_frame_bytes.saturating_mul(4).max(64 * 1024);
    ws.max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        // tungstenite's default 128 KiB read buffer is allocated (and zeroed) per
        // socket; signaling frames are small, so 4 KiB costs nothing and saves most of
        // a session's memory.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| serve_socket(socket, state))
}

async fn serve_socket(socket: WebSocket, state: AppState) {
    let (writer_tx, mut writer_rx) = mpsc::channel::<Outbound>(WRITER_QUEUE);
    let (reply_tx, reply_rx) = oneshot::channel();
    if state
        .actor
        .send(Cmd::Open {
            writer: writer_tx,
            reply: reply_tx,
        })
        .is_err()
    {
        return;
    }
    let Ok(conn) = reply_rx.await else { return };
    let (mut sink, mut stream) = socket.split();
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        while let Some(out) = writer_rx.recv().await {
            match out {
                Outbound::Frame(frame) => {
                    if sink
                        .send(Message::Text(encode(&*frame).into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Outbound::Close => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1000,
                            reason: "".into(),
                        })))
                        .await;
                    // A live peer answers the close at once; a half-open one never
                    // does, and its socket must not linger.
                    tokio::time::sleep(CLOSE_GRACE).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
        let _ = gone_tx.send(());
    });
    let max = state.max_frame_bytes;
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = &mut gone_rx => break,
        };
        let input = match msg {
            Some(Ok(Message::Text(text))) => decode_client(text.as_str(), max),
            Some(Ok(Message::Binary(_))) => Err(BadFrame::Binary),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
        };
        if state.actor.send(Cmd::Frame(conn, input)).is_err() {
            break;
        }
    }
    let _ = state.actor.send(Cmd::Closed(conn));
    writer.abort();
}
