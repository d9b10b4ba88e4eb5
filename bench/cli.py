"""``python -m bench``: ctrd against a private containerd, same machine, same run.

Starts both daemons under one short ``/tmp`` directory, runs each scenario
``--runs`` times after one warm-up round, alternating the daemons (the one that
goes first changes every round), prints the medians, the ratios and issue 8's
targets, and writes every sample to a JSON file in ``--out`` with a PNG chart
next to it. Some scenarios start daemons of their own (List, cold start, peak
RSS). Every daemon is always stopped, also on Ctrl-C or SIGTERM; the directory
is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.daemons import BenchError, Containerd, Ctrd, Daemon, find_binary
from bench.data import LargeBlob
from bench.probe import Sample
from bench.scenarios import SCENARIOS, Context, Params, Scenario, disk_estimate, keys

__all__ = ["main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
MIB = 1 << 20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark ctrd against a private containerd 1.6 in the same run (alternating runs).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 runs, 64 MiB large blob, 200 small blobs, 128 MiB admission and RSS "
        "blobs, 5,000 List blobs, 3 cold starts",
    )
    p.add_argument("--runs", type=int, help="measured runs per scenario and daemon (default 5; --quick 2)")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON and PNG results (%(default)s)"
    )
    p.add_argument(
        "--policy", choices=("shared", "isolated"), default="shared", help="content sharing policy"
    )
    p.add_argument(
        "--large-mib",
        type=int,
        help="blob size of the large ingest and read in MiB (default 256; --quick 64)",
    )
    p.add_argument("--small-count", type=int, help="number of 4 KiB blobs (default 2000; --quick 200)")
    p.add_argument("--concurrency", type=int, default=16, help="writers in the concurrent small ingest")
    p.add_argument("--admissions", type=int, help="admissions timed per run (default 20; --quick 10)")
    p.add_argument(
        "--admit-large-mib",
        type=int,
        help="large blob of the shared admission in MiB (default 1024; --quick 128)",
    )
    p.add_argument(
        "--rss-mib",
        type=int,
        help="blob of the peak-RSS ingest in MiB, after one of --large-mib (default 1024; --quick 128)",
    )
    p.add_argument(
        "--rss-runs", type=int, help="fresh daemons per kind for the peak RSS (default 3; --quick 1)"
    )
    p.add_argument("--list-count", type=int, help="blobs in the List daemons (default 100000; --quick 5000)")
    p.add_argument(
        "--list-match", type=int, help="List blobs carrying the filtered label (default 1000; --quick 50)"
    )
    p.add_argument(
        "--list-writers", type=int, default=64, help="concurrent Write streams filling the List daemons"
    )
    p.add_argument(
        "--starts", type=int, help="cold starts per daemon after one warm-up (default 10; --quick 3)"
    )
    p.add_argument(
        "--chart-mib",
        type=int,
        help="MiB per run of the 1 MiB and 16 MiB SDK ingests of the chart (default 64; --quick 16)",
    )
    p.add_argument(
        "--replot",
        type=Path,
        metavar="JSON",
        help="no benchmark: print the table and targets of a results JSON and (re)write its chart",
    )
    p.add_argument("--only", help=f"comma-separated scenario keys: {','.join(keys())}")
    p.add_argument("--containerd", help="containerd binary (default: from PATH)")
    p.add_argument("--ctr", help="ctr binary (default: from PATH)")
    p.add_argument(
        "--ctrd-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for ctrd (repeatable), e.g. MALLOC_MMAP_THRESHOLD_=16777216",
    )
    p.add_argument(
        "--no-client-patch",
        action="store_true",
        help="keep h2's per-frame repr() in the benchmark's own SDK client (patched away by default)",
    )
    p.add_argument(
        "--tmp", default="/tmp", help="parent of the benchmark directory (keep it short; %(default)s)"
    )
    p.add_argument("--keep", action="store_true", help="keep the benchmark directory (daemon logs, data)")
    return p


def _params(args: argparse.Namespace) -> Params:
    q = args.quick

    def pick(value: int | None, quick: int, full: int) -> int:
        return value if value is not None else (quick if q else full)

    p = Params(
        runs=pick(args.runs, 2, 5),
        large_size=pick(args.large_mib, 64, 256) * MIB,
        small_count=pick(args.small_count, 200, 2000),
        concurrency=args.concurrency,
        admissions=pick(args.admissions, 10, 20),
        policy=args.policy,
        admit_large_size=pick(args.admit_large_mib, 128, 1024) * MIB,
        rss_size=pick(args.rss_mib, 128, 1024) * MIB,
        rss_runs=pick(args.rss_runs, 1, 3),
        list_count=pick(args.list_count, 5000, 100_000),
        list_match=pick(args.list_match, 50, 1000),
        list_writers=args.list_writers,
        starts=pick(args.starts, 3, 10),
        chart_bytes=pick(args.chart_mib, 16, 64) * MIB,
    )
    counts = (p.runs, p.small_count, p.concurrency, p.admissions, p.rss_runs, p.list_count, p.list_match)
    counts += (p.list_writers, p.starts)
    sizes = (p.large_size, p.admit_large_size, p.rss_size, p.chart_bytes)
    if min(counts) < 1 or min(sizes) < MIB:
        raise BenchError("counts, runs and sizes must be >= 1")
    if p.list_match > p.list_count:
        raise BenchError("--list-match must not exceed --list-count")
    return p


def _compile_ctrd() -> dict[str, Any]:
    """Byte-compile ctrd's modules into ``__pycache__``, as installing its wheel does.

    A daemon then starts from ``.pyc`` files as an installed one would. Without
    this, an editable install under ``PYTHONDONTWRITEBYTECODE`` compiles every ctrd
    module from source at every start (about 90 ms of the cold start here).
    """
    import ctrd

    package = Path(ctrd.__file__).parent
    ok = compileall.compile_dir(str(package), quiet=1)
    return {
        "package": str(package),
        "compiled_ok": bool(ok),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def _check_disk(work: Path, params: Params, scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """Refuse to start when the benchmark directory's filesystem is short of space or inodes."""
    need = disk_estimate(params, scenarios) + (1 << 30)  # 1 GiB of margin
    st = os.statvfs(work)
    free = st.f_bavail * st.f_frsize
    inodes_need = 2 * params.list_count + 4 * (params.runs + 1) * params.small_count + 10_000
    if free < need:
        raise BenchError(
            f"{work} has {free / (1 << 30):.1f} GiB free; this run needs about {need / (1 << 30):.1f} GiB "
            "(use --tmp elsewhere, smaller sizes, or --only)"
        )
    if st.f_files and st.f_favail < inodes_need:
        raise BenchError(f"{work} has {st.f_favail} free inodes; this run needs about {inodes_need}")
    return {"free_gib": round(free / (1 << 30), 1), "estimated_need_gib": round(need / (1 << 30), 1)}


