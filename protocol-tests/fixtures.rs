//! Replays the captured protocol fixtures (`fixtures/engineio/*.json`,
//! `fixtures/socketio/*.json`) over real sockets and checks every answer.
//!
//! The fixture format is described in `fixtures/README.md`. Target selection:
//!
//! * `PROTOCOL_TARGET=http://host:port` replays against a running server;
//!   scenarios that need the restricted-origin server use
//!   `PROTOCOL_TARGET_RESTRICTED`.
//! * otherwise the conformance server is started in-process
//!   (`common::spawn_conformance_server` / `common::spawn_restricted_origin_server`).
//!
//! `FIXTURE_FILTER=text` replays only the scenarios whose `protocol/name`
//! contains `text`; `FIXTURES_DIR=path` reads the fixtures from another folder.
//! Every scenario runs; all failures are reported by name.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

type Res<T> = Result<T, String>;

/// How long a step waits for an answer when the fixture gives no `within_ms`.
const DEFAULT_WITHIN: Duration = Duration::from_millis(2000);
/// Upper bound for one whole scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20);
const SUPPORTED_FORMAT: u64 = 1;

// ---------------------------------------------------------------------------
// Fixture model
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Fixture {
    protocol: String,
    name: String,
    description: String,
    server: ServerKind,
    steps: Vec<Step>,
}

impl Fixture {
    fn full_name(&self) -> String {
        format!("{}/{}", self.protocol, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKind {
    Main,
    Restricted { allowed_origin: String },
}

#[derive(Debug, Clone)]
struct Gen {
    prefix: String,
    fill: char,
    len: usize,
}

impl Gen {
    fn materialise(&self) -> String {
        let mut s = String::with_capacity(self.len);
        s.push_str(&self.prefix);
        while s.len() < self.len {
            s.push(self.fill);
        }
        s
    }
}

#[derive(Debug, Clone)]
enum Content {
    Text(String),
    Binary(Vec<u8>),
    Gen(Gen),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingMode {
    /// Engine.IO pings are surfaced like any other frame.
    Strict,
    /// Engine.IO pings ("2") are answered with "3" at once and never surfaced.
    Pong,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    not_before: Option<Duration>,
    within: Duration,
}

#[derive(Debug)]
enum Step {
    HttpRequest {
        id: String,
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        body: Option<Content>,
    },
    HttpResponse {
        id: String,
        status: StatusMatcher,
        headers: Vec<(String, HeaderMatcher)>,
        body: BodyMatcher,
        timing: Timing,
    },
    WsConnect {
        id: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        pings: PingMode,
    },
    WsConnectRefused {
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        status: Option<StatusMatcher>,
        body: BodyMatcher,
        accept_then_close: bool,
    },
    WsSend {
        id: String,
        content: Content,
    },
    WsRecv {
        id: String,
        expect: MessageMatcher,
        timing: Timing,
    },
    WsClosed {
        id: String,
        code: Option<u16>,
        timing: Timing,
    },
    WsNoMessage {
        id: String,
        duration: Duration,
    },
    WsClose {
        id: String,
        code: u16,
    },
    Sleep {
        duration: Duration,
    },
}

#[derive(Debug, Clone)]
enum StatusMatcher {
    Exact(u16),
    AnyOf(Vec<u16>),
}

#[derive(Debug, Clone)]
enum HeaderMatcher {
    Eq(String),
    TokensInclude(Vec<String>),
    Present,
    Absent,
    Not(Box<HeaderMatcher>),
    AnyOf(Vec<HeaderMatcher>),
}

#[derive(Debug, Clone)]
enum MessageMatcher {
    /// Exact text; unbound `${name}` placeholders capture.
    Text(String),
    /// Text made of `prefix` (a template) followed by JSON matching `json`.
    PrefixJson {
        prefix: String,
        json: Value,
    },
    Binary(Vec<u8>),
    Gen(Gen),
}

#[derive(Debug, Clone)]
enum BodyMatcher {
    Text(String),
    Json(Value),
    /// A polling payload: packets separated by 0x1e.
    Payload(Vec<MessageMatcher>),
    Gen(Gen),
    AnyOf(Vec<BodyMatcher>),
    Any,
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

mod parse {
    use super::*;

    fn as_obj<'a>(v: &'a Value, what: &str) -> Res<&'a Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| format!("{what}: expected an object"))
    }

    fn field<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Res<&'a Value> {
        m.get(key)
            .ok_or_else(|| format!("{what}: missing \"{key}\""))
    }

    fn string(m: &Map<String, Value>, key: &str, what: &str) -> Res<String> {
        field(m, key, what)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{what}: \"{key}\" must be a string"))
    }

