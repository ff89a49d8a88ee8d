"""Every test user's full-ranking rank of its target, kept per finished run so that the per-user
analyses (``paired_users.py``, ``history_masking.py``) need no weights later.

A run's weights stay in the ``--work-dir`` of the machine that trained it; its JSON goes into git.
Comparing two runs user by user used to need both sets of weights on one machine, so a run trained
in an earlier session (on a machine since returned) had to be trained again. ``reproduce.py`` now
writes, beside each run JSON ``<results>/runs/<dataset>/<run>.json``, the file
``<results>/ranks/<dataset>/<run>.npz``: two int32 arrays in ``data.eval_examples("test")`` order,
``kept`` (every item a candidate, the protocol) and ``masked`` (the user's own items removed), 0-based.
About 100 KB a run on Beauty's 22,363 test users. For a run recorded before this file existed, the
scripts compute it from the weights (when ``--work-dir`` has them) and write it, once.

NDCG@10 and HR@10 follow from the ranks (a target at rank r: 1 / log2(r + 2) if r < 10); the kept
ranks are checked against the run's recorded NDCG@10.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

RANKS_DIR = "ranks"
KINDS = ("kept", "masked")


def read_run(result_json: Path) -> dict:
    """A run JSON of ``reproduce.py``; a UserError naming the file when it is not one."""
    from glintru.errors import UserError

    try:
        rec = json.loads(result_json.read_text())
        rec["dataset"]
    except FileNotFoundError:
        raise UserError(f"{result_json}: no such run JSON") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError(f"{result_json}: not a run JSON of benchmarks/reproduce.py (no \"dataset\" field)") from None
    return rec


def run_stem(result_json: Path, rec: dict) -> str:
    """The run whose weights and ranks these are: a twin's (``same_run_as``) are its original's."""
    return rec.get("same_run_as", result_json.name).removesuffix(".json")


def run_record(result_json: Path, work_dir: Path, rec: dict | None = None) -> tuple[dict, Path]:
    """A run JSON of ``reproduce.py`` (``rec`` when already read) and the best weights it was written
    from, both checked to exist (a JSON in git is not enough: the weights stay in the ``--work-dir`` of
    the machine that trained)."""
    from glintru.errors import UserError

    rec = read_run(result_json) if rec is None else rec
    weights = work_dir / "runs" / rec["dataset"] / run_stem(result_json, rec) / "best.pt"
    if not weights.is_file():
        raise UserError(f"{result_json}: its weights {weights} are missing (--work-dir must be the one the run "
                        "trained in)")
    return rec, weights


def data_dir(result_json: Path, rec: dict, work_dir: Path) -> Path:
    """The prepared dataset a run trained on: one of the reproduction's in ``work_dir/data/``, or the
    directory of the user's own dataset that ``reproduce.py --prepared`` recorded (``data_dir``)."""
    from glintru.errors import UserError

    path = Path(rec["data_dir"]) if rec.get("data_dir") else work_dir / "data" / rec["dataset"]
    if not (path / "manifest.json").is_file():
        raise UserError(f"{result_json}: its prepared dataset {path} is missing (no manifest.json there)")
    return path


def load_run(result_json: Path, work_dir: Path, rec: dict | None = None) -> tuple[dict, object, object, object]:
    """A finished run of ``reproduce.py``: its record, best weights, prepared data and train config."""
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared
    from glintru.loading import load_model

    rec, weights = run_record(result_json, work_dir, rec)
    data = load_prepared(data_dir(result_json, rec, work_dir))
    model = load_model(weights).model
    return rec, model, data, build_config(rec["model"], rec["config"]).train


def check_available(result_json: Path, work_dir: Path | None) -> dict:
    """The run's record; a UserError, before any slow work, when the run has neither a ranks file nor
    weights to make one."""
    rec = read_run(result_json)
    path = ranks_file(result_json, rec)
    if path is not None and path.is_file():
        return rec
    if work_dir is None:
        from glintru.errors import UserError

        raise UserError(f"{result_json}: no ranks file{f' {path}' if path else ''}; give --work-dir with the "
                        "run's weights")
    run_record(result_json, work_dir, rec)
    return rec


