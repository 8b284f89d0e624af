"""Where tensors come from: safetensors files and shard folders, state_dicts, modules, hub ids.

A :class:`TensorSource` hands out tensors by name, lazily: a safetensors file is memory-mapped
and a tensor is read only when asked for, so analysing a model holds one layer at a time.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, Protocol

from specbound.errors import InputError
from specbound.weights.files import file_kind, read_json, regular_file

if TYPE_CHECKING:  # torch is imported where tensors are made: the file layout is readable without it
    import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"


class TensorSource(Protocol):
    """Tensors by name plus the model config (if known). ``description`` names the origin."""

    description: str
    config: dict[str, Any] | None

    def keys(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def get(self, name: str) -> torch.Tensor: ...


def _safe_open_pread(safe_open, path: Path):  # -> safetensors safe_open handle
    """``safe_open`` reading tensors with ``pread(2)`` into fresh buffers where supported.

    The default backend memory-maps the file: every page a tensor was read from stays mapped
    (and counted in the resident set) while the handle is open, so analysing a sharded model
    layer by layer would end up with the whole checkpoint resident. With ``pread`` only the
    tensors still referenced are in memory. safetensors < 0.8 has no ``backend`` argument.
    """
    try:
        return safe_open(str(path), framework="pt", backend="pread")
    except TypeError:
        return safe_open(str(path), framework="pt")


#: Bytes per element of every safetensors dtype (safetensors 0.8 and the formats it may add).
ST_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
    "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1,
    "F8_E5M2FNUZ": 1, "F8_E8M0": 1, "C64": 8, "C128": 16,
}
#: The dtypes specbound analyses: real floating point, upcast to the working precision.
READABLE_DTYPES = ("F16", "BF16", "F32", "F64")
#: The largest header safetensors itself accepts (100 MB).
MAX_HEADER_BYTES = 100_000_000


def _dtype_advice(dtype: str) -> str:
    if dtype.startswith("C"):
        return ("complex weights are not a real Transformer's (the imaginary part would be dropped); "
                "export the real weights")
    if dtype.startswith("F8") or dtype in ("BOOL",) or dtype[0] in "IU":
        return "dequantise or cast the checkpoint to float16, bfloat16 or float32 first"
    return "convert the checkpoint to float16, bfloat16 or float32 first"


def check_dtype(where: str, name: str, dtype: str) -> None:
    """:class:`InputError` unless ``dtype`` (a safetensors dtype name) is in :data:`READABLE_DTYPES`."""
    if dtype not in READABLE_DTYPES:
        raise InputError(
            f"{where}: tensor {name!r} has dtype {dtype}; specbound analyses real floating-point "
            f"weights only ({', '.join(READABLE_DTYPES)}): {_dtype_advice(dtype)}."
        )


_TORCH_DTYPE_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "complex64": "C64",
    "complex128": "C128", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0",
}


def torch_dtype_name(dtype: Any) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` → ``"F32"``, ints ``I64``/``U8`` …)."""
    s = str(dtype).removeprefix("torch.")
    if s in _TORCH_DTYPE_NAMES:
        return _TORCH_DTYPE_NAMES[s]
    for prefix, code in (("uint", "U"), ("int", "I")):
        if s.startswith(prefix) and s[len(prefix):].isdigit():
            return code + s[len(prefix):]
    return s.upper()


