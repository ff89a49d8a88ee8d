"""Malformed config files (``glintru train --config``) and search-space files (``glintru tune``):
any content gives a valid configuration or one single-line UserError naming the file (and the key
at fault), never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from glintru.cli import main
from glintru.config import RunConfig, build_config, config_keys, load_config_file, model_names
from glintru.errors import UserError
from glintru.tuning.space import DISTRIBUTIONS, SearchSpace, load_search_space

KEYS = sorted(config_keys("glintru"))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=6),
    st.sampled_from(["1e-3", "true", "3", "nan", "inf", "valid/full/ndcg@10", "last_position", "bf16"]),
)
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=5,
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.none(), st.booleans())
SETTINGS = settings(max_examples=150, deadline=None)


_TMP = tempfile.TemporaryDirectory(prefix="glintru-cfg-")


@pytest.fixture(scope="module", autouse=True)
def _remove_written_files():
    """Every example writes its own file under one directory, removed with the module's tests."""
    yield
    _TMP.cleanup()


def write(text: str | bytes, suffix: str) -> Path:
    d = Path(tempfile.mkdtemp(dir=_TMP.name))
    p = d / f"input{suffix}"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def dump(obj: object, suffix: str) -> str:
    return json.dumps(obj) if suffix == ".json" else yaml.safe_dump(obj)


def load_config(path: Path) -> RunConfig:
    """What ``glintru train --config PATH`` does with the file."""
    model, overrides = load_config_file(path)
    return build_config(model or "glintru", overrides, source=str(path))


def user_error(fn, path: Path) -> str | None:
    """Run ``fn(path)``; None if it succeeds, else the UserError's message (any other exception fails the test)."""
    try:
        fn(path)
    except UserError as exc:
        msg = str(exc)
        assert str(path) in msg, msg
        assert "\n" not in msg, msg
        return msg
    return None


# ---------------------------------------------------------------- config files


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".json"]))
def test_config_file_of_random_bytes(data, suffix):
    user_error(load_config, write(data, suffix))


@SETTINGS
@given(mapping=st.dictionaries(keys, values, max_size=4), suffix=st.sampled_from([".yaml", ".json"]))
def test_config_file_of_random_mappings(mapping, suffix):
    user_error(load_config, write(dump(mapping, suffix), suffix))


@SETTINGS
@given(key=keys, value=values, suffix=st.sampled_from([".yaml", ".json"]))
def test_a_bad_single_key_is_named(key, value, suffix):
    path = write(dump({key: value}, suffix), suffix)
    msg = user_error(load_config, path)
    if msg is not None and key != "model":
        named = json.loads(json.dumps({key: 0})).popitem()[0] if suffix == ".json" else key  # JSON keys are strings
        assert str(named) in msg or repr(named) in msg, msg


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        ("lr: 0.1\nhidden_size: [1\nn_heads: 2\n", ".yaml", "not a valid YAML file: line 3, column 8"),
        ('{"lr": 0.1,}', ".json", "not a valid JSON file: line 1"),
        ("- 1\n- 2\n", ".yaml", "expected a mapping"),
        ("1: 2\nlr: 0.1\n", ".yaml", "'1'"),
        ("null: 3\n", ".yaml", "'None'"),
        ("[" * 50000 + "]" * 50000, ".json", "nested too deeply"),
        ("[" * 50000 + "]" * 50000, ".yaml", "nested too deeply"),
        ("kernel_size: three\n", ".yaml", "field 'kernel_size': expected an integer"),
        ("lr: -1\n", ".yaml", "field 'lr'"),
        ("topk: []\n", ".yaml", "field 'topk'"),
        ("model: resnet\n", ".yaml", "unknown model 'resnet'"),
        ("lr: !!python/object/apply:os.system ['true']\n", ".yaml", "not a valid YAML file"),
    ],
)
def test_each_malformed_config_file_is_one_clear_error(text, suffix, expected):
    path = write(text, suffix)
    msg = user_error(load_config, path)
    assert msg is not None and expected in msg, msg


def test_train_with_a_malformed_config_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: glintru\nkernel_size: [3\n")
    assert main(["train", "--data", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: not a valid YAML file: line 3") and "\n" not in err


# ---------------------------------------------------------------- search-space files

distribution = st.one_of(
    st.dictionaries(st.sampled_from([*DISTRIBUTIONS, "normal"]), values, min_size=1, max_size=2),
    st.builds(lambda k, lo, hi: {k: [lo, hi]}, st.sampled_from(DISTRIBUTIONS), scalars, scalars),
    values,
)
space_docs = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(model_names()), values),
        "params": st.one_of(st.dictionaries(keys, distribution, max_size=3), values),
        "fixed": st.one_of(st.dictionaries(keys, values, max_size=2), values),
        "tune": st.one_of(st.dictionaries(st.one_of(st.sampled_from(["num_samples", "seed"]), keys), values, max_size=2), values),
        "extra": values,
    },
)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_search_space_of_random_bytes(data):
    user_error(load_search_space, write(data, ".yaml"))


