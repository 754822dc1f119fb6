"""The decode cache: decoded arrays come back byte for byte (from memory or from ``.npy``
files), a sample is decoded once however many epochs, workers and processes read it, a
changed file is decoded again, and ``cache_dir`` stays under the working directory."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import get_worker_info

from siteflow.core.registry import DATASETS
from siteflow.datasets import FundusDataset
from siteflow.datasets.decode_cache import DEFAULT_CACHE_DIR, DecodeCache, Decoded, cache_folder, sample_key
from siteflow.datasets.pooling import loader


class CountingFundus(FundusDataset):
    """The fundus loader, counting the samples it decodes (in this process)."""

    decoded = 0

    def _decode(self, sample):
        type(self).decoded += 1
        return super()._decode(sample)


class MarkedInWorkers(FundusDataset):
    """The fundus loader, leaving a file ``worker-decoded-<id>-<pid>`` in the working directory
    whenever a DataLoader worker decodes a sample."""

    def _decode(self, sample):
        if get_worker_info() is not None:
            Path(f"worker-decoded-{sample.id}-{os.getpid()}").touch()
        return super()._decode(sample)


@pytest.fixture
def domain(tmp_path, monkeypatch):
    """Domain1 with 4 train images and 1 test image, of content no other test has (the memory
    cache is shared by the whole process, keyed by content); the working directory is
    ``tmp_path`` (the disk cache goes under it)."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(list(str(tmp_path).encode()))
    for part, count in (("train", 4), ("test", 1)):
        for k in range(count):
            for folder in ("image", "mask"):
                (tmp_path / "Domain1" / part / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "Domain1" / part / "image" / f"{k}.png")
            mask = rng.choice(np.array([0, 128, 255], dtype=np.uint8), (20, 24))
            Image.fromarray(mask).save(tmp_path / "Domain1" / part / "mask" / f"{k}.png")
    CountingFundus.decoded = 0
    return tmp_path


def options(**extra):
    return dict(root_path=".", folder="Domain1", val_fraction=0.0, **extra)


def items(data) -> list[dict]:
    return [data[i] for i in range(len(data))]


def same_items(a: list[dict], b: list[dict]) -> bool:
    return all(torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) and x["id"] == y["id"] for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_cached_arrays_are_the_decoded_ones_byte_for_byte(domain, kind):
    fresh = FundusDataset("train", **options(cache="none", img_size=[10, 12]))
    cached = FundusDataset("train", **options(cache=kind, img_size=[10, 12]))
    for row, sample in enumerate(cached.samples):
        expected = fresh._decode(sample)
        first, again = cached._decoded(row), cached._decoded(row)
        for got in (first, again):
            assert got.image.dtype == expected.image.dtype == np.uint8 and got.label.dtype == expected.label.dtype == np.int64
            assert got.image.tobytes() == expected.image.tobytes() and got.image.shape == (10, 12, 3)
            assert got.label.tobytes() == expected.label.tobytes() and got.label.shape == (20, 24)  # native
            assert not got.image.flags.writeable and not got.label.flags.writeable
    assert same_items(items(cached), items(fresh))


def test_the_disk_cache_writes_npy_files_atomically_and_reads_them_back(domain):
    data = CountingFundus("train", **options(cache="disk"))
    items(data)
    files = sorted((domain / DEFAULT_CACHE_DIR).rglob("*"))
    arrays = [path for path in files if path.is_file()]
    assert len(arrays) == 2 * 4 and all(path.name.endswith((".image.npy", ".label.npy")) for path in arrays)
    assert not [path for path in arrays if ".tmp-" in path.name]  # no temporary file left
    key = sample_key([data.samples[0].image, data.samples[0].mask], data._preprocessing())
    image_path, label_path = data.cache.paths(key)
    assert np.array_equal(np.load(image_path, allow_pickle=False), data._decode(data.samples[0]).image)
    CountingFundus.decoded = 0
    again = CountingFundus("train", **options(cache="disk"))  # another run: read from disk
    assert same_items(items(again), items(FundusDataset("train", **options(cache="none"))))
    assert CountingFundus.decoded == 0
    resized = CountingFundus("train", **options(cache="disk", img_size=[8, 8]))  # other preprocessing, other key
    items(resized)
    assert CountingFundus.decoded == 4


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_changed_file_is_decoded_again(domain, kind):
    data = CountingFundus("train", **options(cache=kind))
    before = data[0]
    assert CountingFundus.decoded == 1
    data[0]
    assert CountingFundus.decoded == 1
    path = data.samples[0].image
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # a modification time the file never had
    after = data[0]
    assert CountingFundus.decoded == 2
    assert not torch.equal(before["image"], after["image"]) and bool((after["image"] == -1).all())


