"""The multi-label chest X-ray loaders on small hand-written releases, and the synthetic
multi-site chest X-ray set."""

import gzip
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

import siteflow.datasets  # noqa: F401  (registers the datasets)
from siteflow.datasets import (
    ChestXray14Dataset,
    CheXpertDataset,
    MimicCxrDataset,
    SyntheticChestXrayDataset,
    VinDrCxrDataset,
    canonical_label,
    generate_cxr_sites,
)
from siteflow.datasets.chest_xray.images import read_dicom, read_xray
from siteflow.datasets.chest_xray.mimic import mimic_image_path
from siteflow.core.registry import DATASETS
from siteflow.config.validation import ConfigError, check_kwargs

CHEXPERT_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Cardiomegaly,Edema,Pleural Effusion"
# Three patients; cells 1.0 / 0.0 / -1.0 / blank. Columns: cardiomegaly, edema, pleural effusion.
CHEXPERT_POLICY_ROWS = """\
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Male,60,Frontal,AP,,1.0,-1.0,
    CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,70,Frontal,PA,1.0,0.0,,0.0
    CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Female,45,Frontal,PA,,-1.0,1.0,-1.0
"""
LABELS = ["Cardiomegaly", "edema", "pleural effusion"]  # any spelling; canonical names result
SITES = ("site1", "site2", "site3", "site4")


