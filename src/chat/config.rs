//! The chat server's configuration: environment variables, overridden by command-line flags.

use crate::engineio::{AllowedOrigins, EngineConfig};
use crate::socketio::{SocketIo, SocketIoBuilder};

/// Settings of the chat application and its server.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Browser origins allowed besides the server's own.
    pub endpoints: Vec<String>,
    /// Longest `roomMessage` relayed, in bytes.
    pub max_message_bytes: usize,
    /// `roomMessage`s a socket may send at once, a message counting one for every KiB it has
    /// begun. The default, with `rate_per_second`'s, is far above what a person types and what
    /// a program relaying a conversation sends (a client's emits queued while it was away come
    /// at once, too), and far below a flood, whose every message each member of the room would
    /// be sent.
    pub rate_burst: u32,
    /// `roomMessage`s a socket may send per second, sustained.
    pub rate_per_second: f64,
    /// Logins one connection may make at once, whatever sockets it opens. Each sends the
    /// room's member list to every member, and makes possible a logout that does the same: a
    /// client logging in and out in a loop would have every member of a large room sent
    /// megabytes a second.
    pub login_burst: u32,
    /// Logins one connection may make per second, sustained.
    pub logins_per_second: f64,
    /// WebSocket messages (one per fragment of a fragmented one) a client may send at once, and
    /// per second, sustained; beyond, the connection is closed (1008).
    pub ws_message_burst: u32,
    /// See `ws_message_burst`.
    pub ws_messages_per_second: f64,
    /// Sessions the server holds at most; further handshakes get `503`.
    pub max_sessions: usize,
    /// Sessions one client address may hold; further handshakes get `429`.
    pub max_sessions_per_ip: usize,
    /// Redis to cluster through; `None` is a single node with everything in memory.
    pub redis_url: Option<String>,
    /// For a `rediss://` URL: the certificate authorities (PEM) Redis's certificate must chain
    /// to, instead of the system's.
    pub redis_tls_ca_file: Option<std::path::PathBuf>,
    /// For a `rediss://` URL: this node's certificate and key (PEM files), for a Redis that
    /// asks clients for one; both or neither.
    pub redis_tls_client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Every address, IPv6 and IPv4 alike, as Node's `listen(port)` takes them: a client that
/// resolves `localhost` to `::1` first reaches the server too.
pub const ANY_HOST: &str = "::";

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            host: ANY_HOST.to_owned(),
            port: 3001,
            endpoints: vec!["http://localhost:3000".to_owned()],
            max_message_bytes: 16 * 1024,
            rate_burst: 1000,
            rate_per_second: 1000.0,
            login_burst: 30,
            logins_per_second: 2.0,
            redis_url: None,
            redis_tls_ca_file: None,
            redis_tls_client_cert: None,
            ws_message_burst: 100_000,
            ws_messages_per_second: 50_000.0,
            max_sessions: EngineConfig::default().max_sessions,
            max_sessions_per_ip: EngineConfig::default().max_sessions_per_ip,
        }
    }
}

impl ChatConfig {
    /// The origins `ENDPOINT` names. `*` among them lets every origin in, without credentials,
    /// as the original's `cors: { origin: "*" }` did.
    pub fn allowed_origins(&self) -> AllowedOrigins {
        if self.endpoints.iter().any(|o| o == "*") {
            AllowedOrigins::Any
        } else {
            AllowedOrigins::List(self.endpoints.clone())
        }
    }

    /// The Socket.IO server these settings ask for: the configured origins plus the server's
    /// own (it serves the web client), and the engine's limits. The cluster adapter, if any, is
    /// the caller's to add.
    pub fn server_builder(&self) -> SocketIoBuilder {
        SocketIo::builder()
            .allowed_origins(self.allowed_origins())
            .allow_same_origin(true)
            .ws_message_rate(self.ws_message_burst, self.ws_messages_per_second)
            .max_sessions(self.max_sessions)
            .max_sessions_per_ip(self.max_sessions_per_ip)
    }
}

/// The `--help` text.
pub const USAGE: &str = "\
chat-server: the chat application over Socket.IO

Usage: chat-server [OPTIONS]

