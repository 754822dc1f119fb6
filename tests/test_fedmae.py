"""Self-supervised federated pre-training (Fed-MAE, SSL-FL) and fine-tuning from its encoder:
masking, the masked-patch loss, federated averaging of the encoder, loading it by name, the
label fraction, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments import RecordsUpdates, sample_weighted_mean, tiny_config
from siteflow.config import Component, ConfigError, SiteConfig, TrainConfig, load_config
from siteflow.core.atomic import load_weights, save_weights
from siteflow.datasets.base import labelled_part
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.runner import ExperimentRun
from siteflow.core.errors import FileRefused
from siteflow.losses import MaskedPatchMSELoss
from siteflow.models import MaskedAutoencoderViT, UNETRSegmenter, ViTClassifier
from siteflow.strategies.federated import ROUND_STATE
from siteflow.strategies.federated.fedavg import FedAvgStrategy
from siteflow.tasks import MaskedImageModellingTask
from siteflow.tasks.base import configure_optimization

ENCODER = {"img_size": [32, 32], "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 2, "num_heads": 2}
DECODER = {"decoder_hidden_size": 16, "decoder_mlp_dim": 32, "decoder_num_layers": 1, "decoder_num_heads": 2}
CXR = {"train_per_site": 12, "test_per_site": 4, "native_size": [48, 56], "img_size": [32, 32], "val_fraction": 0.25}
SITES = [{"task_id": i, "task_name": f"site{i}", "kwargs": {"folder": f"site{i}"}} for i in (1, 2)]


def cxr_config(folder: Path, model: dict, *, train: dict, dataset: dict | None = None, **strategy_kwargs) -> Path:
    """A fedavg config over two tiny synthetic chest X-ray sites (generated into ``folder``)."""
    kwargs = {**CXR, "root_path": str(folder / "data"), **(dataset or {})}
    return tiny_config(
        folder, "fedavg", sites=2, dataset={"name": "synthetic_cxr", "kwargs": kwargs}, model=model,
        all_tasks_datasets=SITES,
        common={"strategy": {"kwargs": {"rounds": 1, "weighting": "samples", **strategy_kwargs}}, "train": {"batch_size": 4, **train}},
    )


def mae(**kwargs) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(1, 0, **{**ENCODER, **DECODER, **kwargs})


class RecordingFedAvg(RecordsUpdates, FedAvgStrategy):
    """FedAvg that keeps every site's update (what the server averaged)."""


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One round of Fed-MAE over two sites, the sites' updates recorded."""
    folder = tmp_path_factory.mktemp("fedmae")
    model = {"name": "mae_vit", "kwargs": {**ENCODER, **DECODER, "mask_ratio": 0.75}}
    config = load_config(cxr_config(folder, model, train={"loss": {"name": "masked_mse"}}, dataset={"label_fraction": 0.5}))
    runner = ExperimentRun(config, folder / "run", strategy=RecordingFedAvg(**config.strategy.kwargs))
    runner.summary = runner.execute()
    return runner


# --- item 7: masking and loss ---------------------------------------------------------------------


def test_masking_keeps_the_configured_ratio_and_differs_per_sample():
    torch.manual_seed(0)
    model = mae(mask_ratio=0.6)  # 16 patches: round(9.6) = 10 masked
    output = model(torch.randn(8, 1, 32, 32))
    assert output.mask.shape == (8, 16)
    assert output.mask.sum(dim=1).tolist() == [10.0] * 8
    assert len({tuple(row.tolist()) for row in output.mask}) == 8, "every image must get its own mask"
    assert not torch.equal(model(torch.randn(8, 1, 32, 32)).mask, output.mask)
    assert output.pred.shape == output.target.shape == (8, 16, 64)


