"""The web page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against a real server on loopback: pick an image, see the overlay drawn,
move the opacity slider, read the legend and the download link, and see a refusal shown.

Outside CI the test skips, saying why, when the browser or its driver is missing; in CI
(``CI`` set) a missing browser fails it, since ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from pixelwise.engine.checkpoint import save_checkpoint  # noqa: E402
from pixelwise.models import create_model  # noqa: E402
from pixelwise.serve import ServeSettings, create_app, load_for_serving  # noqa: E402

pytestmark = pytest.mark.slow

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _require_browser() -> None:
    if BROWSER and DRIVER:
        return
    why = "Debian's chromium and chromium-driver are not installed (apt install both)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; .ci/run installs them")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    _require_browser()
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=3, depth=2, base_width=4)
    folder = tmp_path_factory.mktemp("page")
    path = save_checkpoint(
        folder / "tiny.pt",
        model=model,
        class_names=("sky", "road", "car"),
        ignore_index=255,
        normalisation=None,
        config={},
        epoch=1,
        metrics={},
    )
    app = create_app(load_for_serving(path), ServeSettings(tile=64))
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/", folder
    running.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


PIXELS = """
const c = document.getElementById('view');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
return [c.width, c.height, Array.from(d)];
"""


def canvas(browser) -> np.ndarray:
    width, height, data = browser.execute_script(PIXELS)
    return np.asarray(data, dtype=np.int32).reshape(height, width, 4)[..., :3]


def upload(browser, path: Path) -> None:
    field = browser.find_element(By.ID, "file")
    browser.execute_script("arguments[0].hidden = false; arguments[0].value = '';", field)
    field.send_keys(str(path))


def test_the_page_draws_the_overlay_with_legend_slider_and_download(server, browser):
    url, folder = server
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = folder / "street.png"
    Image.fromarray(pixels).save(image)
    browser.get(url)
    WebDriverWait(browser, 20).until(lambda b: "3 classes" in b.find_element(By.ID, "model").text)
    upload(browser, image)
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.ID, "view").get_attribute("data-drawn")
    )
    assert "street.png: 64 × 48 pixels" in browser.find_element(By.ID, "status").text

    half = canvas(browser)
    assert half.shape == (48, 64, 3)
    assert np.abs(half - pixels).mean() > 5  # the colour mask is drawn over the image

    legend = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert [t.split(":")[0] for t in legend] == ["sky", "road", "car"]
    shares = sum(float(t.split(":")[1].strip(" %")) for t in legend)
    assert shares == pytest.approx(100, abs=0.2)
    link = browser.find_element(By.ID, "download")
    assert link.is_displayed() and link.get_attribute("download") == "street_mask.png"
    assert link.get_attribute("href").startswith("data:image/png;base64,")

    slider = browser.find_element(By.ID, "opacity")
    browser.execute_script(
        "arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider
    )
    np.testing.assert_array_equal(canvas(browser), pixels)  # opacity 0: the image alone
    browser.execute_script(
        "arguments[0].value = 100; arguments[0].dispatchEvent(new Event('input'));", slider
    )
    full = canvas(browser)
    # Opacity 1: only palette colours, one per class.
    assert len(np.unique(full.reshape(-1, 3), axis=0)) <= 3


def test_the_page_shows_a_refusal_in_one_line(server, browser):
    url, folder = server
    grey = folder / "grey.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(grey)
    browser.get(url)
    upload(browser, grey)
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 30).until(lambda b: "422" in status.text)
    assert "3 channel(s)" in status.text and status.get_attribute("class") == "error"


DROP = """
const [b64, name] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, { type: "image/png" }));
document.getElementById("drop").dispatchEvent(
  new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true })
);
"""


def test_dropping_an_image_on_the_page_predicts_it(server, browser):
    import base64

    url, folder = server
    pixels = np.random.default_rng(4).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    image = folder / "dropped.png"
    Image.fromarray(pixels).save(image)
    browser.get(url)
    browser.execute_script(DROP, base64.b64encode(image.read_bytes()).decode(), "dropped.png")
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 30).until(lambda b: "dropped.png: 56 × 40 pixels" in status.text)
    assert canvas(browser).shape == (40, 56, 3)
