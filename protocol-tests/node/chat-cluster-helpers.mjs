// Helpers for chat-cluster.test.mjs: start chat-server processes clustered
// through one Redis, wait for their "listening" line, and SIGKILL them at the
// end. Not a test file itself (node --test only picks up *.test.mjs).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

/** How long a chat-server may take to print its "listening" line. */
export const START_MS = 15_000;

/** Path of the chat-server binary (CHAT_SERVER_BIN, or the release build). */
export function chatServerBinary() {
  return resolve(HERE, process.env.CHAT_SERVER_BIN || '../../target/release/chat-server');
}

const READY = /chat server listening on http:\/\/\S+?:(\d+)/;

/** Every chat-server child of this process, so that none outlives it. */
const allChildren = new Set();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: kill() is.
  process.on('exit', () => {
    for (const child of allChildren) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      for (const child of allChildren) child.kill('SIGKILL');
      process.exit(130);
    });
  }
}

/**
 * Registry of the chat-server processes of one test file. `start(label)` spawns
 * one on 127.0.0.1 with an ephemeral port and resolves with
 * `{ label, url, port, child, log, exited }` once it is listening;
 * `kill(node)` SIGKILLs one and waits for it to exit; `killAll()` kills the rest.
 */
export function chatServers(redisUrl) {
  installExitHook();
  const children = new Set();

  function start(label) {
    const cmd = chatServerBinary();
    if (!existsSync(cmd)) {
      return Promise.reject(new Error(
        `chat-server binary not found at ${cmd}: build it with ` +
        '`cargo build --release --bin chat-server` or set CHAT_SERVER_BIN',
      ));
    }
    const child = spawn(cmd, [], {
      env: {
        ...process.env,
        PORT: '0',
        HOST: '127.0.0.1',
        REDIS_URL: redisUrl,
        RUST_LOG: process.env.RUST_LOG || 'info',
        // no ANSI colours in the captured log
        NO_COLOR: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    allChildren.add(child);
    const log = [];
    const node = { label, url: null, port: null, child, log, exited: false, exit: null };
    child.on('exit', (code, signal) => {
      node.exited = true;
      node.exit = { code, signal };
      children.delete(child);
      allChildren.delete(child);
    });
    return new Promise((resolvePromise, reject) => {
      let stdoutBuf = '';
      const fail = (err) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`${err.message}\n--- node ${label} output ---\n${log.join('')}`));
      };
      const timer = setTimeout(() => {
        fail(new Error(`chat-server ${label} did not print its listening line within ${START_MS} ms`));
      }, START_MS);
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        log.push(chunk);
        if (node.url) return;
        stdoutBuf += chunk;
        const m = READY.exec(stdoutBuf);
        if (m) {
          clearTimeout(timer);
          node.port = Number(m[1]);
          // HOST is 127.0.0.1, whatever name the line shows
          node.url = `http://127.0.0.1:${node.port}`;
          resolvePromise(node);
        }
      });
      child.stderr.on('data', (chunk) => log.push(chunk));
      child.on('error', (err) => fail(err));
      child.on('exit', (code, signal) => {
        if (!node.url) fail(new Error(`chat-server ${label} exited (code ${code}, signal ${signal}) before it was ready`));
      });
    });
  }

  /** SIGKILL one node and wait until it is gone. */
  async function kill(node) {
    if (node.exited) return;
    const gone = new Promise((r) => node.child.once('exit', r));
    node.child.kill('SIGKILL');
    await gone;
  }

  async function killAll() {
    const waits = [];
    for (const child of children) {
      waits.push(new Promise((r) => child.once('exit', r)));
      child.kill('SIGKILL');
    }
    await Promise.all(waits);
  }

  return { start, kill, killAll };
}

/** The last `lines` lines a node wrote (stdout and stderr), for failure messages. */
export function logTail(node, lines = 40) {
  const all = node.log.join('').split('\n');
  return all.slice(-lines).join('\n');
}
