"""numpy linear-algebra kernels of the CPU route, importable without torch.

Used by :mod:`specbound.spectra.core` (the analysis) and by :mod:`specbound.warmstart` (the CLI's
start-up overlap, which runs before torch is imported); both call the same function on arrays of
the same layout, so their results are bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def gram_eigenvalues_numpy(A: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, ``A``'s dtype) of the smaller Gram matrix of the 2-D array ``A``.

    ``A`` is taken in its wide orientation (``A`` or ``A.T``, a view); ``W @ W.T`` of an array with
    its own transpose is one BLAS ``syrk`` (half the multiply-adds of a general product) and
    ``numpy.linalg.eigvalsh`` is LAPACK ``syevd``. A strided view that BLAS cannot take is copied.
    """
    W = A.T if A.shape[0] > A.shape[1] else A
    if not (W.flags.c_contiguous or W.flags.f_contiguous):  # BLAS needs one unit stride
        W = np.ascontiguousarray(W)
    return np.ascontiguousarray(np.linalg.eigvalsh(W @ W.T)[::-1])


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS/LAPACK (OpenBLAS in numpy wheels) on at most ``n`` threads, restored on exit.

    The CPU Gram route runs on numpy, whose BLAS otherwise starts a thread per core for every
    call: next to torch's threads, or several calls side by side, that oversubscribes the cores.
    ``threadpoolctl`` sets the limit of the BLAS libraries loaded in the process (a process-wide
    setting, like ``torch.set_num_threads``).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, n), user_api="blas"):
        yield
