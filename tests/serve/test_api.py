"""``pixelwise serve``'s API through Starlette's test client: every answer and every refusal."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from pixelwise.engine.checkpoint import load_model, save_checkpoint
from pixelwise.inference.tiling import predict as predict_tiled
from pixelwise.models import create_model
from pixelwise.serve import ServeSettings, create_app, load_for_serving
from pixelwise.serve.app import BoundedPool, Refused

CLASSES = ("background", "cell", "edge")
NORM = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=3, depth=2, base_width=4)
    folder = tmp_path_factory.mktemp("serve")
    return save_checkpoint(
        folder / "tiny.pt",
        model=model,
        class_names=CLASSES,
        ignore_index=255,
        normalisation=NORM,
        config={"train": {"epochs": 3}},
        epoch=3,
        metrics={"mean_iou": 0.5, "boundary_f1": float("nan")},
    )


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> TestClient:
    segmenter = load_for_serving(checkpoint)
    app = create_app(segmenter, ServeSettings(max_bytes=200_000, tile=64), name="tiny.pt")
    with TestClient(app) as test_client:
        yield test_client


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def picture(height: int = 40, width: int = 52, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def expected_mask(checkpoint: Path, pixels: np.ndarray, tile: int = 64) -> np.ndarray:
    """What the library predicts for the same image (the same tiling)."""
    image = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255)
    logits = predict_tiled(load_model(checkpoint), image, tile=tile)
    return logits.argmax(0).numpy()


def post(client: TestClient, body: bytes, query: str = "", kind: str = "image/png"):
    return client.post(f"/predict{query}", content=body, headers={"Content-Type": kind})


# --- answers -----------------------------------------------------------------------------------


def test_raw_body_returns_the_index_mask_the_library_predicts(client, checkpoint):
    pixels = picture(150, 130)  # larger than the 64-pixel tile: predicted in tiles
    answer = post(client, png(pixels))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    mask = np.array(Image.open(io.BytesIO(answer.content)))
    assert mask.shape == (150, 130) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected_mask(checkpoint, pixels))


def test_multipart_field_image_is_the_same_as_the_raw_body(client):
    body = png(picture(seed=3))
    raw = post(client, body)
    form = client.post("/predict", files={"image": ("cells.png", body, "image/png")})
    assert form.status_code == 200 and form.content == raw.content


def test_overlay_and_color_are_rgb_at_the_image_size(client):
    body = png(picture())
    for fmt in ("overlay", "color"):
        answer = post(client, body, f"?format={fmt}")
        assert answer.status_code == 200
        drawn = np.array(Image.open(io.BytesIO(answer.content)))
        assert drawn.shape == (40, 52, 3)
    clear = np.array(Image.open(io.BytesIO(post(client, body, "?format=overlay&alpha=0").content)))
    np.testing.assert_array_equal(clear, picture())  # opacity 0: the image itself


def test_json_gives_class_names_and_areas_that_add_up(client, checkpoint):
    pixels = picture(seed=5)
    answer = post(client, png(pixels), "?format=json")
    assert answer.status_code == 200
    table = answer.json()
    assert (table["height"], table["width"]) == (40, 52)
    assert [c["name"] for c in table["classes"]] == list(CLASSES)
    counts = np.bincount(expected_mask(checkpoint, pixels).ravel(), minlength=3)
    assert [c["pixels"] for c in table["classes"]] == counts.tolist()
    assert sum(c["fraction"] for c in table["classes"]) == pytest.approx(1, abs=1e-5)


def test_layers_hold_the_image_colour_and_index_mask_of_one_prediction(client):
    import base64

    body = png(picture(seed=7))
    layers = post(client, body, "?format=layers").json()
    decode = lambda key: np.array(Image.open(io.BytesIO(base64.b64decode(layers[key]))))  # noqa: E731
    np.testing.assert_array_equal(decode("image"), picture(seed=7))
    mask = np.array(Image.open(io.BytesIO(post(client, body).content)))
    np.testing.assert_array_equal(decode("mask"), mask)
    assert decode("color").shape == (40, 52, 3)


def test_instances_give_16_bit_object_labels_and_an_object_table(client):
    body = png(picture(seed=2))
    labels = np.array(Image.open(io.BytesIO(post(client, body, "?instances=1").content)))
    assert labels.dtype == np.uint16 and labels.shape == (40, 52)
    table = post(client, body, "?format=json&instances=1").json()
    assert len(table["objects"]) == len(np.unique(labels[labels > 0]))
    assert sum(o["area"] for o in table["objects"]) == int((labels > 0).sum())


def test_health_and_model(client, checkpoint):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny.pt"
    model = client.get("/model").json()
    assert model["class_names"] == list(CLASSES) and model["num_classes"] == 3
    assert model["model"] == "unet" and model["epoch"] == 3 and model["in_channels"] == 3
    assert model["metrics"] == {"mean_iou": 0.5, "boundary_f1": None}  # NaN is not JSON
    assert len(model["palette"]) == 3
    assert model["parameters"] == sum(
        p.numel()
        for p in create_model(
            "unet", num_classes=3, in_channels=3, depth=2, base_width=4
        ).parameters()
    )


def test_the_page_and_its_script_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="app.js">' in page.text and "http" not in page.text.lower().replace(
        "http-equiv", ""
    )  # nothing fetched from elsewhere
    script = client.get("/app.js")
    assert script.status_code == 200 and "predict?format=layers" in script.text


# --- refusals ----------------------------------------------------------------------------------


def one_line(answer, status: int) -> str:
    assert answer.status_code == status, answer.text
    text = answer.text
    assert text.endswith("\n") and text.count("\n") == 1
    return text


def test_declared_body_over_the_limit_is_413_before_it_is_read(client):
    text = one_line(post(client, b"\0" * 200_001), 413)
    assert "200,001 bytes" in text and "--max-upload-mb" in text


def test_streamed_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(30):
            yield b"\0" * 10_000

    answer = client.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert "200,000 bytes" in one_line(answer, 413)


def test_a_body_that_is_not_an_image_type_is_415(client):
    answer = post(client, b'{"a": 1}', kind="application/json")
    assert "Content-Type application/json" in one_line(answer, 415)


def test_bytes_that_are_not_an_image_are_400(client):
    assert "be an image" in one_line(post(client, b"hello, not a picture"), 400)
    assert "empty body" in one_line(post(client, b""), 400)


def test_a_truncated_image_is_400_naming_the_upload(client):
    body = png(picture(200, 200))
    text = one_line(post(client, body[: len(body) // 2]), 400)
    assert "uploaded image" in text and "pixelwise-serve" not in text  # no temp path


def test_wrong_channels_are_422(client):
    grey = np.zeros((30, 30), np.uint8)
    text = one_line(post(client, png(grey)), 422)
    assert "3 channel(s)" in text and "got 1" in text


def test_rgba_is_read_as_rgb_as_files_are(client):
    rgb = picture(seed=8)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    answer = post(client, png(rgba))
    assert answer.status_code == 200 and answer.content == post(client, png(rgb)).content


def test_bad_query_options_are_400_all_at_once(client):
    text = one_line(post(client, png(picture()), "?format=gif&alpha=3&instances=maybe"), 400)
    assert "format must be one of" in text and "alpha" in text and "instances" in text


def test_multipart_without_the_image_field_is_400(client):
    answer = client.post("/predict", files={"picture": ("a.png", png(picture()), "image/png")})
    assert "'image'" in one_line(answer, 400)


def test_a_full_queue_answers_503_with_retry_after(checkpoint):
    """One worker held busy and no room to wait: the next request is refused, not queued."""
    segmenter = load_for_serving(checkpoint)
    app = create_app(segmenter, ServeSettings(workers=1, queue=0, tile=64))
    release, started = threading.Event(), threading.Event()
    pool: BoundedPool = app.app.state.pool
    original = pool._executor.submit

    def blocked(fn, *args):
        def wait_then_run():
            started.set()
            release.wait(10)
            return fn(*args)

        return original(wait_then_run)

    pool._executor.submit = blocked
    with TestClient(app) as test_client:
        results = {}
        first = threading.Thread(
            target=lambda: results.setdefault("first", post(test_client, png(picture())))
        )
        first.start()
        assert started.wait(10)
        second = post(test_client, png(picture()))
        release.set()
        first.join(10)
    assert one_line(second, 503) and second.headers["retry-after"] == "1"
    assert results["first"].status_code == 200


def test_settings_refuse_bad_bounds():
    with pytest.raises(ValueError, match="workers"):
        ServeSettings(workers=0)
    with pytest.raises(ValueError, match="queue"):
        ServeSettings(queue=-1)
    assert issubclass(Refused, Exception)


def test_json_answers_are_plain_json(client):
    answer = post(client, png(picture()), "?format=json")
    assert json.loads(answer.content) == answer.json()