def _select(only: str | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    wanted = [k.strip() for k in only.split(",") if k.strip()]
    unknown = sorted(set(wanted) - set(keys()))
    if unknown:
        raise BenchError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(keys())}")
    return [s for s in SCENARIOS if s.key in wanted]


def _patch_client_h2() -> None:
    """h2 hex-encodes every received DATA frame for a trace log line nobody reads (notes §3.5).

    Only in this process (the benchmark client), so the SDK client costs less and the
    daemons' differences show; the daemons run unpatched code.
    """
    import hyperframe.frame

    hyperframe.frame.Frame.__repr__ = lambda self: type(self).__name__  # type: ignore[method-assign]


def _show(s: Scenario, p: Params, name: str, rnd: int, sample: Sample) -> None:
    v = report.sample_value(s.unit, s.work(p), sample)
    warm = " (warm-up)" if rnd == 0 else ""
    unit = {"ms": "ms/op", "s": "s/op"}.get(s.unit, s.unit)
    cpu = f", daemon CPU {sample.daemon_cpu:.2f} s" if name != "machine" else ""
    print(
        f"  {s.key:<26} r{rnd} {name:<10} {v:10.2f} {unit:<8} ({sample.seconds:.3f} s{cpu}, "
        f"other load {sample.other_cores:.2f} cores){warm}",
        flush=True,
    )


async def _run_all(ctx: Context, scenarios: Sequence[Scenario], results: list[dict[str, Any]]) -> None:
    p = ctx.params
    await ctx.connect()
    try:
        for i, s in enumerate(scenarios):
            title = s.title(p)
            reason = s.skip_reason(p)
            if reason:
                print(f"{title}: skipped ({reason})", flush=True)
                results.append(report.summarize(s.key, title, s.unit, s.work(p), {}, reason))
                continue
            print(f"{title}:", flush=True)
            load0 = os.getloadavg()[0]
            await s.setup(ctx)
            names = ["machine"] if s.machine else [d.kind for d in ctx.daemons]
            samples: dict[str, list[Sample]] = {n: [] for n in names}
            for rnd in range(0 if s.warmup else 1, s.runs(p) + 1):  # round 0 is the warm-up
                await s.prepare(ctx, rnd)
                order: list[Daemon | None] = [None] if s.machine else list(ctx.daemons)
                if rnd % 2:
                    order.reverse()
                for d in order:
                    if d is not None and not d.alive():
                        raise BenchError(f"{d.kind} is no longer running; last log lines:\n{d.log_tail()}")
                    sample = await s.run(ctx, d, rnd)
                    name = "machine" if d is None else d.kind
                    _show(s, p, name, rnd, sample)
                    if rnd > 0:
                        samples[name].append(sample)
            results.append(report.summarize(s.key, title, s.unit, s.work(p), samples, None, s.blob_size(p)))
            results[-1]["loadavg"] = [load0, os.getloadavg()[0]]  # 1-minute load at start and end
            if s.group and not any(t.group == s.group for t in scenarios[i + 1 :]):
                ctx.release(s.group)  # e.g. stop the List daemons before the cold starts
    finally:
        ctx.close()


