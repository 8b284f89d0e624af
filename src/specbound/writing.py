"""The one writer of every file specbound writes (reports, ``--json``/``--csv``/``--html``,
experiment tables, tracking tables, ``combined.csv``, comparisons).

How a target is treated:

* a regular file or a new path: written atomically, a temporary file in the *same folder* as
  the target (``.specbound-<pid>-<hex>.tmp``), flushed with ``fsync``, then renamed over it; the
  mode is ``0666 & ~umask``, as for any new file; a missing folder is created;
* a symlink: followed (the whole chain); its target is written atomically as above, the link
  stays a link;
* ``-``: standard output;
* a character device, FIFO or socket, and ``/dev/fd/N``, ``/dev/stdout``, ``/proc/self/fd/N``:
  written directly (opened and written), never replaced;
* a folder where a file must go: an error.

A report *folder* (:func:`report_folder`) is staged inside the folder itself (so a mount point
works: staging never leaves the target's filesystem) and committed as a whole: every entry is
checked first (a folder in the way of a file is an error before anything is replaced), then the
entries are renamed into place; if a rename fails the old entries are put back. Staging entries
that a killed run left (``.specbound-<pid>-…`` with a dead pid, or older than a day) are
removed by the next run that writes there or into a folder beside it (:func:`clean_stale`).

Every ``OSError`` becomes a :class:`WriteError` (an :class:`~specbound.errors.InputError`: the
CLI prints one line) naming the path and why. :func:`check_file_target` and
:func:`check_folder_target` check a target before any computation.

Nothing here prints; ``-`` writes the document the caller asked for to ``sys.stdout``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from specbound.errors import InputError

__all__ = [
    "STDOUT", "Interrupted", "Stage", "WriteError", "check_file_target", "check_folder_target", "clean_stale",
    "is_stdout", "pid_alive", "report_folder", "save_figure", "target_kind", "write_bytes", "write_csv", "write_json", "write_text",
]

#: The path that means standard output.
STDOUT = "-"
#: Prefix of every staging entry (temporary files and folders).
PREFIX = ".specbound-"
#: Staging entries older than this (seconds) are removed even if their pid is alive (pid reuse).
STALE_AGE_S = 24 * 3600.0
#: A staging entry of a dead pid is removed once it is this old (seconds).
DEAD_PID_AGE_S = 60.0
#: Staging entries without a pid in their name (older releases) are removed after this age.
LEGACY_AGE_S = 3600.0

_STAGED = re.compile(r"^\.specbound-(\d+)-[0-9a-f]+(\.tmp)?$")
_LEGACY = re.compile(r"^\.specbound-(?!\d+-[0-9a-f]+(\.tmp)?$)[A-Za-z0-9_.-]+$")
_FD_PATH = re.compile(r"^/(dev/(fd/\d+|stdout|stderr)|proc/(self|thread-self|\d+)/fd/\d+)$")

_REASONS = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EXDEV: "cross-device rename",
    errno.ENAMETOOLONG: "name too long",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "a folder in the way is not empty",
}


class WriteError(InputError):
    """A target that cannot be written (the message names it and says why, on one line)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a one-line account of what was finished (``message``) for the CLI to print."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def reason(e: OSError) -> str:
    """A short, one-line reason for ``e`` (``read-only file system``, ``no space left on device``…)."""
    if e.errno in _REASONS:
        return _REASONS[e.errno]
    return (e.strerror or type(e).__name__).splitlines()[0].lower()


def _error(path: Any, why: str, option: str | None = None) -> WriteError:
    where = f"{option} {path}" if option else f"{path}"
    return WriteError(f"{where}: cannot write ({why}).")


# --------------------------------------------------------------------------- what a target is


def is_stdout(path: Any) -> bool:
    """``path`` is ``-`` (standard output)."""
    return path is not None and str(path) == STDOUT


def _resolve(path: Path) -> tuple[Path, bool]:
    """Follow ``path``'s symlinks (the final component's chain, then the folders); ``(final,
    direct)`` where ``direct`` says the chain went through a file descriptor path (``/dev/fd/N``,
    ``/dev/stdout``, ``/proc/self/fd/N``): such a target is written, never replaced."""
    p = Path(os.path.abspath(path))
    for _ in range(64):
        if _FD_PATH.match(str(p)):
            return p, True
        try:
            link = os.readlink(p)
        except OSError:
            break
        p = Path(os.path.abspath(p.parent / link))
    real = Path(os.path.realpath(p))
    return real, bool(_FD_PATH.match(str(real)))


def target_kind(path: str | os.PathLike) -> str:
    """``"stdout"`` (``-``), ``"stream"`` (character/block device, FIFO, socket, file-descriptor
    path: written directly), ``"folder"`` (an existing folder: not a file target) or ``"file"``
    (a regular file, a new path, or a symlink to one of these)."""
    if is_stdout(path):
        return "stdout"
    final, direct = _resolve(Path(path))
    if direct:
        return "stream"
    try:
        st = os.stat(final)
    except FileNotFoundError:
        return "file"
    except OSError:
        return "file"  # e.g. a parent that is not a folder: the write reports it
    if stat.S_ISDIR(st.st_mode):
        return "folder"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "stream"


