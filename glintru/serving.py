"""The MLflow pyfunc recommender of a registered glintru model ("models from code").

``glintru tune`` registers its best model by logging this file as the model's code, the trial's
weights-only ``best.pt`` as an artifact and the ``glintru`` package as code: loading runs this
file (the project's own code), never unpickles an object, and works with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``::

    import mlflow
    model = mlflow.pyfunc.load_model("models:/ml-1m-glintru@champion")
    model.predict(pandas.DataFrame({"items": [[12, 7, 301], [5]]}))      # item indices, oldest first
    # -> DataFrame: "items" (top-10 item indices, best first) and "scores", one row per input row
    model.predict(pandas.DataFrame({"items": [[12, 7, 301]]}), params={"k": 50})   # top 50

The registered signature (:func:`glintru.tuning.registry.signature`) names the ``items`` column and
the ``k`` parameter, so MLflow (``mlflow.pyfunc`` and ``mlflow models serve`` alike) refuses an
input without ``items`` before the model runs and passes ``k`` through (docs/operating.md).

``glintru recommend --model models:/NAME@champion`` uses the same loader
(:func:`glintru.loading.load_model`) and maps indices back to the dataset's item ids.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

TOP_K = 10


class GlintruRecommender(mlflow.pyfunc.PythonModel):
    """Top-k over the whole catalogue for each input history (the last ``max_len`` items are read)."""

    def load_context(self, context):  # noqa: ANN001 -- MLflow inspects these signatures: no type hints
        from glintru.loading import load_checkpoint_file

        self.loaded = load_checkpoint_file(context.artifacts["checkpoint"])
        self.k = TOP_K  # predict(..., params={"k": n}) asks for another length (the signature's parameter)

    # The DataFrame hint is one MLflow infers no schema from: it validates nothing and, unlike a
    # predict() without hints, does not warn whoever loads the model to add some.
    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001
        import numpy as np

        from glintru.recommend import top_k_from_histories

        histories = [list(map(int, h)) for h in model_input["items"]]
        if not histories or min(len(h) for h in histories) < 1:
            raise ValueError("every row of 'items' needs at least one item index")
        k = int((params or {}).get("k", self.k))
        offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
        items, scores = top_k_from_histories(
            self.loaded.model, offsets, np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]),
            k=min(k, self.loaded.n_items), max_len=self.loaded.max_len,
        )
        return pd.DataFrame({"items": [r[r > 0].tolist() for r in items],
                             "scores": [s[np.isfinite(s)].tolist() for s in scores]})


mlflow.models.set_model(GlintruRecommender())
