// Helpers for cluster.test.mjs: start cluster nodes (the Rust example binary and
// cluster_node.mjs) as child processes and wait for their "listening" line.
// Not a test file itself.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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
 * Registry of the node processes of one test file: `start(kind)` spawns one and
 * resolves with `{ kind, uid, url, child, log }` once it printed its ready line;
 * `killAll()` SIGKILLs every one still running.
 */
export function nodeProcesses(redisUrl) {
  const children = new Set();

  function start(kind) {
    let cmd;
    let args;
    if (kind === 'rust') {
      cmd = rustBinary();
      args = [];
      if (!existsSync(cmd)) {
        return Promise.reject(new Error(
          `Rust cluster node binary not found at ${cmd}: build it with ` +
          '`cargo build --release --example cluster_node` or set CLUSTER_NODE_BIN',
        ));
      }
    } else if (kind === 'node') {
      cmd = process.execPath;
      args = [NODE_SCRIPT];
    } else {
      return Promise.reject(new Error(`unknown node kind ${kind}`));
    }
    const child = spawn(cmd, args, {
      env: { ...process.env, PORT: '0', HOST: '127.0.0.1', REDIS_URL: redisUrl },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    const log = [];
    const node = { kind, uid: null, url: null, child, log, exited: false };
    child.on('exit', () => {
      node.exited = true;
      children.delete(child);
    });
    return new Promise((resolvePromise, reject) => {
      let stdoutBuf = '';
      const timer = setTimeout(() => {
        fail(new Error(`${kind} node did not print its listening line within ${START_MS} ms`));
      }, START_MS);
      const fail = (err) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`${err.message}\n--- ${kind} node output ---\n${log.join('')}`));
      };
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        log.push(chunk);
        if (node.url) return;
        stdoutBuf += chunk;
        const m = READY.exec(stdoutBuf);
        if (m) {
          clearTimeout(timer);
          node.uid = m[1];
          node.url = m[2];
          resolvePromise(node);
        }
      });
      child.stderr.on('data', (chunk) => log.push(chunk));
      child.on('error', (err) => fail(err));
      child.on('exit', (code, signal) => {
        if (!node.url) fail(new Error(`${kind} node exited (code ${code}, signal ${signal}) before it was ready`));
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
