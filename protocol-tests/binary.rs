//! The `chat-server` binary, started as a user starts it: with nothing set but the port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server process, killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `PORT=0` and nothing else of its settings; the port it printed.
fn start() -> (Server, u16) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    for var in ["HOST", "ENDPOINT", "REDIS_URL"] {
        command.env_remove(var);
    }
    let mut child = command
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chat-server starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the listening line");
    let port = line
        .trim()
        .strip_prefix("chat server listening on http://localhost:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (server, port)
}

fn get_root(host: &str, port: u16) -> String {
    let mut tcp = TcpStream::connect((host, port)).unwrap_or_else(|e| panic!("{host}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn by_default_it_listens_on_every_ipv6_and_ipv4_address() {
    // Where the machine has no IPv6, the server listens on IPv4 alone.
    let ipv6 = TcpListener::bind("[::1]:0").is_ok();
    let (_server, port) = start();
    let hosts: &[&str] = if ipv6 {
        &["127.0.0.1", "::1"]
    } else {
        &["127.0.0.1"]
    };
    for host in hosts {
        let answer = get_root(host, port);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        assert!(answer.ends_with("up and running"), "{host}: {answer}");
    }
}
