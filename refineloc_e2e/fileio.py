"""Safe file handling: atomic writes, checksums, and loading untrusted pickles/arrays/checkpoints.

Everything written by the tool goes through :func:`atomic_write_bytes` / :func:`atomic_save_npy` /
:func:`atomic_write_json` (temp file in the same folder + fsync + ``os.replace``), so a reader never
sees half a file, whatever kills the writer. The temp file is ``.<name>.<pid>-<random>.tmp``: a writer
killed with SIGKILL leaves it behind, and :func:`remove_stale_temps` removes it once its process is gone.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

try:
    import resource  # POSIX
except ImportError:  # pragma: no cover - Windows
    resource = None

from refineloc_e2e.errors import InputError, RefineLocError, WeightsError
from refineloc_e2e.stopping import no_hard_stop

TMP_SUFFIX = ".tmp"


def package_data(*parts: str) -> Path:
    """A file or folder shipped inside the package (``refineloc_e2e/<parts>``), as a path."""
    return Path(str(resources.files("refineloc_e2e").joinpath(*parts)))


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/refineloc-e2e/<parts>`` (default ``~/.cache/refineloc-e2e/<parts>``): where fetched
    weights and the default feature cache go, never inside the installed package. A relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG base directory specification says."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base.joinpath("refineloc-e2e", *parts)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> str:
    """Raise ``WeightsError`` naming the file and both digests unless its sha256 is ``expected``."""
    got = sha256_file(path)
    if got != expected.lower():
        raise WeightsError(f"{path}: sha256 mismatch (expected {expected}, got {got}); "
                           f"the file is corrupt or not the one the manifest names - delete it and fetch again")
    return got


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on success fsync and rename over ``path``; on error remove it.

    The result gets the usual ``0o666 & ~umask`` permissions (not mkstemp's 0o600), so a shared cache
    stays readable. Raises ``RefineLocError`` naming ``path`` on OS errors (disk full, permission denied, ...).
    """
    path = Path(path)
    with no_hard_stop():  # a stop's deadline (stopping) waits for this write
        with _atomic_writer(path, mode) as f:
            yield f


@contextmanager
def _atomic_writer(path: Path, mode: str) -> Iterator[Any]:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=TMP_SUFFIX, dir=path.parent)
        if hasattr(os, "fchmod"):  # POSIX (Windows has it from Python 3.13, where it sets read-only only)
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            _check_complete(f.fileno())
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        raise RefineLocError(f"{path}: {write_failure(e, path.parent, tmp_name)}") from e
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _check_complete(fd: int) -> None:
    """OSError if the file ends before the writer's position: a write that failed unseen (numpy writes small
    arrays through a C stdio buffer and loses the error of its final flush: the file was cut at the limit)."""
    end, size = os.lseek(fd, 0, os.SEEK_CUR), os.fstat(fd).st_size
    if size < end:
        raise OSError(f"{end} bytes written, {size} in the file")


NEARLY_FULL_BYTES = 4 << 20  # a short write with this little space left on the file system: it was full
NO_SPACE_HINT = "; free some disk space and run again"


def free_bytes(folder: str | Path) -> int | None:
    """Space this process may still write in ``folder``'s file system (root may use the reserved blocks); None
    when unknown (no ``os.statvfs`` on this platform: a short write is then not attributed to a full disk)."""
    statvfs = getattr(os, "statvfs", None)
    if statvfs is None:
        return None
    try:
        st = statvfs(folder)
    except OSError:
        return None
    geteuid = getattr(os, "geteuid", None)  # POSIX
    return (st.f_bfree if geteuid is not None and geteuid() == 0 else st.f_bavail) * st.f_frsize


