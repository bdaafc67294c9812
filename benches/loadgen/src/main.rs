//! loadgen: drives a Socket.IO server with many lean clients and prints one JSON line of results.
//!
//! Scenarios (see `--help`): `connect`, `broadcast`, `echo`, `polling`, `mix`. The generator runs on
//! one thread; it measures its own CPU use so that a run where it, not the server, was the
//! bottleneck can be told apart. With `--server-pid` it also samples the server's CPU time and
//! memory from /proc at each phase boundary.

mod conn;
mod proto;
mod stats;

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Interval, MissedTickBehavior};

use conn::{Conn, Target, Transport};
use proto::{Eio, Sio};

const USAGE: &str = "\
loadgen SCENARIO [OPTIONS]

Scenarios:
  connect     N idle clients, each logged in (chat) to one of R rooms, held for --hold seconds
  broadcast   N receivers in one room and one sender; --size bytes; --rate msgs/s (0: saturate)
  echo        `ping` with ack at --rate per second in total over N clients (open loop)
  polling     N long-polling clients: login, `ping` at --rate, roomMessage at --msg-rate
  mix         like polling over WebSocket: rooms of --room-size users chatting

Options:
  --url http://HOST:PORT     server (default http://127.0.0.1:3001); several, comma-separated,
                             are nodes of one cluster: client i goes to node i mod count
                             (the broadcast sender is client 0)
  --path /socket.io/         Engine.IO path
  --server-pid PID[,PID..]   sample these processes' CPU and memory (summed) at phase boundaries
  --program chat|broadcast   the server program (default chat)
  --clients N                clients (receivers for broadcast) (default 100)
  --rooms R                  rooms for connect (default clients/10)
  --room-size K              users per room for polling and mix (default 10)
  --transport ws|upgrade|polling   how clients connect (default ws; polling for `polling`)
  --hold S                   connect: seconds to hold the clients idle (default 10)
  --warmup S                 seconds of load before measuring (default 2)
  --duration S               seconds measured (default 10)
  --size B                   message payload bytes (default 64)
  --rate X                   messages (broadcast) or pings (others) per second in total
  --msg-rate X               roomMessages per second in total (polling, mix)
  --window W                 saturated broadcast: messages in flight (default 64)
  --sources K                spread clients over 127.0.0.2..(2+K-1) (default 8, 0: no bind)
  --concurrency C            handshakes in flight at once (default 128)
  --latency-sample K         broadcast receivers that time deliveries (default all)
  --login                    echo: log in before pinging
  --label TEXT               copied to the output
";

