"""fcn_edge.models.archive on small generated archives: segNet's colors.txt rules, its default
colours, links that stay inside the folder allowed, and an unpacked folder reused while it
records the archive's hash and replaced whole when the archive changes."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from fcn_edge.errors import ModelFormatError
from fcn_edge.models.archive import (MARKER, Archive, check_member, jetson_palette, read_colors,
                                     unpack)
from fcn_edge.runtime.palette import voc_palette

SPEC = Archive(file="Net.tar.gz", folder="Net")


def test_colors_txt_is_read_as_segnet_reads_it(tmp_path):
    path = tmp_path / "colors.txt"
    path.write_text("\n 10  20 30 \n\n40 50 60 128\n70.4 80 90\n")
    lines: list[str] = []
    fallback = np.full((5, 3), 7, np.uint8)
    colors = read_colors(path, 5, fallback, lines.append)
    assert colors.tolist() == [[10, 20, 30], [40, 50, 60], [70, 80, 90], [7, 7, 7], [7, 7, 7]]
    assert lines == ["colors.txt has 3 colours for 5 classes; the rest take jetson-inference's "
                     "default colours"]
    assert read_colors(path, 2, fallback, lines.append).tolist() == [[10, 20, 30], [40, 50, 60]]
    assert "the extra ones are ignored" in lines[-1]


@pytest.mark.parametrize("line", ["1 2", "1 2 x", "1 2 300", "-1 0 0", "1 2 3 4 5"])
def test_a_malformed_colour_line_names_the_file_and_line(tmp_path, line):
    path = tmp_path / "colors.txt"
    path.write_text(f"0 0 0\n{line}\n")
    with pytest.raises(ModelFormatError, match=r"colors.txt line 2: .* is not 'R G B'"):
        read_colors(path, 2, np.zeros((2, 3), np.uint8))


def test_segnet_default_colours_are_the_voc_map_from_one():
    # tensorNet::GenerateColor(n) computes VOC's bit pattern for n + 1
    assert jetson_palette(4).tolist() == voc_palette(5)[1:].tolist()
    assert jetson_palette(1).tolist() == [[128, 0, 0]]


def _archive(path, files: dict[str, bytes], links=()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)


def test_a_link_inside_the_folder_is_allowed_and_the_folder_swapped_whole(tmp_path):
    first = tmp_path / "a.tar.gz"
    _archive(first, {"Net/fcn_resnet18.onnx": b"one", "Net/old.txt": b"x"},
             links=[("Net/model.onnx", "fcn_resnet18.onnx")])
    dest, lines = tmp_path / "cache", []
    folder = unpack(first, dest, SPEC, "1" * 64, lines.append)
    assert folder == dest / "Net" and (folder / "model.onnx").read_bytes() == b"one"
    assert (folder / MARKER).read_text().split()[0] == "1" * 64
    assert lines == [f"unpacked a.tar.gz into {folder}"]
    assert unpack(first, dest, SPEC, "1" * 64, lines.append) == folder and len(lines) == 1

    second = tmp_path / "b.tar.gz"
    _archive(second, {"Net/fcn_resnet18.onnx": b"two"})
    unpack(second, dest, SPEC, "2" * 64, lines.append)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "fcn_resnet18.onnx"]
    assert (folder / "fcn_resnet18.onnx").read_bytes() == b"two"
    assert sorted(p.name for p in dest.iterdir()) == ["Net"]  # no staging or old folder left


def test_an_archive_without_the_model_is_refused_and_nothing_stays(tmp_path):
    path = tmp_path / "a.tar.gz"
    _archive(path, {"Other/fcn_resnet18.onnx": b"x"})
    with pytest.raises(ModelFormatError, match="has no Net/fcn_resnet18.onnx"):
        unpack(path, tmp_path / "cache", SPEC, "1" * 64)
    assert list((tmp_path / "cache").iterdir()) == []


def test_check_member_refuses_a_windows_style_absolute_name(tmp_path):
    with pytest.raises(ModelFormatError, match="absolute path"):
        check_member(tarfile.TarInfo("\\evil"), tmp_path / "a.tar.gz")
