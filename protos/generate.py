"""Regenerate the Python gRPC/protobuf modules for every .proto under protos/.

Usage, from the repository root:

    python -m protos.generate           # rewrite protos/**/*_pb2.py, *_pb2_grpc.py, *_pb2.pyi
    python -m protos.generate --check   # regenerate into a temp dir; exit 1 if the
                                        # committed files are missing, stale or differ

protoc runs with `-I .` from the repository root, so a file at protos/a/b.proto is
known to protoc as "protos/a/b.proto" and generated code imports it as
`from protos.a import b_pb2`.

The generated code is tied to the code generator's version: *_pb2.py refuses to load
under a protobuf runtime older than the protoc that produced it or of a different major
version, and *_pb2_grpc.py refuses grpcio older than grpcio-tools. The serving install
ships protobuf 6.x (tritonclient requires protobuf<7) and grpcio 1.81.x, so this script
only runs under grpcio-tools 1.81.x and protobuf 6.x; anything else would emit code the
shipped runtime cannot load or that differs from the committed files.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTOS_DIR.parent

REQUIRED_GRPCIO_TOOLS = "1.81"  # major.minor
REQUIRED_PROTOBUF_MAJOR = 6

GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


class GenerateError(Exception):
    """A problem that stops generation; the message is shown to the user."""


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError as exc:
        raise GenerateError(
            f"{dist} is not installed in this interpreter ({sys.executable}). "
            'Install the dev extra: pip install -e ".[dev]"'
        ) from exc


def check_toolchain() -> tuple[str, str]:
    """Return (grpcio-tools version, protobuf version) or raise if they are not the pinned ones."""
    tools = _installed("grpcio-tools")
    protobuf = _installed("protobuf")
    problems = []
    if tools.split(".")[:2] != REQUIRED_GRPCIO_TOOLS.split("."):
        problems.append(f"grpcio-tools {tools} is installed; {REQUIRED_GRPCIO_TOOLS}.x is required")
    if protobuf.split(".")[0] != str(REQUIRED_PROTOBUF_MAJOR):
        problems.append(
            f"protobuf {protobuf} is installed; {REQUIRED_PROTOBUF_MAJOR}.x is required"
        )
    if problems:
        raise GenerateError(
            "refusing to generate: "
            + "; ".join(problems)
            + ". Generated code must match the shipped runtime (grpcio 1.81.x, protobuf 6.x, "
            "which tritonclient also requires). Install the pinned versions: "
            'pip install -e ".[dev]"'
        )
    return tools, protobuf


def find_protos() -> list[Path]:
    """All .proto files under protos/, as paths relative to the repository root."""
    return sorted(p.relative_to(REPO_ROOT) for p in PROTOS_DIR.rglob("*.proto"))


def expected_outputs(protos: list[Path]) -> list[Path]:
    """Generated files (relative to the repo root) that the given protos produce."""
    out = []
    for proto in protos:
        stem = proto.with_suffix("")
        out.extend(stem.parent / (stem.name + suffix) for suffix in GENERATED_SUFFIXES)
    return out


def run_protoc(protos: list[Path], out_dir: Path) -> None:
    """Compile all protos in one protoc run (so imports between them resolve) into out_dir."""
    import grpc_tools  # imported late: only after the toolchain check has passed

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        "-I",
        str(well_known),
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(p.as_posix() for p in protos),
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GenerateError(
            f"protoc failed (exit {result.returncode}):\n{result.stderr or result.stdout}"
        )
    missing = [p for p in expected_outputs(protos) if not (out_dir / p).is_file()]
    if missing:
        raise GenerateError("protoc did not produce: " + ", ".join(p.as_posix() for p in missing))


def stale_outputs(protos: list[Path]) -> list[Path]:
    """Generated-looking files under protos/ whose .proto no longer exists."""
    expected = set(expected_outputs(protos))
    found = {
        p.relative_to(REPO_ROOT)
        for suffix in GENERATED_SUFFIXES
        for p in PROTOS_DIR.rglob("*" + suffix)
    }
    return sorted(found - expected)


def generate(protos: list[Path]) -> list[Path]:
    """Regenerate in place; return the files whose content changed."""
    changed = []
    with tempfile.TemporaryDirectory(prefix="protos-gen-") as tmp:
        tmp_dir = Path(tmp)
        run_protoc(protos, tmp_dir)
        for rel in expected_outputs(protos):
            target = REPO_ROOT / rel
            if target.is_file() and filecmp.cmp(tmp_dir / rel, target, shallow=False):
                continue
            shutil.copyfile(tmp_dir / rel, target)
            changed.append(rel)
    return changed


def check(protos: list[Path]) -> list[str]:
    """Return a list of problems (empty when the committed files are up to date)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="protos-check-") as tmp:
        tmp_dir = Path(tmp)
        run_protoc(protos, tmp_dir)
        for rel in expected_outputs(protos):
            target = REPO_ROOT / rel
            if not target.is_file():
                problems.append(f"missing: {rel.as_posix()}")
            elif not filecmp.cmp(tmp_dir / rel, target, shallow=False):
                problems.append(f"out of date: {rel.as_posix()}")
    problems.extend(
        f"stale (no matching .proto): {rel.as_posix()}" for rel in stale_outputs(protos)
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protos.generate",
        description="Regenerate *_pb2.py, *_pb2_grpc.py and *_pb2.pyi for every .proto "
        "under protos/.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write anything; exit 1 if the committed generated files differ from "
        "what the .proto files produce",
    )
    args = parser.parse_args(argv)

    try:
        tools, protobuf = check_toolchain()
        protos = find_protos()
        if not protos:
            raise GenerateError(f"no .proto files found under {PROTOS_DIR}")
        if args.check:
            problems = check(protos)
            if problems:
                print(
                    "generated protobuf code is not up to date:\n  "
                    + "\n  ".join(problems)
                    + "\nrun `python -m protos.generate` from the repository root and commit "
                    "the result.",
                    file=sys.stderr,
                )
                return 1
            print(f"ok: {len(protos)} proto file(s) up to date (grpcio-tools {tools})")
            return 0
        changed = generate(protos)
    except GenerateError as exc:
        print(f"protos.generate: {exc}", file=sys.stderr)
        return 2

    for rel in changed:
        print(f"wrote {rel.as_posix()}")
    print(
        f"{len(protos)} proto file(s), {len(changed)} generated file(s) changed "
        f"(grpcio-tools {tools}, protobuf {protobuf})"
    )
    for rel in stale_outputs(protos):
        print(f"warning: {rel.as_posix()} has no matching .proto; delete it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
