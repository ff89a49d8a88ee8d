"""Incremental recommendation with causal GLINT-RU: keep each user's state, apply new events.

GLINT-RU (causal mode) is recurrent: after an event, the GRU state, the last k-1 inputs of each
temporal convolution and the linear attention's running sums are all the model needs to produce
the next output (:meth:`glintru.models.glintru.GlintRU.step`, O(d^2) work per event, whatever the
history's length). This module stores those states for every user and updates them from a file of
new events, so fresh top-K lists never re-read a history.

    glintru recommend --model RUN --data DIR --out recs.parquet --save-state states.pt
    glintru recommend --model RUN --data DIR --state states.pt --events new.csv --out recs.parquet \
        --save-state states2.pt

State file (``torch.save``, read back with ``torch.load(weights_only=True)``): ``format``,
``n_items``, ``config`` (the model's flat config, checked on load), ``user_ids`` (original ids),
``state`` (the model's state tensors, one row per user), ``seen_offsets`` / ``seen_items`` (each
user's items, for excluding them from the lists). The initial state of a user is that of the last
``max_len`` items of their history (the batch mode's input window); events then extend it without a
window, so on streams much longer than ``max_len`` the model sees more history than it was trained on.

Events file, either
- header-less text: one ``user_id,item_id`` pair per line (commas, tabs or spaces), optionally a
  third field, a numeric timestamp; ``#`` starts a comment line; or
- a CSV/TSV/semicolon file whose header names its columns as ``glintru prepare`` recognises them
  (``user_id``/``userId``/``user``..., ``item_id``/``movieId``/``asin``..., optionally
  ``timestamp``/``time``/``ts``...; other columns are ignored), JSON lines with such keys, or a
  Parquet file with such columns. Text may be gzip-, bzip2- or xz-compressed.
Events are applied in file order, or in timestamp order when the file has timestamps (ties keep
file order). Unknown users start from an empty history; an event with an item outside the model's
catalogue is an error naming the line, or, with ``skip_unknown``, left out and counted.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glintru.data.dataset import PreparedDataset, ragged_arange
from glintru.engine.scoring import history_mask_coords, score_blocks
from glintru.errors import UserError
from glintru.storage import atomic_torch_save, atomic_write_bytes

STATE_FORMAT = 1
STATE_BATCH = 512  # users whose initial state is computed at once


@dataclass
class UserStates:
    """Every user's streaming state: ``state[key][i]`` belongs to ``user_ids[i]``."""

    n_items: int
    config: dict[str, Any]
    user_ids: list[str]
    state: dict[str, torch.Tensor]
    seen_offsets: np.ndarray  # [U + 1] int64
    seen_items: np.ndarray  # [total] int64, item indices 1..n_items


def check_streamable(model: torch.nn.Module, source: str) -> None:
    if not hasattr(model, "step") or not getattr(model, "causal", False):
        raise UserError(
            f"--model {source}: incremental recommendation needs a causal GLINT-RU model "
            "(model glintru; not glintru_official or a baseline)"
        )


def initial_states(model: torch.nn.Module, data: PreparedDataset, max_len: int, config: dict[str, Any]) -> UserStates:
    """States after each user's last ``max_len`` items (every user of ``data``), in batches."""
    lens = data.lengths.astype(np.int64)
    win = np.minimum(lens, max_len)
    parts: dict[str, list[torch.Tensor]] = {}
    items_t = torch.from_numpy(data.items.astype(np.int64))
    with torch.inference_mode():
        for lo in range(0, data.n_users, STATE_BATCH):
            hi = min(lo + STATE_BATCH, data.n_users)
            w = torch.from_numpy(win[lo:hi])
            start = torch.from_numpy(data.offsets[lo + 1 : hi + 1] - win[lo:hi])
            width = max(1, int(w.max()))
            pos = torch.arange(width)
            idx = (start.view(-1, 1) + pos).clamp(max=len(items_t) - 1)
            x = torch.where(pos < w.view(-1, 1), items_t[idx], 0)
            for key, value in model.init_state(x, w).items():
                parts.setdefault(key, []).append(value)
    return UserStates(
        n_items=data.n_items, config=config, user_ids=[str(u) for u in data.user_ids],
        state={k: torch.cat(v) for k, v in parts.items()},
        seen_offsets=data.offsets.astype(np.int64), seen_items=data.items.astype(np.int64),
    )


