"""GEO-Bench's released on-disk format (classification tasks such as m-eurosat and m-bigearthnet), read without
unpickling anything.

A task folder holds one HDF5 file per sample (``<name>.hdf5``: one dataset per band, named like ``"02 - Blue"`` or
``"08A - Vegetation Red Edge"``), ``default_partition.json`` (``{"train": [...], "valid": [...], "test": [...]}``
sample names) and ``task_specs.pkl``, which is never opened here. A classification sample's label lives in the HDF5
file's ``pickle`` attribute (the repr of a pickled dict: ``"label"`` is an int for single-label tasks and a 0/1
numpy vector for multi-label ones). That pickle is read by walking its opcodes (``pickletools.genops``): no class
is imported, no callable is run, and only plain values, numpy arrays and numpy scalars of numeric dtypes are
accepted as labels.

Bands are matched to the model's bands by name (``"08A - ..."`` -> B8A). GEO-Bench 1.0's m-eurosat stores the 13
EuroSAT bands under names in ESA order although the data is in the EuroSAT file order (B8A last; GEO-Bench issue
#28): for a folder named ``m-eurosat`` the names are corrected unless ``band_names="stored"``.
"""

from __future__ import annotations

import ast
import json
import pickletools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectral_llava.processing.sentinel2_io import EUROSAT_FILE_ORDER, canonical_band_name
from spectral_llava.inference.labels import BEN19_LABELS, BEN43_LABELS, EUROSAT_CLASSES

PARTITION_FILE = "default_partition.json"
SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # GEO-Bench split -> this project's name
# GEO-Bench's Sentinel-2 band names in ESA order, as its converters name the 13 channels
STORED_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
# m-eurosat: the channel stored under the name of STORED_ORDER[i] holds EuroSAT file band EUROSAT_FILE_ORDER[i]
M_EUROSAT_FIX = dict(zip(STORED_ORDER, EUROSAT_FILE_ORDER))
CLASS_NAMES = {"m-eurosat": list(EUROSAT_CLASSES), "m-bigearthnet": list(BEN43_LABELS)}
_BAND_RE = re.compile(r"^\s*(\d{1,2}A?)\s*-")


@dataclass
class GeoBenchSample:
    name: str
    split: str  # train | validation | test
    path: str


def band_of(dataset_name: str) -> str | None:
    """The Sentinel-2 band of a GEO-Bench band dataset name ("08A - Vegetation Red Edge" -> "B8A"), None for
    anything else (labels, masks, other sensors)."""
    match = _BAND_RE.match(dataset_name)
    if match is None:
        return None
    try:
        return canonical_band_name("B" + match.group(1))
    except ValueError:
        return None


def list_samples(root) -> list[GeoBenchSample]:
    """The samples of ``ROOT/default_partition.json``, train then validation then test, each checked to exist."""
    root = Path(root)
    partition_path = root / PARTITION_FILE
    if not partition_path.is_file():
        raise FileNotFoundError(f"--geobench {root}: no {PARTITION_FILE}; expected a GEO-Bench task folder "
                                "(e.g. classification_v1.0/m-eurosat)")
    try:
        partition = json.loads(partition_path.read_text())
    except ValueError as error:
        raise ValueError(f"{partition_path}: not valid JSON: {error}") from error
    unknown = sorted(set(partition) - set(SPLITS))
    if not isinstance(partition, dict) or unknown:
        raise ValueError(f"{partition_path}: expected the keys {sorted(SPLITS)}, got {sorted(partition)}")
    samples = []
    for key, split in SPLITS.items():
        for name in partition.get(key, []):
            path = root / f"{name}.hdf5"
            if not path.is_file():
                raise FileNotFoundError(f"{partition_path} names the sample {name!r} but {path} does not exist")
            samples.append(GeoBenchSample(str(name), split, str(path)))
    if not samples:
        raise ValueError(f"{partition_path}: lists no samples")
    return samples


