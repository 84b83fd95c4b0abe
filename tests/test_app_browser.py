"""The browser demo in a real browser: headless Chromium (Playwright driving the system
`chromium`) uploads fixture images, waits for the result and compares its pixels with the
Python API's output for the same files."""

import base64
import os
import shutil
import socket
import urllib.request

import cv2
import numpy as np
import pytest

from eval_models import saved_run

if os.environ.get("CI"):       # .ci/run installs all of it: a missing piece fails there
    import gradio  # noqa: F401
    from playwright import sync_api
else:
    gradio = pytest.importorskip("gradio")
    sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags a closed network needs (no first-run, sync, component or background requests).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                reason="needs the Debian chromium package (.ci/run installs it)")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(segmenter, page URL) of the demo app on a tiny SSMA run."""
    from ssma_tf import Segmenter
    from ssma_tf.app import build_app

    folder = tmp_path_factory.mktemp("run")
    saved_run(folder)
    segmenter = Segmenter.load(folder / "ckpt")
    page = build_app(segmenter, examples_dir=str(tmp_path_factory.mktemp("examples") / "ex"))
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True, ssr_mode=False)
    yield segmenter, f"http://127.0.0.1:{port}/"
    page.close()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("upload")
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    depth = rng.integers(0, 9000, (40, 56), dtype=np.uint16)
    cv2.imwrite(str(folder / "rgb.png"), rgb)
    cv2.imwrite(str(folder / "depth.png"), depth)
    return str(folder / "rgb.png"), str(folder / "depth.png")


def _image_pixels(page, elem_id, base_url):
    """RGB pixels of the <img> shown in the output component `elem_id`."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(timeout=TIMEOUT_MS)
    source = img.get_attribute("src")
    if source.startswith("data:"):
        data = base64.b64decode(source.split(",", 1)[1])
    else:
        url = source if source.startswith("http") else base_url.rstrip("/") + source
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_upload_segment_and_compare_with_the_api(served, fixtures, tmp_path):
    segmenter, url = served
    rgb_path, depth_path = fixtures
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(url, timeout=TIMEOUT_MS)
            page.locator("#input-rgb input[type=file]").set_input_files(rgb_path)
            page.locator("#input-depth input[type=file]").set_input_files(depth_path)
            page.locator("#input-rgb img").wait_for(timeout=TIMEOUT_MS)   # upload finished
            page.wait_for_timeout(500)
            page.locator("#run").click()
            shown = _image_pixels(page, "labels", url)
            overlay = _image_pixels(page, "overlay", url)
            without_depth = _image_pixels(page, "without-depth", url)
            without_rgb = _image_pixels(page, "without-rgb", url)
            legend = page.locator("#legend li").all_inner_texts()
        finally:
            browser.close()
    expected = segmenter(rgb=rgb_path, depth=depth_path)
    assert len(np.unique(expected.labels)) > 1          # the comparisons below have teeth
    assert np.any(without_depth != shown) and np.any(without_rgb != shown)
    np.testing.assert_array_equal(shown, expected.colored)
    np.testing.assert_array_equal(overlay, expected.overlay)
    np.testing.assert_array_equal(without_depth, segmenter(rgb=rgb_path).colored)
    np.testing.assert_array_equal(without_rgb, segmenter(depth=depth_path).colored)
    assert [text.split(" (")[0] for text in legend] == [n for n, _, _ in expected.legend()]


def test_examples_and_views_without_a_browser(served, fixtures, tmp_path):
    from ssma_tf.app import segment_views, synthetic_examples
    from ssma_tf.errors import InputError

    segmenter, _ = served
    examples = synthetic_examples(str(tmp_path / "ex"), ["rgb", "depth"])
    assert len(examples) == 3 and all(os.path.isfile(p) for row in examples for p in row)
    assert [os.path.basename(os.path.dirname(p)) for p in examples[0]] == ["rgb", "depth"]
    assert synthetic_examples(str(tmp_path / "none"), ["rgb", "evi"]) == []
    labels, _, legend, without = segment_views(segmenter, {"rgb": fixtures[0], "depth": None})
    np.testing.assert_array_equal(labels, segmenter(rgb=fixtures[0]).colored)
    assert without == [None, None]        # rgb alone: nothing left to drop
    assert legend.count("<li") == len(segmenter(rgb=fixtures[0]).legend())
    with pytest.raises(InputError, match="upload at least one"):
        segment_views(segmenter, {"rgb": None, "depth": None})
