// Browser test of the bundled chat page (served at ${CHAT_URL}/chat) against a running chat server.
//   CHAT_URL=http://127.0.0.1:3001 node --test chat.test.mjs
// Uses the system Chromium (CHROMIUM_PATH, default /usr/bin/chromium) through playwright-core.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const CHAT_URL = (process.env.CHAT_URL || '').replace(/\/+$/, '');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const WAIT_MS = 15000;

const suffix = Math.random().toString(36).slice(2, 8).replace(/[^a-z0-9]/g, '') || 'x';
const ROOM = `Room${suffix}`;
const PASSWORD = 'correct horse 🐎 battery';
const OTHER_PASSWORD = 'not the same password';
const FROM_ALICE = 'Hello Bob, grüße aus München 🎉 — “quotes” & <b>tags</b>';
const FROM_BOB = 'Hi Alice! 日本語のメッセージ, exactly sixteen? no: longer';
const FROM_CAROL = 'Carol writes with another password';

// Retries an assertion until it passes or the time is up, then throws its last error.
async function eventually(check, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function opensslDecrypt(wire, password) {
  const r = spawnSync('openssl', ['enc', '-d', '-aes-256-cbc', '-md', 'md5', '-a', '-A', '-pass', `pass:${password}`], {
    input: wire,
  });
  assert.equal(r.status, 0, `openssl could not decrypt ${wire}: ${r.stderr}`);
  return r.stdout.toString('utf8');
}

const userList = (page) =>
  page.$$eval('#user-list > li.user', (lis) => lis.map((li) => li.textContent.trim().replace(/\s+/g, ' ')));

const stream = (page) =>
  page.$$eval('#messages > li', (lis) =>
    lis.map((li) => {
      const text = (sel) => (li.querySelector(sel) ? li.querySelector(sel).textContent : null);
      if (li.classList.contains('notification')) {
        return { kind: 'notification', title: text('.notification-title'), description: text('.notification-description') };
      }
      if (li.classList.contains('message')) {
        const box = li.getBoundingClientRect();
        const list = document.getElementById('messages').getBoundingClientRect();
        const leftGap = box.left - list.left;
        const rightGap = list.right - box.right;
        return {
          kind: li.classList.contains('message-own') ? 'own' : 'other',
          from: li.getAttribute('data-from'),
          shownFrom: text('.message-from'),
          text: text('.message-text'),
          unreadable: li.querySelector('.message-text').classList.contains('unreadable'),
          // which edge of the stream the bubble hugs
          side: leftGap + 8 < rightGap ? 'left' : rightGap + 8 < leftGap ? 'right' : 'middle',
        };
      }
      return { kind: 'other-item', text: li.textContent };
    }),
  );

const notifications = async (page) =>
  (await stream(page)).filter((x) => x.kind === 'notification').map((n) => `${n.title} | ${n.description}`);

const bubbles = async (page) => (await stream(page)).filter((x) => x.kind === 'own' || x.kind === 'other');

// Records what a page sends to the server: WebSocket frames and long-polling POST bodies.
function recordTraffic(page) {
  const traffic = { sent: [], received: [], sockets: [] };
  page.on('websocket', (ws) => {
    if (!ws.url().includes('/socket.io/')) return;
    traffic.sockets.push(ws.url());
    ws.on('framesent', (f) => traffic.sent.push({ via: 'websocket', payload: String(f.payload) }));
    ws.on('framereceived', (f) => traffic.received.push({ via: 'websocket', payload: String(f.payload) }));
  });
  page.on('request', (req) => {
    if (req.method() === 'POST' && req.url().includes('/socket.io/')) {
      for (const p of (req.postData() || '').split('\x1e')) traffic.sent.push({ via: 'polling', payload: p });
    }
  });
  return traffic;
}

function sentRoomMessages(traffic) {
  const out = [];
  for (const { via, payload } of traffic.sent) {
    const m = /^42(\d*)(\[.*\])$/s.exec(payload);
    if (!m) continue;
    const args = JSON.parse(m[2]);
    if (args[0] === 'roomMessage') out.push({ via, message: args[1] });
  }
  return out;
}

async function openChat(browser, { noWebSocket = false } = {}) {
  const context = await browser.newContext();
  // Without WebSocket the client has to stay on HTTP long-polling.
  if (noWebSocket) await context.addInitScript(() => { window.WebSocket = undefined; });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  const traffic = recordTraffic(page);
  await page.goto(`${CHAT_URL}/chat`);
  await page.waitForSelector('#connection-status[data-state="connected"]', { timeout: WAIT_MS });
  return { context, page, traffic, errors };
}

async function login(page, name, password, room = ROOM) {
  await page.fill('#login-name', name);
  await page.fill('#login-room', room);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

async function loginOk(page, name, password) {
  await login(page, name, password);
  await page.waitForSelector('#room-view:not([hidden])', { timeout: WAIT_MS });
  assert.equal(await page.isVisible('#login-view'), false);
  assert.equal(await page.textContent('#room-name'), ROOM);
}

async function send(page, text) {
  await page.fill('#message-input', text);
  await page.click('#send-button');
}

describe('chat page in a browser', { skip: CHAT_URL ? false : 'set CHAT_URL (for example http://127.0.0.1:3001)', timeout: 180000 }, () => {
  let browser;
  let alice;
  let bob;
  let carol;
  let dave;

  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    alice = await openChat(browser);
    bob = await openChat(browser);
    carol = await openChat(browser);
    dave = await openChat(browser, { noWebSocket: true });
  });

  after(async () => {
    if (browser) await browser.close();
  });

  it('shows the form errors: local limits and the server message from the login ack', async () => {
    const { page } = alice;
    await login(page, 'Alice', 'short');
    await eventually(async () => assert.equal(await page.textContent('#login-error'), 'Room password must be 6–50 characters'));
    await login(page, 'x'.repeat(21), PASSWORD);
    await eventually(async () => assert.equal(await page.textContent('#login-error'), 'Name must be 1–20 characters'));
    await login(page, 'Alice', PASSWORD, '');
    await eventually(async () => assert.equal(await page.textContent('#login-error'), 'Room must be 1–20 characters'));
    await login(page, 'Alice Smith', PASSWORD);
    await eventually(async () =>
      assert.equal(await page.textContent('#login-error'), 'Name and room may only contain letters and digits'),
    );
    assert.equal(await page.isVisible('#room-view'), false);
  });

  it('logs two pages into one room and lists the users with "(you)"', async () => {
    await loginOk(alice.page, 'Alice', PASSWORD);
    await eventually(async () => assert.deepEqual(await userList(alice.page), ['Alice (you)']));

    await loginOk(bob.page, '  Bob ', PASSWORD); // trimmed by the page and the server
    await eventually(async () => assert.deepEqual(await userList(bob.page), ['Alice', 'Bob (you)']));
    await eventually(async () => assert.deepEqual(await userList(alice.page), ['Alice (you)', 'Bob']));
    assert.equal(await alice.page.textContent('#user-count'), '2');

    // "(you)" goes by socket id: each page marks a different entry
    const aliceSelf = await alice.page.getAttribute('#user-list > li.user.is-self', 'data-user-id');
    const bobSelf = await bob.page.getAttribute('#user-list > li.user.is-self', 'data-user-id');
    assert.ok(aliceSelf && bobSelf && aliceSelf !== bobSelf);

    await eventually(async () =>
      assert.deepEqual(await notifications(alice.page), ["Someone's here | Bob just entered the room"]),
    );
    assert.deepEqual(await notifications(bob.page), [], 'the joiner gets no notification about itself');
  });

  it('rejects a second user with the same name in the room (server message shown)', async () => {
    await login(carol.page, 'aLiCe', PASSWORD);
    await eventually(async () => assert.equal(await carol.page.textContent('#login-error'), 'Name is already taken in this room'));
    assert.equal(await carol.page.isVisible('#room-view'), false);
  });

  it('sends messages both ways: decrypted bubbles, own right, others left with the name', async () => {
    await send(alice.page, FROM_ALICE);
    await eventually(async () =>
      assert.deepEqual(await bubbles(bob.page), [
        { kind: 'other', from: 'Alice', shownFrom: 'Alice', text: FROM_ALICE, unreadable: false, side: 'left' },
      ]),
    );
    await send(bob.page, FROM_BOB);
    const expectAlice = [
      { kind: 'own', from: 'Alice', shownFrom: null, text: FROM_ALICE, unreadable: false, side: 'right' },
      { kind: 'other', from: 'Bob', shownFrom: 'Bob', text: FROM_BOB, unreadable: false, side: 'left' },
    ];
    await eventually(async () => assert.deepEqual(await bubbles(alice.page), expectAlice));
    await eventually(async () =>
      assert.deepEqual(await bubbles(bob.page), [
        { kind: 'other', from: 'Alice', shownFrom: 'Alice', text: FROM_ALICE, unreadable: false, side: 'left' },
        { kind: 'own', from: 'Bob', shownFrom: null, text: FROM_BOB, unreadable: false, side: 'right' },
      ]),
    );
    assert.equal(await alice.page.inputValue('#message-input'), '', 'the input is cleared after sending');
  });

  it('upgraded to WebSocket and sent only ciphertext that openssl decrypts with the room password', async () => {
    const frames = alice.traffic.sent.filter((f) => f.via === 'websocket').map((f) => f.payload);
    assert.ok(alice.traffic.sockets.length >= 1, 'a WebSocket to /socket.io/ was opened');
    assert.match(alice.traffic.sockets[0], /\/socket\.io\/\?EIO=4&transport=websocket&sid=/);
    assert.ok(frames.includes('2probe'), 'probe sent');
    assert.ok(alice.traffic.received.some((f) => f.payload === '3probe'), 'probe answered');
    assert.ok(frames.includes('5'), 'upgrade sent');

    const sent = sentRoomMessages(alice.traffic);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].via, 'websocket');
    assert.match(sent[0].message, /^U2FsdGVkX1[A-Za-z0-9+/]+={0,2}$/);
    assert.equal(opensslDecrypt(sent[0].message, PASSWORD), FROM_ALICE);

    const everything = alice.traffic.sent.map((f) => f.payload).join('\n');
    assert.ok(!everything.includes('München'), 'no plaintext on the wire');
    assert.ok(!everything.includes('battery'), 'no password on the wire');
  });

  it('shows a message encrypted with another password as unreadable', async () => {
    await loginOk(carol.page, 'Carol', OTHER_PASSWORD);
    await eventually(async () => assert.deepEqual(await userList(carol.page), ['Alice', 'Bob', 'Carol (you)']));
    await send(carol.page, FROM_CAROL);
    const unreadable = { kind: 'other', from: 'Carol', shownFrom: 'Carol', text: 'unreadable message', unreadable: true, side: 'left' };
    for (const page of [alice.page, bob.page]) {
      await eventually(async () => assert.deepEqual((await bubbles(page)).at(-1), unreadable));
    }
    // Carol reads her own message
    await eventually(async () =>
      assert.deepEqual(await bubbles(carol.page), [
        { kind: 'own', from: 'Carol', shownFrom: null, text: FROM_CAROL, unreadable: false, side: 'right' },
      ]),
    );
    // and Carol's wire text really was made with her password
    const [carolWire] = sentRoomMessages(carol.traffic);
    assert.equal(opensslDecrypt(carolWire.message, OTHER_PASSWORD), FROM_CAROL);

    await carol.page.click('#logout-button');
    await carol.page.waitForSelector('#login-view:not([hidden])', { timeout: WAIT_MS });
    await eventually(async () => assert.deepEqual(await userList(alice.page), ['Alice (you)', 'Bob']));
    assert.ok((await notifications(bob.page)).includes('Someone just left | Carol just left the room'));
  });

  it('works over long-polling alone (no WebSocket in the page)', async () => {
    await loginOk(dave.page, 'Dave', PASSWORD);
    await eventually(async () => assert.deepEqual(await userList(dave.page), ['Alice', 'Bob', 'Dave (you)']));
    await send(dave.page, 'Dave über polling ✉');
    await eventually(async () =>
      assert.deepEqual((await bubbles(alice.page)).at(-1), {
        kind: 'other', from: 'Dave', shownFrom: 'Dave', text: 'Dave über polling ✉', unreadable: false, side: 'left',
      }),
    );
    await send(alice.page, 'Alice to Dave');
    await eventually(async () =>
      assert.deepEqual(await bubbles(dave.page), [
        { kind: 'own', from: 'Dave', shownFrom: null, text: 'Dave über polling ✉', unreadable: false, side: 'right' },
        { kind: 'other', from: 'Alice', shownFrom: 'Alice', text: 'Alice to Dave', unreadable: false, side: 'left' },
      ]),
    );
    assert.deepEqual(dave.traffic.sockets, [], 'no WebSocket was opened');
    const [wire] = sentRoomMessages(dave.traffic);
    assert.equal(wire.via, 'polling');
    assert.equal(opensslDecrypt(wire.message, PASSWORD), 'Dave über polling ✉');

    await dave.page.click('#logout-button');
    await dave.page.waitForSelector('#login-view:not([hidden])', { timeout: WAIT_MS });
    await eventually(async () => assert.deepEqual(await userList(bob.page), ['Alice', 'Bob (you)']));
    await eventually(async () =>
      assert.equal((await notifications(alice.page)).at(-1), 'Someone just left | Dave just left the room'),
    );
  });

  it('reconnects after a dropped connection and logs in again by itself', async () => {
    const oldId = await bob.page.getAttribute('#user-list > li.user.is-self', 'data-user-id');
    const before = (await notifications(alice.page)).length;
    await bob.page.evaluate(() => window.chatDebug.simulateConnectionLoss());
    await eventually(async () =>
      assert.deepEqual((await notifications(alice.page)).slice(before), [
        'Someone just left | Bob just left the room',
        "Someone's here | Bob just entered the room",
      ]),
    );
    await bob.page.waitForSelector('#connection-status[data-state="connected"]', { timeout: WAIT_MS });
    // The list before the loss has the same names: wait for the one the new login brought.
    await eventually(async () => {
      const newId = await bob.page.getAttribute('#user-list > li.user.is-self', 'data-user-id');
      assert.notEqual(newId, oldId, 'a new socket id after reconnecting');
    });
    await eventually(async () => assert.deepEqual(await userList(bob.page), ['Alice', 'Bob (you)']));
    await eventually(async () => assert.deepEqual(await userList(alice.page), ['Alice (you)', 'Bob']));

    await eventually(async () => assert.equal(await bob.page.isEnabled('#send-button'), true));
    await send(bob.page, 'back again');
    await eventually(async () =>
      assert.deepEqual((await bubbles(alice.page)).at(-1), {
        kind: 'other', from: 'Bob', shownFrom: 'Bob', text: 'back again', unreadable: false, side: 'left',
      }),
    );
    await eventually(async () => assert.equal((await bubbles(bob.page)).at(-1).kind, 'own'));
  });

  it('leaves the room: back to the form, the other page sees the notification and the new list', async () => {
    await alice.page.click('#logout-button');
    await alice.page.waitForSelector('#login-view:not([hidden])', { timeout: WAIT_MS });
    assert.equal(await alice.page.isVisible('#room-view'), false);
    await eventually(async () =>
      assert.equal((await notifications(bob.page)).at(-1), 'Someone just left | Alice just left the room'),
    );
    await eventually(async () => assert.deepEqual(await userList(bob.page), ['Bob (you)']));
    assert.equal(await bob.page.textContent('#user-count'), '1');
  });

  it('had no script errors in any page', () => {
    for (const p of [alice, bob, carol, dave]) assert.deepEqual(p.errors.map(String), []);
  });
});
