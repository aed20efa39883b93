//! The server's end of RFC 6455: the upgrade, and frames read and written straight on
//! the TCP stream.
//!
//! Why not tungstenite, as the clients use: an idle socket is most of what a session
//! costs, and tungstenite keeps a read buffer and its largest write buffer for as long
//! as the socket lives, with no way to let them go. Here an idle socket holds no
//! buffer at all: bytes are read into the worker's stack, a frame is parsed from there,
//! and only a frame cut off by the read is kept (on the heap, until it is whole). A
//! batch of outgoing frames is encoded into one buffer, written, and freed.
//!
//! What the server accepts is what a client without extensions may send: masked
//! frames, no reserved bits, text (possibly fragmented), ping, pong and close. Binary
//! messages are read (the engine answers them with an error); anything else is a
//! protocol error, closed with 1002.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;

/// Close code: normal closure (RFC 6455 §7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
/// Close code: the peer broke the protocol.
pub(crate) const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a text message that is not UTF-8.
pub(crate) const CLOSE_NOT_UTF8: u16 = 1007;
/// Close code: a message too big to process.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A message read from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    /// A binary message (its bytes are not kept: the protocol has none).
    Binary,
    /// A WebSocket ping, answered with a pong of the same payload.
    Ping(Vec<u8>),
    Pong,
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read further.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A message longer than the limit, by the length its header announced.
    TooLarge { len: usize },
    /// A text message that is not UTF-8.
    NotUtf8,
    /// Anything else RFC 6455 forbids a client.
    Protocol(&'static str),
}

impl ReadError {
    /// The close code the server answers with.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => CLOSE_TOO_BIG,
            Self::NotUtf8 => CLOSE_NOT_UTF8,
            Self::Protocol(_) => CLOSE_PROTOCOL,
        }
    }
}

/// A fragmented message being put together.
struct Fragments {
    text: bool,
    data: Vec<u8>,
}

/// Turns the client's bytes into messages. Holds memory only while a frame or a
/// fragmented message is incomplete.
pub(crate) struct FrameReader {
    /// Bytes of a frame the last read cut off.
    pending: Vec<u8>,
    fragments: Option<Box<Fragments>>,
    /// The longest message accepted, in bytes.
    limit: usize,
}

/// A frame's header, parsed.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl FrameReader {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            fragments: None,
            limit,
        }
    }

    /// Reads `input` (the next bytes from the client), handing every whole message to
    /// `on` in order; a frame cut off at the end is kept for the next call. After an
    /// error the stream cannot be read further.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        on: &mut dyn FnMut(Incoming),
    ) -> Result<(), ReadError> {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            let used = self.parse(input, on)?;
            pending.extend_from_slice(&input[used..]);
        } else {
            pending.extend_from_slice(input);
            let used = self.parse(&pending, on)?;
            pending.drain(..used);
        }
        if !pending.is_empty() {
            // Room for the whole frame at once, when its header is there.
            if let Ok(Some(h)) = self.header(&pending) {
                pending.reserve((h.header_len + h.payload_len).saturating_sub(pending.len()));
            }
            self.pending = pending;
        }
        Ok(())
    }

    /// Parses whole frames from the front of `buf`; returns the bytes used.
    fn parse(&mut self, buf: &[u8], on: &mut dyn FnMut(Incoming)) -> Result<usize, ReadError> {
        let mut at = 0;
        while let Some(h) = self.header(&buf[at..])? {
            let start = at + h.header_len;
            let Some(payload) = buf.get(start..start + h.payload_len) else {
                break;
            };
            at = start + h.payload_len;
            let mut payload = payload.to_vec();
            unmask(&mut payload, h.mask);
            if let Some(msg) = self.frame(h.fin, h.opcode, payload)? {
                on(msg);
            }
        }
        Ok(at)
    }

    /// The header at the front of `buf`, once it is all there.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, ReadError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("client frame not masked"));
        }
        let (len, mut header_len) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0; 8];
                    be.copy_from_slice(b);
                    (u64::from_be_bytes(be), 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(ReadError::Protocol("control frame fragmented or too long"));
        }
        let so_far = self.fragments.as_ref().map_or(0, |f| f.data.len() as u64);
        if len.saturating_add(so_far) > self.limit as u64 {
            let len = usize::try_from(len.saturating_add(so_far)).unwrap_or(usize::MAX);
            return Err(ReadError::TooLarge { len });
        }
        let Some(m) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        let mask = [m[0], m[1], m[2], m[3]];
        header_len += 4;
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len,
            // Below the limit, so it fits.
            payload_len: len as usize,
        }))
    }

    /// One unmasked frame: a message, if it completes one.
    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<Incoming>, ReadError> {
        let whole = match opcode {
            OP_PING => return Ok(Some(Incoming::Ping(payload))),
            OP_PONG => return Ok(Some(Incoming::Pong)),
            OP_CLOSE => return close_frame(&payload).map(|code| Some(Incoming::Close(code))),
            OP_TEXT | OP_BINARY if self.fragments.is_some() => {
                return Err(ReadError::Protocol("new message inside a fragmented one"))
            }
            OP_TEXT | OP_BINARY if !fin => {
                self.fragments = Some(Box::new(Fragments {
                    text: opcode == OP_TEXT,
                    data: payload,
                }));
                return Ok(None);
            }
            OP_TEXT | OP_BINARY => (opcode == OP_TEXT, payload),
            OP_CONTINUATION => {
                let Some(f) = self.fragments.as_mut() else {
                    return Err(ReadError::Protocol("continuation without a message"));
                };
                f.data.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let f = self.fragments.take().map(|f| *f);
                f.map(|f| (f.text, f.data)).unwrap_or_default()
            }
            _ => return Err(ReadError::Protocol("unknown opcode")),
        };
        Ok(Some(match whole {
            (true, data) => {
                Incoming::Text(String::from_utf8(data).map_err(|_| ReadError::NotUtf8)?)
            }
            (false, _) => Incoming::Binary,
        }))
    }
}

