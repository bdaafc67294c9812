// Interop tests against the chat server at CHAT_URL, driven by the real npm
// socket.io-client, once per transport mode. The contract is the chat
// protocol spec (see README.md); every message string below comes from it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  MODES,
  QUIET_MS,
  TEST_TIMEOUT,
  WAIT_MS,
  alnum,
  clients,
  connected,
  emitAck,
  once,
  record,
  serverUrl,
  sleep,
  until,
} from './helpers.mjs';

const URL = serverUrl('CHAT_URL');
const opts = { timeout: TEST_TIMEOUT };

const ERR = {
  missing: 'No room or name provided',
  chars: 'Name and room may only contain letters and digits',
  length: 'Name and room must be at most 20 characters',
  exists: 'user already exists',
  taken: 'Name is already taken in this room',
};
const MESSAGE_CAP = 16 * 1024;

/** A fresh room name: letters and digits, unique per test run. */
const newRoom = () => `R${alnum(10)}`;

const entered = (name) => ({ title: "Someone's here", description: `${name} just entered the room` });
const left = (name) => ({ title: 'Someone just left', description: `${name} just left the room` });

/**
 * A connected chat client that records every event it receives, in order,
 * as [event, ...args].
 */
async function chatClient(c) {
  const socket = c.connect();
  const events = record(socket, '*');
  await connected(socket);
  return { socket, events };
}

/**
 * `login` with an ack; resolves with the single ack argument. `before` holds
 * the events this client had received when the ack arrived (taken in the ack
 * callback itself, so the order on the wire is kept).
 */
function loginRaw(client, payload) {
  return new Promise((resolve, reject) => {
    client.socket.timeout(WAIT_MS).emit('login', payload, (err, ...args) => {
      if (err) return reject(new Error(`no ack for 'login' within ${WAIT_MS} ms (${err.message})`));
      const before = client.events.slice();
      try {
        assert.equal(args.length, 1, `login ack must have one argument, got ${JSON.stringify(args)}`);
        resolve({ ack: args[0], before });
      } catch (e) {
        reject(e);
      }
    });
  });
}

async function login(client, payload) {
  return (await loginRaw(client, payload)).ack;
}

/**
 * `login` that must succeed; checks the exact ack shape, and that the
 * `users` event (listing this user last) came before the ack.
 */
async function loginOk(client, name, room, expectName = name, expectRoom = room) {
  const { ack, before } = await loginRaw(client, { name, room });
  const user = { id: client.socket.id, name: expectName, room: expectRoom };
  assert.deepStrictEqual(ack, { user });
  const last = before[before.length - 1];
  assert.ok(last && last[0] === 'users', `'users' must arrive before the login ack (got ${JSON.stringify(before.map((e) => e[0]))})`);
  assert.deepStrictEqual(last[1][last[1].length - 1], user, "the joiner is last in 'users'");
  return ack.user;
}

/** `login` that must fail with `message`; checks the exact ack shape. */
async function loginFails(client, payload, message) {
  const ack = await login(client, payload);
  assert.deepStrictEqual(ack, { error: message }, `login(${JSON.stringify(payload)})`);
}

const named = (events, name) => events.filter(([ev]) => ev === name).map(([, ...args]) => args);
const clear = (...clientsToClear) => clientsToClear.forEach((cl) => (cl.events.length = 0));

describe('chat HTTP', () => {
  it('GET / answers 200 "up and running"', opts, async () => {
    const res = await fetch(`${URL}/`, { signal: AbortSignal.timeout(WAIT_MS) });
    assert.equal(res.status, 200);
    assert.equal((await res.text()).trim(), 'up and running');
  });
});

