"""The least the DICOM node's single-image results can cost with the libraries the issue names.

    nice -n 10 .venv/bin/python -m bench.dicom_node_floor [--repeats 20] [--out DIR]

Issue 14's goal for one image: everything but inference <= 10 % of the time from the last
instance received to its results stored, so what is not inference may take at most 1/9 of the
inference. This measures, side by side in one process on one fundus photograph (Ophthalmic
Photography from DRIVE; a synthetic one without the dataset):

- infer: the bundled `retina-vessels` on it in process (preprocess, `session.run`,
  postprocess): the node's "infer" stage without its batcher, so a budget of infer / 9 is, if
  anything, larger than the node's;
- the smallest results the issue asks for, built with highdicom, not with the node's code:
  a BINARY SEG of the one vessel mask (one segment), a Comprehensive 3D SR (TID 1500) with one
  measurement group (finding present, the mask's area), a colour softcopy presentation state
  with one text annotation (no outlines);
- their Part-10 encoding (`dcmwrite` into memory; no file, no fsync);
- their C-STOREs on an association already open (pynetdicom, the node's low-latency sockets)
  into dcmtk's `storescp`, the quickest archive here (no index, no database).

Receiving the image, assembling it, routing, the outbox's files and commits are all left out,
so the sum is a floor under the node's non-inference time, not an estimate of it. The table
gives each part's minimum and median over `--repeats` (after one warm-up), the floor (sum of
the minima) against the budget (the minimum inference / 9), and writes floor.json into `--out`.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from dicom_node.gsps import _icc_profile
from dicom_node.model import Destination
from dicom_node.seg import _metadata
from dicom_node.sr import AREA, PRESENT, PROCEDURE, SQUARE_MM
from dicom_node.tcp import LowLatencyAE
from tests.dicom_node import wrap
from tests.dicom_node.storescp import running_storescp
from vision.io.dicom_header import read_header
from vision.loader import load_model
from vision.paths import default_repository
from vision.reports import write_json
from vision.types import Image, SegmentationResult

MODEL = "retina-vessels"
PARTS = ("infer", "seg", "sr", "gsps", "encode", "send")
_EQUIPMENT = {
    "manufacturer": "vision-serving",
    "manufacturer_model_name": MODEL,
    "software_versions": "1",
    "device_serial_number": "bench",
}


def _source(root: Path) -> pydicom.Dataset:
    synthetic = not wrap.drive_images()
    path = wrap.fundus_study(root, 1, synthetic=synthetic)[0]
    return pydicom.dcmread(path)


def _infer(model, ds: pydicom.Dataset) -> Callable[[], np.ndarray]:
    header = read_header(ds)
    image = Image(ds.pixel_array, "dicom", header.pixel_spacing_mm, header)

    def run() -> np.ndarray:
        tensor, meta = model.preprocess(image)
        outputs = model.run(tensor[np.newaxis])
        result = model.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
        assert isinstance(result, SegmentationResult)
        return next(m.mask for m in result.masks if m.label == "vessel")

    return run


def _seg(ds: pydicom.Dataset, mask: np.ndarray) -> pydicom.Dataset:
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="vessel",
        segmented_property_category=Code("91723000", "SCT", "Anatomical structure"),
        segmented_property_type=Code("59820001", "SCT", "Blood vessel"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=MODEL, version="1", family=codes.cid7162.ArtificialIntelligence
        ),
    )
    return hd.seg.Segmentation(
        source_images=[_metadata(ds)],  # what highdicom needs of an Ophthalmic Photography
        pixel_array=mask.astype(np.uint8)[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        **_EQUIPMENT,
    )


def _sr(ds: pydicom.Dataset, area_mm2: float) -> pydicom.Dataset:
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="vessel"),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
        measurements=[hd.sr.Measurement(name=AREA, value=area_mm2, unit=SQUARE_MM)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.DCM.Finding, PRESENT)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=PROCEDURE,
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[ds],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=902,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="vision-serving",
    )


def _gsps(ds: pydicom.Dataset) -> pydicom.Dataset:
    layer = hd.pr.GraphicLayer(layer_name="FINDINGS", order=1)
    text = hd.pr.TextObject(
        text_value="vessel", units="PIXEL", bounding_box=(10.0, 10.0, 120.0, 40.0)
    )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[ds], graphic_layer=layer, text_objects=[text]
    )
    return hd.pr.ColorSoftcopyPresentationState(
        referenced_images=[ds],
        series_instance_uid=generate_uid(),
        series_number=903,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        content_label="FINDINGS",
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        icc_profile=_icc_profile([ds]),  # the source's, else highdicom's sRGB, as the node does
        **_EQUIPMENT,
    )


def _encode(objects: list[pydicom.Dataset]) -> list[bytes]:
    out = []
    for ds in objects:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _scratch(root: Path) -> tempfile.TemporaryDirectory:
    """A folder for the files sent, on tmpfs where there is one; removed when the run ends."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else root)


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1000.0


