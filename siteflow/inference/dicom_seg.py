"""A label map as a DICOM Segmentation object (highdicom) that references its source series,
as a PACS stores segmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siteflow import __version__
from siteflow.core.atomic import atomic_path
from siteflow.core.extras import optional_module
from siteflow.inference.recipe import ModelRecipe

hd = optional_module("highdicom", "export", "writing DICOM Segmentation outputs")
pydicom = optional_module("pydicom", "export", "writing DICOM Segmentation outputs")
pydicom_codes = optional_module("pydicom.sr.codedict", "export", "writing DICOM Segmentation outputs")
sitk = optional_module("SimpleITK", "volumes", "reading DICOM series")

MANUFACTURER = "siteflow"
CODING_SCHEME = "99SITEFLOW"
"""A private coding scheme (DICOM's ``99`` prefix) for the segments' property type: the
model's class names, which no standard code list knows."""


def write_dicom_seg(path: Path, label_map: sitk.Image, source_files: list[Path], recipe: ModelRecipe) -> None:
    """Write the label map (a uint8 image on the grid of the DICOM series whose files are
    ``source_files``, in slice order) as a binary DICOM SEG, one segment per foreground class
    (its label and property type the class's name; category "Tissue"), referencing every
    source instance (same study, frame of reference)."""
    sources = [pydicom.dcmread(str(file), stop_before_pixels=True) for file in source_files]
    labels = sitk.GetArrayFromImage(label_map)  # (D, H, W), slice k from source_files[k]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=recipe.name[:64], family=pydicom_codes.codes.cid7162.ArtificialIntelligence, version=__version__
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=pydicom_codes.codes.cid7150.Tissue,
            segmented_property_type=hd.sr.CodedConcept(value=f"class{number}", scheme_designator=CODING_SCHEME, meaning=name[:64]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(recipe.class_names[1:], start=1)
    ]
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=max(int(getattr(sources[0], "SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=recipe.model_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"siteflow {recipe.model_name}"[:64],
        omit_empty_frames=False,
    )
    with atomic_path(path) as tmp:
        segmentation.save_as(tmp)
