"""Check, before any backend starts, that each tier's API key, package or model directory is there."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gateway.backends.local.models import BUILTIN_PREFIX, BUILTINS, converted_dir, package_dir
from gateway.settings import ConfigError, LocalBackend, OpenAIBackend, Settings

# What the GGUF-to-safetensors conversion imports, with what to install when it is missing.
CONVERSION_PACKAGES = {"gguf": "gguf>=0.10", "accelerate": "accelerate>=0.30"}


def _env_key(tier: str) -> str:
    return f"TIERGATE_TIERS__{tier.upper()}__PATH"


def _openai_problem(tier: str, backend: OpenAIBackend) -> str | None:
    if backend.api_key_env is None or backend.forward_client_authorization:
        return None
    if backend.api_key():
        return None
    return (
        f"tiers.{tier} (model {backend.model} at {backend.base_url}) needs an API key: "
        f"set the environment variable {backend.api_key_env} (export {backend.api_key_env}=...)"
    )


def _conversion_problem(tier: str, what: str) -> str | None:
    missing = [pip for module, pip in CONVERSION_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (
        f"tiers.{tier}: converting {what} needs {', '.join(missing)}: "
        f"pip install {' '.join(repr(m) for m in missing)} (or pip install 'tiergate[local]')"
    )


def _local_problem(tier: str, backend: LocalBackend) -> str | None:
    if backend.path.startswith(BUILTIN_PREFIX):
        name = backend.path[len(BUILTIN_PREFIX) :]
        builtin = BUILTINS.get(name)
        if builtin is None:
            known = ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
            return f"tiers.{tier}.path: unknown builtin model {backend.path!r}; known: {known}"
        if (converted_dir(builtin, backend.cache_dir) / "config.json").is_file():
            return None
        try:
            for module in builtin.packages:
                package_dir(module, builtin.install)
        except ConfigError as exc:
            return f"tiers.{tier} ({backend.path}): {exc}"
        return _conversion_problem(tier, backend.path)
    location = Path(backend.path).expanduser()
    if backend.gguf_file is not None:
        location = location / backend.gguf_file
    if location.suffix == ".gguf":
        if not location.is_file():
            return (
                f"tiers.{tier} (model {backend.model}): GGUF file {location} not found: put the file there or set "
                f"tiers.{tier}.path (environment: {_env_key(tier)}) to an existing .gguf file"
            )
        return _conversion_problem(tier, str(location))
    if not (location / "config.json").is_file():
        return (
            f"tiers.{tier} (model {backend.model}): model directory {location} not found or has no config.json: "
            f"download the checkpoint there (config.json, *.safetensors, tokenizer files) or set tiers.{tier}.path "
            f"(environment: {_env_key(tier)}) to a directory that has it"
        )
    return None


def check_backend_requirements(settings: Settings) -> None:
    """Raise ConfigError listing every tier whose key, package or model directory is missing."""
    problems: list[str] = []
    for tier, backend in sorted(settings.tiers.items()):
        if isinstance(backend, OpenAIBackend):
            problem = _openai_problem(tier, backend)
        else:
            problem = _local_problem(tier, backend)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise ConfigError("cannot start the configured backends:\n  " + "\n  ".join(problems))
