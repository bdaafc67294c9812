#!/usr/bin/env python3
"""The payload benchmark: binary and large payloads echoed with acks by this repository's server
("ours"), socketioxide and the npm socket.io server, under the same load, side by side.

    python3 benches/payloads.py --quick     # C=1 cells only, half the messages, 1 repetition
    python3 benches/payloads.py             # every cell, 3 repetitions (about 12 minutes)

The load is benches/payloads/load.mjs on the stock `socket.io-client` (binary attachments,
long-polling and WebSocket as Node clients send them). Every run of a cell starts a fresh echo
program (`echo` in each peer) pinned to core 0; the load runs pinned to core 1. The runner
samples the server's CPU time (utime+stime of /proc/PID/stat) when every client is connected and
warmed up and again when the last ack is in, and its peak RSS (VmHWM) at the end. Each cell runs
--reps times, the servers interleaved, and the table shows medians with each peer's ratio to ours.

Results go to benches/results/<time>-payloads-<mode>.jsonl as well; `--table FILE` prints the
table of a stored run again. Python 3.11 standard library only; the helpers are run.py's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the server, pinning, /proc and table helpers)

BENCHES = bench.BENCHES
ROOT = bench.ROOT
LOAD_DIR = BENCHES / "payloads"
SERVERS = ["ours", "socketioxide", "node"]
# Table order, with the optional "base" (see --baseline) beside ours.
COLUMNS = ["ours", "base", "socketioxide", "node"]
IN_FLIGHT = 4  # acked echoes outstanding per connection
RUN_TIMEOUT = 300.0  # seconds, per phase of one run

PAYLOADS = {
    "bin1k": "1 KiB Buffer",
    "bin64k": "64 KiB Buffer",
    "bin1m": "1 MiB Buffer",
    "str64k": "64 KiB string",
    "obj10": "object with 10 Buffers of 100 B",
}
# Messages per run (full mode; --quick sends half): about 1-4 s of load each.
COUNT = {
    ("bin1k", "websocket"): 12000, ("bin1k", "polling"): 4000,
    ("bin64k", "websocket"): 4000, ("bin64k", "polling"): 1000,
    ("bin1m", "websocket"): 500, ("bin1m", "polling"): 150,
    ("str64k", "websocket"): 4000, ("str64k", "polling"): 1200,
    ("obj10", "websocket"): 5000, ("obj10", "polling"): 2000,
}


@dataclass
class Cell:
    transport: str
    conns: int
    payload: str
    count: int

    @property
    def key(self) -> str:
        return f"{self.transport}-{self.conns}-{self.payload}"

    @property
    def title(self) -> str:
        return f"{self.transport}, C={self.conns}, {PAYLOADS[self.payload]}"


def cells_for(mode: str) -> list[Cell]:
    conns = [1] if mode == "quick" else [1, 50]
    scale = 2 if mode == "quick" else 1
    return [Cell(t, c, p, COUNT[(p, t)] // scale)
            for t in ("websocket", "polling") for c in conns for p in PAYLOADS]


# ---------------------------------------------------------------------------------------------
# Running


def sample(pid: int) -> dict:
    """utime+stime (s) and RSS from run.py's sampler, plus VmHWM (KiB) and the scheduler's run
    time summed over the threads (s, nanosecond resolution)."""
    out = bench.proc_sample(pid)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["hwm_kb"] = int(line.split()[1])
        total = 0.0
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "sched").read_text().splitlines():
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.split(":")[1]) / 1e3
        out["sched_cpu_s"] = total
    except (OSError, ValueError):
        pass
    return out


def lines_of(stream) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def next_line(q: queue.Queue) -> str | None:
    try:
        return q.get(timeout=RUN_TIMEOUT)
    except queue.Empty:
        raise RuntimeError("the load timed out") from None


def run_one(cell: Cell, server: str, logdir: Path) -> dict:
    bench.wait_quiet(QUIET_WAIT)
    busy0 = bench.machine_busy()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    srv = bench.Server(server, "echo", logdir / f"{server}-echo.log")
    load = None
    report: dict = {}
    try:
        pid = srv.proc.pid
        start = sample(pid)
        with open(logdir / "load.log", "ab") as err:
            load = subprocess.Popen(
                ["node", str(LOAD_DIR / "load.mjs"), "--url", f"http://127.0.0.1:{srv.port}",
                 "--transport", cell.transport, "--conns", str(cell.conns),
                 "--payload", cell.payload, "--count", str(cell.count),
                 "--window", str(IN_FLIGHT)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                preexec_fn=bench.pinned(bench.GEN_CORE), cwd=LOAD_DIR)
        out = lines_of(load.stdout)
        line = next_line(out)
        if line == "ready":
            before = sample(pid)
            load.stdin.write("go\n")
            load.stdin.flush()
            line = next_line(out)
            after = sample(pid)
            report["server"] = {"start": start, "before": before, "after": after}
        try:
            report.update(json.loads(line or "{}"))
        except json.JSONDecodeError:
            report["error"] = f"the load printed {line[:200]!r}"
        if not line:
            report["error"] = f"the load printed no result (exit {load.wait(10)})"
        report["server_alive"] = srv.proc.poll() is None
    except RuntimeError as e:
        report["error"] = str(e)
    finally:
        if load is not None and load.poll() is None:
            try:
                load.wait(timeout=10)
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait()
        srv.stop()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    wall = max(1e-9, time.monotonic() - t0)
    foreign = max(0.0, bench.machine_busy() - busy0 - ours_cpu)
    report["foreign_cpu_frac"] = foreign / wall
    return report


def derive(cell: Cell, r: dict) -> dict:
    if r.get("error"):
        return {"error": r["error"]}
    s = r.get("server", {})
    b, a = s.get("before", {}), s.get("after", {})
    n = max(1, r.get("count", 0))
    out = {"msgs_per_s": r.get("msgs_per_s"), "load_cpu_frac": r.get("load_cpu_frac")}
    if "cpu_s" in a and "cpu_s" in b:
        out["cpu_us"] = (a["cpu_s"] - b["cpu_s"]) * 1e6 / n
    if "sched_cpu_s" in a and "sched_cpu_s" in b:
        out["sched_us"] = (a["sched_cpu_s"] - b["sched_cpu_s"]) * 1e6 / n
    if "hwm_kb" in a:
        out["hwm_mib"] = a["hwm_kb"] / 1024
    out["load_busy"] = (r.get("load_cpu_frac") or 0) > 0.9
    out["problems"] = (r.get("bad", 0) + r.get("errors", 0) + (r.get("count", 0) < cell.count)
                       + (not r.get("server_alive", True)))
    out["noisy"] = r.get("foreign_cpu_frac", 0) > 0.1
    return out


# ---------------------------------------------------------------------------------------------
# The table

METRICS = [("cpu_us", "server CPU per message (µs)"), ("msgs_per_s", "messages per second"),
           ("hwm_mib", "peak RSS (MiB)")]


def table(cells: list[Cell], results: dict) -> str:
    """results[cell.key][server] = list of derived dicts."""
    servers = [s for s in COLUMNS if any(results.get(c.key, {}).get(s) for c in cells)]
    head = "| cell | metric | " + " | ".join(
        s if s == "ours" else f"{s} | ×ours" for s in servers) + " |"
    lines = [head, "|" + "---|" * (2 + sum(1 if s == "ours" else 2 for s in servers))]
    for c in cells:
        per = {s: bench.usable(results.get(c.key, {}).get(s, [])) for s in servers}
        if not any(per.values()):
            continue
        marks = {}
        for s in servers:
            runs = results.get(c.key, {}).get(s, [])
            marks[s] = (("‡" if any(r.get("load_busy") for r in runs) else "")
                        + ("!" if any(r.get("problems") or r.get("error") for r in runs) else "")
                        + ("≈" if any(r.get("noisy") for r in per[s]) else ""))
        n = "/".join(str(len(per[s])) for s in servers)
        for i, (metric, label) in enumerate(METRICS):
            ours = bench.median([r.get(metric) for r in per.get("ours", [])])
            row = [f"{c.title} (n={n})" if i == 0 else "", label]
            for s in servers:
                v = bench.median([r.get(metric) for r in per[s]])
                shown = bench.fmt(v) + (marks[s] if i == 0 else "")
                if s == "ours":
                    row.append(shown)
                else:
                    ratio = v / ours if (v is not None and ours) else None
                    row += [shown, "–" if ratio is None else f"{ratio:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("n = repetitions behind the medians, per server in column order. ×ours = peer ÷ "
                 "ours (CPU and RSS: above 1, the peer uses more; messages/s: above 1, the peer "
                 "does more). ‡ = the load used >90% of its core in some repetition (a limit of "
                 "the client, not the server). ! = wrong echoes, lost connections or a failed run. "
                 "≈ = other work on the machine used >10% of a core.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def build(servers: list[str]) -> None:
    def sh(cmd: list[str], cwd: Path) -> None:
        shown = cwd.relative_to(ROOT) if cwd.is_relative_to(ROOT) else cwd
        print(f"$ (cd {shown}; {' '.join(cmd)})", flush=True)
        subprocess.run(cmd, cwd=cwd, check=True)

    if "ours" in servers:
        sh(["cargo", "build", "--release", "--quiet", "--bin", "echo"], BENCHES / "peers" / "ours")
    if "base" in servers:
        sh(["cargo", "build", "--release", "--quiet", "--bin", "echo"],
           bench.BASELINE / "benches" / "peers" / "ours")
    if "socketioxide" in servers:
        sh(["cargo", "build", "--release", "--quiet", "--bin", "echo"],
           BENCHES / "peers" / "socketioxide")
    for d in [LOAD_DIR] + ([BENCHES / "peers" / "node"] if "node" in servers else []):
        if not (d / "node_modules").is_dir():
            sh(["npm", "ci", "--silent"], d)


QUIET_WAIT = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="C=1 cells only, half the messages, 1 repetition")
    ap.add_argument("--reps", type=int, help="repetitions of each cell (default 3, quick 1)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    ap.add_argument("--only", default="", help="run only cells whose key (such as "
                    "websocket-50-bin1m) contains one of these (comma-separated)")
    ap.add_argument("--no-build", action="store_true", help="use the programs as they are")
    ap.add_argument("--quiet-wait", type=float, default=10.0, metavar="S",
                    help="before each run, wait up to S seconds for the machine to be idle")
    ap.add_argument("--table", metavar="FILE", help="print the table of a stored results file")
    ap.add_argument("--baseline", metavar="DIR", type=Path,
                    help="another checkout of this repository, run as the server 'base' "
                    "(add it to --servers)")
    args = ap.parse_args()
    bench.BASELINE = args.baseline.resolve() if args.baseline else None
    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait

    if args.table:
        stored = [json.loads(l) for l in Path(args.table).read_text().splitlines() if l.strip()]
        meta, results = stored[0], {}
        for rec in stored[1:]:
            results.setdefault(rec["cell"], {}).setdefault(rec["server"], []).append(rec["derived"])
        cells = [c for c in cells_for(meta["mode"]) if c.key in results]
        print(f"payloads {meta['mode']} run of {meta['date']} on {meta['machine']}\n")
        print(table(cells, results))
        return 0

    mode = "quick" if args.quick else "full"
    reps = args.reps or (1 if args.quick else 3)
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS) - ({"base"} if bench.BASELINE else set())
    if unknown:
        ap.error(f"unknown servers: {', '.join(sorted(unknown))}")
    bench.raise_nofile()
    if not args.no_build:
        build(servers)
    try:  # the runner's own work stays off the server's core
        os.sched_setaffinity(0, {bench.GEN_CORE})
    except OSError:
        pass
    cells = cells_for(mode)
    if args.only:
        cells = [c for c in cells if any(w in c.key for w in args.only.split(","))]

    stamp = dt.datetime.now(dt.timezone.utc)
    outdir = BENCHES / "results"
    outdir.mkdir(exist_ok=True)
    logdir = outdir / f"logs-{stamp:%Y%m%dT%H%M%SZ}-payloads"
    logdir.mkdir()
    out_path = outdir / f"{stamp:%Y%m%dT%H%M%SZ}-payloads-{mode}.jsonl"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    meta = {"mode": mode, "date": stamp.isoformat(timespec="seconds"), "machine": bench.machine(),
            "commit": head, "reps": reps, "servers": servers}
    results: dict = {}
    t_start = time.monotonic()
    with open(out_path, "w") as out:
        out.write(json.dumps(meta) + "\n")
        for rep in range(reps):
            for i, cell in enumerate(cells):
                # Interleave the servers, rotating who goes first.
                k = (rep + i) % len(servers)
                for server in servers[k:] + servers[:k]:
                    t = time.monotonic()
                    try:
                        report = run_one(cell, server, logdir)
                    except RuntimeError as e:  # the server did not come up
                        report = {"error": str(e)}
                    derived = derive(cell, report)
                    results.setdefault(cell.key, {}).setdefault(server, []).append(derived)
                    out.write(json.dumps({"cell": cell.key, "server": server, "rep": rep,
                                          "derived": derived, "report": report}) + "\n")
                    out.flush()
                    brief = ", ".join(f"{m}={bench.fmt(derived.get(m))}"
                                      for m in ("cpu_us", "msgs_per_s", "hwm_mib"))
                    flags = ("".join(f" {f.upper()}" for f in ("load_busy", "noisy")
                                     if derived.get(f))
                             + (f" PROBLEMS={derived['problems']}" if derived.get("problems") else "")
                             + (f" ERROR {derived['error']}" if derived.get("error") else ""))
                    print(f"[{time.monotonic()-t_start:6.0f}s] rep {rep+1} {cell.key:22} "
                          f"{server:12} {time.monotonic()-t:5.1f}s  {brief}{flags}", flush=True)

    print(f"\npayloads {mode} run of {meta['date']} on {meta['machine']}, commit {head}\n")
    print(table(cells, results))
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
