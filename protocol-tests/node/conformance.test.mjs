// Interop tests against the conformance server (see README.md) at SIO_URL,
// driven by the real npm socket.io-client, once per transport mode.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Manager } from 'socket.io-client';
import {
  MODES,
  QUIET_MS,
  TEST_TIMEOUT,
  WAIT_MS,
  alnum,
  assertSameData,
  clients,
  connectError,
  connected,
  emitAck,
  once,
  record,
  serverUrl,
  sleep,
  until,
} from './helpers.mjs';

const URL = serverUrl('SIO_URL');
const opts = { timeout: TEST_TIMEOUT };

/** Open a socket and wait for both `connect` and the server's `auth` echo. */
async function open(c, nsp = '', socketOpts = {}) {
  const socket = c.connect(nsp, socketOpts);
  const auth = once(socket, 'auth');
  await connected(socket);
  const [echo] = await auth;
  return { socket, echo };
}

/** Send `message` and return the arguments of the `message-back` echo. */
async function roundTrip(socket, ...args) {
  const back = once(socket, 'message-back');
  socket.emit('message', ...args);
  return (await back);
}

for (const mode of MODES) {
  describe(`conformance over ${mode.name}`, () => {
    it('connects without auth: the auth echo is {}', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket, echo } = await open(c);
      assert.deepStrictEqual(echo, {});
      assert.equal(socket.connected, true);
    });

    it('connects with auth: the auth object is echoed', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const auth = { token: 'abc', n: 1, nested: { ok: true, list: [1, 'two', null] } };
      const { echo } = await open(c, '', { auth });
      assert.deepStrictEqual(echo, auth);
    });

    it('socket id is not the engine id', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      assert.equal(typeof socket.id, 'string');
      assert.ok(socket.id.length > 0);
      assert.equal(typeof socket.io.engine.id, 'string');
      assert.notEqual(socket.id, socket.io.engine.id);
      const { socket: other } = await open(c);
      assert.notEqual(other.id, socket.id);
    });

    it('handshake advertises pingInterval 300, pingTimeout 200, maxPayload 1e6, and heartbeats keep the connection', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const socket = c.connect();
      const [handshake] = await once(socket.io.engine, 'handshake');
      assert.equal(handshake.pingInterval, 300);
      assert.equal(handshake.pingTimeout, 200);
      assert.equal(handshake.maxPayload, 1000000);
      await connected(socket);
      let pings = 0;
      socket.io.engine.on('ping', () => pings++);
      const disconnects = record(socket, 'disconnect');
      await sleep(1500); // well past pingInterval + pingTimeout
      assert.deepStrictEqual(disconnects, []);
      assert.ok(pings >= 2, `expected at least 2 pings in 1.5 s, got ${pings}`);
      assert.equal(socket.connected, true);
      // still usable
      assert.deepStrictEqual(await roundTrip(socket, 'still here'), ['still here']);
    });

    if (mode.name === 'default') {
      it('upgrades from polling to websocket', opts, async (t) => {
        const c = clients(t, URL, mode.opts);
        const socket = c.connect();
        const engine = socket.io.engine;
        const upgraded = once(engine, 'upgrade', { ms: 5000 });
        await connected(socket);
        const [transport] = await upgraded;
        assert.equal(transport.name, 'websocket');
        assert.equal(socket.io.engine.transport.name, 'websocket');
        // and it still works after the upgrade
        assert.deepStrictEqual(await roundTrip(socket, 'after upgrade'), ['after upgrade']);
      });
    }

    it('message round-trips plain arguments', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const args = ['héllo ✓ 🎉 "quoted" \\ \n', 42, -1.5, true, false, null, { a: [1, { b: 'c' }] }, [], {}];
      assert.deepStrictEqual(await roundTrip(socket, ...args), args);
      assert.deepStrictEqual(await roundTrip(socket), []);
    });

    it('message round-trips Buffer arguments, top level and nested', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const args = [
        Buffer.from([0, 1, 2, 253, 254, 255]),
        'text between',
        {
          file: Buffer.from('hello binary'),
          meta: { parts: [Buffer.from([9, 8, 7]), 'x', { deep: Buffer.alloc(300, 0xab) }] },
          n: 5,
        },
        [Buffer.from('in array'), 1],
      ];
      const back = await roundTrip(socket, ...args);
      assertSameData(back, args);
      assert.ok(Buffer.isBuffer(back[0]) || back[0] instanceof ArrayBuffer, 'binary arrives as binary');
    });

    it('a client with forceBase64 sends binary as base64 text, and it round-trips', opts, async (t) => {
      const c = clients(t, URL, { ...mode.opts, forceBase64: true });
      const { socket } = await open(c);
      const args = [Buffer.from([1, 2, 3]), { nested: Buffer.alloc(70, 0xcd) }];
      assertSameData(await roundTrip(socket, ...args), args);
      assert.ok(socket.connected, 'still connected');
    });

    it('data that only looks like a binary placeholder round-trips as data', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const cases = [
        [{ _placeholder: false, note: 'user data' }],
        [{ _placeholder: 'yes' }],
        [{ meta: { _placeholder: true, num: 0 } }],
        [Buffer.from([1]), { _placeholder: false }],
      ];
      for (const args of cases) {
        assertSameData(await emitAck(socket, 'message-with-ack', ...args), args);
      }
      assert.ok(socket.connected, 'still connected');
    });

    it('message round-trips a large (200 KB) Buffer', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const big = Buffer.alloc(200 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
      assertSameData(await roundTrip(socket, { big }), [{ big }]);
    });

    it('a message over maxPayload is not delivered and the connection is dropped', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c, '', { reconnection: false });
      const backs = record(socket, 'message-back');
      const disconnected = once(socket, 'disconnect', { ms: 5000 });
      socket.emit('message', Buffer.alloc(1_100_000, 1));
      const [reason] = await disconnected;
      assert.ok(['transport close', 'transport error', 'ping timeout'].includes(reason), `reason: ${reason}`);
      assert.deepStrictEqual(backs, []);
    });

    it('client -> server acks (emitWithAck and multi-argument, binary)', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      assert.equal(await socket.timeout(WAIT_MS).emitWithAck('message-with-ack', 'only'), 'only');
      assert.deepStrictEqual(
        await socket.timeout(WAIT_MS).emitWithAck('message-with-ack', { x: [1, 2] }, 'second'),
        { x: [1, 2] },
      );
      const args = ['a', 1, { bin: Buffer.from([1, 2, 3]), list: [Buffer.from('z')] }, null];
      assertSameData(await emitAck(socket, 'message-with-ack', ...args), args);
      assert.deepStrictEqual(await emitAck(socket, 'message-with-ack'), []);
      // several acks in flight at once come back to the right callers
      const many = await Promise.all(
        Array.from({ length: 10 }, (_, i) => socket.timeout(WAIT_MS).emitWithAck('message-with-ack', i)),
      );
      assert.deepStrictEqual(many, Array.from({ length: 10 }, (_, i) => i));
    });

    it('a burst of 2,000 emits at once: every ack comes back, a room member gets every message', opts, async (t) => {
      // Over polling the client sends the whole burst in one POST, and the member's queue
      // takes the whole burst before its writer has a turn: neither is a client misbehaving.
      const c = clients(t, URL, mode.opts);
      const room = `burst-${alnum(8)}`;
      const a = (await open(c)).socket;
      const b = (await open(c)).socket;
      assert.deepStrictEqual(await emitAck(b, 'join', room), [true]);
      const got = record(b, 'room-message');
      const n = 2000;
      const numbers = Array.from({ length: n }, (_, i) => i);
      const acks = numbers.map((i) => a.timeout(2 * WAIT_MS).emitWithAck('message-with-ack', i));
      for (const i of numbers) a.emit('to-room', room, i);
      assert.deepStrictEqual(await Promise.all(acks), numbers);
      await until(() => got.length === n, `b to get all ${n} room messages`, 2 * WAIT_MS);
      assert.deepStrictEqual(got.map(([i]) => i), numbers);
      assert.ok(a.connected && b.connected, 'both still connected');
    });

    it('server -> client acks (request-ack)', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const requests = [];
      socket.on('ack-request', (...args) => {
        const cb = args.pop();
        requests.push({ args, cbType: typeof cb });
        cb('pong', { bin: Buffer.from([4, 5, 6]) }, 2);
      });
      const result = once(socket, 'ack-result');
      socket.emit('request-ack', 'ping', 1);
      const ackArgs = await result;
      assert.deepStrictEqual(requests, [{ args: ['ping', 1], cbType: 'function' }]);
      assertSameData(ackArgs, ['pong', { bin: Buffer.from([4, 5, 6]) }, 2]);
    });

    it('rooms and broadcast operators', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = `room-${alnum(8)}`;
      const a = (await open(c)).socket;
      const b = (await open(c)).socket;
      const outsider = (await open(c)).socket;
      const got = { a: record(a, 'room-message'), b: record(b, 'room-message'), c: record(outsider, 'room-message') };
      const reset = () => { got.a.length = 0; got.b.length = 0; got.c.length = 0; };

      assert.deepStrictEqual(await emitAck(a, 'join', room), [true]);
      assert.deepStrictEqual(await emitAck(b, 'join', room), [true]);

      // socket.to(room): the room without the sender
      a.emit('to-room', room, 'hello', { n: 1 });
      await until(() => got.b.length === 1, 'b to get the to-room message');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(got, { a: [], b: [['hello', { n: 1 }]], c: [] });
      reset();

      // io.to(room): the whole room, sender included
      a.emit('to-room-all', room, 'everyone', Buffer.from([7]));
      await until(() => got.a.length === 1 && got.b.length === 1, 'a and b to get the to-room-all message');
      await sleep(QUIET_MS);
      assertSameData(got, { a: [['everyone', Buffer.from([7])]], b: [['everyone', Buffer.from([7])]], c: [] });
      reset();

      // io.except(room): everyone on / but the room
      a.emit('except-room', room, 'outside');
      await until(() => got.c.length === 1, 'the outsider to get the except-room message');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(got, { a: [], b: [], c: [['outside']] });
      reset();

      // leave stops delivery
      assert.deepStrictEqual(await emitAck(b, 'leave', room), [true]);
      a.emit('to-room-all', room, 'after leave');
      await until(() => got.a.length === 1, 'a to get the to-room-all message');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(got, { a: [['after leave']], b: [], c: [] });
      reset();

      // join without an ack request still joins
      b.emit('join', room);
      await sleep(QUIET_MS);
      outsider.emit('to-room', room, 'from outside');
      await until(() => got.a.length === 1 && got.b.length === 1, 'a and b to get the message');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(got, { a: [['from outside']], b: [['from outside']], c: [] });
    });

    it('two namespaces share one Manager and one engine connection', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const main = c.connect('', { auth: { ns: 'main' } });
      const custom = c.track(main.io.socket('/custom', { auth: { ns: 'custom' } }));
      const mainAuth = once(main, 'auth');
      const customAuth = once(custom, 'auth');
      await Promise.all([connected(main), connected(custom)]);
      assert.deepStrictEqual((await mainAuth)[0], { ns: 'main' });
      assert.deepStrictEqual((await customAuth)[0], { ns: 'custom' });
      assert.equal(main.io, custom.io);
      assert.equal(main.io.engine, custom.io.engine);
      assert.notEqual(main.id, custom.id);
      assert.notEqual(custom.id, custom.io.engine.id);
      // the main namespace still works alongside
      assert.deepStrictEqual(await roundTrip(main, 'mux'), ['mux']);

      // and /custom through a Manager built by hand, without auth
      const manager = c.trackManager(new Manager(URL, { timeout: WAIT_MS, ...mode.opts }));
      const s1 = c.track(manager.socket('/custom'));
      const s2 = c.track(manager.socket('/'));
      const a1 = once(s1, 'auth');
      const a2 = once(s2, 'auth');
      await Promise.all([connected(s1), connected(s2)]);
      assert.deepStrictEqual((await a1)[0], {});
      assert.deepStrictEqual((await a2)[0], {});
      assert.equal(s1.io.engine, s2.io.engine);
    });

    it('an unknown namespace gives connect_error "Invalid namespace"', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const socket = c.connect('/does-not-exist');
      const err = await connectError(socket);
      assert.equal(err.message, 'Invalid namespace');
      assert.equal(socket.connected, false);
      // the same connection can still reach a real namespace
      const ok = c.track(socket.io.socket('/custom'));
      await connected(ok);
    });

    it('middleware refusal carries message and data', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const socket = c.connect('', { auth: { refuse: true } });
      const err = await connectError(socket);
      assert.equal(err.message, 'refused by middleware');
      assert.deepStrictEqual(err.data, { reason: 'test' });
      assert.equal(socket.connected, false);
      // a client with other auth is let in
      const { echo } = await open(c, '', { auth: { refuse: false } });
      assert.deepStrictEqual(echo, { refuse: false });
    });

    it('disconnect-me: disconnect reason "io server disconnect", no reconnect', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const disconnected = once(socket, 'disconnect');
      socket.emit('disconnect-me');
      const [reason] = await disconnected;
      assert.equal(reason, 'io server disconnect');
      assert.equal(socket.connected, false);
      assert.equal(socket.active, false);
      const connects = record(socket, 'connect');
      await sleep(QUIET_MS * 2);
      assert.deepStrictEqual(connects, []);
    });

    it('close-transport: reason "transport close", then an automatic reconnect', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const { socket } = await open(c);
      const firstId = socket.id;
      const disconnected = once(socket, 'disconnect');
      socket.emit('close-transport');
      const [reason] = await disconnected;
      assert.equal(reason, 'transport close');
      assert.equal(socket.active, true, 'the client should be trying to reconnect');
      const authAgain = once(socket, 'auth', { ms: 5000 });
      await once(socket, 'connect', { ms: 5000 });
      assert.ok(socket.id && socket.id !== firstId, 'a new session gets a new socket id');
      assert.deepStrictEqual((await authAgain)[0], {});
      assert.deepStrictEqual(await roundTrip(socket, 'back again'), ['back again']);
    });

    it('an engine connection that joins no namespace is closed after the connect timeout', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const manager = c.trackManager(
        new Manager(URL, { autoConnect: false, reconnection: false, timeout: WAIT_MS, ...mode.opts }),
      );
      const opened = once(manager, 'open');
      manager.open();
      await opened;
      const start = Date.now();
      await once(manager, 'close', { ms: 4000 });
      const elapsed = Date.now() - start;
      assert.ok(elapsed >= 500, `closed too early (${elapsed} ms)`);
    });
  });
}

