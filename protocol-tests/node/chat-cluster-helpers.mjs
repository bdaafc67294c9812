// Helpers for chat-cluster.test.mjs: start chat-server processes clustered
// through one Redis, wait for their "listening" line, and SIGKILL them at the
// end. Not a test file itself (node --test only picks up *.test.mjs).
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processRegistry } from './processes.mjs';

export { logTail } from './processes.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/** How long a chat-server may take to print its "listening" line. */
export const START_MS = 15_000;

/** Path of the chat-server binary (CHAT_SERVER_BIN, or the release build). */
export function chatServerBinary() {
  return resolve(HERE, process.env.CHAT_SERVER_BIN || '../../target/release/chat-server');
}

const READY = /chat server listening on http:\/\/\S+?:(\d+)/;

/**
 * Registry of the chat-server processes of one test file. `start(label)` spawns
 * one on 127.0.0.1 with an ephemeral port and resolves with
 * `{ label, url, port, child, log, exited, exit }` once it is listening;
 * `kill(node)` SIGKILLs one and waits for it to exit; `killAll()` kills the rest.
 */
export function chatServers(redisUrl) {
  const registry = processRegistry();

  function start(label) {
    return registry.start({
      label,
      name: `chat-server ${label}`,
      cmd: chatServerBinary(),
      hint: 'build it with `cargo build --release --bin chat-server` or set CHAT_SERVER_BIN',
      env: {
        PORT: '0',
        HOST: '127.0.0.1',
        REDIS_URL: redisUrl,
        RUST_LOG: process.env.RUST_LOG || 'info',
        // no ANSI colours in the captured log
        NO_COLOR: '1',
      },
      ready: READY,
      timeoutMs: START_MS,
      onReady: ([, port], node) => {
        node.port = Number(port);
        // HOST is 127.0.0.1, whatever name the line shows
        node.url = `http://127.0.0.1:${node.port}`;
      },
    });
  }

  return { ...registry, start };
}
