"""Many sites at flat memory: a simulated federation's updates wait for the average on disk,
read back one tensor at a time; its peak memory at 48 sites is close to that at 3 sites (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import tiny_config
from siteflow.strategies.federated.aggregation import weighted_average
from siteflow.strategies.federated.store import SiteStore, StoredWeights

REPO = Path(__file__).resolve().parent.parent

PEAK_MEMORY = """
import json, resource, sys
from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
ExperimentRun(load_config(sys.argv[1]), sys.argv[2]).execute()
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_stored_weights_are_read_from_disk_one_tensor_at_a_time(tmp_path):
    weights = {"conv.weight": torch.arange(6.0).reshape(2, 3), "bn.num_batches_tracked": torch.tensor(4)}
    store = SiteStore(tmp_path / "site1")
    store.save("sent", 2, weights)
    stored = store.stored("sent", 2)
    assert isinstance(stored, StoredWeights) and sorted(stored) == sorted(weights) and len(stored) == 2
    assert torch.equal(stored["conv.weight"], weights["conv.weight"]) and int(stored["bn.num_batches_tracked"]) == 4
    assert stored["conv.weight"] is not stored["conv.weight"]  # read afresh, not kept
    with pytest.raises(KeyError):
        stored["fc.weight"]


def test_the_average_of_stored_updates_is_that_of_the_updates(tmp_path):
    generator = torch.Generator().manual_seed(0)
    updates = [{"w": torch.randn(4, 5, generator=generator), "b": torch.randn(5, generator=generator)} for _ in range(3)]
    stored = []
    for index, update in enumerate(updates):
        store = SiteStore(tmp_path / f"site{index}")
        store.save("sent", 1, update)
        stored.append(store.stored("sent", 1))
    coefficients = [0.5, 0.3, 0.2]
    expected = {name: sum(c * u[name].double() for c, u in zip(coefficients, updates)).float() for name in ("w", "b")}
    averaged = weighted_average(stored, coefficients, keys=["w", "b"])
    for name in ("w", "b"):
        assert torch.equal(averaged[name], weighted_average(updates, coefficients)[name])  # the same bits as in memory
        torch.testing.assert_close(averaged[name], expected[name])


def peak_memory(folder: Path, sites: int) -> float:
    """Peak resident memory (MiB) of a process that runs one round of FedAvg over ``sites``
    tiny sites with a U-Net of 7.7 MB (48 of its updates held at once: 370 MB)."""
    folder.mkdir()
    config = tiny_config(
        folder, "fedavg", sites=sites,
        model={"name": "unet", "kwargs": {"base_channels": 32, "depth": 3}},
        common={"strategy": {"name": "fedavg", "kwargs": {"rounds": 1}}, "dataset": {"kwargs": {"cache": "none"}}},
    )
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(config), str(folder / "run")],
        capture_output=True, text=True, cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "run" / "sites" / "site1" / "sent" / "round1.safetensors").is_file()  # the update waited on disk
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_sites(tmp_path):
    """45 more sites add less than half of what holding their updates would (45 x 7.4 MiB):
    measured 596 MiB at 3 sites and 725 MiB at 48 (about 2.9 MiB a site, against about 19
    MiB a site before updates waited on disk and each site's trainer was freed)."""
    few, many = peak_memory(tmp_path / "three", 3), peak_memory(tmp_path / "many", 48)
    held = 45 * 7727092 / 2**20  # the 45 more updates, in MiB
    assert many - few < held / 2, f"peak memory {few:.0f} MiB at 3 sites, {many:.0f} MiB at 48"
