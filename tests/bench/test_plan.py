"""What `fcn-edge bench` plans: sizes and choices parsed, and for every backend × precision × IO
either the artifact that runs it (with its options) or the reason it cannot run."""
from __future__ import annotations

import pytest

from fcn_edge.bench.artifacts import source_key
from fcn_edge.bench.plan import (BENCH_BACKENDS, IO_KINDS, PRECISIONS, ArtifactKey, combo,
                                 combos_for_artifact, given_key, parse_choices, parse_sizes,
                                 plan_combos)
from fcn_edge.errors import InputError
from fcn_edge.runtime.metadata import ArtifactMeta

TORCH = ("torch:cpu", "torch:cuda", "torch:cuda+graphs")


# --- parse_sizes ------------------------------------------------------------------------------

def test_parse_sizes_reads_height_by_width_in_order():
    assert parse_sizes("256x512, 512X1024 ,64x96") == ((256, 512), (512, 1024), (64, 96))


def test_parse_sizes_drops_duplicates_keeping_the_first():
    assert parse_sizes("64x96,32x32,64x96") == ((64, 96), (32, 32))


@pytest.mark.parametrize("text, offending", [
    ("64x96,abc", "'abc'"), ("64", "'64'"), ("64x96x3", "'64x96x3'"), ("64x", "'64x'"),
    ("0x10", "'0x10'"), ("64x-1", "'64x-1'"),
])
def test_parse_sizes_names_the_offending_item(text, offending):
    with pytest.raises(InputError, match="--sizes") as info:
        parse_sizes(text)
    assert offending in str(info.value)


def test_parse_sizes_refuses_nothing():
    with pytest.raises(InputError, match="--sizes is empty"):
        parse_sizes(" , ")


# --- parse_choices ----------------------------------------------------------------------------

def test_parse_choices_all_is_every_choice_in_the_given_order():
    assert parse_choices("all", BENCH_BACKENDS, "--backends") == BENCH_BACKENDS
    assert parse_choices(" all ", PRECISIONS, "--precisions") == ("fp32", "fp16", "int8")


def test_parse_choices_keeps_the_order_given_without_repeats():
    assert parse_choices("int8,fp32,int8", PRECISIONS, "--precisions") == ("int8", "fp32")


def test_parse_choices_lists_the_unknown_names_and_the_choices():
    with pytest.raises(InputError) as info:
        parse_choices("onnxruntime:cpu,tensorflow,cuda", BENCH_BACKENDS, "--backends")
    message = str(info.value)
    assert message.startswith("--backends: unknown tensorflow, cuda;")
    assert "onnxruntime:cpu," not in message.split(";")[0]  # the known one is not blamed
    assert all(name in message for name in BENCH_BACKENDS) and message.endswith("or all")


def test_parse_choices_all_mixed_with_names_is_refused():
    with pytest.raises(InputError, match="unknown all"):
        parse_choices("all,plain", IO_KINDS, "--io")


# --- combo ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", TORCH)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_torch_never_runs_raw_io(backend, precision):
    c = combo(backend, precision, "raw")
    assert c.artifact is None and "raw-IO + argmax is an exported graph" in c.why


@pytest.mark.parametrize("backend", TORCH)
def test_torch_has_no_int8(backend):
    c = combo(backend, "int8", "plain")
    assert c.artifact is None and "no PyTorch int8 path" in c.why


def test_torch_cpu_fp16_is_unsupported_but_cuda_fp16_runs_the_checkpoint():
    cpu = combo("torch:cpu", "fp16", "plain")
    assert cpu.artifact is None and "no fast fp16 CPU kernels" in cpu.why
    cuda = combo("torch:cuda", "fp16", "plain")
    assert cuda.artifact == ArtifactKey("checkpoint")
    assert dict(cuda.options) == {"fp16": True} and cuda.why == ""


def test_torch_cpu_fp32_is_the_reference_row():
    c = combo("torch:cpu", "fp32", "plain")
    assert c.artifact == ArtifactKey("checkpoint") and dict(c.options) == {"fp16": False}
    assert c.backend_name == "torch:cpu"


def test_cuda_graphs_replays_on_the_torch_cuda_backend():
    c = combo("torch:cuda+graphs", "fp16", "plain")
    assert c.artifact == ArtifactKey("checkpoint")
    assert dict(c.options) == {"fp16": True, "cuda_graphs": True}
    assert c.backend == "torch:cuda+graphs" and c.backend_name == "torch:cuda"
    assert "cuda_graphs" not in dict(combo("torch:cuda", "fp16", "plain").options)


