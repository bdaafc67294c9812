// The stock socket.io-client browser bundle, in headless Chromium, against the conformance server
// (SIO_URL), from a page of another origin: what a web application served from its own host
// meets. Each transport setting a browser application uses: the default (polling, then the
// upgrade), WebSocket only, polling only.
//   SIO_URL=http://127.0.0.1:3000 node --test client.test.mjs
// Uses the system Chromium (CHROMIUM_PATH, default /usr/bin/chromium) through playwright-core.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const SIO_URL = (process.env.SIO_URL || '').replace(/\/+$/, '');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];

// The package's exports do not name its browser bundle: it is read from the installed package.
const BUNDLE = readFileSync(new URL('./node_modules/socket.io-client/dist/socket.io.min.js', import.meta.url));
// The page brings the bundle and `within`, which every check below uses: a promise that fails
// after 10 s, naming what did not happen.
const PAGE = `<!doctype html><meta charset="utf-8"><title>client</title>
<script src="/socket.io.min.js"></script>
<script>
  window.within = (promise, what) =>
    Promise.race([
      promise,
      new Promise((_, reject) => setTimeout(() => reject(new Error('timed out: ' + what)), 10000)),
    ]);
</script>`;

const TRANSPORTS = {
  default: ['polling', 'websocket'],
  'websocket only': ['websocket'],
  'polling only': ['polling'],
};

