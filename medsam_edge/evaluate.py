"""Score a folder of challenge segmentations against the ground truth (DSC and NSD per case, per modality, overall).

File layout (the LiteMedSAM challenge's)
----------------------------------------
* ``gt_dir`` holds one ``.npz`` per case with the label map under ``gts`` and, for 3D cases, the voxel size under
  ``spacing``; ``seg_dir`` holds the segmentation of the same case under the same file name, key ``segs``.
  Files are read with ``allow_pickle=False``.
* ``2D*`` files are 2D cases, ``(y, x)`` label maps; ``3D*`` files are 3D cases, ``(z, y, x)`` label maps. A name
  with neither prefix is classified by the number of axes of its ``gts``.
* The modality is the second ``_``-separated token of the file name: ``3DBox_MR_0001.npz`` -> ``MR``
  (``unknown`` if there is none).

Spacing
-------
The arrays are ``(z, y, x)`` but the challenge's data preparation stored ``spacing`` as ITK gives it, ``(x, y, z)``
(bowang-lab/MedSAM issue 401). By default (``spacing_order="xyz"``) the stored triple is therefore reversed to
``(sz, sy, sx)`` before use, which is the physically right NSD. ``spacing_order="zyx"`` uses the stored triple as it
is, in array-axis order -- which is what the challenge's own ``compute_metrics.py`` does (it passes the stored
value straight to the surface-distance code), so that setting reproduces the official numbers. ``spacing=`` forces one
``(sz, sy, sx)`` for every 3D case. 2D cases always use 1 pixel, as the challenge does; stored 2D spacings are ignored.

Scoring follows :func:`medsam_edge.metrics.compute_dsc_nsd` (see there for the label rules and the DSC <= 0.2 rule).
A case whose segmentation file is missing scores DSC 0 and NSD 0 and is listed in :attr:`EvalReport.missing`.
A case whose ground truth has no foreground label has no score (``nan``); it is listed and left out of the means.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .errors import ConfigurationError, InvalidImageError, UnreadableFileError
from .metrics import NSD_2D_MODES, CaseScores, _check_tolerance, compute_dsc_nsd

__all__ = [
    "CaseResult",
    "EvalReport",
    "ModalitySummary",
    "SPACING_ORDERS",
    "case_dimension",
    "case_modality",
    "evaluate_folder",
    "load_case_spacing",
]

#: Accepted values of ``spacing_order``: the axis order in which the ``.npz`` files store ``spacing``.
SPACING_ORDERS = ("xyz", "zyx")

PathLike = str | os.PathLike


@dataclass(frozen=True)
class CaseResult:
    """Score of one case.

    ``status`` is ``"ok"``, ``"missing"`` (no segmentation file: DSC 0, NSD 0) or ``"no-foreground"`` (the ground
    truth has no label: DSC and NSD ``nan``, not counted in means). ``spacing`` is the one used, in array-axis order:
    ``(sy, sx)`` for 2D, ``(sz, sy, sx)`` for 3D. ``scores`` holds the per-label detail (None when missing).
    """

    case: str
    modality: str
    dim: str
    dsc: float
    nsd: float
    status: str
    spacing: tuple[float, ...] | None
    scores: CaseScores | None


@dataclass(frozen=True)
class ModalitySummary:
    """Mean DSC / NSD over the scored cases of one modality (missing segmentations count as 0)."""

    modality: str
    cases: int
    mean_dsc: float
    mean_nsd: float


@dataclass(frozen=True)
class EvalReport:
    """Result of :func:`evaluate_folder`.

    ``mean_dsc`` / ``mean_nsd`` average all scored cases (each case weighs the same; missing segmentations count as
    0, ``no-foreground`` cases are left out). ``modality_mean_dsc`` / ``modality_mean_nsd`` average the per-modality
    means (each modality weighs the same). ``missing`` lists ground-truth cases without a segmentation file;
    ``unmatched`` lists segmentation files without a ground truth (not scored); ``no_foreground`` lists cases whose
    ground truth has no label.
    """

    cases: tuple[CaseResult, ...]
    modalities: Mapping[str, ModalitySummary]
    mean_dsc: float
    mean_nsd: float
    modality_mean_dsc: float
    modality_mean_nsd: float
    missing: tuple[str, ...]
    unmatched: tuple[str, ...]
    no_foreground: tuple[str, ...]
    tolerance: float
    spacing_order: str
    spacing_override: tuple[float, float, float] | None
    nsd_2d: str

    def to_markdown(self) -> str:
        """A Markdown summary: settings, per-modality table, overall means, per-case table, missing files."""
        lines = [
            f"## Segmentation evaluation: {len(self.cases)} cases",
            "",
            f"- NSD tolerance: {self.tolerance:g} (mm for 3D cases, pixels for 2D cases)",
            "- 3D spacing: "
            + (
                f"forced to (sz, sy, sx) = {self.spacing_override}"
                if self.spacing_override is not None
                else f"read from the ground-truth files, stored order assumed ({', '.join(self.spacing_order)}), "
                "used as (sz, sy, sx)"
            ),
            f"- 2D NSD mode: {self.nsd_2d}",
            f"- Missing segmentations (scored 0): {len(self.missing)}",
            "",
            "| Modality | Cases | DSC | NSD |",
            "| --- | ---: | ---: | ---: |",
        ]
        for mod in sorted(self.modalities):
            m = self.modalities[mod]
            lines.append(f"| {m.modality} | {m.cases} | {_fmt(m.mean_dsc)} | {_fmt(m.mean_nsd)} |")
        scored = sum(m.cases for m in self.modalities.values())
        lines.append(f"| **All cases** | {scored} | {_fmt(self.mean_dsc)} | {_fmt(self.mean_nsd)} |")
        lines.append(
            f"| **Mean of modalities** | {len(self.modalities)} | {_fmt(self.modality_mean_dsc)} | "
            f"{_fmt(self.modality_mean_nsd)} |"
        )
        lines += ["", "| Case | Modality | Dim | DSC | NSD | Status |", "| --- | --- | --- | ---: | ---: | --- |"]
        for c in self.cases:
            lines.append(f"| {c.case} | {c.modality} | {c.dim} | {_fmt(c.dsc)} | {_fmt(c.nsd)} | {c.status} |")
        for title, items in (
            ("Missing segmentations", self.missing),
            ("Ground truths without foreground (not scored)", self.no_foreground),
            ("Segmentations without ground truth (not scored)", self.unmatched),
        ):
            if items:
                lines += ["", f"{title}: " + ", ".join(items)]
        return "\n".join(lines) + "\n"

    def to_csv(self, path: PathLike) -> Path:
        """Write one row per case (case, modality, dim, dsc, nsd, status, spacing) to ``path``; returns the path.

        Scores are written with 6 decimals (``nan`` when undefined); ``spacing`` is in array-axis order, values
        separated by spaces.
        """
        out = Path(path)
        with out.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "modality", "dim", "dsc", "nsd", "status", "spacing"])
            for c in self.cases:
                sp = "" if c.spacing is None else " ".join(f"{v:g}" for v in c.spacing)
                w.writerow([c.case, c.modality, c.dim, _fmt(c.dsc, 6), _fmt(c.nsd, 6), c.status, sp])
        return out


def _fmt(v: float, digits: int = 4) -> str:
    return "nan" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def case_modality(name: str) -> str:
    """Modality of a challenge file name: its second ``_``-token (``3DBox_MR_0001.npz`` -> ``MR``)."""
    tokens = Path(name).name.split("_")
    if len(tokens) >= 2 and tokens[1]:
        return tokens[1].removesuffix(".npz")
    return "unknown"


def case_dimension(name: str, ndim: int | None = None) -> str:
    """``"2D"`` or ``"3D"`` from the file-name prefix, else from the number of axes of the label map."""
    base = Path(name).name
    if base.startswith("3D"):
        return "3D"
    if base.startswith("2D"):
        return "2D"
    if ndim in (2, 3):
        return f"{ndim}D"
    raise InvalidImageError(
        f"cannot tell whether {base} is a 2D or a 3D case: the name starts with neither '2D' nor '3D' and the label "
        f"map has {ndim} axes (expected 2 for (y, x) or 3 for (z, y, x))"
    )


def _read_npz(path: Path, key: str, role: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The array under ``key`` and the ``spacing`` array (or None) of a challenge ``.npz``."""
    if not path.is_file():
        raise UnreadableFileError(f"{role} file {path} does not exist or is not a file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):  # pragma: no cover - np.load gives an NpzFile for zips
                raise UnreadableFileError(f"{role} file {path} is not an .npz archive")
            if key not in data.files:
                raise UnreadableFileError(
                    f"{role} file {path} has no '{key}' array (it has: {', '.join(data.files) or 'nothing'}); "
                    f"expected the label map under '{key}'"
                )
            arr = np.asarray(data[key])
            spacing = np.asarray(data["spacing"]) if "spacing" in data.files else None
    except UnreadableFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UnreadableFileError(f"cannot read {role} file {path} as an .npz archive of arrays: {exc}") from exc
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidImageError(f"'{key}' in {role} file {path} must hold integer labels, got dtype {arr.dtype}")
    return arr, spacing


def load_case_spacing(
    stored, name: str, spacing_order: str = "xyz", spacing: Sequence[float] | None = None
) -> tuple[float, float, float]:
    """The ``(sz, sy, sx)`` spacing of a 3D case from its stored ``spacing`` array (see the module docstring).

    ``spacing`` (already ``(sz, sy, sx)``) wins when given. ``spacing_order`` says how ``stored`` is ordered:
    ``"xyz"`` (the challenge files; reversed here) or ``"zyx"`` (used as is).
    """
    if spacing_order not in SPACING_ORDERS:
        raise ConfigurationError(f"spacing_order must be one of {SPACING_ORDERS}, got {spacing_order!r}")
    if spacing is not None:
        vals = np.asarray(spacing, dtype=float).reshape(-1)
        what = "the spacing override"
    else:
        if stored is None:
            raise UnreadableFileError(
                f"3D case {name} has no 'spacing' array in its ground-truth file; NSD of a 3D case needs the voxel "
                "size (pass spacing=(sz, sy, sx) to evaluate_folder to supply one)"
            )
        try:
            vals = np.asarray(stored, dtype=float).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidImageError(f"'spacing' of 3D case {name} is not numeric: {stored!r}") from exc
        what = f"'spacing' of 3D case {name}"
    if vals.size != 3 or not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise InvalidImageError(f"{what} must be 3 finite values > 0, got {vals.tolist()}")
    if spacing is None and spacing_order == "xyz":
        vals = vals[::-1]
    return (float(vals[0]), float(vals[1]), float(vals[2]))


def evaluate_folder(
    seg_dir: PathLike,
    gt_dir: PathLike,
    tolerance: float = 2.0,
    *,
    spacing_order: str = "xyz",
    spacing: Sequence[float] | None = None,
    nsd_2d: str = "challenge",
) -> EvalReport:
    """Score every ground-truth ``.npz`` of ``gt_dir`` against the same-named file of ``seg_dir``.

    ``tolerance`` is the NSD tolerance: mm for 3D cases (with the case's spacing), pixels for 2D cases.
    ``spacing_order`` says how the files store ``spacing``: ``"xyz"`` (default, ITK order as the challenge files
    have it; reversed to ``(sz, sy, sx)``) or ``"zyx"`` (used as is -- this also reproduces the challenge script).
    ``spacing`` forces one ``(sz, sy, sx)`` spacing for all 3D cases. ``nsd_2d`` is passed to
    :func:`medsam_edge.metrics.compute_dsc_nsd` (``"challenge"`` or ``"contour"``).

    Raises :class:`UnreadableFileError` for a missing folder, a folder without ground truth, or an unreadable /
    malformed file (including a 3D ground truth without ``spacing`` when no override is given), and
    :class:`InvalidImageError` when a segmentation's shape differs from its ground truth.
    """
    seg_root, gt_root = Path(seg_dir), Path(gt_dir)
    for role, root in (("segmentation", seg_root), ("ground-truth", gt_root)):
        if not root.is_dir():
            raise UnreadableFileError(f"{role} folder {root} does not exist or is not a folder")
    if spacing_order not in SPACING_ORDERS:
        raise ConfigurationError(f"spacing_order must be one of {SPACING_ORDERS}, got {spacing_order!r}")
    if nsd_2d not in NSD_2D_MODES:
        raise ConfigurationError(f"nsd_2d must be one of {NSD_2D_MODES}, got {nsd_2d!r}")
    tolerance = _check_tolerance(tolerance)
    override = None
    if spacing is not None:
        override = load_case_spacing(None, "(override)", "zyx", spacing)
    gt_files = sorted(p for p in gt_root.iterdir() if p.suffix == ".npz" and p.is_file())
    if not gt_files:
        raise UnreadableFileError(f"ground-truth folder {gt_root} holds no .npz files")
    gt_names = {p.name for p in gt_files}
    unmatched = tuple(sorted(p.name for p in seg_root.iterdir() if p.suffix == ".npz" and p.name not in gt_names))

    results: list[CaseResult] = []
    for gt_path in gt_files:
        name = gt_path.name
        gts, stored_spacing = _read_npz(gt_path, "gts", "ground-truth")
        dim = case_dimension(name, gts.ndim)
        want = 3 if dim == "3D" else 2
        if gts.ndim != want:
            axes = "(z, y, x)" if want == 3 else "(y, x)"
            raise InvalidImageError(
                f"ground truth of {dim} case {name} must be a {want}-axis {axes} label map, got shape {gts.shape}"
            )
        case_sp = load_case_spacing(stored_spacing, name, spacing_order, override) if dim == "3D" else (1.0, 1.0)
        modality = case_modality(name)
        seg_path = seg_root / name
        if not seg_path.exists():
            results.append(CaseResult(name, modality, dim, 0.0, 0.0, "missing", case_sp, None))
            continue
        segs, _ = _read_npz(seg_path, "segs", "segmentation")
        if segs.shape != gts.shape:
            raise InvalidImageError(
                f"segmentation {seg_path} has shape {segs.shape} but its ground truth {gt_path} has shape "
                f"{gts.shape}; they must match"
            )
        scores = compute_dsc_nsd(segs, gts, case_sp, tolerance, nsd_2d=nsd_2d)
        status = "no-foreground" if math.isnan(scores.mean_dsc) else "ok"
        results.append(CaseResult(name, modality, dim, scores.mean_dsc, scores.mean_nsd, status, case_sp, scores))

    by_mod: dict[str, list[CaseResult]] = {}
    for r in results:
        if r.status != "no-foreground":
            by_mod.setdefault(r.modality, []).append(r)
    modalities = {
        mod: ModalitySummary(mod, len(rs), float(np.mean([r.dsc for r in rs])), float(np.mean([r.nsd for r in rs])))
        for mod, rs in sorted(by_mod.items())
    }
    scored = [r for r in results if r.status != "no-foreground"]
    nan = float("nan")
    return EvalReport(
        cases=tuple(results),
        modalities=MappingProxyType(modalities),
        mean_dsc=float(np.mean([r.dsc for r in scored])) if scored else nan,
        mean_nsd=float(np.mean([r.nsd for r in scored])) if scored else nan,
        modality_mean_dsc=float(np.mean([m.mean_dsc for m in modalities.values()])) if modalities else nan,
        modality_mean_nsd=float(np.mean([m.mean_nsd for m in modalities.values()])) if modalities else nan,
        missing=tuple(r.case for r in results if r.status == "missing"),
        unmatched=unmatched,
        no_foreground=tuple(r.case for r in results if r.status == "no-foreground"),
        tolerance=tolerance,
        spacing_order=spacing_order,
        spacing_override=override,
        nsd_2d=nsd_2d,
    )
