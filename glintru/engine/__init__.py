"""Plain-PyTorch training engine shared by ``glintru train`` and the Ray Train worker.

Entry point :func:`fit` (contract in docs/architecture.md, "Engine entry point"); pieces the Ray
worker may reuse: :mod:`~glintru.engine.batching` (samples, length-aware sharded batches),
:class:`~glintru.engine.loss.SequenceLoss` (DDP-wrappable loss module),
:mod:`~glintru.engine.evaluate` (exact, all-reducible metric sums) and
:mod:`~glintru.engine.checkpoint` (``torch.load(weights_only=True)`` checkpoints).
This package never imports Ray or MLflow.
"""

from glintru.engine.loop import FitResult, check_resumable, final_metrics, fit

__all__ = ["FitResult", "check_resumable", "final_metrics", "fit"]
