"""Search-space files: every shipped file loads; each kind of mistake is a UserError naming file and key."""

from pathlib import Path

import pytest

from glintru.distributed.capacity import Capacity, check_placeable, from_autoscaler_config, max_concurrent_trials
from glintru.errors import UserError
from glintru.tuning.settings import experiment_name
from glintru.tuning.space import load_search_space, search_space_dir, to_tune_space

SHIPPED = sorted(search_space_dir().glob("*.yaml"))


def test_shipped_files_cover_glintru_quick_and_every_baseline():
    assert {p.stem for p in SHIPPED} >= {"glintru", "quick", "sasrec", "narm", "gru4rec"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_file_loads(path):
    space = load_search_space(path)
    assert space.params


def test_glintru_space_searches_the_papers_three_knobs():
    space = load_search_space(search_space_dir() / "glintru.yaml")
    assert space.params["kernel_size"].values == (1, 3, 5, 7, 9)
    assert space.params["hidden_size"].values == (32, 64, 128, 256)
    p = space.params["mixing_init"]
    assert (p.kind, p.low, p.high) == ("uniform", 0.05, 0.95)
    assert space.params["lr"].kind == "loguniform"


def test_kernel_size_is_categorical_for_optuna():
    # qrandint maps to different value sets in Ray and in Optuna; choice is exact.
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from ray.tune.search.optuna import OptunaSearch

    space = load_search_space(search_space_dir() / "glintru.yaml")
    dists = dict(OptunaSearch.convert_search_space({k: v for k, v in to_tune_space(space).items() if k in space.params}))
    assert isinstance(dists["kernel_size"], CategoricalDistribution)
    assert list(dists["kernel_size"].choices) == [1, 3, 5, 7, 9]
    assert isinstance(dists["lr"], FloatDistribution) and dists["lr"].log
    assert (dists["mixing_init"].low, dists["mixing_init"].high) == (0.05, 0.95)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "body, expected",
    [
        ("model: glintru\nparams:\n  kernel_sise: {choice: [1, 3]}\n", "params.kernel_sise: unknown config key"),
        ("model: glintru\nparams:\n  lr: {loguniform: [0.01, 0.01]}\n", "params.lr: empty range"),
        ("model: glintru\nparams:\n  lr: {loguniform: [0.0, 0.01]}\n", "params.lr: loguniform needs low > 0"),
        ("model: glintru\nparams:\n  lr: {normal: [0.0, 0.01]}\n", "params.lr: unknown distribution 'normal'"),
        ("model: glintru\nparams:\n  kernel_size: {choice: []}\n", "params.kernel_size: choice needs a non-empty list"),
        ("model: glintru\nparams:\n  mixing_init: {uniform: [0.0, 1.0]}\n", "params.mixing_init: value 0.0 is not valid"),
        ("model: glintru\nparams:\n  hidden_size: {choice: [32, 56]}\n", "params.hidden_size: value 56 is not valid"),
        ("model: glintru\nfixed:\n  max_lenn: 5\nparams:\n  lr: {uniform: [0.1, 0.2]}\n", "fixed.max_lenn: unknown config key"),
        ("model: glintru\nparams:\n  lr: {uniform: [0.1, 0.2]}\ntune:\n  num_sample: 3\n", "tune.num_sample: unknown option"),
        ("model: bert4rec\nparams:\n  lr: {uniform: [0.1, 0.2]}\n", "model: expected one of"),
        ("model: glintru\nparams: {}\n", "params: expected a non-empty mapping"),
    ],
)
def test_bad_file_is_a_user_error_naming_file_and_key(tmp_path, body, expected):
    path = _write(tmp_path, body)
    with pytest.raises(UserError) as exc:
        load_search_space(path)
    assert str(path) in str(exc.value)
    assert expected in str(exc.value)


def test_experiment_name_is_deterministic_and_depends_on_options():
    space = load_search_space(search_space_dir() / "quick.yaml")
    a = experiment_name(space, "/d", {"num_samples": 4})
    assert a == experiment_name(space, "/d", {"num_samples": 4})
    assert a.startswith("glintru-") and len(a) == len("glintru-") + 12
    assert a != experiment_name(space, "/d", {"num_samples": 5})
    assert a != experiment_name(space, "/other", {"num_samples": 4})


def cap(cpus: float, gpus: float = 0.0, node_cpus: float | None = None, node_gpus: float | None = None) -> Capacity:
    return Capacity(cpus, gpus, cpus if node_cpus is None else node_cpus, gpus if node_gpus is None else node_gpus, "test")


@pytest.mark.parametrize(
    "workers, cpw, gpw, capacity, expected",
    [
        (2, 1.0, 0.0, cap(3.0), 1),  # Ray Train trial: 2 x 1 + 0.01 = 2.01 per trial
        (2, 1.0, 0.0, cap(8.0), 3),  # 8 / 2.01 = 3.98
        (1, 1.0, 0.0, cap(8.0), 8),  # in-process trial: 1 CPU each
        (1, 1.0, 0.0, cap(0.5), 1),  # never below 1
        (2, 1.0, 1.0, cap(64.0, 4.0), 2),  # GPUs bind: 4 // 2
        (1, 1.0, 0.5, cap(16.0, 1.0), 2),  # two trials share one GPU
    ],
)
def test_max_concurrent_trials(workers, cpw, gpw, capacity, expected):
    assert max_concurrent_trials(workers, cpw, gpw, capacity) == expected


def test_capacity_from_an_autoscaler_config_counts_workers_at_their_maximum():
    """A CPU head and GPU workers that autoscale from zero: concurrency is sized by the maximum."""
    config = {
        "max_workers": 3, "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 4}, "min_workers": 0, "max_workers": 0},
            "gpu": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 4},
        },
    }
    c = from_autoscaler_config(config, "cfg")
    assert (c.cpus, c.gpus, c.node_cpus, c.node_gpus) == (4 + 3 * 8, 3.0, 8.0, 1.0)  # global max_workers = 3
    assert max_concurrent_trials(1, 1.0, 0.5, c) == 6  # 3 GPUs / 0.5


@pytest.mark.parametrize(
    "workers, cpw, gpw, capacity, option",
    [
        (1, 1.0, 1.0, cap(8.0, 0.0), "--gpu: the cluster has no GPU"),
        (1, 1.0, 2.0, cap(16.0, 2.0, node_gpus=1.0), "--gpus-per-worker 2: no node has that many GPUs"),
        (2, 1.0, 1.0, cap(16.0, 1.0), "--workers 2 x --gpus-per-worker 1 = 2 GPUs per trial"),
        (4, 1.0, 0.0, cap(2.0), "--workers 4 x --cpus-per-worker 1 = 4.01 CPUs per trial"),
        (1, 4.0, 0.0, cap(8.0, node_cpus=2.0), "--cpus-per-worker 4: no node has that many CPUs"),
    ],
)
def test_requests_that_can_never_be_placed_are_refused(workers, cpw, gpw, capacity, option):
    with pytest.raises(UserError, match=option.replace("+", r"\+")):
        check_placeable(workers, cpw, gpw, capacity)
    check_placeable(1, 1.0, 0.0, cap(1.0))  # a request that fits passes
