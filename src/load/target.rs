//! The server under test: a `holdfast-server` child process the tool starts (so its
//! memory can be read from `/proc`), or an external one on a loopback address.

use super::host::{self, Who};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which server to load.
#[derive(Debug, Clone)]
pub enum ServerSpec {
    /// Start this `holdfast-server` binary (in `--dev` mode on 127.0.0.1, port chosen
    /// by the kernel) for every run, with these extra flags.
    Spawn { bin: PathBuf, args: Vec<String> },
    /// Use a running server at this `ws://` URL (loopback only; started with `--dev`).
    Target { url: String },
}

impl ServerSpec {
    /// The `holdfast-server` next to the running executable (how `cargo build` lays
    /// them out).
    pub fn sibling_binary() -> PathBuf {
        let name = format!("holdfast-server{}", std::env::consts::EXE_SUFFIX);
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(&name)))
            .unwrap_or_else(|| PathBuf::from(name))
    }
}

/// A server being loaded.
pub struct Server {
    /// `ws://host:port/ws`.
    pub url: String,
    /// The server's HTTP address (for `/metrics`).
    pub addr: SocketAddr,
    /// WebSocket path.
    pub path: String,
    /// Local epoch ms at which the child's listening line was read (0: not a child).
    pub listening_at_ms: u64,
    child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Splits `ws://host:port/path` and resolves it; refuses anything not on loopback.
pub fn parse_loopback_ws(url: &str) -> io::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| invalid(format!("`{url}`: only ws:// URLs are supported")))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/ws".to_owned()),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| invalid(format!("`{hostport}`: {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("`{hostport}` does not resolve")))?;
    if !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "`{url}` is not on loopback: holdfast-load only loads servers on this machine"
        )));
    }
    Ok((addr, path))
}

impl Server {
    /// Starts or attaches to the server `spec` names. Blocks up to 10 s for a child to
    /// report its address.
    pub async fn start(spec: &ServerSpec) -> io::Result<Server> {
        match spec {
            ServerSpec::Target { url } => {
                let (addr, path) = parse_loopback_ws(url)?;
                let server = Server {
                    url: url.clone(),
                    addr,
                    path,
                    listening_at_ms: 0,
                    child: None,
                };
                server.metrics().await?;
                Ok(server)
            }
            ServerSpec::Spawn { .. } => {
                Self::start_on(spec, "127.0.0.1:0".parse().expect("literal")).await
            }
        }
    }

    /// Starts a child of `spec` (which must be [`ServerSpec::Spawn`]) listening on
    /// `listen` (a restart takes over the port of the process it replaces).
    pub async fn start_on(spec: &ServerSpec, listen: SocketAddr) -> io::Result<Server> {
        let ServerSpec::Spawn { bin, args } = spec else {
            return Err(invalid("only a server the tool starts can be restarted"));
        };
        let bin = bin.clone();
        let args = args.clone();
        tokio::task::spawn_blocking(move || spawn_child(&bin, &args, listen))
            .await
            .map_err(io::Error::other)?
    }

    /// Sends `signal` to the child and waits up to `timeout` for it to exit, then
    /// kills it. Returns how long it took to exit (None: it had to be killed).
    pub async fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<Duration> {
        let mut child = self.child.take()?;
        tokio::task::spawn_blocking(move || {
            let sent = std::time::Instant::now();
            #[cfg(unix)]
            // SAFETY: kill(2) with the pid of a child we own and have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
            while sent.elapsed() < timeout {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(sent.elapsed());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// The child's pid, when the tool started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the child (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        host::rss_bytes(Who::Process(self.pid()?))
    }

    /// Open file descriptors of the child.
    pub fn fd_count(&self) -> Option<usize> {
        host::fd_count(Who::Process(self.pid()?))
    }

    /// CPU time (user + system) the child has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        host::cpu_time(Who::Process(self.pid()?))
    }

    /// `/metrics`, parsed: metric (with labels, as written) to value.
    pub async fn metrics(&self) -> io::Result<HashMap<String, f64>> {
        let body = http_get(self.addr, "/metrics").await?;
        Ok(parse_prometheus(&body))
    }

    /// Asks a child to stop (SIGTERM) and waits up to 5 s, then kills it.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            #[cfg(unix)]
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        })
        .await
        .ok();
    }
}

fn spawn_child(bin: &Path, args: &[String], listen: SocketAddr) -> io::Result<Server> {
    let mut child = Command::new(bin)
        .args(["--dev", "--log-format", "json", "--listen"])
        .arg(listen.to_string())
        .args(args)
        // The listening line is logged at info; per-connection logs are debug.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display())))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log until the address shows, then keeps draining it so the child
    // never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = tx.as_ref().and(listening_addr(&line)) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send((addr, crate::native::now_ms()));
                }
            }
        }
    });
    let mut server = Server {
        url: String::new(),
        addr: "127.0.0.1:0".parse().expect("literal address"),
        path: "/ws".into(),
        listening_at_ms: 0,
        child: Some(child),
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok((addr, at)) => {
            server.addr = addr;
            server.listening_at_ms = at;
            server.url = format!("ws://{addr}/ws");
            Ok(server)
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} did not report a listening address", bin.display()),
        )),
    }
}

/// The address in the server's `holdfast-server listening` JSON log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != "holdfast-server listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Prometheus text format to a map (comments skipped).
pub fn parse_prometheus(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One metric (with labels, as written) from parsed `/metrics`.
pub(crate) fn metric(m: &HashMap<String, f64>, name: &str) -> Option<f64> {
    m.get(name).copied()
}

/// How much a counter grew between two `/metrics` reads (None: either is missing).
pub(crate) fn delta(
    before: &Option<HashMap<String, f64>>,
    after: &Option<HashMap<String, f64>>,
    name: &str,
) -> Option<u64> {
    let b = metric(before.as_ref()?, name)?;
    let a = metric(after.as_ref()?, name)?;
    Some((a - b).max(0.0) as u64)
}

/// A minimal HTTP/1.1 GET (two endpoints do not need a client library).
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::other("malformed HTTP response"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!(
                "GET {path}: {}",
                head.lines().next().unwrap_or_default()
            )));
        }
        Ok(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("GET {path} timed out")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_loopback() {
        let (addr, path) = parse_loopback_ws("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(addr.port(), 8080);
        assert_eq!(path, "/ws");
        assert!(parse_loopback_ws("ws://10.0.0.1:8080/ws").is_err());
        assert!(parse_loopback_ws("http://127.0.0.1:8080/ws").is_err());
    }

    #[test]
    fn prometheus_text_parses() {
        let m = parse_prometheus(
            "# HELP x y\n# TYPE x gauge\nholdfast_sessions 12\nholdfast_calls{state=\"active\"} 3\n",
        );
        assert_eq!(m["holdfast_sessions"], 12.0);
        assert_eq!(m["holdfast_calls{state=\"active\"}"], 3.0);
    }

    #[test]
    fn the_listening_line_is_found() {
        let line = r#"{"timestamp":"x","level":"INFO","fields":{"message":"holdfast-server listening","addr":"127.0.0.1:4321"},"target":"holdfast::server"}"#;
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(listening_addr("not json"), None);
    }
}