for (const mode of MODES) {
  describe(`chat over ${mode.name}`, () => {
    it('two users log in: acks, notification, users in join order', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      assert.notEqual(alice.socket.id, alice.socket.io.engine.id, 'socket id must not be the engine session id');

      const userA = await loginOk(alice, 'Alice', room);
      // users is sent before the ack
      assert.deepStrictEqual(alice.events, [['users', [userA]]]);
      clear(alice);

      const userB = await loginOk(bob, 'Bob', room);
      assert.deepStrictEqual(bob.events, [['users', [userA, userB]]], 'the joiner gets users (no notification) before the ack');
      await until(() => alice.events.length >= 2, 'alice to get notification and users');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, [
        ['notification', entered('Bob')],
        ['users', [userA, userB]],
      ]);

      // a third user: everyone else notified, users in join order
      clear(alice, bob);
      const carol = await chatClient(c);
      const userC = await loginOk(carol, 'Carol', room);
      assert.deepStrictEqual(carol.events, [['users', [userA, userB, userC]]]);
      await until(() => alice.events.length >= 2 && bob.events.length >= 2, 'alice and bob to hear about carol');
      await sleep(QUIET_MS);
      for (const other of [alice, bob]) {
        assert.deepStrictEqual(other.events, [
          ['notification', entered('Carol')],
          ['users', [userA, userB, userC]],
        ]);
      }
    });

    it('roomMessage goes to the whole room, sender included, from = stored name', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      const elsewhere = await chatClient(c);
      await loginOk(alice, '  Alice\t', room, 'Alice');
      await loginOk(bob, 'Bob', room);
      await loginOk(elsewhere, 'Eve', newRoom());
      await sleep(QUIET_MS);
      clear(alice, bob, elsewhere);

      const text = 'U2FsdGVkX1+abc/def==';
      alice.socket.emit('roomMessage', text);
      await until(() => alice.events.length >= 1 && bob.events.length >= 1, 'the room to get the message');
      bob.socket.emit('roomMessage', 'reply ✓');
      await until(() => alice.events.length >= 2 && bob.events.length >= 2, 'the room to get the reply');
      await sleep(QUIET_MS);
      const expected = [
        ['roomMessage', { message: text, from: 'Alice' }],
        ['roomMessage', { message: 'reply ✓', from: 'Bob' }],
      ];
      assert.deepStrictEqual(alice.events, expected);
      assert.deepStrictEqual(bob.events, expected);
      assert.deepStrictEqual(elsewhere.events, []);
    });

    it('ping acks with the socket id', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const alice = await chatClient(c);
      assert.deepStrictEqual(await emitAck(alice.socket, 'ping'), [alice.socket.id]);
      assert.equal(await alice.socket.timeout(WAIT_MS).emitWithAck('ping'), alice.socket.id);
      assert.notEqual(alice.socket.id, alice.socket.io.engine.id);
    });

    it('login validation errors', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const s = alice.socket;

      // missing payload entirely
      assert.deepStrictEqual(await emitAck(s, 'login'), [{ error: ERR.missing }]);
      for (const payload of [
        null,
        42,
        'Alice',
        true,
        [],
        {},
        { name: 'Alice' },
        { room },
        { name: null, room },
        { name: 'Alice', room: null },
        { name: 1, room: 2 },
        { name: 'Alice', room: 7 },
        { name: ['Alice'], room },
        { name: { x: 1 }, room },
        { name: '', room },
        { name: 'Alice', room: '' },
        { name: '   ', room },
        { name: 'Alice', room: ' \t\n ' },
      ]) {
        await loginFails(alice, payload, ERR.missing);
      }

      for (const payload of [
        { name: 'juan c', room },
        { name: 'juan-c', room },
        { name: 'Alice', room: 'my room' },
        { name: 'José', room },
        { name: 'a_b', room },
        { name: 'Alice', room: 'r.1' },
      ]) {
        await loginFails(alice, payload, ERR.chars);
      }

      const n21 = 'a'.repeat(21);
      await loginFails(alice, { name: n21, room }, ERR.length);
      await loginFails(alice, { name: 'Alice', room: 'R'.repeat(21) }, ERR.length);
      await loginFails(alice, { name: `  ${'b'.repeat(21)}  `, room }, ERR.length);

      // still connected and still able to log in after all those failures
      assert.equal(s.connected, true);
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, [], 'failed logins send nothing');
      const n20 = 'A1'.repeat(10);
      await loginOk(alice, n20, room);
    });

    it('extra keys in the login payload are ignored', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const alice = await chatClient(c);
      const room = newRoom();
      const ack = await login(alice, { name: 'Alice', room, id: 'forged', admin: true });
      assert.deepStrictEqual(ack, { user: { id: alice.socket.id, name: 'Alice', room } });
    });

    it('logging in twice: "user already exists"', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const alice = await chatClient(c);
      const room = newRoom();
      await loginOk(alice, 'Alice', room);
      await loginFails(alice, { name: 'Alice', room }, ERR.exists);
      await loginFails(alice, { name: 'Other', room: newRoom() }, ERR.exists);
    });

    it('duplicate names in a room ignore ASCII case; rooms are case-sensitive', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const other = await chatClient(c);
      await loginOk(alice, 'Alice', room);
      await loginFails(other, { name: 'alice', room }, ERR.taken);
      await loginFails(other, { name: 'ALICE', room }, ERR.taken);
      await loginFails(other, { name: ' Alice ', room }, ERR.taken);
      // same name in another room is fine; room names are case-sensitive
      await loginOk(other, 'alice', room.toLowerCase());
      const third = await chatClient(c);
      await loginOk(third, 'ALICE', room.toUpperCase());
    });

    it('names and rooms are trimmed at both ends', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const bob = await chatClient(c);
      await loginOk(bob, '  bob  ', ` \t${room}\n `, 'bob', room);
      const alice = await chatClient(c);
      await loginOk(alice, 'Alice', room);
      await until(() => named(bob.events, 'users').length >= 2, 'bob to see alice');
      assert.deepStrictEqual(named(bob.events, 'notification'), [[entered('Alice')]]);
    });

    it('logout: ack with no arguments, the others are told, and one can log in again', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      const userA = await loginOk(alice, 'Alice', room);
      const userB = await loginOk(bob, 'Bob', room);
      await until(() => alice.events.length >= 2, 'alice to see bob');
      await sleep(QUIET_MS);
      clear(alice, bob);

      assert.deepStrictEqual(await emitAck(bob.socket, 'logout'), []);
      await until(() => alice.events.length >= 2, 'alice to hear bob left');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, [
        ['notification', left('Bob')],
        ['users', [userA]],
      ]);
      assert.deepStrictEqual(bob.events, [], 'the one who left gets nothing');

      // no longer in the room: messages are neither sent nor received
      clear(alice);
      bob.socket.emit('roomMessage', 'ghost');
      alice.socket.emit('roomMessage', 'still here');
      await until(() => alice.events.length >= 1, 'alice to get her own message');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, [['roomMessage', { message: 'still here', from: 'Alice' }]]);
      assert.deepStrictEqual(bob.events, []);

      // logout when not logged in: still an ack with no arguments, nothing sent
      clear(alice);
      assert.deepStrictEqual(await emitAck(bob.socket, 'logout'), []);
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, []);

      // the user was removed, so logging in again works (even with the same name)
      const again = await loginOk(bob, 'Bob', room);
      assert.deepStrictEqual(again, { ...userB });
      await until(() => alice.events.length >= 2, 'alice to see bob again');
      assert.deepStrictEqual(alice.events, [
        ['notification', entered('Bob')],
        ['users', [userA, userB]],
      ]);
    });

    it('disconnect behaves like logout', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      const userA = await loginOk(alice, 'Alice', room);
      await loginOk(bob, 'Bob', room);
      await until(() => alice.events.length >= 2, 'alice to see bob');
      await sleep(QUIET_MS);
      clear(alice);

      bob.socket.disconnect();
      await until(() => alice.events.length >= 2, 'alice to hear bob left', 5000);
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, [
        ['notification', left('Bob')],
        ['users', [userA]],
      ]);

      // the name is free again
      const bob2 = await chatClient(c);
      await loginOk(bob2, 'bob', room);
    });

    for (const event of ['login', 'logout', 'ping']) {
      it(`${event} without an ack: the server disconnects the socket`, opts, async (t) => {
        const c = clients(t, URL, mode.opts);
        const alice = await chatClient(c);
        const disconnected = once(alice.socket, 'disconnect');
        if (event === 'login') alice.socket.emit('login', { name: 'Alice', room: newRoom() });
        else alice.socket.emit(event);
        const [reason] = await disconnected;
        assert.equal(reason, 'io server disconnect');
      });
    }

    it('a login without an ack by a logged-in user disconnects and frees the user', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      const userA = await loginOk(alice, 'Alice', room);
      await loginOk(bob, 'Bob', room);
      await until(() => alice.events.length >= 2, 'alice to see bob');
      await sleep(QUIET_MS);
      clear(alice);
      const disconnected = once(bob.socket, 'disconnect');
      bob.socket.emit('login', { name: 'Bob', room });
      assert.equal((await disconnected)[0], 'io server disconnect');
      await until(() => alice.events.length >= 2, 'alice to hear bob left');
      assert.deepStrictEqual(alice.events, [
        ['notification', left('Bob')],
        ['users', [userA]],
      ]);
    });

    it("a room named like another socket's id delivers nothing to that socket", opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      // Find a victim whose socket id is itself a valid room name (letters and
      // digits, at most 20), so that the login below is accepted.
      let victim;
      for (let i = 0; i < 25; i++) {
        victim = await chatClient(c);
        if (/^[A-Za-z0-9]{1,20}$/.test(victim.socket.id)) break;
        victim.socket.disconnect();
      }
      const room = victim.socket.id;
      const intruder = await chatClient(c);
      const ack = await login(intruder, { name: 'Mallory', room });
      if (ack.error) {
        // The id cannot even be named as a room: nothing can leak.
        assert.ok([ERR.chars, ERR.length].includes(ack.error), `unexpected error ${ack.error}`);
      } else {
        assert.deepStrictEqual(ack, { user: { id: intruder.socket.id, name: 'Mallory', room } });
        const friend = await chatClient(c);
        await loginOk(friend, 'Friend', room);
        intruder.socket.emit('roomMessage', 'can you hear me');
        await until(() => named(intruder.events, 'roomMessage').length >= 1, 'the intruder to get its own message');
        await until(() => named(friend.events, 'roomMessage').length >= 1, 'the friend to get the message');
        assert.deepStrictEqual(named(intruder.events, 'notification'), [[entered('Friend')]]);
        assert.deepStrictEqual(await emitAck(intruder.socket, 'logout'), []);
        await until(() => named(friend.events, 'notification').length >= 1, 'the friend to hear the intruder left');
      }
      await sleep(QUIET_MS);
      assert.deepStrictEqual(victim.events, [], 'the victim socket must receive nothing');
      assert.equal(victim.socket.connected, true);
    });

    it('roomMessage that is not a string is dropped (ack: { error })', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      await loginOk(alice, 'Alice', room);
      await loginOk(bob, 'Bob', room);
      await sleep(QUIET_MS);
      clear(alice, bob);

      const bad = [42, null, true, { message: 'x' }, ['x'], Buffer.from('binary')];
      for (const value of bad) {
        const ackArgs = await emitAck(alice.socket, 'roomMessage', value);
        assert.equal(ackArgs.length, 1, `ack for ${JSON.stringify(value)}`);
        assert.deepStrictEqual(Object.keys(ackArgs[0]), ['error']);
        assert.equal(typeof ackArgs[0].error, 'string');
        assert.ok(ackArgs[0].error.length > 0);
      }
      // without an ack: dropped silently, and the socket stays connected
      for (const value of bad) alice.socket.emit('roomMessage', value);
      alice.socket.emit('roomMessage');
      // a valid marker afterwards: anything relayed before it would have arrived first
      alice.socket.emit('roomMessage', 'marker');
      await until(() => alice.events.length >= 1 && bob.events.length >= 1, 'the marker');
      await sleep(QUIET_MS);
      const only = [['roomMessage', { message: 'marker', from: 'Alice' }]];
      assert.deepStrictEqual(alice.events, only);
      assert.deepStrictEqual(bob.events, only);
      assert.equal(alice.socket.connected, true);
    });

    it('roomMessage longer than 16 KiB is dropped (ack: { error }); exactly 16 KiB is relayed', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const bob = await chatClient(c);
      await loginOk(alice, 'Alice', room);
      await loginOk(bob, 'Bob', room);
      await sleep(QUIET_MS);
      clear(alice, bob);

      const tooLong = 'x'.repeat(MESSAGE_CAP + 1);
      const ackArgs = await emitAck(alice.socket, 'roomMessage', tooLong);
      assert.equal(ackArgs.length, 1);
      assert.deepStrictEqual(Object.keys(ackArgs[0]), ['error']);
      assert.equal(typeof ackArgs[0].error, 'string');
      assert.ok(ackArgs[0].error.length > 0);
      alice.socket.emit('roomMessage', 'y'.repeat(64 * 1024));

      const atCap = 'z'.repeat(MESSAGE_CAP);
      alice.socket.emit('roomMessage', atCap);
      await until(() => alice.events.length >= 1 && bob.events.length >= 1, 'the 16 KiB message');
      await sleep(QUIET_MS);
      const only = [['roomMessage', { message: atCap, from: 'Alice' }]];
      assert.deepStrictEqual(alice.events, only);
      assert.deepStrictEqual(bob.events, only);
      assert.equal(alice.socket.connected, true);
    });

    it('roomMessage from a socket that is not logged in is dropped', opts, async (t) => {
      const c = clients(t, URL, mode.opts);
      const room = newRoom();
      const alice = await chatClient(c);
      const stranger = await chatClient(c);
      await loginOk(alice, 'Alice', room);
      clear(alice);
      stranger.socket.emit('roomMessage', 'hello?');
      await sleep(QUIET_MS);
      alice.socket.emit('roomMessage', 'marker');
      await until(() => alice.events.length >= 1, 'the marker');
      await sleep(QUIET_MS);
      assert.deepStrictEqual(alice.events, [['roomMessage', { message: 'marker', from: 'Alice' }]]);
      assert.deepStrictEqual(stranger.events, []);
      assert.equal(stranger.socket.connected, true);
    });
  });
}