def check_state_path(path: str | Path) -> Path:
    """Fail before any work if ``--save-state`` cannot be written: a UserError naming it."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"--save-state {out}: is a directory; give a file name such as states.pt")
    ancestor = out.parent if str(out.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--save-state {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--save-state {out}: directory {ancestor} is not writable")
    return out


def save_states(states: UserStates, path: str | Path) -> Path:
    """Write the state file atomically (temporary name, then rename); missing directories are created."""
    out = check_state_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({
        "format": STATE_FORMAT, "n_items": states.n_items, "config": states.config, "user_ids": states.user_ids,
        "state": states.state, "seen_offsets": torch.from_numpy(states.seen_offsets),
        "seen_items": torch.from_numpy(states.seen_items),
    }, out)
    return out


def load_states(path: str | Path, n_items: int, config: dict[str, Any]) -> UserStates:
    """Read a state file (weights-only) and check it belongs to this model."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--state {p}: file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the same user error
        raise UserError(f"--state {p}: not a glintru state file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
        raise UserError(f"--state {p}: not a glintru state file of format {STATE_FORMAT}")
    if obj["n_items"] != n_items or obj["config"] != config:
        raise UserError(f"--state {p}: written for another model (its catalogue size or configuration differs from --model)")
    return UserStates(obj["n_items"], obj["config"], list(obj["user_ids"]), dict(obj["state"]),
                      obj["seen_offsets"].numpy(), obj["seen_items"].numpy())


@dataclass(frozen=True)
class Events:
    """An events file, read: ``users[e]`` and ``items[e]`` (catalogue indices) in the order to apply."""

    users: list[str]
    items: np.ndarray  # [E] int64
    skipped: int  # events left out: their item is not in the catalogue (skip_unknown only)
    columns: dict[str, str] | None  # role -> the header's column, None for a header-less file


def read_events(path: str | Path, item_index: dict[str, int], *, skip_unknown: bool = False) -> Events:
    """The events of ``path`` (see the module docstring); errors name the file and line or row.
    Parquet, JSON lines and files with a header are read once, by prepare's readers (the format is
    told from the first 64 KiB); only a header-less file is read here, line by line."""
    from glintru.data.readers import (
        ReadOptions,
        decompress,
        head_lines,
        header_sep,
        read_csv,
        read_json_lines,
        read_parquet,
    )

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--events {p}: file not found")

    def _read_events(p: Path, inter: Any, at: Any) -> Events:  # a file prepare's readers read
        return _index_events(p, inter.user.to_pylist(), inter.item.to_pylist(), inter.timestamp, item_index,
                             skip_unknown, at, inter.columns)

    def by_reader(lines: list[str], first: int | None) -> Events | None:
        """JSON lines or a file with a header, read by prepare's readers; None for anything else.
        ``first``: the index of the first event line in ``lines`` (None: no event line there)."""
        head = lines[first].strip() if first is not None else ""
        if head.startswith("{"):  # JSON lines, keys named as prepare recognises them
            return _read_events(p, read_json_lines(p, ReadOptions()), lambda row: f"{p}: event {row + 1}")
        sep = header_sep(head)
        if sep is None:
            return None
        if first:
            raise UserError(f"--events {p}: the header must be the first line (it is line {first + 1})")
        return _read_events(p, read_csv(p, ReadOptions(sep=sep)), lambda row: f"{p}:{row + 2}")

    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1" or p.suffix.lower() in (".parquet", ".pq"):
        return _read_events(p, read_parquet(p, ReadOptions()), lambda row: f"{p}: row {row + 1}")
    window = head_lines(p)
    window_first = _first_event_line(window)
    if (events := by_reader(window, window_first)) is not None:
        return events
    try:
        lines = decompress(p, p.read_bytes()).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"--events {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    first = _first_event_line(lines)
    if first is None:
        raise UserError(f"--events {p}: no events")
    if window_first is None and (events := by_reader(lines, first)) is not None:
        return events  # comments filled the whole window
    users: list[str] = []
    items: list[str] = []
    stamps: list[float] = []
    line_of: list[int] = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\t ]+", text) if f]
        if len(fields) not in (2, 3) or (stamps and len(fields) == 2) or (users and not stamps and len(fields) == 3):
            raise UserError(f"{p}:{n}: expected 'user_id,item_id' or 'user_id,item_id,timestamp' "
                            f"(the same on every line), got {text[:80]!r}")
        if len(fields) == 3:
            try:
                stamps.append(float(fields[2]))
            except ValueError:
                raise UserError(f"{p}:{n}: timestamp {fields[2]!r} is not a number") from None
        users.append(fields[0])
        items.append(fields[1])
        line_of.append(n)
    hint = ("; a header line must name its columns, e.g. user_id,item_id,timestamp"
            if items and items[0] not in item_index and line_of[0] == first + 1 else "")
    return _index_events(p, users, items, np.asarray(stamps) if stamps else None, item_index, skip_unknown,
                         lambda row: f"{p}:{line_of[row]}", None, hint)