@pytest.mark.parametrize("io", IO_KINDS)
def test_tensorrt_builds_an_engine_of_every_precision(io):
    assert combo("tensorrt", "fp32", io).artifact == ArtifactKey("engine", "fp32", io)
    assert combo("tensorrt", "fp16", io).artifact == ArtifactKey("engine", "fp16", io)
    int8 = combo("tensorrt", "int8", io)
    assert int8.artifact == ArtifactKey("engine", "int8", io, int8_target="tensorrt")
    assert int8.why == "" and int8.options == () and int8.backend_name == "tensorrt"


@pytest.mark.parametrize("io", IO_KINDS)
def test_each_engine_is_built_from_the_onnx_of_its_precision_and_int8_flavour(io):
    # int8: the symmetric Q/DQ of `--int8-target tensorrt`, never ORT's uint8 cpu flavour.
    assert source_key(combo("tensorrt", "int8", io).artifact) == \
        ArtifactKey("onnx", "int8", io, "tensorrt")
    assert source_key(combo("tensorrt", "fp16", io).artifact) == ArtifactKey("onnx", "fp16", io)
    assert source_key(combo("tensorrt", "fp32", io).artifact) == ArtifactKey("onnx", "fp32", io)


def test_int8_on_tensorrt_and_on_onnx_runtime_plan_two_flavours_of_export():
    combos = plan_combos(["tensorrt", "onnxruntime:cpu", "onnxruntime:cuda"], ["int8"],
                         IO_KINDS)
    onnx = {source_key(c.artifact) if c.artifact.kind == "engine" else c.artifact
            for c in combos}
    assert {(k.io, k.int8_target) for k in onnx} == {
        (io, flavour) for io in IO_KINDS for flavour in ("cpu", "tensorrt")}
    for c in combos:
        expected = "tensorrt" if c.backend == "tensorrt" else "cpu"
        assert c.artifact.int8_target == expected, c


@pytest.mark.parametrize("io", IO_KINDS)
def test_ort_tensorrt_fp16_runs_the_fp32_onnx_with_its_fp16_option(io):
    fp16 = combo("onnxruntime:tensorrt", "fp16", io)
    assert fp16.artifact == ArtifactKey("onnx", "fp32", io)
    assert dict(fp16.options) == {"fp16": True}
    fp32 = combo("onnxruntime:tensorrt", "fp32", io)
    assert fp32.artifact == ArtifactKey("onnx", "fp32", io)
    assert dict(fp32.options) == {"fp16": False}
    int8 = combo("onnxruntime:tensorrt", "int8", io)
    assert int8.artifact is None and "int8 mode is not wired up" in int8.why
    assert "the tensorrt backend's int8 engine" in int8.why


@pytest.mark.parametrize("io", IO_KINDS)
def test_ort_cpu_fp16_runs_the_fp16_onnx_with_the_cast_note(io):
    c = combo("onnxruntime:cpu", "fp16", io)
    assert c.artifact == ArtifactKey("onnx", "fp16", io) and c.why == ""
    assert c.note == "ORT CPU inserts casts and computes fp16 convolutions in fp32"
    assert combo("onnxruntime:cuda", "fp16", io).note == ""
    assert combo("onnxruntime:cpu", "fp32", io).note == ""


@pytest.mark.parametrize("backend", ("onnxruntime:cpu", "onnxruntime:cuda"))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_ort_cpu_and_cuda_run_the_onnx_of_their_own_precision(backend, precision):
    c = combo(backend, precision, "raw")
    assert c.artifact == ArtifactKey("onnx", precision, "raw", "cpu") and c.options == ()
    assert c.backend_name == backend


def test_every_planned_combination_either_runs_or_says_why():
    combos = plan_combos(BENCH_BACKENDS, PRECISIONS, IO_KINDS)
    assert len(combos) == len(BENCH_BACKENDS) * len(PRECISIONS) * len(IO_KINDS)
    assert [(c.backend, c.precision, c.io) for c in combos[:3]] == [
        ("tensorrt", "fp32", "plain"), ("tensorrt", "fp32", "raw"), ("tensorrt", "fp16", "plain")]
    for c in combos:
        assert (c.artifact is None) == bool(c.why), c
    # 42 combinations: torch 3 backends × (3 raw + int8 plain) + torch:cpu fp16, and the
    # TensorRT provider's 2 int8: 12 + 1 + 2 = 15 cannot run (TensorRT's own int8 can).
    assert sum(c.artifact is None for c in combos) == 15


# --- combos_for_artifact ----------------------------------------------------------------------

def test_a_given_engine_runs_only_on_tensorrt():
    rows = combos_for_artifact("engine", "fp16", "plain",
                               ["tensorrt", "onnxruntime:cpu", "torch:cuda", "torch:cpu"])
    by = {c.backend: c for c in rows}
    assert by["tensorrt"].artifact == ArtifactKey("engine", "fp16", "plain")
    assert by["onnxruntime:cpu"].artifact is None
    assert by["onnxruntime:cpu"].why == "runs an ONNX; the model given is a TensorRT engine"
    assert by["torch:cuda"].why == "runs a checkpoint; the model given is a TensorRT engine"
    assert "no fast fp16 CPU kernels" in by["torch:cpu"].why  # its own reason is kept
    assert [c.backend for c in rows] == ["tensorrt", "onnxruntime:cpu", "torch:cuda",
                                          "torch:cpu"]