# --------------------------------------------------------------------------- checks before work


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _probe(folder: Path) -> None:
    """Create and remove a staging file in ``folder`` (raises ``OSError``: read-only, full…)."""
    tmp = folder / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.unlink(tmp)


def _check_folder_writable(folder: Path, shown: Any, option: str | None) -> None:
    """``folder`` (or the nearest existing ancestor, where it will be created) accepts files."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise _error(shown, f"{base} is not a folder", option)
    try:
        _probe(base)
    except OSError as e:
        raise _error(shown, reason(e) + ("" if base == folder else f" in {base}"), option) from None


def check_file_target(path: str | os.PathLike | None, option: str | None = None) -> None:
    """Raise :class:`WriteError` unless ``path`` can be written as a file (see the module
    docstring); ``None`` and ``-`` always can. Nothing is created."""
    if path is None or is_stdout(path):
        return
    kind = target_kind(path)
    if kind == "folder":
        raise _error(path, "a folder is there; give a file name", option)
    if kind == "stream":
        final, _ = _resolve(Path(path))
        if not os.access(final, os.W_OK):
            raise _error(path, "not writable", option)
        return
    final, _ = _resolve(Path(path))
    _check_folder_writable(final.parent, path, option)


def check_folder_target(path: str | os.PathLike, option: str | None = None, files: Sequence[str] = (),
                        subfolders: Sequence[str] = ()) -> None:
    """Raise :class:`WriteError` unless ``path`` can be (or become) an output folder holding the
    files ``files`` and the folders ``subfolders`` (a folder where one of the files must go, or a
    file where one of the folders must go, is an error). Nothing is created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _error(path, "exists and is not a folder; choose another folder", option)
    if p.is_dir():
        for name in files:
            q = p / name
            if q.is_dir():
                raise _error(path, f"{q} is a folder where the file {name} must go; remove it or choose another folder",
                             option)
        for name in subfolders:
            q = p / name
            if q.exists() and not q.is_dir():
                raise _error(path, f"{q} is a file where the folder {name} must go; remove it or choose another folder",
                             option)
    _check_folder_writable(p, path, option)


# --------------------------------------------------------------------------- writing one file


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mkdirs(folder: Path) -> Path | None:
    """Create ``folder`` and its missing parents; return the top-most folder created (``None``
    if it existed)."""
    top = None
    q = folder
    missing = []
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for m in reversed(missing):
        try:
            m.mkdir()
        except FileExistsError:
            if not m.is_dir():
                raise
            continue
        if top is None:
            top = m
    return top


def stage_file(final: Path, data: bytes) -> Path:
    """Write ``data`` to a new staging file beside ``final`` (same folder), fsynced; return it."""
    tmp = final.parent / f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        _write_fd(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def write_bytes(path: str | os.PathLike, data: bytes, option: str | None = None) -> Path | None:
    """Write ``data`` to ``path`` as the module docstring says; return the path written (the
    symlink's target for a link; ``None`` for standard output)."""
    if is_stdout(path):
        stream = getattr(sys.stdout, "buffer", None)
        if stream is not None:
            sys.stdout.flush()
            stream.write(data)
            stream.flush()
        else:
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
        return None
    shown = path
    kind = target_kind(path)
    if kind == "folder":
        raise _error(shown, "a folder is there; give a file name", option)
    final, _ = _resolve(Path(path))
    try:
        if kind == "stream":
            fd = os.open(final, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                _write_fd(fd, data)
            finally:
                os.close(fd)
            return Path(path)
        _mkdirs(final.parent)
        clean_stale(final.parent)
        tmp = stage_file(final, data)
        try:
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(final.parent)
    except OSError as e:
        raise _error(shown, reason(e), option) from None
    return Path(path)


def write_text(path: str | os.PathLike, text: str, option: str | None = None, encoding: str = "utf-8") -> Path | None:
    """:func:`write_bytes` of ``text`` encoded (UTF-8)."""
    return write_bytes(path, text.encode(encoding), option)


def write_json(path: str | os.PathLike, obj: Any, option: str | None = None, **dumps: Any) -> Path | None:
    """``obj`` as JSON (``json.dumps(obj, **dumps)``, indent 2 by default) plus a newline."""
    import json

    dumps.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **dumps) + "\n", option)


def write_csv(path: str | os.PathLike, df: Any, option: str | None = None, **to_csv: Any) -> Path | None:
    """A pandas DataFrame as CSV (``index=False`` unless given)."""
    to_csv.setdefault("index", False)
    return write_text(path, df.to_csv(**to_csv), option)


# --------------------------------------------------------------------------- stale staging entries


