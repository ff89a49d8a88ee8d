"""``glintru`` command line: ``prepare``, ``train``, ``tune``, ``recommend``.

Each subcommand lives in :mod:`glintru.commands.<name>` and exposes ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports (torch, Ray, MLflow) happen inside ``run`` so ``--help`` is fast.
A :class:`~glintru.errors.UserError` becomes one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from glintru.errors import Terminated, UserError

COMMANDS = {
    "prepare": "turn an interaction log into a prepared parquet dataset with a leave-one-out split",
    "train": "train and evaluate one model (one process, or Ray Train with --workers N)",
    "tune": "hyperparameter search with Ray Tune + Optuna, tracked in MLflow",
    "recommend": "top-K recommendations for every user from a trained model",
}


def build_parser() -> argparse.ArgumentParser:
    from glintru import __version__

    parser = argparse.ArgumentParser(prog="glintru", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"glintru {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"glintru.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"glintru.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # `tune` and Ray Train runs (`train --workers`) keep their own signal handling
    sigterm = args.command in ("prepare", "recommend") or (args.command == "train" and args.workers is None)
    try:
        with sigterm_raises(sigterm):
            return int(args._run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130


@contextlib.contextmanager
def sigterm_raises(enabled: bool) -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`~glintru.errors.Terminated` (a KeyboardInterrupt),
    so it is handled as Ctrl+C is instead of ending the process without a word."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
