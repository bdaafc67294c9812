// Cluster interop tests: Rust nodes (examples/cluster_node.rs) and Node.js nodes
// (cluster_node.mjs, npm socket.io + @socket.io/redis-adapter) on one Redis must
// behave as one Socket.IO server. The test starts its own nodes on free ports.
//
// Needs REDIS_URL (a running Redis; the nodes use the default `socket.io` key) and
// the Rust binary: CLUSTER_NODE_BIN, default ../../target/release/examples/cluster_node
// (`cargo build --release --example cluster_node`). See README.md, "Cluster".
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  QUIET_MS,
  WAIT_MS,
  alnum,
  assertSameData,
  clients,
  connected,
  emitAck,
  emitAckWithin,
  once,
  record,
  sleep,
  until,
} from './helpers.mjs';
import { nodeProcesses } from './cluster-helpers.mjs';

const REDIS_URL = process.env.REDIS_URL;
const TEST_TIMEOUT = 20_000;
const opts = { timeout: TEST_TIMEOUT };

/** Transport modes for the client-facing tests (the default mode adds nothing across nodes). */
const MODES = [
  { name: 'polling', opts: { transports: ['polling'] } },
  { name: 'websocket', opts: { transports: ['websocket'] } },
];

/** Room names are unique per run, so runs sharing one Redis do not see each other. */
const RUN = `cl${alnum(8)}`;
let roomCounter = 0;
const newRoom = (label) => `${RUN}-${label}-${++roomCounter}`;

/** Connect to `node` with auth `{ room }` and wait for `connect`. */
async function joinAs(c, room, extra = {}) {
  const socket = c.connect('', { auth: room === undefined ? {} : { room }, ...extra });
  await connected(socket);
  return socket;
}

/** Ask `ids` of `room` through `socket`; resolves with the sorted id list. */
async function ids(socket, room, ms = WAIT_MS) {
  const [answer] = await emitAckWithin(ms, socket, 'ids', room).catch((err) => {
    throw new Error(`ids(${room}) via ${socket.io.uri}: ${err.message}`);
  });
  assert.ok(Array.isArray(answer), `ids(${room}) answered ${JSON.stringify(answer)}`);
  return [...answer].sort();
}

/** Ask `ids` repeatedly until it equals `expected` (for effects that have no ack, like `join`). */
async function idsBecome(socket, room, expected, what, ms = 5000) {
  const want = [...expected].sort();
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await ids(socket, room);
    if (JSON.stringify(last) === JSON.stringify(want)) return;
    if (Date.now() > deadline) {
      assert.fail(`${what}: ids(${room}) is ${JSON.stringify(last)}, expected ${JSON.stringify(want)}`);
    }
    await sleep(50);
  }
}

const isBinary = (v) => Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v);

/** Keep only the `ask` answers from nodes this file started (other processes may share Redis). */
function answersFrom(answers, known) {
  assert.ok(Array.isArray(answers), `ask answered ${JSON.stringify(answers)}`);
  return answers
    .filter((a) => a && known.includes(a.node))
    .sort((x, y) => String(x.node).localeCompare(String(y.node)));
}

