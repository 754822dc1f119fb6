"""Hostile hand-over files: one test per hole an adversarial probe found, on files crafted byte
by byte (the safetensors header written by hand), each refused with one HandoverError that
names the file and the reason, never a traceback or a hang."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from siteflow.core.io import weights_sha256
from siteflow.core.types import SiteRecord
from siteflow.handover import (
    KEY_ENV,
    HandoverError,
    read_handover,
    read_manifest,
    write_handover,
)

KEY = b"consortium-key-0123456789abcdef"
MODEL_KWARGS = {"in_channels": 3, "num_classes": 3}
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int64: "I64",
    torch.bool: "BOOL",
}


def make_weights() -> dict[str, torch.Tensor]:
    """A small state of several dtypes, as a receiving site's model has it."""
    generator = torch.Generator().manual_seed(0)
    return {
        "solver.conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "solver.conv.bias": torch.randn(4, generator=generator),
        "solver.bn.num_batches_tracked": torch.tensor(7),
        "generator.embed": torch.randn(3, 8, generator=generator).to(torch.bfloat16),
        "generator.mask": torch.rand(5, generator=generator) > 0.5,
    }


def sites(*records: tuple[int, str, Any, str]) -> list[dict[str, Any]]:
    """The manifest's ``sites`` list from (task_id, task_name, num_samples, finished_at)."""
    names = ("task_id", "task_name", "num_samples", "finished_at")
    return [dict(zip(names, record)) for record in records]


TWO_SITES = sites((1, "site1", 40, "2025-03-01T09:00:00+00:00"), (2, "site2", 25, "2025-03-04T17:30:00+00:00"))


def manifest_of(weights: dict[str, torch.Tensor], key: bytes | None = None, **fields: Any) -> dict[str, Any]:
    """A manifest for ``weights`` (their true digest), ``fields`` replaced; signed with ``key``."""
    manifest = {
        "format_version": 1,
        "strategy": "relay",
        "strategy_options": {},
        "model": {"name": "unet", "kwargs": MODEL_KWARGS},
        "sites": TWO_SITES,
        "weights_sha256": weights_sha256(weights),
        "extra": {},
        "signature": None,
        **fields,
    }
    if key is not None:
        unsigned = {name: value for name, value in manifest.items() if name != "signature"}
        canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
        manifest["signature"] = hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()
    return manifest


