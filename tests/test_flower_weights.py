"""Weights on the wire (siteflow.deploy.flower.weights): packed into one flat array per dtype
and a JSON layout, read back exactly through Flower's own serialisation, and a record that
does not hold what its layout says is refused with what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from siteflow.deploy.flower.weights import LAYOUT, WeightsFormatError, from_arrays, pack, to_arrays, unpack
from siteflow.models.unet import UNet


def _over_the_wire(record: ArrayRecord) -> ArrayRecord:
    """``record`` serialised as Flower sends it and read back."""
    return recorddict_from_proto(recorddict_to_proto(RecordDict({"arrays": record}))).array_records["arrays"]


def test_tensors_of_every_dtype_and_shape_come_back_in_order():
    weights = {
        "conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
        "bn.num_batches_tracked": torch.tensor(7),
        "bn.running_mean": torch.tensor([0.5, -1.5]),
        "mask": torch.tensor([True, False, True]),
        "half": torch.tensor([[1.0, 2.0]], dtype=torch.float16),
        "empty": torch.zeros(0, 4),
    }
    record = to_arrays(weights)
    # one flat array per dtype: float32 holds 24 + 2 + 0 values in the order of the weights
    assert sorted(record) == sorted(["<f4", "<i8", "|b1", "<f2", LAYOUT])
    assert record["<f4"].numpy().tolist() == list(range(24)) + [0.5, -1.5]
    back = from_arrays(_over_the_wire(record))
    assert list(back) == list(weights)
    for name, tensor in weights.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(back[name], tensor), name


def test_a_model_travels_as_a_handful_of_arrays():
    weights = UNet(3, 2, base_channels=4, depth=4).state_dict()
    record = to_arrays(weights)
    assert len(weights) > 20 and len(record) == 3  # float32, int64 (the batch counters), the layout
    back = from_arrays(record)
    assert all(torch.equal(back[name], tensor) for name, tensor in weights.items())


def test_the_tensors_read_back_own_their_memory():
    back = from_arrays(to_arrays({"a": torch.zeros(2), "b": torch.zeros(3)}))
    assert [tensor.untyped_storage().nbytes() for tensor in back.values()] == [8, 12]  # not views of one flat array


def test_big_endian_arrays_come_back_in_native_order():
    back = unpack(_over_the_wire(pack({"w": np.arange(3, dtype=">f4"), "n": np.array(5, dtype=">i8")})))
    assert back["w"].dtype == np.dtype("=f4") and back["w"].tolist() == [0.0, 1.0, 2.0] and int(back["n"]) == 5


def test_no_weights_pack_to_a_layout_alone():
    record = pack({})
    assert list(record) == [LAYOUT] and unpack(_over_the_wire(record)) == {}


def _unreadable(key: str) -> ArrayRecord:
    """A packed record whose ``key`` array holds bytes that are not a numpy array."""
    record = pack({"w": np.zeros(2, np.float32)})
    good = record[key]
    record[key] = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=b"")
    return record


def _record(layout: object, **flat: np.ndarray) -> ArrayRecord:
    text = layout if isinstance(layout, str) else json.dumps(layout)
    return ArrayRecord({**{key.replace("_", "<"): Array(array) for key, array in flat.items()},
                        LAYOUT: Array(np.frombuffer(text.encode(), dtype=np.uint8))})


F4 = np.zeros(6, np.float32)


@pytest.mark.parametrize(
    "record, message",
    [
        (ArrayRecord({"w": Array(F4)}), "weights without their 'layout' (keys: ['w'])"),
        (_record("[[", _f4=F4), "the weights' layout is not JSON"),
        (_record({"w": [6]}, _f4=F4), "the weights' layout is not a list of [name, dtype, shape]"),
        (_record([["w", "<f4"]], _f4=F4), "a layout entry is not [name, dtype, shape]: ['w', '<f4']"),
        (_record([["w", "<f4", [-1]]], _f4=F4), "a layout entry is not [name, dtype, shape]"),
        (_record([["w", "<f8", [6]]], _f4=F4), "weight 'w': no flat array of dtype '<f8' (there are ['<f4'])"),
        (_record([["w", "<f4", [2, 2]], ["v", "<f4", [3]]], _f4=F4), "weight 'v': the '<f4' array ends at 6 values, before 7"),
        (_record([["w", "<f4", [5]]], _f4=F4), "the layout leaves values of the flat arrays unused: {'<f4': 1}"),
        (_record([["w", "<f4", [3]], ["w", "<f4", [3]]], _f4=F4), "weight 'w' is twice in the layout"),
        (_record([["w", "<f4", [6]]], _f4=np.zeros(6, np.float64)), "flat arrays under another dtype's key (key: dtype): {'<f4': '<f8'}"),
        (_record("[" * 100_000, _f4=F4), "the weights' layout is not JSON"),
        (_record([["w", "<f4", [1] * 65 + [6]]], _f4=F4), "weight 'w': shape [1, 1,"),
        (_record([["w", "<f4", [0, 2**70]], ["v", "<f4", [6]]], _f4=F4), "weight 'w': shape [0, 1180591620717411303424]"),
        (_unreadable(LAYOUT), "the weights' 'layout' array cannot be read"),
        (_unreadable("<f4"), "the weights' '<f4' array cannot be read"),
    ],
    ids=["no-layout", "not-json", "not-a-list", "short-entry", "negative-size", "no-such-dtype", "too-few-values",
         "values-left", "twice", "wrong-dtype", "nested-too-deep", "65-axes", "huge-empty-axis", "unreadable-layout", "unreadable-values"],
)
def test_a_record_that_does_not_match_its_layout_is_refused(record, message):
    with pytest.raises(WeightsFormatError) as raised:
        unpack(record)
    assert message in str(raised.value)