def test_the_loss_is_computed_on_the_masked_patches_only():
    torch.manual_seed(1)
    model = mae()
    images = torch.randn(2, 1, 32, 32)
    output = model(images)
    loss = MaskedPatchMSELoss()
    by_hand = [
        ((output.pred[n, l] - output.target[n, l]) ** 2).mean()
        for n in range(2) for l in range(16) if output.mask[n, l] == 1
    ]
    assert len(by_hand) == 24
    assert torch.allclose(loss(output.pred, output.target, output.mask), torch.stack(by_hand).mean())
    visible = output.pred.clone()
    visible[output.mask == 0] += 100.0  # visible patches predicted badly: no change
    assert torch.equal(loss(visible, output.target, output.mask), loss(output.pred, output.target, output.mask))
    hidden = output.pred.clone()
    hidden[output.mask == 1] += 1.0
    assert not torch.allclose(loss(hidden, output.target, output.mask), loss(output.pred, output.target, output.mask))


def test_targets_are_the_patches_normalised_per_patch():
    model = mae()
    images = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32)
    target = model.targets(images)
    first = images[0, 0, :8, 8:16].reshape(-1)  # patch (row 0, column 1) of image 0: token 1
    assert torch.allclose(target[0, 1], (first - first.mean()) / (first.var() + 1e-6).sqrt())
    assert torch.equal(mae(norm_pix_loss=False).targets(images)[0, 1], first)
    assert torch.equal(model.unpatchify(model.patchify(images)), images)


# --- item 3 and 7: Fed-MAE through fedavg ---------------------------------------------------------


@pytest.mark.slow
def test_the_encoder_after_federated_pre_training_is_the_weighted_mean_of_the_sites(pretrained):
    updates = pretrained.strategy.updates
    assert [u.site for u in updates] == ["site1", "site2"]
    assert isinstance(pretrained.task, MaskedImageModellingTask)
    saved, _ = pretrained.load_state(ROUND_STATE)
    encoder = [name for name in updates[0].weights if name.startswith("vit.")]
    assert "vit.blocks.1.attn.qkv.weight" in encoder
    for name in encoder:
        assert torch.allclose(saved[f"global/{name}"].double(), sample_weighted_mean(updates, name), atol=1e-6), name
    qkv = "vit.blocks.0.attn.qkv.weight"
    assert not torch.equal(updates[0].weights[qkv], updates[1].weights[qkv]), "the sites did not train"
    final = load_weights(pretrained.folder.checkpoints / "global" / "final.safetensors")
    assert torch.equal(final[qkv], saved[f"global/{qkv}"])


def test_pre_training_reads_every_image_and_reports_the_reconstruction_loss(pretrained):
    site = pretrained.config.sites[0]
    assert site.dataset.kwargs["label_fraction"] == 0.5
    labelled = build_dataset(site, "train")
    every = pretrained.task.dataset([site], "train")
    assert len(labelled) == round(0.5 * len(every)) < len(every)
    assert set(every[0]) == {"image", "id"}
    assert pretrained.summary["metrics"] == ["reconstruction_loss"]
    row = pretrained.results[-1].values
    assert set(row) == {"site1", "site2"} and all(0 < row[s]["reconstruction_loss"] < 10 for s in row)


def test_a_picture_of_original_masked_and_reconstructed_images_is_saved_per_stage(pretrained):
    for site in ("site1", "site2"):
        path = pretrained.folder.logs / "round1" / site / "reconstructions.png"
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > 100 and picture.height > 100


def test_deployed_on_flower_a_hospital_pre_trains_on_its_images_and_sends_every_weight(tmp_path):
    from siteflow.deploy.flower.protocol import NodeSettings, RunSettings
    from siteflow.deploy.flower.site import DeployedSite

    model = {"name": "mae_vit", "kwargs": {**ENCODER, **DECODER}}
    config = cxr_config(tmp_path, model, train={"loss": {"name": "masked_mse"}})
    site = DeployedSite(RunSettings(config=str(config), note="t"), NodeSettings(task_id=2, exps_root=tmp_path / "hospital2"))
    global_weights = site.run.start(site.site.site_run, lambda: site.strategy.build_network(site.run.task)).weights
    update = site.train(global_weights, 1)  # a real round of Fed-MAE at site 2
    assert set(update.weights) == set(global_weights)
    qkv = "vit.blocks.0.attn.qkv.weight"
    assert not torch.equal(update.weights[qkv], global_weights[qkv]), "the encoder did not train"


