"""The model registry: a study's best model as a weights-only MLflow pyfunc, with a ``champion`` alias.

The registered model is a "models from code" pyfunc (:mod:`glintru.serving`): its artifacts are
the trial's ``best.pt`` (tensors and a flat config, read with ``torch.load(weights_only=True)``)
and the ``glintru`` package as code, so ``mlflow.pyfunc.load_model("models:/NAME@champion")``
works with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` and in an environment that installs only
the listed requirements (PyPI packages; no glintru wheel needed).

Registration is idempotent (a version from the same run is reused) and the ``champion`` alias
moves to the new version only if its validation metric beats the current champion's (the value is
kept as the version tag ``glintru.metric_value``; all studies of one registered model share one
dataset and metric name, so the values compare).
"""

from __future__ import annotations

from pathlib import Path

from glintru import tracking

ALIAS = "champion"
METRIC_TAG = "glintru.metric"
VALUE_TAG = "glintru.metric_value"
STUDY_TAG = "glintru.study"


def requirements() -> list[str]:
    """What the pyfunc model needs in a fresh environment (each bounded below its next major)."""
    import mlflow
    import torch

    torch_v = torch.__version__.split("+")[0]
    major, minor = (int(x) for x in torch_v.split(".")[:2])
    return [
        f"torch>={major}.{minor},<{major}.{minor + 2}", "numpy>=1.26,<3", "pyarrow>=18,<26", "pyyaml>=6,<7",
        "pandas>=2,<4", f"mlflow>={mlflow.__version__.split('+')[0]},<4",
    ]


def signature():  # -> mlflow.models.ModelSignature
    """The pyfunc's interface: a column ``items`` (each row one history of item indices, oldest
    first) in, ``items`` and ``scores`` (top k, best first) out, and the parameter ``k``. MLflow
    checks inputs against it (a missing ``items`` column is refused before the model runs)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    from glintru.serving import TOP_K

    return ModelSignature(
        inputs=Schema([ColSpec(Array("long"), "items")]),
        outputs=Schema([ColSpec(Array("long"), "items"), ColSpec(Array("float"), "scores")]),
        params=ParamSchema([ParamSpec("k", "long", TOP_K)]),
    )


def register_best_model(uri: str, run_id: str, checkpoint: Path, name: str, metric: str, value: float,
                        study: str) -> tuple[str, bool, bool]:
    """Log ``checkpoint`` as the pyfunc model of ``run_id``, register it as ``name`` and move the
    alias if it is the best so far; returns ``(version, newly registered, is champion)``."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    import glintru

    code = Path(glintru.__file__).parent
    c = tracking.client(uri)
    try:
        existing = c.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except tracking.unavailable_errors():
        existing = []  # an unknown registered model name raises on some stores: nothing registered yet
    new = not existing
    if existing:
        version = str(existing[0].version)
    else:
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(code / "serving.py"), artifacts={"checkpoint": str(checkpoint)},
                code_paths=[str(code)], pip_requirements=requirements(), signature=signature(),
                input_example=pd.DataFrame({"items": [[1]]}),  # one history of one item (every catalogue has it)
                registered_model_name=name,
            )
        version = str(getattr(info, "registered_model_version", "") or "1")
        c.set_model_version_tag(name, version, METRIC_TAG, metric)
        c.set_model_version_tag(name, version, VALUE_TAG, repr(float(value)))
        c.set_model_version_tag(name, version, STUDY_TAG, study)
    try:
        current = c.get_model_version_by_alias(name, ALIAS)
        current_value = float(current.tags.get(VALUE_TAG, "-inf"))
        champion = str(current.version) == version
    except tracking.unavailable_errors():
        current_value, champion = float("-inf"), False
    if not champion and float(value) > current_value:
        c.set_registered_model_alias(name, ALIAS, version)
        champion = True
    return version, new, champion
