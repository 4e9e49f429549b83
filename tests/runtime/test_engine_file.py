"""The self-describing engine file: layout, round trip, damage detection, compatibility checks."""
from __future__ import annotations

import json
import struct

import pytest

from fcn_edge.errors import ModelFormatError
from fcn_edge.runtime.engine_file import (MAGIC, check_engine_compatible, engine_meta,
                                          is_engine_file, read_engine, read_engine_header,
                                          write_engine)
from fcn_edge.runtime.metadata import ArtifactMeta, Shapes

META = ArtifactMeta(model="fcn8s", backbone="vgg16", num_classes=2, classes=("bg", "fg"),
                    palette=((0, 0, 0), (255, 0, 0)), mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), precision="fp16",
                    shapes=Shapes((1, 32, 32), (1, 64, 64), (2, 128, 128)))
PLAN = bytes(range(256)) * 40 + b"\0tail"


def _header(**changes) -> dict:
    header = {"meta": META.to_dict(), "cache_key": "ab" * 32, "key_fields": {"precision": "fp16"},
              "tensorrt_version": "10.3.0.26",
              "gpu": {"name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"},
              "precision": "fp16", "shapes": META.shapes.to_json(), "onnx_sha256": "cd" * 32,
              "onnx_file": "model.fp16.onnx", "built_at": "2024-01-01T00:00:00+00:00"}
    header.update(changes)
    return header


@pytest.fixture
def engine(tmp_path):
    return write_engine(tmp_path / "model.fp16.engine", PLAN, _header())


def test_layout_is_magic_length_json_plan(engine):
    data = engine.read_bytes()
    assert data[:8] == MAGIC == b"FCNEDGE\0"
    (length,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12:12 + length].decode("utf-8"))
    assert header["plan_bytes"] == len(PLAN)
    assert header["format"] == "fcn-edge/engine" and header["format_version"] == 1
    assert data[12 + length:] == PLAN


def test_round_trip(engine):
    header, plan = read_engine(engine)
    assert plan == PLAN
    for key, value in _header().items():
        assert header[key] == json.loads(json.dumps(value))  # tuples come back as lists
    assert read_engine_header(engine) == header
    assert engine_meta(header) == META
    assert is_engine_file(engine)


def test_a_malformed_header_meta_names_the_engine_file(tmp_path):
    meta = dict(META.to_dict(), num_classes="two")
    path = write_engine(tmp_path / "bad.engine", PLAN, _header(meta=meta))
    with pytest.raises(ModelFormatError, match=r"bad\.engine: metadata field 'num_classes'"):
        engine_meta(read_engine_header(path), path)


def test_write_replaces_atomically_and_leaves_no_temporaries(engine):
    write_engine(engine, b"second", _header(precision="fp32"))
    header, plan = read_engine(engine)
    assert plan == b"second" and header["precision"] == "fp32"
    assert [p.name for p in engine.parent.iterdir()] == [engine.name]


def test_bare_plan_is_refused_with_advice(tmp_path):
    bare = tmp_path / "model.plan"
    bare.write_bytes(PLAN)
    assert not is_engine_file(bare)
    for read in (read_engine, read_engine_header):
        with pytest.raises(ModelFormatError, match="not an fcn-edge engine") as info:
            read(bare)
        assert "sidecar" in str(info.value) and "fcn-edge build" in str(info.value)


def test_truncated_plan_is_refused_but_header_still_reads(engine):
    engine.write_bytes(engine.read_bytes()[:-10])
    with pytest.raises(ModelFormatError, match="truncated") as info:
        read_engine(engine)
    assert str(engine) in str(info.value)
    assert read_engine_header(engine)["plan_bytes"] == len(PLAN)


def test_trailing_bytes_are_refused(engine):
    engine.write_bytes(engine.read_bytes() + b"junk")
    with pytest.raises(ModelFormatError, match=f"{len(PLAN) + 4} bytes"):
        read_engine(engine)


@pytest.mark.parametrize("cut", [5, 10, 40])
def test_truncated_header_names_the_file(engine, cut):
    engine.write_bytes(engine.read_bytes()[:cut])
    with pytest.raises(ModelFormatError) as info:
        read_engine_header(engine)
    assert str(engine) in str(info.value)


def test_garbled_length_and_json_are_refused(engine):
    data = bytearray(engine.read_bytes())
    engine.write_bytes(bytes(data[:8]) + struct.pack("<I", 0xFFFFFFF0) + bytes(data[12:]))
    with pytest.raises(ModelFormatError, match="garbled"):
        read_engine_header(engine)
    data[12] = ord("!")  # the header's opening brace
    engine.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        read_engine(engine)


def test_other_format_version_is_refused(tmp_path):
    path = write_engine(tmp_path / "e.engine", PLAN, _header(format_version=99))
    with pytest.raises(ModelFormatError, match="engine format 99"):
        read_engine(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no such engine"):
        read_engine(tmp_path / "absent.engine")


def test_compatible_engine_passes():
    header = _header()
    check_engine_compatible(header, "10.3.0.26", "NVIDIA GeForce RTX 3090", "8.6")
    # The build number does not change the plan format; a tuple capability is the same.
    check_engine_compatible(header, "10.3.0.30", "NVIDIA GeForce RTX 3090", (8, 6))


@pytest.mark.parametrize("trt, gpu, cc, expected", [
    ("10.3.1", "NVIDIA GeForce RTX 3090", "8.6", "TensorRT 10.3.1"),
    ("10.4.0", "NVIDIA GeForce RTX 3090", "8.6", "TensorRT 10.4.0"),
    ("10.3.0", "NVIDIA GeForce RTX 4090", "8.9", "NVIDIA GeForce RTX 4090 (sm_89)"),
    ("10.3.0", "NVIDIA RTX A6000", "8.6", "NVIDIA RTX A6000 (sm_86)"),
])
def test_incompatible_engine_says_what_differs(trt, gpu, cc, expected):
    with pytest.raises(ModelFormatError) as info:
        check_engine_compatible(_header(), trt, gpu, cc)
    message = str(info.value)
    assert message.startswith("engine built for NVIDIA GeForce RTX 3090 (sm_86) with "
                              "TensorRT 10.3.0.26; this machine has ")
    assert expected in message
    assert message.endswith("rebuild it with `fcn-edge build model.fp16.onnx`")
