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
    start_with(&[])
}

/// Starts the binary with `PORT=0` and `env`; the port it printed, once it printed it.
fn start_with(env: &[(&str, &str)]) -> (Server, u16) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    for var in ["HOST", "ENDPOINT", "REDIS_URL"] {
        command.env_remove(var);
    }
    let mut child = command
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chat-server starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Log lines (stdout, as the binary logs) may come first.
        let listening = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("chat server listening"));
        let _ = tx.send(listening.unwrap_or_default());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
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

/// A node started before its Redis (as a container started alongside it may be) waits for
/// Redis and joins the cluster once it is up, rather than exit.
#[test]
fn a_node_started_before_its_redis_joins_once_redis_is_up() {
    let redis_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{redis_port}/");
    let starting = std::thread::spawn(move || start_with(&[("REDIS_URL", url.as_str())]));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!starting.is_finished(), "it did not wait for Redis");
    let redis = Server(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)"),
    );
    let (mut server, port) = starting.join().expect("the node started");
    assert!(
        server.0.try_wait().expect("the node's state").is_none(),
        "the node exited"
    );
    let answer = get_root("127.0.0.1", port);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(redis);
}

/// Connections opened and left silent until the process runs out of file descriptors do not
/// keep every new client out for their header timeout (30 s): those that sent no request are
/// closed, and a client's handshake is answered.
#[test]
fn silent_connections_that_use_up_the_descriptors_do_not_keep_clients_out() {
    // Started under a small descriptor limit, as many servers are under a large one.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 64 && exec \"$0\"",
            env!("CARGO_BIN_EXE_chat-server"),
        ])
        .env_remove("REDIS_URL")
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chat-server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut server = Server(child);
    let mut line = String::new();
    let mut lines = BufReader::new(stdout);
    while !line.starts_with("chat server listening") {
        line.clear();
        assert!(
            lines.read_line(&mut line).expect("output") > 0,
            "no listening line"
        );
    }
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    // Its log is read on, so that it never waits on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    // More than the descriptors left: the last ones wait in the listen queue.
    let silent: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head)
        .expect("the handshake is answered while the silent connections last");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(
        server.0.try_wait().expect("the server's state").is_none(),
        "the server exited"
    );
    drop(silent);
}

/// One HTTP/1.1 request on a connection of its own; the answer's body.
fn request(port: u16, method: &str, target: &str, body: &str) -> String {
    answer_body(send_request(port, method, target, body))
}

/// Sends one HTTP/1.1 request on a connection of its own.
fn send_request(port: u16, method: &str, target: &str, body: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tcp
}

/// The body of the `200` answer on `tcp`.
fn answer_body(mut tcp: TcpStream) -> String {
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("an answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn a_terminated_server_closes_its_clients_and_exits() {
    let (mut server, port) = start();
    let open = request(port, "GET", "/socket.io/?EIO=4&transport=polling", "");
    let sid = open
        .split('"')
        .skip_while(|part| *part != "sid")
        .nth(2)
        .expect("a sid")
        .to_owned();
    let polling = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(request(port, "POST", &polling, "40"), "ok");
    assert!(request(port, "GET", &polling, "").starts_with("40"));
    let pending = send_request(port, "GET", &polling, "");
    // Connections are taken in the order they came: once a later one is answered, the
    // poll's has been accepted; a moment more, and its request has been read.
    assert!(get_root("127.0.0.1", port).ends_with("up and running"));
    std::thread::sleep(Duration::from_millis(200));
    let pending = std::thread::spawn(move || answer_body(pending));

    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("kill runs").success());
    // The pending poll is told the session is over, rather than cut off or left to time out.
    let last = pending.join().expect("the poll's answer");
    assert_eq!(last.rsplit('\u{1e}').next(), Some("1"), "{last:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("the server's state") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