@SETTINGS
@given(doc=space_docs)
def test_search_space_of_random_structures(doc):
    path = write(yaml.safe_dump(doc), ".yaml")
    try:
        space = load_search_space(path)
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), str(exc)
        return
    assert isinstance(space, SearchSpace) and space.params  # a loaded space is fully checked


@pytest.mark.parametrize("section", ["fixed", "params", "tune", "top"])
@pytest.mark.parametrize("key", ["\n", "lr\nx", " ", 3])
def test_an_odd_key_is_named_on_one_line(section, key):
    """Found by Hypothesis: a key holding a newline broke the one-line error message."""
    doc = {"model": "glintru", "params": {"lr": {"loguniform": [1e-4, 1e-2]}}}
    if section == "top":
        doc[key] = 1
    else:
        doc.setdefault(section, {})[key] = {"choice": [1]} if section == "params" else 1
    msg = user_error(load_search_space, write(yaml.safe_dump(doc), ".yaml"))
    assert "\n" not in msg and repr(key) in msg, msg


@SETTINGS
@given(key=st.sampled_from(["lr", "mixing_init", "emb_dropout"]), kind=st.sampled_from(["uniform", "loguniform"]),
       low=st.floats(0.01, 0.9), width=st.floats(-0.5, 0.0))
def test_an_empty_range_names_file_and_key(key, kind, low, width):
    path = write(yaml.safe_dump({"model": "glintru", "params": {key: {kind: [low, low + width]}}}), ".yaml")
    msg = user_error(load_search_space, path)
    assert msg is not None and f"params.{key}" in msg and "empty range" in msg, msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: glintru\n1: 2\nparams: {lr: {uniform: [0.1, 0.2]}}\n", "unknown top-level key(s) 1"),
        ("model: glintru\nparams: {null: {choice: [1]}, lr: {uniform: [0.1, 0.2]}}\n", "params.None"),
        ("[" * 50000 + "]" * 50000, "nested too deeply"),
        ("model: glintru\nparams: {lr: {uniform: [0.1, 0.2]}\n", "not a valid YAML file: line 3"),
        ("model: glintru\nparams: {kernel_size: {choice: [2.5]}}\n", "params.kernel_size"),
        ("model: glintru\nparams: {lr: {uniform: [0.2, 0.1]}}\n", "params.lr: empty range"),
        ("model: glintru\nparams: {lr: {uniform: [0.1]}}\n", "params.lr: uniform needs [low, high]"),
        ("model: glintru\nparams: {lr: {normal: [0.1, 0.2]}}\n", "unknown distribution 'normal'"),
        ("model: glintru\nparams: {lr: {uniform: [0.1, 0.2]}}\ntune: {num_samples: 0}\n", "tune.num_samples"),
        ("model: glintru\nparams: {hidden_sise: {choice: [64]}}\n", "params.hidden_sise: unknown config key"),
    ],
)
def test_each_malformed_search_space_is_one_clear_error(text, expected):
    path = write(text, ".yaml")
    msg = user_error(load_search_space, path)
    assert msg is not None and expected in msg, msg


def test_tune_with_a_malformed_search_space_exits_2_with_one_line(tmp_path, capsys):
    from glintru.tuning.smoke import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data")
    bad = tmp_path / "space.yaml"
    bad.write_text("model: glintru\nparams:\n  kernel_size: {choice: [3, 5]}\n  lr: {loguniform: [0.0, 0.1]}\n")
    assert main(["tune", "--data", str(data), "--search-space", str(bad), "--storage-path", str(tmp_path / "ray"),
                 "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}: params.lr: loguniform needs low > 0, got 0.0"


def test_a_directory_or_binary_file_given_as_config_or_search_space_is_one_clear_error(tmp_path):
    assert "is a directory; give a config file" in user_error(load_config, tmp_path)
    assert "is a directory; give a search-space YAML file" in user_error(load_search_space, tmp_path)
    binary = tmp_path / "x.yaml"
    binary.write_bytes(b"\x1f\x8b\x08\x00garbage")
    for load in (load_config, load_search_space):
        assert "x.yaml: not a valid YAML file" in user_error(load, binary)
