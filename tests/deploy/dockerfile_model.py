"""A small Dockerfile reader for the deploy tests: stages, instructions, ENV and the start command."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV values in order, with ``$VAR``/``${VAR}`` of earlier ENVs (only) left as written."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.value):
                key, sep, value = token.partition("=")
                if not sep:
                    raise ValueError(f"line {instruction.line}: use ENV KEY=value, not the legacy form")
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str] | None:
        """The last CMD/ENTRYPOINT as an argv list; shell form is refused (signals would not reach PID 1)."""
        found = self.all(keyword)
        if not found:
            return None
        value = found[-1].value
        if not value.startswith("["):
            raise ValueError(f"line {found[-1].line}: {keyword} must use the exec (JSON) form")
        argv = json.loads(value)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        return argv


def read_instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    out: list[Instruction] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, value = buffer.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), start))
        buffer = ""
    return out


def read_stages(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in read_instructions(path.read_text()):
        if instruction.keyword == "FROM":
            parts = instruction.value.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


def missing_tool(reason: str) -> NoReturn:
    """Skip on a developer machine without the tool; fail in CI (CI=true), where the test extra must have it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this check)")
    pytest.skip(reason, allow_module_level=True)


def start_command(stage: Stage) -> list[str]:
    """What the container runs: ENTRYPOINT followed by CMD (both exec form)."""
    entrypoint = stage.exec_form("ENTRYPOINT") or []
    cmd = stage.exec_form("CMD") or []
    return entrypoint + cmd