# --- item 4: fine-tuning from the pre-trained encoder ----------------------------------------------


def test_fine_tuning_starts_from_exactly_the_pre_trained_encoder(pretrained, tmp_path):
    weights = pretrained.folder.checkpoints / "global" / "final.safetensors"
    model = {"name": "vit_classifier", "kwargs": {**ENCODER, "pretrained": str(weights), "layer_decay": 0.5}}
    config = load_config(cxr_config(tmp_path, model, train={"loss": {"name": "bce", "kwargs": {"pos_weight": "auto"}}}))
    runner = ExperimentRun(config, tmp_path / "run")
    runner.execute()
    file, initial = load_weights(weights), load_weights(runner.folder.checkpoints / "initial.safetensors")
    encoder = [name for name in initial if name.startswith("vit.")]
    assert encoder and all(torch.equal(initial[name], file[name]) for name in encoder)
    assert "head.weight" in initial and "head.weight" not in file
    final = load_weights(runner.folder.checkpoints / "global" / "final.safetensors")
    assert not torch.equal(final["vit.blocks.0.attn.qkv.weight"], file["vit.blocks.0.attn.qkv.weight"]), "not fine-tuned"


def test_the_load_reports_what_was_loaded_skipped_and_newly_initialised(pretrained):
    path = pretrained.folder.checkpoints / "global" / "final.safetensors"
    report = ViTClassifier(1, 3, **ENCODER, pretrained=str(path)).pretrained_report
    assert "vit.blocks.1.mlp.linear1.weight" in report.loaded and not any(n.startswith("vit.") for n in report.skipped)
    assert {"decoder_pred.weight", "mask_token"} <= set(report.skipped)
    assert report.initialised == ("head.weight", "head.bias")
    assert "newly initialised 2 of the model's (head.weight, head.bias)" in str(report)


