"""A small Dockerfile reader for static checks: stages, build args, and where Python lives.

It knows what the bases this project uses provide (`BASE_FILES`) and what `apt-get install` of
a Python package adds, which is enough to say whether a virtualenv copied into a stage points
at an interpreter that stage has, without pulling any image.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class Stage:
    """One `FROM` block: its base (build args expanded), name and instructions."""

    base: str
    name: str
    args: dict[str, str]
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction, build args expanded."""
        return [expand(text, self.args) for kw, text in self.instructions if kw == keyword]


def expand(text: str, args: dict[str, str]) -> str:
    """`${NAME}` and `$NAME` replaced by build-arg values (others left alone)."""
    return _VAR.sub(lambda m: args.get(m[1] or m[2], m[0]), text)


def logical_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path, build_args: dict[str, str] | None = None) -> list[Stage]:
    """The stages of the Dockerfile at `path`, as `docker build --build-arg` would see them."""
    given = build_args or {}
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            if not stages:
                global_args[name] = given.get(name, expand(default, global_args))
            else:
                value = given.get(name, default or global_args.get(name, ""))
                stages[-1].args[name] = expand(value, stages[-1].args)
        elif keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(expand(parts[0], global_args), name, {}))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


# Interpreters each base image provides (the official python images put theirs in /usr/local).
BASE_FILES = {
    r"python:3\.11(-[\w.-]+)?": {
        "/usr/local/bin/python",
        "/usr/local/bin/python3",
        "/usr/local/bin/python3.11",
    },
    r"nvidia/cuda:[\w.-]+-ubuntu24\.04": set(),  # CUDA images ship no Python
}
_APT_PYTHON = re.compile(r"^python3(\.\d+)?$")


def base_files(image: str) -> set[str]:
    """Interpreter paths in `image`; KeyError for a base this checker does not know."""
    for pattern, files in BASE_FILES.items():
        if re.fullmatch(pattern, image):
            return set(files)
    raise KeyError(f"unknown base image {image!r}: add what it provides to BASE_FILES")


def apt_installed(stage: Stage) -> set[str]:
    """Interpreter paths that `apt-get install` of python3 / python3.X adds in `stage`."""
    files = set()
    for run in stage.all("RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            if words[:2] != ["apt-get", "install"]:
                continue
            for word in words[2:]:
                if _APT_PYTHON.match(word):
                    files.add(f"/usr/bin/{word}")
    return files


def interpreters(stage: Stage) -> set[str]:
    """Every interpreter path the stage has: its base's and what it installs."""
    return base_files(stage.base) | apt_installed(stage)


def resolve(command: str, available: set[str]) -> str | None:
    """Where `command` is found on the default PATH (/usr/local/bin before /usr/bin)."""
    if command.startswith("/"):
        return command if command in available else None
    for folder in ("/usr/local/bin", "/usr/bin"):
        if f"{folder}/{command}" in available:
            return f"{folder}/{command}"
    return None


_VENV = re.compile(r"(?P<python>\S+)\s+-m\s+venv\s+(?P<target>\S+)")


def venv_interpreter(stage: Stage) -> tuple[str, str]:
    """(the virtualenv's folder, the interpreter its bin/python links to) made in `stage`."""
    for run in stage.all("RUN"):
        match = _VENV.search(run)
        if match:
            python = match["python"].strip("\"'")
            found = resolve(python, interpreters(stage))
            if found is None:
                raise AssertionError(f"stage {stage.name}: {python} is not in {stage.base}")
            return match["target"], found
    raise AssertionError(f"stage {stage.name} makes no virtualenv")


def copied_venvs(final: Stage, stages: list[Stage]) -> list[tuple[Stage, str]]:
    """(source stage, folder) of each `COPY --from=STAGE DIR DIR` that brings a virtualenv."""
    by_name = {s.name: s for s in stages}
    found = []
    for copy in final.all("COPY"):
        words = copy.split()
        source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        if source in by_name:
            paths = [w for w in words if not w.startswith("--")]
            found.append((by_name[source], paths[0]))
    return found


def broken_interpreter_links(path: Path, build_args: dict[str, str] | None = None) -> list[str]:
    """Why the last stage's copied virtualenvs would not run ('' list when they would)."""
    stages = parse(path, build_args)
    final = stages[-1]
    problems = []
    for source, folder in copied_venvs(final, stages):
        target, python = venv_interpreter(source)
        if target != folder:
            continue
        if python not in interpreters(final):
            problems.append(
                f"{folder}/bin/python links to {python} (from {source.base}), which the final "
                f"stage's base {final.base} does not have"
            )
    return problems