/// A close frame's code: none, or two bytes and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("close frame of one byte")),
        [a, b, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| ReadError::NotUtf8)?;
            Ok(Some(u16::from_be_bytes([*a, *b])))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one unmasked, final frame (the server's frames are never masked).
fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a text frame.
pub(crate) fn put_text(out: &mut Vec<u8>, text: &str) {
    put_frame(out, OP_TEXT, text.as_bytes());
}

/// Appends the answer to a ping.
pub(crate) fn put_pong(out: &mut Vec<u8>, payload: &[u8]) {
    put_frame(out, OP_PONG, payload);
}

/// Appends a close frame with `code` and no reason.
pub(crate) fn put_close(out: &mut Vec<u8>, code: u16) {
    put_frame(out, OP_CLOSE, &code.to_be_bytes());
}

/// A valid WebSocket upgrade request (HTTP/1.1, version 13): what the 101 answer
/// needs, and the connection to take over once it is sent.
pub(crate) struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// A request of the socket URL that is not a WebSocket upgrade (the handler answers
/// it as a probe).
pub(crate) struct NotAnUpgrade;

impl axum::response::IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        StatusCode::BAD_REQUEST.into_response()
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotAnUpgrade> {
        let h = &parts.headers;
        let key = h.get(header::SEC_WEBSOCKET_KEY).ok_or(NotAnUpgrade)?;
        if parts.method != Method::GET
            || !header_has(h, header::CONNECTION, "upgrade")
            || !header_has(h, header::UPGRADE, "websocket")
            || h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13")
        {
            return Err(NotAnUpgrade);
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).map_err(|_| NotAnUpgrade)?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(NotAnUpgrade)?;
        Ok(Self { accept, on_upgrade })
    }
}

impl Upgrade {
    /// The 101 answer, and the connection it hands over once sent.
    pub(crate) fn accept(self) -> (Response, OnUpgrade) {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        (response, self.on_upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame as a browser sends it: masked.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, opcode, payload);
        if !fin {
            out[0] &= 0x7F;
        }
        let header_len = out.len() - payload.len();
        out[1] |= 0x80;
        let body = out.split_off(header_len);
        out.extend_from_slice(&mask);
        let mut body = body;
        unmask(&mut body, mask);
        out.extend(body);
        out
    }

    fn read_all(reader: &mut FrameReader, bytes: &[u8]) -> Result<Vec<Incoming>, ReadError> {
        let mut got = Vec::new();
        reader.feed(bytes, &mut |m| got.push(m))?;
        Ok(got)
    }

    #[test]
    fn a_masked_text_frame_reads_as_its_text_and_leaves_nothing_held() {
        let mut r = FrameReader::new(1024);
        let frame = client_frame(true, OP_TEXT, b"{\"t\":\"ping\"}", [1, 2, 3, 4]);
        let got = read_all(&mut r, &frame).unwrap();
        assert_eq!(got, vec![Incoming::Text("{\"t\":\"ping\"}".into())]);
        assert_eq!(r.pending.capacity(), 0, "an idle reader holds no buffer");
    }

    #[test]
    fn frames_split_at_every_byte_read_the_same() {
        let text = "x".repeat(300);
        let mut bytes = client_frame(true, OP_TEXT, text.as_bytes(), [9, 8, 7, 6]);
        bytes.extend(client_frame(true, OP_PING, b"hi", [1, 1, 1, 1]));
        bytes.extend(client_frame(false, OP_TEXT, b"ab", [5, 0, 5, 0]));
        bytes.extend(client_frame(true, OP_PONG, b"", [0, 0, 0, 1]));
        bytes.extend(client_frame(
            true,
            OP_CONTINUATION,
            "cé".as_bytes(),
            [3, 3, 3, 3],
        ));
        let want = vec![
            Incoming::Text(text.clone()),
            Incoming::Ping(b"hi".to_vec()),
            Incoming::Pong,
            Incoming::Text("abcé".into()),
        ];
        for cut in 0..=bytes.len() {
            let mut r = FrameReader::new(1024);
            let mut got = read_all(&mut r, &bytes[..cut]).unwrap();
            got.extend(read_all(&mut r, &bytes[cut..]).unwrap());
            assert_eq!(got, want, "cut at {cut}");
            assert!(r.pending.is_empty());
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header_alone() {
        let mut r = FrameReader::new(100);
        let frame = client_frame(true, OP_TEXT, &[b'a'; 200], [1, 2, 3, 4]);
        assert_eq!(
            read_all(&mut r, &frame[..8]),
            Err(ReadError::TooLarge { len: 200 })
        );
        // Fragments count together.
        let mut r = FrameReader::new(100);
        let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 60], [1, 2, 3, 4]);
        bytes.extend(client_frame(
            true,
            OP_CONTINUATION,
            &[b'a'; 60],
            [1, 2, 3, 4],
        ));
        assert_eq!(
            read_all(&mut r, &bytes),
            Err(ReadError::TooLarge { len: 120 })
        );
        assert_eq!(ReadError::TooLarge { len: 1 }.close_code(), 1009);
    }