// Connection state recovery, on the conformance server's `/recovery/` path: the stock client
// keeps the private id and the last offset the server gave it, and hands them back when it
// reconnects by itself.
describe('connection state recovery', () => {
  for (const mode of MODES) {
    it(`over ${mode.name}: a client whose connection dropped gets its socket back and what it missed`, opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const recovering = { path: '/recovery/', reconnectionDelay: 300, reconnectionDelayMax: 300 };
      const a = c.connect('', recovering);
      await connected(a);
      assert.equal(a.recovered, false);
      const id = a.id;
      const b = c.connect('', { path: '/recovery/' });
      await connected(b);

      // A first event gives A an offset to come back with (its last argument).
      const first = once(a, 'news');
      await emitAck(b, 'shout', 'first');
      const [text, offset] = await first;
      assert.equal(text, 'first');
      assert.equal(typeof offset, 'string');

      const news = record(a, 'news');
      // As from Node's server, the missed events come ahead of the CONNECT answer, so the
      // client hands them to the program before its `connect` event.
      const order = [];
      a.on('news', (text) => order.push(text));
      a.on('connect', () => order.push('connect'));
      const gone = once(a, 'disconnect');
      a.io.engine.close();
      await gone;
      await emitAck(b, 'shout', 'while away');
      await connected(a, 5000);
      assert.equal(a.recovered, true, 'recovered');
      assert.equal(a.id, id, 'the same socket id');
      await until(() => news.length >= 1, 'the missed event');
      assert.equal(news[0][0], 'while away');
      assert.deepStrictEqual(order, ['while away', 'connect']);

      // Still in its room.
      await emitAck(b, 'shout', 'back');
      await until(() => news.length >= 2, 'the next event');
      assert.equal(news[1][0], 'back');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(news.map((args) => args[0]), ['while away', 'back']);
    });
  }
});
