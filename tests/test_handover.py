"""The hand-over file: round trip, size, atomic writes, keys, and every refusal, on real files."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from siteflow.core.io import weights_sha256
from siteflow.core.types import SiteRecord
from siteflow.handover import (
    KEY_ENV,
    HandoverError,
    HandoverWarning,
    load_key,
    read_handover,
    read_manifest,
    write_handover,
)
from siteflow.models.unet import UNet

KEY = b"consortium-key-0123456789abcdef"
OTHER_KEY = b"another-consortium-key-98765432"
MODEL_KWARGS = {"in_channels": 3, "num_classes": 3, "base_channels": 16, "kernel": (3, 3)}
SITES = (
    SiteRecord(1, "site1", 40, "2025-03-01T09:00:00+00:00"),
    SiteRecord(2, "site2", 25, "2025-03-04T17:30:00+00:00"),
)


def make_weights() -> dict[str, torch.Tensor]:
    """A small state of several dtypes and shapes, a 0-d buffer included."""
    generator = torch.Generator().manual_seed(0)
    return {
        "solver.conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "solver.conv.bias": torch.randn(4, generator=generator),
        "solver.bn.num_batches_tracked": torch.tensor(7),
        "generator.embed": torch.randn(3, 8, generator=generator).to(torch.bfloat16),
        "generator.mask": torch.rand(5, generator=generator) > 0.5,
    }


def write(path: Path, weights: dict[str, torch.Tensor] | None = None, **options):
    """Write a hand-over file with the defaults of these tests, overridden by ``options``."""
    arguments = dict(
        strategy="relay",
        model_name="unet",
        model_kwargs=MODEL_KWARGS,
        sites=SITES,
        extra={"merge_weight": 0.5, "site_codes": {"1": 0, "2": 1}},
        key=KEY,
    )
    arguments.update(options)
    return write_handover(path, make_weights() if weights is None else weights, **arguments)


def rewrite_manifest(source: Path, target: Path, edit) -> None:
    """Copy ``source`` to ``target`` with its manifest JSON replaced by ``edit(manifest)``."""
    with safe_open(str(source), framework="pt") as handle:
        manifest = json.loads(handle.metadata()["siteflow.handover"])
    save_file(load_file(str(source)), str(target), metadata={"siteflow.handover": edit(manifest)})


def header_end(path: Path) -> int:
    """The offset where the tensor data of a safetensors file starts."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# Round trip, format, size


def test_round_trip_is_bit_identical_and_returns_the_written_manifest(tmp_path):
    written = write(tmp_path / "handover.safetensors")
    weights, manifest = read_handover(
        tmp_path / "handover.safetensors",
        key=KEY,
        strategy="relay",
        model_name="unet",
        model_kwargs=MODEL_KWARGS,
        expected_shapes={name: tensor.shape for name, tensor in make_weights().items()},
        site_order=[1, 2, 3],
        receiving_task_id=3,
    )
    original = make_weights()
    assert weights.keys() == original.keys()
    for name, tensor in original.items():
        assert weights[name].dtype == tensor.dtype and weights[name].shape == tensor.shape
        assert torch.equal(weights[name].view(-1).view(torch.uint8), tensor.view(-1).view(torch.uint8))
    assert manifest == written == read_manifest(tmp_path / "handover.safetensors", key=KEY)
    assert manifest.sites == SITES and manifest.model_kwargs["kernel"] == [3, 3]
    assert manifest.extra == {"merge_weight": 0.5, "site_codes": {"1": 0, "2": 1}}
    assert manifest.weights_sha256 == weights_sha256(original) and re.fullmatch("[0-9a-f]{64}", manifest.signature)


