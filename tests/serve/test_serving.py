"""Requests to the real tritonserver serving an fcn-edge artifact (one server for the module,
on 127.0.0.1, free ports): the labels are the in-process Segmenter's, for frames in either
colour order and for encoded images; the artifact's metadata is in the model's config; 8
concurrent clients × 50 requests get each its own answer; and every malformed request gets an
error that says what was wrong, after which the same server answers the next request."""
from __future__ import annotations

import random
import threading

import cv2
import numpy as np
import pytest

from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.metadata import ArtifactMeta
from fcn_edge.serve.repository import ServeModel, write_python_model
from fcn_edge.serve.server import ServerConfig, TritonServer
from support_multi_io import export_artifact, make_multi_checkpoint
from support_triton import HEIGHT, WIDTH, frames

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is in the serve "
                                                             "extra")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_SIDE = 128  # small, so that an oversized frame is cheap to send
BATCH_DELAY_US = 1_000_000


@pytest.fixture(scope="module")
def rgbd_artifact(tmp_path_factory):
    """An RGB-D artifact with two heads (semantic 8 classes, geometric 3)."""
    out = tmp_path_factory.mktemp("rgbd")
    return export_artifact(make_multi_checkpoint(out / "two.pt"), out)


@pytest.fixture(scope="module")
def server(artifact, rgbd_artifact, tritonserver, tmp_path_factory):
    """One server, two models: ``fcn`` (RGB, one task) and ``rgbd`` (RGB-D, two heads)."""
    repo = tmp_path_factory.mktemp("serving") / "models"
    write_python_model(repo, artifact, ServeModel(max_batch_size=8, max_side=MAX_SIDE))
    write_python_model(repo, rgbd_artifact, ServeModel(name="rgbd", max_batch_size=4))
    # a long batching delay: requests sent together are answered by one model call
    write_python_model(repo, artifact, ServeModel(name="slow_batch", max_batch_size=8,
                                                  max_delay_us=BATCH_DELAY_US))
    config = ServerConfig(http_port=0, grpc_port=0, metrics_port=0, drain_timeout=5,
                          start_timeout=60)
    with TritonServer(repo, config) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def segmenter(artifact):
    with Segmenter(artifact) as seg:
        yield seg


def _host(url: str) -> str:
    return url.split("://", 1)[1]


def _http(server):
    return httpclient.InferenceServerClient(_host(server.http_url), network_timeout=60)


