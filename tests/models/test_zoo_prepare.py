"""``prepare`` for torchvision's entries: a local ``--weights`` file in torchvision's exact
fcn_resnet50 layout (generated from torchvision's construction rules, not from our model) is
checked against the entry's hash and written once, atomically, as an fcn-edge checkpoint that
``load_model`` reads with the entry's classes, palette and normalisation; a file with the
wrong hash or of another architecture is refused in one line with nothing written."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the layout generator beside us

from fcn_edge.cli import main  # noqa: E402
from fcn_edge.errors import ModelFormatError  # noqa: E402
from fcn_edge.export.zoo_prepare import prepare  # noqa: E402
from fcn_edge.models import load_model, zoo  # noqa: E402
from fcn_edge.runtime.palette import voc_palette  # noqa: E402
from test_torchvision_fcn import random_state, torchvision_layout  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

REAL = "torchvision/fcn_resnet50"
NAME = "test/fcn_resnet50"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(path, sha256, state) of a generated fcn_resnet50 .pth (~140 MB, once per module)."""
    state = random_state(torchvision_layout((3, 4, 6, 3)), seed=3)
    path = tmp_path_factory.mktemp("tv") / "fcn_resnet50_coco-local.pth"
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), state


@pytest.fixture
def entry(weights):
    """``NAME``: the real fcn_resnet50 entry's facts with the generated file's hash."""
    registered = zoo.register(zoo.PretrainedEntry(
        **{**zoo.get(REAL).__dict__, "name": NAME, "sha256": weights[1]}))
    yield registered
    zoo.unregister(NAME)


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_prepare_writes_a_checkpoint_load_model_reads(entry, weights, tmp_path):
    path, digest, state = weights
    cache, lines = tmp_path / "cache", []
    prepared = prepare(NAME, weights=path, cache=cache, log=lines.append)
    assert prepared == cache / "test" / "fcn_resnet50.pt" == entry.prepared_path(cache)
    assert files(cache) == ["test", "test/fcn_resnet50.pt"]  # nothing else, no temporaries
    assert any("writing fcn_resnet50_coco-local.pth as an fcn-edge checkpoint" in line
               for line in lines)

    saved = torch.load(prepared, map_location="cpu", weights_only=True)
    assert saved["source"] == {"zoo": NAME, "file": path.name, "url": entry.url,
                               "sha256": digest}
    model = load_model(prepared)
    assert model.meta.classes == entry.classes
    assert np.array_equal(np.array(model.meta.palette), voc_palette(21))
    assert (model.meta.mean, model.meta.std, model.meta.color_order) == (
        entry.mean, entry.std, "rgb")
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key in ("backbone.conv1.weight", "backbone.layer4.2.bn3.running_var",
                "classifier.4.bias", "aux_classifier.4.weight"):
        assert torch.equal(loaded[key], state[key]), key

    lines.clear()
    mtime = prepared.stat().st_mtime_ns
    assert prepare(NAME, weights=path, cache=cache, log=lines.append) == prepared
    assert prepared.stat().st_mtime_ns == mtime and lines == []  # reused, nothing written


def test_a_file_with_the_wrong_hash_is_refused_with_nothing_written(weights, tmp_path,
                                                                    capsys):
    path, digest, _ = weights
    cache = tmp_path / "cache"
    assert main(["fetch", REAL, "--weights", str(path), "--cache", str(cache)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fcn-edge fetch: --weights ")
    assert digest in err and "1167a1af" in err and "not torchvision/fcn_resnet50's file" in err
    assert not cache.exists()


def test_a_state_dict_of_another_architecture_is_refused(weights, tmp_path):
    path, digest, _ = weights
    other = zoo.register(zoo.PretrainedEntry(
        **{**zoo.get("torchvision/fcn_resnet101").__dict__, "name": "test/fcn_resnet101",
           "sha256": digest}))
    try:
        with pytest.raises(ModelFormatError, match=r"not test/fcn_resnet101's weights: "
                                                   r"fcn_resnet101 state dict does not fit"):
            prepare(other.name, weights=path, cache=tmp_path)
    finally:
        zoo.unregister(other.name)
    assert files(tmp_path) == []


def test_a_sha256_that_disagrees_with_the_published_one_is_refused(weights, tmp_path, capsys):
    path, digest, _ = weights
    assert main(["fetch", REAL, "--weights", str(path), "--cache", str(tmp_path / "c"),
                 "--sha256", digest]) == 1
    err = capsys.readouterr().err
    assert f"--sha256 {digest}: {REAL}'s source publishes 1167a1af; drop --sha256" in err
    assert not (tmp_path / "c").exists()