describe('socket.io-client in a browser, from another origin', { skip: !SIO_URL && 'SIO_URL is not set' }, () => {
  let pageServer;
  let browser;
  let page;

  before(async () => {
    // The page's origin differs from the server's (another port): every request is cross-origin.
    pageServer = createServer((req, res) => {
      if (req.url === '/socket.io.min.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' });
        res.end(BUNDLE);
      } else {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(PAGE);
      }
    });
    await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage();
    page.on('pageerror', (err) => console.error('page error:', err));
    await page.goto(`http://127.0.0.1:${pageServer.address().port}/`);
    assert.equal(await page.evaluate(() => typeof io), 'function', 'the bundle loaded');
  });

  after(async () => {
    await browser?.close();
    await new Promise((resolve) => (pageServer ? pageServer.close(resolve) : resolve()));
  });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    it(`${name}: auth, values and binary both ways, acks both ways, rooms`, async () => {
      const result = await page.evaluate(
        async ({ url, transports }) => {
          const once = (socket, event) => new Promise((resolve) => socket.once(event, (...args) => resolve(args)));
          const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

          const socket = io(url, { transports, forceNew: true, auth: { token: 'tok', n: 7 }, withCredentials: true });
          const auth = once(socket, 'auth');
          await within(once(socket, 'connect'), 'connect');
          const out = { auth: (await within(auth, 'auth'))[0], id: typeof socket.id };

          // Values and binary at any depth, echoed by the server as they were sent.
          const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
          const back = once(socket, 'message-back');
          socket.emit('message', 'héllo 🎉', 42, null, { deep: [{ blob: bytes.buffer, ok: true }] }, bytes);
          const echoed = await within(back, 'message-back');
          out.echoed = [
            echoed[0],
            echoed[1],
            echoed[2],
            echoed[3].deep[0].ok,
            echoed[3].deep[0].blob instanceof ArrayBuffer && hex(echoed[3].deep[0].blob),
            echoed[4] instanceof ArrayBuffer && hex(echoed[4]),
          ];

          // The client's ack, answered by the server with the event's own arguments (a callback:
          // emitWithAck resolves with the first argument only).
          const acked = await within(
            new Promise((resolve) => socket.emit('message-with-ack', 'a', bytes, (...args) => resolve(args))),
            'ack',
          );
          out.acked = [acked[0], acked[1] instanceof ArrayBuffer && hex(acked[1])];

          // The server's ack: it asks, the client answers, the server tells what it got.
          let asked = 0;
          socket.on('emit-with-ack', (...args) => {
            const cb = args[args.length - 1];
            if (typeof cb === 'function') {
              asked += 1;
              cb(...args.slice(0, -1), 'from the browser');
            }
          });
          const told = new Promise((resolve) => {
            socket.on('emit-with-ack', (...args) => {
              if (typeof args[args.length - 1] !== 'function') resolve(args);
            });
          });
          socket.emit('emit-with-ack', 1, { two: 2 });
          const toldArgs = await within(told, 'server ack');
          out.serverAck = [asked, toldArgs];

          // A room, and a message to it from a second client.
          const other = io(url, { transports, forceNew: true });
          await within(once(other, 'connect'), 'second connect');
          await within(socket.emitWithAck('join', 'browsers'), 'join');
          const inRoom = once(socket, 'room-message');
          other.emit('to-room', 'browsers', 'to the room', bytes);
          const delivered = await within(inRoom, 'room message');
          out.room = [delivered[0], delivered[1] instanceof ArrayBuffer && hex(delivered[1])];

          // The upgrade finishes on its own time: wait for it where it is to happen.
          if (transports.includes('websocket')) {
            await within(
              new Promise((resolve) => {
                const check = () => (socket.io.engine.transport.name === 'websocket' ? resolve() : setTimeout(check, 20));
                check();
              }),
              'the upgrade',
            );
          }
          out.transport = socket.io.engine.transport.name;
          const gone = once(socket, 'disconnect');
          socket.emit('disconnect-me');
          out.disconnect = (await within(gone, 'disconnect'))[0];
          other.disconnect();
          return out;
        },
        { url: SIO_URL, transports },
      );

      assert.deepEqual(result.auth, { token: 'tok', n: 7 });
      assert.equal(result.id, 'string');
      assert.deepEqual(result.echoed, ['héllo 🎉', 42, null, true, '000102fdfeff', '000102fdfeff']);
      assert.deepEqual(result.acked, ['a', '000102fdfeff']);
      assert.deepEqual(result.serverAck, [1, [1, { two: 2 }, 'from the browser']]);
      assert.deepEqual(result.room, ['to the room', '000102fdfeff']);
      assert.equal(result.transport, transports.includes('websocket') ? 'websocket' : 'polling');
      assert.equal(result.disconnect, 'io server disconnect');
    });
  }

  it('a namespace, and a refusal by middleware with its data', async () => {
    const result = await page.evaluate(async (url) => {
      const custom = io(`${url}/custom`, { forceNew: true, auth: { where: 'custom' } });
      const auth = await within(new Promise((resolve) => custom.once('auth', resolve)), 'custom auth');
      custom.disconnect();

      const refused = io(url, { forceNew: true, auth: { refuse: true } });
      const err = await within(new Promise((resolve) => refused.once('connect_error', resolve)), 'connect_error');
      refused.close();
      return { auth, message: err.message, data: err.data };
    }, SIO_URL);
    assert.deepEqual(result.auth, { where: 'custom' });
    assert.equal(result.message, 'refused by middleware');
    assert.deepEqual(result.data, { reason: 'test' });
  });

  it('connection state recovery after the transport is lost', async () => {
    const result = await page.evaluate(async (url) => {
      const opts = { path: '/recovery/', forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200 };
      const a = io(url, opts);
      const b = io(url, opts);
      await within(Promise.all([a, b].map((s) => new Promise((r) => s.once('connect', r)))), 'connect');
      const firstId = a.id;
      // A first event gives a an offset to come back with.
      const first = new Promise((resolve) => a.once('news', resolve));
      await within(b.timeout(5000).emitWithAck('shout', 'first'), 'first shout');
      await within(first, 'first news');
      const news = [];
      a.on('news', (text) => news.push(text));

      // a's connection drops; b shouts while a is away; a comes back with what it missed.
      const back = new Promise((resolve) => a.io.once('reconnect', resolve));
      a.io.engine.close();
      await within(b.timeout(5000).emitWithAck('shout', 'while away'), 'shout');
      await within(back, 'reconnect');
      await within(new Promise((r) => (a.connected ? r() : a.once('connect', r))), 'connect again');
      await within(
        new Promise((resolve) => {
          const check = () => (news.length ? resolve() : setTimeout(check, 20));
          check();
        }),
        'missed news',
      );
      const out = { recovered: a.recovered, sameId: a.id === firstId, news };
      a.disconnect();
      b.disconnect();
      return out;
    }, SIO_URL);
    assert.deepEqual(result, { recovered: true, sameId: true, news: ['while away'] });
  });
});
