"""The node's volumetric path: a phantom MR series routed to a volumetric model comes back as one
multi-frame SEG (a frame per source slice with the segment) and an SR with the volume in mm³."""

from __future__ import annotations

import io
from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.model import JobState, NodeSettings, Series
from dicom_node.node import DicomNode, job_id
from dicom_node.routing import RoutingRules
from tests.serving.conftest import ServerThread, start_server
from tests.serving.tiny_models import build_volume_repository
from tests.serving.volume_series import OBLIQUE, direction_of, ellipsoid, mr_series

MODEL = "tiny-volume"
SPACING, SHAPE, RADII = (2.5, 0.9, 0.8), (14, 40, 44), (11.0, 9.0, 8.0)
RULES = f"""
rules:
  - name: hippocampus-mr
    modality: [MR]
    series_description: "(?i)hippocamp"
    models: [{MODEL}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(build_volume_repository(tmp_path_factory.mktemp("models")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def node(server: ServerThread, tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("node")
    (state / "rules.yaml").write_text(RULES)
    settings = NodeSettings(state_dir=state / "state", rules_file=state / "rules.yaml")
    built = DicomNode(settings, server.server.plane, {MODEL})
    built.sent = []  # the outbox's enqueue, faked: what would be sent

    def enqueue(job: str, results: list[Dataset], mark_queued: bool = False, **_: object) -> None:
        built.sent.append((job, list(results)))  # and the job queued, as the outbox does
        marks = {"results": len(results)} if mark_queued else {}
        built.jobs.upsert(job, JobState.QUEUED, **marks)

    built.outbox.enqueue = enqueue
    return built


def _series(node: DicomNode, datasets: list[Dataset]) -> Series:
    instances = [node.spool.store(ds, "SCANNER", ExplicitVRLittleEndian) for ds in datasets]
    first = datasets[0]
    return Series(str(first.StudyInstanceUID), str(first.SeriesInstanceUID), "SCANNER", instances)


def _reread(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _numeric_items(items, code: str) -> list[Dataset]:
    """Every NUM content item named `code`, however deep."""
    found = []
    for item in items:
        names = item.get("ConceptNameCodeSequence") or []
        if item.get("ValueType") == "NUM" and names and names[0].CodeValue == code:
            found.append(item)
        found += _numeric_items(item.get("ContentSequence") or [], code)
    return found


def test_phantom_series_gives_multiframe_seg_and_volumes(server, node) -> None:
    phantom = ellipsoid(SHAPE, SPACING, (16.0, 18.0, 17.0), RADII)
    datasets = mr_series(phantom.astype(np.int16), SPACING)
    series = _series(node, datasets)
    server.call(node.process(series))
    ((job, results),) = node.sent
    assert job == job_id(series, MODEL)
    seg, report = (_reread(r) for r in results)
    segmentation = hd.seg.Segmentation.from_dataset(seg)
    assert seg.Modality == "SEG" and seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["bright"]
    # One frame per source slice that has the segment, each referencing its source instance.
    by_position = sorted(datasets, key=lambda ds: float(np.dot(ds.ImagePositionPatient, _normal())))
    wanted = {str(by_position[k].SOPInstanceUID) for k in range(SHAPE[0]) if phantom[k].any()}
    referenced = [
        str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    assert int(seg.NumberOfFrames) == len(wanted) and set(referenced) == wanted
    for item, uid in zip(seg.PerFrameFunctionalGroupsSequence, referenced, strict=True):
        source = next(ds for ds in datasets if str(ds.SOPInstanceUID) == uid)
        position = item.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in position], source.ImagePositionPatient, atol=1e-3)
    # Read back by source instance: the masks are the phantom's slices.
    planes = segmentation.get_pixels_by_source_instance(
        [str(ds.SOPInstanceUID) for ds in by_position], combine_segments=True
    )
    assert (planes.astype(bool) == phantom).mean() > 0.99
    (volume,) = _numeric_items(report.ContentSequence, "118565006")
    measured = volume.MeasuredValueSequence[0]
    assert measured.MeasurementUnitsCodeSequence[0].CodeValue == "mm3"
    analytic = 4.0 / 3.0 * np.pi * float(np.prod(RADII))
    assert float(measured.NumericValue) == pytest.approx(analytic, rel=0.02)
    sr = hd.sr.Comprehensive3DSR.from_dataset(report)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert {str(s.SeriesInstanceUID) for s in evidence} == {
        str(datasets[0].SeriesInstanceUID),
        str(seg.SeriesInstanceUID),
    }
    assert node.jobs.get(job).state == JobState.QUEUED and node.jobs.get(job).results == 2


def _normal() -> np.ndarray:
    return direction_of(OBLIQUE)[2]


def test_a_gapped_series_fails_its_job_with_the_problem_named(server, node) -> None:
    phantom = ellipsoid((8, 20, 20), SPACING, (8.0, 9.0, 8.0), (5.0, 5.0, 5.0))
    datasets = mr_series(phantom.astype(np.int16), SPACING, seed=2)
    by_position = sorted(datasets, key=lambda ds: float(np.dot(ds.ImagePositionPatient, _normal())))
    gapped = [ds for ds in datasets if ds is not by_position[3]]
    series = _series(node, gapped)
    node.sent.clear()
    server.call(node.process(series))
    assert node.sent == []
    job = node.jobs.get(job_id(series, MODEL))
    assert job.state == JobState.FAILED and "gap" in job.reason


def test_bundled_rules_route_hippocampus_mr_series() -> None:
    rules = RoutingRules.load(None, known_models={"hippocampus"})
    ds = mr_series(np.zeros((1, 8, 8), np.int16), SPACING, description="Hippocampus T1")[0]
    route = rules.match(ds)
    assert route is not None and list(route.models) == ["hippocampus"]
    # Before the model is in the repository, its rule is dropped and the series set aside.
    assert RoutingRules.load(None, known_models={"retina-vessels"}).match(ds) is None
