"""Fuzzing the safetensors loader: a few hundred mutated copies of a tiny BERT checkpoint.

Mutations (seeded, so every run tries the same files): header bytes overwritten, the 8-byte
length field set to neighbouring and absurd values, truncation, entries' ``data_offsets``,
``dtype`` and ``shape`` changed (including a ``[20000, 20000]`` shape in a 3 kB file), header
entries removed / added / retyped, bytes flipped in the data, NaN and ±Inf written into a tensor,
garbage appended. Every case must either load, or raise specbound's own error
(:class:`SpecboundError`) with a one-line message; no other exception, no hang (a per-case
alarm). A NaN/Inf in a tensor the analysis reads must be an error naming that tensor; in a
tensor it does not read (the embeddings), the file loads. Every file that loads is analysed (one
``analyze`` per distinct content of the analysed tensors) and the report must hold no NaN or
infinity: not in the per-matrix table, not in any bound, not anywhere in ``report.to_dict()``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import no_hang, write_bert

from specbound.analysis import analyze
from specbound.errors import SpecboundError
from specbound.weights.adapters import open_weights

SEED = 20261202
WEIGHTS = "model.safetensors"
#: Seconds a single case may take before it counts as a hang (a guard, not a timing assert:
#: every case takes milliseconds).
HANG_GUARD_S = 20
#: Tensors the analysis of the tiny BERT (L = 1) reads: the six proxies and the layer's biases.
ANALYSED_PREFIX = "encoder.layer.0."


def hang_guard(label: str):
    """Raise in the test (naming the case) if the body runs longer than :data:`HANG_GUARD_S`."""
    return no_hang(HANG_GUARD_S, f"fuzz case {label}")


def _split(data: bytes) -> tuple[int, dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes, pad: bool = True) -> bytes:
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


def _entries(header: dict) -> list[str]:
    return sorted(k for k in header if k != "__metadata__")


def cases(base: bytes) -> list[tuple[str, bytes, str | None]]:
    """``(label, file bytes, nan_tensor)``: ``nan_tensor`` names the tensor a NaN/Inf was written
    into (``None`` for the other mutations)."""
    rng = random.Random(SEED)
    n, header, body = _split(base)
    names = _entries(header)
    out: list[tuple[str, bytes, str | None]] = [("unchanged", base, None)]

    def hdr(fn, label: str) -> None:
        h = json.loads(json.dumps(header))
        fn(h)
        out.append((label, _join(h, body), None))

    # 1. header bytes overwritten (raw, so the JSON may break anywhere)
    for k in range(100):
        b = bytearray(base)
        for _ in range(rng.choice((1, 1, 2, 4))):
            b[8 + rng.randrange(n)] = rng.randrange(256)
        out.append((f"header-byte-{k}", bytes(b), None))
    # 2. the length field
    size = len(base)
    for v in (0, 1, 7, n - 1, n + 1, n - 8, n + 8, size - 8, size, size + 1, 2**31, 2**63 - 1, 2**64 - 1,
              *(rng.randrange(2**64) for _ in range(8))):
        out.append((f"length-{v}", int(v).to_bytes(8, "little") + base[8:], None))
    # 3. truncation (in the length field, the header and the data) and garbage appended
    for k in range(25):
        cut = rng.randrange(size)
        out.append((f"truncate-{cut}", base[:cut], None))
    for k in range(4):
        out.append((f"append-{k}", base + rng.randbytes(rng.choice((1, 8, 100))), None))
    # 4. data_offsets
    offset_values = [-1, 0, 1, 3, 2**40, 2**63, 1.5, "0", None]
    for k in range(40):
        t = rng.choice(names)
        which = rng.randrange(2)
        how = rng.randrange(4)

        def f(h, t=t, which=which, how=how, k=k):
            o = h[t]["data_offsets"]
            if how == 0:
                o[which] = rng.choice(offset_values)
            elif how == 1:
                o[which] += rng.choice((-8, -4, -1, 1, 4, 8))
            elif how == 2:
                h[t]["data_offsets"] = o[::-1]
            else:
                h[t]["data_offsets"] = rng.choice(([0], [0, 1, 2], "0,4", {"a": 0}, []))
        hdr(f, f"offsets-{k}-{t}")
    # 5. dtypes
    dtypes = ["F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "F4", "Q4",
              "f32", "", 5, None, ["F32"]]
    for k in range(30):
        t = rng.choice(names)
        d = rng.choice(dtypes)
        hdr(lambda h, t=t, d=d: h[t].__setitem__("dtype", d), f"dtype-{k}-{t}-{d}")
    # 5b. a dtype change consistent with the byte count (F32 → I32 / BOOL-sized / F16 of twice the
    # elements): the header is valid, the analysis must refuse the dtype
    for k, t in enumerate(t for t in names if t.startswith(ANALYSED_PREFIX) and t.endswith("query.weight")):
        hdr(lambda h, t=t: h[t].__setitem__("dtype", "I32"), f"dtype-consistent-I32-{t}")
        hdr(lambda h, t=t: h[t].update(dtype="BOOL", shape=[*h[t]["shape"][:-1], 4 * h[t]["shape"][-1]]),
            f"dtype-consistent-BOOL-{t}")
        hdr(lambda h, t=t: h[t].update(dtype="F8_E4M3", shape=[*h[t]["shape"][:-1], 4 * h[t]["shape"][-1]]),
            f"dtype-consistent-F8-{t}")
        hdr(lambda h, t=t: h[t].update(dtype="C64", shape=[*h[t]["shape"][:-1], h[t]["shape"][-1] // 2]),
            f"dtype-consistent-C64-{t}")
        hdr(lambda h, t=t: h[t].update(dtype="F16", shape=[*h[t]["shape"][:-1], 2 * h[t]["shape"][-1]]),
            f"dtype-consistent-F16-{t}")
    # 6. shapes
    shapes = [[20000, 20000], [], [0], [-1, 8], [8.0, 8], [8, 8, 8], [2**62, 2**62], "8,8", None, [True, 8], [[8], 8]]
    for k in range(40):
        t = rng.choice(names)
        how = rng.randrange(3)

        def f(h, t=t, how=how):
            s = h[t]["shape"]
            if how == 0:
                h[t]["shape"] = rng.choice(shapes)
            elif how == 1 and len(s) == 2:
                h[t]["shape"] = s[::-1]  # same byte count, transposed: the config check must catch it
            else:
                h[t]["shape"] = [d + rng.choice((-1, 1)) for d in s] or [1]
        hdr(f, f"shape-{k}-{t}-{how}")
    # 6b. structure of the header
    hdr(lambda h: h.pop(names[0]), "entry-removed-first")
    hdr(lambda h: h.pop(names[-1]), "entry-removed-last")
    hdr(lambda h: h.__setitem__("__metadata__", {"format": 1}), "metadata-not-strings")
    hdr(lambda h: h.__setitem__("__metadata__", ["pt"]), "metadata-a-list")
    hdr(lambda h: h[names[0]].__setitem__("extra", 1), "entry-extra-key")
    hdr(lambda h: h.__setitem__("ghost", {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}), "entry-overlapping")
    hdr(lambda h: h.__setitem__(names[0], [1, 2]), "entry-a-list")
    for label, raw in (("header-array", b"[1, 2, 3]"), ("header-string", b'"x"'), ("header-deep", b"[" * 100000),
                       ("header-not-utf8", b"\xff\xfe{}"), ("header-empty-object", b"{}")):
        raw += b" " * (-len(raw) % 8)
        out.append((label, len(raw).to_bytes(8, "little") + raw + body, None))
    unpadded = _join(header, body, pad=False)  # valid: safetensors does not require padding
    out.append(("header-unpadded", unpadded, None))
    # 7. bytes flipped in the data (values change, may become NaN/Inf: either loads or names it)
    for k in range(12):
        b = bytearray(base)
        b[8 + n + rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        out.append((f"data-bitflip-{k}", bytes(b), None))
    # 8. NaN / ±Inf written into one element of a tensor
    for k in range(24):
        t = rng.choice([x for x in names if header[x]["dtype"] == "F32"])
        a, e = header[t]["data_offsets"]
        pos = a + 4 * rng.randrange((e - a) // 4)
        val = rng.choice((math.nan, math.inf, -math.inf))
        b = bytearray(base)
        b[8 + n + pos : 8 + n + pos + 4] = struct.pack("<f", val)
        out.append((f"nonfinite-{k}-{t}-{val}", bytes(b), t))
    return out


def _finite_everywhere(obj, where: str = "report") -> None:
    if isinstance(obj, float):
        assert math.isfinite(obj), f"{where} = {obj}"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _finite_everywhere(v, f"{where}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _finite_everywhere(v, f"{where}[{i}]")


def _check_report(folder: Path, label: str) -> None:
    r = analyze(folder)
    num = r.matrices.select_dtypes("number").to_numpy(dtype=np.float64)
    assert np.isfinite(num).all(), f"{label}: non-finite entries in the per-matrix table"
    for name, b in r.bounds.items():
        assert math.isfinite(b.log10_value), f"{label}: bound {name} has log10 {b.log10_value}"
        assert math.isfinite(b.value), f"{label}: bound {name} = {b.value}"
    _finite_everywhere(r.to_dict(), label)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    folder = write_bert(tmp_path_factory.mktemp("fuzz") / "m", L=1, N=8, H=2, F=8, seed=3)
    return folder, (folder / WEIGHTS).read_bytes()


def test_fuzz_loader(tiny: tuple[Path, bytes], one_thread) -> None:
    folder, base = tiny
    all_cases = cases(base)
    assert len(all_cases) >= 300
    assert len({c[1] for c in all_cases}) >= 250  # the mutations are not mostly the same file
    analysed: set[str] = set()
    outcomes = {"loaded": 0, "refused": 0}
    for label, data, nan_tensor in all_cases:
        (folder / WEIGHTS).write_bytes(data)
        with hang_guard(label):
            try:
                w = open_weights(folder)
                layers = list(w.layers())
            except SpecboundError as e:
                msg = str(e)
                assert msg and "\n" not in msg, f"{label}: not one line: {msg!r}"
                assert "Traceback" not in msg
                if nan_tensor is not None:
                    assert nan_tensor.startswith(ANALYSED_PREFIX), f"{label}: an unread tensor refused: {msg}"
                    assert nan_tensor in msg and "NaN or Inf" in msg, f"{label}: {msg}"
                outcomes["refused"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{label}: {type(e).__name__} escaped the loader: {e}")
            assert nan_tensor is None or not nan_tensor.startswith(ANALYSED_PREFIX), (
                f"{label}: NaN/Inf in analysed tensor {nan_tensor} was not refused")
            outcomes["loaded"] += 1
            h = hashlib.sha256()
            for lw in layers:
                for key in ("W_Q", "W_K", "W_V", "W_O", "M_in", "M_out"):
                    h.update(getattr(lw, key).contiguous().numpy().tobytes())
                for k in sorted(lw.extras):
                    h.update(k.encode() + lw.extras[k].contiguous().numpy().tobytes())
            digest = h.hexdigest()
            if digest not in analysed:  # one analysis per distinct content of the analysed tensors
                analysed.add(digest)
                _check_report(folder, label)
    # both outcomes occur (the test would pass vacuously if everything were refused or loaded)
    assert outcomes["loaded"] >= 10 and outcomes["refused"] >= 200, outcomes
    assert 2 <= len(analysed) <= 20, len(analysed)  # (each analysis costs ~0.2 s)


@pytest.fixture()
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
