"""Atomic writes and the checkpoint reader that never unpickles code."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch

from siteflow.core.atomic import FILE_MODE, OutputError, atomic_path, load_weights, save_weights, write_json, write_text
from siteflow.engine.checkpoint_io import AtomicCheckpointIO


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"round": 1})
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(path) as tmp:
            tmp.write_text('{"round": 2, "trunc')
            raise RuntimeError("crash while writing")
    assert path.read_text() == '{\n  "round": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_temporary_names_keep_the_suffix_and_live_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "sub" / "image.nii.gz") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "sub" / "image.nii.gz").read_bytes() == b"x"


def test_weights_round_trip_through_safetensors(tmp_path):
    state = {"conv.weight": torch.randn(4, 3, 3, 3).transpose(0, 1), "bn.num_batches_tracked": torch.tensor(7)}
    save_weights(tmp_path / "w.safetensors", state)
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["conv.weight"], state["conv.weight"])
    assert loaded["bn.num_batches_tracked"].item() == 7


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_io_round_trips_and_refuses_pickled_code(tmp_path, capsys):
    io = AtomicCheckpointIO()
    checkpoint = {"state_dict": collections.OrderedDict(w=torch.ones(2)), "epoch": 3, "name": "x"}
    io.save_checkpoint(checkpoint, tmp_path / "last.ckpt")
    loaded = io.load_checkpoint(tmp_path / "last.ckpt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))

    with open(tmp_path / "evil.ckpt", "wb") as handle:
        torch.save({"state_dict": {}, "payload": _Payload()}, handle)
    with pytest.raises(pickle.UnpicklingError):
        io.load_checkpoint(tmp_path / "evil.ckpt")
    assert "this must never run" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="never unpickles"):
        io.load_checkpoint(tmp_path / "last.ckpt", weights_only=False)


def test_write_text_replaces_whole_content(tmp_path):
    write_text(tmp_path / "a.txt", "long old content")
    write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"


def test_output_files_get_the_users_normal_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = tmp_path / "summary.json"
        write_json(path, {"ok": True})
        assert path.stat().st_mode & 0o777 == FILE_MODE == 0o666 & ~mask
    finally:
        os.umask(mask)


def test_a_full_disk_is_one_error_naming_the_file_and_loses_nothing(tmp_path):
    import errno

    path = tmp_path / "results.json"
    write_json(path, {"round": 1})
    with pytest.raises(OutputError, match=rf"cannot write {path}: No space left on device"):
        with atomic_path(path) as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_text() == '{\n  "round": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(OutputError, match=rf"cannot write {blocked / 'x.json'}"):
        write_json(blocked / "x.json", {})


def test_weights_on_a_full_disk_are_one_error_naming_the_file(tmp_path):
    """A real failed write (the file-size limit makes the kernel refuse it, as a full disk
    would), through safetensors' serialisation: the error names the file, the old file stays."""
    import resource
    import signal

    path = tmp_path / "final.safetensors"
    save_weights(path, {"w": torch.zeros(4)})
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(OutputError) as raised:
            save_weights(path, {"w": torch.zeros(4096)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(raised.value) == f"cannot write {path}: File too large"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.safetensors"]
