"""Machine description, per-scenario summaries, the printed table and the JSON file."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpclib
import h2

import ctrd
from bench.probe import Sample

__all__ = ["display", "machine_info", "print_table", "summarize", "write_json"]

DAEMONS = ("ctrd", "containerd")


def _run(*cmd: str, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout.strip() if p.returncode == 0 else ""


def _filesystem(path: Path) -> str:
    best, fs = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ, *_ = line.split()
            if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {dev} ({mnt})"
    return fs


def machine_info(work: Path, containerd: str, ctr: str) -> dict[str, Any]:
    """What the numbers depend on: CPU, memory, kernel, filesystem, versions, load, code revision."""
    cpu, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    repo = Path(__file__).resolve().parent.parent
    dirty = _run("git", "status", "--porcelain", "--untracked-files=no", cwd=repo)
    src_diff = _run("git", "diff", "HEAD", "--", "src", cwd=repo)
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpu_flags": sorted(flags & {"sha_ni", "avx2", "avx512f"}),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "filesystem": _filesystem(work),
        "python": sys.version.split()[0],
        "ctrd": ctrd.__version__,
        "grpclib": getattr(grpclib, "__version__", "?"),
        "h2": getattr(h2, "__version__", "?"),
        "containerd": _run(containerd, "--version"),
        "ctr": _run(ctr, "--version"),
        "git_commit": _run("git", "rev-parse", "--short", "HEAD", cwd=repo),
        "git_dirty_files": len(dirty.splitlines()) if dirty else 0,
        # the working tree is what runs: identify uncommitted changes to the daemon's code
        "git_src_diff_sha256": hashlib.sha256(src_diff.encode()).hexdigest()[:16],
        "loadavg_start": os.getloadavg(),
    }


def display(unit: str, work: float, seconds: float) -> float:
    """A run's time as shown: MB/s (10^6 bytes), blobs/s, or ms per operation."""
    if seconds <= 0:
        return float("nan")
    if unit == "MB/s":
        return work / 1e6 / seconds
    if unit == "blobs/s":
        return work / seconds
    if unit == "ms":
        return seconds / work * 1000
    raise ValueError(unit)


def summarize(
    key: str, title: str, unit: str, work: float, samples: Mapping[str, Sequence[Sample]], skipped: str | None
) -> dict[str, Any]:
    """Medians per participant and, with both daemons, the throughput ratio ctrd/containerd."""
    out: dict[str, Any] = {"key": key, "title": title, "unit": unit, "work": work, "skipped": skipped}
    if skipped:
        return out
    out["samples"] = {n: [dataclasses.asdict(s) for s in ss] for n, ss in samples.items()}
    med: dict[str, dict[str, float]] = {}
    for n, ss in samples.items():
        secs = [s.seconds for s in ss]
        m = statistics.median(secs)
        med[n] = {
            "seconds": m,
            "value": display(unit, work, m),
            "values": [display(unit, work, s) for s in secs],
            "daemon_cpu": statistics.median(s.daemon_cpu for s in ss),
            "daemon_user": statistics.median(s.daemon_user for s in ss),
            "daemon_sys": statistics.median(s.daemon_sys for s in ss),
            "daemon_minflt": statistics.median(s.daemon_minflt for s in ss),
            "client_cpu": statistics.median(s.client_cpu for s in ss),
            "busy_cores": statistics.median(s.busy_cores for s in ss),
            "other_cores": statistics.median(s.other_cores for s in ss),
        }
    out["median"] = med
    if all(n in med for n in DAEMONS):
        # throughput ratio: > 1 means ctrd is faster
        out["ratio"] = med["containerd"]["seconds"] / med["ctrd"]["seconds"]
    return out


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "blobs/s":
        return f"{v:.0f} blobs/s"
    return f"{v:.1f} {unit}"


def print_table(results: Sequence[Mapping[str, Any]], derived: Mapping[str, Any], file: Any = None) -> None:
    """The result table: medians, ratio, CPU per run and other machine load."""
    file = file or sys.stdout
    rows = [
        ("scenario", "ctrd", "containerd", "ratio", "CPU/run ctrd", "containerd", "client CPU", "other load"),
    ]
    machine_rows = []
    for r in results:
        if r.get("skipped"):
            rows.append((r["title"], "skipped", "", "", "", "", "", ""))
            continue
        med = r["median"]
        if "machine" in med:
            m = med["machine"]
            machine_rows.append(
                f"{r['title']}: {_fmt(m['value'], r['unit'])} (median, {len(m['values'])} runs)"
            )
            continue
        c, k = med["ctrd"], med["containerd"]
        other = max(c["other_cores"], k["other_cores"])
        rows.append(
            (
                r["title"],
                _fmt(c["value"], r["unit"]),
                _fmt(k["value"], r["unit"]),
                f"{r['ratio']:.2f}",
                f"{c['daemon_cpu']:.2f} s",
                f"{k['daemon_cpu']:.2f} s",
                f"{c['client_cpu']:.2f}/{k['client_cpu']:.2f} s",
                f"{other:.2f} cores",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip(), file=file)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=file)
    print(
        "ratio = containerd median time / ctrd median time (> 1: ctrd faster); medians of alternating runs.",
        file=file,
    )
    print(
        "CPU/run = daemon CPU (user+sys) per run; client CPU = this process + ctr, in ctrd/containerd runs.",
        file=file,
    )
    print(
        "other load = median busy cores of the machine not used by the daemon or the benchmark client.",
        file=file,
    )
    for line in machine_rows:
        print(line, file=file)
    for line in derived.get("lines", []):
        print(line, file=file)


def derive(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Cross-scenario figures: large ingest as a fraction of the machine limit, admission size ratio."""
    by = {r["key"]: r for r in results if not r.get("skipped") and "median" in r}
    out: dict[str, Any] = {"lines": []}
    limit = by.get("limit-write-sha256-fsync")
    if limit:
        lim = limit["median"]["machine"]["value"]
        for key in ("ingest-ctr", "ingest-sdk"):
            if key in by:
                for n in DAEMONS:
                    frac = by[key]["median"][n]["value"] / lim
                    out[f"{key}_{n}_fraction_of_limit"] = frac
                c = out[f"{key}_ctrd_fraction_of_limit"]
                k = out[f"{key}_containerd_fraction_of_limit"]
                out["lines"].append(
                    f"{by[key]['title']}: ctrd at {c:.2f} x the machine limit "
                    f"({lim:.0f} MB/s write+sha256+fsync); containerd at {k:.2f} x"
                )
    if "admit-small" in by and "admit-large" in by:
        for n in DAEMONS:
            r = by["admit-large"]["median"][n]["seconds"] / by["admit-small"]["median"][n]["seconds"]
            out[f"admission_large_over_small_{n}"] = r
        c, k = out["admission_large_over_small_ctrd"], out["admission_large_over_small_containerd"]
        out["lines"].append(
            f"shared admission, large/small time: ctrd {c:.2f}, containerd {k:.2f} (1.00 = size-independent)"
        )
    return out


def write_json(out_dir: Path, doc: Mapping[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path
