"""Hyperparameter tuning: search-space files, Ray Tune + Optuna studies, MLflow logging, resume.

Modules: :mod:`space` (search-space files, Ray-free), :mod:`study` (Tune driver and resume),
:mod:`mlflow_log` (runs looked up by tag), :mod:`plots` (summary CSV/PNG), :mod:`smoke` (tiny
synthetic dataset for ``--smoke-test``).
"""
