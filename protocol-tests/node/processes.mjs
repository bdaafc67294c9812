// Child processes for the cluster test files: spawn a server, wait for the line
// that says it is listening, SIGKILL it. Not a test file itself (node --test
// only picks up *.test.mjs).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';

// Every child of any registry, so that none outlives this process (a leftover
// server would keep its Redis subscriptions and show up as a node in later runs).
const live = new Set();
let exitHookInstalled = false;

function killLive() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: child.kill() is.
  process.on('exit', killLive);
  // Handling a signal replaces Node's default exit, so exit ourselves.
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      killLive();
      process.exit(128 + constants.signals[signal]);
    });
  }
}

/**
 * Registry of the processes of one test file.
 *
 * `start({ label, name, cmd, args, env, hint, ready, timeoutMs, onReady })` spawns
 * `cmd` with `env` on top of ours and resolves with
 * `{ label, child, log, exited, exit }` once a stdout line matches `ready`;
 * `onReady(match, node)` adds what the line tells (url, port, ...) first.
 * `name` (default `label`) names the process in errors; `hint` is appended
 * when `cmd` does not exist. On a timeout, a spawn error or an early exit the
 * process is killed and the promise rejects with everything it wrote.
 *
 * `kill(node)` SIGKILLs one and waits for its exit; `killAll()` does that for
 * every one still running.
 */
export function processRegistry() {
  installExitHook();
  const children = new Set();

  function start({ label, name = label, cmd, args = [], env = {}, hint = '', ready, timeoutMs, onReady }) {
    if (!existsSync(cmd)) {
      return Promise.reject(new Error(`${name}: binary not found at ${cmd}${hint && `: ${hint}`}`));
    }
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    live.add(child);
    const log = [];
    const node = { label, child, log, exited: false, exit: null };
    child.on('exit', (code, signal) => {
      node.exited = true;
      node.exit = { code, signal };
      children.delete(child);
      live.delete(child);
    });
    return new Promise((resolvePromise, reject) => {
      let isReady = false;
      let stdoutBuf = '';
      const fail = (err) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`${err.message}\n--- ${name} output ---\n${log.join('')}`));
      };
      const timer = setTimeout(() => {
        fail(new Error(`${name} did not print its listening line within ${timeoutMs} ms`));
      }, timeoutMs);
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        log.push(chunk);
        if (isReady) return;
        // The line may arrive split across chunks.
        stdoutBuf += chunk;
        const m = ready.exec(stdoutBuf);
        if (m) {
          isReady = true;
          clearTimeout(timer);
          onReady?.(m, node);
          resolvePromise(node);
        }
      });
      child.stderr.on('data', (chunk) => log.push(chunk));
      child.on('error', fail);
      child.on('exit', (code, signal) => {
        if (!isReady) fail(new Error(`${name} exited (code ${code}, signal ${signal}) before it was ready`));
      });
    });
  }

  async function kill(node) {
    if (node.exited) return;
    const gone = new Promise((r) => node.child.once('exit', r));
    node.child.kill('SIGKILL');
    await gone;
  }

  async function killAll() {
    await Promise.all([...children].map((child) => {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      return gone;
    }));
  }

  return { start, kill, killAll };
}

/** The last `lines` lines a process wrote (stdout and stderr), for failure messages. */
export function logTail(node, lines = 40) {
  return node.log.join('').split('\n').slice(-lines).join('\n');
}
