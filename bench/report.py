"""Machine description, per-scenario summaries, the printed tables, issue 8's targets, JSON and chart."""

from __future__ import annotations

import contextlib
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

__all__ = [
    "code_state",
    "derive",
    "display",
    "machine_info",
    "print_table",
    "print_targets",
    "summarize",
    "targets",
    "write_chart",
    "write_json",
]

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


def code_state() -> dict[str, str]:
    """The code the daemons run: HEAD, and a fingerprint of ``src/`` including uncommitted and
    untracked files. Other sessions edit the shared tree; compare the fingerprint at the start
    and the end of a run (a daemon started mid-run imports whatever is there then)."""
    repo = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(_run("git", "diff", "HEAD", "--", "src", cwd=repo).encode())
    untracked = _run("git", "ls-files", "--others", "--exclude-standard", "--", "src", cwd=repo)
    for name in sorted(untracked.splitlines()):
        h.update(name.encode())
        with contextlib.suppress(OSError):
            h.update((repo / name).read_bytes())
    return {
        "git_commit": _run("git", "rev-parse", "--short", "HEAD", cwd=repo),
        "src_tree": _run("git", "rev-parse", "--short", "HEAD:src", cwd=repo),  # commits to docs/ leave it
        "src_fingerprint": h.hexdigest()[:16],
    }


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
        "code_start": code_state(),
        "loadavg_start": os.getloadavg(),
    }


def primary(unit: str, sample: Sample) -> float:
    """What a run measured: its time, or for ``MiB`` its :attr:`Sample.metric`. Lower is better."""
    if unit == "MiB":
        return sample.metric if sample.metric is not None else float("nan")
    return sample.seconds


def display(unit: str, work: float, x: float) -> float:
    """A run's primary figure as shown: MB/s (10^6 bytes), blobs/s, ms or s per operation, or MiB."""
    if unit == "MiB":
        return x
    if x <= 0:
        return float("nan")
    if unit == "MB/s":
        return work / 1e6 / x
    if unit == "blobs/s":
        return work / x
    if unit == "ms":
        return x / work * 1000
    if unit == "s":
        return x / work
    raise ValueError(unit)


def sample_value(unit: str, work: float, sample: Sample) -> float:
    return display(unit, work, primary(unit, sample))


def _median_extra(ss: Sequence[Sample]) -> dict[str, float]:
    keys = {k for s in ss for k, v in s.extra.items() if isinstance(v, int | float)}
    return {k: statistics.median(s.extra[k] for s in ss if k in s.extra) for k in sorted(keys)}