def ranks_file(result_json: Path, rec: dict) -> Path | None:
    """``<results>/ranks/<dataset>/<run>.npz`` for a JSON at ``<results>/runs/<dataset>/``; None for a
    JSON elsewhere (a copy: nowhere to keep its ranks)."""
    parent = result_json.resolve().parent
    if parent.name != rec["dataset"] or parent.parent.name != "runs":
        return None
    return parent.parent.parent / RANKS_DIR / rec["dataset"] / f"{run_stem(result_json, rec)}.npz"


def test_ranks(model, data, train, device: str = "cpu") -> dict[str, np.ndarray]:
    """The test split's ranks, both ways, with the run's own settings (window, precision, batch)."""
    from glintru.engine.evaluate import evaluate

    out = {}
    for kind in KINDS:
        blocks: list = []
        m = evaluate(model, data, "test", replace(train, exclude_history=kind == "masked"), negatives=None,
                     device=device, ranks_out=blocks)
        ranks = np.full(int(m["test/n_users"]), -1, dtype=np.int32)
        for rows, r in blocks:
            ranks[rows] = r.numpy()
        out[kind] = ranks
    return out


def save(path: Path, ranks: dict[str, np.ndarray]) -> None:
    """Write ``path`` atomically (:func:`glintru.storage.atomic_write_bytes`), with the CPU and the
    date of the computation."""
    import io

    from benchinfo import machine

    from glintru.storage import atomic_write_bytes

    info = machine()
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: ranks[k].astype(np.int32) for k in KINDS},
                        cpu=np.array(info["cpu"]), date_utc=np.array(info["date_utc"]))
    atomic_write_bytes(path, buf.getvalue())


def load(path: Path) -> dict:
    """A ranks file: ``kept`` and ``masked`` (int64 arrays), ``cpu`` and ``date_utc`` (str); plain
    arrays only, nothing is unpickled."""
    from glintru.errors import UserError

    try:
        with np.load(path, allow_pickle=False) as z:
            return {**{k: np.asarray(z[k], dtype=np.int64) for k in KINDS}, "cpu": str(z["cpu"]),
                    "date_utc": str(z["date_utc"])}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: not a ranks file of benchmarks/user_ranks.py ({exc})") from None


def per_user(ranks: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Every user's NDCG@k and HR@k (float64 arrays) from 0-based ranks."""
    hit = ranks < k
    return {f"ndcg@{k}": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0), f"hr@{k}": hit.astype(np.float64)}


def metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k and HR@k of 0-based ranks."""
    return {name: float(v.mean()) for name, v in per_user(ranks, k).items()}


def run_ranks(result_json: Path, work_dir: Path | None) -> tuple[dict, dict]:
    """A run's record and test ranks: from its ranks file, else computed from its weights under
    ``work_dir`` (and the ranks file written for next time). The kept ranks must give the recorded
    NDCG@10 (a warning on stderr otherwise)."""
    rec = check_available(result_json, work_dir)
    path = ranks_file(result_json, rec)
    if path is not None and path.is_file():
        ranks = load(path)
    else:
        rec, model, data, train = load_run(result_json, work_dir, rec)
        ranks = test_ranks(model, data, train)
        if path is not None:
            save(path, ranks)
            ranks = load(path)
        else:
            from benchinfo import machine

            info = machine()
            ranks = {**ranks, "cpu": info["cpu"], "date_utc": info["date_utc"]}
    ndcg = metrics(ranks["kept"])["ndcg@10"]
    if abs(ndcg - rec["metrics"]["test/full/ndcg@10"]) > 1e-6:
        print(f"warning: {result_json.name}: NDCG@10 {ndcg:.6f} from its ranks differs from the recorded "
              f"{rec['metrics']['test/full/ndcg@10']:.6f}", file=sys.stderr)
    return rec, ranks