def file_size_limit() -> int | None:
    """This process's file size limit in bytes (``ulimit -f``, RLIMIT_FSIZE), None when unlimited."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def write_failure(e: OSError, folder: str | Path, partial: str | Path | None = None) -> str:
    """``cannot write (<cause>)<hint>`` for a failed write into ``folder``. Disk full and the file size limit
    are named even when the error carries no errno (numpy reports a short write as ``N requested and M
    written``): then a ``partial`` file at the size limit means the limit, little free space a full disk."""
    detail = e.strerror or str(e)
    limit = file_size_limit()
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write ({detail}){NO_SPACE_HINT}"
    size = None
    if partial is not None:
        try:
            size = os.stat(partial).st_size
        except OSError:
            pass
    if limit is not None and (e.errno == errno.EFBIG or (e.errno is None and size is not None and size >= limit)):
        return (f"cannot write ({detail}: the file size limit of {limit} bytes was reached, see ulimit -f); "
                f"raise the limit and run again")
    if e.errno == errno.EFBIG:
        return f"cannot write ({detail}: larger than this file system allows); write it to another file system"
    free = free_bytes(folder) if e.errno is None else None
    if free is not None and free < NEARLY_FULL_BYTES:
        return f"cannot write ({detail}: no space left on device, {free} bytes free){NO_SPACE_HINT}"
    return f"cannot write ({detail})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(path: str | Path, *, older_than: float) -> list[Path]:
    """Remove temp files that killed writers of ``path`` left beside it; returns what was removed.

    A temp file ``.<name>.<pid>-<random>.tmp`` is stale when its writer process no longer exists on this
    machine and it was last modified before ``older_than`` (a ``time.time()``, e.g. the start of this
    run), so a concurrent writer's file is never touched. Callers that serialise writers of ``path``
    with a lock (the feature cache does) are safe even on a shared folder.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)-[^/]*" + re.escape(TMP_SUFFIX) + "$")
    removed = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        tmp = path.parent / name
        try:
            if tmp.stat().st_mtime >= older_than:
                continue
            tmp.unlink()
        except FileNotFoundError:  # another run removed it first
            continue
        removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    with atomic_writer(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_writer(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


class _WriteRecorder:
    """A file object's stand-in that remembers the ``OSError`` of a failed ``write`` (torch.save turns it into
    a RuntimeError without the cause)."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_save_with(path: str | Path, save: Callable[[io.BufferedWriter], None]) -> None:
    """Atomically write whatever ``save(fileobj)`` writes (e.g. ``lambda f: torch.save(obj, f)``); a failed
    write is reported with its cause (disk full, file size limit) whatever the writer made of it."""
    with atomic_writer(path, "wb") as f:
        recorder = _WriteRecorder(f)
        try:
            save(recorder)
        except RuntimeError as e:  # torch.save turns a failed write into "PytorchStreamWriter failed writing file"
            if recorder.error is not None:
                raise recorder.error from e
            raise


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits numpy arrays, numpy dtypes/scalars and plain containers only.

    Anything else (``os.system``, ``builtins.eval``, arbitrary classes) raises ``pickle.UnpicklingError``,
    so loading an untrusted ``.npy``/``.ckpt`` pickle cannot execute code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.dtypes", None),  # any numpy.dtypes.*DType class
        ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
        ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # numpy byte buffers pickled by Python 2/3 round trips
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED or (module, None) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in pickle (only arrays and plain "
                                     f"containers are allowed)")


def restricted_pickle_load(path: str | Path) -> Any:
    """Load a pickle of arrays/containers from ``path`` with :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{path}: refused to load: {e}") from None
    except (EOFError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: not a readable pickle ({e})") from None


def load_npy_untrusted(path: str | Path) -> Any:
    """Read an ``.npy`` file; object arrays (pickled) are read through the restricted unpickler only."""
    path = Path(path)
    with open(path, "rb") as f:
        return _read_npy_untrusted(f, path)


def _read_npy_untrusted(f, where: str | Path) -> Any:
    """One ``.npy`` from a seekable binary file object (a file, or a member of an ``.npz``)."""
    start = f.tell()
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if not dtype.hasobject:
        f.seek(start)
        return np.load(f, allow_pickle=False)
    try:
        return RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{where}: refused to load: {e}") from None


def load_arrays_untrusted(path: str | Path) -> Any:
    """An array container someone else wrote: ``.npy`` (an array; object arrays restricted), ``.npz`` (a dict
    of its arrays, each read like an ``.npy``) or ``.pkl``/``.pickle`` (whatever it holds, through
    :class:`RestrictedUnpickler`). Never runs code from the file; ``RefineLocError`` names it when unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            out = {}
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    if member.endswith(".npy"):
                        with z.open(member) as raw:
                            out[member[:-4]] = _read_npy_untrusted(io.BytesIO(raw.read()), f"{path}[{member}]")
            return out
        if suffix in (".pkl", ".pickle"):
            return restricted_pickle_load(path)
        return load_npy_untrusted(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable {suffix or 'array'} file ({e})") from None


def torch_load_untrusted(path: str | Path, map_location: str = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` with a project error naming the file on failure."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise WeightsError(f"{path}: refused or failed to load as a weights-only torch file: "
                           f"{_torch_load_cause(e)}") from None


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _torch_load_cause(e: BaseException) -> str:
    """The informative line of a torch.load error (its weights_only banner suggests weights_only=False,
    which would run the file's code: never show that as the cause)."""
    lines = [x.strip() for x in str(e).splitlines()]
    useful = [x for x in lines if x and not x.startswith(_TORCH_BOILERPLATE)]
    return useful[0] if useful else type(e).__name__
