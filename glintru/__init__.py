"""GLINT-RU: Gated Lightweight Intelligent Recurrent Units for sequential recommendation.

Zhang et al., KDD 2025, arXiv 2406.10244. This package holds the model, the paper's baselines,
a plain-PyTorch training engine and (in :mod:`glintru.distributed` / :mod:`glintru.tuning`) the
Ray Train / Ray Tune / MLflow glue. The core imports neither Ray nor MLflow.
"""

__version__ = "0.2.0"