def write_text(path: Path, text: str, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = textwrap.dedent(text).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_grey(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_dicom(path: Path, stored: np.ndarray, monochrome1: bool = False) -> None:
    """A grey DICOM of ``stored`` (uint16); SimpleITK writes MONOCHROME2, so a MONOCHROME1
    file gets its PhotometricInterpretation value (same length) rewritten in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(stored.astype(np.uint16)), str(path), imageIO="GDCMImageIO")
    if monochrome1:
        data = path.read_bytes()
        assert data.count(b"MONOCHROME2 ") == 1
        path.write_bytes(data.replace(b"MONOCHROME2 ", b"MONOCHROME1 "))


def chexpert_release(root: Path, train_rows: str, valid_rows: str = "") -> Path:
    """A CheXpert-v1.0-small folder with the given CSV rows and a 6x5 JPEG for every row."""
    release = root / "CheXpert-v1.0-small"
    for name, rows in (("train.csv", train_rows), ("valid.csv", valid_rows)):
        write_text(release / name, textwrap.dedent(CHEXPERT_HEADER + "\n") + textwrap.dedent(rows))
        for line in textwrap.dedent(rows).splitlines():
            write_grey(root / line.split(",")[0], np.full((6, 5), 200, dtype=np.uint8))
    return release


def as_lists(tensor: torch.Tensor) -> list:
    return tensor.tolist()


# --- label policies, splits, items (CheXpert) ------------------------------------------------


@pytest.mark.parametrize(
    "uncertain, blank, targets, mask",
    [
        ("zeros", "zeros", [[1, 0, 0], [0, 0, 0], [0, 1, 0]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
        ("ones", "zeros", [[1, 1, 0], [0, 0, 0], [1, 1, 1]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
        ("zeros", "ignore", [[1, 0, 0], [0, 0, 0], [0, 1, 0]], [[1, 1, 0], [1, 0, 1], [1, 1, 1]]),
        ("ignore", "ignore", [[1, 0, 0], [0, 0, 0], [0, 1, 0]], [[1, 0, 0], [1, 0, 1], [0, 1, 0]]),
    ],
)
def test_uncertain_and_blank_policies(tmp_path, uncertain, blank, targets, mask):
    root = chexpert_release(tmp_path, CHEXPERT_POLICY_ROWS)
    data = CheXpertDataset(
        "train", root_path=str(root), labels=LABELS, val_fraction=0.0, uncertain=uncertain, blank=blank
    )
    assert data.label_names == ("cardiomegaly", "edema", "pleural_effusion")
    assert [as_lists(data[i]["labels"]) for i in range(3)] == targets
    assert [as_lists(data[i]["mask"]) for i in range(3)] == mask


def test_positive_counts_give_pos_weight(tmp_path):
    root = chexpert_release(tmp_path, CHEXPERT_POLICY_ROWS)
    common = dict(root_path=str(root), labels=LABELS, val_fraction=0.0)
    positives, known = CheXpertDataset("train", **common).positive_counts()
    assert (as_lists(positives), as_lists(known)) == ([1, 1, 0], [3, 3, 3])
    assert positives.dtype == known.dtype == torch.int64
    ignoring = CheXpertDataset("train", uncertain="ignore", blank="ignore", **common)
    positives, known = ignoring.positive_counts()
    assert (as_lists(positives), as_lists(known)) == ([1, 1, 0], [2, 1, 1])
    positives, known = CheXpertDataset("train", uncertain="ones", **common).positive_counts()
    assert (as_lists(positives), as_lists(known)) == ([2, 2, 1], [3, 3, 3])
    pos_weight = (known - positives) / positives  # what the lead's BCE uses
    assert pos_weight.tolist() == pytest.approx([0.5, 0.5, 2.0])


def test_items_shapes_channels_and_range(tmp_path):
    root = chexpert_release(tmp_path, CHEXPERT_POLICY_ROWS)
    data = CheXpertDataset("train", root_path=str(root), labels=LABELS, val_fraction=0.0, img_size=(8, 4))
    item = data[0]
    assert (data.task, data.in_channels, data.ignore_index) == ("multilabel", 1, None)
    assert item["id"] == "train/patient00001/study1/view1_frontal"
    assert item["image"].dtype == item["labels"].dtype == item["mask"].dtype == torch.float32
    assert item["image"].shape == (1, 8, 4) and item["labels"].shape == item["mask"].shape == (3,)
    assert item["image"].mean().item() == pytest.approx(200 / 255, abs=0.01)
    three = CheXpertDataset(
        "train",
        root_path=str(root),
        labels=LABELS,
        val_fraction=0.0,
        img_size=None,
        channels=3,
        out_range=(-1.0, 1.0),
    )
    image = three[0]["image"]
    assert image.shape == (3, 6, 5) and torch.equal(image[0], image[2])
    assert image.mean().item() == pytest.approx(200 / 255 * 2 - 1, abs=0.02)
    replicated = CheXpertDataset("train", root_path=str(root), labels=LABELS, val_fraction=0.0, num_replica=3)
    assert (len(replicated), replicated.num_samples) == (9, 3)
    assert replicated[7]["id"] == replicated[1]["id"]


def test_val_is_split_by_patient(tmp_path):
    rows = "".join(
        f"CheXpert-v1.0-small/train/patient{p:05d}/study{s}/view1_frontal.jpg,Male,50,Frontal,AP,,1.0,0.0,0.0\n"
        for p in range(1, 11)
        for s in range(1, p % 3 + 2)
    )
    valid = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,50,Frontal,AP,,1.0,0.0,0.0\n"
    root = chexpert_release(tmp_path, rows, valid)
    common = dict(root_path=str(root), labels=LABELS, val_fraction=0.3, split_seed=4)
    train, val = CheXpertDataset("train", **common), CheXpertDataset("val", **common)

    def patients(data):
        return {sample_id.split("/")[1] for sample_id in data.sample_ids}

    assert len(patients(val)) == 3 and len(patients(train)) == 7  # 30 % of 10 patients
    assert not patients(train) & patients(val)
    every_id = sorted(line.split(",")[0][len("CheXpert-v1.0-small/") : -4] for line in rows.splitlines())
    assert sorted(train.sample_ids + val.sample_ids) == every_id
    assert CheXpertDataset("val", **common).sample_ids == val.sample_ids
    seeds = [CheXpertDataset("val", **{**common, "split_seed": seed}).sample_ids for seed in range(5)]
    other = {sample_id for ids in seeds for sample_id in ids}
    assert len(other) > len(val.sample_ids)  # seeds pick other patients
    assert CheXpertDataset("test", **common).sample_ids == ["valid/patient64541/study1/view1_frontal"]


def test_frontal_only_drops_lateral_views(tmp_path):
    rows = """\
        CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Male,60,Frontal,AP,,1.0,0.0,0.0
        CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg,Male,60,Lateral,,,1.0,0.0,0.0
        CheXpert-v1.0-small/train/patient00002/study1/view1_lateral.jpg,Male,60,Lateral,,,0.0,0.0,0.0
    """
    root = chexpert_release(tmp_path, rows)
    frontal = CheXpertDataset("train", root_path=str(root), labels=LABELS, val_fraction=0.0)
    assert frontal.sample_ids == ["train/patient00001/study1/view1_frontal"]
    every = CheXpertDataset("train", root_path=str(root), labels=LABELS, val_fraction=0.0, frontal_only=False)
    assert len(every.sample_ids) == 3


# --- ChestX-ray14 ------------------------------------------------------------------------------


@pytest.fixture
def chestxray14(tmp_path):
    """Four patients; images in images_001/images, images_002/images and the flat images/."""
    write_text(
        tmp_path / "Data_Entry_2017.csv",
        """\
        Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
        00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,2682,2749,0.143,0.143,
        00000001_001.png,No Finding,1,1,58,M,PA,2682,2749,0.143,0.143,
        00000002_000.png,Pneumonia,0,2,81,F,AP,2500,2048,0.168,0.168,
        00000003_000.png,Edema|Effusion|Pneumonia,0,3,74,F,PA,2500,2048,0.168,0.168,
        00000004_000.png,Hernia,0,4,70,F,PA,2500,2048,0.168,0.168,
        """,
    )
    train_val = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000004_000.png"]
    write_text(tmp_path / "train_val_list.txt", "".join(f"{name}\n" for name in train_val))
    write_text(tmp_path / "test_list.txt", "00000003_000.png\n")
    ramp = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for name, folder in [("00000001_000", "images_001/images"), ("00000001_001", "images_001/images"),
                         ("00000002_000", "images_002/images"), ("00000003_000", "images_002/images"),
                         ("00000004_000", "images")]:  # fmt: skip
        write_grey(tmp_path / folder / f"{name}.png", ramp)
    return tmp_path


def test_chestxray14_pipe_labels_and_official_lists(chestxray14):
    common = dict(root_path=str(chestxray14), labels=["Effusion", "pneumonia", "cardiomegaly", "No Finding"])
    train = ChestXray14Dataset("train", val_fraction=0.0, **common)
    assert train.label_names == ("pleural_effusion", "pneumonia", "cardiomegaly", "no_finding")
    assert train.sample_ids == ["00000001_000", "00000001_001", "00000002_000", "00000004_000"]
    assert as_lists(train.targets) == [[1, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert as_lists(train.mask) == [[1] * 4] * 4
    test = ChestXray14Dataset("test", **common)
    assert test.sample_ids == ["00000003_000"] and as_lists(test.targets) == [[1, 1, 0, 0]]
    native = ChestXray14Dataset("train", val_fraction=0.0, img_size=None, **common)
    item = native[3]  # from the flat images/ folder
    assert item["image"][0].numpy() == pytest.approx(np.arange(12).reshape(3, 4) * 20 / 255)
    val = ChestXray14Dataset("val", val_fraction=0.5, **common)  # 2 of the 3 patients
    assert len({sample_id[:8] for sample_id in val.sample_ids}) == 2
    assert ("00000001_000" in val.sample_ids) == ("00000001_001" in val.sample_ids)
    assert ChestXray14Dataset.all_labels[-1] == "no_finding" and len(ChestXray14Dataset.all_labels) == 15


def test_sixteen_bit_png(tmp_path):
    write_grey(tmp_path / "x.png", np.array([[0, 65535], [16384, 32768]], dtype=np.uint16))
    expected = np.array([[0, 1], [16384 / 65535, 32768 / 65535]])
    assert read_xray(tmp_path / "x.png") == pytest.approx(expected)


# --- VinDr-CXR -----------------------------------------------------------------------------------


@pytest.fixture
def vindr(tmp_path):
    """Three training images read by 3, 3 and 2 radiologists, one test image; DICOMs, the
    second one MONOCHROME1."""
    write_text(
        tmp_path / "annotations" / "image_labels_train.csv",
        """\
        image_id,rad_id,Cardiomegaly,Pleural effusion,Pneumothorax,Other diseases,No finding
        aaa,R1,1,0,0,0,0
        aaa,R2,1,1,0,0,0
        aaa,R3,0,0,0,0,1
        bbb,R4,0,1,,0,0
        bbb,R5,0,0,,0,1
        bbb,R6,0,0,,0,1
        ccc,R7,1,0,0,0,0
        ccc,R8,0,0,0,0,1
        """,
    )
    write_text(
        tmp_path / "annotations" / "image_labels_test.csv",
        "image_id,Cardiomegaly,Pleural effusion,Pneumothorax,Other disease,No finding\nddd,0,1,0,0,0\n",
    )
    stored = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    write_dicom(tmp_path / "train" / "aaa.dicom", stored)
    write_dicom(tmp_path / "train" / "bbb.dicom", 4000 - stored, monochrome1=True)
    write_dicom(tmp_path / "train" / "ccc.dicom", stored)
    write_dicom(tmp_path / "test" / "ddd.dicom", stored)
    return tmp_path


@pytest.mark.parametrize(
    "aggregate, targets",
    [
        ("majority", [[1, 0, 0], [0, 0, 0], [0, 0, 0]]),  # 2 of 3; 1 of 3; a 1-1 tie is negative
        ("any", [[1, 1, 0], [0, 1, 0], [1, 0, 0]]),
    ],
)
def test_vindr_radiologists_are_merged(vindr, aggregate, targets):
    labels = ["cardiomegaly", "Pleural effusion", "pneumothorax"]
    data = VinDrCxrDataset(
        "train", root_path=str(vindr), labels=labels, aggregate=aggregate, val_fraction=0.0, blank="ignore"
    )
    assert data.sample_ids == ["aaa", "bbb", "ccc"]
    assert as_lists(data.targets) == targets
    assert as_lists(data.mask) == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]  # no reader gave bbb's pneumothorax


def test_vindr_test_table_and_other_disease_spelling(vindr):
    test = VinDrCxrDataset("test", root_path=str(vindr), labels=["other_diseases", "pleural_effusion"])
    assert test.sample_ids == ["ddd"] and as_lists(test.targets) == [[0, 1]]
    assert len(VinDrCxrDataset.all_labels) == 28 and "nodule_mass" in VinDrCxrDataset.all_labels


def test_dicom_windowing_and_monochrome1(vindr):
    expected = np.array([[0.0, 0.25], [0.5, 1.0]])
    assert read_dicom(vindr / "train" / "aaa.dicom") == pytest.approx(expected)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(vindr / "train" / "bbb.dicom"))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0028|0004").strip() == "MONOCHROME1"
    assert read_dicom(vindr / "train" / "bbb.dicom") == pytest.approx(expected)  # inverted back
    data = VinDrCxrDataset(
        "train", root_path=str(vindr), labels=["cardiomegaly"], val_fraction=0.0, img_size=None
    )
    assert data[1]["image"][0].numpy() == pytest.approx(expected)


# --- MIMIC-CXR-JPG -------------------------------------------------------------------------------


@pytest.fixture
def mimic(tmp_path):
    write_text(
        tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz",
        """\
        subject_id,study_id,Cardiomegaly,Edema,Pleural Effusion
        10000032,50414267,1.0,,-1.0
        10000032,53189527,0.0,1.0,
        10000764,57375967,,0.0,1.0
        """,
        compress=True,
    )
    write_text(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv",
        """\
        dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns
        d1,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544
        d2,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544
        d3,10000032,53189527,CHEST (PORTABLE AP),AP,3056,2544
        d4,10000764,57375967,CHEST (PA AND LAT),PA,3056,2544
        d5,11000011,59999999,CHEST (PA AND LAT),PA,3056,2544
        """,
    )
    write_text(
        tmp_path / "mimic-cxr-2.0.0-split.csv",
        """\
        dicom_id,study_id,subject_id,split
        d1,50414267,10000032,train
        d2,50414267,10000032,train
        d3,53189527,10000032,validate
        d4,57375967,10000764,test
        d5,59999999,11000011,train
        """,
    )
    return tmp_path


def test_mimic_paths_views_and_study_labels(mimic):
    path = mimic_image_path(mimic, "10000032", "50414267", "d1")
    assert path == mimic / "files/p10/p10000032/s50414267/d1.jpg"
    labels = ["cardiomegaly", "edema", "pleural_effusion"]
    common = dict(root_path=str(mimic), labels=labels, val_fraction=0.0)
    train = MimicCxrDataset("train", uncertain="ones", blank="ignore", **common)
    assert train.sample_ids == ["d1", "d3", "d5"]  # the lateral d2 is dropped; validate is training data
    assert [r.image.relative_to(mimic).as_posix() for r in train.records] == [
        "files/p10/p10000032/s50414267/d1.jpg",
        "files/p10/p10000032/s53189527/d3.jpg",
        "files/p11/p11000011/s59999999/d5.jpg",
    ]
    assert as_lists(train.targets) == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert as_lists(train.mask) == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]  # d5's study has no labels
    assert MimicCxrDataset("train", frontal_only=False, **common).sample_ids == ["d1", "d2", "d3", "d5"]
    test = MimicCxrDataset("test", **common)
    assert test.sample_ids == ["d4"] and as_lists(test.targets) == [[0, 0, 1]]


# --- errors ----------------------------------------------------------------------------------------


def test_errors_name_the_file_the_column_and_the_label(tmp_path, mimic):
    with pytest.raises(FileNotFoundError, match=r"CheXpert-v1.0-small/train\.csv does not exist"):
        CheXpertDataset("train", root_path=str(tmp_path / "CheXpert-v1.0-small"))
    root = tmp_path / "chexpert"
    write_text(root / "train.csv", "Path,Cardiomegaly\nx/train/patient00001/study1/view1_frontal.jpg,1.0\n")
    with pytest.raises(ValueError, match=r"train\.csv has no column 'Frontal/Lateral'"):
        CheXpertDataset("train", root_path=str(root), labels=["cardiomegaly"])
    with pytest.raises(ValueError, match=r"train\.csv has no column for the labels \['edema'\]"):
        CheXpertDataset("train", root_path=str(root), labels=["edema"], frontal_only=False)
    with pytest.raises(ValueError, match=r"CheXpertDataset has no labels \['Hernia'\]"):
        CheXpertDataset("train", root_path=str(root), labels=["Hernia"])
    data = CheXpertDataset(
        "train", root_path=str(root), labels=["cardiomegaly"], frontal_only=False, val_fraction=0
    )
    missing = root / "train/patient00001/study1/view1_frontal.jpg"
    with pytest.raises(FileNotFoundError, match=rf"image {missing} listed in .*train\.csv does not exist"):
        data[0]
    write_text(root / "train.csv", "Path,Cardiomegaly\nx/train/patient00001/study1/view1_frontal.jpg,2.0\n")
    with pytest.raises(ValueError, match=r"train\.csv row 2 column 'Cardiomegaly': label value '2.0'"):
        CheXpertDataset("train", root_path=str(root), labels=["cardiomegaly"], frontal_only=False)
    (mimic / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv \(or .*\.gz\) does not exist"):
        MimicCxrDataset("test", root_path=str(mimic))


def test_chestxray14_list_naming_unknown_image(chestxray14):
    write_text(chestxray14 / "test_list.txt", "00000009_000.png\n")
    with pytest.raises(ValueError, match=r"test_list\.txt lists images that .*Data_Entry_2017\.csv lacks"):
        ChestXray14Dataset("test", root_path=str(chestxray14))


def check(target, kwargs) -> None:
    """The config layer's check of a dataset entry's kwargs."""
    check_kwargs(target, kwargs, "dataset.kwargs", supplied=("split",))


def test_config_validation_of_options():
    kwargs = {"root_path": "/data/CheXpert-v1.0-small", "labels": ["Cardiomegaly"], "img_size": [224, 224]}
    check(CheXpertDataset, kwargs)
    with pytest.raises(ConfigError, match=r"kwargs\.uncertain: expected 'zeros' or 'ones' or 'ignore'"):
        check(CheXpertDataset, {**kwargs, "uncertain": "U-Ones"})
    with pytest.raises(ConfigError, match=r"dataset\.kwargs\.channels"):
        check(VinDrCxrDataset, {"root_path": "x", "channels": 2})
    assert CheXpertDataset.required_paths(**kwargs) == {"root_path": Path(kwargs["root_path"])}
    assert canonical_label("Pleural Effusion") == canonical_label("Effusion") == "pleural_effusion"


# --- the synthetic multi-site set --------------------------------------------------------------


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generator_is_deterministic(tmp_path):
    small = dict(train_per_site=4, test_per_site=2, native_size=(32, 40))
    first = files(generate_cxr_sites(tmp_path / "a", **small))
    assert files(generate_cxr_sites(tmp_path / "b", **small)) == first
    assert sum(name.endswith(".dicom") for name in first) == sum(name.endswith(".png") for name in first) == 6
    other = files(generate_cxr_sites(tmp_path / "c", **small, seed=1))
    pictures = [name for name in first if name.endswith((".jpg", ".png"))]
    assert sum(other.get(name) != first[name] for name in pictures) > len(pictures) / 2


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Every split of the four default-size synthetic sites, read through the registry."""
    cache = str(tmp_path_factory.mktemp("cxr_cache"))
    build = DATASETS.get("synthetic_cxr")
    return {
        (site, split): build(split, root_path=cache, folder=site, val_fraction=0.0)
        for site in SITES
        for split in ("train", "test")
    }


def stack(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, H, W) and targets (N, L) of a whole split."""
    items = [data[i] for i in range(len(data))]
    images = torch.stack([item["image"][0] for item in items])
    return images, torch.stack([item["labels"] for item in items])


@pytest.mark.slow
def test_synthetic_sites_differ_in_labels_and_appearance(synthetic):
    labels = {site: synthetic[site, "train"].label_names for site in SITES}
    assert labels == {
        "site1": ("cardiomegaly", "pleural_effusion"),
        "site2": ("pneumonia", "edema"),
        "site3": ("cardiomegaly", "pneumonia", "pneumothorax"),
        "site4": ("edema", "pleural_effusion", "pneumothorax"),
    }
    assert all(synthetic[site, "train"].num_samples == 200 for site in labels)
    assert all(synthetic[site, "test"].num_samples == 60 for site in labels)
    natives = {site: Image.open(synthetic[site, "train"].records[0].image).size for site in SITES[:2]}
    assert natives == {"site1": (64, 64), "site2": (69, 69)}  # native sides spread over 64 ... 80
    means = sorted(stack(synthetic[site, "test"])[0].mean().item() for site in labels)
    assert means[-1] - means[0] > 0.1  # the sites' detectors differ
    for site in labels:  # prevalences 20-40 %, every finding with positives and negatives
        positives, known = synthetic[site, "train"].positive_counts()
        assert ((positives > 0.12 * known) & (positives < 0.5 * known)).all()
    raw = np.array([record.values for record in synthetic["site1", "train"].records])
    assert np.isnan(raw).any() and (raw == -1).any()  # CheXpert-like blank and uncertain cells


def test_synthetic_heart_shadow_is_wider_with_cardiomegaly(synthetic):
    # Rows 37-44 and columns 20-25 / 43-46 of the 64x64 image: lung beside a normal heart,
    # covered by an enlarged one. Its mean brightness separates the two groups.
    for site in ("site1", "site3"):
        images, targets = stack(synthetic[site, "train"])
        border = torch.cat([images[:, 37:45, 20:26], images[:, 37:45, 43:47]], dim=2).mean(dim=(1, 2))
        enlarged = targets[:, synthetic[site, "train"].label_names.index("cardiomegaly")] == 1
        assert border[enlarged].mean() - border[~enlarged].mean() > 0.1


@pytest.mark.slow
def test_synthetic_findings_are_learnable(synthetic):
    """A logistic regression on 16x16 average-pooled pixels, fitted on each site's training
    split, reaches AUROC > 0.8 on its test split for every annotated finding."""
    for site in SITES:
        (train_x, train_y), (test_x, test_y) = stack(synthetic[site, "train"]), stack(synthetic[site, "test"])
        pool = torch.nn.AvgPool2d(4)
        features, test_features = pool(train_x[:, None]).flatten(1), pool(test_x[:, None]).flatten(1)
        mean, std = features.mean(0), features.std(0) + 1e-6
        features, test_features = (features - mean) / std, (test_features - mean) / std
        for label in range(train_y.shape[1]):
            weights = torch.zeros(features.shape[1] + 1, requires_grad=True)
            optimizer = torch.optim.LBFGS([weights], max_iter=100)

            def loss() -> torch.Tensor:
                optimizer.zero_grad()
                logits = features @ weights[:-1] + weights[-1]
                value = torch.nn.functional.binary_cross_entropy_with_logits(logits, train_y[:, label])
                value = value + 1e-2 * weights[:-1].square().sum()
                value.backward()
                return value

            optimizer.step(loss)
            scores = (test_features @ weights[:-1] + weights[-1]).detach()
            assert auroc(scores, test_y[:, label]) > 0.8, (site, label)


def auroc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the ROC curve: the probability that a positive outscores a negative."""
    positive, negative = scores[targets == 1], scores[targets == 0]
    return ((positive[:, None] > negative[None]).float().mean()).item()


def test_synthetic_cache_is_reused_and_validated(tmp_path):
    small = dict(root_path=str(tmp_path), train_per_site=4, test_per_site=2, native_size=[32, 32])
    first = SyntheticChestXrayDataset("test", folder="site3", **small)
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("cxr-")]
    stamp = (folder / "siteflow_synthetic.json").stat().st_mtime_ns
    again = SyntheticChestXrayDataset("test", folder="site3", labels=["edema", "cardiomegaly"], **small)
    assert (folder / "siteflow_synthetic.json").stat().st_mtime_ns == stamp
    assert again.sample_ids == first.sample_ids and again.label_names == ("edema", "cardiomegaly")
    assert as_lists(again.mask[:, 0]) == [1, 1] and as_lists(again.targets[:, 0]) == [0, 0]  # blank -> zeros
    ignored = SyntheticChestXrayDataset("test", folder="site3", labels=["edema"], blank="ignore", **small)
    assert as_lists(ignored.mask[:, 0]) == [0, 0]  # site3 does not annotate edema
    assert SyntheticChestXrayDataset.required_paths(**small) == {}
    check(SyntheticChestXrayDataset, {**small, "folder": "site2"})
    with pytest.raises(ValueError, match="site5"):
        SyntheticChestXrayDataset("test", folder="site5", **small)
    assert first[0]["image"].shape == (1, 64, 64)  # the default img_size