def class_names_of(root, num_classes: int) -> list[str]:
    """The class names of a task: EuroSAT's 10 for m-eurosat, BigEarthNet's 43 (19) for m-bigearthnet, else
    ``class_<i>`` (the names GEO-Bench keeps in task_specs.pkl are not read)."""
    name = Path(root).resolve().name
    known = CLASS_NAMES.get(name)
    if name == "m-bigearthnet" and num_classes == len(BEN19_LABELS):
        known = list(BEN19_LABELS)
    if known is not None and len(known) != num_classes:
        raise ValueError(f"--geobench {root}: {name} labels have {num_classes} classes, expected {len(known)}")
    return known or [f"class_{i}" for i in range(num_classes)]


def read_bands(path, band_names, fix_m_eurosat: bool = False) -> np.ndarray:
    """The bands `band_names` of one sample file as (C, H, W) float32, found by their GEO-Bench names; a missing band
    is an error naming it. `fix_m_eurosat`: read the names as m-eurosat's mislabelled ones (see the module doc)."""
    import h5py

    with h5py.File(path, "r") as file:
        found = {}
        for dataset_name, dataset in file.items():
            band = band_of(dataset_name)
            if band is not None and isinstance(dataset, h5py.Dataset):
                found[M_EUROSAT_FIX[band] if fix_m_eurosat else band] = dataset_name
        missing = [band for band in band_names if band not in found]
        if missing:
            raise ValueError(f"{path}: no GEO-Bench band dataset for the model's band(s) {missing}; the file holds "
                             f"{sorted(file.keys())}")
        return np.stack([np.asarray(file[found[band]], dtype=np.float32) for band in band_names])


def read_label(path) -> int | np.ndarray:
    """The classification label of one sample file: a class index, or a 0/1 vector for multi-label tasks."""
    import h5py

    with h5py.File(path, "r") as file:
        if "pickle" not in file.attrs:
            raise ValueError(f"{path}: no 'pickle' attribute, so no classification label")
        return pickled_label(file.attrs["pickle"], path)


def pickled_label(attribute, path) -> int | np.ndarray:
    """The ``"label"`` entry of a GEO-Bench sample's pickled attribute dict, read from its opcodes."""
    text = attribute.decode() if isinstance(attribute, bytes) else str(attribute)
    try:
        data = ast.literal_eval(text)  # the attribute is the repr of the pickled bytes
        values = _InertPickle(data).load()
    except (ValueError, SyntaxError, TypeError, KeyError, IndexError) as error:
        raise ValueError(f"{path}: unreadable GEO-Bench sample attributes: {error}") from error
    if not isinstance(values, dict) or "label" not in values:
        raise ValueError(f"{path}: the sample attributes hold no 'label'")
    return _label_value(values["label"], path)


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass
class _Call:
    """A callable applied to arguments in the pickle, never run; `state` is what BUILD gave it."""

    func: object
    args: tuple
    state: object = None


_MARK = object()


