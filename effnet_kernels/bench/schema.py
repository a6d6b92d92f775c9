"""The schema of effnet-bench's ``results.json`` (JSON Schema, draft 2020-12), and a validator.

    from effnet_kernels.bench.schema import SCHEMA, validate
    validate(json.load(open("effnet-bench-results/results.json")))   # raises on a mismatch (needs jsonschema)

A result holds ``machine`` (versions, device, CPU kernel path, threads, date), ``settings`` (what was asked
for), ``e2e`` (one row per φ and batch: every provider's samples and summary, what was skipped and why, what
failed), ``failed`` (models that could not be measured at all, with the error), ``ops`` (the op
microbenchmarks' rows per layer shape) and ``notes``. Times are milliseconds; a
summary is the median, quartiles and minimum of its ``samples_ms``. ``complete`` is false when the run was
interrupted (``interrupted``) or stopped by its time limit before the end.
"""
from __future__ import annotations

from .e2e import PROVIDERS

_num = {"type": "number"}
_nonneg = {"type": "number", "minimum": 0}
_pos_int = {"type": "integer", "minimum": 1}
_str_map = {"type": "object", "additionalProperties": {"type": "string"}}

SUMMARY = {
    "type": "object",
    "required": ["median_ms", "q1_ms", "q3_ms", "min_ms", "n", "samples_ms"],
    "properties": {
        "median_ms": _nonneg, "q1_ms": _nonneg, "q3_ms": _nonneg, "min_ms": _nonneg, "n": _pos_int,
        "samples_ms": {"type": "array", "items": _nonneg, "minItems": 1},
    },
}

E2E_ROW = {
    "type": "object",
    "required": ["phi", "resolution", "width", "depth", "batch", "dtype", "device", "cuda_graphs", "params", "macs",
                 "providers", "skipped", "errors"],
    "properties": {
        # phi / width / depth: null for a --model row of another family (MobileNet, MNASNet, EfficientNet-Lite)
        "phi": {"anyOf": [_nonneg, {"type": "null"}]}, "resolution": _pos_int,
        "width": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]},
        "depth": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]}, "batch": _pos_int,
        "dtype": {"enum": ["float32", "float16", "bfloat16"]}, "device": {"type": "string"},
        "cuda_graphs": {"type": "boolean"}, "params": _pos_int, "macs": _pos_int,
        "providers": {"type": "object", "propertyNames": {"enum": list(PROVIDERS)}, "additionalProperties": SUMMARY},
        "skipped": {**_str_map, "propertyNames": {"enum": list(PROVIDERS)}},
        "errors": {**_str_map, "propertyNames": {"enum": list(PROVIDERS)}},
        "fused_rel_err": _nonneg, "seconds": _nonneg,
        # --model rows: the model spec, and how many modules fuse() swapped / left in it
        "model": {"type": "string"}, "swapped": {"type": "integer", "minimum": 0},
        "left": {"type": "integer", "minimum": 0},
    },
}

OP_ROW = {
    "type": "object",
    "required": ["shape", "batch", "format", "eager_ms", "fused_ms", "copy_ms", "bytes", "backend"],
    "properties": {
        "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 5},
        "batch": _pos_int, "format": {"enum": ["nchw", "channels_last"]}, "eager_ms": _nonneg, "fused_ms": _nonneg,
        "copy_ms": _nonneg, "bytes": _pos_int, "backend": {"enum": ["cpp", "triton", "torch"]},
    },
    "patternProperties": {"^backend_(cpp|triton|torch)_ms$": _nonneg},
}

OP_RESULT = {
    "type": "object",
    "required": ["machine", "dtype", "rows", "phis", "backend"],
    "properties": {"dtype": {"type": "string"}, "rows": {"type": "array", "items": OP_ROW},
                   "phis": {"type": "array", "items": _nonneg}},
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "effnet-bench/1",
    "title": "effnet-bench results",
    "type": "object",
    # ("seconds", the run's length, is written when the run ends: a process killed outright, e.g. by the OOM
    # killer, leaves the rows written so far without it)
    "required": ["schema", "machine", "settings", "complete", "interrupted", "notes", "e2e", "failed", "ops"],
    "properties": {
        "schema": {"const": "effnet-bench/1"},
        "machine": {
            "type": "object",
            "required": ["device", "device_name", "date", "torch", "triton", "onnxruntime", "effnet_kernels", "threads",
                         "isa", "python", "machine"],
            "properties": {"device": {"type": "string"}, "device_name": {"type": "string"},
                           "date": {"type": "string"}, "threads": _pos_int},
        },
        "settings": {
            "type": "object",
            "required": ["device", "dtype", "quick", "phis", "providers", "rounds", "per_round", "batches",
                         "compile_phis", "ort_phis", "throughput_phis", "ops", "argv"],
            "properties": {
                "quick": {"type": "boolean"}, "phis": {"type": "array", "items": _nonneg},
                "providers": {"type": "array", "items": {"enum": list(PROVIDERS)}},
                "rounds": _pos_int, "per_round": _pos_int, "batches": {"type": "array", "items": _pos_int},
                "models": {"type": "array", "items": {"type": "string"}},
            },
        },
        "complete": {"type": "boolean"}, "interrupted": {"type": "boolean"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "e2e": {"type": "array", "items": E2E_ROW},
        "failed": {"type": "array", "items": {"type": "object", "required": ["phi", "batch", "error"]}},
        "ops": {"type": "object", "properties": {"dwconv": OP_RESULT, "se": OP_RESULT}, "additionalProperties": False},
        "seconds": _nonneg,
    },
}


def validate(result: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``result`` does not match :data:`SCHEMA`, ValueError when
    a summary disagrees with its samples."""
    import jsonschema

    jsonschema.validate(result, SCHEMA)
    for row in result["e2e"]:
        for name, s in row["providers"].items():
            ms = sorted(s["samples_ms"])
            if s["n"] != len(ms) or not (ms[0] == s["min_ms"] and ms[0] <= s["median_ms"] <= ms[-1]
                                         and s["q1_ms"] <= s["median_ms"] <= s["q3_ms"]):
                raise ValueError(f"e2e phi={row['phi']} batch {row['batch']} {name}: summary disagrees with its samples")
