"""Cohorts on a Dask cluster: ``medsam-edge cohort INPUT -o OUT_DIR`` and :func:`run_cohort`.

Every case goes through :func:`medsam_edge.jobs.segment_case`, the function ``medsam-edge segment FOLDER`` uses, so
the outputs are the same files (name, format, geometry, atomic writes). What this module adds is the cohort: the
case list, one Segmenter per Dask worker (a ``WorkerPlugin`` builds it from a shipped configuration when the worker
starts; OpenVINO objects never travel), the results table and the resumption rule.

Inputs (:func:`find_cases`):

* a folder: every challenge ``.npz`` (boxes inside the file) and every NIfTI / NRRD / MHA volume
  (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``) with its boxes in a JSON file beside it named after the volume,
  ``case.nii.gz`` -> ``case.boxes.json`` (a list of ``[x0, y0, z0, x1, y1, z1]`` boxes, voxels, z inclusive, or
  ``{"boxes": [...]}``; the ``--boxes`` format of ``medsam-edge segment``). A side file beside a ``.npz`` replaces
  the boxes stored in it.
* a CSV manifest with columns ``path`` and ``boxes`` (optional): ``boxes`` is a JSON file or an inline JSON list;
  empty means the side file / the boxes inside the ``.npz``. Relative paths are relative to the manifest's folder.

Outputs in ``OUT_DIR``: one label map per case under the input's file name (``.npz`` -> ``segs``; volumes keep their
geometry) and ``results.csv`` (:data:`COLUMNS`), rewritten atomically while the run goes on. A case whose output
exists is skipped (status ``skipped``): outputs are written atomically, so an existing file is a finished one.
A case that fails with a medsam_edge error (corrupt file, bad boxes) gets status ``error`` and the message; the
run goes on. A worker that dies mid-case has the case retried on another worker by Dask; the temporary file of a write it
did not finish is removed when the command is run again.

Dask is an optional dependency (``pip install "medsam_edge[cohort]"``); ``import medsam_edge`` never imports it.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigurationError, UnreadableFileError
from .jobs import output_path
from .runtime import DEFAULT_PRECISION
from .volume import check_slice_step

#: Columns of ``results.csv``: ``seconds`` is the worker's wall time for the case (read, segment, write),
#: ``segment_seconds`` the segmentation alone (what ``efficiency.csv`` of ``segment FOLDER`` reports).
COLUMNS = ("case", "seconds", "segment_seconds", "worker", "status", "error")
RESULTS_NAME = "results.csv"
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
CASE_SUFFIXES = (".npz", *VOLUME_SUFFIXES)
BOXES_SUFFIX = ".boxes.json"


@dataclass(frozen=True)
class CaseSpec:
    """One case as it travels to a worker (plain strings and lists: pickles anywhere).

    Attributes:
        path: input file.
        output: label map to write.
        boxes_file: JSON boxes file, or None.
        boxes: inline boxes (manifest), or None.
    """

    path: str
    output: str
    boxes_file: str | None = None
    boxes: list | None = None

    @property
    def case(self) -> str:
        return Path(self.path).name


@dataclass
class CohortReport:
    """What :func:`run_cohort` did: one row per case (:data:`COLUMNS`) and where the time went.

    Attributes:
        rows: the results table, in case order.
        results_csv: the table on disk.
        timings: ``cluster_start`` (start or connect), ``models`` (one Segmenter built on every worker), ``run``
            (submitting to the last result), ``total`` seconds.
        workers: {worker address: OpenVINO threads of its Segmenter} when the models were loaded.
    """

    rows: list[dict]
    results_csv: Path
    timings: dict = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)


def _case_suffix(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(BOXES_SUFFIX):
        return None
    return next((s for s in sorted(CASE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def side_boxes_file(path: os.PathLike | str) -> Path:
    """The boxes JSON beside a case: ``case.nii.gz`` -> ``case.boxes.json``."""
    p = Path(path)
    suffix = _case_suffix(p) or p.suffix
    return p.with_name(p.name[: len(p.name) - len(suffix)] + BOXES_SUFFIX)


def _spec(path: Path, out_dir: Path, boxes_file: Path | None = None, boxes: list | None = None) -> CaseSpec:
    if boxes_file is None and boxes is None:
        side = side_boxes_file(path)
        if side.exists() or _case_suffix(path) != ".npz":
            boxes_file = side  # volumes need one: a missing side file is that case's error, reported in the table
    return CaseSpec(path=str(path), output=str(output_path(path, out_dir)),
                    boxes_file=str(boxes_file) if boxes_file is not None else None, boxes=boxes)


def _read_manifest(manifest: Path, out_dir: Path) -> list[CaseSpec]:
    try:
        text = manifest.read_text()
    except OSError as exc:
        raise UnreadableFileError(f"cannot read the manifest {manifest}: {exc}") from exc
    reader = csv.DictReader(_stdio.StringIO(text))
    if not reader.fieldnames or "path" not in reader.fieldnames:
        raise UnreadableFileError(
            f"{manifest}: no 'path' column (found {reader.fieldnames}); expected a CSV with columns path[,boxes]"
        )
    specs = []
    for line, row in enumerate(reader, start=2):
        raw = (row.get("path") or "").strip()
        if not raw:
            raise UnreadableFileError(f"{manifest}, line {line}: empty path")
        path = Path(raw) if Path(raw).is_absolute() else manifest.parent / raw
        boxes_text = (row.get("boxes") or "").strip()
        if boxes_text.startswith("["):
            try:
                specs.append(_spec(path, out_dir, boxes=json.loads(boxes_text)))
            except ValueError as exc:
                raise UnreadableFileError(f"{manifest}, line {line}: boxes are not a JSON list: {exc}") from exc
        elif boxes_text:
            boxes_path = Path(boxes_text)
            specs.append(_spec(path, out_dir, boxes_file=boxes_path if boxes_path.is_absolute()
                               else manifest.parent / boxes_path))
        else:
            specs.append(_spec(path, out_dir))
    return specs


def find_cases(source: os.PathLike | str, out_dir: os.PathLike | str) -> list[CaseSpec]:
    """The cases of a folder or a CSV manifest (see the module docstring), sorted as given / by name.

    Raises:
        UnreadableFileError: the source does not exist, holds no cases, or the manifest is malformed.
        ConfigurationError: two cases would write the same output name.
    """
    src, out = Path(source), Path(out_dir)
    if not src.exists():
        raise UnreadableFileError(f"{src} does not exist; expected a folder of cases or a CSV manifest")
    if src.is_dir():
        specs = [_spec(p, out) for p in sorted(src.iterdir()) if p.is_file() and _case_suffix(p)]
    elif src.suffix.lower() == ".csv":
        specs = _read_manifest(src, out)
    else:
        raise UnreadableFileError(f"{src}: expected a folder of cases or a CSV manifest (.csv)")
    if not specs:
        raise UnreadableFileError(
            f"{src} holds no cases; expected challenge .npz files or {', '.join(VOLUME_SUFFIXES)} volumes "
            f"with a {BOXES_SUFFIX} file beside each"
        )
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.output in seen:
            raise ConfigurationError(f"{spec.path} and {seen[spec.output]} would both write {spec.output}; "
                                     "case file names must be unique")
        seen[spec.output] = spec.path
    return specs


# ------------------------------------------------------------------------------------------------ results table
def read_results(path: Path) -> dict[str, dict]:
    """A previous ``results.csv`` by case (empty when there is none or it cannot be read)."""
    try:
        with open(path, newline="") as handle:
            return {row["case"]: row for row in csv.DictReader(handle) if row.get("case")}
    except (OSError, KeyError, csv.Error):
        return {}


def write_results(path: Path, rows: Iterable[dict]) -> None:
    """Write the table atomically (a reader sees the old table or the new one)."""
    from .io import _atomic_write

    rows = list(rows)

    def write(temp: str) -> None:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    _atomic_write(path, ".csv", write)


def _row(spec: CaseSpec, status: str, **fields: str) -> dict:
    """A results row (:data:`COLUMNS`); fields not given are empty."""
    return {**dict.fromkeys(COLUMNS, ""), "case": spec.case, "status": status, **fields}


def _skipped_row(spec: CaseSpec, previous: dict | None) -> dict:
    previous = previous or {}
    return _row(spec, "skipped", **{k: previous.get(k, "") for k in ("seconds", "segment_seconds", "worker")})


def _failed_row(spec: CaseSpec, exc: BaseException) -> dict:
    return _row(spec, "error", error=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------------- the run
def _dask():
    """The Dask-side module, or a ConfigurationError saying how to install it."""
    try:
        from . import _cohort_dask
    except ImportError as exc:
        raise ConfigurationError(
            f"the cohort runner needs Dask distributed ({exc}); install it with: pip install \"medsam_edge[cohort]\""
        ) from exc
    return _cohort_dask


def default_workers(threads_per_worker: int) -> int:
    """Local workers that fill the machine: CPUs // OpenVINO threads per worker (at least 1)."""
    return max(1, (os.cpu_count() or 1) // threads_per_worker)


def _check_counts(workers: int | None, threads_per_worker: int | None) -> None:
    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")


def run_cohort(
    source: os.PathLike | str,
    out_dir: os.PathLike | str,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    address: str | None = None,
    client=None,
    precision: str = DEFAULT_PRECISION,
    device: str = "CPU",
    window: str | tuple[float, float] | None = None,
    strategy: str | None = None,
    slice_step: int = 1,
    retries: int = 2,
    progress: bool | None = None,
    flush_seconds: float = 2.0,
) -> CohortReport:
    """Segment every case of ``source`` into ``out_dir`` on a Dask cluster; returns the results table.

    Args:
        source: a folder of cases or a CSV manifest (see the module docstring).
        out_dir: output folder (created); label maps under the inputs' names and ``results.csv``.
        workers: local cluster size (None: CPUs // ``threads_per_worker``); ignored with ``address`` / ``client``.
        threads_per_worker: OpenVINO threads of each worker's Segmenter (``INFERENCE_NUM_THREADS``; CPU pinning is
            off so that workers sharing a machine do not pin the same cores). None: 1 on a local cluster, the
            threads Dask gave the worker (``dask worker --nthreads``) on a running one. Workers x threads should
            not exceed a machine's cores.
        address: scheduler address of a running cluster (``dask scheduler``) to join instead of starting one.
        client: an open ``distributed.Client`` to use (left open), e.g. one shared by several runs.
        precision, device: the Segmenter's options on every worker.
        window, strategy, slice_step: as ``medsam-edge segment --window / --strategy / --slice-step``.
        retries: Dask retries of a case whose worker died or that raised an unexpected error.
        progress: tqdm bar over finished cases (None: when stderr is a terminal).
        flush_seconds: ``results.csv`` is rewritten at most this often while the run goes on (and at the end).

    Raises:
        ConfigurationError: Dask is not installed, or an option is out of range.
        UnreadableFileError: the source holds no cases.
        MedsamEdgeError: the model could not be built on the workers (the message of the first failure).
    """
    _check_counts(workers, threads_per_worker)
    slice_step = check_slice_step(slice_step)
    if workers is not None and (address is not None or client is not None):
        raise ConfigurationError("workers is the size of a local cluster; with address/client the cluster's own "
                                 "workers are used (start them with `dask worker ADDRESS --nworkers N`)")
    t_start = time.perf_counter()
    out = Path(out_dir)
    specs = find_cases(source, out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    results_csv = out / RESULTS_NAME
    previous = read_results(results_csv)
    done = {s.case for s in specs if Path(s.output).exists()}
    todo = [s for s in specs if s.case not in done]
    rows: dict[str, dict] = {s.case: _skipped_row(s, previous.get(s.case)) for s in specs if s.case in done}
    report = CohortReport(rows=[], results_csv=results_csv)
    if todo:
        backend = _dask()
        joined = address is not None or client is not None
        threads = threads_per_worker if threads_per_worker is not None or joined else 1
        config = {"precision": precision, "device": device, "threads": threads}
        with backend.connect(client=client, address=address,
                             workers=workers or default_workers(threads or 1)) as session:
            report.timings["cluster_start"] = session.start_seconds
            t0 = time.perf_counter()
            report.workers = session.load_models(config)
            report.timings["models"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            _collect(session.submit(todo, window=window, strategy=strategy, slice_step=slice_step,
                                    retries=retries), rows, specs,
                     results_csv, progress, flush_seconds)
            report.timings["run"] = time.perf_counter() - t0
    report.rows = [rows[s.case] for s in specs]
    write_results(results_csv, report.rows)
    report.timings["total"] = time.perf_counter() - t_start
    return report


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of writers killed before their rename (``.NAME.tmp-XXXX.SUFFIX``, see ``io._atomic_write``)."""
    for temp in out.glob(".*.tmp-*"):
        try:
            temp.unlink()
        except OSError:
            pass


def _collect(results, rows: dict, specs: Sequence[CaseSpec], results_csv: Path, progress: bool | None,
             flush_seconds: float) -> None:
    """Put each finished case into ``rows`` as it arrives; keep ``results.csv`` current."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    pending = [s for s in specs if s.case not in rows]
    bar = tqdm(total=len(pending), desc="cases", unit="case", disable=not show)
    last = time.perf_counter()
    try:
        for spec, row, exc in results:
            rows[spec.case] = row if exc is None else _failed_row(spec, exc)
            bar.update(1)
            if time.perf_counter() - last >= flush_seconds:
                write_results(results_csv, [rows.get(s.case) or _pending_row(s) for s in specs])
                last = time.perf_counter()
    finally:
        bar.close()


def _pending_row(spec: CaseSpec) -> dict:
    return _row(spec, "pending")
