//! Where Redis is and who to log in as, read from a URL. Pure: a string in, an address out.
//!
//! The forms are those Redis clients share: `redis://[user[:password]@]host[:port][/db]`
//! (`rediss://` for the same over TLS), and for a Unix socket `redis+unix:///path` or `unix:///path`, whose credentials go in the query
//! (`?user=...&pass=...`). User, password and path are percent-decoded. The database number
//! is checked and otherwise not used: pub/sub, all the node does, ignores it.

use std::path::PathBuf;

use thiserror::Error;

/// Port of a URL that names none.
const DEFAULT_PORT: u16 = 6379;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or address (IPv6 without its brackets) and a port.
    Tcp { host: String, port: u16 },
    /// A Unix socket's path.
    Unix(PathBuf),
}

/// A parsed Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Address {
    pub endpoint: Endpoint,
    /// Whether the connection speaks TLS (`rediss://`).
    pub tls: bool,
    /// Sent with `AUTH` (an ACL user) only when there is a password too.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The password stays out of logs.
impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Address")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "..."))
            .finish()
    }
}

/// Why a URL does not name a Redis server this node can reach.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// Neither `redis://`, `rediss://` nor `redis+unix://` / `unix://`.
    #[error("not a redis URL (redis://, rediss://, redis+unix:// or unix://)")]
    Scheme,
    /// `redis://` without a host.
    #[error("the URL names no host")]
    NoHost,
    /// A Unix socket URL without a path.
    #[error("the URL names no socket path")]
    NoPath,
    /// A port that is not a number from 0 to 65535.
    #[error("bad port {0:?}")]
    Port(String),
    /// A database that is not a number.
    #[error("bad database number {0:?}")]
    Database(String),
    /// A `%` not followed by two hex digits, or what they decode to is not UTF-8.
    #[error("bad percent-encoding")]
    Encoding,
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(url: &str) -> Result<Address, AddressError> {
        let (scheme, rest) = url.split_once("://").ok_or(AddressError::Scheme)?;
        // A fragment means nothing to either form.
        let rest = rest.split_once('#').map_or(rest, |(rest, _fragment)| rest);
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => tcp(rest, false),
            "rediss" => tcp(rest, true),
            "redis+unix" | "unix" => unix(rest),
            _ => Err(AddressError::Scheme),
        }
    }
}

fn tcp(rest: &str, tls: bool) -> Result<Address, AddressError> {
    let (rest, _query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    check_database(db)?;
    // The password may hold an `@`; the host cannot.
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(AddressError::NoHost)?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or(AddressError::NoHost)?),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(AddressError::NoHost);
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p.parse().map_err(|_| AddressError::Port(p.to_owned()))?,
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (info, None),
            };
            (non_empty(decode(user)?), pass.map(decode).transpose()?)
        }
    };
    Ok(Address {
        endpoint: Endpoint::Tcp {
            host: host.to_owned(),
            port,
        },
        tls,
        username,
        password,
    })
}

fn unix(rest: &str) -> Result<Address, AddressError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // `unix:///path` has an empty authority before the path; `unix://localhost/path` one
    // naming this machine.
    let path = path.strip_prefix("localhost").unwrap_or(path);
    if path.is_empty() {
        return Err(AddressError::NoPath);
    }
    let mut address = Address {
        endpoint: Endpoint::Unix(PathBuf::from(decode(path)?)),
        tls: false,
        username: None,
        password: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode_query(value)?;
        match key {
            "db" => check_database(&value)?,
            "user" => address.username = non_empty(value),
            "pass" | "password" => address.password = Some(value),
            _ => {}
        }
    }
    Ok(address)
}