def test_a_frozen_encoder_does_not_move_and_layer_decay_scales_the_learning_rates(tmp_path):
    path = tmp_path / "mae.safetensors"
    save_weights(path, mae().state_dict())
    model = ViTClassifier(1, 3, **ENCODER, pretrained=str(path), freeze_encoder=True, layer_decay=0.5)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer = configure_optimization(TrainConfig(optimizer=Component("SGD", {"lr": 0.1})), model.parameter_groups())
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1 * 0.5**3, 0.1 * 0.5**2, 0.1 * 0.5, 0.1])
    model(torch.randn(4, 1, 32, 32)).sum().backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[n], before[n]) for n in before if n.startswith("vit."))
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_the_three_models_share_the_encoder_weights_by_name():
    encoder = {**ENCODER, "patch_size": 16, "num_layers": 3}  # UNETR's patches; a skip from each of 3 blocks
    unetr = UNETRSegmenter(1, 3, **encoder, feature_size=4)
    shapes = [
        {name: tuple(t.shape) for name, t in model.state_dict().items() if name.startswith("vit.")}
        for model in (mae(**encoder), ViTClassifier(1, 3, **encoder), unetr)
    ]
    assert shapes[0] == shapes[1] == shapes[2]
    assert unetr(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    volume = {**ENCODER, "img_size": [16, 16, 16], "spatial_dims": 3, "hidden_size": 12}
    assert ViTClassifier(1, 3, **volume)(torch.randn(2, 1, 16, 16, 16)).shape == (2, 3)


# --- bad input ------------------------------------------------------------------------------------------


def test_an_encoder_that_does_not_match_is_refused_with_names_and_shapes(tmp_path):
    wider, deeper = tmp_path / "wider.safetensors", tmp_path / "deeper.safetensors"
    save_weights(wider, mae(hidden_size=32).state_dict())
    save_weights(deeper, mae(num_layers=3).state_dict())
    shallow = tmp_path / "shallow.safetensors"
    save_weights(shallow, {name: t for name, t in mae(num_layers=3).state_dict().items() if not name.startswith("vit.blocks.1.")})
    with pytest.raises(FileRefused, match=r"vit\.blocks\.0\.attn\.qkv\.weight has shape \[96, 32\], the model's \[48, 16\]") as refused:
        ViTClassifier(1, 3, **ENCODER, pretrained=str(wider))
    assert str(wider) in str(refused.value) and "does not match the configured one" in str(refused.value)
    with pytest.raises(FileRefused, match=r"unexpected vit\.blocks\.2\.attn\.qkv\.weight \[48, 16\]"):
        ViTClassifier(1, 3, **ENCODER, pretrained=str(deeper))
    with pytest.raises(FileRefused, match=r"missing vit\.blocks\.1\.attn\.qkv\.weight \[48, 16\]"):
        ViTClassifier(1, 3, **{**ENCODER, "num_layers": 3}, pretrained=str(shallow))


def test_an_unreadable_pretrained_file_is_a_config_error_naming_it(tmp_path):
    model = {"name": "vit_classifier", "kwargs": {**ENCODER, "pretrained": str(tmp_path / "none.safetensors")}}
    with pytest.raises(ConfigError, match="none.safetensors: cannot read the pre-trained weights") as refused:
        load_config(cxr_config(tmp_path, model, train={"loss": {"name": "bce"}}))
    assert refused.value.key_path == "common.model.kwargs"
    pickle = tmp_path / "weights.pt"
    torch.save({"vit.norm.weight": torch.ones(16)}, pickle)
    with pytest.raises(FileRefused, match="weights.pt"):
        ViTClassifier(1, 3, **ENCODER, pretrained=str(pickle))


def test_an_image_size_not_divisible_by_the_patch_size_is_refused(tmp_path):
    model = {"name": "mae_vit", "kwargs": {**ENCODER, "img_size": [30, 32]}}
    with pytest.raises(ConfigError, match=r"img_size \[30, 32\] is not divisible by patch_size 8") as refused:
        load_config(cxr_config(tmp_path, model, train={"loss": {"name": "masked_mse"}}))
    assert refused.value.key_path == "common.model.kwargs"


def test_pre_training_needs_the_masked_loss_and_the_datas_image_size(tmp_path):
    model = {"name": "mae_vit", "kwargs": {**ENCODER, **DECODER}}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match=r"common\.train\.loss\.name: loss 'bce' compares the logits with label vectors; "
                       r"this study's MaskedImageModellingTask needs patches: choose one of \['masked_mse'\]"):
        load_config(cxr_config(tmp_path / "a", model, train={"loss": {"name": "bce"}}))
    with pytest.raises(ConfigError, match=r"img_size is \[32, 32\], the data's img_size \[64, 64\]"):
        load_config(cxr_config(tmp_path / "b", model, train={"loss": {"name": "masked_mse"}}, dataset={"img_size": [64, 64]}))


# --- item 5: the label fraction -------------------------------------------------------------------------


def test_the_label_fraction_keeps_a_seeded_share_of_each_sites_training_labels(tmp_path):
    options = {**CXR, "root_path": str(tmp_path), "train_per_site": 40, "folder": "site1"}

    def dataset(split: str, **more):
        return build_dataset_of(split, {**options, **more})

    every = dataset("train").sample_ids
    quarter = dataset("train", label_fraction=0.25).sample_ids
    assert len(quarter) == round(0.25 * len(every)) and set(quarter) < set(every)
    assert quarter == dataset("train", label_fraction=0.25).sample_ids
    assert labelled_part(every, 0.25, 0) == quarter  # drawn from split_seed: each site draws among its own samples
    assert labelled_part(every, 0.25, 1) != quarter
    assert dataset("val", label_fraction=0.25).sample_ids == dataset("val").sample_ids
    assert dataset("test", label_fraction=0.25).sample_ids == dataset("test").sample_ids
    with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\], not 0"):
        dataset("train", label_fraction=0.0)


def build_dataset_of(split: str, kwargs: dict):
    return build_dataset(SiteConfig(1, "site1", Component("synthetic_cxr", kwargs)), split)