    #[test]
    fn what_a_client_may_not_send_is_a_protocol_error() {
        let cases: Vec<(Vec<u8>, ReadError)> = vec![
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"a", [1, 2, 3, 4]);
                    f[1] &= 0x7F;
                    f
                },
                ReadError::Protocol("client frame not masked"),
            ),
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"a", [1, 2, 3, 4]);
                    f[0] |= 0x40;
                    f
                },
                ReadError::Protocol("reserved bits set"),
            ),
            (
                client_frame(true, 0x3, b"a", [1, 2, 3, 4]),
                ReadError::Protocol("unknown opcode"),
            ),
            (
                client_frame(true, OP_CONTINUATION, b"a", [1, 2, 3, 4]),
                ReadError::Protocol("continuation without a message"),
            ),
            (
                client_frame(false, OP_PING, b"a", [1, 2, 3, 4]),
                ReadError::Protocol("control frame fragmented or too long"),
            ),
            (
                client_frame(true, OP_CLOSE, b"a", [1, 2, 3, 4]),
                ReadError::Protocol("close frame of one byte"),
            ),
            (
                client_frame(true, OP_TEXT, &[0xC3, 0x28], [1, 2, 3, 4]),
                ReadError::NotUtf8,
            ),
        ];
        for (bytes, want) in cases {
            let mut r = FrameReader::new(1024);
            assert_eq!(read_all(&mut r, &bytes), Err(want));
        }
        let mut nested = client_frame(false, OP_TEXT, b"a", [1, 2, 3, 4]);
        nested.extend(client_frame(true, OP_TEXT, b"b", [1, 2, 3, 4]));
        let mut r = FrameReader::new(1024);
        assert_eq!(
            read_all(&mut r, &nested),
            Err(ReadError::Protocol("new message inside a fragmented one"))
        );
    }

    #[test]
    fn a_close_frame_carries_its_code() {
        let mut r = FrameReader::new(1024);
        let bytes = client_frame(true, OP_CLOSE, &[0x03, 0xE8, b'o', b'k'], [4, 3, 2, 1]);
        assert_eq!(
            read_all(&mut r, &bytes).unwrap(),
            vec![Incoming::Close(Some(1000))]
        );
        let bytes = client_frame(true, OP_CLOSE, &[], [4, 3, 2, 1]);
        assert_eq!(
            read_all(&mut r, &bytes).unwrap(),
            vec![Incoming::Close(None)]
        );
    }

    /// The server's frames, read back by tungstenite's own client: lengths in each of
    /// the three header forms.
    #[test]
    fn server_frames_read_back_by_tungstenite() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameSocket;
        for len in [0, 125, 126, 65_535, 65_536] {
            let text = "y".repeat(len);
            let mut out = Vec::new();
            put_text(&mut out, &text);
            put_close(&mut out, CLOSE_TOO_BIG);
            let mut socket = FrameSocket::new(std::io::Cursor::new(out));
            let frame = socket.read(None).unwrap().unwrap();
            assert_eq!(frame.into_text().unwrap().as_str(), text);
            let close = socket.read(None).unwrap().unwrap();
            assert_eq!(close.payload(), &CLOSE_TOO_BIG.to_be_bytes());
        }
    }

    proptest! {
        /// Frames as tungstenite's client writes them (masked, any length form), in
        /// chunks of any size, read as the messages sent.
        #[test]
        fn tungstenite_client_frames_in_any_chunks(
            texts in proptest::collection::vec(".{0,300}", 1..6),
            chunk in 1usize..700,
        ) {
            use tokio_tungstenite::tungstenite::protocol::frame::{coding::{Data, OpCode}, Frame};
            let mut bytes = Vec::new();
            for t in &texts {
                let mut frame = Frame::message(t.clone().into_bytes(), OpCode::Data(Data::Text), true);
                frame.header_mut().mask = Some([7, 1, 9, 3]);
                frame.format(&mut bytes).unwrap();
            }
            let mut r = FrameReader::new(64 * 1024);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.feed(piece, &mut |m| got.push(m)).unwrap();
            }
            let want: Vec<_> = texts.into_iter().map(Incoming::Text).collect();
            prop_assert_eq!(got, want);
            prop_assert!(r.pending.is_empty());
        }
    }
}
