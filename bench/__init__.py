"""Side-by-side benchmark of ctrd against a private containerd 1.6 on the same machine.

Run ``python -m bench --help``. The package starts both daemons on private
directories under one short ``/tmp`` directory (same filesystem), runs every
scenario several times alternating the two daemons, and prints the medians, the
ratio ctrd/containerd (as a throughput ratio: above 1 means ctrd is faster) and
issue 8's targets, with a JSON file and a PNG chart (ingest throughput against
blob size). The List, cold-start and peak-RSS scenarios start daemons of their
own, so their blobs and memory stay out of the other scenarios' way.
See ``docs/performance.md`` for the method and the numbers.

Modules:

* :mod:`bench.daemons` -- start/stop ctrd and containerd, per-process CPU and RSS;
* :mod:`bench.data` -- benchmark payloads (a large random blob made unique per run, a file-only
  1 GiB blob, small blobs, the List blobs);
* :mod:`bench.scenarios` -- the scenarios; each is one class with ``setup``/``run``/``after``;
* :mod:`bench.sdk` -- the SDK store/writer used against both daemons (COMMIT half-closes the stream);
* :mod:`bench.probe` -- CPU/fault/load sampling and the machine's write+sha256+fsync limit;
* :mod:`bench.report` -- machine description, result table, issue 8's targets, JSON, chart;
* :mod:`bench.cli` -- argument parsing and the alternation loop.
"""