def write_raw(path: Path, header: bytes, data: bytes = b"") -> Path:
    """A file as safetensors lays it out: the header's length (8 bytes, little-endian), the header, the data."""
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def craft(path: Path, weights: dict[str, torch.Tensor], manifest: dict[str, Any] | str) -> Path:
    """A hand-over file written by hand: ``weights`` and ``manifest`` (a dict, or its JSON text as is)."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    header: dict[str, Any] = {"__metadata__": {"siteflow.handover": text}}
    data = b""
    for name, tensor in weights.items():
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        entry = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape)}
        header[name] = {**entry, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return write_raw(path, json.dumps(header).encode("utf-8"), data)


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    """``python -m siteflow.handover ARGUMENTS``, with no key in the environment; a hang fails the test."""
    env = {name: value for name, value in os.environ.items() if name != KEY_ENV}
    return subprocess.run(
        [sys.executable, "-m", "siteflow.handover", *arguments], capture_output=True, text=True, env=env, timeout=60
    )


def utc(time: datetime) -> str:
    """``time`` as the manifest writes it."""
    return time.astimezone(timezone.utc).isoformat(timespec="seconds")


# Hole 1: weights that are not finite


@pytest.mark.slow
def test_weights_with_nan_or_inf_are_refused_naming_the_first_such_tensor(tmp_path):
    weights = make_weights()
    weights["solver.conv.weight"][0, 1, 2, 2] = float("nan")
    weights["solver.conv.weight"][3, 0, 0, 0] = float("-inf")
    path = craft(tmp_path / "nan.safetensors", weights, manifest_of(weights, KEY))
    message = r"nan.safetensors: the weights hold values that are not finite \(NaN or infinity\): 'solver.conv.weight' holds 2 of 108"
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY)
    weights["generator.embed"][1, 1] = float("inf")  # bfloat16, and first by name
    path = craft(tmp_path / "inf.safetensors", weights, manifest_of(weights, KEY))
    with pytest.raises(HandoverError, match=r"inf.safetensors: .*not finite .*: 'generator.embed' holds 1 of 24 \(the first"):
        read_handover(path, key=KEY)
    others = {
        "half": torch.tensor([1.0, float("inf")], dtype=torch.float16),
        "double": torch.tensor([float("nan")], dtype=torch.float64),
        "fp8": torch.tensor([0x7F], dtype=torch.uint8).view(torch.float8_e4m3fn),  # its NaN
    }
    for name, tensor in others.items():
        path = craft(tmp_path / f"{name}.safetensors", {name: tensor}, manifest_of({name: tensor}))
        with pytest.raises(HandoverError, match=rf"{name}.safetensors: .*not finite.*: '{name}' holds 1 of"):
            read_handover(path)
    result = run_cli("verify", str(tmp_path / "nan.safetensors"))
    assert result.returncode == 1 and result.stdout == "" and "'solver.conv.weight' holds 2 of 108" in result.stderr
    finite = make_weights()
    read_handover(craft(tmp_path / "finite.safetensors", finite, manifest_of(finite, KEY)), key=KEY)


# Hole 2: other dtypes than the receiving network's


def test_weights_of_other_dtypes_are_refused_naming_the_tensor_and_both_dtypes(tmp_path):
    model = make_weights()
    shapes = {name: tensor.shape for name, tensor in model.items()}
    dtypes = {name: tensor.dtype for name, tensor in model.items()}
    weights = {**model, "solver.conv.weight": model["solver.conv.weight"].half(), "solver.conv.bias": model["solver.conv.bias"].double()}
    path = craft(tmp_path / "half.safetensors", weights, manifest_of(weights, KEY))
    read_handover(path, key=KEY, expected_shapes=shapes)  # shapes only, as before: the shapes fit
    message = (
        r"half.safetensors: the weights do not fit this site's model: 'solver.conv.bias' has dtype float64, "
        r"this site's model float32; 'solver.conv.weight' has dtype float16, this site's model float32$"
    )
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY, expected_shapes=shapes, expected_dtypes=dtypes)
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY, expected_dtypes=dtypes)
    fewer = {name: dtype for name, dtype in dtypes.items() if name != "generator.mask"}
    with pytest.raises(HandoverError, match=r"do not fit this site's model: unexpected 'generator.mask'; 'solver.conv.bias' has dtype"):
        read_handover(path, key=KEY, expected_dtypes=fewer)
    same = craft(tmp_path / "same.safetensors", model, manifest_of(model, KEY))
    weights, _ = read_handover(same, key=KEY, expected_shapes=shapes, expected_dtypes=dtypes)
    assert {name: tensor.dtype for name, tensor in weights.items()} == dtypes


# Hole 3: absurd sample counts


@pytest.mark.parametrize(
    "count, reason",
    [
        (-5, "a site trains on at least 1 sample"),
        (0, "a site trains on at least 1 sample"),
        (2.5, "not an integer"),
        (25.0, "not an integer"),
        ("25", "not an integer"),
        (10**9 + 1, r"more than 1,000,000,000 samples at one site is not plausible"),
        (10**30, r"more than 1,000,000,000 samples at one site is not plausible"),
    ],
    ids=["negative", "zero", "fraction", "float", "string", "just-too-many", "absurd"],
)
def test_absurd_sample_counts_are_refused_naming_the_site(tmp_path, count, reason):
    weights = make_weights()
    chain = sites((1, "site1", 40, "2025-03-01T09:00:00+00:00"), (2, "site2", count, "2025-03-04T17:30:00+00:00"))
    path = craft(tmp_path / "count.safetensors", weights, manifest_of(weights, sites=chain))
    message = rf"count.safetensors: malformed manifest: sites\[1\]\.num_samples is {re.escape(repr(count))} for task 2 \('site2'\): {reason}$"
    with pytest.raises(HandoverError, match=message):
        read_handover(path)
    with pytest.raises(HandoverError, match="num_samples"):
        read_manifest(path)


def test_sample_counts_up_to_the_bound_are_read_and_a_writer_refuses_what_a_reader_would(tmp_path):
    weights = make_weights()
    chain = sites((1, "site1", 10**9, "2025-03-01T09:00:00+00:00"), (2, "site2", 1, "2025-03-04T17:30:00+00:00"))
    _, manifest = read_handover(craft(tmp_path / "bound.safetensors", weights, manifest_of(weights, sites=chain)))
    assert [site.num_samples for site in manifest.sites] == [10**9, 1]
    with pytest.raises(HandoverError, match=r"sites\[0\]\.num_samples is 0 for task 3 \('site3'\): a site trains on at least 1"):
        write_handover(
            tmp_path / "zero.safetensors", weights, strategy="relay", model_name="unet", model_kwargs=MODEL_KWARGS,
            sites=[SiteRecord.finished_now(3, "site3", 0)],
        )
    assert not (tmp_path / "zero.safetensors").exists()


# Hole 4: deeply nested JSON


def test_deeply_nested_json_is_refused_not_a_recursion_error(tmp_path):
    weights = make_weights()
    deep = json.dumps(manifest_of(weights)).replace('"extra": {}', '"extra": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(HandoverError, match=r"deep.safetensors: malformed manifest JSON \(nested deeper than 32 levels"):
        read_handover(craft(tmp_path / "deep.safetensors", weights, deep))
    unclosed = json.dumps(manifest_of(weights)).replace('"extra": {}', '"extra": ' + "{" * 100_000)
    with pytest.raises(HandoverError, match=r"unclosed.safetensors: malformed manifest JSON \(nested deeper than 32 levels"):
        read_manifest(craft(tmp_path / "unclosed.safetensors", weights, unclosed))
    header = b'{"__metadata__": {"siteflow.handover": "{}"}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(HandoverError, match=r"header.safetensors: not a safetensors hand-over file: malformed header \(nested deeper than 32"):
        read_handover(write_raw(tmp_path / "header.safetensors", header))

    def nested(levels: int) -> Any:
        return [] if levels == 1 else [nested(levels - 1)]

    # the manifest is level 1, extra level 2, its lists levels 3 to 2 + n; brackets in strings do not count
    for levels, refused in ((30, False), (31, True)):
        limit = manifest_of(weights, extra={"x": nested(levels), "text": "[{" * 1000})
        path = craft(tmp_path / f"levels{levels}.safetensors", weights, limit)
        if refused:
            with pytest.raises(HandoverError, match=r"nested deeper than 32 levels of arrays and objects\)$"):
                read_handover(path)
        else:
            assert read_handover(path)[1].extra["text"] == "[{" * 1000


def test_a_number_beyond_the_range_of_a_float_is_refused_not_read_as_infinity(tmp_path):
    weights = make_weights()
    text = json.dumps(manifest_of(weights, KEY)).replace('"extra": {}', '"extra": {"merge_weight": 1e999}')
    with pytest.raises(HandoverError, match=r"huge.safetensors: malformed manifest JSON \(1e999 is out of the range of a float\)"):
        read_handover(craft(tmp_path / "huge.safetensors", weights, text), key=KEY)


# Hole 5: devices, FIFOs, directories; an absurd header length


@pytest.mark.slow
def test_devices_fifos_and_directories_are_refused_by_the_cli_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    refusals = {
        "/dev/zero": "not a regular file but a character device",
        str(fifo): r"not a regular file but a FIFO (named pipe)",
        str(tmp_path): "not a regular file but a directory",
    }
    for path, reason in refusals.items():
        result = run_cli("verify", path)
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert result.stderr == f"refused: {path}: {reason}: only a regular file is read\n"
    (tmp_path / "key").symlink_to("/dev/zero")
    for key_file in ("/dev/zero", str(fifo), str(tmp_path / "key")):
        result = run_cli("verify", "/dev/null", "--key-file", key_file)
        assert result.returncode == 1 and result.stderr.startswith(f"refused: {key_file}: not a regular file but a "), result.stderr
    (tmp_path / "long-key").write_bytes(b"k" * 5000)
    result = run_cli("verify", "/dev/null", "--key-file", str(tmp_path / "long-key"))
    assert result.returncode == 1 and "the key file is 5,000 bytes long, a key file holds at most 4,096" in result.stderr


@pytest.mark.slow
def test_the_readers_open_only_regular_files_and_refuse_an_absurd_header_length(tmp_path):
    (tmp_path / "null.safetensors").symlink_to("/dev/null")  # /dev/zero: only in a subprocess, above
    for read in (read_handover, read_manifest):
        with pytest.raises(HandoverError, match=r"null.safetensors: not a regular file but a character device"):
            read(tmp_path / "null.safetensors")
        with pytest.raises(HandoverError, match=rf"{tmp_path.name}: not a regular file but a directory: only a regular file"):
            read(tmp_path)
    absurd = tmp_path / "absurd.safetensors"
    absurd.write_bytes(struct.pack("<Q", 2**40) + b"{" * 64)
    reason = "not a safetensors hand-over file: its header length is 1,099,511,627,776 bytes, over the limit of 16,777,216"
    for read in (read_handover, read_manifest):
        with pytest.raises(HandoverError, match=f"absurd.safetensors: {reason}$"):
            read(absurd)
    result = run_cli("verify", str(absurd))
    assert result.returncode == 1 and result.stderr == f"refused: {absurd}: {reason}\n"


# Hole 6: finishing times ahead of the clock


@pytest.mark.slow
def test_times_ahead_of_the_clock_are_refused_on_reading_and_never_block_a_write(tmp_path):
    weights = make_weights()
    now = datetime.now(timezone.utc)
    ahead = sites((1, "site1", 40, "2025-03-01T09:00:00+00:00"), (2, "site2", 25, utc(now + timedelta(days=2))))
    path = craft(tmp_path / "ahead.safetensors", weights, manifest_of(weights, KEY, sites=ahead))
    message = (
        r"ahead.safetensors: sites\[1\] \(task 2, 'site2'\) finished at \S+, more than 24 hours ahead of this site's "
        r"clock \(\S+\): the sites' clocks differ too much \(set them right and write the file again\)$"
    )
    for read in (read_handover, read_manifest):
        with pytest.raises(HandoverError, match=message):
            read(path, key=KEY)
    result = run_cli("verify", str(path))
    assert result.returncode == 1 and "more than 24 hours ahead of this site's clock" in result.stderr

    # a clock 12 hours ahead is skew: the file is read, and the receiver's hand-over is written
    received_at = utc(now + timedelta(hours=12))
    skewed = sites((1, "site1", 40, "2025-03-01T09:00:00+00:00"), (2, "site2", 25, received_at))
    path = craft(tmp_path / "skewed.safetensors", weights, manifest_of(weights, KEY, sites=skewed))
    received, manifest = read_handover(path, key=KEY, site_order=[1, 2, 3, 1], receiving_task_id=3)
    chain = [*manifest.sites, SiteRecord.finished_now(3, "site3", 10)]
    assert chain[-1].finished_at < received_at
    written = write_handover(
        tmp_path / "next.safetensors", received, strategy="relay", model_name="unet", model_kwargs=MODEL_KWARGS,
        sites=chain, key=KEY,
    )
    assert written.sites[-1] == SiteRecord(3, "site3", 10, received_at)  # max(its clock, the last received time)
    assert read_handover(tmp_path / "next.safetensors", key=KEY, site_order=[1, 2, 3, 1], receiving_task_id=1)[1] == written

    # a received time still ahead of the clock lifts a record further behind than a day too
    late = [SiteRecord(2, "site2", 25, received_at), SiteRecord(3, "site3", 10, utc(now - timedelta(days=2)))]
    assert write_handover(
        tmp_path / "late.safetensors", received, strategy="relay", model_name="unet", model_kwargs=MODEL_KWARGS, sites=late
    ).sites[-1].finished_at == received_at


# Hole 7: control characters in names


@pytest.mark.parametrize(
    "fields, where, code",
    [
        ({"sites": sites((1, "site1\n    2. task 9 forged: 1 samples, finished now", 40, "2025-03-01T09:00:00+00:00"))},
         r"sites\[0\]\.task_name 'site1\\n    2\. task 9 forged: 1 samples, finished now'", "000A"),
        ({"sites": sites((1, "site1\u2028forged", 40, "2025-03-01T09:00:00+00:00"))}, r"sites\[0\]\.task_name 'site1\\u2028forged'", "2028"),
        ({"sites": sites((1, "site1", 40, "2025-03-01\n09:00:00+00:00"))}, r"sites\[0\]\.finished_at '2025-03-01\\n09:00:00\+00:00'", "000A"),
        ({"strategy": "relay\x1b[2J"}, r"strategy 'relay\\x1b\[2J'", "001B"),
        ({"model": {"name": "unet\u202edetsurt", "kwargs": MODEL_KWARGS}}, r"model\.name 'unet\\u202edetsurt'", "202E"),
    ],
    ids=["newline-in-task-name", "line-separator", "newline-in-time", "escape-in-strategy", "bidi-override-in-model"],
)
@pytest.mark.slow
def test_control_characters_in_names_are_refused_and_verify_prints_one_line(tmp_path, fields, where, code):
    weights = make_weights()
    path = craft(tmp_path / "forged.safetensors", weights, manifest_of(weights, KEY, **fields))
    message = rf"forged.safetensors: malformed manifest: {where} holds a control character \(U\+{code}\)$"
    with pytest.raises(HandoverError, match=message):
        read_handover(path, key=KEY)
    result = run_cli("verify", str(path))
    assert result.returncode == 1 and result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_verify_escapes_what_it_prints_and_writers_refuse_control_characters_too(tmp_path):
    weights = make_weights()
    chain = sites((1, "Hôpital-Lyon", 40, "2025-03-01T09:00:00+00:00"))
    path = craft(tmp_path / "evil\nname\x1b[31m.safetensors", weights, manifest_of(weights, sites=chain))
    result = run_cli("verify", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"hand-over file {tmp_path}/evil\\nname\\x1b[31m.safetensors: OK"
    assert "    1. task 1 Hôpital-Lyon: 40 samples, finished 2025-03-01T09:00:00+00:00" in lines
    assert len(lines) == 9
    with pytest.raises(HandoverError, match=r"malformed manifest: sites\[0\]\.task_name 'site1\\rsite2' holds a control character"):
        write_handover(
            tmp_path / "w.safetensors", weights, strategy="relay", model_name="unet", model_kwargs=MODEL_KWARGS,
            sites=[SiteRecord.finished_now(1, "site1\rsite2", 10)],
        )