Options (each also read from the environment variable in brackets; a flag wins):
  --port <PORT>                 port to listen on [PORT] (default 3001)
  --host <ADDR>                 address to listen on [HOST] (default ::, every IPv6 and
                                IPv4 address; 0.0.0.0 where IPv6 is off)
  --endpoint <ORIGINS>          allowed browser origins, comma-separated, or * [ENDPOINT]
                                (default http://localhost:3000; the server's own origin is
                                always allowed)
  --max-message-bytes <N>       longest roomMessage relayed [MAX_MESSAGE_BYTES] (default 16384)
  --rate-burst <N>              roomMessages at once per socket, one per KiB begun
                                [RATE_BURST] (default 1000)
  --rate-per-second <N>         sustained roomMessages per second per socket [RATE_PER_SECOND]
                                (default 1000)
  --login-burst <N>             logins at once per connection [LOGIN_BURST] (default 30)
  --logins-per-second <N>       sustained logins per second per connection [LOGINS_PER_SECOND]
                                (default 2); beyond, the login gets an error
  --ws-message-burst <N>        WebSocket messages at once per client [WS_MESSAGE_BURST]
                                (default 100000)
  --ws-messages-per-second <N>  sustained WebSocket messages per second per client
                                [WS_MESSAGES_PER_SECOND] (default 50000); beyond, close 1008
  --max-sessions <N>            clients the server holds at most [MAX_SESSIONS] (default 100000);
                                beyond, handshakes get 503
  --max-sessions-per-ip <N>     clients one address may hold [MAX_SESSIONS_PER_IP]
                                (default 20000); beyond, handshakes get 429
  --redis-url <URL>             join the cluster of nodes on this Redis [REDIS_URL]
                                (e.g. redis://127.0.0.1:6379/, rediss:// for TLS;
                                default: one node, in memory)
  --redis-tls-ca-file <PATH>    for rediss://: the certificate authorities (PEM) to trust
                                instead of the system's [REDIS_TLS_CA_FILE]
  --redis-tls-cert-file <PATH>  for rediss:// to a Redis that asks clients for a certificate:
  --redis-tls-key-file <PATH>   this node's certificate and key, PEM [REDIS_TLS_CERT_FILE,
                                REDIS_TLS_KEY_FILE]
  -h, --help                    this text

Logging: RUST_LOG (e.g. RUST_LOG=debug).
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
// Made once per process and matched at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run with this configuration.
    Run(ChatConfig),
    /// Print the usage.
    Help,
}

fn parse_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

fn positive(value: &str) -> Option<usize> {
    value.parse().ok().filter(|n| *n > 0)
}

/// A rate per second: a finite number, not negative.
fn rate(value: &str) -> Option<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.0)
}

fn set(config: &mut ChatConfig, key: &str, value: &str) -> Result<(), String> {
    let bad = |what: &str| format!("invalid {what}: {value:?}");
    match key {
        "port" => config.port = value.parse().map_err(|_| bad("port"))?,
        "host" => config.host = value.to_owned(),
        "endpoint" => config.endpoints = parse_endpoints(value),
        "max-message-bytes" => config.max_message_bytes = value.parse().map_err(|_| bad("size"))?,
        "rate-burst" => config.rate_burst = value.parse().map_err(|_| bad("burst"))?,
        "rate-per-second" => config.rate_per_second = rate(value).ok_or_else(|| bad("rate"))?,
        "login-burst" => config.login_burst = value.parse().map_err(|_| bad("burst"))?,
        "logins-per-second" => config.logins_per_second = rate(value).ok_or_else(|| bad("rate"))?,
        "ws-message-burst" => config.ws_message_burst = value.parse().map_err(|_| bad("burst"))?,
        "ws-messages-per-second" => {
            config.ws_messages_per_second = rate(value)
                .filter(|r| *r > 0.0)
                .ok_or_else(|| bad("rate"))?
        }
        "max-sessions" => config.max_sessions = positive(value).ok_or_else(|| bad("count"))?,
        "max-sessions-per-ip" => {
            config.max_sessions_per_ip = positive(value).ok_or_else(|| bad("count"))?
        }
        "redis-url" => config.redis_url = Some(value.to_owned()).filter(|v| !v.is_empty()),
        "redis-tls-ca-file" => {
            config.redis_tls_ca_file = Some(value.into()).filter(|_| !value.is_empty())
        }
        "redis-tls-cert-file" | "redis-tls-key-file" => {
            let (cert_file, key_file) = config.redis_tls_client_cert.get_or_insert_default();
            match key {
                "redis-tls-cert-file" => *cert_file = value.into(),
                _ => *key_file = value.into(),
            }
        }
        _ => return Err(format!("unknown option --{key}")),
    }
    Ok(())
}

