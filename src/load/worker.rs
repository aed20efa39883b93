//! Proxies in worker processes, for runs whose sockets do not fit one process's
//! open-files limit (10,000 sessions need 10,000 client sockets plus 20,000 proxy
//! sockets, 30,000 while half-open links linger; a hard limit of 20,000 is common and
//! only a privileged process can raise it).
//!
//! A worker is `holdfast-load proxy-worker --upstream ADDR`: it prints `addr ADDR` and
//! then answers one line per command line on stdin: `apply ACTION` (→ how many),
//! `blackhole-new on|off`, `traffic` (→ four counters), `slowest` (→ µs), `shutdown`.

use super::proxy::{Action, Proxy, Traffic};
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Close => "close",
        Action::Reset => "reset",
        Action::HalfOpen => "half-open",
        Action::Blackhole => "blackhole",
    }
}

fn parse_action(s: &str) -> Option<Action> {
    Some(match s {
        "close" => Action::Close,
        "reset" => Action::Reset,
        "half-open" => Action::HalfOpen,
        "blackhole" => Action::Blackhole,
        _ => return None,
    })
}

/// The worker side: runs a proxy to `upstream` and obeys stdin until `shutdown` or
/// end of input. Blocks the calling thread.
pub fn serve_proxy_worker(upstreams: Vec<SocketAddr>) -> io::Result<()> {
    super::raise_nofile_limit(u64::MAX >> 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let proxy = rt.block_on(Proxy::start_to(upstreams))?;
    let mut out = io::stdout().lock();
    writeln!(out, "addr {}", proxy.addr())?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("apply"), Some(a)) => match parse_action(a) {
                Some(a) => proxy.apply_all(a).to_string(),
                None => format!("error unknown action {a}"),
            },
            (Some("blackhole-new"), Some(on)) => {
                proxy.set_blackhole_new(on == "on");
                "ok".into()
            }
            (Some("traffic"), None) => {
                let t = proxy.traffic();
                format!(
                    "{} {} {} {}",
                    t.bytes_up, t.bytes_down, t.chunks_up, t.chunks_down
                )
            }
            (Some("slowest"), None) => proxy.slowest_upstream_connect().as_micros().to_string(),
            (Some("shutdown"), None) => {
                rt.block_on(proxy.shutdown());
                writeln!(out, "ok")?;
                out.flush()?;
                return Ok(());
            }
            _ => format!("error unknown command {line}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    rt.block_on(proxy.shutdown());
    Ok(())
}

struct Pipe {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// A proxy running in a worker process.
pub struct RemoteProxy {
    addr: SocketAddr,
    pipe: Arc<Mutex<Pipe>>,
    child: Child,
}

impl Drop for RemoteProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RemoteProxy {
    /// Starts `bin proxy-worker --upstream ADDR[,ADDR…]` (`bin` is a `holdfast-load`).
    pub async fn start(bin: &Path, upstreams: &[SocketAddr]) -> io::Result<RemoteProxy> {
        let bin = bin.to_owned();
        let upstream = upstreams
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(",");
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(&bin)
                .args(["proxy-worker", "--upstream", &upstream])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display()))
                })?;
            let stdin = child.stdin.take().expect("stdin is piped");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
            let mut first = String::new();
            stdout.read_line(&mut first)?;
            let addr = first
                .trim()
                .strip_prefix("addr ")
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| io::Error::other(format!("proxy worker said `{first}`")))?;
            Ok(RemoteProxy {
                addr,
                pipe: Arc::new(Mutex::new(Pipe { stdin, stdout })),
                child,
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn request(&self, line: String) -> io::Result<String> {
        let pipe = self.pipe.clone();
        let ask = tokio::task::spawn_blocking(move || {
            let mut p = pipe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            writeln!(p.stdin, "{line}")?;
            p.stdin.flush()?;
            let mut reply = String::new();
            p.stdout.read_line(&mut reply)?;
            Ok::<_, io::Error>(reply.trim().to_owned())
        });
        tokio::time::timeout(Duration::from_secs(30), ask)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "proxy worker did not answer"))?
            .map_err(io::Error::other)?
    }

    pub async fn apply_all(&self, action: Action) -> io::Result<usize> {
        let reply = self
            .request(format!("apply {}", action_name(action)))
            .await?;
        reply
            .parse()
            .map_err(|_| io::Error::other(format!("proxy worker: {reply}")))
    }

    pub async fn set_blackhole_new(&self, on: bool) -> io::Result<()> {
        self.request(format!("blackhole-new {}", if on { "on" } else { "off" }))
            .await
            .map(|_| ())
    }

    pub async fn traffic(&self) -> io::Result<Traffic> {
        let reply = self.request("traffic".into()).await?;
        let v: Vec<u64> = reply
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match v[..] {
            [bytes_up, bytes_down, chunks_up, chunks_down] => Ok(Traffic {
                bytes_up,
                bytes_down,
                chunks_up,
                chunks_down,
            }),
            _ => Err(io::Error::other(format!("proxy worker: {reply}"))),
        }
    }

    pub async fn slowest_upstream_connect(&self) -> io::Result<Duration> {
        let reply = self.request("slowest".into()).await?;
        reply
            .parse()
            .map(Duration::from_micros)
            .map_err(|_| io::Error::other(format!("proxy worker: {reply}")))
    }

    /// Resets every connection and stops the worker.
    pub async fn shutdown(self) {
        let _ = self.request("shutdown".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip() {
        for a in [
            Action::Close,
            Action::Reset,
            Action::HalfOpen,
            Action::Blackhole,
        ] {
            assert_eq!(parse_action(action_name(a)), Some(a));
        }
        assert_eq!(parse_action("explode"), None);
    }
}
