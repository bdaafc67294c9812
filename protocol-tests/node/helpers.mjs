// Shared helpers for the interop tests. Not a test file itself (node --test
// only picks up *.test.mjs here).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';

/** Default wait for an expected event. Every test has a 10 s budget. */
export const WAIT_MS = 3000;
/** How long we listen for something that must NOT arrive. */
export const QUIET_MS = 300;
/** Per-test time budget handed to node:test. */
export const TEST_TIMEOUT = 10_000;

/** The three ways socket.io-client can be asked to connect. */
export const MODES = [
  { name: 'polling', opts: { transports: ['polling'] } },
  { name: 'websocket', opts: { transports: ['websocket'] } },
  // the socket.io-client default: HTTP long-polling first, then upgrade
  { name: 'default', opts: {} },
];

/** Server base URL from the environment, without a trailing slash. */
export function serverUrl(envName) {
  const value = process.env[envName];
  if (!value) {
    throw new Error(`${envName} is not set: point it at a running server, e.g. ${envName}=http://127.0.0.1:PORT`);
  }
  return value.replace(/\/+$/, '');
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Random ASCII letters and digits (valid chat room / user names). */
export function alnum(len = 8) {
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(len);
  let out = '';
  for (let i = 0; i < len; i++) out += chars[bytes[i] % chars.length];
  return out;
}

/**
 * Resolve with the argument list of the next `event` on `emitter`, or reject
 * after `ms`. `rejectOn` lists events that make the wait fail at once.
 */
export function once(emitter, event, { ms = WAIT_MS, rejectOn = [] } = {}) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      for (const [name, fn] of failers) emitter.off(name, fn);
    };
    const onEvent = (...args) => {
      cleanup();
      resolve(args);
    };
    const failers = rejectOn.map((name) => [
      name,
      (...args) => {
        cleanup();
        const detail = args[0] instanceof Error ? args[0].message : JSON.stringify(args);
        reject(new Error(`got '${name}' (${detail}) while waiting for '${event}'`));
      },
    ]);
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for '${event}'`));
    }, ms);
    emitter.on(event, onEvent);
    for (const [name, fn] of failers) emitter.on(name, fn);
  });
}

/** Wait for `connect` (fails on `connect_error`). */
export async function connected(socket, ms = WAIT_MS) {
  if (socket.connected) return;
  await once(socket, 'connect', { ms, rejectOn: ['connect_error'] });
}

/** Wait for `connect_error` (fails on `connect`) and return the error. */
export async function connectError(socket, ms = WAIT_MS) {
  const [err] = await once(socket, 'connect_error', { ms, rejectOn: ['connect'] });
  return err;
}

/**
 * Emit with an ack and resolve with ALL the ack arguments (emitWithAck only
 * hands back the first one). Rejects if no ack comes within `ms`.
 */
export function emitAck(socket, event, ...args) {
  return emitAckWithin(WAIT_MS, socket, event, ...args);
}

export function emitAckWithin(ms, socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(event, ...args, (err, ...ackArgs) => {
      if (err) reject(new Error(`no ack for '${event}' within ${ms} ms (${err.message})`));
      else resolve(ackArgs);
    });
  });
}

/** Record every argument list received for `event` (or for all events with '*'). */
export function record(socket, event) {
  const seen = [];
  if (event === '*') socket.onAny((name, ...args) => seen.push([name, ...args]));
  else socket.on(event, (...args) => seen.push(args));
  return seen;
}

/** Wait until `predicate()` is true, polling every 10 ms. */
export async function until(predicate, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Binary payloads may surface as Buffer, ArrayBuffer or a typed array: make them all Buffers. */
export function normalizeBinary(value) {
  if (Buffer.isBuffer(value)) return Buffer.from(value);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(normalizeBinary);
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = normalizeBinary(v);
    return out;
  }
  return value;
}

export function assertSameData(actual, expected, message) {
  assert.deepStrictEqual(normalizeBinary(actual), normalizeBinary(expected), message);
}

/**
 * Per-test client registry: every socket made through it is closed when the
 * test ends (pass or fail), so the process can exit.
 */
export function clients(t, baseUrl, modeOpts) {
  const sockets = [];
  const managers = [];
  t.after(() => {
    for (const s of sockets) {
      s.offAny();
      s.removeAllListeners();
      s.disconnect();
    }
    for (const m of managers) {
      m.reconnection(false);
      if (m.engine) m.engine.close();
    }
  });
  return {
    /** A socket on its own (new) Manager. `nsp` is a path such as '/custom'. */
    connect(nsp = '', opts = {}) {
      const socket = io(baseUrl + nsp, {
        forceNew: true,
        timeout: WAIT_MS,
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
        ...modeOpts,
        ...opts,
      });
      sockets.push(socket);
      managers.push(socket.io);
      return socket;
    },
    /** Track a socket created some other way (e.g. manager.socket()). */
    track(socket) {
      sockets.push(socket);
      if (!managers.includes(socket.io)) managers.push(socket.io);
      return socket;
    },
    trackManager(manager) {
      managers.push(manager);
      return manager;
    },
  };
}
