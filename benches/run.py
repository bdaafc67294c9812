#!/usr/bin/env python3
"""Runs the Socket.IO benchmarks side by side: this repository's server ("ours"), socketioxide and
the npm socket.io server, on the same load, and prints one table of medians with each peer's
ratio to ours.

    python3 benches/run.py --quick      # a few minutes, small N
    python3 benches/run.py --full       # every cell of the issue, long

Every run of a cell starts a fresh server pinned to core 0; the load generator runs pinned to
core 1. The generator samples the server's CPU time and memory from /proc at each phase boundary
(connect, login, measurement window); the runner samples it before and after as well. Each cell
runs --reps times (default 3), the servers interleaved, and the table shows medians.

Results go to benches/results/<time>.jsonl as well; `--table FILE` prints the table of a stored
run again. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
LOADGEN = BENCHES / "loadgen" / "target" / "release" / "loadgen"
SERVER_CORE = 0
GEN_CORE = 1
SERVERS = ["ours", "socketioxide", "node"]
# Table order, with the optional "base" (see --baseline) beside ours.
COLUMNS = ["ours", "base", "socketioxide", "node"]


# ---------------------------------------------------------------------------------------------
# Servers


# `--baseline DIR`: another checkout of this repository, built by the runner too, run as the
# server "base" (a before/after comparison of our own server in one run).
BASELINE: Path | None = None


def server_command(server: str, program: str) -> list[str]:
    if server in ("ours", "base"):
        root = ROOT if server == "ours" else BASELINE
        if root is None:
            raise ValueError("the server 'base' needs --baseline DIR")
        if program == "chat":
            return [str(root / "target" / "release" / "chat-server")]
        return [str(root / "benches" / "peers" / "ours" / "target" / "release" / program)]
    if server == "socketioxide":
        return [str(BENCHES / "peers" / "socketioxide" / "target" / "release" / program)]
    if server == "node":
        return ["node", str(BENCHES / "peers" / "node" / f"{program}.mjs")]
    raise ValueError(server)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1_048_576:
        hard = 1_048_576
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# `--no-pin`: server and generator share every core, as on a machine where nobody pins them.
PIN = True


def pinned(core: int):
    def setup() -> None:
        raise_nofile()
        try:
            os.sched_setaffinity(0, {core} if PIN else set(range(os.cpu_count() or 1)))
        except OSError:
            pass

    return setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid: int) -> dict:
    """CPU seconds (utime+stime of /proc/PID/stat) and memory (KiB) of a process."""
    out: dict = {}
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_kb"] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


class Server:
    def __init__(self, server: str, program: str, log: Path):
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            PORT=str(self.port),
            HOST="127.0.0.1",
            RUST_LOG="warn",
            NODE_ENV="production",
            # The chat server's per-socket roomMessage limit would cap the broadcast cells;
            # the peers have none.
            RATE_PER_SECOND="1000000000",
            RATE_BURST="1000000000",
            # Nor the engine's per-client WebSocket message rate (the peers have none either).
            WS_MESSAGE_BURST="1000000000",
            WS_MESSAGES_PER_SECOND="1000000000",
        )
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            server_command(server, program),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=pinned(SERVER_CORE),
            cwd=BENCHES,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{server} {program} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                    if r.read().startswith(b"up and running"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{server} {program} did not come up")
            time.sleep(0.05)
        # Let start-up work (JIT, lazy initialisation) settle before the baseline.
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Everything is measured by now: a short grace, then no waiting for drains.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass
class Cell:
    key: str  # unique name in the table
    title: str
    program: str  # chat | broadcast
    args: list[str]
    clients: int
    metrics: list[str]  # which derived metrics to show
    note: str = ""
    extra: dict = field(default_factory=dict)


def cells_for(mode: str) -> list[Cell]:
    quick = mode == "quick"
    hold = "4" if quick else "55"  # full: at least two 25 s heartbeats
    dur = "3" if quick else "10"
    warm = "1" if quick else "3"
    cells: list[Cell] = []

    connect_ns = [1000, 5000] if quick else [1000, 5000, 10000, 18000]
    for n in connect_ns:
        cells.append(
            Cell(
                f"connect-ws-{n}",
                f"connect {n//1000}k WS, chat login, rooms of 10",
                "chat",
                ["connect", "--clients", str(n), "--rooms", str(n // 10), "--hold", hold],
                n,
                ["mem_kb", "pss_kb", "cpu_connect_us", "cpu_login_us", "connect_per_s"],
            )
        )
    for n in [1000] if quick else [1000, 10000]:
        cells.append(
            Cell(
                f"connect-upgrade-{n}",
                f"connect {n//1000}k polling+upgrade",
                "chat",
                ["connect", "--transport", "upgrade", "--clients", str(n), "--rooms",
                 str(n // 10), "--hold", "2" if quick else "10"],
                n,
                ["cpu_connect_us", "mem_kb", "connect_per_s"],
            )
        )

    bcast_ns = [1000] if quick else [1000, 10000]
    sizes = [64, 1024]
    for n in bcast_ns:
        for size in sizes:
            # Paced: 50k deliveries/s, well below every server's limit.
            rate = 50_000 / n
            cells.append(
                Cell(
                    f"bcast-{n}-{size}-paced",
                    f"broadcast {n//1000}k recv, {size} B, paced {rate:g}/s",
                    "broadcast",
                    ["broadcast", "--clients", str(n), "--size", str(size), "--rate", str(rate),
                     "--duration", dur, "--warmup", warm],
                    n,
                    ["cpu_per_delivery_us", "deliveries_per_s", "lat_p50", "lat_p99"],
                )
            )
            if quick and size == 1024:
                continue
            cells.append(
                Cell(
                    f"bcast-{n}-{size}-sat",
                    f"broadcast {n//1000}k recv, {size} B, saturated",
                    "broadcast",
                    ["broadcast", "--clients", str(n), "--size", str(size), "--rate", "0",
                     "--window", "64", "--duration", dur, "--warmup", warm],
                    n,
                    ["deliveries_per_s", "cpu_per_delivery_us", "server_cpu_frac"],
                )
            )
    for n in [100] if quick else [100, 300]:
        for size in [64] if quick else sizes:
            cells.append(
                Cell(
                    f"chat-bcast-{n}-{size}",
                    f"chat room of {n}, roomMessage {size} B, saturated",
                    "chat",
                    ["broadcast", "--program", "chat", "--clients", str(n), "--size", str(size),
                     "--rate", "0", "--window", "64", "--duration", dur, "--warmup", warm],
                    n,
                    ["deliveries_per_s", "cpu_per_delivery_us", "cpu_login_us", "login_events"],
                )
            )

    for n, rate in [(1000, 10000)] if quick else [(1000, 10000), (10000, 10000)]:
        cells.append(
            Cell(
                f"echo-{n}-{rate}",
                f"echo {n//1000}k clients, {rate//1000}k ping/s",
                "chat",
                ["echo", "--clients", str(n), "--rate", str(rate),
                 "--duration", "5" if quick else "20", "--warmup", warm],
                n,
                ["lat_p50", "lat_p99", "lat_p999", "cpu_per_ack_us"],
            )
        )
    n = 100 if quick else 1000
    cells.append(
        Cell(
            f"polling-{n}",
            f"polling {n} clients, login, ping, roomMessage",
            "chat",
            ["polling", "--clients", str(n), "--rate", str(n * 2), "--msg-rate", str(n),
             "--duration", dur, "--warmup", warm],
            n,
            ["lat_p50", "lat_p99", "cpu_per_op_us", "cpu_connect_us", "mem_kb"],
        )
    )
    n = 1000 if quick else 10000
    cells.append(
        Cell(
            f"mix-{n}",
            f"mix {n//10} rooms of 10, WS",
            "chat",
            ["mix", "--clients", str(n), "--rate", "1000", "--msg-rate", "2000",
             "--duration", dur if quick else "20", "--warmup", warm],
            n,
            ["deliveries_per_s", "lat_p50", "lat_p99", "cpu_per_op_us"],
        )
    )
    return cells


# ---------------------------------------------------------------------------------------------
# Running


def sched(s: dict | None) -> float | None:
    if not s:
        return None
    v = s.get("sched_cpu_s")
    return v if v is not None else s.get("cpu_s")


def derive(cell: Cell, r: dict) -> dict:
    """Per-run figures from one loadgen report."""
    srv = r.get("server") or {}
    start, connected, ready = srv.get("start"), srv.get("connected"), srv.get("ready")
    w0, w1 = srv.get("window_start"), srv.get("window_end")
    n = max(1, r.get("connect", {}).get("connected", cell.clients))
    win = r.get("window", {})
    out: dict = {}

    def delta(a, b):
        sa, sb = sched(a), sched(b)
        return None if sa is None or sb is None else sb - sa

    d = delta(start, connected)
    if d is not None:
        out["cpu_connect_us"] = d / n * 1e6
    d = delta(connected, ready)
    if d is not None:
        out["cpu_login_us"] = d / n * 1e6
    if start and w1 and start.get("rss_kb") and w1.get("rss_kb"):
        out["mem_kb"] = (w1["rss_kb"] - start["rss_kb"]) / n
    if start and w1 and start.get("pss_kb") and w1.get("pss_kb"):
        out["pss_kb"] = (w1["pss_kb"] - start["pss_kb"]) / n
    out["connect_per_s"] = r.get("connect", {}).get("per_s")
    # Room traffic the logins caused (users lists, notifications) that reached the clients: a
    # server that drops some of it spends less CPU per login for less work.
    out["login_events"] = (r.get("login") or {}).get("events")
    wcpu = delta(w0, w1)
    if wcpu is not None and win.get("s"):
        out["server_cpu_frac"] = wcpu / win["s"]
    if wcpu is not None and win.get("delivered"):
        out["cpu_per_delivery_us"] = wcpu / win["delivered"] * 1e6
    if wcpu is not None and win.get("acks"):
        out["cpu_per_ack_us"] = wcpu / win["acks"] * 1e6
    ops = (win.get("acks") or 0) + (win.get("delivered") or 0)
    if wcpu is not None and ops:
        out["cpu_per_op_us"] = wcpu / ops * 1e6
    out["deliveries_per_s"] = win.get("delivered_per_s")
    lat = r.get("latency") or {}
    for q in ("p50", "p99", "p999"):
        if lat.get(f"{q}_ms") is not None:
            out[f"lat_{q}"] = lat[f"{q}_ms"]
    # Connect cells are judged on the connect phase, the others on the measurement window.
    if r.get("scenario") == "connect":
        out["gen_cpu_frac"] = r.get("connect", {}).get("gen_cpu_frac") or 0
    else:
        out["gen_cpu_frac"] = r.get("gen_cpu_frac") or 0
    out["gen_saturated"] = out["gen_cpu_frac"] > 0.9
    out["foreign_cpu_frac"] = (r.get("runner") or {}).get("foreign_cpu_frac")
    out["noisy"] = (out["foreign_cpu_frac"] or 0) > 0.1
    out["problems"] = (r.get("failed") or 0) + (r.get("lost") or 0)
    out["first_error"] = r.get("first_error")
    out["heartbeats"] = r.get("heartbeats")
    return out


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user + nice + system: interrupt and softirq time (much of it the loopback traffic of
    # this very run) and steal are left out on both sides of the comparison.
    ticks = [int(x) for x in parts]
    return (ticks[0] + ticks[1] + ticks[2]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 60.0, threshold: float = 0.15) -> float:
    """Waits (at most `limit` s) until the machine is nearly idle; returns the last busy level
    in cores. Other work on the machine (a build, a test run) would distort the figures."""
    end = time.monotonic() + limit
    while True:
        b0 = machine_busy()
        time.sleep(0.5)
        busy = (machine_busy() - b0) / 0.5
        if busy < threshold or time.monotonic() > end:
            return busy


QUIET_WAIT = 10.0


def run_one(cell: Cell, server: str, logdir: Path) -> dict:
    wait_quiet(QUIET_WAIT)
    busy0 = machine_busy()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = Server(server, cell.program, logdir / f"{server}-{cell.program}.log")
    try:
        before = proc_sample(srv.proc.pid)
        t0 = time.monotonic()
        cmd = [str(LOADGEN), *cell.args, "--url", f"http://127.0.0.1:{srv.port}",
               "--server-pid", str(srv.proc.pid), "--program", cell.program,
               "--label", f"{cell.key}/{server}"]
        bound = 300 + cell.clients / 20 + 120
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=bound,
                               preexec_fn=pinned(GEN_CORE))
            line = (p.stdout.strip().splitlines() or ["{}"])[-1]
            report = json.loads(line)
            if p.returncode != 0 and "error" not in report:
                report["error"] = f"loadgen exit {p.returncode}: {p.stderr[-300:]}"
        except subprocess.TimeoutExpired:
            report = {"error": "loadgen timed out"}
        except json.JSONDecodeError:
            report = {"error": "loadgen printed no result"}
        after = proc_sample(srv.proc.pid)
        alive = srv.proc.poll() is None
    finally:
        srv.stop()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    wall = max(1e-9, time.monotonic() - t0)
    # CPU the machine spent on anything but this run's server and load generator.
    foreign = max(0.0, machine_busy() - busy0 - ours_cpu)
    report["runner"] = {"before": before, "after": after, "server_alive": alive,
                        "foreign_cpu_frac": foreign / wall}
    return report


# ---------------------------------------------------------------------------------------------
# The table

LABELS = {
    "mem_kb": ("RSS per connection", "KiB", False),
    "pss_kb": ("PSS per connection", "KiB", False),
    "cpu_connect_us": ("server CPU per connect", "µs", False),
    "cpu_login_us": ("server CPU per login", "µs", False),
    "login_events": ("events received while logging in", "count", True),
    "connect_per_s": ("connects per second", "/s", True),
    "cpu_per_delivery_us": ("server CPU per delivery", "µs", False),
    "deliveries_per_s": ("deliveries per second", "/s", True),
    "server_cpu_frac": ("server CPU use", "cores", False),
    "cpu_per_ack_us": ("server CPU per ping+ack", "µs", False),
    "cpu_per_op_us": ("server CPU per ack or delivery", "µs", False),
    "lat_p50": ("latency p50", "ms", False),
    "lat_p99": ("latency p99", "ms", False),
    "lat_p999": ("latency p99.9", "ms", False),
}


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100_000:
        return f"{v/1000:,.0f}k"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def median(xs: list) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def usable(runs: list[dict]) -> list[dict]:
    """The repetitions a median is taken over: the quiet ones when there are any."""
    ok = [r for r in runs if not r.get("error")]
    quiet = [r for r in ok if not r.get("noisy")]
    return quiet or ok


def table(cells: list[Cell], results: dict) -> str:
    """results[cell.key][server] = list of derived dicts."""
    counts = {k: {s: len(usable(v)) for s, v in per.items()} for k, per in results.items()}
    results = {k: {s: usable(v) for s, v in per.items()} for k, per in results.items()}

    servers = [s for s in COLUMNS if any(results.get(c.key, {}).get(s) for c in cells)]
    head = "| cell | metric | " + " | ".join(
        s if s == "ours" else f"{s} | ×ours" for s in servers) + " |"
    sep = "|" + "---|" * (2 + sum(1 if s == "ours" else 2 for s in servers))
    lines = [head, sep]
    for c in cells:
        per = results.get(c.key, {})
        if not per:
            continue
        marks = {}
        for s in servers:
            runs = per.get(s, [])
            m = ""
            if any(r.get("gen_saturated") for r in runs):
                m += "‡"
            if any(r.get("problems") for r in runs) or any(r.get("error") for r in runs):
                m += "!"
            if any(r.get("noisy") for r in runs):
                m += "≈"
            marks[s] = m
        first = True
        for metric in c.metrics:
            label, unit, _ = LABELS[metric]
            ours = median([r.get(metric) for r in per.get("ours", [])])
            n = "/".join(str(counts[c.key].get(s, 0)) for s in servers)
            row = [f"{c.title} (n={n})" if first else "", f"{label} ({unit})"]
            for s in servers:
                v = median([r.get(metric) for r in per.get(s, [])])
                cell = fmt(v) + (marks[s] if first else "")
                if s == "ours":
                    row.append(cell)
                else:
                    ratio = (v / ours) if (v is not None and ours) else None
                    row += [cell, "–" if ratio is None else f"{ratio:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
            first = False
    # Growth: per-connection and per-delivery figures at the largest N over the smallest.
    growth = []
    for prefix, metric in (("connect-ws-", "mem_kb"), ("connect-ws-", "cpu_connect_us"),
                           ("bcast-", "cpu_per_delivery_us")):
        keys = [c for c in cells if c.key.startswith(prefix) and c.key in results]
        if prefix == "bcast-":
            keys = [c for c in keys if c.key.endswith("-64-paced")]
        if len(keys) < 2:
            continue
        lo, hi = min(keys, key=lambda c: c.clients), max(keys, key=lambda c: c.clients)
        row = [f"growth {lo.clients//1000}k→{hi.clients//1000}k", LABELS[metric][0] + " (×)"]
        og = None
        for s in servers:
            a = median([r.get(metric) for r in results[lo.key].get(s, [])])
            b = median([r.get(metric) for r in results[hi.key].get(s, [])])
            g = (b / a) if (a and b is not None) else None
            if s == "ours":
                og = g
                row.append("–" if g is None else f"{g:.2f}")
            else:
                row += ["–" if g is None else f"{g:.2f}",
                        "–" if (g is None or not og) else f"{g/og:.2f}"]
        growth.append("| " + " | ".join(row) + " |")
    lines += growth
    lines.append("")
    lines.append("n = repetitions behind the medians, per server in column order. "
                 "Medians of the repetitions. ×ours = peer ÷ ours (below 1: the peer uses less, or "
                 "is faster for latency; above 1 for /s rows: the peer does more). "
                 "‡ = the load generator used >90% of its core in some repetition (a generator "
                 "limit, not the server's). ! = some clients failed, were lost, or the run errored. "
                 "≈ = other work on the machine used >10% of a core during the repetitions shown "
                 "(quiet repetitions are preferred: the median is over them when there are any).")
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    mem_total = next((l.split()[1] for l in mem.splitlines() if l.startswith("Mem:")), "?")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores (nproc), {cpu}, {mem_total} memory, "
            f"Linux {os.uname().release}, node {node}")


# ---------------------------------------------------------------------------------------------
# Building


def build(servers: list[str]) -> None:
    def sh(cmd: list[str], cwd: Path) -> None:
        shown = cwd.relative_to(ROOT) if cwd.is_relative_to(ROOT) and cwd != ROOT else (
            "." if cwd == ROOT else cwd)
        print(f"$ (cd {shown}; {' '.join(cmd)})", flush=True)
        subprocess.run(cmd, cwd=cwd, check=True)

    sh(["cargo", "build", "--release", "--quiet"], BENCHES / "loadgen")
    for server, root in (("ours", ROOT), ("base", BASELINE)):
        if server in servers and root is not None:
            sh(["cargo", "build", "--release", "--quiet", "--bin", "chat-server"], root)
            sh(["cargo", "build", "--release", "--quiet"], root / "benches" / "peers" / "ours")
    if "socketioxide" in servers:
        sh(["cargo", "build", "--release", "--quiet"], BENCHES / "peers" / "socketioxide")
    if "node" in servers and not (BENCHES / "peers" / "node" / "node_modules").is_dir():
        sh(["npm", "ci", "--silent"], BENCHES / "peers" / "node")


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small N, short windows (default)")
    mode.add_argument("--full", action="store_true", help="every cell of the issue")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each cell (default 3)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    ap.add_argument("--only", default="", help="run only cells whose key contains one of these "
                    "(comma-separated; a whole key selects that cell alone)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    ap.add_argument("--table", metavar="FILE", help="print the table of a stored results file")
    ap.add_argument("--quiet-wait", type=float, default=10.0, metavar="S",
                    help="before each run, wait up to S seconds for the machine to be idle (default 10)")
    ap.add_argument("--baseline", metavar="DIR", type=Path,
                    help="another checkout of this repository, run as the server 'base' "
                    "(add it to --servers)")
    ap.add_argument("--no-pin", action="store_true",
                    help="run server and generator on every core instead of one core each")
    args = ap.parse_args()
    global QUIET_WAIT, BASELINE, PIN
    QUIET_WAIT = args.quiet_wait
    PIN = not args.no_pin
    BASELINE = args.baseline.resolve() if args.baseline else None

    if args.table:
        stored = [json.loads(l) for l in Path(args.table).read_text().splitlines() if l.strip()]
        meta = stored[0]
        cells = cells_for(meta["mode"])
        results: dict = {}
        for rec in stored[1:]:
            results.setdefault(rec["cell"], {}).setdefault(rec["server"], []).append(rec["derived"])
        unpinned = "" if meta.get("pinned", True) else ", unpinned"
        print(f"{meta['mode']} run{unpinned} of {meta['date']} on {meta['machine']}\n")
        print(table([c for c in cells if c.key in results], results))
        return 0

    mode_name = "full" if args.full else "quick"
    servers = [s for s in args.servers.split(",") if s]
    pinned(GEN_CORE)()
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 cores; server and generator will share one", file=sys.stderr)
    if not args.no_build:
        build(servers)

    cells = cells_for(mode_name)
    if args.only:
        wanted = args.only.split(",")
        keys = {c.key for c in cells}
        # A word that is a whole key selects that cell alone (connect-upgrade-1000 is part of
        # connect-upgrade-10000 too).
        cells = [c for c in cells
                 if any(w == c.key if w in keys else w in c.key for w in wanted)]
    stamp = dt.datetime.now(dt.timezone.utc)
    outdir = BENCHES / "results"
    outdir.mkdir(exist_ok=True)
    logdir = outdir / f"logs-{stamp:%Y%m%dT%H%M%SZ}"
    logdir.mkdir()
    out_path = outdir / f"{stamp:%Y%m%dT%H%M%SZ}-{mode_name}.jsonl"
    meta = {"mode": mode_name, "date": stamp.isoformat(timespec="seconds"), "machine": machine(),
            "reps": args.reps, "servers": servers, "pinned": PIN}
    results: dict = {}
    t_start = time.monotonic()
    with open(out_path, "w") as out:
        out.write(json.dumps(meta) + "\n")
        for rep in range(args.reps):
            for cell in cells:
                # Interleave the servers, rotating who goes first.
                order = servers[rep % len(servers):] + servers[: rep % len(servers)]
                for server in order:
                    t = time.monotonic()
                    try:
                        report = run_one(cell, server, logdir)
                    except RuntimeError as e:
                        report = {"error": str(e)}
                    derived = derive(cell, report) if "error" not in report else {"error": report["error"]}
                    results.setdefault(cell.key, {}).setdefault(server, []).append(derived)
                    out.write(json.dumps({"cell": cell.key, "server": server, "rep": rep,
                                          "derived": derived, "report": report}) + "\n")
                    out.flush()
                    brief = ", ".join(f"{m}={fmt(derived.get(m))}" for m in cell.metrics)
                    flag = " GEN-SATURATED" if derived.get("gen_saturated") else ""
                    if derived.get("noisy"):
                        flag += f" NOISY({derived['foreign_cpu_frac']:.2f})"
                    err = f" ERROR {derived['error']}" if derived.get("error") else ""
                    prob = f" problems={derived['problems']} ({derived.get('first_error')})" if derived.get("problems") else ""
                    print(f"[{time.monotonic()-t_start:6.0f}s] rep {rep+1} {cell.key:24} {server:12} "
                          f"{time.monotonic()-t:5.1f}s  {brief}{flag}{err}{prob}", flush=True)

    unpinned = "" if PIN else ", unpinned"
    print(f"\n{mode_name} run{unpinned} of {meta['date']} on {meta['machine']}\n")
    print(table(cells, results))
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
