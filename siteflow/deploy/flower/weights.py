"""Weights on the wire: one ``ArrayRecord`` with one flat array per dtype and the layout.

Flower sends every array of a record as objects of its own (the array and its 5 MB chunks),
each pushed and pulled in a request of its own, and a receiver that asks for an object that is
not there yet waits 1 s, then 2 s, then 4 s (``flwr.supercore.inflatable``'s back-off) before
it asks again. The demo U-Net's 35 tensors sent as 35 arrays made ~70 objects, and a reply
with them took 6-7 s to reach the server; packed, a message holds a handful of objects.

The record holds, for every dtype among the weights, the concatenation of their flattened
values under the dtype's numpy name (``"<f4"``, ``"<i8"``, ...), and under :data:`LAYOUT`
the JSON list ``[[name, dtype, shape], ...]`` (as UTF-8 bytes in a ``uint8`` array) in the
order of the concatenation. Flower serialises each array with
``numpy.save(allow_pickle=False)`` and the layout is JSON: nothing is pickled. Numpy only at
import: the ClientApp's process packs a secure round's weights without importing torch.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

if TYPE_CHECKING:
    import torch

LAYOUT = "layout"
"""Key of the packed record's layout array."""


class WeightsFormatError(ValueError):
    """A packed record that does not hold what its layout says (a site's or a server's bug,
    or a message not from siteflow)."""


def pack(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """``arrays`` (name -> array of any shape) as one flat array per dtype and the layout."""
    layout = []
    flat: dict[str, list[np.ndarray]] = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        array = array.astype(array.dtype.newbyteorder("="), copy=False)  # concatenation gives native order
        layout.append([name, array.dtype.str, list(array.shape)])
        flat.setdefault(array.dtype.str, []).append(array.reshape(-1))
    record = ArrayRecord({dtype: Array(np.concatenate(parts)) for dtype, parts in flat.items()})
    record[LAYOUT] = Array(np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8))
    return record


def unpack(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The name -> array mapping that :func:`pack` packed into ``record``, in its order.

    Raises:
        WeightsFormatError: no layout, a layout that is not ``[[name, dtype, shape], ...]``
            or names a weight twice or gives a shape numpy cannot make, arrays that cannot be
            read, or flat arrays that hold more or fewer values than the layout lists.
    """
    if LAYOUT not in record:
        raise WeightsFormatError(f"weights without their {LAYOUT!r} (keys: {sorted(record)}): not a packed siteflow record")
    try:
        layout = json.loads(_array(record, LAYOUT).tobytes().decode())
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deep, a number too long
        raise WeightsFormatError(f"the weights' layout is not JSON: {error}") from None
    if not isinstance(layout, list):
        raise WeightsFormatError(f"the weights' layout is not a list of [name, dtype, shape]: {layout!r}")
    flat = {dtype: _array(record, dtype).reshape(-1) for dtype in record if dtype != LAYOUT}
    if wrong := {dtype: array.dtype.str for dtype, array in flat.items() if array.dtype.str != dtype}:
        raise WeightsFormatError(f"flat arrays under another dtype's key (key: dtype): {wrong}")
    taken = dict.fromkeys(flat, 0)
    arrays: dict[str, np.ndarray] = {}
    for entry in layout:
        name, dtype, shape = _entry(entry)
        if name in arrays:
            raise WeightsFormatError(f"weight {name!r} is twice in the layout")
        if dtype not in flat:
            raise WeightsFormatError(f"weight {name!r}: no flat array of dtype {dtype!r} (there are {sorted(flat)})")
        start, size = taken[dtype], math.prod(shape)
        if start + size > flat[dtype].size:
            raise WeightsFormatError(f"weight {name!r}: the {dtype!r} array ends at {flat[dtype].size} values, before {start + size}")
        try:
            arrays[name] = flat[dtype][start:start + size].reshape(shape)
        except ValueError as error:  # a shape numpy cannot make (more than 64 axes, too large an axis)
            raise WeightsFormatError(f"weight {name!r}: shape {list(shape)}: {error}") from None
        taken[dtype] = start + size
    if unused := {dtype: array.size - taken[dtype] for dtype, array in flat.items() if taken[dtype] != array.size}:
        raise WeightsFormatError(f"the layout leaves values of the flat arrays unused: {unused}")
    return arrays


def _array(record: ArrayRecord, key: str) -> np.ndarray:
    """The numpy array of ``record[key]``; WeightsFormatError if its bytes are not an array
    (Flower reads them with ``numpy.load(allow_pickle=False)``)."""
    try:
        return record[key].numpy()
    except (ValueError, EOFError, OSError) as error:
        raise WeightsFormatError(f"the weights' {key!r} array cannot be read: {error!r}") from None


def _entry(entry: object) -> tuple[str, str, tuple[int, ...]]:
    """A layout entry ``[name, dtype, shape]``, checked."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[1], str)
            and isinstance(entry[2], list) and all(type(n) is int and n >= 0 for n in entry[2])):
        raise WeightsFormatError(f"a layout entry is not [name, dtype, shape]: {entry!r}")
    return entry[0], entry[1], tuple(entry[2])


def to_arrays(weights: Mapping[str, "torch.Tensor"]) -> ArrayRecord:
    """Name-keyed tensors packed (copied to the CPU)."""
    return pack({name: tensor.detach().cpu().numpy() for name, tensor in weights.items()})


def from_arrays(record: ArrayRecord) -> dict[str, "torch.Tensor"]:
    """The name-keyed tensors of a packed record (each its own copy)."""
    import torch  # only where tensors are wanted: the ClientApp's process may not import torch

    return {name: torch.from_numpy(array.copy()) for name, array in unpack(record).items()}