class _InertPickle:
    """A pickle stack machine that builds plain containers and records every global and call as inert data."""

    def __init__(self, data: bytes):
        if not isinstance(data, bytes):
            raise ValueError("the attribute is not a bytes literal")
        self.data, self.stack, self.memo = data, [], {}

    def _pop_mark(self) -> list:
        index = len(self.stack) - 1 - self.stack[::-1].index(_MARK)
        items = self.stack[index + 1:]
        del self.stack[index:]
        return items

    def _pop(self, count: int) -> list:
        items = self.stack[len(self.stack) - count:]
        del self.stack[len(self.stack) - count:]
        return items

    def load(self):
        for opcode, arg, _ in pickletools.genops(self.data):
            name = opcode.name
            if name == "STOP":
                return self.stack.pop()
            if name in _VALUE_OPS:
                self.stack.append(arg)
            elif name in _CONSTANTS:
                self.stack.append(_CONSTANTS[name]())
            elif name in _CONTAINER_OPS:
                self._container(name)
            elif name in _MEMO_OPS:
                self._memo(name, arg)
            elif name in _OBJECT_OPS:
                self._object(name, arg)
            elif name not in ("PROTO", "FRAME"):
                raise ValueError(f"unsupported pickle opcode {name}")
        raise ValueError("the pickle has no STOP opcode")

    def _container(self, name: str) -> None:
        stack = self.stack
        if name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            stack.append(tuple(self._pop(int(name[-1]))))
        elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
            items = self._pop_mark()
            stack.append(dict(zip(items[::2], items[1::2])) if name == "DICT" else
                         list(items) if name == "LIST" else tuple(items))
        elif name == "APPEND":
            value = stack.pop()
            stack[-1].append(value)
        elif name == "SETITEM":
            key, value = self._pop(2)
            stack[-1][key] = value
        else:  # APPENDS, SETITEMS, ADDITEMS
            items = self._pop_mark()
            if name == "SETITEMS":
                stack[-1].update(zip(items[::2], items[1::2]))
            else:
                stack[-1].extend(items)

    def _memo(self, name: str, arg) -> None:
        if name == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif name.endswith("PUT"):
            self.memo[arg] = self.stack[-1]
        else:
            self.stack.append(self.memo[arg])

    def _object(self, name: str, arg) -> None:
        stack = self.stack
        if name == "GLOBAL":
            stack.append(_Global(*arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            module, attribute = self._pop(2)
            stack.append(_Global(module, attribute))
        elif name in ("REDUCE", "NEWOBJ"):
            func, args = self._pop(2)
            stack.append(_Call(func, tuple(args)))
        elif name == "NEWOBJ_EX":
            cls, args, _ = self._pop(3)
            stack.append(_Call(cls, tuple(args)))
        else:  # BUILD: the state of the object below it
            state = stack.pop()
            if isinstance(stack[-1], _Call):
                stack[-1].state = state


_VALUE_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
              "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
              "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_CONSTANTS = {"NONE": lambda: None, "NEWTRUE": lambda: True, "NEWFALSE": lambda: False, "EMPTY_DICT": dict,
              "EMPTY_LIST": list, "EMPTY_SET": list, "EMPTY_TUPLE": tuple, "MARK": lambda: _MARK}
_CONTAINER_OPS = {"TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "LIST", "DICT", "FROZENSET", "APPEND", "SETITEM",
                  "APPENDS", "SETITEMS", "ADDITEMS"}
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET"}
_OBJECT_OPS = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}
_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"}


def _dtype(value, path) -> np.dtype:
    if not (isinstance(value, _Call) and value.func == _Global("numpy", "dtype") and value.args):
        raise ValueError(f"{path}: the label's dtype is not a numpy dtype")
    dtype = np.dtype(str(value.args[0]))
    state = value.state if isinstance(value.state, tuple) else ()
    if len(state) > 1 and state[1] in ("<", ">"):
        dtype = dtype.newbyteorder(state[1])
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"{path}: the label has the non-numeric dtype {dtype}")
    return dtype


def _raw_bytes(value, path) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, _Call) and value.func == _Global("_codecs", "encode") and len(value.args) == 2:
        return str(value.args[0]).encode(str(value.args[1]))  # protocol 2 stores bytes as latin-1 text
    raise ValueError(f"{path}: the label array has no raw numeric data")


def _label_value(value, path) -> int | np.ndarray:
    """An int or a numeric numpy array from the inert label value; anything else is refused."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, _Call) and isinstance(value.func, _Global) and value.func.module in _NUMPY_MODULES:
        if value.func.name == "scalar" and len(value.args) == 2:
            return np.frombuffer(_raw_bytes(value.args[1], path), dtype=_dtype(value.args[0], path))[0].item()
        if value.func.name == "_reconstruct" and isinstance(value.state, tuple) and len(value.state) == 5:
            _, shape, dtype, fortran, raw = value.state
            array = np.frombuffer(_raw_bytes(raw, path), dtype=_dtype(dtype, path))
            return array.reshape(tuple(shape), order="F" if fortran else "C").copy()
        if value.func.name == "_frombuffer" and len(value.args) == 4:  # protocol 5
            raw, dtype, shape, order = value.args
            array = np.frombuffer(_raw_bytes(raw, path), dtype=_dtype(dtype, path))
            return array.reshape(tuple(shape), order=str(order)).copy()
    raise ValueError(f"{path}: the label is neither an integer nor a numeric array (got {type(value).__name__})")
