//! The server's counters in the Prometheus text format.

use std::fmt::Write;

use super::server::SocketIo;

/// Writes one metric family: its help, its type, and its samples.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl SocketIo {
    /// Appends the Engine.IO and Socket.IO metrics to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        let engine = self.engine();
        let m = engine.metrics();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (polling, websocket) = engine.sessions_by_transport();
        family(
            out,
            "socketio_connections",
            "gauge",
            "Open Engine.IO sessions by transport.",
            &[
                ("transport=\"polling\"", polling as u64),
                ("transport=\"websocket\"", websocket as u64),
            ],
        );
        family(
            out,
            "socketio_sessions_opened_total",
            "counter",
            "Engine.IO sessions opened.",
            &[("", load(&m.sessions_opened))],
        );
        family(
            out,
            "socketio_packets_in_total",
            "counter",
            "Engine.IO packets received.",
            &[("", load(&m.packets_in))],
        );
        family(
            out,
            "socketio_bytes_in_total",
            "counter",
            "Bytes of Engine.IO packets received.",
            &[("", load(&m.bytes_in))],
        );
        family(
            out,
            "socketio_packets_out_total",
            "counter",
            "Engine.IO packets sent.",
            &[("", load(&m.packets_out))],
        );
        family(
            out,
            "socketio_bytes_out_total",
            "counter",
            "Bytes of Engine.IO packets sent.",
            &[("", load(&m.bytes_out))],
        );

        let closes: Vec<(String, u64)> = m
            .closes()
            .map(|(reason, n)| (format!("reason=\"{}\"", reason.as_str()), n))
            .collect();
        let closes: Vec<(&str, u64)> = closes.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        family(
            out,
            "socketio_disconnects_total",
            "counter",
            "Ended sessions by reason.",
            &closes,
        );
        let slow = m
            .closes()
            .find(|(r, _)| *r == crate::engineio::CloseReason::SlowConsumer)
            .map_or(0, |(_, n)| n);
        family(
            out,
            "socketio_drops_total",
            "counter",
            "Packets or clients dropped, by cause.",
            &[
                ("cause=\"volatile\"", load(&m.volatile_drops)),
                ("cause=\"slow_consumer\"", slow),
            ],
        );
        let errors: Vec<(String, u64)> = m
            .request_errors()
            .map(|(e, n)| {
                let code = e
                    .code()
                    .map_or_else(|| "none".to_owned(), |c| c.to_string());
                (
                    format!("code=\"{code}\",status=\"{}\"", e.status().as_u16()),
                    n,
                )
            })
            .collect();
        let errors: Vec<(&str, u64)> = errors.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        family(
            out,
            "socketio_handshake_errors_total",
            "counter",
            "Refused Engine.IO requests by error code.",
            &errors,
        );

        let mut namespaces = self.namespaces();
        namespaces.sort_by(|a, b| a.name().cmp(b.name()));
        let sockets: Vec<(String, u64)> = namespaces
            .iter()
            .map(|ns| {
                (
                    format!("namespace=\"{}\"", escape(ns.name())),
                    ns.socket_count() as u64,
                )
            })
            .collect();
        let rooms: Vec<(String, u64)> = namespaces
            .iter()
            .map(|ns| {
                (
                    format!("namespace=\"{}\"", escape(ns.name())),
                    ns.adapter().room_count() as u64,
                )
            })
            .collect();
        let sockets: Vec<(&str, u64)> = sockets.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        let rooms: Vec<(&str, u64)> = rooms.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        family(
            out,
            "socketio_sockets",
            "gauge",
            "Connected sockets per namespace.",
            &sockets,
        );
        family(
            out,
            "socketio_rooms",
            "gauge",
            "Rooms with members per namespace.",
            &rooms,
        );
    }
}