def save_figure(fig: Any, path: str | os.PathLike, option: str | None = None, **savefig: Any) -> Path | None:
    """Render a matplotlib figure in memory (format from the suffix) and write it with
    :func:`write_bytes`: a plot is replaced atomically like every other file."""
    import io

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **savefig)
    return write_bytes(path, buf.getvalue(), option)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (``False`` for ``None`` or a non-positive pid; ``True`` for
    another user's process): the test of every stale-temporary-file cleanup."""
    if pid is None or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except OSError:
        return False
    return True


def clean_stale(folder: str | os.PathLike, now: float | None = None, min_age: float | None = None) -> list[Path]:
    """Remove the staging entries in ``folder`` left by killed runs: ``.specbound-<pid>-…`` whose
    pid is not running and that are older than ``min_age`` seconds (default
    :data:`DEAD_PID_AGE_S`: a writer in another pid namespace sharing the folder is not
    mistaken for a dead one mid-write), or older than :data:`STALE_AGE_S` whatever the pid;
    entries without a pid (``.specbound-XXXX``, older releases) after :data:`LEGACY_AGE_S`.
    Returns what was removed; errors are ignored (a folder that cannot be listed has nothing
    to clean)."""
    now = time.time() if now is None else now
    min_age = DEAD_PID_AGE_S if min_age is None else min_age
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(PREFIX):
            continue
        try:
            age = now - e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        m = _STAGED.match(e.name)
        if m:
            stale = (age >= min_age and not pid_alive(int(m.group(1)))) or age > STALE_AGE_S
        else:
            stale = bool(_LEGACY.match(e.name)) and age > LEGACY_AGE_S
        if not stale:
            continue
        p = Path(e.path)
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


# --------------------------------------------------------------------------- a report folder


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def commit_folder(stage: Path, out: Path, remove: Sequence[str] = (), option: str | None = None) -> list[Path]:
    """Move every entry of ``stage`` into ``out`` (replacing what is there) and remove the entries
    ``remove`` of ``out``, all or nothing; return the final paths of the moved entries.

    A staged file whose target is a symlink or a stream is written through :func:`write_bytes`
    after the others (the link stays a link)."""
    names = sorted(p.name for p in stage.iterdir() if p.name != ".old")
    plain: list[str] = []
    linked: list[str] = []
    for name in names:
        new, old = stage / name, out / name
        if old.is_symlink() and not new.is_dir():
            kind = target_kind(old)
            if kind == "folder":
                raise _error(out, f"{old} leads to a folder where the file {name} must go", option)
            linked.append(name)
            continue
        if old.exists() and old.is_dir() != new.is_dir():
            what = "a folder" if old.is_dir() else "a file"
            raise _error(out, f"{old} is {what} where the {'folder' if new.is_dir() else 'file'} {name} must go; "
                              "remove it or choose another folder", option)
        plain.append(name)
    backup = stage / ".old"
    backup.mkdir(exist_ok=True)
    moved_old: list[str] = []
    placed: list[str] = []
    try:
        for name in plain:
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, backup / name)
                moved_old.append(name)
            os.replace(stage / name, out / name)
            placed.append(name)
        for name in remove:
            if name in names:
                continue
            q = out / name
            if q.exists() or q.is_symlink():
                os.replace(q, backup / name)
                moved_old.append(name)
    except OSError as e:
        for name in placed:  # put the old entries back
            with contextlib.suppress(OSError):
                os.replace(out / name, stage / name)
        for name in moved_old:
            with contextlib.suppress(OSError):
                os.replace(backup / name, out / name)
        raise _error(out, reason(e), option) from None
    _fsync_dir(out)
    for name in linked:
        write_bytes(out / name, (stage / name).read_bytes(), option)
    return [out / n for n in names]


class Stage:
    """What :func:`report_folder` yields: ``path`` (the staging folder to fill) and, once the
    block has ended and the folder was committed, ``written`` (the final paths)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written: list[Path] = []


@contextlib.contextmanager
def report_folder(out: str | os.PathLike, remove: Sequence[str] = (), option: str | None = None) -> Iterator[Stage]:
    """Stage a report folder: yields a :class:`Stage` whose ``path`` is an empty staging folder
    inside ``out`` (created if needed); when the block ends without an error its entries replace
    ``out``'s (:func:`commit_folder`; the entries ``remove`` go too) and ``written`` lists them.
    On an error or Ctrl-C nothing in ``out`` changes, and ``out`` is removed again if this call
    created it. Stale staging entries in ``out`` are removed first (:func:`clean_stale`)."""
    o = Path(out)
    if o.exists() and not o.is_dir():
        raise _error(out, "exists and is not a folder; choose another folder", option)
    try:
        created = _mkdirs(o)
    except OSError as e:
        raise _error(out, reason(e), option) from None
    stage = Stage(o / f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
    try:
        clean_stale(o)
        clean_stale(o.parent if str(o.parent) else ".")  # where older releases staged
        stage.path.mkdir()
    except OSError as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise _error(out, reason(e), option) from None
    ok = False
    try:
        try:
            yield stage
        except OSError as e:
            raise _error(out, reason(e), option) from None
        stage.written = commit_folder(stage.path, o, remove, option)
        ok = True
    finally:
        shutil.rmtree(stage.path, ignore_errors=True)
        if not ok and created is not None:
            shutil.rmtree(created, ignore_errors=True)
