"""Hyperparameter tuning with Ray Tune + Optuna, tracked in MLflow, resumable.

Modules: :mod:`space` (search-space files, Ray-free), :mod:`settings` (a study's settings, names,
storage), :mod:`search` (the Optuna searcher, its persisted study and plots), :mod:`driver` (the
Tune trainable, tuner, interrupts, run and resume), :mod:`summary` (best trial, trials table,
MLflow catch-up), :mod:`registry` (the best model as a weights-only pyfunc), :mod:`scheduler`
(ASHA that never stops a trial on its last epoch), :mod:`smoke` (tiny dataset for ``--smoke-test``).
"""