def test_a_given_onnx_runs_on_onnx_runtime_only():
    rows = combos_for_artifact("onnx", "fp32", "raw",
                               ["tensorrt", "onnxruntime:tensorrt", "onnxruntime:cpu"])
    by = {c.backend: c for c in rows}
    assert by["tensorrt"].artifact is None
    assert by["tensorrt"].why == "runs a TensorRT engine; the model given is an ONNX"
    assert by["onnxruntime:tensorrt"].artifact == ArtifactKey("onnx", "fp32", "raw")
    assert by["onnxruntime:cpu"].artifact == ArtifactKey("onnx", "fp32", "raw")


def test_a_given_int8_engine_runs_on_tensorrt():
    rows = combos_for_artifact("engine", "int8", "raw",
                               ["tensorrt", "onnxruntime:cpu", "onnxruntime:tensorrt"],
                               "tensorrt")
    by = {c.backend: c for c in rows}
    assert by["tensorrt"].artifact == ArtifactKey("engine", "int8", "raw", "tensorrt")
    assert by["onnxruntime:cpu"].why == "runs an ONNX; the model given is a TensorRT engine"
    assert "int8 mode is not wired up" in by["onnxruntime:tensorrt"].why


def test_a_given_cpu_flavour_int8_onnx_says_why_tensorrt_cannot_build_it():
    rows = combos_for_artifact("onnx", "int8", "plain", ["tensorrt", "onnxruntime:cpu"], "cpu")
    by = {c.backend: c for c in rows}
    assert by["tensorrt"].artifact is None
    assert by["tensorrt"].why == (
        "runs a TensorRT engine built from an `--int8-target tensorrt` export; the model given "
        "is an ONNX of `--int8-target cpu`, whose uint8 activations TensorRT cannot build")
    assert by["onnxruntime:cpu"].artifact == ArtifactKey("onnx", "int8", "plain", "cpu")


def test_a_given_tensorrt_flavour_int8_onnx_runs_as_it_is_on_onnx_runtime():
    rows = combos_for_artifact("onnx", "int8", "plain",
                               ["tensorrt", "onnxruntime:cpu", "onnxruntime:cuda"], "tensorrt")
    by = {c.backend: c for c in rows}
    assert by["tensorrt"].why == "runs a TensorRT engine; the model given is an ONNX"
    for backend in ("onnxruntime:cpu", "onnxruntime:cuda"):
        assert by[backend].artifact == ArtifactKey("onnx", "int8", "plain", "tensorrt")
        assert by[backend].why == "" and by[backend].options == ()


def test_a_given_fp16_onnx_keeps_the_cast_note_on_ort_cpu():
    rows = combos_for_artifact("onnx", "fp16", "plain", ["onnxruntime:cpu"])
    assert rows[0].artifact == ArtifactKey("onnx", "fp16", "plain")
    assert rows[0].note == "ORT CPU inserts casts and computes fp16 convolutions in fp32"


# --- given_key --------------------------------------------------------------------------------

def _meta(**changes) -> ArtifactMeta:
    return ArtifactMeta(model="fcn8s", backbone="vgg16", num_classes=2, classes=("bg", "fg"),
                        palette=((0, 0, 0), (255, 0, 0)), mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), **changes)


@pytest.mark.parametrize("kind, changes, expected", [
    ("onnx", {}, ArtifactKey("onnx", "fp32", "plain", "cpu")),
    ("onnx", {"raw_io": True, "argmax": True, "precision": "fp16"},
     ArtifactKey("onnx", "fp16", "raw", "cpu")),
    ("onnx", {"precision": "int8", "parity": {"target": "tensorrt"}},
     ArtifactKey("onnx", "int8", "plain", "tensorrt")),
    ("onnx", {"precision": "int8", "parity": {"target": "cpu"}},
     ArtifactKey("onnx", "int8", "plain", "cpu")),
    ("onnx", {"precision": "int8"}, ArtifactKey("onnx", "int8", "plain", "cpu")),
    ("engine", {"precision": "int8", "parity": {"target": "tensorrt"}},
     ArtifactKey("engine", "int8", "plain", "tensorrt")),
    ("engine", {"precision": "int8"}, ArtifactKey("engine", "int8", "plain", "tensorrt")),
    ("engine", {"precision": "fp16", "parity": {"target": "x"}},
     ArtifactKey("engine", "fp16", "plain", "cpu")),
])
def test_given_key_reads_kind_precision_io_and_int8_flavour(kind, changes, expected):
    assert given_key(kind, _meta(**changes)) == expected
