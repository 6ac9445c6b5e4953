"""DICOM Structured Reports of ``predict``'s measurements (``fetalbio predict --sr DIR``).

One Comprehensive SR per image measured in mm, built by highdicom as a TID 1500 Measurement
Report (why this template and not TID 5000, the OB-GYN ultrasound report: docs/dicom.md). It
refers to the measured image by the Study, Series and SOP Instance UIDs of its DICOM file (and
the frame number of a multi-frame file); a PNG or other non-DICOM image gets new UIDs, and the
SR's Series Description says so. Three measurement groups (TID 1410), each with its geometry on
the image as a spatial coordinate (SCOORD, DICOM's pixel convention: the top-left corner of the
top-left pixel is (0, 0), so a pixel centre (x, y) here is (x + 0.5, y + 0.5) there):

* Head Circumference (LOINC 11984-2), region: the ELLIPSE the two diameters span (its axes'
  four endpoints: OFD, then BPD);
* Occipital-Frontal Diameter (11851-3) and Biparietal Diameter (11820-8), each on its caliper
  line (POLYLINE of two points).

Each value is in mm (UCUM ``mm``), with the 90 % interval as its lower and upper measurement
uncertainty (TID 300 rows, ``value - low`` and ``high - value``), and the group's flag
(``ok``/``uncertain``) as a qualitative evaluation in the private coding scheme ``99FETALBIO``.
The codes come from pydicom's dictionary of the DICOM standard (PS3.16 CID 12005 "Fetal
Biometry Measurement").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

import fetalbio

SCHEME = "99FETALBIO"  # a private coding scheme: DICOM reserves designators starting "99"
FLAG_NAME = hd.sr.CodedConcept("flag", SCHEME, "fetalbio measurement flag")
FLAG_VALUES = {f: hd.sr.CodedConcept(f, SCHEME, f) for f in ("ok", "uncertain")}
# PS3.16 CID 12005 "Fetal Biometry Measurement" (LOINC)
MEASUREMENTS = (("hc", codes.LN.HeadCircumference), ("ofd", codes.LN.OccipitalFrontalDiameter), ("bpd", codes.LN.BiparietalDiameter))
PATIENT_STUDY_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                       "ReferringPhysicianName")
NOT_DICOM_NOTE = "source not DICOM: new UIDs"


def source_evidence(m) -> tuple[Dataset, str]:
    """The dataset the SR refers to: the header of the measured DICOM file, or for any other
    image a stand-in Secondary Capture instance with new UIDs; and a note (empty for DICOM)."""
    if m.dicom is not None:
        ds = pydicom.dcmread(m.dicom.path, stop_before_pixels=True)
        note = ""
    else:
        ds = Dataset()
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
        note = NOT_DICOM_NOTE
    for key in PATIENT_STUDY_TYPE2:  # type 2: present, possibly empty, in the SR
        if key not in ds:
            setattr(ds, key, None)
    return ds, note


def _group(label: str, graphic_type: str, points: np.ndarray, source: hd.sr.SourceImageForRegion, measurement: hd.sr.Measurement,
           flag: str, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=label),
        referenced_region=hd.sr.ImageRegion(graphic_type=graphic_type, graphic_data=points + 0.5, source_image=source),
        finding_sites=[hd.sr.FindingSite(codes.SCT.Head)],
        algorithm_id=algorithm,
        measurements=[measurement],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(FLAG_NAME, FLAG_VALUES[flag])],
    )


def _measurement(name, value: float, low: float, high: float) -> hd.sr.Measurement:
    interval = math.isfinite(low) and math.isfinite(high)
    props = hd.sr.MeasurementProperties(lower_measurement_uncertainty=value - low, upper_measurement_uncertainty=high - value) if interval else None
    return hd.sr.Measurement(name=name, value=float(value), unit=codes.UCUM.Millimeter, properties=props)


def measurement_report(m, row: dict, evidence: Dataset, method: str) -> hd.sr.MeasurementReport:
    """The TID 1500 content of one image's SR (``row``: its :func:`measurement_row`)."""
    frame = getattr(m.dicom, "frame", None)
    source = hd.sr.SourceImageForRegion(evidence.SOPClassUID, evidence.SOPInstanceUID, referenced_frame_numbers=[frame] if frame else None)
    algorithm = hd.sr.AlgorithmIdentification(name="fetalbio", version=fetalbio.__version__, parameters=[f"model {method}", "interval 90 %"])
    pts = np.array([[row["ofd_1_x"], row["ofd_1_y"]], [row["ofd_2_x"], row["ofd_2_y"]], [row["bpd_1_x"], row["bpd_1_y"]], [row["bpd_2_x"], row["bpd_2_y"]]], dtype=np.float64)
    geometry = {"hc": ("head ellipse", "ELLIPSE", pts), "ofd": ("OFD calipers", "POLYLINE", pts[:2]), "bpd": ("BPD calipers", "POLYLINE", pts[2:])}
    groups = []
    for key, concept in MEASUREMENTS:
        label, kind, coords = geometry[key]
        meas = _measurement(concept, row[f"{key}_mm"], row[f"{key}_mm_low"], row[f"{key}_mm_high"])
        groups.append(_group(label, kind, coords, source, meas, row["flag"], algorithm))
    device = hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                   observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(), name="fetalbio", model_name=method[:64]))
    fetus = hd.sr.SubjectContext(subject_class=codes.DCM.Fetus, subject_class_specific_context=hd.sr.SubjectContextFetus(subject_id="1"))
    context = hd.sr.ObservationContext(observer_device_context=device, subject_context=fetus)
    return hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.LN.UltrasoundObstetricAndGynReport, imaging_measurements=groups)


def sr_writer(out_dir: Path, method: str) -> Callable[[object, dict], Path | None]:
    """A callback ``write(m, row) -> path`` writing the SR of one measured image under
    ``out_dir`` (None, nothing written, for an image without mm values or a failed one); the SRs
    of one study share one new series."""
    series: dict[str, str] = {}
    written: list[Path] = []

    def write(m, row: dict) -> Path | None:
        if row["flag"] == "failed" or not math.isfinite(row["hc_mm"]):
            return None
        evidence, note = source_evidence(m)
        sr = hd.sr.ComprehensiveSR(
            evidence=[evidence], content=measurement_report(m, row, evidence, method),
            series_instance_uid=series.setdefault(evidence.StudyInstanceUID, generate_uid()), series_number=901,
            sop_instance_uid=generate_uid(), instance_number=len(written) + 1, manufacturer="fetalbio", is_complete=True)
        sr.SeriesDescription = f"fetalbio biometry ({note})" if note else "fetalbio biometry"
        path = out_dir / _sr_name(m.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        sr.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        written.append(path)
        return path

    return write


def _sr_name(name: str) -> str:
    from fetalbio.inference.predictor import output_name

    return output_name(name, ".sr.dcm").name
