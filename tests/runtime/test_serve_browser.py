"""``fcn-edge run --serve`` in a real headless browser: Chromium (Debian's ``chromium``) driven
by Playwright, over a live run of a real model. The screenshot is ``live_view.png`` in the
test's tmp_path (kept with ``-o tmp_path_retention_policy=all``)."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from fcn_edge.runtime.run import RunConfig

from support_serve import live_video, running

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs Playwright: pip install "
                                      "'fcn-edge[dev]' (or pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get "
                                                         "install chromium)")


def _pixels(png: bytes) -> np.ndarray:
    """The RGB pixels of an element's screenshot, one per row."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return image[..., ::-1].reshape(-1, 3).astype(int)


def test_chromium_shows_the_overlay_the_legend_and_live_figures(onnx_artifact, tmp_path):
    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette

    palette = voc_palette(len(PROCEDURAL_CLASSES)).astype(int)
    # alpha 1: the overlay is the palette's colours alone, so the screenshot can be read back.
    config = RunConfig(str(onnx_artifact("rawio_argmax")),
                       live_video(tmp_path / "in.avi", frames=100, size=(120, 160)),
                       live=True, serve="0", alpha=1.0, progress_every=0)
    shot = tmp_path / "live_view.png"
    with running(config) as view, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(view.url)
            page.wait_for_function("document.getElementById('stream-0').naturalWidth > 0",
                                   timeout=30_000)
            page.wait_for_function("+document.getElementById('frames').textContent > 0",
                                   timeout=30_000)
            before = page.text_content("#frames"), page.text_content("#uptime")
            page.wait_for_timeout(2000)
            after = page.text_content("#frames"), page.text_content("#uptime")
            fps = float(page.text_content("#fps"))
            names = page.locator("#legend li").all_text_contents()
            swatches = page.eval_on_selector_all(
                "#legend .swatch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
            # Element screenshots: the figures change the layout as they refresh.
            swatch_shots = [page.locator(f"#legend li:nth-child({i + 1}) .swatch").screenshot()
                            for i in range(len(names))]
            image_box = page.locator("#stream-0").bounding_box()
            overlay = _pixels(page.locator("#stream-0").screenshot())
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert int(after[0]) > int(before[0]) and after[1] != before[1] and fps > 0, (before, after)
    assert names == list(PROCEDURAL_CLASSES)
    assert swatches == [f"rgb({r}, {g}, {b})" for r, g, b in palette]
    for png, colour in zip(swatch_shots, palette):  # each swatch in its class's colour
        inside = _pixels(png).reshape(-1, 3)
        assert (np.abs(inside - colour).max(1) <= 3).mean() > 0.5, (colour, inside[:3])
    distance = np.abs(overlay[:, None, :] - palette[None]).sum(-1)  # to each class colour
    nearest = distance.argmin(1)
    assert image_box["width"] >= 160 and image_box["height"] >= 120
    assert (distance.min(1) <= 60).mean() > 0.8  # palette colours, not a blank or broken image
    assert len(np.unique(nearest[distance.min(1) <= 60])) >= 2  # and a segmentation, not a fill
