"""Checks of option values shared by several commands, made before anything heavy is imported
(a usage error costs no torch import), and the ``--ray`` / ``--ray-address`` pair.

The library checks its arguments again (it is called from Python too); these checks only turn
the common mistakes into usage errors (exit 2) that name the option.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from specbound.cli.console import BAD_INPUT, USAGE, fail

__all__ = ["DTYPES", "FF_METHODS", "check_analysis_options", "check_device", "check_outputs", "check_positive",
           "parse_size", "ray_target", "stdout_targets"]

DTYPES = ("float64", "float32")
DEVICES = ("cpu", "cuda")
FF_METHODS = ("auto", "gram", "svd")


def check_analysis_options(
    *,
    dtype: str,
    device: str | None = None,
    ff_method: str | None = None,
    grid_m: int | None = None,
    l_phi: float | None = None,
    jobs: int | None = None,
    dense: bool = False,
    approx: bool = False,
) -> None:
    """Exit 2 with a one-line message naming the first bad analysis option.

    Options a command does not have are left ``None`` (``grid_m`` and ``l_phi`` are ``None`` also
    when they take their default), and are not checked.
    """
    if dtype not in DTYPES:
        fail(f"--dtype {dtype!r}: use float64 or float32.", USAGE)
    if device is not None and device.split(":")[0] not in DEVICES:
        fail(f"--device {device!r}: use cpu or cuda.", USAGE)
    if ff_method is not None and ff_method not in FF_METHODS:
        fail(f"--ff-method {ff_method!r}: use auto, gram or svd.", USAGE)
    if grid_m is not None and grid_m < 1:
        fail(f"--grid-m {grid_m}: must be a positive integer.", USAGE)
    if l_phi is not None and not (0 < l_phi < math.inf):
        fail(f"--l-phi {l_phi}: must be a positive finite number.", USAGE)
    if jobs is not None:
        check_positive("--jobs", jobs)
    if approx and dense:
        fail("--approx and --dense exclude each other.", USAGE)


_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_size(flag: str, text: str | None) -> int | None:
    """``"2G"``, ``"1500M"``, ``"2.5GB"``, ``"1073741824"`` → bytes (binary units); exit 2 otherwise."""
    if text is None:
        return None
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGTIB")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not (value > 0 and math.isfinite(value)):
        fail(f"{flag} {text!r}: give a size such as 2G, 1500M or a number of bytes.", USAGE)
    return int(value * _UNITS[unit])


def check_positive(flag: str, value: int) -> None:
    """Exit 2 unless ``value`` is a positive integer."""
    if value < 1:
        fail(f"{flag} {value}: must be a positive integer.", USAGE)


def ray_target(ray: bool, ray_address: str | None) -> str | None:
    """The ``ray_address`` argument of :func:`specbound.parallel.map_tasks` for ``--ray`` (a local
    Ray instance) and ``--ray-address ADDRESS`` (join a cluster; implies ``--ray``): ``None`` when
    neither is given, :data:`specbound.parallel.RAY_LOCAL` for ``--ray`` alone."""
    if ray_address is not None:
        if not ray_address.strip():
            fail("--ray-address is empty: give auto or HOST:PORT (or use --ray for a local instance).", USAGE)
        return ray_address.strip()
    if ray:
        from specbound.parallel import RAY_LOCAL  # the standard library only: no heavy import

        return RAY_LOCAL
    return None


def check_device(device: Any, flag: str = "--device") -> None:
    """The one ``--device`` check of every command that takes it, made before any work: the
    device must be one :func:`specbound.spectra.compute.resolve_device` accepts (cpu or cuda)
    and must exist. One line: exit 2 for a name that is not a torch device or not one specbound
    runs on (the command line is wrong), exit 1 for a CUDA device this machine does not have.
    Imports torch."""
    if device is None:
        return
    import torch

    from specbound.errors import InputError
    from specbound.spectra.compute import resolve_device

    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError):
        fail(f"{flag} {device}: not a torch device; use cpu or cuda.", USAGE)
    try:
        resolve_device(dev)
    except InputError:
        if dev.type == "cuda":
            fail(f"{flag} {device}: no CUDA device is available (torch.cuda.is_available() is False); "
                 f"use {flag} cpu.", BAD_INPUT)
        fail(f"{flag} {device}: not supported (device type {dev.type!r}); use cpu or cuda.", USAGE)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        fail(f"{flag} {device}: there are only {torch.cuda.device_count()} CUDA devices (0..."
             f"{torch.cuda.device_count() - 1}); use another index or {flag} cpu.", BAD_INPUT)


def stdout_targets(**targets: Any) -> list[str]:
    """The options (``--json`` …) whose value is ``-`` (standard output); more than one is a
    usage error (the documents would be mixed on one stream)."""
    from specbound.writing import is_stdout

    flags = [f"--{name}" for name, p in targets.items() if p is not None and is_stdout(p)]
    if len(flags) > 1:
        fail(f"{' and '.join(flags)} are all '-': only one document can go to standard output.", USAGE)
    return flags


def check_outputs(folders: Sequence[tuple[Any, ...]] = (), files: Sequence[tuple[Any, str]] = ()) -> None:
    """Every output target checked before any work (:mod:`specbound.writing`): ``folders`` are
    ``(path, flag, names of the files it will hold[, names of its subfolders])``, ``files``
    ``(path, flag)``; ``None`` paths are skipped. One line naming the option, the path and why;
    exit 1."""
    from specbound.writing import WriteError, check_file_target, check_folder_target

    try:
        for path, flag, names, *sub in folders:
            if path is not None:
                check_folder_target(os.fspath(path), flag, names, sub[0] if sub else ())
        for path, flag in files:
            if path is not None:
                check_file_target(os.fspath(path), flag)
    except WriteError as e:
        fail(str(e), BAD_INPUT)