def test_the_file_is_plain_safetensors_with_one_manifest_entry(tmp_path):
    write(tmp_path / "handover.safetensors", key=None)
    with safe_open(str(tmp_path / "handover.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert list(metadata) == ["siteflow.handover"]
    manifest = json.loads(metadata["siteflow.handover"])
    assert manifest["format_version"] == 1 and manifest["signature"] is None
    assert manifest["model"] == {"name": "unet", "kwargs": {**MODEL_KWARGS, "kernel": [3, 3]}}
    assert manifest["sites"][1] == {
        "task_id": 2,
        "task_name": "site2",
        "num_samples": 25,
        "finished_at": "2025-03-04T17:30:00+00:00",
    }


def test_the_digest_depends_on_the_weights_not_on_their_layout():
    weights = make_weights()
    reordered = {name: weights[name] for name in reversed(list(weights))}
    reordered["solver.conv.weight"] = weights["solver.conv.weight"].permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    assert not reordered["solver.conv.weight"].is_contiguous()
    assert weights_sha256(reordered) == weights_sha256(weights)
    changes = {
        "a value": {**weights, "solver.conv.bias": weights["solver.conv.bias"] + 1},
        "a dtype": {**weights, "solver.conv.bias": weights["solver.conv.bias"].double()},
        "a shape": {**weights, "solver.conv.bias": weights["solver.conv.bias"].reshape(2, 2)},
        "a name": {**weights, "solver.conv.bias2": weights["solver.conv.bias"]},
    }
    for change, changed in changes.items():
        assert weights_sha256(changed) != weights_sha256(weights), change


def test_the_file_is_at_most_5_percent_larger_than_the_weights(tmp_path):
    weights = UNet(3, 3, base_channels=16, depth=4).state_dict()
    raw = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    assert len(weights) > 100 and raw > 5_000_000
    write(tmp_path / "unet.safetensors", weights, sites=chain(*[1, 2, 3, 4] * 5))
    assert (tmp_path / "unet.safetensors").stat().st_size <= 1.05 * raw


def test_site_records_finished_now_are_utc_and_accepted(tmp_path):
    record = SiteRecord.finished_now(3, "site3", 12)
    assert record.finished_at.endswith("+00:00")
    assert write(tmp_path / "h.safetensors", sites=[*SITES, record]).sites[-1] == record


# Atomic writes


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    shared = torch.ones(4)  # safetensors refuses two names for one storage, while writing
    with pytest.raises(RuntimeError, match="share memory"):
        write(tmp_path / "handover.safetensors", {"a": shared, "b": shared})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path)
    before = path.read_bytes()
    shared = torch.ones(4)
    with pytest.raises(RuntimeError):
        write(path, {"a": shared, "b": shared})
    late = SiteRecord(3, "site3", 5, "2025-03-02T00:00:00+00:00")  # before site2 finished
    with pytest.raises(HandoverError, match=r"handover.safetensors: malformed manifest: sites out of order"):
        write(path, sites=[*SITES, late])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["handover.safetensors"]


def test_writing_refuses_what_json_cannot_carry(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        write(tmp_path / "h.safetensors", extra={"merge_weight": float("nan")})
    with pytest.raises(HandoverError, match=r"finished_at '2025-03-01 09:00' is not an ISO-8601 UTC time"):
        write(tmp_path / "h.safetensors", sites=[SiteRecord(1, "site1", 40, "2025-03-01 09:00")])
    with pytest.raises(TypeError, match=r"weights\['w'\] is a list, not a tensor"):
        write(tmp_path / "h.safetensors", {"w": [1.0]})
    assert list(tmp_path.iterdir()) == []


# Refusal 1: not a hand-over file


class CreatesFile:
    """An object whose unpickling creates the file ``marker``: a visible side effect."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickles_in_disguise_are_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    payload = {"state_dict": make_weights(), "evil": CreatesFile(marker)}
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps(payload))
    torch.save(payload, tmp_path / "torchsave.safetensors")
    with pytest.raises(HandoverError, match=r"pickle.safetensors: not a safetensors hand-over file: it is a Python pickle"):
        read_handover(tmp_path / "pickle.safetensors")
    with pytest.raises(HandoverError, match=r"torchsave.safetensors: .*zip archive, as torch.save writes"):
        read_handover(tmp_path / "torchsave.safetensors")
    for name in ("pickle.safetensors", "torchsave.safetensors"):
        with pytest.raises(HandoverError, match="not a safetensors hand-over file"):
            read_manifest(tmp_path / name)
    assert not marker.exists()
    pickle.loads((tmp_path / "pickle.safetensors").read_bytes())  # the payload is real: unpickling runs it
    assert marker.exists()


def test_random_bytes_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "random.safetensors").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).numpy().tobytes())
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("random.safetensors", "empty.safetensors"):
        with pytest.raises(HandoverError, match=rf"{name}: not a safetensors hand-over file"):
            read_handover(tmp_path / name)
    with pytest.raises(HandoverError, match=r"missing.safetensors: cannot read the file: No such file"):
        read_handover(tmp_path / "missing.safetensors")


def test_truncated_files_are_refused(tmp_path):
    write(tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    end = header_end(tmp_path / "full.safetensors")
    for cut in (4, 8, end // 2, end, end + 10, len(data) - 1):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(HandoverError, match=r"cut.safetensors: not a (valid )?safetensors"):
            read_handover(tmp_path / "cut.safetensors", key=KEY)


def test_a_plain_safetensors_file_without_manifest_is_refused(tmp_path):
    save_file(make_weights(), str(tmp_path / "plain.safetensors"))
    save_file(make_weights(), str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    for name in ("plain.safetensors", "other.safetensors"):
        with pytest.raises(HandoverError, match=rf"{name}: a safetensors file without a hand-over manifest"):
            read_handover(tmp_path / name)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: json.dumps(m)[:-1], r"malformed manifest JSON"),
        (lambda m: json.dumps(m).replace('"extra":', '"strategy": "x", "extra":'), r"malformed manifest JSON \(repeated key"),
        (lambda m: json.dumps({**m, "extra": {"w": float("nan")}}), r"malformed manifest JSON \(NaN is not a number"),
        (lambda m: json.dumps([m]), r"malformed manifest: not a JSON object"),
        (lambda m: json.dumps({**m, "format_version": 2}), r"unsupported format_version 2 \(this siteflow reads 1\)"),
        (lambda m: json.dumps({**m, "format_version": "1"}), r"format_version is '1', not an integer"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "extra"}), r"missing \['extra'\], unknown \[\]"),
        (lambda m: json.dumps({**m, "sites": [{**m["sites"][0], "num_samples": True}]}), r"num_samples is True"),
        (lambda m: json.dumps({**m, "weights_sha256": "00"}), r"weights_sha256 is not 64 lowercase hex digits"),
    ],
    ids=["cut", "repeated-key", "nan", "array", "version", "version-type", "missing-field", "bool", "digest"],
)
def test_malformed_manifests_are_refused(tmp_path, edit, message):
    write(tmp_path / "good.safetensors", key=None)
    rewrite_manifest(tmp_path / "good.safetensors", tmp_path / "bad.safetensors", edit)
    with pytest.raises(HandoverError, match=rf"bad.safetensors: .*{message}"):
        read_handover(tmp_path / "bad.safetensors")


# Refusal 2: altered bytes


def test_every_flipped_byte_in_the_tensor_data_is_refused(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path, key=None)
    original = path.read_bytes()
    for offset in range(header_end(path), len(original)):
        flip_byte(path, offset)
        with pytest.raises(HandoverError, match=r"handover.safetensors: the weights do not match the manifest's SHA-256"):
            read_handover(path)
        path.write_bytes(original)


def test_a_flipped_byte_in_a_realistic_model_is_refused(tmp_path):
    path = tmp_path / "unet.safetensors"
    write(path, UNet(3, 3, base_channels=16, depth=4).state_dict())
    flip_byte(path, (header_end(path) + path.stat().st_size) // 2)
    with pytest.raises(HandoverError, match="do not match the manifest's SHA-256"):
        read_handover(path, key=KEY)


def test_every_flipped_byte_in_the_header_of_a_signed_file_is_refused(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path)
    original = path.read_bytes()
    for offset in range(header_end(path)):
        flip_byte(path, offset)
        with pytest.raises(HandoverError, match="handover.safetensors: "):
            read_handover(path, key=KEY)
        path.write_bytes(original)


def test_an_edited_manifest_value_is_refused_as_a_wrong_signature(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"site2", b"site9", 1))
    with pytest.raises(HandoverError, match="wrong signature"):
        read_handover(path, key=KEY)


# Refusal 3: signatures


def test_a_receiver_with_a_key_refuses_unsigned_and_wrongly_signed_files(tmp_path):
    write(tmp_path / "unsigned.safetensors", key=None)
    write(tmp_path / "other.safetensors", key=OTHER_KEY)
    write(tmp_path / "signed.safetensors")
    rewrite_manifest(
        tmp_path / "signed.safetensors",
        tmp_path / "edited.safetensors",
        lambda m: json.dumps({**m, "sites": [{**site, "num_samples": 400} for site in m["sites"]]}),
    )
    with pytest.raises(HandoverError, match=r"unsigned.safetensors: the file is not signed, but a consortium key is set"):
        read_handover(tmp_path / "unsigned.safetensors", key=KEY)
    for name in ("other.safetensors", "edited.safetensors"):
        with pytest.raises(HandoverError, match=rf"{name}: wrong signature: signed with another key, or edited"):
            read_handover(tmp_path / name, key=KEY)
        with pytest.raises(HandoverError, match="wrong signature"):
            read_manifest(tmp_path / name, key=KEY)


def test_a_receiver_without_a_key_accepts_signed_files_with_a_warning(tmp_path):
    write(tmp_path / "signed.safetensors")
    write(tmp_path / "unsigned.safetensors", key=None)
    with pytest.warns(HandoverWarning, match=r"signed.safetensors: signed, but no key was given"):
        _, manifest = read_handover(tmp_path / "signed.safetensors")
    assert manifest.signature is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_handover(tmp_path / "unsigned.safetensors")


# Refusal 4: another model or strategy


def test_another_strategy_or_architecture_is_refused(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path)
    with pytest.raises(HandoverError, match=r"handover.safetensors: written by strategy 'relay', this site runs 'sequential'"):
        read_handover(path, key=KEY, strategy="sequential")
    with pytest.raises(HandoverError, match=r"holds a 'unet' model, this site builds a 'resnet_classifier'"):
        read_handover(path, key=KEY, model_name="resnet_classifier")
    with pytest.raises(HandoverError, match=r"a different model architecture: num_classes \(file: 3, this site: 2\)$"):
        read_handover(path, key=KEY, model_kwargs={**MODEL_KWARGS, "num_classes": 2})
    with pytest.raises(HandoverError, match=r"base_channels \(file: 16, this site: null\); depth \(file: null, this site: 4\)"):
        read_handover(path, key=KEY, model_kwargs={**{k: v for k, v in MODEL_KWARGS.items() if k != "base_channels"}, "depth": 4})
    read_handover(path, key=KEY, model_kwargs={**MODEL_KWARGS, "kernel": [3, 3]})  # tuples and lists are the same JSON


def test_weights_that_do_not_fit_the_receivers_model_are_refused(tmp_path):
    path = tmp_path / "unet.safetensors"
    write(path, UNet(3, 3, base_channels=8, depth=2).state_dict())
    two_classes = UNet(3, 2, base_channels=8, depth=2).state_dict()
    message = r"unet.safetensors: the weights do not fit this site's model: '.*' has shape \[3, 8, 1, 1\], this site's model \[2, 8"
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY, expected_shapes={name: tensor.shape for name, tensor in two_classes.items()})
    deeper = UNet(3, 3, base_channels=8, depth=3).state_dict()
    with pytest.raises(HandoverError, match=r"do not fit this site's model: missing '.*'; .* and \d+ more"):
        read_handover(path, key=KEY, expected_shapes={name: tensor.shape for name, tensor in deeper.items()})
    same = UNet(3, 3, base_channels=8, depth=2).state_dict()
    read_handover(path, key=KEY, expected_shapes={name: tuple(tensor.shape) for name, tensor in same.items()})


# Refusal 4b: other strategy options


RELAY_OPTIONS = {"replay_fraction": 0.5, "merge": "mean", "milestones": (2, 4)}


def test_other_strategy_options_are_refused_naming_each_option_and_both_values(tmp_path):
    path = tmp_path / "handover.safetensors"
    assert write(path, strategy_options=RELAY_OPTIONS).strategy_options == {**RELAY_OPTIONS, "milestones": [2, 4]}
    message = (
        r"handover.safetensors: written with strategy option replay_fraction=0.5, this site is configured with 0.25; "
        r"both sites must run the same strategy options$"
    )
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY, strategy="relay", strategy_options={**RELAY_OPTIONS, "replay_fraction": 0.25})
    several = (
        r"written with strategy option buffer=unset, this site is configured with 10; "
        r"strategy option merge=\"mean\", this site is configured with \"sum\"; "
        r"strategy option milestones=\[2, 4\], this site is configured with unset; both sites must"
    )
    with pytest.raises(HandoverError, match=several):
        read_handover(path, key=KEY, strategy_options={"replay_fraction": 0.5, "merge": "sum", "buffer": 10})
    with pytest.raises(HandoverError, match=r"strategy option replay_fraction=0.5, this site is configured with unset"):
        read_handover(path, key=KEY, strategy_options={})
    _, manifest = read_handover(path, key=KEY, strategy="relay", strategy_options={**RELAY_OPTIONS, "milestones": [2, 4]})
    assert manifest.strategy_options == {"replay_fraction": 0.5, "merge": "mean", "milestones": [2, 4]}
    read_handover(path, key=KEY)  # not asked for, not checked


def test_a_strategy_without_options_writes_an_empty_object_that_is_checked_too(tmp_path):
    path = tmp_path / "handover.safetensors"
    assert write(path).strategy_options == {}
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["siteflow.handover"])["strategy_options"] == {}
    read_handover(path, key=KEY, strategy_options={})
    with pytest.raises(HandoverError, match=r"written with strategy option lr=unset, this site is configured with 0.1; both"):
        read_handover(path, key=KEY, strategy_options={"lr": 0.1})


def test_strategy_options_are_covered_by_the_signature_and_must_be_an_object(tmp_path):
    write(tmp_path / "signed.safetensors", strategy_options=RELAY_OPTIONS)
    rewrite_manifest(
        tmp_path / "signed.safetensors",
        tmp_path / "edited.safetensors",
        lambda m: json.dumps({**m, "strategy_options": {**m["strategy_options"], "replay_fraction": 0.25}}),
    )
    with pytest.raises(HandoverError, match=r"edited.safetensors: wrong signature"):
        read_handover(tmp_path / "edited.safetensors", key=KEY, strategy_options={**RELAY_OPTIONS, "replay_fraction": 0.25})
    rewrite_manifest(
        tmp_path / "signed.safetensors",
        tmp_path / "bad.safetensors",
        lambda m: json.dumps({**m, "strategy_options": [0.5]}),
    )
    with pytest.raises(HandoverError, match=r"bad.safetensors: malformed manifest: strategy_options is \[0.5\], not an object"):
        read_handover(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="not JSON compliant"):
        write(tmp_path / "nan.safetensors", strategy_options={"replay_fraction": float("nan")})


def write_older(path: Path) -> None:
    """A signed file as an older siteflow wrote it: no strategy_options field."""
    current = path.with_name("current.safetensors")
    write(current)

    def older(manifest: dict) -> str:
        del manifest["strategy_options"], manifest["signature"]
        canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        signature = hmac.new(KEY, canonical.encode("utf-8"), hashlib.sha256).hexdigest()
        return json.dumps({**manifest, "signature": signature})

    rewrite_manifest(current, path, older)
    current.unlink()


def test_an_older_file_without_strategy_options_is_read_but_refused_when_options_are_checked(tmp_path):
    path = tmp_path / "older.safetensors"
    write_older(path)
    _, manifest = read_handover(path, key=KEY, strategy="relay")  # its signature verifies without the field
    assert manifest.strategy_options is None and "strategy_options" not in manifest.to_dict()
    assert read_manifest(path, key=KEY) == manifest
    message = r"older.safetensors: written without its strategy options \(by an older siteflow\), so they cannot be checked"
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY, strategy_options={})
    result = run_cli("verify", str(path), key=KEY.decode())
    assert result.returncode == 0, result.stderr
    assert "  options         not recorded (written by an older siteflow)" in result.stdout.splitlines()
    assert "  signature       verified" in result.stdout.splitlines()


# Refusal 5: sites out of order


def chain(*task_ids: int) -> list[SiteRecord]:
    return [SiteRecord(task, f"site{task}", 10, f"2025-03-{day:02d}T12:00:00+00:00") for day, task in enumerate(task_ids, 1)]


def test_the_receiver_must_be_next_in_the_relay_order(tmp_path):
    path = tmp_path / "handover.safetensors"
    order = [1, 2, 3, 4]
    write(path, sites=chain(1, 2))
    assert read_handover(path, key=KEY, site_order=order, receiving_task_id=3)[1].sites == tuple(chain(1, 2))
    message = r"site out of order: the chain ends with task 2 \(site2\), so by the relay order \[1, 2, 3, 4\] the next site is task 3, "
    with pytest.raises(HandoverError, match=message + "not task 4"):
        read_handover(path, key=KEY, site_order=order, receiving_task_id=4)
    with pytest.raises(HandoverError, match=r"the next site is task 3, not task 1"):
        read_handover(path, key=KEY, site_order=order, receiving_task_id=1)
    write(path, sites=[])
    read_handover(path, key=KEY, site_order=order, receiving_task_id=1)
    with pytest.raises(HandoverError, match=r"the chain ends with no site yet, so .* the next site is task 1, not task 2"):
        read_handover(path, key=KEY, site_order=order, receiving_task_id=2)


def test_a_chain_out_of_the_relay_order_is_refused(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path, sites=chain(1, 3))
    message = r"handover.safetensors: site out of order: site 2 of the chain is task 3 \(site3\), the relay order \[1, 2, 3, 4\] has task 2"
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY, site_order=[1, 2, 3, 4], receiving_task_id=4)


def test_cycles_are_listed_in_the_order_and_the_chain_wraps_around(tmp_path):
    path = tmp_path / "handover.safetensors"
    two_cycles = [1, 2, 3] * 2
    write(path, sites=chain(1, 2, 3))
    read_handover(path, key=KEY, site_order=two_cycles, receiving_task_id=1)
    with pytest.raises(HandoverError, match=r"the next site is no one \(the relay is over\), not task 1"):
        read_handover(path, key=KEY, site_order=[1, 2, 3], receiving_task_id=1)
    write(path, sites=chain(1, 2, 3, 1, 2, 3, 1))
    with pytest.raises(HandoverError, match=r"the chain has 7 sites, the relay order \[1, 2, 3, 1, 2, 3\] plans 6"):
        read_handover(path, key=KEY, site_order=two_cycles, receiving_task_id=2)


def test_a_chain_whose_times_go_backwards_is_refused(tmp_path):
    write(tmp_path / "good.safetensors", key=None)
    rewrite_manifest(
        tmp_path / "good.safetensors",
        tmp_path / "bad.safetensors",
        lambda m: json.dumps({**m, "sites": m["sites"][::-1]}),
    )
    message = r"bad.safetensors: malformed manifest: sites out of order: sites\[1\] \(task 1\) finished before sites\[0\]"
    with pytest.raises(HandoverError, match=message):
        read_handover(tmp_path / "bad.safetensors")


def test_the_order_alone_checks_the_chain_and_the_receiver_needs_the_order(tmp_path):
    write(tmp_path / "h.safetensors", sites=chain(1, 2))
    read_handover(tmp_path / "h.safetensors", key=KEY, site_order=[1, 2])
    with pytest.raises(HandoverError, match=r"site 1 of the chain is task 1 \(site1\), the relay order \[2, 1\] has task 2 there"):
        read_handover(tmp_path / "h.safetensors", key=KEY, site_order=[2, 1])
    with pytest.raises(TypeError, match="receiving_task_id needs the site_order"):
        read_handover(tmp_path / "h.safetensors", key=KEY, receiving_task_id=3)


# Keys


def test_the_key_comes_from_the_key_file_else_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert load_key() is None
    monkeypatch.setenv(KEY_ENV, KEY.decode() + "\n")
    assert load_key() == KEY
    (tmp_path / "key").write_bytes(KEY + b"\n")
    monkeypatch.setenv(KEY_ENV, OTHER_KEY.decode())
    assert load_key(tmp_path / "key") == KEY  # an explicit key file wins
    assert load_key() == OTHER_KEY
    write(tmp_path / "h.safetensors", key=load_key(tmp_path / "key"))
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    read_handover(tmp_path / "h.safetensors", key=load_key())  # the same text in either place is the same key


def test_short_empty_or_unreadable_keys_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(HandoverError, match=rf"\${KEY_ENV}: the key is 0 bytes long, at least 16"):
        load_key()
    (tmp_path / "key").write_text("short\n")
    with pytest.raises(HandoverError, match=r"key: the key is 5 bytes long, at least 16 are needed .*keygen"):
        load_key(tmp_path / "key")
    with pytest.raises(HandoverError, match=r"nokey: cannot read the key file: No such file"):
        load_key(tmp_path / "nokey")


# Command line


def run_cli(*arguments: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != KEY_ENV}
    if key is not None:
        env[KEY_ENV] = key
    return subprocess.run(
        [sys.executable, "-m", "siteflow.handover", *arguments], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow
def test_cli_verify_prints_the_manifest(tmp_path):
    path = tmp_path / "handover.safetensors"
    manifest = write(path)
    (tmp_path / "key").write_bytes(KEY)
    result = run_cli("verify", str(path), "--key-file", str(tmp_path / "key"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"hand-over file {path}: OK"
    assert "  strategy        relay" in lines and "  signature       verified" in lines
    assert f"  weights         5 tensors, 509 bytes, sha256 {manifest.weights_sha256}" in lines
    assert "  sites so far    2, 65 samples" in lines
    assert "    2. task 2 site2: 25 samples, finished 2025-03-04T17:30:00+00:00" in lines

    result = run_cli("verify", str(path), "--json", key=KEY.decode())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["signature"] == "verified" and report["manifest"] == manifest.to_dict()


@pytest.mark.slow
def test_cli_verify_refuses_with_the_reason_and_exit_status_1(tmp_path):
    path = tmp_path / "handover.safetensors"
    write(path)
    flip_byte(path, path.stat().st_size - 1)
    result = run_cli("verify", str(path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"refused: {path}: the weights do not match the manifest's SHA-256 digest (corrupted or altered)\n"


@pytest.mark.slow
def test_cli_keygen_prints_a_usable_key(tmp_path):
    result = run_cli("keygen")
    assert result.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", result.stdout)
    (tmp_path / "key").write_text(result.stdout)
    write(tmp_path / "h.safetensors", key=load_key(tmp_path / "key"))
    assert run_cli("verify", str(tmp_path / "h.safetensors"), key=result.stdout.strip()).returncode == 0
    wrong = run_cli("verify", str(tmp_path / "h.safetensors"), key=OTHER_KEY.decode())
    assert wrong.returncode == 1 and "wrong signature" in wrong.stderr
