"""Site datasets. Importing this package registers every dataset in
:data:`siteflow.core.registry.DATASETS`: ``fundus``, ``drive``, ``stare``, ``chase_db1``,
``synthetic_fundus`` and ``synthetic_vessels`` (segmentation); ``chexpert``,
``chestxray14``, ``vindr_cxr``, ``mimic_cxr`` and ``synthetic_cxr`` (multi-label chest
X-ray classification); ``class_folders``, ``isic2019``, ``medmnist`` and ``synthetic_classes``
(one class per image, :mod:`~siteflow.datasets.classification`); ``decathlon``, ``volume_folders`` and ``synthetic_volumes`` (3D
segmentation, :mod:`~siteflow.datasets.volumes`). ``DATASETS.get(name).describe(**kwargs)`` tells from a config's
options alone what a dataset's items look like (a :class:`DataSpec`).

Every problem of a site's data files is a :class:`DataError` naming the file; a dataset's
``check()`` finds them all before training, and :func:`check_sites` checks every split of
every site of an experiment.

Segmentation datasets train on real images with augmentation (:class:`Augmentation`, which
also augments a batch of relay's replayed images), native-resolution patches with foreground
oversampling (:mod:`~siteflow.datasets.patches`) and a decode cache
(:mod:`~siteflow.datasets.decode_cache`); the randomness of a training item comes from the seed
that the training loader's :class:`SeededSampler` gives it (:mod:`~siteflow.datasets.sampling`)."""

from siteflow.datasets.augmentation import Augmentation
from siteflow.datasets.base import SegmentationDataset, SiteDataset
from siteflow.datasets.classification import (
    ClassFoldersDataset,
    ClassificationDataset,
    Isic2019Dataset,
    MedMnistDataset,
    SyntheticClassesDataset,
)
from siteflow.datasets.chest_xray import (
    ChestXray14Dataset,
    CheXpertDataset,
    MimicCxrDataset,
    MultiLabelDataset,
    SyntheticChestXrayDataset,
    VinDrCxrDataset,
    canonical_label,
    generate_cxr_sites,
)
from siteflow.datasets.errors import DataError, MissingFileError
from siteflow.datasets.files import SampleFiles
from siteflow.datasets.fundus import DofeDomainDataset, FundusDataset
from siteflow.datasets.pooling import check_sites
from siteflow.datasets.sampling import SeededSampler
from siteflow.datasets.spec import DataSpec
from siteflow.datasets.synthetic import (
    GeneratedSites,
    SyntheticFundusDataset,
    SyntheticVesselsDataset,
    generate_fundus_sites,
    generate_vessel_sites,
)
from siteflow.datasets.vessels import ChaseDataset, DriveDataset, StareDataset, VesselDataset
from siteflow.datasets.volumes import DecathlonDataset, SyntheticVolumesDataset, VolumeDataset, VolumeFolderDataset

__all__ = [
    "Augmentation",
    "ChaseDataset",
    "ClassFoldersDataset",
    "ClassificationDataset",
    "ChestXray14Dataset",
    "CheXpertDataset",
    "DataError",
    "DecathlonDataset",
    "DataSpec",
    "DofeDomainDataset",
    "DriveDataset",
    "FundusDataset",
    "GeneratedSites",
    "Isic2019Dataset",
    "MedMnistDataset",
    "MimicCxrDataset",
    "MissingFileError",
    "MultiLabelDataset",
    "SampleFiles",
    "SeededSampler",
    "SegmentationDataset",
    "SiteDataset",
    "StareDataset",
    "SyntheticChestXrayDataset",
    "SyntheticClassesDataset",
    "SyntheticFundusDataset",
    "SyntheticVesselsDataset",
    "SyntheticVolumesDataset",
    "VesselDataset",
    "VinDrCxrDataset",
    "VolumeDataset",
    "VolumeFolderDataset",
    "canonical_label",
    "check_sites",
    "generate_cxr_sites",
    "generate_fundus_sites",
    "generate_vessel_sites",
]
