"""Where tensors come from: safetensors files and shard folders, state_dicts, modules, hub ids.

A :class:`TensorSource` hands out tensors by name, lazily: a safetensors file is memory-mapped
and a tensor is read only when asked for, so analysing a model holds one layer at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from specbound.errors import InputError

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


def _open_safetensors(path: Path):  # -> safetensors safe_open handle
    from safetensors import safe_open

    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    if size < 8:
        raise InputError(
            f"{path}: not a safetensors file ({size} bytes; the format starts with an 8-byte "
            "header length). Re-download or re-export the checkpoint."
        )
    try:
        handle = _safe_open_pread(safe_open, path)
    except Exception as e:  # safetensors raises SafetensorError / OSError with a terse message
        raise InputError(
            f"{path}: not a valid safetensors file or truncated/corrupt ({str(e).strip()}). "
            "Re-download or re-export the checkpoint (e.g. save_pretrained(..., safe_serialization=True))."
        ) from None
    # safe_open checks the header; make sure the data section is complete too, so a truncated
    # download fails here with its name instead of later as a bus error.
    try:
        with path.open("rb") as fh:  # one open, closed here: the length prefix, then the header
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path}: corrupt safetensors header. Re-download the checkpoint.") from None
    end = max(
        (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
    )
    if 8 + header_len + end > size:
        raise InputError(
            f"{path}: truncated safetensors file ({size} bytes, the header promises "
            f"{8 + header_len + end}). Re-download the checkpoint."
        )
    return handle


class SafetensorsSource:
    """One safetensors file, or several shards listed by ``model.safetensors.index.json``."""

    def __init__(self, files: list[Path], description: str, config: dict[str, Any] | None):
        self.description = description
        self.config = config
        self._where: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}
        for f in files:
            h = _open_safetensors(f)
            self._handles[f] = h
            for k in h.keys():
                self._where[k] = f

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        f = self._where[name]
        try:
            return self._handles[f].get_tensor(name)
        except Exception as e:
            raise InputError(f"{f}: cannot read tensor {name!r} ({e}). Re-download the checkpoint.") from None


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
        return self._state[name].detach()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}).") from None
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e}).") from None
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


def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards listed by ``model.safetensors.index.json``,
    else every ``*.safetensors`` file (sorted; a tensor in several is read from the last); ``[]``
    when there are none. A bad index is an error naming it."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{index}: not a valid safetensors index (needs a 'weight_map' object).") from None
        files = sorted({folder / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{index}: lists shard(s) that are not in the folder: {', '.join(missing)}.")
        return files
    return sorted(folder.glob("*.safetensors"))


def _folder_source(folder: Path, config: dict[str, Any] | None) -> TensorSource:
    cfg_path = folder / "config.json"
    if config is None:
        if not cfg_path.is_file():
            raise InputError(
                f"{folder}: no config.json in the folder; pass the model config (config=... or "
                "--config FILE) or a name mapping (--mapping FILE)."
            )
        config = _read_config(cfg_path)
    files = safetensors_files(folder)
    if files:
        return SafetensorsSource(files, str(folder), config)
    binfile = folder / "pytorch_model.bin"
    if binfile.is_file():
        import torch

        try:
            state = torch.load(binfile, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise InputError(f"{binfile}: cannot be loaded as a PyTorch state_dict ({e}).") from None
        return StateDictSource(state, str(folder), config)
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
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_source(path, cfg)
    if path.is_file():
        if cfg is None:
            side = path.parent / "config.json"
            if not side.is_file():
                raise InputError(
                    f"{path}: no config.json beside the file; pass the model config "
                    "(--config FILE) or a name mapping (--mapping FILE)."
                )
            cfg = _read_config(side)
        return SafetensorsSource([path], str(path), cfg)
    text = str(source)
    if _HUB_ID.match(text) and not text.endswith((".safetensors", ".json", ".bin")) and "/" in text:
        return _folder_source(resolve_hub_id(text), cfg)
    raise InputError(f"{source}: no such file or folder.")
