"""The official OpenAI OpenAPI schemas as JSON Schema validators: loaded once, ``nullable`` translated."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO.parent / "shared" / "spec" / "openai-openapi.yaml"
SPEC_URI = "urn:openai:openapi"
SCHEMAS = "#/components/schemas/"


def translate_nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` -> JSON Schema: ``type`` becomes a union with ``"null"``.

    The spec mixes 3.0 idioms into a 3.1 document; a JSON Schema validator ignores ``nullable`` and would
    reject the ``null`` values OpenAI itself sends. Only a boolean ``nullable`` is a keyword: a property
    that happens to be named ``nullable`` (a dict under ``properties``) is left alone.
    """
    if isinstance(node, list):
        return [translate_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: translate_nullable(value) for key, value in node.items()}
    nullable = out.get("nullable")
    if not isinstance(nullable, bool):
        return out
    del out["nullable"]
    if not nullable:
        return out
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list):
        if "null" not in kind:
            out["type"] = [*kind, "null"]
    else:  # no type to widen (a $ref, allOf, ...): accept null beside whatever the schema says
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _read_spec(path: Path, cache_dir: Path | None) -> dict[str, Any]:
    """Parse the 3 MB YAML (seconds), or its translated JSON cached under ``cache_dir`` (milliseconds)."""
    raw = path.read_bytes()
    cached = None
    if cache_dir is not None:
        cached = cache_dir / f"openapi-{hashlib.sha256(raw).hexdigest()[:16]}.json"
        if cached.is_file():
            try:
                spec: dict[str, Any] = json.loads(cached.read_bytes())
                return spec
            except ValueError:
                pass  # a torn write: parse the YAML again
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = translate_nullable(yaml.load(raw, Loader=loader))
    if cached is not None:
        tmp = cached.with_suffix(".tmp")
        # json, not orjson: the spec holds integers beyond 64 bits; YAML dates become strings.
        tmp.write_text(json.dumps(spec, default=str))
        tmp.replace(cached)
    return spec


class OpenAPISchemas:
    """Validators for ``components.schemas`` entries, ``$ref``s resolved through one shared registry."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def names(self) -> set[str]:
        return set(self.spec["components"]["schemas"])

    def validator(self, name: str) -> Draft202012Validator:
        if name not in self._validators:
            if name not in self.names():
                raise KeyError(f"no schema {name!r} under components.schemas")
            self._validators[name] = Draft202012Validator({"$ref": SPEC_URI + SCHEMAS + name}, registry=self.registry)
        return self._validators[name]

    def errors(self, name: str, instance: Any) -> list[str]:
        """Every violation, each as ``path: message`` (empty when the instance is valid)."""
        found = sorted(self.validator(name).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]

    def validate(self, name: str, instance: Any) -> None:
        """Raise ``AssertionError`` listing every violation of schema ``name``."""
        problems = self.errors(name, instance)
        if problems:
            raise AssertionError(f"not a valid {name}:\n  " + "\n  ".join(problems))


@functools.cache
def load_schemas(path: Path = SPEC_PATH, cache_dir: Path | None = None) -> OpenAPISchemas:
    """One parse per test session, whichever module asks first."""
    return OpenAPISchemas(_read_spec(path, cache_dir))


def schemas_or_skip(config: pytest.Config) -> OpenAPISchemas:
    """For a session fixture: the schemas, or a skip when ``../shared/spec`` is absent (a user's checkout)."""
    if not SPEC_PATH.is_file():
        pytest.skip(f"the OpenAI OpenAPI spec is not at {SPEC_PATH} (../shared/spec is absent on this machine)")
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    return load_schemas(SPEC_PATH, cache.mkdir("openapi") if cache is not None else None)


__all__ = ["SPEC_PATH", "OpenAPISchemas", "ValidationError", "load_schemas", "schemas_or_skip", "translate_nullable"]