/// Reads the environment (through `env`) and then the flags.
pub fn parse<I, E>(args: I, env: E) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    let mut config = ChatConfig::default();
    for (var, key) in [
        ("PORT", "port"),
        ("HOST", "host"),
        ("ENDPOINT", "endpoint"),
        ("MAX_MESSAGE_BYTES", "max-message-bytes"),
        ("RATE_BURST", "rate-burst"),
        ("RATE_PER_SECOND", "rate-per-second"),
        ("LOGIN_BURST", "login-burst"),
        ("LOGINS_PER_SECOND", "logins-per-second"),
        ("WS_MESSAGE_BURST", "ws-message-burst"),
        ("WS_MESSAGES_PER_SECOND", "ws-messages-per-second"),
        ("MAX_SESSIONS", "max-sessions"),
        ("MAX_SESSIONS_PER_IP", "max-sessions-per-ip"),
        ("REDIS_URL", "redis-url"),
        ("REDIS_TLS_CA_FILE", "redis-tls-ca-file"),
        ("REDIS_TLS_CERT_FILE", "redis-tls-cert-file"),
        ("REDIS_TLS_KEY_FILE", "redis-tls-key-file"),
    ] {
        if let Some(value) = env(var).filter(|v| !v.is_empty()) {
            set(&mut config, key, &value).map_err(|e| format!("{var}: {e}"))?;
        }
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (
                flag.to_owned(),
                args.next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?,
            ),
        };
        set(&mut config, &key, &value)?;
    }
    if let Some((cert, key)) = &config.redis_tls_client_cert
        && (cert.as_os_str().is_empty() || key.as_os_str().is_empty())
    {
        return Err("--redis-tls-cert-file and --redis-tls-key-file go together".to_owned());
    }
    Ok(Command::Run(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(|s| s.to_string()), move |k| {
            env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_env_and_flags() {
        assert_eq!(run(&[], &[]), Ok(Command::Run(ChatConfig::default())));
        let Ok(Command::Run(c)) = run(
            &["--port", "4000"],
            &[
                ("PORT", "5000"),
                ("ENDPOINT", "http://a.example, http://b.example/"),
            ],
        ) else {
            panic!("parse failed")
        };
        assert_eq!(c.port, 4000, "a flag wins over the environment");
        assert_eq!(c.endpoints, ["http://a.example", "http://b.example"]);
        let Ok(Command::Run(c)) = run(&["--host=127.0.0.1", "--rate-burst", "5"], &[]) else {
            panic!("parse failed")
        };
        assert_eq!((c.host.as_str(), c.rate_burst), ("127.0.0.1", 5));
        let Ok(Command::Run(c)) = run(&["--login-burst", "3"], &[("LOGINS_PER_SECOND", "0.5")])
        else {
            panic!("parse failed")
        };
        assert_eq!((c.login_burst, c.logins_per_second), (3, 0.5));
        assert!(run(&["--logins-per-second", "-1"], &[]).is_err());
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        let Ok(Command::Run(c)) = run(&["--redis-url", "redis://r:1/"], &[("REDIS_URL", "x")])
        else {
            panic!("flags parse")
        };
        assert_eq!(c.redis_url.as_deref(), Some("redis://r:1/"));
        let Ok(Command::Run(c)) = run(&[], &[("REDIS_TLS_CA_FILE", "/etc/redis/ca.pem")]) else {
            panic!("the CA file parses")
        };
        assert_eq!(c.redis_tls_ca_file, Some("/etc/redis/ca.pem".into()));
        let Ok(Command::Run(c)) = run(
            &["--redis-tls-key-file", "k.pem"],
            &[("REDIS_TLS_CERT_FILE", "c.pem")],
        ) else {
            panic!("the client certificate parses")
        };
        assert_eq!(
            c.redis_tls_client_cert,
            Some(("c.pem".into(), "k.pem".into()))
        );
        assert!(run(&["--redis-tls-cert-file", "c.pem"], &[]).is_err());
        let Ok(Command::Run(c)) = run(&["--max-sessions-per-ip=50"], &[("MAX_SESSIONS", "900")])
        else {
            panic!("session caps parse")
        };
        assert_eq!((c.max_sessions, c.max_sessions_per_ip), (900, 50));
        assert!(run(&["--max-sessions-per-ip", "0"], &[]).is_err());
        assert!(run(&["--port", "x"], &[]).is_err());
        assert!(run(&["--port"], &[]).is_err());
        assert!(run(&["--nope", "1"], &[]).is_err());
        assert!(run(&[], &[("PORT", "99999")]).is_err());
    }
}
