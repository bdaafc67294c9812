//! The chat server's own HTTP routes: the status line and the bundled web client.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::engineio::Body;
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
