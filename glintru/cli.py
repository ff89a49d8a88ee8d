"""``glintru`` command line: ``prepare``, ``train``, ``tune``, ``recommend``.

Each subcommand lives in :mod:`glintru.commands.<name>` and exposes ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports (torch, Ray, MLflow) happen inside ``run`` so ``--help`` is fast.
A :class:`~glintru.errors.UserError` becomes one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from glintru.errors import UserError

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
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