def _finish(doc: dict[str, Any], path: Path | None) -> None:
    """Print the table and the targets; write the chart next to *path* (the JSON)."""
    results = doc["results"]
    derived = report.derive(results)
    report.print_table(results, derived)
    print()
    report.print_targets(doc.get("targets") or report.targets(results, derived), doc.get("params"))
    for name, m in doc.get("daemon_memory", {}).items():
        print(f"{name}: peak RSS {m['peak_rss_kib'] / 1024:.0f} MiB over the whole run (main daemon)")
    load = doc["machine"].get("loadavg_start"), doc["machine"].get("loadavg_end")
    if all(load):
        print(f"load average: {load[0][0]:.2f} at start, {load[1][0]:.2f} at the end (1 min)")
    if path is not None:
        png = report.write_chart(doc, path.with_suffix(".png"))
        print(f"results: {path}")
        if png is not None:
            print(f"chart: {png}")


def _replot(path: Path) -> int:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    _finish(doc, path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.replot:
        return _replot(args.replot)
    params = _params(args)
    scenarios = _select(args.only)
    containerd = find_binary(
        "containerd", args.containerd, "install Debian's containerd package (apt-get install containerd)"
    )
    ctr = find_binary(
        "ctr", args.ctr, "ctr comes with Debian's containerd package (apt-get install containerd)"
    )
    env = {}
    for item in args.ctrd_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BenchError(f"--ctrd-env expects NAME=VALUE, got {item!r}")
        env[name] = value
    if not args.no_client_patch:
        _patch_client_h2()

    work = Path(tempfile.mkdtemp(prefix="ctrdb-", dir=args.tmp))
    if len(str(work)) > 60:  # + "/containerd/containerd.sock.ttrpc" must fit in 107 bytes
        shutil.rmtree(work, ignore_errors=True)
        raise BenchError(f"--tmp path too long for unix sockets: {work}")
    daemons: list[Daemon] = [
        Ctrd(work / "ctrd", ctr, params.policy, env),
        Containerd(work / "ctd", ctr, params.policy, containerd),
    ]
    spawned: list[Daemon] = []  # started by scenarios; stopped here too, whatever happens
    results: list[dict[str, Any]] = []
    machine = report.machine_info(work, containerd, ctr)
    memory: dict[str, dict[str, int]] = {}
    completed = False
    try:
        machine["disk"] = disk = _check_disk(work, params, scenarios)
        print(
            f"bench: {machine['cpus']} CPUs ({machine['cpu']}), {machine['filesystem']}, "
            f"load average {machine['loadavg_start'][0]:.2f}; directory {work} "
            f"({disk['free_gib']} GiB free, about {disk['estimated_need_gib']} GiB needed)",
            flush=True,
        )
        print(
            f"bench: runs={params.runs} (+1 warm-up), large={params.large_size // MIB} MiB, "
            f"small={params.small_count} x 4 KiB, concurrency={params.concurrency}, "
            f"admissions={params.admissions} (large {params.admit_large_size // MIB} MiB), "
            f"list={params.list_count} ({params.list_match} labelled), starts={params.starts}, "
            f"rss={params.rss_size // MIB} MiB x {params.rss_runs}, policy={params.policy}",
            flush=True,
        )
        large = LargeBlob(work / "large.bin", params.large_size)
        machine["bytecode"] = _compile_ctrd()
        for d in daemons:
            d.start()
            print(f"bench: {d.kind} pid {d.pid} on {d.socket}", flush=True)
        # ctrd sets glibc malloc thresholds with mallopt at start (ctrd.server.cli.tune_malloc); record which
        machine["ctrd_malloc"] = {
            k: daemons[0].environ(k)
            for k in ("CTRD_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
        }
        ctx = Context(params=params, work=work, ctr=ctr, large=large, daemons=daemons, spawned=spawned)
        asyncio.run(_run_all(ctx, scenarios, results))
        for d in daemons:
            memory[d.kind] = {"peak_rss_kib": d.memory_kib("VmHWM"), "rss_kib": d.memory_kib("VmRSS")}
        completed = True
    finally:
        for d in [*spawned, *daemons]:
            rc = d.stop()
            if rc not in (None, 0) and not completed:
                print(f"bench: {d.kind} exited with {rc}; last log lines:\n{d.log_tail()}", file=sys.stderr)
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        if results:
            machine["loadavg_end"] = os.getloadavg()
            machine["code_end"] = end = report.code_state()
            start = machine["code_start"]
            if any(start[k] != end[k] for k in ("src_tree", "src_fingerprint")):
                print(
                    f"bench: warning: the code under src/ changed during the run ({start} -> {end}); "
                    "daemons started at different times may have run different code",
                    file=sys.stderr,
                )
            derived = report.derive(results)
            doc = {
                "machine": machine,
                "params": vars(params),
                "ctrd_env": env,
                "client_h2_patch": not args.no_client_patch,
                "complete": completed,
                "results": results,
                "derived": {k: v for k, v in derived.items() if k != "lines"},
                "targets": report.targets(results, derived),
                "daemon_memory": memory,
            }
            path = report.write_json(args.out, doc)
            print()
            if not completed:
                print("bench: PARTIAL results (interrupted or failed):")
            _finish(doc, path)
    return 0


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _bench(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; both daemons stopped", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGTERM, previous)
