"""Run configs: TOML files, ``--set`` overrides, did-you-mean errors, the TOML round trip."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import pixelwise
from pixelwise.config import (
    DEFAULT_MODEL_OPTIONS,
    MAX_NESTING,
    RunConfig,
    dump_toml,
    load_config,
    parse_override,
    parse_value,
)


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_no_file_is_the_built_in_job():
    config = load_config()
    assert config == RunConfig()
    assert config.data.layout == "synthetic"
    assert config.model.name == "unet" and config.model.options == DEFAULT_MODEL_OPTIONS
    assert config.loss.name == "weighted_ce" and config.optim.name == "adam"


def test_file_values_and_defaults(tmp_path):
    path = write(
        tmp_path,
        """
[data]
crop_size = [64, 48]
[model]
options = { depth = 2, base_width = 8 }
[optim]
name = "sgd"
lr = 0.05
nesterov = true
[train]
epochs = 3
""",
    )
    config = load_config(path)
    assert config.data.crop_size == (64, 48)
    # A file's options table is the whole table: the built-in job's batch_norm is not added.
    assert config.model.options == {"depth": 2, "base_width": 8}
    assert (config.optim.name, config.optim.lr, config.optim.nesterov) == ("sgd", 0.05, True)
    assert config.train.epochs == 3 and config.train.batch_size == RunConfig().train.batch_size


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("train.epochs=5", "train", "epochs", 5),
        ("optim.lr=1e-4", "optim", "lr", 1e-4),
        ("train.amp=false", "train", "amp", False),
        ("train.device=cpu", "train", "device", "cpu"),  # a bare string
        ('train.out_dir="123"', "train", "out_dir", "123"),  # quoted: a string, not an int
        ("data.crop_size=[40, 32]", "data", "crop_size", (40, 32)),
        ("train.channels_last=true", "train", "channels_last", True),
        ("optim.weight_decay=0", "optim", "weight_decay", 0.0),
    ],
)
def test_overrides_parse_toml_literals(override, section, key, expected):
    value = getattr(getattr(load_config(None, [override]), section), key)
    assert value == expected and type(value) is type(expected)


def test_nested_override_merges_into_the_options():
    config = load_config(None, ["model.options.depth=2"])
    assert config.model.options == {**DEFAULT_MODEL_OPTIONS, "depth": 2}


def test_later_overrides_win_over_earlier_ones_and_the_file(tmp_path):
    path = write(tmp_path, "[train]\nepochs = 7\n")
    config = load_config(path, ["train.epochs=3", "train.epochs=4"])
    assert config.train.epochs == 4


def test_changing_the_model_starts_from_its_own_options():
    config = load_config(None, ["model.name=segnet_basic"])
    assert config.model.options == {}
    config = load_config(None, ["model.name=segnet_basic", "model.options.width=8"])
    assert config.model.options == {"width": 8}


def test_changing_the_layout_drops_the_built_in_augmentation(tmp_path):
    config = load_config(None, ["data.layout=folders", f"data.root={tmp_path}"])
    assert config.data.layout == "folders" and config.data.hflip is False


@pytest.mark.parametrize(
    ("override", "pieces"),
    [
        ("train.epcohs=3", ["key of [train]", "'epcohs'", "did you mean 'epochs'?"]),
        ("trian.epochs=3", ["section", "'trian'", "did you mean 'train'?"]),
        ("data.crop_sz=3", ["key of [data]", "did you mean 'crop_size'?"]),
        ("model.options.dpeth=2", ["model.options.dpeth", "did you mean 'depth'?"]),
        ("model.name=unte", ["model name", "did you mean 'unet'?", "--set"]),
        ("loss.name=dice_ce", ["loss.name (--set) must be one of", "did you mean 'dice'?"]),
        ("train.epochs=0", ["train.epochs (--set) must be an integer >= 1, got 0"]),
        ("train.epochs=ten", ["train.epochs (--set) must be an integer >= 1, got 'ten'"]),
        ("optim.lr=-1", ["optim.lr (--set) must be a finite number > 0.0"]),
        ("optim.nesterov=true", ["optim.nesterov", "sgd"]),
        ("model.options.num_classes=3", ["model.options.num_classes", "taken from the data"]),
        ("train.normalisation=fixed", ["train.normalisation", "mean and std"]),
        ("train.epochs", ["override must look like section.key=value"]),
        ("train.val_every=0", ["train.val_every (--set) must be an integer >= 1, got 0"]),
        ("train.time_limit_minutes=-1", ["train.time_limit_minutes (--set) must be a finite"]),
        ("train.snapshot_minutes=15", ["train.snapshot_minutes (--set) must be a list", "15"]),
        ("train.snapshot_minutes=[0, 5]", ["train.snapshot_minutes (--set) must be a finite"]),
        ("train.snapshot_minutes=[30, 15]", ["must increase strictly, got [30.0, 15.0]"]),
    ],
)
def test_bad_overrides_are_one_line(override, pieces):
    with pytest.raises(ValueError) as info:
        load_config(None, [override])
    text = str(info.value)
    assert "\n" not in text
    for piece in pieces:
        assert piece in text


def test_errors_name_the_file(tmp_path):
    path = write(tmp_path, "[train]\nepcohs = 3\n")
    with pytest.raises(
        ValueError, match=r"key of \[train\] in .*run\.toml must be known.*'epochs'"
    ):
        load_config(path)
    path = write(tmp_path, "[train]\nepochs = 0\n")
    with pytest.raises(ValueError, match=r"train\.epochs \(.*run\.toml\) must be an integer"):
        load_config(path)
    path = write(tmp_path, '[data]\nlayout = "folders"\n')
    with pytest.raises(ValueError, match=r"data root .* must be given.*run\.toml"):
        load_config(path)


def test_malformed_and_missing_files(tmp_path):
    path = write(tmp_path, "[train]\nepochs = \n")
    with pytest.raises(ValueError, match=r"config file .*run\.toml must be valid TOML"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match=r"config file .*nope\.toml must exist"):
        load_config(tmp_path / "nope.toml")


def test_toml_round_trip(tmp_path):
    config = load_config(
        None,
        [
            "data.crop_size=[40, 32]",
            "data.scale=[0.8, 1.2]",
            "data.elastic_std=4.5",
            "model.options={depth=2, base_width=4, padding='same'}",
            "loss.name=ce_dice",
            "loss.class_weights=median_frequency",
            "optim.name=sgd",
            "optim.nesterov=true",
            "schedule.name=cosine",
            "train.normalisation=fixed",
            "train.mean=[0.5]",
            "train.std=[0.25]",
            "train.grad_clip=1.5",
            "train.out_dir=some dir/with 'quotes'",
        ],
    )
    path = write(tmp_path, config.to_toml())
    assert load_config(path) == config
    assert RunConfig.from_dict(config.to_dict()) == config


def test_encoding_tables_round_trip(tmp_path):
    encoding = {"kind": "values", "value_map": {"0": 0, "255": 1}}
    text = dump_toml({"data": {"layout": "folders", "root": str(tmp_path), "encoding": encoding}})
    config = load_config(write(tmp_path, text))
    assert config.to_dict()["data"]["encoding"] == encoding
    assert load_config(write(tmp_path, config.to_toml(), "again.toml")) == config


def test_base_replaces_the_built_in_defaults():
    base = load_config(None, ["train.epochs=2", "train.batch_size=3"]).to_dict()
    config = load_config(None, ["train.epochs=5"], base=base)
    assert (config.train.epochs, config.train.batch_size) == (5, 3)


def test_parse_helpers():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("runs/x") == "runs/x"
    assert parse_override("model.options.depth=2") == {"model": {"options": {"depth": 2}}}


def test_configs_are_frozen():
    config = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 3


def test_time_budget_keys(tmp_path):
    path = write(
        tmp_path,
        "[train]\ntime_limit_minutes = 60\nsnapshot_minutes = [15, 30, 60]\nval_every = 5\n",
    )
    train = load_config(path).train
    assert train.time_limit_minutes == 60.0 and train.snapshot_minutes == (15.0, 30.0, 60.0)
    assert train.val_every == 5
    assert load_config(write(tmp_path, load_config(path).to_toml(), "again.toml")) == load_config(
        path
    )
    defaults = RunConfig().train
    assert (defaults.time_limit_minutes, defaults.snapshot_minutes, defaults.val_every) == (
        0.0,
        (),
        1,
    )
    # Without a limit any mark is allowed; with one, a mark past it would never be reached.
    assert load_config(None, ["train.snapshot_minutes=[90]"]).train.snapshot_minutes == (90.0,)
    with pytest.raises(ValueError) as info:
        load_config(path, ["train.snapshot_minutes=[15, 90]"])
    assert str(info.value) == (
        "train.snapshot_minutes (--set) must lie within train.time_limit_minutes (60), "
        "got [15.0, 90.0]; raise the limit or drop the later marks"
    )


# --- paths: a file's relative to its folder, an override's to the current folder -------------


def test_file_paths_are_relative_to_the_file_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    (folder / "data").mkdir(parents=True)
    write(
        folder,
        '[data]\nlayout = "folders"\nroot = "data"\n'
        'encoding = { kind = "palette", palette = "colors.png" }\n'
        '[train]\nout_dir = "runs"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "exp" / "run.toml")  # a relative path to the file
    assert config.data.root == str((folder / "data").resolve())
    assert config.data.encoding == {
        "kind": "palette",
        "palette": str(folder.resolve() / "colors.png"),
    }
    # Where runs go follows the folder pixelwise runs in, like --out-dir.
    assert config.train.out_dir == "runs"


def test_override_paths_are_relative_to_the_current_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    path = write(folder, '[data]\nlayout = "folders"\nroot = "data"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(path, ["data.root=x", "data.encoding.palette=p.png"])
    assert config.data.root == str(tmp_path.resolve() / "x")
    assert config.data.encoding == {"palette": str(tmp_path.resolve() / "p.png")}


def test_absolute_paths_are_kept_as_written(tmp_path):
    root = tmp_path / "some" / ".." / "data"
    path = write(tmp_path, f'[data]\nlayout = "folders"\nroot = "{root.as_posix()}"\n')
    assert load_config(path).data.root == root.as_posix()
    assert load_config(None, ["data.layout=folders", f"data.root={root}"]).data.root == str(root)


def test_written_config_reads_back_to_the_same_data_from_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = RunConfig.from_dict({"data": {"layout": "folders", "root": "data"}})
    assert config.data.root == "data"  # a RunConfig's paths are relative to the current folder
    run = tmp_path / "runs" / "one"
    run.mkdir(parents=True)
    again = load_config(write(run, config.to_toml(), "config.toml"))
    assert again.data.root == str(tmp_path.resolve() / "data")
    assert load_config(write(run, again.to_toml(), "again.toml")) == again


# --- what reading a config costs ------------------------------------------------------------


def test_config_module_imports_no_data_models_or_torchvision():
    """pixelwise.config on its own (the package's __init__ skipped) loads only _checks,
    _metric_names and _toml of the package: the data sets, the models and torchvision stay unloaded until a command needs
    them. DataConfig lives here for that reason."""
    code = (
        "import sys, types\n"
        "package = types.ModuleType('pixelwise')\n"
        f"package.__path__ = [{str(Path(pixelwise.__file__).parent)!r}]\n"
        "sys.modules['pixelwise'] = package\n"
        "import pixelwise.config\n"
        "print(sorted(m for m in sys.modules if m.startswith('pixelwise')))\n"
        "print('torchvision' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "['pixelwise', 'pixelwise._checks', 'pixelwise._metric_names', 'pixelwise._toml', "
        "'pixelwise.config']",
        "False",
    ]


def test_bad_values_name_their_origin_without_hidden_state(tmp_path):
    # Built directly, a section names its key only; through load_config, also where it came from.
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({"train": {"epochs": 0}})
    assert str(info.value) == "train.epochs must be an integer >= 1, got 0"
    path = write(tmp_path, "[model]\noptions = { depht = 2 }\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value).startswith(f"model.options.depht ({path}) must name an option of model")


def test_a_data_path_with_the_built_in_data_is_refused_not_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        load_config(None, ["data.root=mydata"])
    assert str(info.value) == (
        "data.root must go with a layout that reads files (folders, camvid, instances, tiff), "
        f"got layout 'synthetic' (the built-in data) and root = '{tmp_path / 'mydata'}'; set "
        "data.layout too, e.g. --set data.layout=folders, or leave the path out (in --set)"
    )
    with pytest.raises(ValueError, match=r"^data\.images must go with a layout that reads files"):
        load_config(None, ["data.images=imgs"])


SCALE_RANGE = "be a finite number > 0.0 and <= 1.0"
UNIT_RANGE = "be a finite number >= 0.0 and <= 1.0"


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ('data.hflip="yes"', "data.hflip (--set) must be true or false, got 'yes'"),
        ("data.rot90=1", "data.rot90 (--set) must be true or false, got 1"),
        ("data.elastic_std=-1", "data.elastic_std (--set) must be a finite number >= 0.0, got -1"),
        ("data.colour_jitter=1.5", f"data.colour_jitter (--set) must {UNIT_RANGE}, got 1.5"),
        ("data.invert=-0.5", f"data.invert (--set) must {UNIT_RANGE}, got -0.5"),
        ("data.input_scale=0", f"data.input_scale (--set) must {SCALE_RANGE}, got 0"),
        ("data.input_scale=1.5", f"data.input_scale (--set) must {SCALE_RANGE}, got 1.5"),
        ("data.input_scale=nan", f"data.input_scale (--set) must {SCALE_RANGE}, got nan"),
        ("data.input_scale=true", f"data.input_scale (--set) must {SCALE_RANGE}, got True"),
        ('data.input_scale="half"', f"data.input_scale (--set) must {SCALE_RANGE}, got 'half'"),
    ],
)
def test_data_flags_and_strengths_are_checked_where_they_are_set(override, error):
    with pytest.raises(ValueError) as info:
        load_config(None, [override])
    assert str(info.value) == error


def test_input_scale_multiplies_the_training_scale_range():
    config = load_config(None, ["data.input_scale=0.5"])
    assert config.data.input_scale == 0.5 and config.data.training_scale == (0.5, 0.5)
    ranged = load_config(None, ["data.input_scale=0.25", "data.scale=[0.8, 1.2]"])
    assert ranged.data.training_scale == (0.2, 0.3)
    assert load_config(None, ["data.scale=[0.8, 1.2]"]).data.training_scale == (0.8, 1.2)
    assert load_config(None, []).data.training_scale is None
    assert RunConfig.from_dict(config.to_dict()).data.input_scale == 0.5


def test_input_scale_is_refused_with_a_valid_padding_unet():
    overrides = ["data.input_scale=0.5", "model.options={depth=2, padding='valid'}"]
    with pytest.raises(ValueError) as info:
        load_config(None, overrides)
    assert str(info.value) == (
        "data.input_scale (--set) must be 1 with model.options.padding = 'valid', got 0.5; "
        "set model.options.padding = 'same', or leave data.input_scale at 1"
    )
    same = load_config(None, ["data.input_scale=0.5", "model.options={depth=2, padding='same'}"])
    assert same.data.input_scale == 0.5
    assert load_config(None, ["model.options={depth=2, padding='valid'}"]).data.input_scale == 1


FOLDERS = ["data.layout=folders", "data.root=/data", 'data.encoding={kind="index",num_classes=2}']
ENC = "data.encoding (--set) must be a table (a TOML inline table or JSON)"


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ('data.crop_size="big"', "data.crop_size (--set) must be an integer >= 1, got 'big'"),
        (
            "data.crop_size=[1, 2, 3]",
            "data.crop_size (--set) must be an int or [h, w], got [1, 2, 3]",
        ),
        (
            "data.crop_size=100000",
            "data.crop_size (--set) must have at most 178,956,970 pixels (the image size limit), "
            "got 100000×100000 = 10,000,000,000; crop smaller than the images",
        ),
        (
            "data.scale=nan",
            "data.scale (--set) must be a range [low, high], got nan; e.g. [0.75, 1.25]",
        ),
        ("data.scale=[0, 1]", "data.scale (--set) must be a finite number > 0.0, got 0"),
        (
            'data.val_fraction="x"',
            "data.val_fraction (--set) must lie strictly between 0 and 1, got 'x'",
        ),
        ("data.channels=0", "data.channels (--set) must be an integer >= 1, got 0"),
        ("data.images=3", "data.images (--set) must be a path (a non-empty string), got 3"),
        (
            'data.class_names=["a", "b", "a"]',
            "data.class_names (--set) must be distinct, got 'a' repeated; rename them",
        ),
        (
            'data.class_names=["", "b"]',
            "data.class_names (--set) must be non-empty strings, got ''; name every class",
        ),
        (
            "data.encoding=3",
            f'{ENC}, got 3; e.g. {{ kind = "values", value_map = {{ "0" = 0, "255" = 1 }} }}',
        ),
        (
            'data.encoding={kind="values",value_map={"0"=0,"255"=1.5}}',
            "encoding value_map['255'] must be an integer, got 1.5 (data.encoding in --set)",
        ),
        (
            'data.encoding={kind="values",value_map={"x"=0}}',
            "encoding value_map key must be an integer, got 'x' (data.encoding in --set)",
        ),
        (
            "train.epochs=1000000000000000000000000000000",
            "train.epochs (--set) must be an integer <= 9223372036854775807 (64 bits), got 1e+30",
        ),
        ("train.mean=[nan]", "train.mean (--set) must be a finite number, got nan"),
        ('model.options.depth="3"', "model.options.depth (--set) must be an integer >= 1, got '3'"),
        (
            "model.options.depth=20",
            "model 'unet' with in_channels=3, depth=20, base_width=16, batch_norm=True must have "
            "at most 2,147,483,648 parameters, got 8,350,424,527,181,634; use smaller options "
            "(depth, widths) (model.options in --set)",
        ),
    ],
)
def test_every_data_train_and_model_value_is_named_with_its_key(override, error):
    with pytest.raises(ValueError) as info:
        load_config(None, [*FOLDERS, override] if override.startswith("data.") else [override])
    assert str(info.value) == error


def test_num_workers_is_bounded_not_started_by_the_million():
    with pytest.raises(ValueError) as info:
        load_config(None, ["train.num_workers=1000000"])
    assert str(info.value).startswith(
        "train.num_workers (--set) must be at most 256 (loader processes), got 1000000; use "
        "about one per CPU core ("
    )


def test_nesting_is_bounded_in_files_and_overrides(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("[model]\noptions = { a = " + "[" * 2000 + "]" * 2000 + " }\n")
    with pytest.raises(ValueError) as info:  # tomllib would recurse past Python's limit
        load_config(deep)
    assert str(info.value) == (
        f"config file {deep} must nest tables and arrays at most {MAX_NESTING} levels deep, got "
        "far deeper; flatten it"
    )
    deep.write_text("[model]\noptions = { a = " + "[" * 20 + "]" * 20 + " }\n")
    with pytest.raises(ValueError, match=r"got deeper at model\.options\.a\[0\]"):
        load_config(deep)
    with pytest.raises(ValueError) as info:
        load_config(None, ["model.options.a=" + "[" * 5000 + "]" * 5000])
    text = str(info.value)
    assert "\n" not in text and len(text) < 300 and "(10000 characters)" in text
    shallow = "[" * (MAX_NESTING - 2) + "1" + "]" * (MAX_NESTING - 2)  # model.options.a[…]
    value = parse_override(f"model.options.a={shallow}")["model"]["options"]["a"]
    for _ in range(MAX_NESTING - 3):
        value = value[0]
    assert value == [1]


# --- data.encoding given as text ------------------------------------------------------------

BINARY_TABLE = {"kind": "values", "value_map": {"0": 0, "255": 1}}


@pytest.mark.parametrize(
    "text",
    [
        '{ kind = "values", value_map = { "0" = 0, "255" = 1 } }',
        '{"kind": "values", "value_map": {"0": 0, "255": 1}}',
    ],
    ids=["toml", "json"],
)
def test_set_encoding_takes_a_toml_inline_table_or_json(tmp_path, text):
    overrides = ["data.layout=folders", f"data.root={tmp_path}", f"data.encoding={text}"]
    config = load_config(None, overrides)
    assert config.data.encoding == BINARY_TABLE
    assert load_config(write(tmp_path, config.to_toml())) == config


def test_a_string_encoding_in_a_file_is_read_with_its_palette_relative_to_the_file(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    path = write(
        folder,
        '[data]\nlayout = "folders"\nroot = "data"\n'
        'encoding = \'{"kind": "palette", "palette": "colors.png"}\'\n',
    )
    assert load_config(path).data.encoding == {
        "kind": "palette",
        "palette": str(folder.resolve() / "colors.png"),
    }


@pytest.mark.parametrize("text", ["values", "{kind: index}", "3"])
def test_set_encoding_that_is_no_table_names_the_key_and_the_spelling(tmp_path, text):
    overrides = ["data.layout=folders", f"data.root={tmp_path}", f"data.encoding={text}"]
    with pytest.raises(ValueError) as info:
        load_config(None, overrides)
    shown = repr(3) if text == "3" else repr(text)
    assert str(info.value) == (
        f"data.encoding (--set) must be a table (a TOML inline table or JSON), got {shown}; "
        'e.g. { kind = "values", value_map = { "0" = 0, "255" = 1 } }'
    )


def test_a_string_encoding_in_a_file_that_is_no_table_names_the_file(tmp_path):
    path = write(tmp_path, '[data]\nlayout = "folders"\nroot = "d"\nencoding = "values"\n')
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value).startswith(
        f"data.encoding ({path}) must be a table (a TOML inline table or JSON), got 'values'; "
    )


def test_an_encoding_of_another_kind_replaces_the_files_encoding(tmp_path):
    path = write(
        tmp_path,
        '[data]\nlayout = "folders"\nroot = "d"\n'
        'encoding = { kind = "index", num_classes = 11, ignore_values = [11] }\n',
    )
    json_text = '{"kind": "values", "value_map": {"0": 0, "255": 1}}'
    assert load_config(path, [f"data.encoding={json_text}"]).data.encoding == BINARY_TABLE
    # The same kind still merges key by key, as every nested --set table does.
    merged = load_config(path, ["data.encoding={ num_classes = 12 }"]).data.encoding
    assert merged == {"kind": "index", "num_classes": 12, "ignore_values": [11]}


def test_written_configs_spell_value_maps_as_run_files_do(tmp_path):
    data = {"layout": "folders", "root": str(tmp_path), "encoding": BINARY_TABLE}
    config = RunConfig.from_dict({"data": data})
    assert 'encoding = { kind = "values", value_map = { "0" = 0, "255" = 1 } }' in (
        config.to_toml().splitlines()
    )
