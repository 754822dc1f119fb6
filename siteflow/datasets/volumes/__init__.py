"""3D volume segmentation: volumes read through SimpleITK (NIfTI, MHA/MHD, NRRD, DICOM
series) in the Decathlon layout (``decathlon``) or a plain folder pair (``volume_folders``),
preprocessed as nnU-Net does (reorientation, resampling, cropping, normalisation), trained on
3D patches; and ``synthetic_volumes``, a generated multi-site 3D study."""

from siteflow.datasets.volumes.dataset import VolumeDataset
from siteflow.datasets.volumes.releases import DecathlonDataset, VolumeFolderDataset
from siteflow.datasets.volumes.synthetic import SyntheticVolumesDataset

__all__ = ["DecathlonDataset", "SyntheticVolumesDataset", "VolumeDataset", "VolumeFolderDataset"]
