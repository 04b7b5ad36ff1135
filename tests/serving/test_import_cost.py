"""The server reaches SERVING without the modules only some requests need (issue 19, item 1).

pydicom and its codecs (the first DICOM image), scipy (the first volume), highdicom and
pynetdicom (the DICOM node) and torch (never on a server) are imported lazily: a fresh process
that starts the composed server (`app.commands.serve` flags -> `app.server.VisionServer`) has
none of them at SERVING. The same process then serves a PNG, a DICOM image of the same pixels
and a raw volume: each works on a first request that has to import what it needs, and the
DICOM answer equals the PNG one. Run in a subprocess: in the test process other tests have
imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.serving.tiny_models import build_volume_repository
from tests.vision.dicom_files import make_dicom

ROOT = Path(__file__).resolve().parents[2]
LAZY = ("pydicom", "scipy", "highdicom", "pynetdicom", "torch")

SCRIPT = """
import asyncio, json, sys
from pathlib import Path

from app.commands.serve import build_parser, config_from
from app.server import VisionServer
from serving.predictions import ImageSource, PredictOptions
from serving.volumes import VolumeSource

LAZY = {lazy!r}


def loaded():
    return sorted(m for m in LAZY if m in sys.modules)


async def main(models, png, dicom):
    flags = ["--models", models, "--grpc-port", "0", "--http-port", "0", "--metrics", "public"]
    server = VisionServer(config_from(build_parser().parse_args(flags)))
    await server.start()
    found = {{"at_serving": loaded()}}
    try:
        plane, options = server.plane, PredictOptions()
        results = []
        for body in (png, dicom):
            source = ImageSource(encoded=Path(body).read_bytes())
            prediction = await plane.predict("segmentation", "bright", "", source, options)
            results.append([m.mask.astype(int).tolist() for m in prediction.result.masks])
        found["after_dicom"] = loaded()
        found["dicom_equals_png"] = results[0] == results[1] and bool(results[0])
        voxels = bytes(8 * 16 * 16 * 4)  # float32 zeros, [8, 16, 16]
        volume = VolumeSource(raw=voxels, shape=(8, 16, 16), dtype="float32")
        done = await plane.segment_volume("tiny-volume", "", volume)
        found["volume_shape"] = list(done.volume.shape)
        found["after_volume"] = loaded()
    finally:
        await server.stop()
    print("RESULT " + json.dumps(found))


asyncio.run(main(*sys.argv[1:4]))
"""


def _image() -> np.ndarray:
    rng = np.random.default_rng(5)
    pixels = rng.integers(40, 120, (24, 32)).astype(np.uint8)
    pixels[6:14, 10:22] = 230  # bright: the segmenter's mask
    return pixels


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What a fresh server process had imported at SERVING and after its first requests."""
    tmp = tmp_path_factory.mktemp("import-cost")
    models = build_volume_repository(tmp / "models")
    pixels = _image()
    png, dicom = tmp / "image.png", tmp / "image.dcm"
    png.write_bytes(cv2.imencode(".png", pixels)[1].tobytes())
    dicom.write_bytes(make_dicom(pixels))
    code = SCRIPT.format(lazy=LAZY)
    result = subprocess.run(
        [sys.executable, "-c", code, str(models), str(png), str(dicom)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_serving_without_dicom_volume_or_torch_modules(fresh_process: dict) -> None:
    assert fresh_process["at_serving"] == [], (
        f"imported before SERVING: {fresh_process['at_serving']}; import them inside the "
        "function that needs them (see vision/io/__init__.py, serving/volumes.py)"
    )


def test_first_dicom_request_imports_pydicom_and_answers_as_png(fresh_process: dict) -> None:
    assert "pydicom" in fresh_process["after_dicom"]
    assert fresh_process["dicom_equals_png"]


def test_first_volume_request_imports_the_volume_pipeline(fresh_process: dict) -> None:
    assert fresh_process["volume_shape"] == [8, 16, 16]
    assert "scipy" in fresh_process["after_volume"]
    assert "torch" not in fresh_process["after_volume"]
