"""Opening input files without surprises: only regular files (or symlinks to one) are read.

A FIFO, a socket or a device given where specbound expects a file would block ``open()``
forever or stream without end; a folder would be read as "the current folder". Every path
specbound reads (weights, index, ``config.json``, ``--config``, ``--mapping``, ``--init``,
text and token-id files) goes through :func:`regular_file` first, and small JSON/text files are
read by :func:`read_text`, which opens without blocking, checks the opened file again
(``fstat``: no race with a path swapped after the check) and refuses a file larger than the
limit before reading it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from specbound.errors import InputError

__all__ = ["MAX_JSON_BYTES", "file_kind", "read_json", "read_text", "regular_file"]

#: Largest ``config.json``, name mapping, index or token-id file read (64 MiB: a sharded
#: index of a 400B-parameter model is about 100 kB; token ids of 1e6 tokens about 7 MB).
MAX_JSON_BYTES = 64 * 2**20


def file_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a character device"`` … for an ``st_mode`` that is not a regular file."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_mode(p: Path, mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{p}: {file_kind(mode)}, not a regular file; specbound reads the {what} only from a "
            "regular file (or a symlink to one). Pass the file itself."
        )


def regular_file(path: str | os.PathLike, what: str) -> Path:
    """``Path(path)`` if it is a regular file (symlinks followed); else :class:`InputError`
    naming the path, what it is (missing, a folder, a FIFO, a device …) and ``what`` was expected."""
    if str(path) == "":
        raise InputError(f"an empty path was given for the {what}; pass a file.")
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file (the {what}).") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror}).") from None
    _check_mode(p, st.st_mode, what)
    return p


def read_text(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (one-line errors otherwise)."""
    p = regular_file(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)  # non-blocking: a FIFO swapped in after the check cannot hang us
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror}).") from None
    try:
        st = os.fstat(fd)
        _check_mode(p, st.st_mode, what)
        if st.st_size > limit:
            raise InputError(
                f"{p}: {st.st_size} bytes, larger than any {what} ({limit} bytes at most); "
                "pass the right file."
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror}).") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since fstat
        raise InputError(f"{p}: larger than any {what} ({limit} bytes at most); pass the right file.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: the {what} is not UTF-8 text.") from None


def read_json(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of a regular file (:func:`read_text`); invalid JSON is a one-line error."""
    text = read_text(path, what, limit)
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError(f"{Path(path)}: the {what} is not valid JSON ({e}).") from None
    except RecursionError:
        raise InputError(f"{Path(path)}: the {what} is not valid JSON (nested too deeply).") from None