#[derive(Debug, Clone)]
struct Opts {
    scenario: String,
    addrs: Vec<SocketAddr>,
    path: String,
    server_pid: Option<String>,
    program: String,
    clients: usize,
    rooms: usize,
    room_size: usize,
    transport: Transport,
    hold: f64,
    warmup: f64,
    duration: f64,
    size: usize,
    rate: f64,
    msg_rate: f64,
    window: u64,
    sources: u8,
    concurrency: usize,
    latency_sample: usize,
    login: bool,
    label: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().ok_or("no scenario")?;
    if scenario == "-h" || scenario == "--help" {
        print!("{USAGE}");
        std::process::exit(0);
    }
    if !["connect", "broadcast", "echo", "polling", "mix"].contains(&scenario.as_str()) {
        return Err(format!("unknown scenario {scenario:?}"));
    }
    let mut url = "http://127.0.0.1:3001".to_owned();
    let mut o = Opts {
        scenario: scenario.clone(),
        addrs: Vec::new(),
        path: "/socket.io/".to_owned(),
        server_pid: None,
        program: "chat".to_owned(),
        clients: 100,
        rooms: 0,
        room_size: 10,
        transport: if scenario == "polling" {
            Transport::Polling
        } else {
            Transport::WebSocket
        },
        hold: 10.0,
        warmup: 2.0,
        duration: 10.0,
        size: 64,
        rate: 0.0,
        msg_rate: 0.0,
        window: 64,
        sources: 8,
        concurrency: 128,
        latency_sample: usize::MAX,
        login: false,
        label: String::new(),
    };
    while let Some(flag) = args.next() {
        if flag == "--login" {
            o.login = true;
            continue;
        }
        let v = args.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => url = v,
            "--path" => o.path = v,
            "--server-pid" => o.server_pid = Some(v),
            "--program" => o.program = v,
            "--clients" => o.clients = num(&v)? as usize,
            "--rooms" => o.rooms = num(&v)? as usize,
            "--room-size" => o.room_size = (num(&v)? as usize).max(1),
            "--transport" => o.transport = Transport::parse(&v).ok_or("bad --transport")?,
            "--hold" => o.hold = num(&v)?,
            "--warmup" => o.warmup = num(&v)?,
            "--duration" => o.duration = num(&v)?,
            "--size" => o.size = num(&v)? as usize,
            "--rate" => o.rate = num(&v)?,
            "--msg-rate" => o.msg_rate = num(&v)?,
            "--window" => o.window = (num(&v)? as u64).max(1),
            "--sources" => o.sources = num(&v)? as u8,
            "--concurrency" => o.concurrency = (num(&v)? as usize).max(1),
            "--latency-sample" => o.latency_sample = num(&v)? as usize,
            "--label" => o.label = v,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    for one in url.split(',') {
        let hostport = one
            .trim()
            .strip_prefix("http://")
            .ok_or("--url must start with http://")?
            .trim_end_matches('/');
        o.addrs.push(
            hostport
                .to_socket_addrs()
                .map_err(|e| format!("{hostport}: {e}"))?
                .find(SocketAddr::is_ipv4)
                .ok_or("no IPv4 address for --url")?,
        );
    }
    if o.rooms == 0 {
        o.rooms = (o.clients / 10).max(1);
    }
    if !o.path.ends_with('/') {
        o.path.push('/');
    }
    Ok(o)
}

/// Phases every client follows, announced through a watch channel.
const CONNECT: u8 = 0;
const LOGIN: u8 = 1;
const RUN: u8 = 2;
const STOP: u8 = 3;

/// Counters shared by every client task.
#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    ready: AtomicUsize,
    failed: AtomicUsize,
    delivered: AtomicU64,
    other_events: AtomicU64,
    acks: AtomicU64,
    sent: AtomicU64,
    heartbeats: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
    measuring: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, e: impl std::fmt::Display) {
        self.failed.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
    fn snapshot(&self) -> [u64; 6] {
        [
            self.delivered.load(Relaxed),
            self.acks.load(Relaxed),
            self.sent.load(Relaxed),
            self.other_events.load(Relaxed),
            self.errors.load(Relaxed),
            self.lost.load(Relaxed),
        ]
    }
}

struct Shared {
    t0: Instant,
    c: Counters,
    /// Wakes the saturating broadcast sender when a message has been fanned out.
    notify: Notify,
    /// Deliveries per broadcast message (the receivers).
    fanout: u64,
    /// How late the generator sent timed packets (µs after they were due): its own lag.
    lag: Mutex<Vec<u32>>,
}

impl Shared {
    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_micros() as u64
    }
}

/// What one client does besides staying connected.
#[derive(Clone, Default)]
struct Plan {
    auth: Option<Value>,
    login: Option<(String, String)>,
    /// The event counted as a delivery.
    count_event: Option<&'static str>,
    /// Time deliveries (from the stamp in their payload).
    time_deliveries: bool,
    /// Send `ping` with ack at this period, starting at this offset.
    ping: Option<(Duration, Duration)>,
    /// Send `roomMessage` at this period, starting at this offset.
    message: Option<(Duration, Duration)>,
    size: usize,
}

fn interval(period: Duration, offset: Duration) -> Interval {
    let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    // Open loop: late ticks fire at once, each with the time it was due.
    iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
    iv
}

