//! The `rust_socketio` client (crates.io) against the conformance server at `SIO_URL`, over
//! each of its transports: handshake auth, JSON and binary events both ways, acknowledgements,
//! a second namespace and rooms. Prints one line per check and `N passed, N failed`; exits
//! non-zero if any failed.

use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const STEP: Duration = Duration::from_secs(5);

type Events = mpsc::UnboundedReceiver<(String, Payload)>;

/// A connected client whose every received event lands in the returned channel.
async fn connect(
    url: &str,
    namespace: &str,
    transport: TransportType,
    auth: Value,
) -> Result<(Client, Events), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ClientBuilder::new(url)
        .namespace(namespace)
        .transport_type(transport)
        .auth(auth)
        .on_any(move |event, payload, _client| {
            let _ = tx.send((String::from(event), payload));
            async {}.boxed()
        })
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok((client, rx))
}

/// The next event named `name` (others are skipped).
async fn next(events: &mut Events, name: &str) -> Result<Payload, String> {
    let wait = async {
        while let Some((event, payload)) = events.recv().await {
            if event == name {
                return Ok(payload);
            }
        }
        Err(format!("connection ended before `{name}`"))
    };
    tokio::time::timeout(STEP, wait)
        .await
        .map_err(|_| format!("no `{name}` within {STEP:?}"))?
}

fn expect_text(payload: Payload, want: &[Value]) -> Result<(), String> {
    match payload {
        Payload::Text(args) if args == want => Ok(()),
        other => Err(format!("got {other:?}, want {want:?}")),
    }
}

async fn round_trips(url: &str, transport: TransportType) -> Result<(), String> {
    let auth = json!({ "token": "abc", "n": 1 });
    let (client, mut events) = connect(url, "/", transport, auth.clone()).await?;
    expect_text(next(&mut events, "auth").await?, &[auth])?;

    let value = json!({ "a": 1, "b": [1.5, "x", null, true], "s": "héllo ✓ 😀" });
    client
        .emit("message", value.clone())
        .await
        .map_err(|e| e.to_string())?;
    expect_text(next(&mut events, "message-back").await?, &[value])?;

    let data = bytes::Bytes::from_static(&[0, 1, 2, 255]);
    client
        .emit("message", Payload::Binary(data.clone()))
        .await
        .map_err(|e| e.to_string())?;
    match next(&mut events, "message-back").await? {
        Payload::Binary(got) if got == data => {}
        other => return Err(format!("binary echo: got {other:?}")),
    }

    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    client
        .emit_with_ack(
            "message-with-ack",
            json!(["hi", 2]),
            STEP,
            move |payload: Payload, _client: Client| {
                let _ = ack_tx.send(payload);
                async {}.boxed()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let ack = tokio::time::timeout(STEP, ack_rx.recv())
        .await
        .map_err(|_| "no acknowledgement".to_owned())?
        .ok_or("no acknowledgement")?;
    // The client hands an acknowledgement's arguments over as one array.
    expect_text(ack, &[json!([["hi", 2]])])?;
    client.disconnect().await.map_err(|e| e.to_string())
}

async fn second_namespace(url: &str) -> Result<(), String> {
    let auth = json!({ "room": "custom" });
    let (client, mut events) = connect(url, "/custom", TransportType::Any, auth.clone()).await?;
    expect_text(next(&mut events, "auth").await?, &[auth])?;
    client.disconnect().await.map_err(|e| e.to_string())
}

async fn rooms(url: &str) -> Result<(), String> {
    let (sender, _) = connect(url, "/", TransportType::Websocket, json!({})).await?;
    let (member, mut events) = connect(url, "/", TransportType::Polling, json!({})).await?;
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    member
        .emit_with_ack("join", json!("r1"), STEP, move |payload, _| {
            let _ = joined_tx.send(payload);
            async {}.boxed()
        })
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(STEP, joined_rx.recv())
        .await
        .map_err(|_| "join not acknowledged".to_owned())?;
    sender
        .emit("to-room", Payload::Text(vec![json!("r1"), json!("hello")]))
        .await
        .map_err(|e| e.to_string())?;
    expect_text(next(&mut events, "room-message").await?, &[json!("hello")])?;
    sender.disconnect().await.map_err(|e| e.to_string())?;
    member.disconnect().await.map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("SIO_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".to_owned());
    let mut results = Vec::new();
    for (name, transport) in [
        ("polling", TransportType::Polling),
        ("websocket", TransportType::Websocket),
        ("polling then websocket", TransportType::WebsocketUpgrade),
        ("any", TransportType::Any),
    ] {
        let check = format!("auth, JSON, binary and ack round trips over {name}");
        results.push((check, round_trips(&url, transport).await));
    }
    results.push((
        "a second namespace".to_owned(),
        second_namespace(&url).await,
    ));
    results.push(("rooms".to_owned(), rooms(&url).await));

    let mut failed = 0;
    for (check, result) in &results {
        match result {
            Ok(()) => println!("ok   {check}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {check}: {e}");
            }
        }
    }
    println!("{} passed, {failed} failed", results.len() - failed);
    std::process::exit(i32::from(failed > 0));
}