    fn opt_string(m: &Map<String, Value>, key: &str, what: &str) -> Res<Option<String>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{what}: \"{key}\" must be a string")),
        }
    }

    fn uint(v: &Value, what: &str) -> Res<u64> {
        v.as_u64()
            .ok_or_else(|| format!("{what}: expected a non-negative integer"))
    }

    fn opt_ms(m: &Map<String, Value>, key: &str, what: &str) -> Res<Option<Duration>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(Duration::from_millis(uint(
                v,
                &format!("{what}.{key}"),
            )?))),
        }
    }

    fn timing(m: &Map<String, Value>, what: &str) -> Res<Timing> {
        Ok(Timing {
            not_before: opt_ms(m, "not_before_ms", what)?,
            within: opt_ms(m, "within_ms", what)?.unwrap_or(DEFAULT_WITHIN),
        })
    }

    fn headers(m: &Map<String, Value>, what: &str) -> Res<Vec<(String, String)>> {
        match m.get("headers") {
            None => Ok(Vec::new()),
            Some(v) => as_obj(v, what)?
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_owned()))
                        .ok_or_else(|| format!("{what}: header {k} must be a string"))
                })
                .collect(),
        }
    }

    fn generated(v: &Value, what: &str) -> Res<Gen> {
        let m = as_obj(v, what)?;
        let fill = string(m, "fill", what)?;
        let mut chars = fill.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return Err(format!("{what}: \"fill\" must be one character"));
        };
        if c.len_utf8() != 1 {
            return Err(format!("{what}: \"fill\" must be an ASCII character"));
        }
        let len = uint(field(m, "len", what)?, what)? as usize;
        let prefix = opt_string(m, "prefix", what)?.unwrap_or_default();
        if prefix.len() > len {
            return Err(format!("{what}: prefix longer than len"));
        }
        Ok(Gen {
            prefix,
            fill: c,
            len,
        })
    }

    /// `{"text"}`, `{"binary"}` or `{"gen"}` inside `m`.
    fn content(m: &Map<String, Value>, what: &str) -> Res<Content> {
        if let Some(t) = m.get("text") {
            return t
                .as_str()
                .map(|s| Content::Text(s.to_owned()))
                .ok_or_else(|| format!("{what}: text must be a string"));
        }
        if let Some(b) = m.get("binary") {
            let s = b
                .as_str()
                .ok_or_else(|| format!("{what}: binary must be a base64 string"))?;
            return base64::decode(s)
                .map(Content::Binary)
                .map_err(|e| format!("{what}: {e}"));
        }
        if let Some(g) = m.get("gen") {
            return generated(g, what).map(Content::Gen);
        }
        Err(format!("{what}: expected \"text\", \"binary\" or \"gen\""))
    }

    fn status(v: &Value, what: &str) -> Res<StatusMatcher> {
        if let Some(n) = v.as_u64() {
            return Ok(StatusMatcher::Exact(n as u16));
        }
        let m = as_obj(v, what)?;
        let list = field(m, "any_of", what)?
            .as_array()
            .ok_or_else(|| format!("{what}: any_of must be an array"))?;
        list.iter()
            .map(|v| uint(v, what).map(|n| n as u16))
            .collect::<Res<Vec<_>>>()
            .map(StatusMatcher::AnyOf)
    }

    fn header_matcher(v: &Value, what: &str) -> Res<HeaderMatcher> {
        let m = as_obj(v, what)?;
        if m.len() != 1 {
            return Err(format!("{what}: a header matcher has exactly one key"));
        }
        let (k, v) = m.iter().next().expect("one key");
        Ok(match k.as_str() {
            "eq" => HeaderMatcher::Eq(
                v.as_str()
                    .ok_or_else(|| format!("{what}: eq must be a string"))?
                    .to_owned(),
            ),
            "tokens_include" => HeaderMatcher::TokensInclude(
                v.as_array()
                    .ok_or_else(|| format!("{what}: tokens_include must be an array"))?
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{what}: tokens must be strings"))
                    })
                    .collect::<Res<_>>()?,
            ),
            "present" => HeaderMatcher::Present,
            "absent" => HeaderMatcher::Absent,
            "not" => HeaderMatcher::Not(Box::new(header_matcher(v, what)?)),
            "any_of" => HeaderMatcher::AnyOf(
                v.as_array()
                    .ok_or_else(|| format!("{what}: any_of must be an array"))?
                    .iter()
                    .map(|m| header_matcher(m, what))
                    .collect::<Res<_>>()?,
            ),
            other => return Err(format!("{what}: unknown header matcher \"{other}\"")),
        })
    }

    pub(super) fn message_matcher(v: &Value, what: &str) -> Res<MessageMatcher> {
        let m = as_obj(v, what)?;
        if let Some(prefix) = m.get("prefix") {
            let prefix = prefix
                .as_str()
                .ok_or_else(|| format!("{what}: prefix must be a string"))?
                .to_owned();
            let json = field(m, "json", what)?.clone();
            return Ok(MessageMatcher::PrefixJson { prefix, json });
        }
        Ok(match content(m, what)? {
            Content::Text(t) => MessageMatcher::Text(t),
            Content::Binary(b) => MessageMatcher::Binary(b),
            Content::Gen(g) => MessageMatcher::Gen(g),
        })
    }

    fn body_matcher(v: &Value, what: &str) -> Res<BodyMatcher> {
        let m = as_obj(v, what)?;
        if m.contains_key("any") {
            return Ok(BodyMatcher::Any);
        }
        if let Some(list) = m.get("any_of") {
            let list = list
                .as_array()
                .ok_or_else(|| format!("{what}: any_of must be an array"))?;
            return list
                .iter()
                .map(|v| body_matcher(v, what))
                .collect::<Res<_>>()
                .map(BodyMatcher::AnyOf);
        }
        if let Some(json) = m.get("json") {
            return Ok(BodyMatcher::Json(json.clone()));
        }
        if let Some(packets) = m.get("payload") {
            let packets = packets
                .as_array()
                .ok_or_else(|| format!("{what}: payload must be an array"))?;
            return packets
                .iter()
                .map(|p| message_matcher(p, what))
                .collect::<Res<_>>()
                .map(BodyMatcher::Payload);
        }
        if let Some(t) = m.get("text") {
            return t
                .as_str()
                .map(|s| BodyMatcher::Text(s.to_owned()))
                .ok_or_else(|| format!("{what}: text must be a string"));
        }
        if let Some(g) = m.get("gen") {
            return generated(g, what).map(BodyMatcher::Gen);
        }
        Err(format!("{what}: unknown body matcher"))
    }

    fn step(v: &Value, index: usize) -> Res<Step> {
        let what = format!("step {index}");
        let m = as_obj(v, &what)?;
        let op = string(m, "op", &what)?;
        let what = format!("step {index} ({op})");
        let id = || string(m, "id", &what);
        Ok(match op.as_str() {
            "http_request" => Step::HttpRequest {
                id: id()?,
                method: string(m, "method", &what)?,
                path: string(m, "path", &what)?,
                query: opt_string(m, "query", &what)?.unwrap_or_default(),
                headers: headers(m, &what)?,
                body: match m.get("body") {
                    None => None,
                    Some(b) => Some(content(as_obj(b, &what)?, &what)?),
                },
            },
            "http_response" => Step::HttpResponse {
                id: id()?,
                status: status(field(m, "status", &what)?, &what)?,
                headers: match m.get("headers") {
                    None => Vec::new(),
                    Some(h) => as_obj(h, &what)?
                        .iter()
                        .map(|(k, v)| {
                            header_matcher(v, &what).map(|hm| (k.to_ascii_lowercase(), hm))
                        })
                        .collect::<Res<_>>()?,
                },
                body: body_matcher(field(m, "body", &what)?, &what)?,
                timing: timing(m, &what)?,
            },
            "ws_connect" => Step::WsConnect {
                id: id()?,
                path: string(m, "path", &what)?,
                query: opt_string(m, "query", &what)?.unwrap_or_default(),
                headers: headers(m, &what)?,
                pings: match opt_string(m, "pings", &what)?.as_deref() {
                    None | Some("strict") => PingMode::Strict,
                    Some("pong") => PingMode::Pong,
                    Some(other) => return Err(format!("{what}: unknown pings mode {other}")),
                },
            },
            "ws_connect_refused" => Step::WsConnectRefused {
                path: string(m, "path", &what)?,
                query: opt_string(m, "query", &what)?.unwrap_or_default(),
                headers: headers(m, &what)?,
                status: match m.get("status") {
                    None | Some(Value::Null) => None,
                    Some(s) => Some(status(s, &what)?),
                },
                body: body_matcher(field(m, "body", &what)?, &what)?,
                accept_then_close: m
                    .get("accept_then_close")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            "ws_send" => Step::WsSend {
                id: id()?,
                content: content(m, &what)?,
            },
            "ws_recv" => Step::WsRecv {
                id: id()?,
                expect: message_matcher(field(m, "expect", &what)?, &what)?,
                timing: timing(m, &what)?,
            },
            "ws_closed" => Step::WsClosed {
                id: id()?,
                code: match m.get("code") {
                    None | Some(Value::Null) => None,
                    Some(c) => Some(uint(c, &what)? as u16),
                },
                timing: timing(m, &what)?,
            },
            "ws_no_message" => Step::WsNoMessage {
                id: id()?,
                duration: Duration::from_millis(uint(field(m, "ms", &what)?, &what)?),
            },
            "ws_close" => Step::WsClose {
                id: id()?,
                code: m
                    .get("code")
                    .map(|c| uint(c, &what))
                    .transpose()?
                    .unwrap_or(1000) as u16,
            },
            "sleep" => Step::Sleep {
                duration: Duration::from_millis(uint(field(m, "ms", &what)?, &what)?),
            },
            other => return Err(format!("{what}: unknown op \"{other}\"")),
        })
    }

    pub(super) fn fixture(text: &str, file: &Path) -> Res<Fixture> {
        let what = file.display().to_string();
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("{what}: invalid JSON: {e}"))?;
        let m = as_obj(&v, &what)?;
        let format = uint(field(m, "format", &what)?, &what)?;
        if format != SUPPORTED_FORMAT {
            return Err(format!(
                "{what}: fixture format {format}, this replayer reads format {SUPPORTED_FORMAT}"
            ));
        }
        let server = match string(m, "server", &what)?.as_str() {
            "main" => ServerKind::Main,
            "restricted" => ServerKind::Restricted {
                allowed_origin: string(m, "allowed_origin", &what)?,
            },
            other => return Err(format!("{what}: unknown server kind {other}")),
        };
        let steps = field(m, "steps", &what)?
            .as_array()
            .ok_or_else(|| format!("{what}: steps must be an array"))?
            .iter()
            .enumerate()
            .map(|(i, s)| step(s, i + 1))
            .collect::<Res<Vec<_>>>()
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(Fixture {
            protocol: string(m, "protocol", &what)?,
            name: string(m, "name", &what)?,
            description: opt_string(m, "description", &what)?.unwrap_or_default(),
            server,
            steps,
        })
    }
}