def _first_event_line(lines: list[str]) -> int | None:
    """The index of the first line that is neither blank nor a ``#`` comment."""
    return next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), None)


def _index_events(p: Path, users: list[str], items: list[str], stamps: np.ndarray | None, item_index: dict[str, int],
                  skip_unknown: bool, at: Any, columns: dict[str, str] | None, hint: str = "") -> Events:
    """Map item ids to catalogue indices (unknown: an error naming ``at(row)``, or left out) and put
    the events in timestamp order when there are timestamps (stable: ties keep file order)."""
    idx = np.fromiter((item_index.get(i, -1) for i in items), dtype=np.int64, count=len(items))
    known = idx >= 0
    if not known.all() and not skip_unknown:
        row = int(np.flatnonzero(~known)[0])
        raise UserError(f"{at(row)}: item {items[row]!r} is not in the model's catalogue "
                        f"(--skip-unknown-items leaves such events out){hint}")
    if not users:
        raise UserError(f"--events {p}: no events")
    order = np.flatnonzero(known)
    if stamps is not None:
        order = order[np.argsort(np.asarray(stamps)[order], kind="stable")]
    return Events([users[i] for i in order], idx[order], int((~known).sum()), columns)


@dataclass
class StreamResult:
    states: UserStates
    touched: np.ndarray  # rows of states.user_ids updated by the events
    n_events: int
    step_s: float


def apply_events(model: torch.nn.Module, states: UserStates, users: list[str], items: np.ndarray) -> StreamResult:
    """Update the states with the events, user by user in file order; events of different users
    are stepped together (round r steps every user's r-th new event)."""
    row_of = {u: i for i, u in enumerate(states.user_ids)}
    new_users = [u for u in dict.fromkeys(users) if u not in row_of]
    if new_users:
        empty = model.empty_state(len(new_users))
        states.state = {k: torch.cat([v, empty[k]]) for k, v in states.state.items()}
        for u in new_users:
            row_of[u] = len(states.user_ids)
            states.user_ids.append(u)
        states.seen_offsets = np.concatenate([states.seen_offsets, np.full(len(new_users), states.seen_offsets[-1])])
    rows = np.fromiter((row_of[u] for u in users), dtype=np.int64, count=len(users))
    order = np.argsort(rows, kind="stable")  # per user, file order kept
    sorted_rows = rows[order]
    first = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    event_rank = np.empty_like(rank)
    event_rank[order] = rank
    t0 = time.perf_counter()
    with torch.inference_mode():
        for r in range(int(event_rank.max()) + 1):
            sel = np.flatnonzero(event_rank == r)
            rr = torch.from_numpy(rows[sel])
            sub = {k: v[rr] for k, v in states.state.items()}
            new, _ = model.step(sub, torch.from_numpy(items[sel]))
            for k, v in new.items():
                states.state[k][rr] = v
    step_s = time.perf_counter() - t0
    # append the events to each user's seen items
    counts = np.bincount(rows, minlength=len(states.user_ids))
    old = np.diff(states.seen_offsets)
    new_offsets = np.concatenate([[0], np.cumsum(old + counts)]).astype(np.int64)
    seen = np.zeros(new_offsets[-1], dtype=np.int64)
    seen[ragged_arange(new_offsets[:-1], old)] = states.seen_items
    dest = new_offsets[sorted_rows] + old[sorted_rows] + rank  # after the user's earlier items, in file order
    seen[dest] = items[order]
    states.seen_offsets, states.seen_items = new_offsets, seen
    return StreamResult(states, np.unique(rows), len(rows), step_s)


