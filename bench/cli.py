"""``python -m bench``: ctrd against a private containerd, same machine, same run.

Starts both daemons under one short ``/tmp`` directory, runs each scenario
``--runs`` times after one warm-up round, alternating the daemons (the one that
goes first changes every round), prints the medians and the ratios, and writes
every sample to a JSON file in ``--out``. Both daemons are always stopped, also on
Ctrl-C or SIGTERM; the directory is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from bench.scenarios import SCENARIOS, Context, Params, Scenario, keys

__all__ = ["main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
MIB = 1 << 20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark ctrd against a private containerd 1.6 in the same run (alternating runs).",
    )
    p.add_argument("--quick", action="store_true", help="2 runs, 64 MiB large blob, 200 small blobs")
    p.add_argument("--runs", type=int, help="measured runs per scenario and daemon (default 5; --quick 2)")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON results (%(default)s)"
    )
    p.add_argument(
        "--policy", choices=("shared", "isolated"), default="shared", help="content sharing policy"
    )
    p.add_argument("--large-mib", type=int, help="large blob size in MiB (default 256; --quick 64)")
    p.add_argument("--small-count", type=int, help="number of 4 KiB blobs (default 1000; --quick 200)")
    p.add_argument("--concurrency", type=int, default=16, help="writers in the concurrent small ingest")
    p.add_argument("--admissions", type=int, help="admissions timed per run (default 20; --quick 10)")
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
    runs = args.runs if args.runs is not None else (2 if q else 5)
    p = Params(
        runs=runs,
        large_size=(args.large_mib if args.large_mib is not None else (64 if q else 256)) * MIB,
        small_count=args.small_count if args.small_count is not None else (200 if q else 1000),
        concurrency=args.concurrency,
        admissions=args.admissions if args.admissions is not None else (10 if q else 20),
        policy=args.policy,
    )
    if p.runs < 1 or p.large_size < MIB or p.small_count < 1 or p.concurrency < 1 or p.admissions < 1:
        raise BenchError("--runs, --large-mib, --small-count, --concurrency and --admissions must be >= 1")
    return p


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
    v = report.display(s.unit, s.work(p), sample.seconds)
    warm = " (warm-up)" if rnd == 0 else ""
    unit = "ms/op" if s.unit == "ms" else s.unit
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
        for s in scenarios:
            title = s.title(p)
            reason = s.skip_reason(p)
            if reason:
                print(f"{title}: skipped ({reason})", flush=True)
                results.append(report.summarize(s.key, title, s.unit, s.work(p), {}, reason))
                continue
            print(f"{title}:", flush=True)
            await s.setup(ctx)
            names = ["machine"] if s.machine else [d.name for d in ctx.daemons]
            samples: dict[str, list[Sample]] = {n: [] for n in names}
            for rnd in range(p.runs + 1):  # round 0 is the warm-up
                await s.prepare(ctx, rnd)
                order: list[Daemon | None] = [None] if s.machine else list(ctx.daemons)
                if rnd % 2:
                    order.reverse()
                for d in order:
                    if d is not None and not d.alive():
                        raise BenchError(f"{d.name} is no longer running; last log lines:\n{d.log_tail()}")
                    sample = await s.run(ctx, d, rnd)
                    name = "machine" if d is None else d.name
                    _show(s, p, name, rnd, sample)
                    if rnd > 0:
                        samples[name].append(sample)
            results.append(report.summarize(s.key, title, s.unit, s.work(p), samples, None))
    finally:
        ctx.close()


def _bench(args: argparse.Namespace) -> int:
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
    results: list[dict[str, Any]] = []
    machine = report.machine_info(work, containerd, ctr)
    memory: dict[str, dict[str, int]] = {}
    completed = False
    try:
        print(
            f"bench: {machine['cpus']} CPUs ({machine['cpu']}), {machine['filesystem']}, "
            f"load average {machine['loadavg_start'][0]:.2f}; directory {work}",
            flush=True,
        )
        print(
            f"bench: runs={params.runs} (+1 warm-up), large={params.large_size // MIB} MiB, "
            f"small={params.small_count} x 4 KiB, concurrency={params.concurrency}, "
            f"admissions={params.admissions}, policy={params.policy}",
            flush=True,
        )
        large = LargeBlob(work / "large.bin", params.large_size)
        for d in daemons:
            d.start()
            print(f"bench: {d.name} pid {d.pid} on {d.socket}", flush=True)
        ctx = Context(params=params, work=work, ctr=ctr, large=large, daemons=daemons)
        asyncio.run(_run_all(ctx, scenarios, results))
        for d in daemons:
            memory[d.name] = {"peak_rss_kib": d.memory_kib("VmHWM"), "rss_kib": d.memory_kib("VmRSS")}
        completed = True
    finally:
        for d in daemons:
            rc = d.stop()
            if rc not in (None, 0) and not completed:
                print(f"bench: {d.name} exited with {rc}; last log lines:\n{d.log_tail()}", file=sys.stderr)
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        if results:
            machine["loadavg_end"] = os.getloadavg()
            derived = report.derive(results)
            doc = {
                "machine": machine,
                "params": vars(params),
                "ctrd_env": env,
                "client_h2_patch": not args.no_client_patch,
                "complete": completed,
                "results": results,
                "derived": {k: v for k, v in derived.items() if k != "lines"},
                "daemon_memory": memory,
            }
            path = report.write_json(args.out, doc)
            print()
            if not completed:
                print("bench: PARTIAL results (interrupted or failed):")
            report.print_table(results, derived)
            for name, m in memory.items():
                print(f"{name}: peak RSS {m['peak_rss_kib'] / 1024:.0f} MiB over the whole run")
            print(f"results: {path}")
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
