"""Shared plumbing of the benchmarks: core pinning, process CPU accounting, node and
cluster start-up (through tests/harness.py), percentiles, tables, JSON results, and
py-spy profiles summarised per function and per module.

Not a benchmark itself; `bench/*.py` scripts import it (they run as plain scripts, so
`bench/` is on sys.path).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SERVER_CORE = 0
LOAD_CORE = 1

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- cores and CPU time -----------------------------------------------------------------
def check_cores() -> None:
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CORE, LOAD_CORE} <= cpus:
        raise SystemExit(f"need cores {SERVER_CORE} and {LOAD_CORE}; this process may use {cpus}")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is required")


def pin_self(core: int = LOAD_CORE) -> None:
    """Pin this process (the load generator / client) to one core."""
    os.sched_setaffinity(0, {core})


def taskset(core: int | str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv]


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process, all its threads (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is state (field 3); utime = field 14, stime = field 15
    return (int(fields[11]) + int(fields[12])) / _TICK


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy seconds, total seconds) since boot, from /proc/stat."""
    out: dict[int, tuple[float, float]] = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            nums = [int(v) for v in vals]
            idle = nums[3] + (nums[4] if len(nums) > 4 else 0)
            total = sum(nums[:8])
            out[int(name[3:])] = ((total - idle) / _TICK, total / _TICK)
    return out


class CpuMeter:
    """CPU use of given processes, of this process and of each core over an interval."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.start()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._self0 = time.process_time()
        self._procs0 = [proc_cpu_seconds(p) for p in self.pids]
        self._cores0 = core_times()

    def stop(self) -> dict[str, Any]:
        wall = max(1e-9, time.monotonic() - self._t0)
        procs = [proc_cpu_seconds(p) - c for p, c in zip(self.pids, self._procs0, strict=True)]
        cores1 = core_times()
        cores: dict[str, float] = {}
        for core, (busy1, total1) in cores1.items():
            busy0, total0 = self._cores0.get(core, (0.0, 0.0))
            cores[f"core{core}_busy_pct"] = round(
                100 * (busy1 - busy0) / max(1e-9, total1 - total0), 1
            )
        return {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(sum(procs), 3),
            "server_cpu_pct": round(100 * sum(procs) / wall, 1),
            "loadgen_cpu_s": round(time.process_time() - self._self0, 3),
            "loadgen_cpu_pct": round(100 * (time.process_time() - self._self0) / wall, 1),
            **cores,
            "loadavg_1m": os.getloadavg()[0],
        }


# --- statistics and output -----------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[idx])


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append(
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(row))
        )
    return "\n".join(out)


def environment() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=10
            ).stdout.strip()
        except OSError:
            return ""

    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty_files": [line for line in git("status", "--short").splitlines() if line],
        "loadavg_at_start": os.getloadavg(),
    }


def use_quick_dir() -> None:
    """--quick runs write to bench/results/quick/ so they never overwrite full results."""
    global RESULTS_DIR
    RESULTS_DIR = BENCH_DIR / "results" / "quick"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def temp_root(prefix: str, keep: bool = False) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if keep:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


# --- processes -------------------------------------------------------------------------------
def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only this very process (by its PID)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def dynamo_cluster(root: Path, core: int = SERVER_CORE) -> Any:
    """A tests.harness.Cluster whose node processes all run pinned to `core`."""
    from tests.harness import Cluster

    class PinnedCluster(Cluster):
        def start(self, node: Any, wait: bool = True) -> None:
            if node.args[0] != "taskset":
                node.args = taskset(core, node.args)
            super().start(node, wait)

    return PinnedCluster(root, env={"DYNAMO_LOG_LEVEL": "WARNING"})


def set_node_option(node: Any, option: str, value: str) -> None:
    """Change (or add) `--option value` in a harness node's command line (for restarts)."""
    args: list[str] = node.args
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]


