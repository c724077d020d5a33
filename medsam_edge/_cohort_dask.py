"""The Dask side of :mod:`medsam_edge.cohort` (imported only when a cohort runs: it needs ``distributed``).

* :class:`SegmenterPlugin`: a ``WorkerPlugin`` whose ``setup`` builds one Segmenter on the worker from a plain
  configuration dict; every task on that worker reuses it. A worker that is restarted (its process died) runs
  ``setup`` again; a worker that joins later gets the plugin from the scheduler.
* :func:`run_case`: the task, one case -> one results row; medsam_edge errors become an ``error`` row (a corrupt
  file fails the same way on every worker, so retrying it is pointless), anything else is raised for Dask to retry.
* :func:`connect`: a ``LocalCluster`` of process workers (one Dask thread each), or a ``Client`` to a running
  scheduler, or a client the caller owns.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from .errors import MedsamEdgeError

PLUGIN_PREFIX = "medsam-edge-segmenter"
#: Test hook: ``"<case file name>|<marker path>"``. The first attempt of that case writes its worker's pid to the
#: marker and sleeps, so that a test can kill the worker mid-case; later attempts (marker present) run normally.
STALL_ENV = "MEDSAM_EDGE_COHORT_TEST_STALL"


class SegmenterPlugin(WorkerPlugin):
    """Builds one :class:`~medsam_edge.Segmenter` per worker (OpenVINO objects do not pickle: the config travels)."""

    idempotent = True  # registering the same configuration again keeps the workers' Segmenters

    def __init__(self, config: dict) -> None:
        self.config = dict(config)
        self.name = plugin_name(self.config)
        self.segmenter = None
        self.threads = None

    def setup(self, worker) -> None:
        from .segmenter import Segmenter

        threads = self.config.get("threads") or worker.state.nthreads
        self.segmenter = Segmenter(precision=self.config["precision"], device=self.config.get("device", "CPU"),
                                   threads=int(threads), cpu_pinning=False)
        self.threads = int(threads)

    def teardown(self, worker) -> None:
        self.segmenter = None


def plugin_name(config: dict) -> str:
    items = ",".join(f"{k}={config[k]}" for k in sorted(config))
    return f"{PLUGIN_PREFIX}[{items}]"


def _stall_for_test(case: str) -> None:
    hook = os.environ.get(STALL_ENV)
    if not hook or "|" not in hook:
        return
    name, marker = hook.split("|", 1)
    if name != case or os.path.exists(marker):
        return
    temp = f"{marker}.tmp-{os.getpid()}"
    with open(temp, "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(temp, marker)
    time.sleep(600)


def run_case(spec, plugin: str, window=None, strategy=None, slice_step: int = 1) -> dict:
    """One case on this worker's Segmenter -> a results row (see :data:`medsam_edge.cohort.COLUMNS`)."""
    from .jobs import read_boxes_json, segment_case

    worker = get_worker()
    segmenter = worker.plugins[plugin].segmenter
    t0 = time.perf_counter()
    row = {"case": spec.case, "worker": worker.address, "error": ""}
    _stall_for_test(spec.case)
    try:
        boxes = read_boxes_json(spec.boxes_file) if spec.boxes_file else spec.boxes
        result = segment_case(segmenter, spec.path, spec.output, boxes=boxes, window=window, strategy=strategy,
                              slice_step=slice_step)
    except MedsamEdgeError as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {exc}", segment_seconds="")
    else:
        row.update(status="ok", segment_seconds=f"{result.seconds:.4f}")
    row["seconds"] = f"{time.perf_counter() - t0:.4f}"
    return row


class Session:
    """A client on a cluster, with the start-up time it took."""

    def __init__(self, client: Client, start_seconds: float) -> None:
        self.client = client
        self.start_seconds = start_seconds
        self.plugin: str | None = None

    def load_models(self, config: dict) -> dict[str, int]:
        """Register the Segmenter plugin (builds the model on every worker); returns {worker: OpenVINO threads}.

        The plugin is idempotent: a cluster that already carries the same configuration keeps its Segmenters. A
        model that fails to build (bad precision, missing model files) is raised here, before any case runs.
        """
        plugin = SegmenterPlugin(config)
        self.plugin = plugin.name
        self.client.register_plugin(plugin, name=plugin.name)
        return self.client.run(_plugin_threads, plugin.name)

    def submit(self, specs: Sequence, *, window=None, strategy=None, slice_step: int = 1,
               retries: int = 2) -> Iterator:
        """Map the cases onto the workers; yields ``(spec, row, exception)`` as cases finish."""
        futures = self.client.map(run_case, list(specs), plugin=self.plugin, window=window, strategy=strategy,
                                  slice_step=slice_step, retries=retries, pure=False)
        by_key = {f.key: spec for f, spec in zip(futures, specs)}
        for future in as_completed(futures):
            spec = by_key[future.key]
            try:
                yield spec, future.result(), None
            except Exception as exc:  # noqa: BLE001 - KilledWorker, an unexpected error after its retries: one row
                yield spec, None, exc
            finally:
                future.release()


def _plugin_threads(name: str, dask_worker=None) -> int:
    plugin = dask_worker.plugins[name]
    if plugin.segmenter is None:
        raise MedsamEdgeError(f"worker {dask_worker.address}: the Segmenter plugin did not build its model")
    return plugin.threads


def local_cluster(workers: int) -> LocalCluster:
    """``workers`` process workers with one Dask thread each (one case at a time), no dashboard."""
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)


@contextlib.contextmanager
def connect(*, client: Client | None = None, address: str | None = None, workers: int = 2) -> Iterator[Session]:
    """A :class:`Session` on the caller's client, on the scheduler at ``address``, or on a new local cluster."""
    t0 = time.perf_counter()
    if client is not None:
        yield Session(client, 0.0)
        return
    if address is not None:
        with Client(address) as own:
            yield Session(own, time.perf_counter() - t0)
        return
    with local_cluster(workers) as cluster, Client(cluster) as own:
        own.wait_for_workers(workers)
        yield Session(own, time.perf_counter() - t0)