def _bad_header(path: Path, why: str) -> InputError:
    return InputError(
        f"{path}: not a valid safetensors file or truncated/corrupt ({why}). Re-download or re-export "
        "the checkpoint (e.g. save_pretrained(..., safe_serialization=True))."
    )


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensor entries of a safetensors file's header (``name → {dtype, shape, data_offsets}``),
    checked against the file before anything else is read or allocated.

    The length field must fit in the file; the header must be a JSON object whose entries have a
    known dtype, a shape of non-negative integers and ``data_offsets`` ``[begin, end]`` with
    ``end - begin = prod(shape) · itemsize``; the entries must tile the data section exactly
    (sorted, contiguous, from 0 to the end of the file). Any violation is one
    :class:`InputError` naming the file (and the tensor), so a header promising a
    ``[20000, 20000]`` tensor in a 300 kB file fails here, in microseconds.
    """
    path = regular_file(path, "weights file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: {file_kind(st.st_mode)}, not a regular file; pass the weights file itself.")
        size = st.st_size
        if size < 8:
            raise InputError(
                f"{path}: not a safetensors file ({size} bytes; the format starts with an 8-byte "
                "header length). Re-download or re-export the checkpoint."
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n > size - 8:
                raise _bad_header(path, f"the length field promises a {n}-byte header in a {size}-byte file")
            if n > MAX_HEADER_BYTES:
                raise _bad_header(path, f"a {n}-byte header, more than safetensors allows")
            raw = fh.read(n)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    finally:
        os.close(fd)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad_header(path, "the header is not JSON") from None
    if not isinstance(header, dict):
        raise _bad_header(path, "the header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _bad_header(path, "__metadata__ is not an object of strings")
    spans = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise _bad_header(path, f"entry {name!r} is not {{dtype, shape, data_offsets}}")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dt, str) or dt not in ST_ITEMSIZE:
            raise _bad_header(path, f"tensor {name!r} has unknown dtype {dt!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _bad_header(path, f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise _bad_header(path, f"tensor {name!r} has data_offsets {offs!r}")
        nbytes = math.prod(shape) * ST_ITEMSIZE[dt]
        if offs[1] - offs[0] != nbytes:
            raise _bad_header(
                path, f"tensor {name!r}: shape {shape} of {dt} is {nbytes} bytes, its data_offsets "
                f"span {offs[1] - offs[0]}"
            )
        spans.append((offs[0], offs[1], name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise _bad_header(path, f"tensor {name!r} starts at byte {begin} of the data, expected {pos} "
                              "(tensors must be contiguous and not overlap)")
        pos = end
    data = size - 8 - n
    if pos > data:
        raise InputError(
            f"{path}: truncated safetensors file ({size} bytes, the header promises "
            f"{8 + n + pos}). Re-download the checkpoint."
        )
    if pos < data:
        raise _bad_header(path, f"{data - pos} bytes after the last tensor")
    return header


def _open_safetensors(path: Path):  # -> (safetensors safe_open handle, header entries)
    from safetensors import safe_open

    header = read_safetensors_header(path)  # every size checked before safetensors reads anything
    try:
        handle = _safe_open_pread(safe_open, path)
    except Exception as e:  # safetensors raises SafetensorError / OSError with a terse message
        raise _bad_header(path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
    return handle, header


class SafetensorsSource:
    """One safetensors file, or several shards listed by ``model.safetensors.index.json``."""

    def __init__(self, files: list[Path], description: str, config: dict[str, Any] | None):
        self.description = description
        self.config = config
        self._where: dict[str, Path] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        self._handles: dict[Path, Any] = {}
        for f in files:
            h, header = _open_safetensors(f)
            self._handles[f] = h
            for k in h.keys():
                if k not in header:  # safe_open and our reading of the header disagree
                    raise _bad_header(f, f"tensor {k!r} is not in the header")
                self._where[k] = f
                self._entries[k] = header[k]

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def get(self, name: str) -> torch.Tensor:
        f = self._where[name]
        check_dtype(str(f), name, self._entries[name]["dtype"])
        try:
            return self._handles[f].get_tensor(name)
        except Exception as e:
            raise InputError(f"{f}: cannot read tensor {name!r} ({_one_line(e)}). Re-download the checkpoint.") from None


def _one_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


class StateDictSource:
    """An in-memory ``state_dict`` (name → tensor)."""

    def __init__(self, state: Mapping[str, torch.Tensor], description: str, config: dict[str, Any] | None):
        self._state = state
        self.description = description
        self.config = config

    def keys(self) -> list[str]:
        import torch

        return [k for k, v in self._state.items() if isinstance(v, torch.Tensor)]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def get(self, name: str) -> torch.Tensor:
        t = self._state[name]
        check_dtype(self.description, name, torch_dtype_name(t.dtype))
        return t.detach()


#: Suffixes of PyTorch pickle files (``torch.save``); read with ``weights_only=True`` only.
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _looks_like_torch(path: Path) -> bool:
    """A ``torch.save`` file: by suffix, or by its first bytes (a zip archive, or a pickle)."""
    if path.suffix.lower() in TORCH_SUFFIXES:
        return True
    if path.suffix.lower() == ".safetensors":
        return False
    try:
        with path.open("rb") as fh:  # a regular file (checked by the caller)
            head = fh.read(9)
    except OSError:
        return False
    return head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[8:9] != b"{")


def _unpickle_reason(e: BaseException) -> str:
    """What torch's ``weights_only`` unpickler refused (``unsupported global os.system``), without
    its advice to turn the check off or to allow-list the global."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"GLOBAL\s+([\w.]+)", text)
    if m:
        return f"unsupported global {m.group(1)}"
    m = re.search(r"WeightsUnpickler error:\s*([^\n]*)", text)
    reason = m.group(1).split(". ")[0].strip() if m else ""
    if not reason or "weights_only" in reason:
        return "objects other than tensors"
    return reason if len(reason) <= 160 else reason[:157] + "..."


