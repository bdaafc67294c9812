// One Node.js node of a Socket.IO cluster on Redis: the same program as the Rust
// example `examples/cluster_node.rs`, built on the npm `socket.io` server and
// `@socket.io/redis-adapter` (classic pub/sub mode). Used by cluster.test.mjs to
// check that Rust and Node nodes form one cluster.
//
//   PORT=3002 REDIS_URL=redis://127.0.0.1:6379/ node cluster_node.mjs
//
// Environment: PORT (default 3000; 0 picks a free port), HOST (default 127.0.0.1),
// REDIS_URL (default redis://127.0.0.1:6379/). When it is ready it prints
//   cluster node <uid> listening on http://<host>:<port>
//
// On `/`, a socket joins the room named by its handshake auth `{ room: "<name>" }`
// (a non-empty string). Events:
// - `bcast` (room, payload): broadcasts `msg` with `payload` to the room, cluster-wide;
// - `bcastDate` (room, ms): broadcasts `msg` with `{ at: new Date(ms) }` (this program's
//   only: a JavaScript Date, which the adapter sends as a MessagePack timestamp);
// - `ids` (room) with ack: the ids of every socket in the room, cluster-wide;
// - `join` / `leave` (room, other): every socket of `room`, on every node, joins or
//   leaves `other`;
// - `kick` (room): every socket of `room`, on every node, is disconnected;
// - `ask` (payload) with ack: server-side emit `hello` with `payload` to the other
//   nodes, acks with the array of their answers;
// - the server-side event `hello` (payload) is answered with `{ node: <uid>, echo: payload }`.
// `GET /` answers 200.
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT ?? 3000);
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379/';

// Retry forever, so that a Redis restart is survived (commands wait in the
// offline queue instead of failing after 20 retries).
const redisOptions = {
  retryStrategy: (times) => Math.min(50 * times, 1000),
  maxRetriesPerRequest: null,
  enableOfflineQueue: true,
};
const pubClient = new Redis(redisUrl, redisOptions);
const subClient = pubClient.duplicate();
for (const [name, client] of [['pub', pubClient], ['sub', subClient]]) {
  client.on('error', (err) => console.error(`redis ${name} client: ${err.message}`));
}

const httpServer = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok');
});
const io = new Server(httpServer, { cors: { origin: true, credentials: true } });
io.adapter(createAdapter(pubClient, subClient, { requestsTimeout: 5000 }));

const uid = io.of('/').adapter.uid;

const ackError = (ack, err) => {
  if (typeof ack === 'function') ack({ error: err?.message ?? String(err) });
};

io.on('hello', (payload, cb) => {
  if (typeof cb === 'function') cb({ node: uid, echo: payload ?? null });
});

io.on('connection', (socket) => {
  const room = socket.handshake.auth?.room;
  if (typeof room === 'string' && room !== '') socket.join(room);

  socket.on('bcast', (room, payload) => {
    if (typeof room !== 'string') return;
    io.to(room).emit('msg', payload ?? null);
  });

  socket.on('bcastDate', (room, ms) => {
    if (typeof room !== 'string' || typeof ms !== 'number') return;
    io.to(room).emit('msg', { at: new Date(ms) });
  });

  socket.on('ids', async (room, ack) => {
    if (typeof ack !== 'function' || typeof room !== 'string') return;
    try {
      const sockets = await io.in(room).fetchSockets();
      ack(sockets.map((s) => s.id));
    } catch (err) {
      ackError(ack, err);
    }
  });

  socket.on('join', (room, other) => {
    if (typeof room !== 'string' || typeof other !== 'string') return;
    io.in(room).socketsJoin(other);
  });

  socket.on('leave', (room, other) => {
    if (typeof room !== 'string' || typeof other !== 'string') return;
    io.in(room).socketsLeave(other);
  });

  socket.on('kick', (room) => {
    if (typeof room !== 'string') return;
    io.in(room).disconnectSockets();
  });

  socket.on('ask', async (...args) => {
    const ack = args.pop();
    if (typeof ack !== 'function') return;
    const payload = args[0];
    try {
      // The wait for the other nodes is the adapter's requestsTimeout (5 s);
      // socket.io has no io.timeout(...).serverSideEmitWithAck.
      ack(await io.serverSideEmitWithAck('hello', payload ?? null));
    } catch (err) {
      ackError(ack, err);
    }
  });
});

httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  const shown = addr.family === 'IPv6' || addr.family === 6 ? `[${addr.address}]` : addr.address;
  console.log(`cluster node ${uid} listening on http://${shown}:${addr.port}`);
});

function shutdown() {
  io.close();
  pubClient.disconnect();
  subClient.disconnect();
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