def top_k_from_states(model: torch.nn.Module, states: UserStates, rows: np.ndarray, k: int,
                      include_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (items [R, k] int32, scores [R, k] float32) from the stored hidden outputs of ``rows``."""
    out_items = np.zeros((len(rows), k), dtype=np.int32)
    out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    seen_t = torch.from_numpy(states.seen_items)
    with torch.inference_mode():
        emb = model.item_embeddings()[1:].float()
        h = states.state["hidden"][torch.from_numpy(rows)]
        mask = None
        if not include_seen and len(seen_t):
            mask = history_mask_coords(seen_t, states.seen_offsets[rows], states.seen_offsets[rows + 1], torch.device("cpu"))
        for part, scores in score_blocks(h, emb, mask=mask):
            top = torch.topk(scores, k, dim=1)
            top_items = (top.indices + 1).to(torch.int32)
            top_items[torch.isneginf(top.values)] = 0
            out_items[part] = top_items.numpy()
            out_scores[part] = top.values.numpy()
    return out_items, out_scores


def write_parquet_atomically(table: Any, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(out, sink.getvalue().to_pybytes())


@dataclass(frozen=True)
class IncrementalResult:
    out: Path
    n_users: int  # users whose lists were written
    n_events: int
    step_s: float  # model time for all the events
    wall_s: float
    skipped: int = 0  # events left out by skip_unknown (item not in the catalogue)


def recommend_incremental(model_spec: str, data_dir: str | Path, out: str | Path, *, state: str | None,
                          events: str | None, save_state: str | None, k: int = 10, include_seen: bool = False,
                          max_len: int | None = None, tracking_uri: str | None = None,
                          skip_unknown: bool = False) -> IncrementalResult:
    """``glintru recommend --state/--events/--save-state``: see the module docstring.

    Without ``events``, builds every user's state from the dataset, writes their lists and saves
    the states (``save_state`` required). With ``events``, updates ``state`` (or, without it, the
    dataset's initial states) and writes the lists of the users the events touched.
    """
    from glintru.data.dataset import load_prepared
    from glintru.loading import load_model
    from glintru.recommend import check_catalogue, check_k, check_output_path, recs_table

    t0 = time.perf_counter()
    out_path = check_output_path(out)
    if save_state is not None:
        check_state_path(save_state)
    if events is None and save_state is None:
        raise UserError("--state needs --events (the new events to apply)")
    data = load_prepared(data_dir)
    loaded = load_model(model_spec, max_len=max_len, tracking_uri=tracking_uri)
    check_streamable(loaded.model, loaded.source)
    item_ids = check_catalogue(loaded, data.path, data.item_id_table(), snapshots=False)
    check_k(k, data.n_items)
    config = {"model_config": {f: getattr(loaded.model.cfg, f) for f in loaded.model.cfg.__dataclass_fields__},
              "max_len": loaded.max_len}
    model = loaded.model.eval()
    if state is not None:
        states = load_states(state, data.n_items, config)
    else:
        states = initial_states(model, data, loaded.max_len, config)
    step_s, n_events, skipped = 0.0, 0, 0
    if events is not None:
        index = {str(v): i for i, v in enumerate(item_ids) if i > 0}
        ev = read_events(events, index, skip_unknown=skip_unknown)
        skipped = ev.skipped
        if ev.users:
            res = apply_events(model, states, ev.users, ev.items)
            rows, step_s, n_events = res.touched, res.step_s, res.n_events
        else:
            rows = np.zeros(0, dtype=np.int64)
    else:
        rows = np.arange(len(states.user_ids))
    top_items, top_scores = top_k_from_states(model, states, rows, k, include_seen)
    write_parquet_atomically(recs_table([states.user_ids[i] for i in rows], top_items, top_scores, item_ids), out_path)
    if save_state is not None:
        save_states(states, save_state)
    return IncrementalResult(out_path, len(rows), n_events, step_s, time.perf_counter() - t0, skipped)
