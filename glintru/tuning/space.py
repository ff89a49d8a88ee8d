"""Search-space files (``search_spaces/*.yaml``): load, check against the config, convert to Tune.

A search-space file is data, checked against :mod:`glintru.config` when it is loaded::

    model: glintru                 # a model name of glintru.config
    fixed:                         # flat config keys held constant in every trial (optional)
      max_len: 50
    params:                        # flat config keys searched by Optuna
      kernel_size: {choice: [1, 3, 5, 7, 9]}     # categorical (qrandint maps to other values in Optuna)
      mixing_init: {uniform: [0.05, 0.95]}       # GRU expert share p: 0 < p < 1, an open interval
      lr: {loguniform: [1.0e-4, 1.0e-2]}
      n_layers: {randint: [1, 4]}                # integers low..high-1, like tune.randint
    tune:                          # defaults of `glintru tune` options (optional; CLI flags win)
      num_samples: 4
      max_epochs: 3
      workers: 2

Every key of ``fixed`` and ``params`` must be a flat key of the model; every choice and both ends of
every range must be a valid value (checked with :func:`glintru.config.build_config`), so a study never
starts with a trial that would fail on its configuration. Errors name the file and the key.
This module does not import Ray; :func:`to_tune_space` does, lazily.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glintru.config import build_config, config_keys, model_names, parse_error_message
from glintru.errors import UserError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
TUNE_KEYS = {
    "num_samples": int,
    "max_epochs": int,
    "workers": int,
    "grace_period": int,
    "seed": int,
}


@dataclass(frozen=True)
class ParamSpec:
    """One searched key: ``kind`` in :data:`DISTRIBUTIONS`; ``values`` (choice) or ``low``/``high``."""

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0


@dataclass(frozen=True)
class SearchSpace:
    """A loaded, validated search-space file."""

    path: Path
    model: str
    fixed: dict[str, Any]
    params: dict[str, ParamSpec]
    tune: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """12 hex chars identifying model, fixed values and ranges (not the file's path)."""
        payload = {
            "model": self.model,
            "fixed": self.fixed,
            "params": {k: [p.kind, list(p.values), p.low, p.high] for k, p in sorted(self.params.items())},
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def search_space_dir() -> Path:
    """The shipped search spaces: the package ``glintru.search_spaces`` (``search_spaces/`` of the
    repository, installed inside the package by pyproject.toml; a wheel install has it too)."""
    from importlib import resources

    return Path(str(resources.files("glintru.search_spaces")))


def resolve_profile(name: str) -> Path:
    """``--profile quick`` -> ``search_spaces/quick.yaml``."""
    path = search_space_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in search_space_dir().glob("*.yaml"))
        raise UserError(f"--profile {name}: no file {path}; known profiles: {', '.join(known) or 'none'}")
    return path


def _number(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{path}: params.{key}: range bounds must be numbers, got {value!r}")
    return float(value)


def _parse_param(path: Path, key: str, raw: Any) -> ParamSpec:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise UserError(
            f"{path}: params.{key}: expected one distribution such as {{choice: [...]}} or "
            f"{{uniform: [low, high]}}; known distributions: {', '.join(DISTRIBUTIONS)}"
        )
    kind, arg = next(iter(raw.items()))
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{path}: params.{key}: unknown distribution '{kind}'; use one of {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise UserError(f"{path}: params.{key}: choice needs a non-empty list of values, got {arg!r}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in arg}) != len(arg):
            raise UserError(f"{path}: params.{key}: choice lists a value twice: {arg!r}")
        return ParamSpec(key, kind, values=tuple(arg))
    if not isinstance(arg, list) or len(arg) != 2:
        raise UserError(f"{path}: params.{key}: {kind} needs [low, high], got {arg!r}")
    low, high = (_number(path, key, v) for v in arg)
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise UserError(f"{path}: params.{key}: randint bounds must be integers, got {arg!r}")
    if not low < high:
        raise UserError(f"{path}: params.{key}: empty range [{arg[0]}, {arg[1]}] (need low < high)")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{path}: params.{key}: loguniform needs low > 0, got {arg[0]}")
    return ParamSpec(key, kind, low=low, high=high)


def _candidate_values(p: ParamSpec) -> list[Any]:
    """Values that must each give a valid config: every choice, or both ends of a range."""
    if p.kind == "choice":
        return list(p.values)
    if p.kind == "randint":
        return [int(p.low), int(p.high) - 1]
    return [p.low, p.high]


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; :class:`UserError` names the file and key."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory; give a search-space YAML file (see search_spaces/)")
    if not p.is_file():
        raise UserError(f"{p}: search-space file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{p}: not a valid YAML file: {parse_error_message(exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping with keys model, params (and optionally fixed, tune)")
    unknown_top = sorted(_shown(k) for k in data if k not in ("model", "fixed", "params", "tune"))
    if unknown_top:
        raise UserError(f"{p}: unknown top-level key(s) {', '.join(unknown_top)}; expected model, fixed, params, tune")
    model = data.get("model")
    if model not in model_names():
        raise UserError(f"{p}: model: expected one of {', '.join(model_names())}, got {model!r}")
    keys = config_keys(model)
    fixed = data.get("fixed") or {}
    params_raw = data.get("params")
    tune_raw = data.get("tune") or {}
    for section, value in (("fixed", fixed), ("tune", tune_raw)):
        if not isinstance(value, dict):
            raise UserError(f"{p}: {section}: expected a mapping, got {type(value).__name__}")
    if not isinstance(params_raw, dict) or not params_raw:
        raise UserError(f"{p}: params: expected a non-empty mapping of searched config keys")
    for section, names in (("fixed", fixed), ("params", params_raw)):
        for key in names:
            if key not in keys:
                raise UserError(
                    f"{p}: {section}.{_shown(key)}: unknown config key for model '{model}'; valid keys: "
                    f"{', '.join(sorted(keys))}"
                )
    both = sorted(set(fixed) & set(params_raw))
    if both:
        raise UserError(f"{p}: params.{both[0]}: also listed under fixed; a key is either fixed or searched")
    build_config(model, fixed, source=f"{p}: fixed")
    params = {key: _parse_param(p, key, raw) for key, raw in params_raw.items()}
    for spec in params.values():
        for value in _candidate_values(spec):
            try:
                build_config(model, {**fixed, spec.name: value}, source="check")
            except UserError as exc:
                reason = str(exc).split(": ", 1)[-1]
                raise UserError(f"{p}: params.{spec.name}: value {value!r} is not valid: {reason}") from None
    tune_cfg: dict[str, int] = {}
    for key, value in tune_raw.items():
        if key not in TUNE_KEYS:
            raise UserError(f"{p}: tune.{_shown(key)}: unknown option; known: {', '.join(TUNE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{p}: tune.{key}: expected an integer >= 1, got {value!r}")
        tune_cfg[key] = value
    return SearchSpace(path=p, model=model, fixed=dict(fixed), params=params, tune=tune_cfg)


def _shown(key: Any) -> str:
    """A key as an error message shows it: as written when it is a printable string, else its repr
    (a key holding a newline or a non-string key stays on the message's one line)."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() == key and key else repr(key)


def to_tune_space(space: SearchSpace) -> dict[str, Any]:
    """Ray Tune ``param_space``: searched keys as Tune domains, fixed keys as constants.

    ``choice`` -> ``tune.choice`` (Optuna: CategoricalDistribution), ``uniform``/``loguniform`` ->
    FloatDistribution (log for the latter), ``randint`` -> IntDistribution over low..high-1.
    """
    from ray import tune

    out: dict[str, Any] = dict(space.fixed)
    for key, p in space.params.items():
        if p.kind == "choice":
            out[key] = tune.choice(list(p.values))
        elif p.kind == "uniform":
            out[key] = tune.uniform(p.low, p.high)
        elif p.kind == "loguniform":
            out[key] = tune.loguniform(p.low, p.high)
        else:
            out[key] = tune.randint(int(p.low), int(p.high))
    return out
