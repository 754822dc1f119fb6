"""The classification task deployed: FedAvg on a real Flower federation on 127.0.0.1 (a
SuperLink and two SuperNodes) tests the same models as the simulation, and a sequential chain
of ``train.py`` processes hands a signed classifier from site to site, verified on arrival."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from siteflow.config import load_config
from siteflow.core.atomic import load_weights
from siteflow.engine.runner import ExperimentRun
from siteflow.handover import HandoverError, read_handover
from siteflow.models import ResNetClassifier
from tests.experiments import deploy_site_by_site
from tests.test_classification_runs import classes_config

KEY = "5f0c4e1d2b3a69788796a5b4c3d2e1f0"
REPO = Path(__file__).resolve().parent.parent
METRICS = ["balanced_accuracy", "accuracy", "macro_f1", "auroc", "kappa"]


@pytest.mark.slow
def test_fedavg_of_a_classifier_on_flower_tests_the_simulated_models(tmp_path: Path) -> None:
    from flower_local import simulated_and_deployed

    config = classes_config(tmp_path / "config", "fedavg", rounds=2, local_epochs=1)
    simulated, deployed = simulated_and_deployed(tmp_path, config)  # the site matrices equal, row by row
    rows = deployed.folder.results
    assert [row.stage for row in rows] == ["round1", "round2"]
    assert all(set(METRICS) <= set(values) for row in rows for values in row.values.values())
    for site in ("site1", "site2"):
        confusion = np.loadtxt(deployed.folder.results_dir / "confusion" / "round2" / f"{site}.csv",
                               delimiter=",", skiprows=1, usecols=range(1, 5))
        assert confusion.sum() == 6 and np.trace(confusion) / 6 == pytest.approx(rows[-1].values[site]["accuracy"])
    final = load_weights(deployed.folder.checkpoints / "global" / "final.safetensors")
    expected = load_weights(simulated.folder.checkpoints / "global" / "final.safetensors")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_a_deployed_sequential_chain_hands_a_signed_classifier_verified_on_arrival(tmp_path: Path) -> None:
    config = classes_config(tmp_path / "config", "sequential")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SITEFLOW_HANDOVER_KEY": KEY}
    received = deploy_site_by_site(config, tmp_path, [1, 2], env=env)
    simulated = ExperimentRun(load_config(config), tmp_path / "simulated")
    simulated.execute()

    weights, manifest = read_handover(received, key=KEY.encode(), strategy="sequential", model_name="resnet_classifier",
                                      model_kwargs={"depth": 18})
    assert manifest.signature is not None and [site.task_id for site in manifest.sites] == [1, 2]
    expected = load_weights(simulated.folder.checkpoints / "task_2" / "final.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.allclose(weights[k], expected[k], rtol=1e-5, atol=1e-6) for k in expected)
    with pytest.raises(HandoverError, match="wrong signature: signed with another key"):
        read_handover(received, key=b"another consortium key")
    with pytest.raises(HandoverError, match=r"a different model architecture: depth \(file: 18, this site: 34\)"):
        read_handover(received, key=KEY.encode(), model_kwargs={"depth": 34})
    eight_classes = ResNetClassifier(3, 8).state_dict()  # a site whose data has eight classes
    unfit = r"do not fit this site's model: 'head\.bias' has shape \[4\], this site's model \[8\]; 'head\.weight' has shape \[4, 512\]"
    with pytest.raises(HandoverError, match=unfit):
        read_handover(received, key=KEY.encode(), expected_shapes={k: v.shape for k, v in eight_classes.items()})

    # site 2 receives site 1's file altered on the way: refused before anything is trained
    first = tmp_path / "hospital1" / "exps" / "sequential" / "deployed" / "checkpoints" / "task_1" / "handover.safetensors"
    altered = tmp_path / "altered.safetensors"
    data = bytearray(first.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor
    altered.write_bytes(bytes(data))
    site = tmp_path / "hospital2_again"
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "deployed", "--exps-root",
                             str(site / "exps"), "--task-id", "2", "--handover", str(altered)],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{altered}: the weights do not match the manifest's SHA-256 digest (corrupted or altered)" in result.stderr
    assert not list(site.glob("**/*.safetensors")), "the site trained on an altered file"
