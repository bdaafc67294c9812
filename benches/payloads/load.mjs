// The payload benchmark's load: C connections of the stock socket.io-client, each keeping
// `--window` acknowledged `echo` events in flight until `--count` acks have come back in all.
// Every `--verify`-th ack is compared with what was sent.
//
// Protocol with the runner (benches/payloads.py): once every client is connected and has had one
// echo answered, this prints `ready` and waits for a line on standard input; the runner samples
// the server then and answers `go`. At the end of the window it prints one JSON line with the
// results (before closing anything, so that the runner's second sample follows it at once).
//
//   node load.mjs --url http://127.0.0.1:3001 --transport websocket|polling --conns 1
//                 --payload bin1k|bin64k|bin1m|str64k|obj10 --count 1000 [--window 4] [--verify 10]
import { io } from "socket.io-client";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";

const arg = (k, d) => {
  const i = process.argv.indexOf("--" + k);
  return i >= 0 ? process.argv[i + 1] : d;
};
const url = arg("url", "http://127.0.0.1:3001");
const transport = arg("transport", "websocket");
const conns = Number(arg("conns", 1));
const inFlight = Number(arg("window", 4));
const count = Number(arg("count", 1000));
const kind = arg("payload", "bin1k");
const verifyEvery = Number(arg("verify", 10));

function makePayload(seed) {
  switch (kind) {
    case "bin1k":
      return randomBytes(1024);
    case "bin64k":
      return randomBytes(64 * 1024);
    case "bin1m":
      return randomBytes(1024 * 1024);
    case "str64k": {
      // Lower-case ASCII: nothing to escape in JSON.
      const b = randomBytes(64 * 1024);
      for (let i = 0; i < b.length; i++) b[i] = 97 + (b[i] % 26);
      return b.toString("latin1");
    }
    case "obj10": {
      const o = { id: seed, name: "obj" + seed };
      for (let i = 0; i < 10; i++) o["b" + i] = randomBytes(100);
      return o;
    }
    default:
      throw new Error("unknown payload " + kind);
  }
}
const POOL = 8;
const pool = Array.from({ length: POOL }, (_, i) => makePayload(i));

// Deep equality; a Buffer sent comes back as a Buffer (or an ArrayBuffer).
function same(a, b) {
  const bytes = (x) =>
    x instanceof ArrayBuffer ? Buffer.from(x) : ArrayBuffer.isView(x) ? Buffer.from(x.buffer, x.byteOffset, x.byteLength) : null;
  const ba = bytes(a), bb = bytes(b);
  if (ba || bb) return !!(ba && bb) && Buffer.compare(ba, bb) === 0;
  if (a && b && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => same(a[k], b[k]));
  }
  return a === b;
}

function fail(e) {
  console.log(JSON.stringify({ error: String((e && e.message) || e) }));
  process.exit(1);
}

const sockets = [];
try {
  await Promise.all(
    Array.from({ length: conns }, () =>
      new Promise((resolve, reject) => {
        const s = io(url, { transports: [transport], forceNew: true, reconnection: false, timeout: 20000 });
        s.once("connect", resolve);
        s.once("connect_error", reject);
        sockets.push(s);
      }),
    ),
  );
  // Warm-up: one echo per connection.
  await Promise.all(sockets.map((s) => s.timeout(30000).emitWithAck("echo", pool[0])));
} catch (e) {
  fail(e);
}

console.log("ready");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
await lines.next();

let finished = false;
let done = 0, checked = 0, bad = 0, errors = 0;
const perConn = Math.ceil(count / conns);
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
await Promise.all(
  sockets.map(
    (s, ci) =>
      new Promise((resolve) => {
        let sent = 0, got = 0;
        const one = () => {
          const seq = ci * perConn + sent;
          const p = pool[seq % POOL];
          sent++;
          s.emit("echo", p, (...args) => {
            got++;
            done++;
            if (seq % verifyEvery === 0) {
              checked++;
              if (args.length !== 1 || !same(args[0], p)) bad++;
            }
            if (sent < perConn) one();
            else if (got === perConn) resolve();
          });
        };
        for (let i = 0; i < Math.min(inFlight, perConn); i++) one();
        s.on("disconnect", () => {
          if (!finished) {
            errors++;
            resolve();
          }
        });
      }),
  ),
);
const wall = Number(process.hrtime.bigint() - t0) / 1e9;
finished = true;
const cpu = process.cpuUsage(cpu0);
console.log(
  JSON.stringify({
    transport, conns, window: inFlight, payload: kind, count: done, wall_s: wall, msgs_per_s: done / wall,
    load_cpu_frac: (cpu.user + cpu.system) / 1e6 / wall, checked, bad, errors,
  }),
);
for (const s of sockets) s.close();
process.exit(0);
