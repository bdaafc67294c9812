#!/usr/bin/env python3
"""Broadcast throughput of a Redis cluster of two nodes against one node.

The broadcast program (`examples/cluster_node.rs`: clients join the room named in their auth,
`bcast` sends `msg` to the room) runs three ways, in the same run, on the same load:

  memory     one node, rooms in memory (`benches/peers/ours`, no Redis)
  redis-1    one node on the Redis adapter (every broadcast is also published)
  redis-2    two nodes on one Redis; receivers alternate between them, the sender is on the
             first node, so half the deliveries cross Redis

Servers and redis-server are pinned to core 0, the load generator to core 1: on a 2-core
machine this measures what clustering costs per delivery (publish, Redis, decode on the other
node), not how much it scales. CPU is summed over every server process and redis-server.

    python3 benches/cluster.py                 # 1000 receivers, 64 B, saturated, 3 reps
    python3 benches/cluster.py --clients 2000 --size 1024 --reps 5
    python3 benches/cluster.py --baseline ../other-checkout   # adds base-redis-1, base-redis-2

`--baseline DIR` runs another checkout's `cluster_node` (built here too) beside ours, as the
setups `base-redis-1` and `base-redis-2`: a before/after comparison in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the main runner's helpers: pinning, ports, paths)

CLUSTER_NODE = bench.ROOT / "target" / "release" / "examples" / "cluster_node"
MEMORY_NODE = bench.BENCHES / "peers" / "ours" / "target" / "release" / "broadcast"
READY = re.compile(rb"listening on http://([0-9.]+:[0-9]+)")


def start(cmd: list[str], env: dict, log) -> tuple[subprocess.Popen, str]:
    """Starts a server pinned to the server core; returns it and its address."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log,
                            stdin=subprocess.DEVNULL, preexec_fn=bench.pinned(bench.SERVER_CORE))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = READY.search(line)
        if m:
            return proc, m.group(1).decode()
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not come up")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not come up")


def node_binary(setup: str, args) -> Path:
    if setup.startswith("base-"):
        return Path(args.baseline).resolve() / "target" / "release" / "examples" / "cluster_node"
    return CLUSTER_NODE


def one_run(setup: str, args, log) -> dict:
    env = dict(os.environ, HOST="127.0.0.1", PORT="0", RUST_LOG="warn")
    procs: list[subprocess.Popen] = []
    try:
        if setup == "memory":
            # The in-memory peer prints no address; give it a port.
            port = bench.free_port()
            p = subprocess.Popen([str(MEMORY_NODE)], env=dict(env, PORT=str(port)),
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 preexec_fn=bench.pinned(bench.SERVER_CORE))
            procs.append(p)
            wait_port(port)
            urls = [f"http://127.0.0.1:{port}"]
        else:
            rport = bench.free_port()
            redis = subprocess.Popen(
                ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                preexec_fn=bench.pinned(bench.SERVER_CORE))
            procs.append(redis)
            wait_port(rport)
            env["REDIS_URL"] = f"redis://127.0.0.1:{rport}/"
            urls = []
            for _ in range(2 if setup.endswith("redis-2") else 1):
                p, addr = start([str(node_binary(setup, args))], env, log)
                procs.append(p)
                urls.append(f"http://{addr}")
        time.sleep(0.5)
        cmd = [str(bench.LOADGEN), "broadcast", "--program", "broadcast",
               "--clients", str(args.clients), "--size", str(args.size), "--rate", "0",
               "--warmup", str(args.warmup), "--duration", str(args.duration),
               "--url", ",".join(urls),
               "--server-pid", ",".join(str(p.pid) for p in procs),
               "--label", f"cluster/{setup}"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           preexec_fn=bench.pinned(bench.GEN_CORE))
        line = (p.stdout.strip().splitlines() or ["{}"])[-1]
        report = json.loads(line)
    finally:
        stop(procs)
    win = report.get("window") or {}
    srv = report.get("server") or {}
    w0, w1 = srv.get("window_start") or {}, srv.get("window_end") or {}
    cpu = None
    if w0.get("sched_cpu_s") is not None and w1.get("sched_cpu_s") is not None:
        cpu = w1["sched_cpu_s"] - w0["sched_cpu_s"]
    delivered = win.get("delivered") or 0
    return {
        "deliveries_per_s": win.get("delivered_per_s"),
        "cpu_per_delivery_us": cpu / delivered * 1e6 if cpu is not None and delivered else None,
        "lost": report.get("lost"),
        "errors": report.get("errors"),
        "gen_cpu_frac": report.get("gen_cpu_frac"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--baseline", metavar="DIR", help="another checkout of this repository")
    args = ap.parse_args()
    bench.raise_nofile()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--example", "cluster_node"], cwd=bench.ROOT, check=True)
        if args.baseline:
            subprocess.run(["cargo", "build", "--release", "--example", "cluster_node"],
                           cwd=args.baseline, check=True)
        subprocess.run(["cargo", "build", "--release"], cwd=bench.BENCHES / "loadgen", check=True)
        subprocess.run(["cargo", "build", "--release"], cwd=bench.BENCHES / "peers" / "ours", check=True)
    setups = ["memory", "redis-1", "redis-2"]
    if args.baseline:
        setups += ["base-redis-1", "base-redis-2"]
    results: dict[str, list[dict]] = {s: [] for s in setups}
    logdir = bench.BENCHES / "results"
    logdir.mkdir(exist_ok=True)
    with open(logdir / "cluster-servers.log", "ab") as log:
        for rep in range(args.reps):
            order = setups[rep % len(setups):] + setups[:rep % len(setups)]
            for setup in order:
                r = one_run(setup, args, log)
                results[setup].append(r)
                print(json.dumps({"setup": setup, "rep": rep, **r}), flush=True)

    def med(setup: str, key: str):
        xs = [r[key] for r in results[setup] if r.get(key) is not None]
        return statistics.median(xs) if xs else None

    base = med("redis-1", "deliveries_per_s")
    print(f"\nbroadcast to {args.clients} receivers, {args.size} B, saturated; "
          f"medians of {args.reps} runs")
    print(f"{'setup':<12} {'deliveries/s':>14} {'vs redis-1':>11} {'CPU/delivery µs':>16} {'lost':>6}")
    for s in setups:
        d, c = med(s, "deliveries_per_s"), med(s, "cpu_per_delivery_us")
        ratio = f"{d / base:.2f}x" if d and base else "-"
        lost = sum((r.get("lost") or 0) for r in results[s])
        print(f"{s:<12} {d or 0:>14,.0f} {ratio:>11} {c or 0:>16.2f} {lost:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