// ---------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------

mod matching {
    use super::*;

    pub(super) type Vars = HashMap<String, String>;

    #[derive(Debug)]
    enum Seg<'a> {
        Lit(&'a str),
        Var(&'a str),
    }

    fn segments(template: &str) -> Vec<Seg<'_>> {
        let mut out = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(Seg::Lit(&rest[..start + 2]));
                rest = after;
                continue;
            }
            if start > 0 {
                out.push(Seg::Lit(&rest[..start]));
            }
            out.push(Seg::Var(name));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            out.push(Seg::Lit(rest));
        }
        out
    }

    /// Replaces every `${name}` with its bound value.
    pub(super) fn substitute(template: &str, vars: &Vars) -> Res<String> {
        let mut out = String::with_capacity(template.len());
        for seg in segments(template) {
            match seg {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var(name) => {
                    out.push_str(vars.get(name).ok_or_else(|| {
                        format!("template uses ${{{name}}} before it was captured")
                    })?)
                }
            }
        }
        Ok(out)
    }

    /// Characters an unbound placeholder may capture inside a text template.
    fn capturable(c: char) -> bool {
        !(c.is_whitespace()
            || c.is_control()
            || matches!(c, '"' | '[' | ']' | '{' | '}' | ',' | '\u{1e}'))
    }

    fn walk(segs: &[Seg<'_>], s: &str, pos: usize, vars: &Vars, out: &mut Vec<(usize, Vars)>) {
        if out.len() >= 64 {
            return;
        }
        let Some((first, rest)) = segs.split_first() else {
            out.push((pos, vars.clone()));
            return;
        };
        match first {
            Seg::Lit(l) => {
                if s[pos..].starts_with(l) {
                    walk(rest, s, pos + l.len(), vars, out);
                }
            }
            Seg::Var(name) => {
                if let Some(value) = vars.get(*name) {
                    if s[pos..].starts_with(value.as_str()) {
                        walk(rest, s, pos + value.len(), vars, out);
                    }
                    return;
                }
                for (i, c) in s[pos..].char_indices() {
                    if !capturable(c) {
                        break;
                    }
                    let end = pos + i + c.len_utf8();
                    let mut bound = vars.clone();
                    bound.insert((*name).to_owned(), s[pos..end].to_owned());
                    walk(rest, s, end, &bound, out);
                }
            }
        }
    }

    /// Every way `template` can match a prefix of `s`: (end offset, bindings).
    fn prefix_matches(template: &str, s: &str, vars: &Vars) -> Vec<(usize, Vars)> {
        let segs = segments(template);
        let mut out = Vec::new();
        walk(&segs, s, 0, vars, &mut out);
        out
    }

    pub(super) fn text(template: &str, s: &str, vars: &mut Vars) -> Res<()> {
        if !template.contains("${") {
            return if template == s {
                Ok(())
            } else {
                Err(format!("expected {}, got {}", show(template), show(s)))
            };
        }
        match prefix_matches(template, s, vars)
            .into_iter()
            .find(|(end, _)| *end == s.len())
        {
            Some((_, bound)) => {
                *vars = bound;
                Ok(())
            }
            None => Err(format!(
                "expected {} (with bindings {:?}), got {}",
                show(template),
                vars,
                show(s)
            )),
        }
    }

    fn placeholder_name(s: &str) -> Option<&str> {
        let name = s.strip_prefix("${")?.strip_suffix('}')?;
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then_some(name)
    }

    fn type_name(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Structural JSON match: same keys, same array lengths, equal scalars;
    /// a string pattern "${name}" captures (or compares with) a string.
    pub(super) fn json(pattern: &Value, actual: &Value, vars: &mut Vars, path: &str) -> Res<()> {
        match (pattern, actual) {
            (Value::String(p), _) if p.contains("${") => {
                let Value::String(a) = actual else {
                    return Err(format!("{path}: expected a string, got {actual}"));
                };
                if let Some(name) = placeholder_name(p) {
                    match vars.get(name) {
                        Some(v) if v == a => Ok(()),
                        Some(v) => Err(format!("{path}: expected ${{{name}}} = {v:?}, got {a:?}")),
                        None if a.is_empty() => Err(format!(
                            "{path}: expected a non-empty string for ${{{name}}}"
                        )),
                        None => {
                            vars.insert(name.to_owned(), a.clone());
                            Ok(())
                        }
                    }
                } else {
                    text(p, a, vars).map_err(|e| format!("{path}: {e}"))
                }
            }
            (Value::Object(p), _) if p.len() == 1 && p.contains_key("$type") => {
                let want = p["$type"].as_str().unwrap_or("");
                if type_name(actual) == want {
                    Ok(())
                } else {
                    Err(format!("{path}: expected a {want}, got {actual}"))
                }
            }
            (Value::Object(p), Value::Object(a)) => {
                for key in a.keys() {
                    if !p.contains_key(key) {
                        return Err(format!("{path}: unexpected key {key:?}"));
                    }
                }
                for (key, pv) in p {
                    let av = a
                        .get(key)
                        .ok_or_else(|| format!("{path}: missing key {key:?}"))?;
                    json(pv, av, vars, &format!("{path}.{key}"))?;
                }
                Ok(())
            }
            (Value::Array(p), Value::Array(a)) => {
                if p.len() != a.len() {
                    return Err(format!(
                        "{path}: expected {} elements, got {} ({actual})",
                        p.len(),
                        a.len()
                    ));
                }
                for (i, (pv, av)) in p.iter().zip(a).enumerate() {
                    json(pv, av, vars, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            (Value::Number(p), Value::Number(a)) => {
                let same =
                    p == a || matches!((p.as_f64(), a.as_f64()), (Some(x), Some(y)) if x == y);
                if same {
                    Ok(())
                } else {
                    Err(format!("{path}: expected {p}, got {a}"))
                }
            }
            _ => {
                if pattern == actual {
                    Ok(())
                } else {
                    Err(format!("{path}: expected {pattern}, got {actual}"))
                }
            }
        }
    }

    /// A received frame or polling packet.
    pub(super) enum Frame<'a> {
        Text(&'a str),
        Binary(&'a [u8]),
    }

    pub(super) fn message(m: &MessageMatcher, frame: &Frame<'_>, vars: &mut Vars) -> Res<()> {
        match (m, frame) {
            (MessageMatcher::Text(t), Frame::Text(s)) => text(t, s, vars),
            (MessageMatcher::Gen(g), Frame::Text(s)) => {
                if *s == g.materialise() {
                    Ok(())
                } else {
                    Err(format!(
                        "expected the generated text {g:?}, got {}",
                        show(s)
                    ))
                }
            }
            (
                MessageMatcher::PrefixJson {
                    prefix,
                    json: pattern,
                },
                Frame::Text(s),
            ) => {
                let candidates = if prefix.contains("${") {
                    prefix_matches(prefix, s, vars)
                } else if s.starts_with(prefix.as_str()) {
                    vec![(prefix.len(), vars.clone())]
                } else {
                    Vec::new()
                };
                if candidates.is_empty() {
                    return Err(format!(
                        "expected a packet starting with {}, got {}",
                        show(prefix),
                        show(s)
                    ));
                }
                let mut last = String::new();
                for (end, mut bound) in candidates {
                    let data: Value = match serde_json::from_str(&s[end..]) {
                        Ok(v) => v,
                        Err(e) => {
                            last = format!(
                                "packet {}: data after {} is not JSON ({e})",
                                show(s),
                                show(prefix)
                            );
                            continue;
                        }
                    };
                    match json(pattern, &data, &mut bound, "$") {
                        Ok(()) => {
                            *vars = bound;
                            return Ok(());
                        }
                        Err(e) => last = format!("packet {}: {e}", show(s)),
                    }
                }
                Err(last)
            }
            (MessageMatcher::Binary(b), Frame::Binary(a)) => {
                if b.as_slice() == *a {
                    Ok(())
                } else {
                    Err(format!(
                        "expected binary {}, got binary {}",
                        base64::encode(b),
                        base64::encode(a)
                    ))
                }
            }
            (MessageMatcher::Binary(b), Frame::Text(s)) => Err(format!(
                "expected binary {}, got text {}",
                base64::encode(b),
                show(s)
            )),
            (_, Frame::Binary(a)) => Err(format!(
                "expected a text frame, got binary {}",
                base64::encode(a)
            )),
        }
    }

    pub(super) fn body(m: &BodyMatcher, bytes: &[u8], vars: &mut Vars) -> Res<()> {
        let as_text = || std::str::from_utf8(bytes).map_err(|_| "body is not UTF-8".to_owned());
        match m {
            BodyMatcher::Any => Ok(()),
            BodyMatcher::Text(t) => text(t, as_text()?, vars).map_err(|e| format!("body: {e}")),
            BodyMatcher::Gen(g) => {
                if as_text()? == g.materialise() {
                    Ok(())
                } else {
                    Err(format!(
                        "body: expected the generated text {g:?}, got {}",
                        show(as_text()?)
                    ))
                }
            }
            BodyMatcher::Json(pattern) => {
                let text = as_text()?;
                let value: Value = serde_json::from_str(text)
                    .map_err(|e| format!("body {} is not JSON: {e}", show(text)))?;
                json(pattern, &value, vars, "body")
            }
            BodyMatcher::Payload(packets) => {
                let text = as_text()?;
                let got: Vec<&str> = text.split('\u{1e}').collect();
                if got.len() != packets.len() {
                    return Err(format!(
                        "payload: expected {} packet(s), got {} in {}",
                        packets.len(),
                        got.len(),
                        show(text)
                    ));
                }
                for (i, (m, p)) in packets.iter().zip(got).enumerate() {
                    message(m, &Frame::Text(p), vars)
                        .map_err(|e| format!("payload packet {}: {e}", i + 1))?;
                }
                Ok(())
            }
            BodyMatcher::AnyOf(list) => {
                let mut errors = Vec::new();
                for alt in list {
                    let mut trial = vars.clone();
                    match body(alt, bytes, &mut trial) {
                        Ok(()) => {
                            *vars = trial;
                            return Ok(());
                        }
                        Err(e) => errors.push(e),
                    }
                }
                Err(format!("no alternative matched: {}", errors.join(" | ")))
            }
        }
    }

    fn normalise_header_value(v: &str) -> String {
        v.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
            .to_ascii_lowercase()
    }

    pub(super) fn header(name: &str, m: &HeaderMatcher, value: Option<&str>) -> Res<()> {
        let fail = |want: String| Err(format!("header {name}: expected {want}, got {value:?}"));
        match m {
            HeaderMatcher::Present => {
                if value.is_some() {
                    Ok(())
                } else {
                    fail("a value".into())
                }
            }
            HeaderMatcher::Absent => {
                if value.is_none() {
                    Ok(())
                } else {
                    fail("no header".into())
                }
            }
            HeaderMatcher::Eq(want) => match value {
                Some(v) if normalise_header_value(v) == normalise_header_value(want) => Ok(()),
                _ => fail(format!("{want:?}")),
            },
            HeaderMatcher::TokensInclude(tokens) => {
                let Some(v) = value else {
                    return fail(format!("a list including {tokens:?}"));
                };
                let got: Vec<String> = v
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect();
                if got.iter().any(|t| t == "*") {
                    return Ok(());
                }
                for t in tokens {
                    if !got.contains(&t.to_ascii_lowercase()) {
                        return fail(format!("a list including {tokens:?}"));
                    }
                }
                Ok(())
            }
            HeaderMatcher::Not(inner) => match header(name, inner, value) {
                Ok(()) => fail(format!("not {inner:?}")),
                Err(_) => Ok(()),
            },
            HeaderMatcher::AnyOf(list) => {
                if list.iter().any(|m| header(name, m, value).is_ok()) {
                    Ok(())
                } else {
                    fail(format!("any of {list:?}"))
                }
            }
        }
    }

    pub(super) fn status(m: &StatusMatcher, got: u16) -> Res<()> {
        let ok = match m {
            StatusMatcher::Exact(s) => *s == got,
            StatusMatcher::AnyOf(list) => list.contains(&got),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected status {m:?}, got {got}"))
        }
    }

    /// Debug rendering of a possibly huge string.
    pub(super) fn show(s: &str) -> String {
        const MAX: usize = 300;
        if s.len() <= MAX {
            return format!("{s:?}");
        }
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{:?}... ({} bytes)", &s[..cut], s.len())
    }
}

use matching::{Frame, Vars};

// ---------------------------------------------------------------------------
// Base64 (standard alphabet, padded)
// ---------------------------------------------------------------------------

mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub(super) fn decode(text: &str) -> Result<Vec<u8>, String> {
        let bytes = text.trim_end_matches('=').as_bytes();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        let mut acc = 0u32;
        let mut bits = 0;
        for &c in bytes {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or_else(|| format!("invalid base64 {text:?}"))?;
            acc = (acc << 6) | v as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client
// ---------------------------------------------------------------------------

mod http {
    use super::*;

    #[derive(Debug)]
    pub(super) struct Response {
        pub(super) status: u16,
        /// Lower-case names, in arrival order.
        pub(super) headers: Vec<(String, String)>,
        pub(super) body: Vec<u8>,
    }

    impl Response {
        /// The header's value; repeated headers are joined with ", ".
        pub(super) fn header(&self, name: &str) -> Option<String> {
            let values: Vec<&str> = self
                .headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        }
    }

    /// A reader with a look-ahead buffer.
    pub(super) struct Reader<R> {
        pub(super) inner: R,
        pub(super) buf: Vec<u8>,
    }

    impl<R: AsyncRead + Unpin> Reader<R> {
        pub(super) fn new(inner: R) -> Self {
            Reader {
                inner,
                buf: Vec::new(),
            }
        }

        /// Reads more bytes; false at end of stream.
        async fn fill(&mut self) -> Res<bool> {
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .inner
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read error: {e}"))?;
            self.buf.extend_from_slice(&chunk[..n]);
            Ok(n > 0)
        }

        async fn until(&mut self, delimiter: &[u8], limit: usize) -> Res<Option<Vec<u8>>> {
            loop {
                if let Some(i) = self
                    .buf
                    .windows(delimiter.len())
                    .position(|w| w == delimiter)
                {
                    let rest = self.buf.split_off(i + delimiter.len());
                    let mut line = std::mem::replace(&mut self.buf, rest);
                    line.truncate(i);
                    return Ok(Some(line));
                }
                if self.buf.len() > limit {
                    return Err("response head too large".into());
                }
                if !self.fill().await? {
                    return Ok(None);
                }
            }
        }

        async fn exact(&mut self, n: usize) -> Res<Vec<u8>> {
            while self.buf.len() < n {
                if !self.fill().await? {
                    return Err(format!(
                        "connection closed after {} of {n} body bytes",
                        self.buf.len()
                    ));
                }
            }
            let rest = self.buf.split_off(n);
            Ok(std::mem::replace(&mut self.buf, rest))
        }

        async fn read_to_end(&mut self) -> Res<Vec<u8>> {
            while self.fill().await? {}
            Ok(std::mem::take(&mut self.buf))
        }

        /// Status line and headers. None if the connection closed before any byte.
        pub(super) async fn head(&mut self) -> Res<Option<(u16, Vec<(String, String)>)>> {
            let Some(head) = self.until(b"\r\n\r\n", 64 * 1024).await? else {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "connection closed inside the response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                };
            };
            let head =
                String::from_utf8(head).map_err(|_| "response head is not UTF-8".to_owned())?;
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default();
            if !version.starts_with("HTTP/1.") {
                return Err(format!("bad status line {status_line:?}"));
            }
            let status = parts
                .next()
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let mut headers = Vec::new();
            for line in lines {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| format!("bad header line {line:?}"))?;
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            Ok(Some((status, headers)))
        }

        pub(super) async fn body(
            &mut self,
            method: &str,
            status: u16,
            headers: &[(String, String)],
        ) -> Res<Vec<u8>> {
            if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
                return Ok(Vec::new());
            }
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if get("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
            {
                let mut body = Vec::new();
                loop {
                    let line = self
                        .until(b"\r\n", 1024)
                        .await?
                        .ok_or("connection closed inside a chunked body")?;
                    let line = String::from_utf8_lossy(&line);
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| format!("bad chunk size {line:?}"))?;
                    if size == 0 {
                        // trailers up to the empty line
                        while let Some(trailer) = self.until(b"\r\n", 64 * 1024).await? {
                            if trailer.is_empty() {
                                break;
                            }
                        }
                        return Ok(body);
                    }
                    body.extend(self.exact(size).await?);
                    self.exact(2).await?;
                }
            }
            if let Some(len) = get("content-length") {
                let len: usize = len
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad Content-Length {len:?}"))?;
                return self.exact(len).await;
            }
            self.read_to_end().await
        }
    }

    pub(super) fn request_head(
        method: &str,
        target: &str,
        host: &str,
        headers: &[(String, String)],
        body_len: Option<usize>,
    ) -> String {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        if let Some(len) = body_len {
            let _ = write!(head, "Content-Length: {len}\r\n");
        }
        head
    }

    /// One request on a fresh connection (`Connection: close`). The body is
    /// written while the response is read, so an early answer (413) is seen.
    pub(super) async fn exchange(
        addr: SocketAddr,
        host: String,
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Res<(Response, Instant)> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).ok();
        let (read_half, mut write_half) = stream.into_split();
        let body_len = match (&body, method.as_str()) {
            (Some(b), _) => Some(b.len()),
            (None, "POST" | "PUT" | "PATCH") => Some(0),
            (None, _) => None,
        };
        let mut head = request_head(&method, &target, &host, &headers, body_len);
        head.push_str("Connection: close\r\n\r\n");
        let writer = tokio::spawn(async move {
            write_half.write_all(head.as_bytes()).await?;
            if let Some(body) = body {
                for chunk in body.chunks(64 * 1024) {
                    write_half.write_all(chunk).await?;
                }
            }
            write_half.flush().await?;
            // keep the write half open until the response is read
            std::future::pending::<()>().await;
            Ok::<(), std::io::Error>(())
        });
        let mut reader = Reader::new(read_half);
        let result = async {
            let (status, headers) = reader
                .head()
                .await?
                .ok_or_else(|| "connection closed without an HTTP response".to_owned())?;
            let at = Instant::now();
            let body = reader.body(&method, status, &headers).await?;
            Ok((
                Response {
                    status,
                    headers,
                    body,
                },
                at,
            ))
        }
        .await;
        if writer.is_finished() {
            if let (Err(read_error), Ok(Err(write_error))) = (&result, writer.await) {
                return Err(format!(
                    "{read_error} (writing the request failed: {write_error})"
                ));
            }
            return result;
        }
        writer.abort();
        result
    }
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

mod ws {
    use super::*;

    #[derive(Debug)]
    pub(super) enum Event {
        Text(String, Instant),
        Binary(Vec<u8>, Instant),
        Closed {
            code: Option<u16>,
            detail: String,
            at: Instant,
        },
    }

    pub(super) struct Conn {
        pub(super) tx: mpsc::UnboundedSender<Message>,
        pub(super) events: mpsc::UnboundedReceiver<Event>,
        tasks: Vec<JoinHandle<()>>,
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            for t in &self.tasks {
                t.abort();
            }
        }
    }

    pub(super) enum Outcome {
        Accepted(Conn),
        Refused(Option<http::Response>),
    }

    fn new_key() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0x5eed);
        let n = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&nanos.to_le_bytes());
        base64::encode(&bytes)
    }

    /// Performs the opening handshake by hand (so a refusal's status and body
    /// can be read in full) and hands the socket to tungstenite on 101.
    pub(super) async fn connect(
        addr: SocketAddr,
        host: &str,
        target: &str,
        headers: &[(String, String)],
        pings: PingMode,
    ) -> Res<Outcome> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).ok();
        let key = new_key();
        let mut head = http::request_head("GET", target, host, headers, None);
        let _ = write!(
            head,
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        if let Err(e) = stream.write_all(head.as_bytes()).await {
            return Err(format!("writing the handshake: {e}"));
        }
        let mut reader = http::Reader::new(stream);
        let (status, resp_headers) = match reader.head().await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Outcome::Refused(None)),
            Err(e) if e.starts_with("read error") => return Ok(Outcome::Refused(None)),
            Err(e) => return Err(e),
        };
        if status != 101 {
            let body = reader
                .body("GET", status, &resp_headers)
                .await
                .unwrap_or_default();
            return Ok(Outcome::Refused(Some(http::Response {
                status,
                headers: resp_headers,
                body,
            })));
        }
        let get = |name: &str| {
            resp_headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let expected_accept = derive_accept_key(key.as_bytes());
        if get("sec-websocket-accept").as_deref() != Some(expected_accept.as_str()) {
            return Err(format!(
                "101 with Sec-WebSocket-Accept {:?}, expected {expected_accept:?}",
                get("sec-websocket-accept")
            ));
        }
        if !get("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return Err(format!("101 with Upgrade {:?}", get("upgrade")));
        }
        let leftover = std::mem::take(&mut reader.buf);
        let socket =
            WebSocketStream::from_partially_read(reader.inner, leftover, Role::Client, None).await;
        Ok(Outcome::Accepted(spawn(socket, pings)))
    }

    fn spawn(socket: WebSocketStream<TcpStream>, pings: PingMode) -> Conn {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let (event_tx, events) = mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let closing = matches!(msg, Message::Close(_));
                if sink.send(msg).await.is_err() || closing {
                    break;
                }
            }
        });
        let pong_tx = tx.clone();
        let reader = tokio::spawn(async move {
            let closed = |code, detail: String| Event::Closed {
                code,
                detail,
                at: Instant::now(),
            };
            loop {
                let event = match stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if pings == PingMode::Pong && t.as_str() == "2" {
                            let _ = pong_tx.send(Message::text("3"));
                            continue;
                        }
                        Event::Text(t.as_str().to_owned(), Instant::now())
                    }
                    Some(Ok(Message::Binary(b))) => Event::Binary(b.to_vec(), Instant::now()),
                    Some(Ok(Message::Close(frame))) => {
                        let detail = frame
                            .as_ref()
                            .map(|f| f.reason.as_str().to_owned())
                            .unwrap_or_default();
                        // A close frame without a code reads as 1005, as browsers report it.
                        closed(
                            Some(frame.map_or(1005, |f| u16::from(f.code))),
                            format!("close frame {detail:?}"),
                        )
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => closed(None, format!("connection error: {e}")),
                    None => closed(None, "connection ended".into()),
                };
                let done = matches!(event, Event::Closed { .. });
                if event_tx.send(event).is_err() || done {
                    break;
                }
            }
        });
        Conn {
            tx,
            events,
            tasks: vec![writer, reader],
        }
    }

    pub(super) fn close_frame(code: u16) -> Message {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))
    }
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
}

