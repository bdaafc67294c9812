// The chat's original web client is built on socket.io-client 4.0 (engine.io-client 5.0): the
// whole chat contract over that client, as the page uses it (default options: long-polling
// first, then the upgrade to WebSocket), against the chat server at CHAT_URL.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { io } from 'socket.io-client-4.0';
import { TEST_TIMEOUT, WAIT_MS, alnum, once, serverUrl, until } from './helpers.mjs';

const URL = serverUrl('CHAT_URL');
const opts = { timeout: TEST_TIMEOUT };

/** A client of the old version with the page's options, recording every event it receives. */
function oldClient(t) {
  const socket = io(URL, { forceNew: true, reconnection: false, timeout: WAIT_MS });
  const events = [];
  socket.onAny((event, ...args) => events.push([event, ...args]));
  t.after(() => socket.close());
  return { socket, events };
}

/** Emits with an ack (4.0 has no `timeout()`), failing after WAIT_MS. */
function call(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for '${event}' within ${WAIT_MS} ms`)), WAIT_MS);
    socket.emit(event, ...args, (...answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

describe('chat with socket.io-client 4.0 (the original web client)', () => {
  it('logs in, upgrades, chats, pings and logs out', opts, async (t) => {
    const room = `R${alnum(10)}`;
    const alice = oldClient(t);
    const bob = oldClient(t);
    await Promise.all([once(alice.socket, 'connect'), once(bob.socket, 'connect')]);

    const [aliceLogin] = await call(alice.socket, 'login', { name: 'alice', room });
    assert.deepEqual(aliceLogin, { user: { id: alice.socket.id, name: 'alice', room } });
    const [bobLogin] = await call(bob.socket, 'login', { name: 'bob', room });
    assert.deepEqual(bobLogin, { user: { id: bob.socket.id, name: 'bob', room } });
    const members = [aliceLogin.user, bobLogin.user];
    await until(
      () => alice.events.some(([e, list]) => e === 'users' && list.length === 2),
      'alice sees both members',
    );
    assert.deepEqual(alice.events.filter(([e]) => e === 'users').at(-1), ['users', members]);
    assert.deepEqual(alice.events.find(([e]) => e === 'notification'), [
      'notification',
      { title: "Someone's here", description: 'bob just entered the room' },
    ]);

    // The page's default transports: both moved to WebSocket.
    await until(
      () => [alice, bob].every((c) => c.socket.io.engine.transport.name === 'websocket'),
      'the upgrade to WebSocket',
    );

    const wire = 'U2FsdGVkX19hbGljZSB3YXMgaGVyZQ==';
    alice.socket.emit('roomMessage', wire);
    const said = ['roomMessage', { message: wire, from: 'alice' }];
    await until(
      () => [alice, bob].every((c) => c.events.some((e) => isDeepStrictEqual(e, said))),
      'the message reaches the room, sender included',
    );

    assert.deepEqual(await call(bob.socket, 'ping'), [bob.socket.id]);

    assert.deepEqual(await call(bob.socket, 'logout'), []);
    await until(
      () => alice.events.some(([e, n]) => e === 'notification' && n.title === 'Someone just left'),
      'alice told that bob left',
    );
    assert.deepEqual(alice.events.filter(([e]) => e === 'users').at(-1), ['users', [aliceLogin.user]]);
  });

  it('is disconnected by the server for a login without an ack', opts, async (t) => {
    const carol = oldClient(t);
    await once(carol.socket, 'connect');
    const reason = once(carol.socket, 'disconnect');
    carol.socket.emit('login', { name: 'carol', room: 'r1' });
    assert.deepEqual(await reason, ['io server disconnect']);
  });
});