def test_workers_share_the_memory_cache_the_loader_fills_first(domain):
    data = MarkedInWorkers("train", **options(cache="memory"))
    for _ in range(2):  # two epochs, workers started anew for each
        batches = list(loader(data, batch_size=2, num_workers=2, shuffle=True, seed=0))
        assert sum(len(batch["id"]) for batch in batches) == 4
    assert not list(domain.glob("worker-decoded-*"))
    list(loader(MarkedInWorkers("train", **options(cache="none")), batch_size=2, num_workers=2, shuffle=True, seed=0))
    assert len(list(domain.glob("worker-decoded-*"))) == 4  # without a cache, the workers decode


def test_a_sample_is_decoded_once_over_epochs_and_datasets(domain):
    for _ in range(3):  # e.g. three federated rounds, each building its datasets anew
        data = CountingFundus("train", **options(cache="memory", img_size=[6, 6]))
        for epoch in range(2):
            list(loader(data, batch_size=2, num_workers=0, shuffle=True, seed=epoch))
    assert CountingFundus.decoded == 4
    none = CountingFundus("train", **options(cache="none", img_size=[6, 6]))
    list(loader(none, batch_size=2, num_workers=0, shuffle=True, seed=0))
    assert CountingFundus.decoded == 8


def _read_all(root: str, queue) -> None:
    os.chdir(root)
    data = FundusDataset("train", **options(cache="disk"))
    queue.put([item["image"].sum().item() for item in items(data)])


def test_several_processes_fill_one_disk_cache(domain):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_read_all, args=(str(domain), queue)) for _ in range(3)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    expected = [item["image"].sum().item() for item in items(FundusDataset("train", **options(cache="none")))]
    assert results == [expected] * 3
    arrays = [path for path in (domain / DEFAULT_CACHE_DIR).rglob("*") if path.is_file()]
    assert len(arrays) == 8 and not [path for path in arrays if ".tmp-" in path.name]


def test_a_corrupt_cache_entry_is_decoded_again(domain):
    data = CountingFundus("train", **options(cache="disk"))
    expected = data[0]
    key = sample_key([data.samples[0].image, data.samples[0].mask], data._preprocessing())
    data.cache.paths(key)[0].write_bytes(b"\x93NUMPY truncated")
    assert same_items([CountingFundus("train", **options(cache="disk"))[0]], [expected])
    assert CountingFundus.decoded == 2


def test_decoding_the_same_arrays_through_the_cache_api(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"abc")
    image = np.arange(12, dtype=np.float32).reshape(2, 2, 3) / 11
    label = np.array([[0, 255], [1, 0]], dtype=np.int64)
    cache = DecodeCache("disk", tmp_path / "cache")
    calls = []

    def decode() -> Decoded:
        calls.append(1)
        return Decoded(image.copy(), label.copy())

    first = cache.get([source], {"x": 1}, decode)
    second = DecodeCache("disk", tmp_path / "cache").get([source], {"x": 1}, decode)
    assert len(calls) == 1
    assert second.image.dtype == np.float32 and second.image.tobytes() == image.tobytes()
    assert second.label.tobytes() == label.tobytes() and first.label.tobytes() == label.tobytes()
    DecodeCache("disk", tmp_path / "cache").get([source], {"x": 2}, decode)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "cache_dir,message",
    [
        ("/tmp/decoded", "cache_dir '/tmp/decoded' is an absolute path; name a folder under the working directory"),
        ("../elsewhere", "cache_dir '../elsewhere' is not a folder under the working directory"),
        ("a/../..", "cache_dir 'a/../..' is not a folder under the working directory"),
        (".", "cache_dir '.' is not a folder under the working directory"),
        (" ", "cache_dir is empty; name a folder under the working directory"),
    ],
)
def test_cache_dir_stays_under_the_working_directory(domain, cache_dir, message):
    with pytest.raises(ValueError) as caught:
        FundusDataset("train", **options(cache="disk", cache_dir=cache_dir))
    assert message in str(caught.value)
    with pytest.raises(ValueError) as described:
        DATASETS.get("fundus").describe(root_path=".", folder="Domain1", cache_dir=cache_dir)
    assert message in str(described.value)
    assert cache_folder("./decoded/") == Path("decoded")


def test_an_unknown_cache_kind_is_refused(domain):
    with pytest.raises(ValueError, match="cache must be one of memory, disk, none, not 'ram'"):
        FundusDataset("train", **options(cache="ram"))