def _infer(client, module, tensors: dict[str, np.ndarray], model: str = "fcn",
           outputs: tuple[str, ...] = ("labels",), **options):
    """``tensors`` (name → array; BYTES for object arrays) sent to ``model``: its labels
    (one output), or a dict output name → array."""
    inputs = []
    for name, array in tensors.items():
        kind = "BYTES" if array.dtype == object else {
            np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32"}[array.dtype]
        tensor = module.InferInput(name, list(array.shape), kind)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(model, inputs, **options)
    arrays = {name: result.as_numpy(name) for name in outputs}
    return arrays["labels"] if outputs == ("labels",) else arrays


def _encoded(frame: np.ndarray, suffix: str) -> np.ndarray:
    ok, data = cv2.imencode(suffix, frame)
    assert ok
    return np.array([[data.tobytes()]], dtype=object)


# --- answers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("h, w", [(HEIGHT, WIDTH), (33, 50), (96, 128)])
def test_labels_are_the_in_process_segmenters(server, segmenter, h, w):
    batch = frames(3, seed=h, h=h, w=w)
    expected = np.stack(segmenter.batch(list(batch)))
    client = _http(server)
    labels = _infer(client, httpclient, {"frame": batch})
    assert labels.dtype == np.uint8 and labels.shape == (3, h, w)
    assert np.array_equal(labels, expected)
    rgb = _infer(client, httpclient, {"frame": np.ascontiguousarray(batch[..., ::-1])},
                 parameters={"color_order": "rgb"})
    assert np.array_equal(rgb, expected)
    assert len(np.unique(expected)) > 1, "labels that vary, or the test tests nothing"


def test_encoded_images_are_labelled_as_decoded(server, segmenter):
    frame = frames(1, seed=7)[0]
    client = _http(server)
    png = _infer(client, httpclient, {"image": _encoded(frame, ".png")})
    assert np.array_equal(png[0], segmenter(frame))  # lossless: the frame itself
    jpeg = _encoded(frame, ".jpg")
    decoded = cv2.imdecode(np.frombuffer(jpeg[0, 0], np.uint8), cv2.IMREAD_COLOR)
    labels = _infer(client, httpclient, {"image": jpeg})
    assert np.array_equal(labels[0], segmenter(decoded))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_rgbd_artifact_answers_every_head(server, rgbd_artifact, protocol):
    batch = frames(2, seed=5)
    depth = np.random.default_rng(5).uniform(0.5, 10, (2, HEIGHT, WIDTH)).astype(np.float32)
    with Segmenter(rgbd_artifact) as seg:
        expected = seg.batch(list(batch), depth=list(depth))
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(
        _host(server.http_url if protocol == "http" else server.grpc_url))
    tasks = tuple(expected[0])
    assert tasks == ("semantic", "geometric")
    labels = _infer(client, module, {"frame": batch, "depth": depth}, model="rgbd",
                    outputs=tuple(f"labels_{task}" for task in tasks))
    for task in tasks:
        assert np.array_equal(labels[f"labels_{task}"], np.stack([e[task] for e in expected]))
    with pytest.raises(InferenceServerException, match="also takes 'depth'"):
        _infer(client, module, {"frame": batch}, model="rgbd")


def test_the_models_config_carries_the_artifacts_metadata(server, segmenter):
    config = _http(server).get_model_config("fcn")
    meta = ArtifactMeta.from_props({k: v["string_value"]
                                    for k, v in config["parameters"].items()})
    assert meta.classes == segmenter.meta.classes
    assert np.array_equal(np.asarray(meta.palette), np.asarray(segmenter.meta.palette))
    assert config["max_batch_size"] == 8
    grpc = grpcclient.InferenceServerClient(_host(server.grpc_url))
    assert grpc.get_model_metadata("fcn").versions == ["1"]


def test_8_concurrent_clients_x_50_requests_each_get_their_own_labels(server, segmenter):
    # 12 frames of two sizes whose labels all differ: an answer given to the wrong request
    # (or mixed within a dynamic batch) cannot match.
    pool, expected, seen = [], [], set()
    for seed in range(100, 200):
        frame = frames(1, seed=seed, h=HEIGHT + 16 * (seed % 2), w=WIDTH)[0]
        labels = segmenter(frame)
        if labels.tobytes() not in seen:
            seen.add(labels.tobytes())
            pool.append(frame)
            expected.append(labels)
        if len(pool) == 12:
            break
    assert len(pool) == 12
    failures: list[str] = []
    answered = [0] * 8

    def client(index: int) -> None:
        module = httpclient if index % 2 else grpcclient
        url = server.http_url if index % 2 else server.grpc_url
        conn = module.InferenceServerClient(_host(url))
        rng = random.Random(index)
        for _ in range(50):
            pick = rng.randrange(len(pool))
            try:
                labels = _infer(conn, module, {"frame": pool[pick][None]})
            except InferenceServerException as exc:
                failures.append(f"client {index}: {exc}")
                return
            if not np.array_equal(labels[0], expected[pick]):
                failures.append(f"client {index}: the labels of another frame")
            answered[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == [] and answered == [50] * 8, (failures[:5], answered)


# --- malformed requests ----------------------------------------------------------------------

def _good_frame():
    return frames(1, seed=3)


MALFORMED = {
    "wrong dtype": ({"frame": _good_frame().astype(np.float32)}, "FP32"),
    "wrong rank": ({"frame": np.zeros((1, HEIGHT, WIDTH), np.uint8)},
                   "unexpected shape for input 'frame'"),
    "4 channels": ({"frame": np.zeros((1, HEIGHT, WIDTH, 4), np.uint8)},
                   "unexpected shape for input 'frame'"),
    "empty": ({"frame": np.zeros((1, 0, WIDTH, 3), np.uint8)},
              f"frame is empty (0×{WIDTH} pixels)"),
    "oversized": ({"frame": np.zeros((1, HEIGHT, MAX_SIDE + 1, 3), np.uint8)},
                  f"frame is {MAX_SIDE + 1}×{HEIGHT} pixels; sides of at most {MAX_SIDE}"),
    "corrupt jpeg": ({"image": np.array([[b"\xff\xd8\xff\xe0 not a jpeg"]], dtype=object)},
                     "'image'[0] (15 bytes) is not a readable JPEG or PNG"),
    "frame and image": ({"frame": _good_frame(),
                         "image": np.array([[b"\xff\xd8"]], dtype=object)},
                        "send exactly one of 'frame'"),
    # No input at all: Triton itself refuses the request before the model sees it.
    "neither": ({}, "request has 0 inputs"),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_request_is_refused_and_the_next_one_served(server, segmenter, case,
                                                                protocol):
    tensors, message = MALFORMED[case]
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(
        _host(server.http_url if protocol == "http" else server.grpc_url))
    with pytest.raises(InferenceServerException) as refused:
        _infer(client, module, tensors)
    assert message in refused.value.message(), refused.value.message()
    good = _good_frame()
    assert np.array_equal(_infer(client, module, {"frame": good})[0], segmenter(good[0]))


def test_a_bad_colour_order_is_refused(server):
    with pytest.raises(InferenceServerException, match="use 'bgr' or 'rgb'"):
        _infer(_http(server), httpclient, {"frame": _good_frame()},
               parameters={"color_order": "yuv"})


def test_a_bad_request_batched_with_good_ones_fails_alone(server, segmenter):
    """Three good requests and a bad one (a colour order that is none), sent together, are one
    call of the model (the batcher waits 1 s for company, and Triton batches requests whose
    tensors match: all four send one frame of one size; its statistics count one execution):
    the three get their labels, the fourth its own error."""
    good = [frames(1, seed=20 + i) for i in range(3)]
    requests = [({"frame": g}, {}) for g in good] + [({"frame": good[0]}, {"color_order": "yuv"})]
    answers: list = [None] * len(requests)

    def send(i: int) -> None:
        tensors, parameters = requests[i]
        try:
            answers[i] = _infer(_http(server), httpclient, tensors, model="slow_batch",
                                parameters=parameters)
        except InferenceServerException as exc:
            answers[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for g, answer in zip(good, answers):
        assert isinstance(answer, np.ndarray), answer
        assert np.array_equal(answer[0], segmenter(g[0]))
    assert isinstance(answers[3], InferenceServerException)
    assert "use 'bgr' or 'rgb'" in answers[3].message()
    stats = _http(server).get_inference_statistics("slow_batch")["model_stats"][0]
    assert stats["execution_count"] == 1, stats