struct PendingHttp {
    sent_at: Instant,
    task: JoinHandle<Res<(http::Response, Instant)>>,
}

impl Drop for PendingHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Replay<'a> {
    target: &'a Target,
    vars: Vars,
    http: HashMap<String, PendingHttp>,
    ws: HashMap<String, ws::Conn>,
}

fn materialise(content: &Content, vars: &Vars) -> Res<(Vec<u8>, bool)> {
    Ok(match content {
        Content::Text(t) => (matching::substitute(t, vars)?.into_bytes(), false),
        Content::Binary(b) => (b.clone(), true),
        Content::Gen(g) => (g.materialise().into_bytes(), false),
    })
}

fn describe_event(event: &ws::Event) -> String {
    match event {
        ws::Event::Text(t, _) => format!("text {}", matching::show(t)),
        ws::Event::Binary(b, _) => format!("binary {}", base64::encode(b)),
        ws::Event::Closed { code, detail, .. } => format!("close (code {code:?}, {detail})"),
    }
}

fn event_time(event: &ws::Event) -> Instant {
    match event {
        ws::Event::Text(_, at) | ws::Event::Binary(_, at) | ws::Event::Closed { at, .. } => *at,
    }
}

fn check_not_before(timing: &Timing, start: Instant, at: Instant, what: &str) -> Res<()> {
    if let Some(min) = timing.not_before {
        let elapsed = at.saturating_duration_since(start);
        if elapsed < min {
            return Err(format!(
                "{what} after {} ms, expected not before {} ms",
                elapsed.as_millis(),
                min.as_millis()
            ));
        }
    }
    Ok(())
}