if (!REDIS_URL) {
  const line = '#'.repeat(78);
  console.error(`${line}\n# SKIPPING cluster.test.mjs: REDIS_URL is not set.\n` +
    '# Set REDIS_URL=redis://HOST:PORT to run the Rust/Node cluster interop tests.\n' +
    `${line}`);
  describe('cluster (Rust + Node nodes on Redis)', () => {
    it('needs REDIS_URL', { skip: 'REDIS_URL is not set: cluster tests NOT run' }, () => {});
  });
} else {
  describe('cluster (Rust + Node nodes on Redis)', () => {
    const procs = nodeProcesses(REDIS_URL);
    /** The two long-lived nodes: one Rust, one Node. */
    let R;
    let N;

    before(async () => {
      [R, N] = await Promise.all([procs.start('rust'), procs.start('node')]);
      // let both subscriptions settle before the first cross-node request
      await sleep(200);
    }, { timeout: 30_000 });

    after(async () => {
      await procs.killAll();
    });

    it('both nodes answer GET / with 200', opts, async () => {
      for (const node of [R, N]) {
        const res = await fetch(`${node.url}/`);
        assert.equal(res.status, 200, `${node.kind} node ${node.url}`);
        await res.arrayBuffer();
      }
    });

    it('a Date broadcast from the Node node reaches clients on both nodes as its ISO string', opts, async (t) => {
      const onR = clients(t, R.url, MODES[0].opts);
      const onN = clients(t, N.url, MODES[0].opts);
      const room = newRoom('date');
      const a = await joinAs(onR, room);
      const b = await joinAs(onN, room);
      const got = { a: record(a, 'msg'), b: record(b, 'msg') };
      // notepack's three timestamp sizes: seconds only, with milliseconds, before the epoch
      const times = [0, 1_700_000_000_123, -1];
      for (const ms of times) b.emit('bcastDate', room, ms);
      await until(() => got.a.length === times.length && got.b.length === times.length, 'the dated msgs on both nodes');
      const want = times.map((ms) => [{ at: new Date(ms).toISOString() }]);
      assert.deepStrictEqual(got.b, want, 'client on the Node node');
      assert.deepStrictEqual(got.a, want, 'client on the Rust node');
    });

    for (const mode of MODES) {
      describe(`over ${mode.name}`, () => {
        it('bcast from either node reaches the room on both nodes (JSON and binary), not others', opts, async (t) => {
          const onR = clients(t, R.url, mode.opts);
          const onN = clients(t, N.url, mode.opts);
          const room = newRoom('bcast');
          const a = await joinAs(onR, room);
          const b = await joinAs(onN, room);
          const outR = await joinAs(onR, newRoom('outside'));
          const outN = await joinAs(onN, undefined);
          const got = { a: record(a, 'msg'), b: record(b, 'msg'), outR: record(outR, 'msg'), outN: record(outN, 'msg') };

          // JSON, sent from the Rust node, then from the Node node
          const json = { text: 'héllo ✓', n: 42, list: [1, null, true, { deep: 'x' }] };
          a.emit('bcast', room, json);
          await until(() => got.a.length === 1 && got.b.length === 1, 'msg (JSON, sent via Rust) on both nodes');
          assert.deepStrictEqual(got.a[0], [json]);
          assert.deepStrictEqual(got.b[0], [json]);

          b.emit('bcast', room, 'from node');
          await until(() => got.a.length === 2 && got.b.length === 2, 'msg (sent via Node) on both nodes');
          assert.deepStrictEqual(got.a[1], ['from node']);
          assert.deepStrictEqual(got.b[1], ['from node']);

          // binary nested in an object, from each side
          const bin = { data: Buffer.from([1, 2, 3]), label: 'bin', more: [Buffer.from([0, 255])] };
          for (const [sender, label] of [[a, 'Rust'], [b, 'Node']]) {
            const before = got.a.length;
            sender.emit('bcast', room, bin);
            await until(() => got.a.length === before + 1 && got.b.length === before + 1, `binary msg sent via ${label} on both nodes`);
            for (const [who, list] of [['client on Rust', got.a], ['client on Node', got.b]]) {
              const [payload] = list[before];
              assert.ok(isBinary(payload.data), `${who}, sent via ${label}: data is not binary: ${JSON.stringify(payload.data)}`);
              assert.ok(isBinary(payload.more[0]), `${who}, sent via ${label}: more[0] is not binary`);
              assertSameData(payload, bin, `${who}, sent via ${label}`);
            }
          }

          // a top-level Buffer payload
          const before = got.a.length;
          b.emit('bcast', room, Buffer.from('top level'));
          await until(() => got.a.length === before + 1 && got.b.length === before + 1, 'top-level binary msg on both nodes');
          for (const list of [got.a, got.b]) {
            assert.ok(isBinary(list[before][0]), 'top-level payload is not binary');
            assertSameData(list[before][0], Buffer.from('top level'));
          }

          await sleep(QUIET_MS);
          assert.deepStrictEqual(got.outR, [], 'client on the Rust node outside the room got msg');
          assert.deepStrictEqual(got.outN, [], 'client on the Node node outside the room got msg');
          assert.equal(got.a.length, 5);
          assert.equal(got.b.length, 5);
        });

        it('ids on either node lists the sockets of both nodes in the room', opts, async (t) => {
          const onR = clients(t, R.url, mode.opts);
          const onN = clients(t, N.url, mode.opts);
          const room = newRoom('ids');
          const other = newRoom('ids-other');
          const a1 = await joinAs(onR, room);
          const a2 = await joinAs(onR, room);
          const b1 = await joinAs(onN, room);
          const c = await joinAs(onN, other);
          const want = [a1.id, a2.id, b1.id].sort();
          assert.deepStrictEqual(await ids(a1, room), want, 'ids asked on the Rust node');
          assert.deepStrictEqual(await ids(b1, room), want, 'ids asked on the Node node');
          assert.deepStrictEqual(await ids(a1, other), [c.id], 'ids of the other room asked on the Rust node');
          assert.deepStrictEqual(await ids(c, other), [c.id], 'ids of the other room asked on the Node node');
          assert.deepStrictEqual(await ids(a1, newRoom('empty')), [], 'ids of an empty room (Rust)');
          assert.deepStrictEqual(await ids(b1, newRoom('empty')), [], 'ids of an empty room (Node)');

          // a socket that leaves (disconnects) is no longer listed
          const gone = once(b1, 'disconnect');
          b1.disconnect();
          await gone;
          await idsBecome(a1, room, [a1.id, a2.id], 'after the Node client disconnected');
          await idsBecome(c, room, [a1.id, a2.id], 'after the Node client disconnected (asked on Node)');
        });

        it('join / leave from one node moves sockets on the other', opts, async (t) => {
          const onR = clients(t, R.url, mode.opts);
          const onN = clients(t, N.url, mode.opts);
          const room = newRoom('jl');
          const extra = newRoom('jl-extra');
          const a = await joinAs(onR, room);
          const b = await joinAs(onN, room);
          const cR = await joinAs(onR, newRoom('jl-ctl'));
          const cN = await joinAs(onN, newRoom('jl-ctl'));
          const got = { a: record(a, 'msg'), b: record(b, 'msg'), cR: record(cR, 'msg'), cN: record(cN, 'msg') };

          // join asked on the Rust node
          cR.emit('join', room, extra);
          await idsBecome(cN, extra, [a.id, b.id], 'after join asked on the Rust node (ids via Node)');
          assert.deepStrictEqual(await ids(cR, extra), [a.id, b.id].sort(), 'after join (ids via Rust)');
          cN.emit('bcast', extra, 'to extra');
          await until(() => got.a.length === 1 && got.b.length === 1, 'msg to the joined room on both nodes');
          assert.deepStrictEqual(got.a, [['to extra']]);
          assert.deepStrictEqual(got.b, [['to extra']]);

          // leave asked on the Node node
          cN.emit('leave', room, extra);
          await idsBecome(cR, extra, [], 'after leave asked on the Node node (ids via Rust)');
          assert.deepStrictEqual(await ids(cN, extra), [], 'after leave (ids via Node)');
          cR.emit('bcast', extra, 'after leave');
          // still members of their own room
          cR.emit('bcast', room, 'still in room');
          await until(() => got.a.length === 2 && got.b.length === 2, 'msg to the original room');
          await sleep(QUIET_MS);
          assert.deepStrictEqual(got.a, [['to extra'], ['still in room']]);
          assert.deepStrictEqual(got.b, [['to extra'], ['still in room']]);

          // and the other way round: join asked on Node, leave asked on Rust
          cN.emit('join', room, extra);
          await idsBecome(cR, extra, [a.id, b.id], 'after join asked on the Node node (ids via Rust)');
          cR.emit('leave', room, extra);
          await idsBecome(cN, extra, [], 'after leave asked on the Rust node (ids via Node)');
          assert.deepStrictEqual(got.cR, []);
          assert.deepStrictEqual(got.cN, []);
        });

        it('kick from one node disconnects the room on the other (io server disconnect)', opts, async (t) => {
          const onR = clients(t, R.url, mode.opts);
          const onN = clients(t, N.url, mode.opts);
          for (const [label, kicker, victimsVia] of [['Node', 'N', 'R'], ['Rust', 'R', 'N']]) {
            const room = newRoom('kick');
            const a = await joinAs(onR, room);
            const b = await joinAs(onN, room);
            const ctl = await joinAs(kicker === 'N' ? onN : onR, newRoom('kick-ctl'));
            const stay = await joinAs(victimsVia === 'R' ? onR : onN, newRoom('kick-stay'));
            const reasons = { a: once(a, 'disconnect'), b: once(b, 'disconnect') };
            const stayDisc = record(stay, 'disconnect');
            const ctlDisc = record(ctl, 'disconnect');
            ctl.emit('kick', room);
            const [[ra], [rb]] = await Promise.all([reasons.a, reasons.b]).catch((err) => {
              throw new Error(`kick asked on the ${label} node: ${err.message}`);
            });
            assert.equal(ra, 'io server disconnect', `client on Rust, kick via ${label}`);
            assert.equal(rb, 'io server disconnect', `client on Node, kick via ${label}`);
            await idsBecome(ctl, room, [], `room empty after kick via ${label}`);
            await sleep(QUIET_MS);
            assert.deepStrictEqual(stayDisc, [], 'a client outside the room was disconnected');
            assert.deepStrictEqual(ctlDisc, [], 'the kicking client was disconnected');
            assert.equal(a.connected, false);
            assert.equal(b.connected, false);
          }
        });
      });
    }

    it('ask: server-side emit with ack, Rust -> Node and Node -> Rust', opts, async (t) => {
      const onR = clients(t, R.url, { transports: ['websocket'] });
      const onN = clients(t, N.url, { transports: ['polling'] });
      const a = await joinAs(onR, undefined);
      const b = await joinAs(onN, undefined);
      const known = [R.uid, N.uid];
      const payload = { q: 'hi ✓', n: [1, 2, { x: null }] };

      const [fromR] = await emitAck(a, 'ask', payload);
      assert.deepStrictEqual(answersFrom(fromR, known), [{ node: N.uid, echo: payload }], `ask via Rust answered ${JSON.stringify(fromR)}`);

      const [fromN] = await emitAck(b, 'ask', 'plain string');
      assert.deepStrictEqual(answersFrom(fromN, known), [{ node: R.uid, echo: 'plain string' }], `ask via Node answered ${JSON.stringify(fromN)}`);

      // several in flight at once, both ways
      const many = await Promise.all([
        ...[1, 2, 3].map((i) => emitAck(a, 'ask', { i })),
        ...[4, 5, 6].map((i) => emitAck(b, 'ask', { i })),
      ]);
      many.forEach(([answers], k) => {
        const i = k + 1;
        const other = i <= 3 ? N.uid : R.uid;
        assert.deepStrictEqual(answersFrom(answers, known), [{ node: other, echo: { i } }], `ask #${i}`);
      });
    });

    it('three nodes (2 Rust + 1 Node): bcast reaches all, ids and ask see all', opts, async (t) => {
      const R2 = await procs.start('rust');
      t.after(() => procs.kill(R2));
      await sleep(200);
      const room = newRoom('three');
      const a = await joinAs(clients(t, R.url, { transports: ['polling'] }), room);
      const b = await joinAs(clients(t, N.url, { transports: ['websocket'] }), room);
      const c = await joinAs(clients(t, R2.url, {}), room);
      const got = [a, b, c].map((s) => record(s, 'msg'));

      for (const [sender, label] of [[c, 'second Rust'], [b, 'Node'], [a, 'first Rust']]) {
        const n = got[0].length;
        sender.emit('bcast', room, { from: label, bin: Buffer.from([7, 7]) });
        await until(() => got.every((g) => g.length === n + 1), `msg sent via the ${label} node on all three nodes`);
        for (const g of got) assertSameData(g[n], [{ from: label, bin: Buffer.from([7, 7]) }]);
      }

      const want = [a.id, b.id, c.id].sort();
      for (const [s, label] of [[a, 'first Rust'], [b, 'Node'], [c, 'second Rust']]) {
        assert.deepStrictEqual(await ids(s, room), want, `ids via the ${label} node`);
      }

      const known = [R.uid, N.uid, R2.uid];
      const by = (...uids) => uids.map((node) => ({ node, echo: 'x' })).sort((p, q) => p.node.localeCompare(q.node));
      assert.deepStrictEqual(answersFrom((await emitAck(a, 'ask', 'x'))[0], known), by(N.uid, R2.uid), 'ask via the first Rust node');
      assert.deepStrictEqual(answersFrom((await emitAck(b, 'ask', 'x'))[0], known), by(R.uid, R2.uid), 'ask via the Node node');
      assert.deepStrictEqual(answersFrom((await emitAck(c, 'ask', 'x'))[0], known), by(R.uid, N.uid), 'ask via the second Rust node');

      // join from the Node node reaches sockets on both Rust nodes
      const extra = newRoom('three-extra');
      b.emit('join', room, extra);
      await idsBecome(c, extra, want, 'join via Node seen from the second Rust node');
    });

    it('a killed Node node is forgotten: ids and ask on the Rust node answer promptly', opts, async (t) => {
      const N2 = await procs.start('node');
      t.after(() => procs.kill(N2));
      await sleep(200);
      const room = newRoom('killed');
      const a = await joinAs(clients(t, R.url, { transports: ['websocket'] }), room);
      const k = await joinAs(clients(t, N2.url, { transports: ['websocket'], reconnection: false }), room);
      assert.deepStrictEqual(await ids(a, room), [a.id, k.id].sort(), 'before the kill');
      const knownBefore = [R.uid, N.uid, N2.uid];
      assert.deepStrictEqual(
        answersFrom((await emitAck(a, 'ask', 1))[0], knownBefore),
        [{ node: N.uid, echo: 1 }, { node: N2.uid, echo: 1 }].sort((p, q) => p.node.localeCompare(q.node)),
        'ask before the kill',
      );

      const gone = once(k, 'disconnect', { ms: 5000 });
      await procs.kill(N2);
      await gone;

      let started = Date.now();
      const left = await ids(a, room, 2000);
      const idsMs = Date.now() - started;
      assert.deepStrictEqual(left, [a.id], 'ids after the kill');
      assert.ok(idsMs < 2000, `ids after the kill took ${idsMs} ms (waiting for the dead node?)`);

      started = Date.now();
      const [answers] = await emitAck(a, 'ask', 2);
      const askMs = Date.now() - started;
      assert.deepStrictEqual(answersFrom(answers, knownBefore), [{ node: N.uid, echo: 2 }], 'ask after the kill');
      assert.ok(askMs < 2000, `ask after the kill took ${askMs} ms (waiting for the dead node?)`);
    });
  });
}