# --- profiles ----------------------------------------------------------------------------------
@dataclass
class Profile:
    path: Path
    samples: int
    by_function_self: list[tuple[str, int]]
    by_function_total: list[tuple[str, int]]
    by_module_self: list[tuple[str, int]]
    by_module_total: list[tuple[str, int]]

    def to_dict(self, top: int = 25) -> dict[str, Any]:
        def pct(rows: list[tuple[str, int]]) -> list[dict[str, Any]]:
            return [
                {"name": n, "samples": c, "pct": round(100 * c / max(1, self.samples), 1)}
                for n, c in rows[:top]
            ]

        return {
            "raw_file": str(
                self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
            ),
            "samples": self.samples,
            "self_by_function": pct(self.by_function_self),
            "total_by_function": pct(self.by_function_total),
            "self_by_module": pct(self.by_module_self),
            "total_by_module": pct(self.by_module_total),
        }

    def report(self, title: str, top: int = 15, us_per_op: float | None = None) -> str:
        """`us_per_op`: server CPU µs per request during the profile, to show each share
        as µs per request too."""

        def block(name: str, rows: list[tuple[str, int]]) -> str:
            lines = [f"  {name}:"]
            for label, count in rows[:top]:
                share = count / max(1, self.samples)
                us = f" {share * us_per_op:6.1f} µs" if us_per_op else ""
                lines.append(f"    {100 * share:5.1f}%{us}  {label}")
            return "\n".join(lines)

        per_op = f", {us_per_op:.0f} µs CPU per request" if us_per_op else ""
        return "\n".join(
            [
                f"profile {title}: {self.samples} samples (CPU-active only){per_op},"
                f" {self.path.name}",
                block("self time by module", self.by_module_self),
                block("inclusive time by module", self.by_module_total),
                block("self time by function", self.by_function_self),
                block("inclusive time by function", self.by_function_total),
            ]
        )


LOOP_FRAME = "[event loop: uvloop/libuv C code, syscalls]"


def _frame_parts(frame: str) -> tuple[str, str]:
    """py-spy raw frame 'func (pkg/file.py:123)' -> ('func (pkg/file.py)', 'pkg/file.py')."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0] if ":" in where else where
    module = _module_of(path)
    return f"{func} ({module})", module


def _module_of(path: str) -> str:
    """py-spy already shortens paths to 'pkg/module.py'; shorten absolute ones alike."""
    p = path.replace("\\", "/")
    for marker in ("/site-packages/", "/node/"):
        if marker in p:
            return p.split(marker, 1)[1]
    if "/lib/python3" in p:
        return p.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return p or "?"


def _interesting(frames: list[str]) -> list[str] | None:
    """Drop the thread-name pseudo frame and the start-up frames below the event loop
    (runpy, main, uvloop.run, Runner.run); None for an idle executor thread."""
    frames = [f for f in frames if " (" in f]
    if not frames:
        return None
    if frames[-1].startswith("_worker (concurrent/futures/thread.py"):
        return None  # executor thread waiting for work (py-spy does not see it as idle)
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].startswith(("Runner.run (asyncio/runners.py", "run_until_complete (")):
            rest = frames[i + 1 :]
            return rest if rest else [LOOP_FRAME]
    return frames


def summarise_profile(path: Path) -> Profile:
    """Aggregate py-spy `--format raw` (collapsed stacks) into self/inclusive shares of
    the CPU-active samples, per function and per module (file)."""
    fn_self: Counter[str] = Counter()
    fn_total: Counter[str] = Counter()
    mod_self: Counter[str] = Counter()
    mod_total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = _interesting(stack.split(";"))
        if frames is None:
            continue
        samples += count
        parts = [(LOOP_FRAME, LOOP_FRAME) if f == LOOP_FRAME else _frame_parts(f) for f in frames]
        leaf_fn, leaf_mod = parts[-1]
        fn_self[leaf_fn] += count
        mod_self[leaf_mod] += count
        for fn in {p[0] for p in parts}:
            fn_total[fn] += count
        for mod in {p[1] for p in parts}:
            mod_total[mod] += count
    return Profile(
        path,
        samples,
        fn_self.most_common(),
        fn_total.most_common(),
        mod_self.most_common(),
        mod_total.most_common(),
    )


def start_py_spy(
    pid: int, out: Path, seconds: float, native: bool = False
) -> subprocess.Popen[Any]:
    """Sample a process with py-spy (collapsed stacks) for `seconds`, on the load core."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("py-spy not found: pip install py-spy (into the venv)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a failed run must not leave an older profile behind
    argv = [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100"]
    if native:
        argv.append("--native")  # py-spy cannot unwind native stacks without pausing
    else:
        # --nonblocking: do not pause the process per sample. Pausing (the default) slows
        # a node so much that its peers race ahead and flood it with replication (W=2
        # needs only the two others), which distorts the very profile being taken.
        argv.append("--nonblocking")
    argv += ["-f", "raw", "-o", str(out)]
    return subprocess.Popen(
        taskset(LOAD_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def finish_py_spy(
    proc: subprocess.Popen[Any], out: Path, title: str, us_per_op: float | None = None
) -> dict[str, Any] | None:
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.exists():
        print(f"py-spy produced no profile for {title}: {err.decode(errors='replace')[-500:]}")
        return None
    prof = summarise_profile(out)
    print(prof.report(title, us_per_op=us_per_op))
    result = prof.to_dict()
    result["server_us_per_op_while_profiling"] = us_per_op
    return result