impl Replay<'_> {
    fn target(&self, path: &str, query: &str) -> Res<String> {
        let path = matching::substitute(path, &self.vars)?;
        let query = matching::substitute(query, &self.vars)?;
        Ok(if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        })
    }

    fn headers(&self, headers: &[(String, String)]) -> Res<Vec<(String, String)>> {
        headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), matching::substitute(v, &self.vars)?)))
            .collect()
    }

    fn conn(&mut self, id: &str) -> Res<&mut ws::Conn> {
        self.ws
            .get_mut(id)
            .ok_or_else(|| format!("no open WebSocket {id}"))
    }

    async fn next_event(&mut self, id: &str, deadline: Instant) -> Res<Option<ws::Event>> {
        let conn = self.conn(id)?;
        match tokio::time::timeout_at(deadline.into(), conn.events.recv()).await {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) => Err(format!(
                "WebSocket {id}: no more events (connection already reported closed)"
            )),
            Err(_) => Ok(None),
        }
    }

    async fn step(&mut self, step: &Step) -> Res<()> {
        match step {
            Step::HttpRequest {
                id,
                method,
                path,
                query,
                headers,
                body,
            } => {
                let target = self.target(path, query)?;
                let headers = self.headers(headers)?;
                let body = body
                    .as_ref()
                    .map(|b| materialise(b, &self.vars).map(|(bytes, _)| bytes))
                    .transpose()?;
                let task = tokio::spawn(http::exchange(
                    self.target.addr,
                    self.target.host.clone(),
                    method.clone(),
                    target,
                    headers,
                    body,
                ));
                self.http.insert(
                    id.clone(),
                    PendingHttp {
                        sent_at: Instant::now(),
                        task,
                    },
                );
                Ok(())
            }
            Step::HttpResponse {
                id,
                status,
                headers,
                body,
                timing,
            } => {
                let mut pending = self
                    .http
                    .remove(id)
                    .ok_or_else(|| format!("no pending request {id}"))?;
                let deadline = pending.sent_at + timing.within;
                let (response, at) =
                    match tokio::time::timeout_at(deadline.into(), &mut pending.task).await {
                        Err(_) => {
                            return Err(format!(
                                "no response within {} ms",
                                timing.within.as_millis()
                            ));
                        }
                        Ok(Err(e)) => return Err(format!("request task failed: {e}")),
                        Ok(Ok(Err(e))) => return Err(e),
                        Ok(Ok(Ok(r))) => r,
                    };
                let body_text = || matching::show(&String::from_utf8_lossy(&response.body));
                matching::status(status, response.status)
                    .map_err(|e| format!("{e}; body {}", body_text()))?;
                for (name, m) in headers {
                    matching::header(name, m, response.header(name).as_deref())?;
                }
                matching::body(body, &response.body, &mut self.vars)?;
                check_not_before(timing, pending.sent_at, at, "response")
            }
            Step::WsConnect {
                id,
                path,
                query,
                headers,
                pings,
            } => {
                let target = self.target(path, query)?;
                let headers = self.headers(headers)?;
                match ws::connect(
                    self.target.addr,
                    &self.target.host,
                    &target,
                    &headers,
                    *pings,
                )
                .await?
                {
                    ws::Outcome::Accepted(conn) => {
                        self.ws.insert(id.clone(), conn);
                        Ok(())
                    }
                    ws::Outcome::Refused(None) => {
                        Err("WebSocket handshake refused: connection closed".into())
                    }
                    ws::Outcome::Refused(Some(r)) => Err(format!(
                        "WebSocket handshake refused with {}: {}",
                        r.status,
                        matching::show(&String::from_utf8_lossy(&r.body))
                    )),
                }
            }
            Step::WsConnectRefused {
                path,
                query,
                headers,
                status,
                body,
                accept_then_close,
            } => {
                let target = self.target(path, query)?;
                let headers = self.headers(headers)?;
                match ws::connect(
                    self.target.addr,
                    &self.target.host,
                    &target,
                    &headers,
                    PingMode::Strict,
                )
                .await?
                {
                    ws::Outcome::Refused(Some(response)) => {
                        if let Some(status) = status {
                            matching::status(status, response.status)?;
                        } else if response.status < 400 {
                            return Err(format!(
                                "expected a refusal, got status {}",
                                response.status
                            ));
                        }
                        matching::body(body, &response.body, &mut self.vars)
                    }
                    ws::Outcome::Refused(None) => {
                        if status.is_some() && !accept_then_close {
                            Err("connection closed without an HTTP response, expected a refusal status".into())
                        } else {
                            Ok(())
                        }
                    }
                    ws::Outcome::Accepted(mut conn) => {
                        if !accept_then_close {
                            return Err("WebSocket handshake accepted, expected a refusal".into());
                        }
                        let deadline = Instant::now() + DEFAULT_WITHIN;
                        match tokio::time::timeout_at(deadline.into(), conn.events.recv()).await {
                            Ok(Some(ws::Event::Closed { .. })) | Ok(None) => Ok(()),
                            Ok(Some(event)) => Err(format!(
                                "WebSocket accepted, expected it to be torn down before any packet, got {}",
                                describe_event(&event)
                            )),
                            Err(_) => {
                                Err("WebSocket accepted and left open, expected a refusal".into())
                            }
                        }
                    }
                }
            }
            Step::WsSend { id, content } => {
                let (bytes, binary) = materialise(content, &self.vars)?;
                let msg = if binary {
                    Message::binary(bytes)
                } else {
                    Message::text(
                        String::from_utf8(bytes).map_err(|_| "text is not UTF-8".to_owned())?,
                    )
                };
                self.conn(id)?
                    .tx
                    .send(msg)
                    .map_err(|_| format!("WebSocket {id}: connection is gone, cannot send"))
            }
            Step::WsRecv { id, expect, timing } => {
                let start = Instant::now();
                let event = self
                    .next_event(id, start + timing.within)
                    .await?
                    .ok_or_else(|| format!("no frame within {} ms", timing.within.as_millis()))?;
                let frame = match &event {
                    ws::Event::Text(t, _) => Frame::Text(t),
                    ws::Event::Binary(b, _) => Frame::Binary(b),
                    ws::Event::Closed { .. } => {
                        return Err(format!("expected a frame, got {}", describe_event(&event)));
                    }
                };
                matching::message(expect, &frame, &mut self.vars)?;
                check_not_before(timing, start, event_time(&event), "frame")
            }
            Step::WsClosed { id, code, timing } => {
                let start = Instant::now();
                let event = self
                    .next_event(id, start + timing.within)
                    .await?
                    .ok_or_else(|| {
                        format!(
                            "connection not closed within {} ms",
                            timing.within.as_millis()
                        )
                    })?;
                let ws::Event::Closed { code: got, .. } = &event else {
                    return Err(format!(
                        "expected the server to close the connection, got {}",
                        describe_event(&event)
                    ));
                };
                if let Some(want) = code {
                    if *got != Some(*want) {
                        return Err(format!(
                            "expected close code {want}, got {}",
                            describe_event(&event)
                        ));
                    }
                }
                self.ws.remove(id);
                check_not_before(timing, start, event_time(&event), "close")
            }
            Step::WsNoMessage { id, duration } => {
                let deadline = Instant::now() + *duration;
                match self.next_event(id, deadline).await? {
                    None => Ok(()),
                    Some(event) => Err(format!(
                        "expected nothing for {} ms, got {}",
                        duration.as_millis(),
                        describe_event(&event)
                    )),
                }
            }
            Step::WsClose { id, code } => {
                let conn = self
                    .ws
                    .remove(id)
                    .ok_or_else(|| format!("no open WebSocket {id}"))?;
                let _ = conn.tx.send(ws::close_frame(*code));
                // give the writer a moment to put the close frame on the wire
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            }
            Step::Sleep { duration } => {
                tokio::time::sleep(*duration).await;
                Ok(())
            }
        }
    }
}