def load_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state_dict read with ``torch.load(weights_only=True)`` (never a full
    unpickle); one-line errors for a refused pickle, a corrupt file, or content that is not a
    dict of named tensors."""
    import pickle

    import torch

    path = regular_file(path, "PyTorch weights file")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        raise InputError(
            f"{path}: refused to load: the PyTorch file holds objects other than tensors "
            f"({_unpickle_reason(e)}); specbound reads .bin/.pt files as plain tensors only. "
            "Save the model's state_dict (torch.save(model.state_dict(), ...)) or convert it to safetensors."
        ) from None
    except Exception as e:
        raise InputError(
            f"{path}: not a readable PyTorch state_dict ({_one_line(e)}). Re-download or re-export "
            "the checkpoint (safetensors preferred)."
        ) from None
    if not isinstance(state, Mapping):
        raise InputError(
            f"{path}: holds a {type(state).__name__}, not a state_dict (a dict of name -> tensor); "
            "save model.state_dict()."
        )
    bad = next(((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        k, v = bad
        raise InputError(
            f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; a state_dict maps names to "
            "tensors (a training checkpoint? save model.state_dict() alone)."
        )
    if not state:
        raise InputError(f"{path}: the state_dict is empty.")
    return dict(state)


def _read_config(path: Path) -> dict[str, Any]:
    cfg = read_json(path, "model config")
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object with the model config.")
    return cfg


def _config_of(config: Any) -> dict[str, Any] | None:
    """Normalise a user-given config (dict, path, transformers PretrainedConfig) to a dict."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, (str, os.PathLike)):
        return _read_config(Path(config))
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise InputError(f"config must be a dict, a path to config.json or a transformers config, got {type(config).__name__}.")


def _shard_name(index: Path, key: Any, name: Any) -> str:
    """A ``weight_map`` value checked: a relative path inside the checkpoint folder."""
    if not isinstance(key, str) or not isinstance(name, str) or not name:
        raise InputError(
            f"{index}: weight_map entry {key!r}: {name!r} is not tensor name -> shard file name "
            "(both strings); fix or re-download the index."
        )
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
        raise InputError(
            f"{index}: weight_map entry {key!r} names the shard {name!r}, outside the checkpoint "
            "folder (an absolute path or a '..' component); shards must be files of the folder itself."
        )
    return name


