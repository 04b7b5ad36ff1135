"""One model-card schema for every task (`card.json` and its readable twin `MODEL_CARD.md`).

`ModelCard` is the schema (version `SCHEMA_VERSION`); `ModelCard.from_dict` validates a card
(unknown keys, wrong types, malformed file entries are errors) and `migrate` maps the layouts
written before the schema existed (detection kept its recipe under `training` and its parity at
the top level, INT8 twins used `quantization` / `float_model`) onto it without touching a value.

File entries (`versions.<n>`, `explain`, `weights`) name a file relative to the model folder and
record its `sha256` and `bytes`; `check_files` compares them with the files. `weights` says where
the torch weights beside the ONNX file come from (`provenance`) and how well they reproduce it
(`parity`; null for an INT8 model, whose weights entry points at its float model's weights).
Torch-free: the server reads cards too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
TASKS = ("segmentation", "detection", "volumetric_segmentation")
FILE_KEYS = ("file", "sha256", "bytes")
WEIGHTS_KEYS = (*FILE_KEYS, "format", "provenance", "parity")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CardError(ValueError):
    """A card that does not follow the schema."""


@dataclass
class ModelCard:
    """A bundled model's card. Sections are free-form dicts of recorded figures, except the
    file entries (`versions`, `explain`, `weights`), whose keys are checked."""

    name: str
    task: str
    description: str
    labels: list[str]
    schema_version: int = SCHEMA_VERSION
    architecture: str = ""
    intended_use: str = ""
    data: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)  # opset, input, output, parity (torch vs ONNX)
    metrics: dict = field(default_factory=dict)  # split -> metric -> value
    evaluation: dict = field(default_factory=dict)
    reference_torch: dict = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)  # "1" -> file, sha256, bytes, exported_utc
    weights: dict | None = None
    explain: dict | None = None
    image_head: dict | None = None
    int8: dict | None = None
    int8_of: str = ""  # an INT8 model: the float model it quantizes
    tensorrt: dict | None = None
    files: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """Validate `data` (a card in this schema) and build the card; CardError if invalid."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise CardError(f"unknown card keys {unknown}")
        missing = [k for k in ("name", "task", "description", "labels") if k not in data]
        if missing:
            raise CardError(f"card misses {missing}")
        for key, value in data.items():
            _check_type(key, value, known[key].type)
        card = cls(**data)
        card.validate()
        return card

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse and validate a `card.json` text."""
        return cls.from_dict(json.loads(text))

    def validate(self) -> None:
        """Schema rules beyond types; CardError on the first broken one."""
        if self.schema_version != SCHEMA_VERSION:
            raise CardError(f"schema_version {self.schema_version}, expected {SCHEMA_VERSION}")
        if self.task not in TASKS:
            raise CardError(f"task {self.task!r} not in {TASKS}")
        for version, entry in self.versions.items():
            if not version.isdigit():
                raise CardError(f"version key {version!r} is not a number")
            _check_file_entry(f"versions.{version}", entry, FILE_KEYS)
        if self.explain is not None:
            _check_file_entry("explain", self.explain, FILE_KEYS)
        if self.weights is not None:
            _check_file_entry("weights", self.weights, WEIGHTS_KEYS)
        if self.int8 is not None and not isinstance(self.int8.get("kept", False), bool):
            raise CardError("int8.kept must be true or false")

    def to_dict(self) -> dict:
        """The card as `card.json` holds it (empty optional sections left out)."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            required = f.name in ("name", "task", "description", "labels", "schema_version")
            if required or value not in (None, "", [], {}):
                out[f.name] = value
        return out

    def to_json(self) -> str:
        """`card.json` text (2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def file_entries(self) -> dict[str, dict]:
        """Every entry that names a file: versions.<n>, explain, weights."""
        entries = {f"versions.{k}": v for k, v in self.versions.items()}
        for key in ("explain", "weights"):
            if getattr(self, key) is not None:
                entries[key] = getattr(self, key)
        return entries

    def render_markdown(self) -> str:
        """`MODEL_CARD.md`: title, description, the figures with their n and 95 % interval,
        metric definitions, the evaluation protocol, weights, then every section."""
        from vision.card_markdown import definition_lines, figure_lines, protocol_lines

        lines = [f"# {self.name}", "", self.description, ""]
        lines += figure_lines(self.metrics) or _metrics_table(self.metrics)
        lines += definition_lines(self.metrics, self.evaluation)
        lines += protocol_lines(self.evaluation, self.limitations)
        lines += _weights_lines(self.weights)
        skip = {"name", "description", "weights"}
        for key, value in self.to_dict().items():
            if key not in skip:
                lines += _section(key, value)
        return "\n".join(lines)


def _check_type(key: str, value: Any, annotation: str) -> None:
    wanted = {"str": str, "int": int, "dict": dict, "list[str]": list}
    base = annotation.replace(" | None", "")
    if value is None and "None" in annotation:
        return
    if not isinstance(value, wanted[base]) or isinstance(value, bool):
        raise CardError(f"{key}: {type(value).__name__}, expected {annotation}")
    if base == "list[str]" and not all(isinstance(v, str) for v in value):
        raise CardError(f"{key}: every item must be a string")


def _check_file_entry(where: str, entry: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(entry, dict):
        raise CardError(f"{where}: expected an object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise CardError(f"{where}: misses {missing}")
    if not isinstance(entry["file"], str) or not entry["file"]:
        raise CardError(f"{where}.file must name a file")
    if not _SHA256.match(str(entry["sha256"])):
        raise CardError(f"{where}.sha256 is not a hex SHA-256")
    if not isinstance(entry["bytes"], int) or entry["bytes"] <= 0:
        raise CardError(f"{where}.bytes must be a positive integer")


def _metrics_table(metrics: dict) -> list[str]:
    """Markdown table: one row per split, one column per numeric metric."""
    splits = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    keys = sorted({k for v in splits.values() for k, x in v.items() if isinstance(x, float)})
    if not keys:
        return []
    rows = [f"| split | {' | '.join(keys)} |", "|---" * (len(keys) + 1) + "|"]
    for split, values in splits.items():
        cells = [f"{values[k]:.4f}" if isinstance(values.get(k), float) else "" for k in keys]
        rows.append(f"| {split} | {' | '.join(cells)} |")
    return ["## Summary", "", *rows, ""]


def _weights_lines(weights: dict | None) -> list[str]:
    if weights is None:
        return []
    lines = [
        "## Weights",
        "",
        f"`{weights['file']}` ({weights['format']}, {weights['bytes']} "
        f"bytes, sha256 `{weights['sha256']}`): {weights['provenance']}",
        "",
    ]
    return lines + ["```json", json.dumps(weights, indent=2, default=str), "```", ""]


def _section(key: str, value: Any) -> list[str]:
    lines = [f"## {key.replace('_', ' ').capitalize()}", ""]
    if isinstance(value, dict):
        return lines + ["```json", json.dumps(value, indent=2, default=str), "```", ""]
    if isinstance(value, list):
        return lines + [f"- {item}" for item in value] + [""]
    return lines + [str(value), ""]


def migrate(card: dict) -> dict:
    """A card in this schema from one in any earlier layout; values are moved, never changed."""
    out = dict(card)
    training = dict(out.get("training", {}))
    if "recipe" in training:
        out.setdefault("recipe", training.pop("recipe"))
        out["training"] = training
    if "parity" in out:
        out["export"] = {**out.get("export", {}), "parity": out.pop("parity")}
    if "quantization" in out:
        out.setdefault("int8", out.pop("quantization"))
    if "float_model" in out:
        out.setdefault("int8_of", out.pop("float_model"))
    if isinstance(out.get("evaluation"), str):
        out["evaluation"] = {"method": out["evaluation"]}
    out.setdefault("schema_version", SCHEMA_VERSION)
    return out


def read_model_card(model_dir: str | Path) -> ModelCard:
    """The validated card of a model folder (FileNotFoundError when it has none)."""
    path = Path(model_dir) / "card.json"
    return ModelCard.from_json(path.read_text())


def write_model_card(model_dir: str | Path, card: ModelCard) -> Path:
    """Validate `card`, write `card.json` and `MODEL_CARD.md`; the Markdown file's path."""
    card.validate()
    model_dir = Path(model_dir)
    (model_dir / "card.json").write_text(card.to_json())
    path = model_dir / "MODEL_CARD.md"
    path.write_text(card.render_markdown())
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(model_dir: str | Path, card: ModelCard) -> list[str]:
    """Problems with the card's file entries: a missing file, a size or sha256 that differs."""
    problems = []
    for where, entry in card.file_entries().items():
        path = Path(model_dir) / entry["file"]
        if not path.is_file():
            problems.append(f"{where}: {path} is missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(
                f"{where}: {path} has {path.stat().st_size} bytes, not {entry['bytes']}"
            )
        elif _sha256(path) != entry["sha256"]:
            problems.append(f"{where}: {path} sha256 differs from the card")
    return problems


