"""Atomic writes and provenance: every artifact appears whole or not at all.

An interrupted job never leaves a file that looks finished: we write to a temporary
name in the same directory, fsync, then rename (atomic on POSIX).

Artifacts are byte-reproducible: the same inputs, config and seed give the same sha256. `save_torch`
serializes in memory (the archive's internal name is constant, not the temporary file's), files get the
permissions of any new file under the umask, and wall-clock timings never go into an artifact: they go
to a `<file>.timing.json` sidecar (`write_timing` / `read_timing`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import platform
import secrets
import subprocess
import types
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The temporary file is created empty with mode 0666 minus the umask (0644 under umask 022), like any
    new file, not mkstemp's 0600; the block may write it by name (truncating keeps the mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # another writer's temporary name: draw again
            continue
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _ValuePickler(pickle.Pickler):
    """Pickles without a memo, so the bytes depend on values only: with one, a string written twice is a
    back-reference or not depending on whether both are the same object (a resumed run's dict keys come
    from a checkpoint, an uninterrupted run's from the code). Artifacts hold plain data, never cycles."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = True


_BY_VALUE = types.ModuleType("pickle_by_value")  # what torch.save takes as its `pickle_module`
_BY_VALUE.Pickler = _ValuePickler


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically and byte-reproducibly: equal objects give equal files, whatever the path.
    Keep contents to tensors and plain types (no timings) so `load_torch` stays weights_only."""
    buf = io.BytesIO()  # torch.save into a file names the archive after the file; a buffer's is constant
    torch.save(obj, buf, pickle_module=_BY_VALUE)
    write_bytes(buf.getvalue(), path)


def write_bytes(data: bytes, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def publish(source: str | os.PathLike, dest: str | os.PathLike) -> None:
    """`nndiff publish`: copy a profile's report (results/<profile>/...) to its committed folder, atomically."""
    import logging
    write_bytes(Path(source).read_bytes(), dest)
    logging.getLogger("nndiff.artifacts").info("published %s -> %s", source, dest)


TORCH_FILE = "a torch file of tensors and plain types, as nndiff writes them"


def load_torch(path: str | os.PathLike, *, what: str = TORCH_FILE, keys: tuple[str, ...] = ()) -> Any:
    """torch.load on the CPU, weights_only. A file that cannot be what the caller expects fails with one line
    naming it and `what` was expected: missing (FileNotFoundError), a directory, truncated, a pickle of
    arbitrary objects (weights_only refuses it), or, given `keys`, anything but a dict holding them (ValueError)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; expected {what}")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected {what}")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would be a second line of output
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message is 20+ lines; the reason is after "WeightsUnpickler error:"
        reason = str(e).split("WeightsUnpickler error:", 1)[-1].strip().split(". ")[0].splitlines()[0]
        raise ValueError(f"{path}: expected {what}, but weights_only loading refuses it ({reason}): a pickle of other "
                         "objects, or no torch file at all") from e
    except (RuntimeError, EOFError, IndexError, ValueError) as e:
        reason = (str(e).strip().split(". ")[0].splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: truncated or not a torch file ({reason}); expected {what}") from e
    missing = [k for k in keys if k not in obj] if isinstance(obj, dict) else list(keys)
    if missing:
        held = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ValueError(f"{path}: expected {what}, but it holds {held}, without {missing}")
    return obj


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", path)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`; broken JSON fails naming the file and the line."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


TIMING_SUFFIX = ".timing.json"


def timing_path(path: str | os.PathLike) -> Path:
    """The wall-clock sidecar of an artifact: `<file>.timing.json` (timings differ run to run; artifacts do not)."""
    return Path(str(path) + TIMING_SUFFIX)


def write_timing(path: str | os.PathLike, **timing: Any) -> None:
    """Write the timings (seconds, JSON-able) of the artifact at `path` to its sidecar."""
    write_json(timing, timing_path(path))


def read_timing(path: str | os.PathLike) -> dict:
    """The timings of the artifact at `path`; {} when it has no sidecar (e.g. built before sidecars existed)."""
    p = timing_path(path)
    return read_json(p) if p.exists() else {}


def config_hash(cfg: Any) -> str:
    """Short stable hash of a JSON-able config, for provenance footers."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def git_commit(repo: str | os.PathLike = ".") -> str:
    """Short HEAD, "-dirty" when tracked code or configs differ from it. Changes under reports/ do not count:
    they are outputs, and Snakemake removes a tracked report before the job that rewrites it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)reports"], cwd=repo, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> str:
    """One line naming the machine: CPU (cores) and GPU if any."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    desc = f"{cpu} ({os.cpu_count()} cores), torch {torch.__version__}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def provenance(cfg: Any = None) -> dict:
    """What every result file records about how it was made. `cfg`: the config (a path to its YAML is read,
    so every report of one config shows one hash)."""
    if isinstance(cfg, (str, os.PathLike)) and Path(cfg).is_file():
        import yaml
        cfg = yaml.safe_load(Path(cfg).read_text())
    return {"commit": git_commit(Path(__file__).resolve().parent.parent), "hardware": hardware(),
            "config_hash": config_hash(cfg) if cfg is not None else None}


def provenance_footer(config: Any = None) -> str:
    """The report footer naming the config (and its content hash), the commit and the machine."""
    prov = provenance(config)
    return f"Config `{config}` (hash `{prov['config_hash']}`), commit `{prov['commit']}`, {prov['hardware']}."