def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards listed by ``model.safetensors.index.json``,
    else every ``*.safetensors`` file (sorted; a tensor in several is read from the last); ``[]``
    when there are none. A bad index is an error naming it; so is a shard named outside the folder
    (absolute, or with a ``..`` component). Shards that are symlinks (the Hugging Face cache links
    snapshot files to its blobs) are followed."""
    index = folder / SAFETENSORS_INDEX
    if index.exists() or index.is_symlink():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(
                f"{index}: not a valid safetensors index (needs a non-empty 'weight_map' object of "
                "tensor name -> shard file)."
            )
        names = {_shard_name(index, k, v) for k, v in weight_map.items()}
        files = sorted(folder / n for n in names)
        missing = [str(f) for f in files if not (f.exists() or f.is_symlink())]
        if missing:
            raise InputError(f"{index}: lists shard(s) that are not in the folder: {', '.join(missing)}.")
        for f in files:
            regular_file(f, "weights shard")
        return files
    return sorted(f for f in folder.glob("*.safetensors"))


def _folder_source(folder: Path, config: dict[str, Any] | None) -> TensorSource:
    cfg_path = folder / "config.json"
    if config is None:
        if not (cfg_path.exists() or cfg_path.is_symlink()):
            raise InputError(
                f"{folder}: no config.json in the folder; pass the model config (config=... or "
                "--config FILE) or a name mapping (--mapping FILE)."
            )
        config = _read_config(cfg_path)
    files = safetensors_files(folder)
    if files:
        return SafetensorsSource(files, str(folder), config)
    binfile = folder / "pytorch_model.bin"
    if binfile.exists() or binfile.is_symlink():
        return StateDictSource(load_torch_state(binfile), str(folder), config)
    raise InputError(
        f"{folder}: no *.safetensors file, {SAFETENSORS_INDEX} or pytorch_model.bin in the folder."
    )


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def resolve_hub_id(repo_id: str) -> Path:
    """Return the local snapshot folder of a hub model: from the cache, else downloaded.

    Offline and not cached raises :class:`InputError` with what to do.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError(
            f"{repo_id!r} is neither a local path nor resolvable: reading hub ids needs "
            "huggingface_hub (pip install 'specbound[hf]')."
        ) from None
    patterns = ["config.json", "*.safetensors", SAFETENSORS_INDEX]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise InputError(
            f"{repo_id!r}: no such local path, and as a hub id it is not in the local cache while "
            "HF_HUB_OFFLINE is set. Download it where there is a network, or pass a local folder."
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=5))
    except Exception as e:
        kind = type(e).__name__
        raise InputError(
            f"{repo_id!r}: no such local path, and as a hub id it is not in the local cache and "
            f"could not be downloaded ({kind}). Check the id, the network, or pass a local folder."
        ) from None


def open_source(source: Any, config: Any = None) -> TensorSource:
    """Open ``source`` lazily.

    ``source``: a ``.safetensors`` file; a folder with ``config.json`` and safetensors shards;
    a ``state_dict`` (mapping name → tensor); an ``nn.Module`` (a HF ``PreTrainedModel`` brings
    its config); or a hub id (``org/name``), taken from the local cache or downloaded.
    ``config`` overrides or supplies the model config (dict, path, or transformers config).
    """
    import torch

    cfg = _config_of(config)
    if isinstance(source, torch.nn.Module):
        if cfg is None and getattr(source, "config", None) is not None:
            cfg = _config_of(source.config)
        return StateDictSource(source.state_dict(), type(source).__name__, cfg)
    if isinstance(source, Mapping):
        return StateDictSource(source, "state_dict", cfg)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"cannot analyse an object of type {type(source).__name__}: pass a path, a hub id, "
            "a state_dict or an nn.Module."
        )
    if str(source).strip() == "":
        raise InputError("an empty path was given as the checkpoint; pass a file, a folder or a hub id.")
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_source(path, cfg)
    if path.exists() or path.is_symlink():  # a file, a FIFO, a device, a dangling link …
        regular_file(path, "checkpoint")
        if cfg is None:
            side = path.parent / "config.json"
            if not (side.exists() or side.is_symlink()):
                raise InputError(
                    f"{path}: no config.json beside the file; pass the model config "
                    "(--config FILE) or a name mapping (--mapping FILE)."
                )
            cfg = _read_config(side)
        if _looks_like_torch(path):
            return StateDictSource(load_torch_state(path), str(path), cfg)
        return SafetensorsSource([path], str(path), cfg)
    text = str(source)
    if _HUB_ID.match(text) and not text.endswith((".safetensors", ".json", ".bin")) and "/" in text:
        return _folder_source(resolve_hub_id(text), cfg)
    raise InputError(f"{source}: no such file or folder.")