def source_commit() -> str:
    """The git commit of the code that runs (`git rev-parse HEAD`), "" outside a checkout."""
    import subprocess

    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return found.stdout.strip() if found.returncode == 0 else ""


def _git(cwd: Path, *args: str) -> str:
    """`git ARGS` in `cwd`: its stdout stripped, "" when git fails or is absent."""
    import subprocess

    try:
        found = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return found.stdout.strip() if found.returncode == 0 else ""


def uncommitted_code() -> list[str]:
    """Tracked files of the `vision` package that differ from HEAD in the running checkout
    (the code commit alone does not say what ran when it is not empty)."""
    here = Path(__file__).resolve().parent
    status = _git(here, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return sorted(line.split(maxsplit=1)[1] for line in status.splitlines() if line.strip())


def served_file(model_dir: str | Path) -> str:
    """The ONNX file name the model's config serves (`model_file`; `model.onnx` without one)."""
    from vision.config import load_config
    from vision.errors import ConfigError

    if not (Path(model_dir) / "config.yaml").is_file():
        return "model.onnx"
    try:
        return load_config(model_dir).model_file
    except ConfigError:
        return "model.onnx"


def model_commit(model_dir: str | Path, version: int | str = 1) -> dict:
    """Which commit made a model: the last commit that changed the ONNX file its config serves
    (`<version>/<model_file>`), and whether the file differs from that commit now."""

    path = Path(model_dir).resolve() / str(version) / served_file(model_dir)

    def git(*args: str) -> str:
        return _git(path.parent, *args)

    commit = git("log", "-1", "--format=%H", "--", path.name)
    changed = bool(git("status", "--porcelain", "--", path.name))
    return {
        "file": f"{version}/{path.name}",
        "commit": commit or None,
        "rule": "the last commit that changed the file",
        "uncommitted_changes": changed,
    }


def note_evaluation(
    card: dict,
    split: str,
    images: int,
    model_dir: str | Path | None = None,
    version: int | str | None = None,
) -> dict:
    """Record in `card` (a dict) that its `split` figures were produced now, by which commit,
    on how many images, of which model file (`model_dir`/`version`: its sha256, and the
    commit that made it in `evaluation.model_commit`). The protocol selects on validation and
    scores test once: a test figure produced more than once is said so in `limitations`."""
    import datetime as dt

    evaluation = card.setdefault("evaluation", {})
    run = {
        "split": split,
        "images": images,
        "commit": source_commit(),
        "uncommitted_code": uncommitted_code(),
        "utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if model_dir is not None:
        version = version or 1
        run["model_sha256"] = _sha256(Path(model_dir) / str(version) / served_file(model_dir))
        evaluation["model_commit"] = model_commit(model_dir, version)
    evaluation.setdefault("runs", []).append(run)
    return restate_repeated_test(card)


def restate_repeated_test(card: dict) -> dict:
    """`card` with its repeated-test limitation stated from `evaluation.runs` (one line,
    replacing any earlier wording)."""
    kept = [
        x for x in card.get("limitations", []) if not x.lower().startswith(_REPEATED_TEST.lower())
    ]
    card["limitations"] = kept + _repeated_test(card.get("evaluation", {}).get("runs", []))
    return card


def _repeated_test(runs: list[dict]) -> list[str]:
    """The limitation a card states when its test split was scored more than once."""
    tests = [run for run in runs if run["split"] == "test"]
    if len(tests) < 2:
        return []
    models = {run.get("model_sha256") for run in tests}
    said = f"{_REPEATED_TEST} {len(tests)} times (evaluation.runs)"
    if None not in models and len(models) == 1:
        return [
            f"{said}, each time of the same model file: test did not choose between weights, "
            "but a choice made after seeing an earlier test figure (post-processing, "
            "thresholds) may be informed by it."
        ]
    return [f"{said}: the test split may have informed a choice, so its figures can over-state."]


_REPEATED_TEST = "The test figures were produced"