async fn tick(iv: &mut Option<Interval>) -> Instant {
    match iv {
        Some(iv) => iv.tick().await.into_std(),
        None => std::future::pending().await,
    }
}

const LOGIN_ACK: u64 = 1;

async fn client(
    sh: Arc<Shared>,
    target: Arc<Target>,
    transport: Transport,
    idx: usize,
    plan: Plan,
    sem: Arc<Semaphore>,
    mut phase: watch::Receiver<u8>,
) -> Vec<u32> {
    let mut lat = Vec::new();
    let permit = sem.acquire_owned().await;
    let opened = conn::open(&target, idx, transport, plan.auth.as_ref()).await;
    drop(permit);
    let mut conn: Conn = match opened {
        Ok((c, _)) => c,
        Err(e) => {
            sh.c.fail(format!("connect: {e}"));
            return lat;
        }
    };
    sh.c.connected.fetch_add(1, Relaxed);

    let mut login_sent = false;
    let mut running = false;
    let mut pings: Option<Interval> = None;
    let mut messages: Option<Interval> = None;
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_ack = LOGIN_ACK + 1;
    let mut current = *phase.borrow_and_update();
    loop {
        // Act on the phase we are in.
        if current >= LOGIN && !login_sent {
            login_sent = true;
            match &plan.login {
                Some((name, room)) => {
                    let args = json!({ "name": name, "room": room }).to_string();
                    if let Err(e) = conn
                        .send(proto::event("login", Some(LOGIN_ACK), &args))
                        .await
                    {
                        sh.c.fail(format!("login send: {e}"));
                        return lat;
                    }
                }
                None => {
                    sh.c.ready.fetch_add(1, Relaxed);
                }
            }
        }
        if current >= RUN && !running {
            running = true;
            pings = plan.ping.map(|(p, off)| interval(p, off));
            messages = plan.message.map(|(p, off)| interval(p, off));
        }
        if current >= STOP {
            break;
        }
        tokio::select! {
            biased;
            r = phase.changed() => {
                if r.is_err() { break; }
                current = *phase.borrow_and_update();
            }
            m = conn.recv() => {
                let Some(m) = m else {
                    if *phase.borrow() < STOP { sh.c.lost.fetch_add(1, Relaxed); }
                    return lat;
                };
                match proto::eio(m.as_str()) {
                    Eio::Ping => {
                        sh.c.heartbeats.fetch_add(1, Relaxed);
                        if conn.send("3".to_owned()).await.is_err() {
                            sh.c.lost.fetch_add(1, Relaxed);
                            return lat;
                        }
                    }
                    Eio::Close => {
                        sh.c.lost.fetch_add(1, Relaxed);
                        return lat;
                    }
                    Eio::Message(s) => match proto::sio(s) {
                        Sio::Event { name, rest } => {
                            if Some(name) == plan.count_event {
                                let n = sh.c.delivered.fetch_add(1, Relaxed) + 1;
                                if n.is_multiple_of(sh.fanout) {
                                    sh.notify.notify_one();
                                }
                                if plan.time_deliveries
                                    && sh.c.measuring.load(Relaxed)
                                    && let Some(t) = proto::stamp(rest)
                                {
                                    let now = sh.micros(Instant::now());
                                    lat.push(now.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                                }
                            } else {
                                sh.c.other_events.fetch_add(1, Relaxed);
                            }
                        }
                        Sio::Ack { id, rest } => {
                            if id == LOGIN_ACK {
                                if proto::login_ok(rest) {
                                    sh.c.ready.fetch_add(1, Relaxed);
                                } else {
                                    sh.c.errors.fetch_add(1, Relaxed);
                                    sh.c.fail(format!("login refused: {rest}"));
                                    conn.close().await;
                                    return lat;
                                }
                            } else if let Some(i) = pending.iter().position(|&(p, _)| p == id) {
                                let (_, due) = pending.remove(i).unwrap();
                                sh.c.acks.fetch_add(1, Relaxed);
                                if sh.c.measuring.load(Relaxed) {
                                    let us = Instant::now().saturating_duration_since(due).as_micros();
                                    lat.push(us.min(u128::from(u32::MAX)) as u32);
                                }
                            }
                        }
                        Sio::Disconnect => {
                            sh.c.lost.fetch_add(1, Relaxed);
                            return lat;
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            due = tick(&mut pings), if running => {
                let id = next_ack;
                next_ack += 1;
                let now = Instant::now();
                if sh.c.measuring.load(Relaxed) {
                    sh.lag.lock().unwrap().push(now.saturating_duration_since(due).as_micros().min(u128::from(u32::MAX)) as u32);
                }
                pending.push_back((id, now));
                if pending.len() > 10_000 { pending.pop_front(); }
                sh.c.sent.fetch_add(1, Relaxed);
                if conn.send(proto::event("ping", Some(id), "")).await.is_err() {
                    sh.c.lost.fetch_add(1, Relaxed);
                    return lat;
                }
            }
            _due = tick(&mut messages), if running => {
                let payload = proto::stamped_payload(sh.micros(Instant::now()), plan.size);
                let args = serde_json::to_string(&payload).unwrap();
                sh.c.sent.fetch_add(1, Relaxed);
                if conn.send(proto::event("roomMessage", None, &args)).await.is_err() {
                    sh.c.lost.fetch_add(1, Relaxed);
                    return lat;
                }
            }
        }
    }
    conn.close().await;
    lat
}

/// The broadcasting client: paced at `rate` (stamped with each message's due time), or
/// saturating with at most `window` messages not yet fanned out to every receiver.
async fn sender(
    sh: Arc<Shared>,
    target: Arc<Target>,
    opts: Arc<Opts>,
    mut phase: watch::Receiver<u8>,
) {
    let chat = opts.program == "chat";
    let auth = (!chat).then(|| json!({ "room": "senders" }));
    let mut conn = match conn::open(&target, 0, Transport::WebSocket, auth.as_ref()).await {
        Ok((c, _)) => c,
        Err(e) => {
            sh.c.fail(format!("sender connect: {e}"));
            return;
        }
    };
    sh.c.connected.fetch_add(1, Relaxed);
    let packet = |micros: u64| {
        let payload = serde_json::to_string(&proto::stamped_payload(micros, opts.size)).unwrap();
        if chat {
            proto::event("roomMessage", None, &payload)
        } else {
            proto::event("bcast", None, &format!("\"bench\",{payload}"))
        }
    };
    let mut current = *phase.borrow_and_update();
    let mut login_sent = false;
    let mut paced: Option<Interval> = None;
    let mut started = false;
    let mut sent: u64 = 0;
    loop {
        if current >= LOGIN && !login_sent {
            login_sent = true;
            if chat {
                let args = json!({ "name": "sender", "room": "bench" }).to_string();
                if conn
                    .send(proto::event("login", Some(LOGIN_ACK), &args))
                    .await
                    .is_err()
                {
                    sh.c.fail("sender login send");
                    return;
                }
            } else {
                sh.c.ready.fetch_add(1, Relaxed);
            }
        }
        if current >= RUN && !started {
            started = true;
            if opts.rate > 0.0 {
                paced = Some(interval(
                    Duration::from_secs_f64(1.0 / opts.rate),
                    Duration::ZERO,
                ));
            }
        }
        if current >= STOP {
            break;
        }
        // Saturating: top the window up before waiting for anything.
        if started && paced.is_none() {
            let done = sh.c.delivered.load(Relaxed) / sh.fanout;
            let room = opts.window.saturating_sub(sent.saturating_sub(done));
            if room > 0 {
                let now = sh.micros(Instant::now());
                let batch: Vec<String> = (0..room.min(16)).map(|_| packet(now)).collect();
                let n = batch.len() as u64;
                if conn.send_many(batch).await.is_err() {
                    sh.c.lost.fetch_add(1, Relaxed);
                    return;
                }
                sent += n;
                sh.c.sent.fetch_add(n, Relaxed);
                continue;
            }
        }
        let window_open = started && paced.is_none();
        tokio::select! {
            biased;
            r = phase.changed() => {
                if r.is_err() { break; }
                current = *phase.borrow_and_update();
            }
            m = conn.recv() => {
                let Some(m) = m else {
                    if *phase.borrow() < STOP { sh.c.lost.fetch_add(1, Relaxed); }
                    return;
                };
                match proto::eio(m.as_str()) {
                    Eio::Ping => {
                        sh.c.heartbeats.fetch_add(1, Relaxed);
                        let _ = conn.send("3".to_owned()).await;
                    }
                    Eio::Message(s) => {
                        if let Sio::Ack { id: LOGIN_ACK, rest } = proto::sio(s) {
                            if proto::login_ok(rest) {
                                sh.c.ready.fetch_add(1, Relaxed);
                            } else {
                                sh.c.fail(format!("sender login refused: {rest}"));
                                return;
                            }
                        }
                    }
                    Eio::Close => { sh.c.lost.fetch_add(1, Relaxed); return; }
                    _ => {}
                }
            }
            _ = sh.notify.notified(), if window_open => {}
            // A fallback poll, in case a notification raced with our check.
            _ = tokio::time::sleep(Duration::from_millis(5)), if window_open => {}
            due = tick(&mut paced), if started => {
                sent += 1;
                sh.c.sent.fetch_add(1, Relaxed);
                let now = Instant::now();
                if sh.c.measuring.load(Relaxed) {
                    sh.lag.lock().unwrap().push(now.saturating_duration_since(due).as_micros().min(u128::from(u32::MAX)) as u32);
                }
                if conn.send(packet(sh.micros(now))).await.is_err() {
                    sh.c.lost.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }
    conn.close().await;
}

fn self_cpu() -> f64 {
    stats::sched_cpu("self")
        .or_else(|| stats::stat_cpu("self"))
        .unwrap_or(0.0)
}

/// A snapshot of the server; with several comma-separated pids (the nodes of a cluster and
/// their broker), CPU and memory are summed over them.
fn server_snapshot(opts: &Opts) -> Value {
    let Some(pids) = &opts.server_pid else {
        return Value::Null;
    };
    let mut total = Value::Null;
    for pid in pids.split(',') {
        let one = stats::snapshot(pid.trim());
        if total.is_null() {
            total = one;
            continue;
        }
        for key in ["cpu_s", "sched_cpu_s", "rss_kb", "hwm_kb", "pss_kb", "threads"] {
            if let (Some(a), Some(b)) = (total[key].as_f64(), one[key].as_f64()) {
                total[key] = json!(a + b);
            }
        }
    }
    total
}

/// Waits until `done()` holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

async fn run(opts: Opts) -> Value {
    let opts = Arc::new(opts);
    let target = Arc::new(Target {
        addrs: opts.addrs.clone(),
        path: opts.path.clone(),
        sources: opts.sources,
    });
    let broadcast = opts.scenario == "broadcast";
    let n = opts.clients;
    let total = n + usize::from(broadcast);
    // Deliveries counted per broadcast message: the receivers (in the chat program the sender
    // is in the room too, but what it gets back is not counted).
    let fanout = if broadcast { n as u64 } else { 1 };
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        c: Counters::default(),
        notify: Notify::new(),
        fanout: fanout.max(1),
        lag: Mutex::new(Vec::new()),
    });
    let (phase_tx, phase_rx) = watch::channel(CONNECT);
    let sem = Arc::new(Semaphore::new(opts.concurrency));

    let mut report = json!({
        "scenario": opts.scenario,
        "program": opts.program,
        "transport": opts.transport.name(),
        "clients": n,
        "size": opts.size,
        "rate": opts.rate,
        "label": opts.label,
    });
    let server_start = server_snapshot(&opts);
    let gen_start = (Instant::now(), self_cpu());

    // Plans.
    let chat = opts.program == "chat";
    let mut handles = Vec::with_capacity(total);
    for idx in 0..n {
        let mut plan = Plan {
            size: opts.size,
            ..Plan::default()
        };
        match opts.scenario.as_str() {
            "connect" => {
                if chat {
                    plan.login = Some((format!("u{idx}"), format!("r{}", idx % opts.rooms)));
                } else {
                    plan.auth = Some(json!({ "room": format!("r{}", idx % opts.rooms) }));
                }
            }
            "broadcast" => {
                if chat {
                    plan.login = Some((format!("u{idx}"), "bench".to_owned()));
                    plan.count_event = Some("roomMessage");
                } else {
                    plan.auth = Some(json!({ "room": "bench" }));
                    plan.count_event = Some("msg");
                }
                plan.time_deliveries = idx < opts.latency_sample;
            }
            "echo" => {
                if opts.login {
                    plan.login = Some((format!("u{idx}"), format!("r{}", idx / opts.room_size)));
                }
                if opts.rate > 0.0 {
                    let period = Duration::from_secs_f64(n as f64 / opts.rate);
                    plan.ping = Some((period, period.mul_f64(idx as f64 / n as f64)));
                }
            }
            _ => {
                // polling, mix: rooms of room_size users chatting and pinging.
                plan.login = Some((format!("u{idx}"), format!("r{}", idx / opts.room_size)));
                plan.count_event = Some("roomMessage");
                plan.time_deliveries = true;
                if opts.rate > 0.0 {
                    let period = Duration::from_secs_f64(n as f64 / opts.rate);
                    plan.ping = Some((period, period.mul_f64(idx as f64 / n as f64)));
                }
                if opts.msg_rate > 0.0 {
                    let period = Duration::from_secs_f64(n as f64 / opts.msg_rate);
                    plan.message = Some((period, period.mul_f64((idx as f64 + 0.5) / n as f64)));
                }
            }
        }
        handles.push(tokio::spawn(client(
            sh.clone(),
            target.clone(),
            opts.transport,
            idx + 1,
            plan,
            sem.clone(),
            phase_rx.clone(),
        )));
    }
    let sender_handle = broadcast.then(|| {
        tokio::spawn(sender(
            sh.clone(),
            target.clone(),
            opts.clone(),
            phase_rx.clone(),
        ))
    });

    // Phase 0: connect everyone.
    let connect_limit = Duration::from_secs_f64(30.0 + total as f64 / 100.0);
    let c = &sh.c;
    wait_until(connect_limit, || {
        c.connected.load(Relaxed) + c.failed.load(Relaxed) >= total
    })
    .await;
    let connect_s = gen_start.0.elapsed().as_secs_f64();
    let gen_connect_cpu = self_cpu() - gen_start.1;
    let server_connected = server_snapshot(&opts);
    let connected = c.connected.load(Relaxed);
    report["connect"] = json!({
        "s": connect_s,
        "connected": connected,
        "failed": c.failed.load(Relaxed),
        "per_s": connected as f64 / connect_s.max(1e-9),
        "gen_cpu_frac": gen_connect_cpu / connect_s.max(1e-9),
    });

    // Phase 1: log in (or just mark ready), then let the room fill settle.
    let t_login = Instant::now();
    phase_tx.send_replace(LOGIN);
    wait_until(connect_limit, || {
        c.ready.load(Relaxed) + c.failed.load(Relaxed) >= total
    })
    .await;
    let mut last = c.other_events.load(Relaxed);
    let settle_end = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = c.other_events.load(Relaxed);
        if now == last || Instant::now() > settle_end {
            break;
        }
        last = now;
    }
    let server_ready = server_snapshot(&opts);
    report["login"] = json!({
        "s": t_login.elapsed().as_secs_f64(),
        "ready": c.ready.load(Relaxed),
        "events": c.other_events.load(Relaxed),
    });

    // Phase 2: run.
    phase_tx.send_replace(RUN);
    let (window_s, before, after, gen_frac, server_w0, server_w1);
    let stat0;
    if opts.scenario == "connect" {
        let w0 = (Instant::now(), self_cpu(), c.snapshot());
        stat0 = stats::stat_cpu("self").unwrap_or(0.0);
        server_w0 = server_snapshot(&opts);
        tokio::time::sleep(Duration::from_secs_f64(opts.hold)).await;
        server_w1 = server_snapshot(&opts);
        window_s = w0.0.elapsed().as_secs_f64();
        gen_frac = (self_cpu() - w0.1) / window_s;
        before = w0.2;
        after = c.snapshot();
    } else {
        tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
        let w0 = (Instant::now(), self_cpu(), c.snapshot());
        stat0 = stats::stat_cpu("self").unwrap_or(0.0);
        server_w0 = server_snapshot(&opts);
        c.measuring.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(opts.duration)).await;
        c.measuring.store(false, Relaxed);
        server_w1 = server_snapshot(&opts);
        window_s = w0.0.elapsed().as_secs_f64();
        gen_frac = (self_cpu() - w0.1) / window_s;
        before = w0.2;
        after = c.snapshot();
    }
    let d = |i: usize| after[i] - before[i];
    report["window"] = json!({
        "s": window_s,
        "delivered": d(0),
        "delivered_per_s": d(0) as f64 / window_s,
        "acks": d(1),
        "acks_per_s": d(1) as f64 / window_s,
        "sent": d(2),
        "sent_per_s": d(2) as f64 / window_s,
        "other_events": d(3),
        "errors": d(4),
        "lost": d(5),
    });
    report["gen_cpu_frac"] = json!(gen_frac);
    // The same from utime+stime of /proc/self/stat (10 ms ticks).
    report["gen_cpu_frac_stat"] =
        json!((stats::stat_cpu("self").unwrap_or(0.0) - stat0) / window_s.max(1e-9));
    report["gen_saturated"] = json!(gen_frac > 0.9);
    report["heartbeats"] = json!(c.heartbeats.load(Relaxed));
    report["lost"] = json!(c.lost.load(Relaxed));
    report["failed"] = json!(c.failed.load(Relaxed));
    report["errors"] = json!(c.errors.load(Relaxed));
    report["first_error"] = json!(*c.first_error.lock().unwrap());
    report["server"] = json!({
        "start": server_start,
        "connected": server_connected,
        "ready": server_ready,
        "window_start": server_w0,
        "window_end": server_w1,
    });

    // Phase 3: stop, collect latencies.
    phase_tx.send_replace(STOP);
    let mut lat = Vec::new();
    let collect_end = tokio::time::Instant::now() + Duration::from_secs(15);
    for h in handles {
        match tokio::time::timeout_at(collect_end, h).await {
            Ok(Ok(v)) => lat.extend(v),
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    if let Some(h) = sender_handle {
        let _ = tokio::time::timeout_at(collect_end, h).await;
    }
    report["latency"] = stats::percentiles(lat);
    report["send_lag"] = stats::percentiles(std::mem::take(&mut *sh.lag.lock().unwrap()));
    report
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let bound = Duration::from_secs_f64(
        120.0 + opts.hold + opts.warmup + opts.duration + opts.clients as f64 / 50.0,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async { tokio::time::timeout(bound, run(opts)).await });
    match result {
        Ok(report) => {
            println!("{report}");
            // Do not wait for lingering client tasks.
            std::process::exit(0);
        }
        Err(_) => {
            println!("{}", json!({ "error": "the run did not finish in time" }));
            std::process::exit(1);
        }
    }
}