def summarize(
    key: str,
    title: str,
    unit: str,
    work: float,
    samples: Mapping[str, Sequence[Sample]],
    skipped: str | None,
    blob_size: int | None = None,
) -> dict[str, Any]:
    """Medians per participant and, with both daemons, the ratio containerd/ctrd of the primary figure
    (time, or MiB): above 1, ctrd is faster or smaller."""
    out: dict[str, Any] = {"key": key, "title": title, "unit": unit, "work": work, "skipped": skipped}
    if blob_size is not None:
        out["blob_size"] = blob_size
    if skipped:
        return out
    out["samples"] = {n: [dataclasses.asdict(s) for s in ss] for n, ss in samples.items()}
    med: dict[str, dict[str, Any]] = {}
    for n, ss in samples.items():
        if not ss:
            continue
        prim = [primary(unit, s) for s in ss]
        m = statistics.median(prim)
        med[n] = {
            "primary": m,
            "seconds": statistics.median(s.seconds for s in ss),
            "value": display(unit, work, m),
            "values": [display(unit, work, x) for x in prim],
            "extra": _median_extra(ss),
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
        # > 1 means ctrd is faster (or, for MiB, uses less memory)
        out["ratio"] = med["containerd"]["primary"] / med["ctrd"]["primary"]
    return out


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "blobs/s":
        return f"{v:.0f} blobs/s"
    if unit == "MiB":
        return f"{v:.0f} MiB"
    return f"{v:.1f} {unit}"


def print_table(results: Sequence[Mapping[str, Any]], derived: Mapping[str, Any], file: Any = None) -> None:
    """The result table: medians, ratio, CPU per run and other machine load."""
    file = file or sys.stdout
    rows = [
        (
            "scenario",
            "ctrd",
            "containerd",
            "ratio",
            "CPU/run ctrd",
            "containerd",
            "client CPU",
            "other load",
            "load avg",
        ),
    ]
    machine_rows = []
    for r in results:
        if r.get("skipped"):
            rows.append((r["title"], "skipped", "", "", "", "", "", "", ""))
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
        la = r.get("loadavg")
        load = f"{la[0]:.1f}-{la[1]:.1f}" if la else ""
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
                load,
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
        "ratio = containerd median time / ctrd median time (> 1: ctrd faster; for MiB rows, containerd"
        " RSS / ctrd RSS); medians of alternating runs.",
        file=file,
    )
    print(
        "CPU/run = daemon CPU (user+sys) per run; client CPU = this process + ctr, in ctrd/containerd runs.",
        file=file,
    )
    print(
        "other load = median busy cores of the machine not used by the daemon or the benchmark client;"
        " load avg = 1-minute load average at the scenario's start and end.",
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
        for key in ("ingest-ctr", "ingest-sdk", "ingest-sdk-buffered"):
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
    rss = by.get("rss-ingest")
    if rss:
        parts = []
        for n in DAEMONS:
            ex = rss["median"][n]["extra"]
            growth = (ex["hwm_after_big_kib"] - ex["hwm_after_large_kib"]) / 1024
            out[f"rss_growth_mib_{n}"] = growth
            out[f"rss_after_large_mib_{n}"] = ex["hwm_after_large_kib"] / 1024
            parts.append(
                f"{n} {ex['hwm_start_kib'] / 1024:.0f} -> {ex['hwm_after_large_kib'] / 1024:.0f} -> "
                f"{ex['hwm_after_big_kib'] / 1024:.0f} MiB"
            )
        big, large = _size(ex["big_size"]), _size(ex["large_size"])
        out["lines"].append(f"peak RSS at start -> after {large} -> after {big} ingest: " + "; ".join(parts))
    fill = by.get("rss-list")
    if fill:
        parts, mem = [], []
        for n in DAEMONS:
            ex = fill["median"][n]["extra"]
            parts.append(
                f"{n} {ex['fill_seconds']:.0f} s ({ex['fill_blobs_per_s']:.0f} blobs/s, "
                f"daemon CPU {ex['fill_daemon_cpu']:.0f} s)"
            )
            anon, filed = ex.get("RssAnon_kib", 0) / 1024, ex.get("RssFile_kib", 0) / 1024
            out[f"rss_list_anon_mib_{n}"] = anon
            mem.append(f"{n} {anon:.0f} MiB anonymous + {filed:.0f} MiB file-backed")
        out["lines"].append("List daemons filled concurrently (not timed as a scenario): " + "; ".join(parts))
        out["lines"].append("RSS after the List blobs: " + "; ".join(mem))
    return out


def _size(n: float) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"


# -- issue 8's targets -----------------------------------------------------------------------------

# (key into results or derived, what is compared, goal, ">=" or "<=", text)
_TARGETS: tuple[tuple[str, str, float, str, str], ...] = (
    ("ingest-ctr", "ratio", 1.3, ">=", "ctr ingest 256 MiB: >= 1.3 x containerd"),
    ("ingest-ctr-early", "ratio", 1.3, ">=", "  same, ctrd with early_write_ack (more is the aim)"),
    ("ingest-sdk", "ratio", 1.0, ">=", "SDK ingest 256 MiB: >= 1.0 x containerd"),
    ("ingest-sdk", "limit", 0.5, ">=", "SDK ingest 256 MiB: >= 0.5 x write+sha256+fsync limit"),
    ("ingest-sdk-buffered", "limit", 0.5, ">=", "  same, ctrd with direct_write = false (page cache)"),
    ("small-sequential", "ratio", 1.0, ">=", "small ingest, sequential: >= 1.0 x containerd"),
    ("small-concurrent", "ratio", 1.0, ">=", "small ingest, 16 concurrent: >= 1.0 x containerd"),
    ("read-ctr", "ratio", 0.8, ">=", "ctr get 256 MiB: >= 0.8 x containerd"),
    ("read-sdk", "ratio", 0.6, ">=", "SDK read 256 MiB: >= 0.6 x containerd"),
    ("list-all", "ratio", 1.0, ">=", "List 100k, no filter: ctrd time <= containerd"),
    ("list-all-raw", "ratio", 1.0, ">=", "  same, raw stub (client decoding left out)"),
    ("list-filtered", "ratio", 1.0, ">=", "List 100k, label filter: ctrd time <= containerd"),
    ("admit-large", "admission", 2.0, "<=", "shared admission: 1 GiB within 2 x the 4 KiB time"),
    ("cold-start", "ctrd", 500.0, "<=", "cold start <= 0.5 s (ms)"),
    ("rss-ingest", "ctrd", 150.0, "<=", "peak RSS during a 1 GiB ingest <= 150 MiB"),
    ("rss-ingest", "growth", 8.0, "<=", "peak RSS not growing with blob size (MiB, 256 MiB -> 1 GiB)"),
)


def targets(results: Sequence[Mapping[str, Any]], derived: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's targets against this run: measured figure, met or not, and by how much.

    ``margin`` is measured/goal for ">=" targets and goal/measured for "<=" ones: at least 1 when met.
    "Not growing with blob size" allows 8 MiB of noise in the peak RSS between the two ingests.
    """
    by = {r["key"]: r for r in results if not r.get("skipped") and "median" in r}
    rows: list[dict[str, Any]] = []
    for key, what, goal, op, text in _TARGETS:
        r = by.get(key)
        measured: float | None = None
        if r is not None and "ratio" in r:
            if what == "ratio":
                measured = r["ratio"]
            elif what == "limit":
                measured = derived.get(f"{key}_ctrd_fraction_of_limit")
            elif what == "admission":
                measured = derived.get("admission_large_over_small_ctrd")
            elif what == "ctrd":
                measured = r["median"]["ctrd"]["value"]
            elif what == "growth":
                measured = derived.get("rss_growth_mib_ctrd")
        row: dict[str, Any] = {"key": key, "target": text, "goal": goal, "op": op, "measured": measured}
        if measured is None:
            row.update(met=None, margin=None)
        elif what == "growth":  # an allowance for noise, not a scale: no margin
            row.update(met=measured <= goal, margin=None)
        elif op == ">=":
            row.update(met=measured >= goal, margin=measured / goal)
        else:
            row.update(met=measured <= goal, margin=goal / measured if measured > 0 else float("inf"))
        rows.append(row)
    return rows


ISSUE_SIZES = {
    "large_size": 256 << 20,
    "small_count": 2000,
    "concurrency": 16,
    "admit_large_size": 1 << 30,
    "rss_size": 1 << 30,
    "list_count": 100_000,
    "list_match": 1000,
}


def print_targets(
    rows: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None, file: Any = None
) -> None:
    file = file or sys.stdout
    print("issue 8 targets (one run; ratios > 1: ctrd better):", file=file)
    for t in rows:
        if t["measured"] is None:
            print(f"  {t['target']:<62} not measured", file=file)
            continue
        verdict = "MET" if t["met"] else "NOT MET"
        margin = "" if t["margin"] is None else f" (margin {t['margin']:.2f} x the goal)"
        print(f"  {t['target']:<62} {t['measured']:8.2f}  {verdict:<7}{margin}", file=file)
    off = [k for k, v in ISSUE_SIZES.items() if params is not None and params.get(k, v) != v]
    if off:
        print(f"  note: this run did not use issue 8's sizes for {', '.join(off)}", file=file)


# -- chart --------------------------------------------------------------------------------------

CHART_KEYS = ("small-sequential", "ingest-sdk-1m", "ingest-sdk-16m", "ingest-sdk")


def write_chart(doc: Mapping[str, Any], png: Path) -> Path | None:
    """Ingest throughput against blob size, both daemons (matplotlib, Agg); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "bench: note: matplotlib is not installed, so no chart was written "
            "(pip install matplotlib, or run through `tox -e bench`)",
            file=sys.stderr,
        )
        return None
    by = {r["key"]: r for r in doc["results"] if not r.get("skipped") and "median" in r}
    sizes: list[int] = []
    series: dict[str, list[tuple[float, float, float]]] = {n: [] for n in DAEMONS}
    ratios: list[float] = []
    for key in CHART_KEYS:
        r = by.get(key)
        if r is None or "ratio" not in r or not r.get("blob_size"):
            continue
        size = r["blob_size"]
        scale = size / 1e6 if r["unit"] == "blobs/s" else 1.0  # blobs/s -> MB/s
        sizes.append(size)
        ratios.append(r["ratio"])
        for n in DAEMONS:
            vals = [v * scale for v in r["median"][n]["values"]]
            series[n].append((r["median"][n]["value"] * scale, min(vals), max(vals)))
    if len(sizes) < 2:
        print("bench: note: fewer than two blob sizes measured, so no chart was written", file=sys.stderr)
        return None
    m = doc.get("machine", {})
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"ctrd": "tab:blue", "containerd": "tab:orange"}
    for n in DAEMONS:
        med = [p[0] for p in series[n]]
        err = [[p[0] - p[1] for p in series[n]], [p[2] - p[0] for p in series[n]]]
        ax.errorbar(sizes, med, yerr=err, marker="o", capsize=3, label=n, color=colors[n])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [_label(s) for s in sizes])
    ax.set_xlabel("blob size (SDK write_blob, one blob at a time)")
    ax.set_ylabel("ingest throughput, MB/s (median; bars: min-max)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    axr.plot(sizes, ratios, marker="o", color="tab:green")
    axr.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axr.set_xscale("log", base=2)
    axr.set_xticks(sizes, [_label(s) for s in sizes])
    axr.set_ylim(0, max(1.5, max(ratios) * 1.15))
    axr.set_xlabel("blob size")
    axr.set_ylabel("ctrd / containerd throughput")
    axr.grid(True, alpha=0.3)
    load = m.get("loadavg_start", [0.0])[0]
    runs = doc.get("params", {}).get("runs", "?")
    fig.suptitle(
        f"ctrd vs containerd 1.6: SDK ingest throughput against blob size\n"
        f"{m.get('cpus', '?')} CPUs ({m.get('cpu', '?')}), load average {load:.1f} at start, "
        f"{runs} alternating runs, {m.get('date', '')}",
        fontsize=9,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _label(n: int) -> str:
    if n >= 1 << 30:
        return f"{n >> 30} GiB"
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    return f"{n >> 10} KiB"


def write_json(out_dir: Path, doc: Mapping[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path