fn step_label(step: &Step) -> String {
    let (op, id) = match step {
        Step::HttpRequest { id, .. } => ("http_request", id.as_str()),
        Step::HttpResponse { id, .. } => ("http_response", id.as_str()),
        Step::WsConnect { id, .. } => ("ws_connect", id.as_str()),
        Step::WsConnectRefused { .. } => ("ws_connect_refused", ""),
        Step::WsSend { id, .. } => ("ws_send", id.as_str()),
        Step::WsRecv { id, .. } => ("ws_recv", id.as_str()),
        Step::WsClosed { id, .. } => ("ws_closed", id.as_str()),
        Step::WsNoMessage { id, .. } => ("ws_no_message", id.as_str()),
        Step::WsClose { id, .. } => ("ws_close", id.as_str()),
        Step::Sleep { .. } => ("sleep", ""),
    };
    if id.is_empty() {
        op.to_owned()
    } else {
        format!("{op} {id}")
    }
}

async fn replay(fixture: &Fixture, target: &Target) -> Res<()> {
    let mut replay = Replay {
        target,
        vars: Vars::new(),
        http: HashMap::new(),
        ws: HashMap::new(),
    };
    for (i, step) in fixture.steps.iter().enumerate() {
        replay
            .step(step)
            .await
            .map_err(|e| format!("step {} ({}): {e}", i + 1, step_label(step)))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Loading and targets
// ---------------------------------------------------------------------------

/// `fixtures/` of the crate, or the folder named by `FIXTURES_DIR`.
fn fixtures_dir() -> PathBuf {
    match std::env::var_os("FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}

fn load_fixtures() -> Res<Vec<Fixture>> {
    let mut fixtures = Vec::new();
    for protocol in ["engineio", "socketio"] {
        let dir = fixtures_dir().join(protocol);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let fixture = parse::fixture(&text, &file)?;
            if fixture.protocol != protocol {
                return Err(format!(
                    "{}: protocol {:?} in the {protocol} folder",
                    file.display(),
                    fixture.protocol
                ));
            }
            fixtures.push(fixture);
        }
    }
    Ok(fixtures)
}

async fn resolve_url(var: &str, url: &str) -> Res<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{var}={url}: only http:// URLs are supported"))?;
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    let host = if host.contains(':') {
        host
    } else {
        format!("{host}:80")
    };
    let addr = tokio::net::lookup_host(host.as_str())
        .await
        .map_err(|e| format!("{var}={url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{var}={url}: no address"))?;
    Ok(Target { addr, host })
}

fn local_target(addr: SocketAddr) -> Target {
    Target {
        addr,
        host: addr.to_string(),
    }
}

struct Targets {
    main: Option<Target>,
    restricted: HashMap<String, Res<Target>>,
}

impl Targets {
    async fn main(&mut self) -> Res<Target> {
        if let Some(t) = &self.main {
            return Ok(t.clone());
        }
        let target = match std::env::var("PROTOCOL_TARGET") {
            Ok(url) => resolve_url("PROTOCOL_TARGET", &url).await?,
            Err(_) => local_target(common::spawn_conformance_server().await),
        };
        self.main = Some(target.clone());
        Ok(target)
    }

    async fn restricted(&mut self, allowed_origin: &str) -> Res<Target> {
        if let Some(t) = self.restricted.get(allowed_origin) {
            return t.clone();
        }
        let target = if std::env::var("PROTOCOL_TARGET").is_ok() {
            match std::env::var("PROTOCOL_TARGET_RESTRICTED") {
                Ok(url) => resolve_url("PROTOCOL_TARGET_RESTRICTED", &url).await,
                Err(_) => Err(format!(
                    "needs a server that only allows Origin {allowed_origin}: set PROTOCOL_TARGET_RESTRICTED"
                )),
            }
        } else {
            Ok(local_target(
                common::spawn_restricted_origin_server(allowed_origin).await,
            ))
        };
        self.restricted
            .insert(allowed_origin.to_owned(), target.clone());
        target
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_fixtures() {
    let fixtures = load_fixtures().unwrap_or_else(|e| panic!("cannot load the fixtures: {e}"));
    assert!(
        !fixtures.is_empty(),
        "no fixtures found under {}",
        fixtures_dir().display()
    );
    let filter = std::env::var("FIXTURE_FILTER").ok();
    let mut targets = Targets {
        main: None,
        restricted: HashMap::new(),
    };

    let started = Instant::now();
    let mut passed = 0;
    let mut failures: Vec<String> = Vec::new();
    for fixture in &fixtures {
        let name = fixture.full_name();
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let target = match &fixture.server {
            ServerKind::Main => targets.main().await,
            ServerKind::Restricted { allowed_origin } => targets.restricted(allowed_origin).await,
        };
        let t0 = Instant::now();
        let outcome = match target {
            Err(e) => Err(e),
            Ok(target) => {
                match tokio::time::timeout(SCENARIO_TIMEOUT, replay(fixture, &target)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "scenario did not finish within {} s",
                        SCENARIO_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        let ms = t0.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("ok    {name} ({ms} ms)");
            }
            Err(e) => {
                println!(
                    "FAIL  {name} ({ms} ms): {e}\n      scenario: {}",
                    fixture.description
                );
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    println!(
        "fixtures: {passed} passed, {} failed in {} ms",
        failures.len(),
        started.elapsed().as_millis()
    );
    assert!(
        passed + failures.len() > 0,
        "FIXTURE_FILTER matched no scenario"
    );
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
