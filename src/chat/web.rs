//! The chat server's own HTTP routes: the status line and the bundled web client.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Chat;
use crate::engineio::Body;
use crate::socketio::SocketIo;
use crate::socketio::metrics::family;
use crate::socketio::server::not_found;

/// The bundled client's files: path under `/chat/`, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("web/index.html"),
    ),
    (
        "chat.css",
        "text/css; charset=utf-8",
        include_str!("web/chat.css"),
    ),
    (
        "client.js",
        "text/javascript; charset=utf-8",
        include_str!("web/client.js"),
    ),
    (
        "crypto.js",
        "text/javascript; charset=utf-8",
        include_str!("web/crypto.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
    ),
];

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Answers every request that is not Socket.IO's.
pub fn route<B>(req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "Method Not Allowed",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    if path == "/" {
        return text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "up and running",
        );
    }
    let file = match path {
        "/chat" | "/chat/" => Some("index.html"),
        _ => path.strip_prefix("/chat/"),
    };
    match file.and_then(|f| FILES.iter().find(|(name, _, _)| *name == f)) {
        Some((_, content_type, content)) => {
            let mut resp = text(
                StatusCode::OK,
                content_type,
                Bytes::from_static(content.as_bytes()),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        None => not_found(),
    }
}

/// The chat server's HTTP side: the routes above plus `/metrics` and `/health`, which need the
/// running server.
#[derive(Debug, Clone)]
pub struct Site {
    io: SocketIo,
    chat: Arc<Chat>,
    started: Instant,
    #[cfg(feature = "redis")]
    cluster: Option<crate::redis::RedisNode>,
}

impl Site {
    /// The site of a running chat.
    pub fn new(io: SocketIo, chat: Arc<Chat>) -> Site {
        Site {
            io,
            chat,
            started: Instant::now(),
            #[cfg(feature = "redis")]
            cluster: None,
        }
    }

    /// Adds the node's Redis counters to `/metrics`.
    #[cfg(feature = "redis")]
    pub fn with_cluster(mut self, node: crate::redis::RedisNode) -> Site {
        self.cluster = Some(node);
        self
    }

    /// Answers every request that is not Socket.IO's.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() == Method::GET {
            match req.uri().path() {
                "/metrics" => return self.metrics(),
                "/health" => return self.health(),
                _ => {}
            }
        }
        route(req)
    }

    fn metrics(&self) -> Response<Body> {
        let mut out = String::with_capacity(4096);
        self.io.render_metrics(&mut out);
        let stats = self.chat.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        family(
            &mut out,
            "chat_users",
            "gauge",
            "Logged-in chat users.",
            &[("", self.chat.user_count() as u64)],
        );
        family(
            &mut out,
            "chat_logins_total",
            "counter",
            "Successful chat logins.",
            &[("", load(&stats.logins))],
        );
        family(
            &mut out,
            "chat_messages_total",
            "counter",
            "Chat messages relayed.",
            &[("", load(&stats.messages))],
        );
        family(
            &mut out,
            "chat_messages_dropped_total",
            "counter",
            "Chat messages dropped, by cause.",
            &[
                ("cause=\"invalid\"", load(&stats.dropped_invalid)),
                ("cause=\"rate_limit\"", load(&stats.dropped_rate)),
            ],
        );
        family(
            &mut out,
            "chat_flood_disconnects_total",
            "counter",
            "Sockets disconnected for sending far beyond the message rate limit.",
            &[("", load(&stats.disconnected_rate))],
        );
        #[cfg(feature = "redis")]
        if let Some(node) = &self.cluster {
            node.render_metrics(&mut out);
        }
        text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            out,
        )
    }

    fn health(&self) -> Response<Body> {
        let engine = self.io.engine();
        let sockets: usize = self
            .io
            .namespaces()
            .iter()
            .map(|ns| ns.socket_count())
            .sum();
        let body = serde_json::json!({
            "status": "ok",
            "uptime_seconds": self.started.elapsed().as_secs(),
            "sessions": engine.session_count(),
            "sockets": sockets,
            "users": self.chat.user_count(),
        });
        text(StatusCode::OK, "application/json", body.to_string())
    }
}