def _send(assoc, folder: Path) -> Callable[[list[bytes]], None]:
    """C-STOREs of encoded objects: each written to `folder` (tmpfs where there is one) and sent
    from there, so pynetdicom sends the bytes as they are instead of encoding the data set again."""
    folder.mkdir(parents=True, exist_ok=True)

    def send(encoded: list[bytes]) -> None:
        for index, data in enumerate(encoded):
            path = folder / f"{index}.dcm"
            path.write_bytes(data)
            status = assoc.send_c_store(path)
            if not status or status.Status != 0:
                raise RuntimeError(f"C-STORE status {status}")

    return send


def _associate(dest: Destination, objects: list[pydicom.Dataset]):
    ae = LowLatencyAE("FLOOR")
    for ds in objects:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"storescp at {dest.port} refused the association")
    return assoc


def _one_round(model, ds: pydicom.Dataset, send: Callable) -> dict[str, float]:
    mask, infer_ms = _timed(_infer(model, ds))
    spacing = read_header(ds).pixel_spacing_mm or (1.0, 1.0)
    area = float(mask.sum()) * spacing[0] * spacing[1]
    seg, seg_ms = _timed(lambda: _seg(ds, mask))
    sr, sr_ms = _timed(lambda: _sr(ds, area))
    ps, gsps_ms = _timed(lambda: _gsps(ds))
    encoded, encode_ms = _timed(lambda: _encode([seg, sr, ps]))
    _, send_ms = _timed(lambda: send(encoded))
    return dict(zip(PARTS, (infer_ms, seg_ms, sr_ms, gsps_ms, encode_ms, send_ms), strict=True))


def measure(repeats: int, root: Path) -> dict:
    """Each part's times (ms) over `repeats` rounds after a warm-up, and the floor's verdict."""
    model = load_model(default_repository() / MODEL, explain=False)
    ds = _source(root / "source")
    with running_storescp(root / "scp") as dest, _scratch(root) as scratch:
        warm = [_seg(ds, np.ones(ds.pixel_array.shape[:2], bool)), _sr(ds, 0.0), _gsps(ds)]
        assoc = _associate(dest, warm)
        try:
            send = _send(assoc, Path(scratch))
            _one_round(model, ds, send)
            rounds = [_one_round(model, ds, send) for _ in range(repeats)]
        finally:
            assoc.release()
    parts = {
        name: {
            "min_ms": min(r[name] for r in rounds),
            "median_ms": statistics.median(r[name] for r in rounds),
        }  # fmt: skip
        for name in PARTS
    }
    floor = sum(parts[name]["min_ms"] for name in PARTS if name != "infer")
    budget = parts["infer"]["min_ms"] / 9.0
    return {
        "repeats": repeats,
        "image": list(ds.pixel_array.shape),
        "parts": parts,
        "floor_ms": floor,
        "budget_ms": budget,
        "floor_share": floor / (floor + parts["infer"]["min_ms"]),
        "load_average_1m": os.getloadavg()[0],
    }


def table(report: dict) -> str:
    """The parts, the floor and the budget as text."""
    lines = [f"{'part':8s} {'min ms':>8s} {'median ms':>10s}"]
    for name in PARTS:
        part = report["parts"][name]
        lines.append(f"{name:8s} {part['min_ms']:8.1f} {part['median_ms']:10.1f}")
    lines.append(
        f"floor (seg+sr+gsps+encode+send, minima) {report['floor_ms']:.1f} ms against a budget of "
        f"{report['budget_ms']:.1f} ms (infer / 9): the floor alone is "
        f"{100 * report['floor_share']:.1f} % of floor + inference (goal <= 10 %)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("reports/bench-dicom-node"))
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-dicom-floor-"))
    try:
        report = measure(args.repeats, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(report))
    print(f"wrote {write_json(report, args.out / 'floor.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
