"""SegmentVolume end to end: a loopback server over a tiny volumetric model, raw volumes and
DICOM series, sliding windows batched, equivalence with the in-process and MONAI sliding
windows, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.client import VisionClient
from serving.dataplane import ServedResult
from serving.volumes import infer_windows, segment_volume
from tests.serving.conftest import ServerThread, start_server
from tests.serving.tiny_models import (
    VOLUME_PATCH,
    build_volume_repository,
    volume_config,
    volume_segmenter,
)
from tests.serving.volume_series import ellipsoid, mr_series, to_bytes
from vision.config import write_config
from vision.loader import load_model
from vision.volume.pipeline import VolumePipeline
from vision.volume.tta import ProbabilityMean, flip_spatial
from vision.volume.types import Volume
from vision.volume.window import plan_windows, sliding_window

MODEL = "tiny-volume"
MIRRORED = "tiny-volume-mirrored"  # tta_flips [[0], [1], [2]], orientation LPS
SPACING = (2.0, 1.0, 1.0)  # the tiny model's


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_volume_repository(tmp_path_factory.mktemp("volume-models"))
    mirrored = volume_config(MIRRORED, tta_flips=[[0], [1], [2]], orientation="LPS")
    write_config(mirrored, root / MIRRORED)
    volume_segmenter(root / MIRRORED / "1" / "model.onnx", VOLUME_PATCH)
    return root


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[ServerThread]:
    running = start_server(models)
    yield running
    running.stop()


@pytest.fixture()
def client(server: ServerThread) -> Iterator[VisionClient]:
    with VisionClient(server.address) as c:
        yield c


def _analytic_mm3(radii: tuple[float, float, float]) -> float:
    return 4.0 / 3.0 * np.pi * float(np.prod(radii))


def test_raw_volume_gives_the_phantom_and_its_volume(server, client) -> None:
    shape, radii = (20, 40, 36), (12.0, 10.0, 9.0)
    phantom = ellipsoid(shape, SPACING, (19.0, 20.0, 18.0), radii)
    seen: list[ServedResult] = []
    server.server.plane.add_result_observer(seen.append)
    response = client.segment_volume(MODEL, (phantom.astype(np.float32), SPACING))
    assert list(response.shape) == list(shape)
    assert list(response.spacing_mm) == pytest.approx(SPACING)
    (mask,) = response.masks
    assert mask.label == "bright" and mask.class_id == 1
    decoded = VisionClient.volume_mask(mask, response.shape)
    assert np.array_equal(decoded, phantom)
    assert mask.voxel_count == phantom.sum()
    assert mask.volume_mm3 == pytest.approx(_analytic_mm3(radii), rel=0.02)
    assert list(mask.slices) == [k for k in range(shape[0]) if phantom[k].any()]
    assert response.windows == len(plan_windows(shape, VOLUME_PATCH, 0.5)) > 1
    assert response.timings.total_ms >= response.timings.inference_ms > 0
    assert [(s.api, s.origin) for s in seen] == [("segment_volume", "vision.v1")]
    exposition = server.server.metrics.exposition()[0].decode()
    assert 'api="segment_volume"' in exposition


def test_windows_of_one_volume_batch_together(server, client) -> None:
    before = server.server.plane.model_statistics(MODEL)[(MODEL, "1")]
    phantom = ellipsoid((24, 48, 40), SPACING, (23.0, 24.0, 20.0), (14.0, 12.0, 11.0))
    response = client.segment_volume(MODEL, (phantom.astype(np.uint8), SPACING))
    after = server.server.plane.model_statistics(MODEL)[(MODEL, "1")]
    rows = after.inference_count - before.inference_count
    batches = after.execution_count - before.execution_count
    assert rows == response.windows
    assert batches < rows / 2, f"{rows} windows ran in {batches} batches: they did not batch"


def test_dicom_series_oblique_anisotropic_shuffled(client) -> None:
    spacing, shape, radii = (2.5, 0.9, 0.8), (16, 44, 48), (12.0, 10.0, 9.0)
    phantom = ellipsoid(shape, spacing, (19.0, 20.0, 19.0), radii)
    series = [to_bytes(ds) for ds in mr_series(phantom.astype(np.int16), spacing)]
    response = client.segment_volume(MODEL, series)
    assert list(response.shape) == list(shape)
    assert list(response.spacing_mm) == pytest.approx(spacing)
    (mask,) = response.masks
    assert mask.volume_mm3 == pytest.approx(_analytic_mm3(radii), rel=0.02)
    decoded = VisionClient.volume_mask(mask, response.shape)
    # Slices come back in position order (not instance order): the phantom's own slices.
    agreement = (decoded == phantom).mean()
    assert agreement > 0.99
    assert response.windows > 1


def _random_volume(shape: tuple[int, int, int]) -> Volume:
    rng = np.random.default_rng(3)
    voxels = rng.random(shape, dtype=np.float32)
    return Volume(voxels=voxels, spacing_mm=SPACING)


def test_served_windows_equal_in_process_and_monai(server, models) -> None:
    volume = _random_volume((13, 30, 7))  # one axis shorter than the patch: padded
    model = server.server.repository.get(MODEL)
    pipeline = VolumePipeline(model.config)
    tensor, _ = pipeline.preprocess(volume)
    served = server.call(infer_windows(model, tensor, None, server.server.plane.run_in_worker))
    loaded = load_model(models / MODEL, providers=("cpu",))
    spec = loaded.config.volume

    def run(batch: np.ndarray) -> np.ndarray:
        return loaded.run(batch)["logits"]

    local = sliding_window(tensor, spec.patch, spec.overlap, run, 4, spec.blend, spec.sigma_scale)
    probs = pipeline.probabilities(served.output)
    assert np.abs(probs - pipeline.probabilities(local)).max() <= 1e-4
    torch = pytest.importorskip("torch")
    inferers = pytest.importorskip("monai.inferers")
    reference = inferers.sliding_window_inference(
        torch.from_numpy(tensor[None]),
        roi_size=spec.patch,
        sw_batch_size=4,
        predictor=lambda x: torch.from_numpy(run(x.numpy())),
        overlap=spec.overlap,
        mode=spec.blend,
        sigma_scale=spec.sigma_scale,
    )[0].numpy()
    assert np.abs(probs - pipeline.probabilities(reference)).max() <= 1e-4


def _code_and_details(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_series_with_a_gap_is_refused_by_name(client) -> None:
    phantom = ellipsoid((10, 20, 20), (2.0, 1.0, 1.0), (9.0, 10.0, 10.0), (6.0, 6.0, 6.0))
    datasets = mr_series(phantom.astype(np.int16), (2.0, 1.0, 1.0), seed=1)
    positions = sorted(datasets, key=lambda ds: float(np.dot(ds.ImagePositionPatient, [0, 0, 1])))
    gapped = [to_bytes(ds) for ds in datasets if ds is not positions[4]]
    code, details = _code_and_details(lambda: client.segment_volume(MODEL, gapped))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "gap" in details


def test_models_of_the_other_task_are_refused(client) -> None:
    volume = (np.zeros((8, 12, 10), np.float32), SPACING)
    code, details = _code_and_details(lambda: client.segment_volume("bright", volume))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "call Segment instead" in details
    image = to_bytes(mr_series(np.zeros((1, 16, 16), np.int16), SPACING)[0])
    code, details = _code_and_details(lambda: client.segment(MODEL, image))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "call SegmentVolume instead" in details


def test_bad_raw_volume_is_refused(client) -> None:
    request_volume = (np.zeros((8, 12, 10), np.float32), (0.0, 1.0, 1.0))
    code, details = _code_and_details(lambda: client.segment_volume(MODEL, request_volume))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "spacing" in details
    code, details = _code_and_details(lambda: client.segment_volume(MODEL, [b"not dicom"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "instance 0" in details


def test_too_many_voxels_is_resource_exhausted(models) -> None:
    small = start_server(models, max_volume_voxels=4000)
    try:
        with VisionClient(small.address) as c:
            volume = (np.zeros((10, 20, 21), np.float32), SPACING)
            code, details = _code_and_details(lambda: c.segment_volume(MODEL, volume))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "4000" in details
            # Within the limit as sent, beyond it once resampled to the model's 2 mm slices.
            fine = (np.zeros((10, 20, 19), np.float32), (4.0, 1.0, 1.0))
            code, details = _code_and_details(lambda: c.segment_volume(MODEL, fine))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "resampled" in details
    finally:
        small.stop()


def test_mirrored_model_averages_the_flipped_passes_served(server, models) -> None:
    """tta_flips through the batcher: the windows of every pass, and the masks of the mean
    of the un-flipped probabilities computed in-process with the same ONNX model."""
    volume = _random_volume((14, 26, 22))
    model = server.server.repository.get(MIRRORED)
    plane = server.server.plane
    served = server.call(segment_volume(model, volume, None, plane.run_in_worker, 0))
    pipeline = VolumePipeline(model.config)
    tensor, meta = pipeline.preprocess(volume)
    loaded = load_model(models / MIRRORED, providers=("cpu",))
    mean = ProbabilityMean()
    for axes in pipeline.passes():
        logits = sliding_window(flip_spatial(tensor, axes), VOLUME_PATCH, 0.5, _runner(loaded))
        mean.add(pipeline.probabilities(logits), axes)
    expected = pipeline.postprocess_probabilities(mean.result(), meta)
    assert served.windows == 4 * len(plan_windows(tensor.shape[1:], VOLUME_PATCH, 0.5))
    (mask,) = served.result.masks
    (local,) = expected.masks
    assert mask.voxel_count > 0
    assert (mask.mask == local.mask).mean() > 0.999  # float rounding at exact ties only
    assert mask.score == pytest.approx(local.score, abs=1e-4)


def _runner(loaded):
    return lambda batch: loaded.run(batch)["logits"]


def test_sagittal_series_gives_the_axial_masks(client) -> None:
    """One phantom as an axial and as a sagittal DICOM series through a model that reorients
    to LPS: the masks come back on each series' own grid and agree voxel for voxel."""
    spacing, shape = (2.0, 1.0, 1.0), (12, 30, 26)
    phantom = ellipsoid(shape, spacing, (11.0, 15.0, 12.0), (8.0, 9.0, 7.0))
    axial_rows = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    axial = [
        to_bytes(ds) for ds in mr_series(phantom.astype(np.int16), spacing, (0, 0, 0), axial_rows)
    ]
    # Sagittal: columns towards anterior (-y), rows towards the feet (-z), slices along +x.
    sagittal_voxels = np.ascontiguousarray(phantom.transpose(2, 0, 1)[:, ::-1, ::-1])
    rows = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    origin = (0.0, (shape[1] - 1) * spacing[1], (shape[0] - 1) * spacing[0])
    sag_spacing = (spacing[2], spacing[0], spacing[1])
    sagittal = mr_series(sagittal_voxels.astype(np.int16), sag_spacing, origin, rows)
    one = client.segment_volume(MIRRORED, axial)
    other = client.segment_volume(MIRRORED, [to_bytes(ds) for ds in sagittal])
    assert list(other.shape) == [shape[2], shape[0], shape[1]]
    assert list(other.spacing_mm) == pytest.approx(sag_spacing)
    axial_mask = VisionClient.volume_mask(one.masks[0], one.shape)
    sagittal_mask = VisionClient.volume_mask(other.masks[0], other.shape)
    assert np.array_equal(axial_mask, phantom)
    assert np.array_equal(sagittal_mask[:, ::-1, ::-1].transpose(1, 2, 0), axial_mask)
    assert other.masks[0].volume_mm3 == pytest.approx(one.masks[0].volume_mm3)
