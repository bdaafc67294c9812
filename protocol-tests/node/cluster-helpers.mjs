// Helpers for cluster.test.mjs: start cluster nodes (the Rust example binary and
// cluster_node.mjs) as child processes and wait for their "listening" line.
// Not a test file itself.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processRegistry } from './processes.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/** How long a node may take to print its "listening" line. */
export const START_MS = 10_000;

/** Path of the Rust cluster node binary (CLUSTER_NODE_BIN, or the release build). */
export function rustBinary() {
  return resolve(HERE, process.env.CLUSTER_NODE_BIN || '../../target/release/examples/cluster_node');
}

export const NODE_SCRIPT = resolve(HERE, 'cluster_node.mjs');

const READY = /cluster node (\S+) listening on (http:\/\/\S+)/;

/**
 * Registry of the node processes of one test file: `start(kind)` ('rust' or
 * 'node') spawns one and resolves with `{ kind, uid, url, child, log, exited }`
 * once it printed its ready line; `kill(node)` SIGKILLs one and waits for it;
 * `killAll()` SIGKILLs every one still running.
 */
export function nodeProcesses(redisUrl) {
  const registry = processRegistry();

  function start(kind) {
    const commands = {
      rust: {
        cmd: rustBinary(),
        hint: 'build it with `cargo build --release --example cluster_node` or set CLUSTER_NODE_BIN',
      },
      node: { cmd: process.execPath, args: [NODE_SCRIPT] },
    };
    if (!commands[kind]) return Promise.reject(new Error(`unknown node kind ${kind}`));
    return registry.start({
      ...commands[kind],
      label: `${kind} node`,
      env: { PORT: '0', HOST: '127.0.0.1', REDIS_URL: redisUrl },
      ready: READY,
      timeoutMs: START_MS,
      onReady: ([, uid, url], node) => Object.assign(node, { kind, uid, url }),
    });
  }

  return { ...registry, start };
}