fn check_database(db: &str) -> Result<(), AddressError> {
    if db.is_empty() || db.parse::<u32>().is_ok() {
        Ok(())
    } else {
        Err(AddressError::Database(db.to_owned()))
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A query value: `+` is a space there.
fn decode_query(s: &str) -> Result<String, AddressError> {
    decode(&s.replace('+', " "))
}

fn decode(s: &str) -> Result<String, AddressError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(AddressError::Encoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| AddressError::Encoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| AddressError::Encoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| AddressError::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    fn parse(url: &str) -> Result<Address, AddressError> {
        url.parse()
    }

    #[test]
    fn host_port_and_database() {
        let a = parse("redis://127.0.0.1:6390/3").unwrap();
        assert_eq!(a.endpoint, tcp("127.0.0.1", 6390));
        assert_eq!((a.username, a.password), (None, None));
        assert_eq!(parse("redis://cache").unwrap().endpoint, tcp("cache", 6379));
        assert_eq!(
            parse("REDIS://cache:/").unwrap().endpoint,
            tcp("cache", 6379)
        );
        assert_eq!(
            parse("redis://[::1]:7000/").unwrap().endpoint,
            tcp("::1", 7000)
        );
        assert_eq!(parse("redis://[::1]").unwrap().endpoint, tcp("::1", 6379));
        assert!(!parse("redis://cache").unwrap().tls);
    }

    #[test]
    fn rediss_is_the_same_over_tls() {
        let a = parse("rediss://u:pw@cache.example:6380/0").unwrap();
        assert_eq!(a.endpoint, tcp("cache.example", 6380));
        assert!(a.tls);
        assert_eq!(a.username.as_deref(), Some("u"));
        assert_eq!(a.password.as_deref(), Some("pw"));
        let a = parse("REDISS://cache").unwrap();
        assert_eq!((a.endpoint, a.tls), (tcp("cache", 6379), true));
        assert!(!parse("unix:///r.sock").unwrap().tls);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let a = parse("redis://:p%40ss:w@host/").unwrap();
        assert_eq!(a.username, None);
        assert_eq!(a.password.as_deref(), Some("p@ss:w"));
        let a = parse("redis://app%2Done:s3cret@host:1").unwrap();
        assert_eq!(a.username.as_deref(), Some("app-one"));
        assert_eq!(a.password.as_deref(), Some("s3cret"));
        // An `@` left unencoded in the password still splits at the last one.
        let a = parse("redis://u:a@b@host").unwrap();
        assert_eq!(a.password.as_deref(), Some("a@b"));
        assert_eq!(a.endpoint, tcp("host", 6379));
        assert!(!format!("{a:?}").contains("a@b"), "password in Debug");
    }

    #[test]
    fn unix_sockets() {
        let a = parse("redis+unix:///run/redis.sock").unwrap();
        assert_eq!(a.endpoint, Endpoint::Unix("/run/redis.sock".into()));
        let a = parse("unix:///tmp/r%20s.sock?db=2&user=me&pass=a+b%26c").unwrap();
        assert_eq!(a.endpoint, Endpoint::Unix("/tmp/r s.sock".into()));
        assert_eq!(a.username.as_deref(), Some("me"));
        assert_eq!(a.password.as_deref(), Some("a b&c"));
        assert_eq!(
            parse("unix://localhost/x.sock").unwrap().endpoint,
            Endpoint::Unix("/x.sock".into())
        );
    }

    #[test]
    fn what_cannot_be_reached_is_refused() {
        assert_eq!(parse("127.0.0.1:6379"), Err(AddressError::Scheme));
        assert_eq!(parse("http://host"), Err(AddressError::Scheme));
        assert_eq!(parse("redis://"), Err(AddressError::NoHost));
        assert_eq!(parse("redis://:pw@:6379"), Err(AddressError::NoHost));
        assert_eq!(parse("redis://[::1"), Err(AddressError::NoHost));
        assert_eq!(
            parse("redis://h:http"),
            Err(AddressError::Port("http".into()))
        );
        assert_eq!(
            parse("redis://h:70000"),
            Err(AddressError::Port("70000".into()))
        );
        assert_eq!(
            parse("redis://h/x"),
            Err(AddressError::Database("x".into()))
        );
        assert_eq!(parse("redis+unix://"), Err(AddressError::NoPath));
        assert_eq!(
            parse("unix:///s?db=q"),
            Err(AddressError::Database("q".into()))
        );
        assert_eq!(parse("redis://:%zz@h"), Err(AddressError::Encoding));
        assert_eq!(parse("redis://:%ff@h"), Err(AddressError::Encoding));
    }
}
