"""Typed configuration: one frozen dataclass per model plus :class:`TrainConfig`.

A run is described by a model name and a *flat* mapping of overrides (``{"hidden_size": 64,
"lr": 3e-4}``). Every key must be a field of the model's config class or of :class:`TrainConfig`;
unknown keys, wrong types and impossible values raise :class:`~glintru.errors.UserError` naming
the field. The same flat keys are used on the CLI (``--set key=value``), in ``--config`` files, in
search-space files and as MLflow params, so one name means one thing everywhere.

This module imports neither torch, Ray nor MLflow: search spaces are checked against it cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from glintru.errors import UserError

# --------------------------------------------------------------------------------------------
# Model configurations. Defaults follow the official GLINT-RU run.py (d=128, 8 heads) and the
# paper's baselines as RecBole configures them, at the same d so comparisons are like for like.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlintRUConfig:
    """GLINT-RU hyperparameters (docs/model.md). Defaults = the official configuration (d=128, 8 heads
    of 16, kernel 3, its dropouts), with heads derived from ``head_dim``.

    ``causal=False`` is the official, non-causal behaviour (symmetric convolution padding,
    attention over the whole padded window); ``causal=True`` makes position t depend only on
    items at positions <= t, which allows training on every position at once.
    """

    hidden_size: int = 128  # d: embedding size = hidden size (official code requires equality)
    n_heads: int = 0  # heads of the linear-attention expert; 0 = hidden_size // head_dim
    head_dim: int = 16  # head width when n_heads = 0 (official shapes: d=128/8 heads, d=64/4 heads)
    attn_norm: str = "kernel"  # attention normaliser: "none" | "count" | "kernel" (docs/model.md, section 4)
    kernel_size: int = 3  # k of both temporal convolutions (official: hard-coded 3)
    mixing_init: float = 0.5  # GRU expert's initial share p of the expert mix (Eq. 10), 0 < p < 1
    experts: str = "both"  # "both" (Eq. 10's learnable mix) | "gru" | "attention" (one expert, weight 1; ablation)
    causal: bool = True
    light: bool = False  # "Light GLINT-RU": no gated MLP block
    gru_bias: bool = False  # official: nn.GRU(bias=False)
    gate_ratio: float = 0.5  # selective-gate bottleneck d -> gate_ratio*d -> d (official 1/2)
    emb_dropout: float = 0.3  # official dropout_prob (GRU4Rec-style yaml default)
    attn_dropout: float = 0.2  # official hidden_dropout_prob, after the attention output Linear
    gate_dropout: float = 0.3  # official hard-coded, selective gate
    dense_dropout: float = 0.3  # official hard-coded "dropdense", after the mixing block's Linear
    mlp_dropout: float = 0.3  # official hard-coded "dropmix", after the gated MLP
    layer_norm_eps: float = 1e-12
    shared_layernorm: bool = True  # official: one LayerNorm for both Add & Norm steps


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec (Kang & McAuley 2018): causal self-attention with learned positional embeddings."""

    hidden_size: int = 128
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256  # feed-forward width
    hidden_dropout: float = 0.2
    attn_dropout: float = 0.2
    layer_norm_eps: float = 1e-12
    # "post_ln": RecBole's blocks (LayerNorm after each residual, embedding LayerNorm, GELU);
    # "pre_ln": the paper's Sec. III-D form (LayerNorm on each sublayer's input, a final LayerNorm,
    # item embeddings scaled by sqrt(d), no embedding LayerNorm, ReLU).
    block: str = "post_ln"


@dataclass(frozen=True)
class NARMConfig:
    """NARM (Li et al. 2017): GRU encoder, global + local attention, bilinear decoder."""

    hidden_size: int = 128  # GRU state size
    embedding_size: int = 128  # item embedding size (= output space of the bilinear decoder)
    n_layers: int = 1
    emb_dropout: float = 0.25
    ct_dropout: float = 0.5
    # no GRU biases, as RecBole's nn.GRU(bias=False): the state of leading padding stays exactly zero
    gru_bias: bool = False


@dataclass(frozen=True)
class GRU4RecConfig:
    """GRU4Rec (Hidasi et al. 2016), RecBole-style: embedding -> GRU -> dense to embedding size."""

    hidden_size: int = 128
    embedding_size: int = 128
    n_layers: int = 1
    emb_dropout: float = 0.3
    # no GRU biases, as RecBole's nn.GRU(bias=False): the state of leading padding stays exactly zero
    gru_bias: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Training and evaluation settings shared by every model."""

    objective: str = "all_positions"  # "all_positions" | "last_position"
    max_len: int = 200  # window L: the last L items of a history are the model's input
    # all_positions: items each training window re-reads before its targets as context only, so a
    # target cut from a history longer than max_len still sees that many earlier items; 0 = disjoint
    # windows (the first targets of a window then see almost none). Costs up to L / (L - overlap) per target.
    window_overlap: int = 0
    # How the targets of a step weigh: "equal" = the batch's summed loss over the epoch's mean targets
    # per batch, so every target of the epoch weighs the same (as last_position's equal-sized batches do
    # by design); "batch" = the loss is the mean over the batch's targets, so every step weighs the same
    # and a batch of short windows (few targets) gives each target more weight than one of long windows
    # (the only behaviour before the key existed). docs/model.md, "Training windows".
    target_weight: str = "equal"
    batch_size: int = 128  # global batch size in sequences (split across Ray Train workers)
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping (official: none)
    max_epochs: int = 50
    patience: int = 10  # epochs without improvement of valid_metric before stopping; 0 = never
    valid_metric: str = "valid/full/ndcg@10"
    seed: int = 666  # official seed
    precision: str = "fp32"  # "fp32" | "bf16" (autocast) | "auto" (bf16 where the hardware has fast bf16 matmuls)
    compile: bool = False  # torch.compile the model
    loss_chunk: int = 4096  # rows of logits computed at once in the full-softmax cross-entropy
    # Training loss: "ce" = full-softmax cross-entropy over the whole catalogue (exact; its cost per
    # target grows with the catalogue: the default, right below ~10^5 items); "sampled_softmax" =
    # cross-entropy over the target and num_negatives_train items shared by the batch, with log-Q
    # correction; "gbce" = gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023) on uniform
    # negatives drawn per sequence. docs/model.md, "Training losses".
    loss: str = "ce"
    num_negatives_train: int = 256  # negatives per batch (sampled_softmax) or per sequence (gbce)
    loss_sampling: str = "popularity"  # sampled_softmax negatives: "popularity" (training counts) | "uniform"
    gbce_t: float = 0.75  # gBCE calibration t in [0, 1] (0 = plain BCE)
    # gBCE only: a learnable score offset added to every item's score in the loss (no effect on any
    # ranking), started at log(1 / (n_items - 1)). Without it GLINT-RU collapses under gBCE (one
    # shared hidden state, saturated GRU); false = the published gBCE. docs/model.md, "Training losses".
    gbce_offset: bool = True
    # How Adam updates the item-embedding table: "dense" (every row, every step: torch.optim.Adam);
    # "sparse" (only the rows a step touched: torch.optim.SparseAdam, i.e. lazy Adam; needs a sampled
    # loss, weight_decay 0, grad_clip 0, no compile, one worker); "auto" = sparse exactly when those
    # hold and the catalogue has >= 100,000 items. docs/model.md, "Training losses".
    embedding_update: str = "auto"
    eval_batch_size: int = 512
    num_negatives: int = 100  # sampled evaluation: 100 negatives = the official "pop100"
    negative_sampling: str = "popularity"  # "popularity" | "uniform"
    exclude_history: bool = False  # full ranking: mask items already in the user's history
    topk: tuple[int, ...] = (5, 10, 20)
    # Cap on training samples (windows or prefixes) per epoch: a fresh random subset each epoch; 0 = all.
    max_train_samples: int = 0
    max_time_s: float = 0.0  # stop training after this much wall time (checked per epoch); 0 = no limit


@dataclass(frozen=True)
class ModelSpec:
    """One row of the model table: everything the project knows about a model name.

    ``config_cls``: its hyperparameter dataclass; ``impl``: ``"module:Class"`` built by
    :func:`glintru.models.build_model` (imported lazily, so this module stays torch-free);
    ``model_defaults`` / ``train_defaults``: preset values that differ from the dataclasses'
    defaults; ``summary``: one line for ``--help`` and the docs.
    """

    config_cls: type
    impl: str
    summary: str
    model_defaults: Mapping[str, Any] = field(default_factory=dict)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    "glintru": ModelSpec(GlintRUConfig, "glintru.models.glintru:GlintRU", "GLINT-RU, causal, every position a target"),
    "glintru_official": ModelSpec(
        GlintRUConfig, "glintru.models.glintru:GlintRU",
        "GLINT-RU as the official code runs it: non-causal, last position, no attention normaliser",
        model_defaults={"causal": False, "attn_norm": "none"}, train_defaults={"objective": "last_position"},
    ),
    "sasrec": ModelSpec(SASRecConfig, "glintru.models.sasrec:SASRec", "SASRec, 2 blocks (Kang & McAuley 2018)"),
    "sasrec_1block": ModelSpec(
        SASRecConfig, "glintru.models.sasrec:SASRec",
        "SASRec, 1 block with a 128-wide feed-forward (the official GLINT-RU runner's setting)",
        model_defaults={"n_layers": 1, "inner_size": 128},
    ),
    "sasrec_preln": ModelSpec(
        SASRecConfig, "glintru.models.sasrec:SASRec",
        "SASRec, 2 pre-LayerNorm blocks (the paper's Sec. III-D) with a ReLU feed-forward of width d",
        model_defaults={"block": "pre_ln", "inner_size": 128},
    ),
    "narm": ModelSpec(NARMConfig, "glintru.models.narm:NARM", "NARM (Li et al. 2017), one target per prefix by default",
                      train_defaults={"objective": "last_position"}),
    "gru4rec": ModelSpec(GRU4RecConfig, "glintru.models.gru4rec:GRU4Rec", "GRU4Rec (Hidasi et al. 2016)"),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "objective": ("all_positions", "last_position"),
    "target_weight": ("batch", "equal"),
    "precision": ("fp32", "bf16", "auto"),
    "negative_sampling": ("popularity", "uniform"),
    "loss": ("ce", "sampled_softmax", "gbce"),
    "loss_sampling": ("popularity", "uniform"),
    "embedding_update": ("auto", "dense", "sparse"),
}


@dataclass(frozen=True)
class RunConfig:
    """A model name, its model config and the training config: everything a run needs."""

    model: str
    model_cfg: Any
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_flat(self) -> dict[str, Any]:
        """Flat ``{key: value}`` with ``model`` first; JSON-safe (tuples become lists)."""
        out: dict[str, Any] = {"model": self.model}
        for obj in (self.model_cfg, self.train):
            for f in fields(obj):
                v = getattr(obj, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self, **overrides: Any) -> RunConfig:
        """A copy with flat overrides applied (validated like :func:`build_config`)."""
        flat = self.to_flat()
        flat.pop("model")
        flat.update(overrides)
        return build_config(self.model, flat)


def values_before_new_keys(saved: Mapping[str, Any]) -> dict[str, Any]:
    """What a *complete* saved config (a checkpoint's, a run directory's config.yaml, a result's)
    written before a key existed trained with, for the keys whose absence meant something other than
    today's default: ``target_weight`` was ``batch`` (the default became ``equal``), and gBCE ran
    without its score offset (``gbce_offset`` False). Merge it under the saved keys."""
    out: dict[str, Any] = {}
    if "target_weight" not in saved:
        out["target_weight"] = "batch"
    if "gbce_offset" not in saved and saved.get("loss") == "gbce":
        out["gbce_offset"] = False
    return out


def model_names() -> list[str]:
    return list(MODELS)


def config_keys(model: str) -> set[str]:
    """All flat keys valid for ``model`` (its model fields plus TrainConfig fields)."""
    _check_model(model)
    return {f.name for f in fields(MODELS[model].config_cls)} | {f.name for f in fields(TrainConfig)}


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise UserError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """Convert ``value`` to the type of the field's default, or raise a UserError naming it."""
    where = f"{source}: field '{name}'"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return out
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)) or not value:
            raise UserError(f"{where}: expected a non-empty list, got {value!r}")
        return tuple(_coerce(name, v, default[0], source) for v in value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported field type for {name}")


ATTN_NORMS = ("none", "count", "kernel")
EXPERTS = ("both", "gru", "attention")


def attention_heads(m: Any) -> int:
    """Heads of an attention block: ``n_heads``, or for GLINT-RU with ``n_heads = 0``,
    ``max(1, hidden_size // head_dim)`` (heads 16 wide by default, as in both official shapes; one
    head when hidden_size < head_dim)."""
    if isinstance(m, GlintRUConfig) and m.n_heads == 0:
        return max(1, m.hidden_size // max(1, m.head_dim))
    return m.n_heads


def check_model_config(m: Any, source: str, n_items: int = 1, max_len: int = 1) -> None:
    """Raise a UserError naming the first impossible model hyperparameter.

    Called by :func:`build_config` and by every model's constructor (models may be built directly),
    with ``n_items`` (catalogue size) and ``max_len`` (window) checked as well.
    """

    def bad(name: str, msg: str) -> UserError:
        return UserError(f"{source}: field '{name}': {msg}")

    if n_items < 1:
        raise UserError(f"{source}: n_items must be >= 1, got {n_items}")
    if max_len < 1:
        raise UserError(f"{source}: max_len must be >= 1, got {max_len}")
    for name in ("hidden_size", "embedding_size", "n_heads", "n_layers", "inner_size", "kernel_size"):
        if name == "n_heads" and isinstance(m, GlintRUConfig):
            continue  # 0 is allowed: derived from head_dim (checked below)
        if hasattr(m, name) and getattr(m, name) < 1:
            raise bad(name, f"must be >= 1, got {getattr(m, name)}")
    for f in fields(m):
        if f.name.endswith("dropout") and not 0.0 <= getattr(m, f.name) < 1.0:
            raise bad(f.name, f"must be in [0, 1), got {getattr(m, f.name)}")
    if isinstance(m, GlintRUConfig):
        if m.n_heads < 0:
            raise bad("n_heads", f"must be >= 1, or 0 to derive it from head_dim, got {m.n_heads}")
        if m.n_heads == 0 and (m.head_dim < 1 or m.hidden_size % attention_heads(m) != 0):
            raise bad("head_dim", f"hidden_size {m.hidden_size} does not split into hidden_size // head_dim = "
                      f"{attention_heads(m)} equal heads; set n_heads or another head_dim")
        if m.experts not in EXPERTS:
            raise bad("experts", f"must be one of {', '.join(EXPERTS)}, got {m.experts!r}")
        if m.attn_norm not in ATTN_NORMS:
            raise bad("attn_norm", f"must be one of {', '.join(ATTN_NORMS)}, got {m.attn_norm!r}")
    if hasattr(m, "n_heads") and m.hidden_size % attention_heads(m) != 0:
        raise bad("n_heads", f"hidden_size {m.hidden_size} is not divisible by n_heads {m.n_heads}")
    if isinstance(m, GlintRUConfig):
        if not 0.0 < m.mixing_init < 1.0:
            raise bad("mixing_init", f"must be in the open interval (0, 1), got {m.mixing_init}")
        if not 0.0 < m.gate_ratio <= 4.0 or int(m.hidden_size * m.gate_ratio) < 1:
            raise bad("gate_ratio", f"must give a bottleneck of >= 1 unit and be <= 4, got {m.gate_ratio}")
    if isinstance(m, SASRecConfig) and m.block not in ("post_ln", "pre_ln"):
        raise bad("block", f"must be post_ln or pre_ln, got {m.block!r}")
    if hasattr(m, "layer_norm_eps") and not m.layer_norm_eps > 0:
        raise bad("layer_norm_eps", f"must be > 0, got {m.layer_norm_eps}")


def _validate(model: str, m: Any, t: TrainConfig, source: str) -> None:
    def bad(name: str, msg: str) -> UserError:
        return UserError(f"{source}: field '{name}': {msg}")

    check_model_config(m, source)
    for name, choices in _CHOICES.items():
        if getattr(t, name) not in choices:
            raise bad(name, f"must be one of {', '.join(choices)}, got {getattr(t, name)!r}")
    positive = ("max_len", "batch_size", "max_epochs", "loss_chunk", "eval_batch_size", "num_negatives_train")
    for name in positive:
        if getattr(t, name) < 1:
            raise bad(name, f"must be >= 1, got {getattr(t, name)}")
    if not t.lr > 0:
        raise bad("lr", f"must be > 0, got {t.lr}")
    if not 0.0 <= t.gbce_t <= 1.0:
        raise bad("gbce_t", f"must be in [0, 1], got {t.gbce_t}")
    for name in ("weight_decay", "grad_clip", "max_time_s"):
        if getattr(t, name) < 0:
            raise bad(name, f"must be >= 0, got {getattr(t, name)}")
    if not 0 <= t.window_overlap < t.max_len:
        raise bad("window_overlap", f"must be in [0, max_len={t.max_len}), got {t.window_overlap}")
    if t.window_overlap and t.objective != "all_positions":
        raise bad("window_overlap", "only applies to objective=all_positions (every last_position "
                  "prefix already reads its whole window); leave it at 0")
    for name in ("patience", "num_negatives", "max_train_samples"):
        if getattr(t, name) < 0:
            raise bad(name, f"must be >= 0, got {getattr(t, name)}")
    if any(k < 1 for k in t.topk):
        raise bad("topk", f"every K must be >= 1, got {list(t.topk)}")
    m_ = re.fullmatch(r"valid/([a-z0-9]+)/(hr|ndcg|mrr)@(\d+)", t.valid_metric)
    if m_ is None:
        raise bad("valid_metric", f"expected 'valid/<full|pop100|...>/<hr|ndcg|mrr>@K', got {t.valid_metric!r}")
    sampled = ("pop" if t.negative_sampling == "popularity" else "uni") + str(t.num_negatives)
    protocols = ("full", sampled) if t.num_negatives else ("full",)
    if m_.group(1) not in protocols:
        raise bad("valid_metric", f"protocol {m_.group(1)!r} is not evaluated with these settings; use one of {', '.join(protocols)}")
    if int(m_.group(3)) not in t.topk:
        raise bad("valid_metric", f"K={m_.group(3)} is not in topk {list(t.topk)}")
    if t.embedding_update == "sparse":
        if t.loss == "ce":
            raise bad("embedding_update", "'sparse' needs a sampled loss (loss=sampled_softmax or gbce): "
                      "the full softmax touches every row of the table at every step")
        for name in ("weight_decay", "grad_clip"):
            if getattr(t, name) > 0:
                raise bad("embedding_update", f"'sparse' (lazy Adam) does not support {name} > 0; "
                          f"set {name}=0 or embedding_update=dense")
        if t.compile:
            raise bad("embedding_update", "'sparse' does not work with compile=true; use embedding_update=dense")
    if not model_is_causal(m) and t.objective == "all_positions":
        raise bad(
            "objective",
            f"model '{model}' is not causal (its output at a position sees later positions), so "
            "'all_positions' training would leak future items; use objective=last_position",
        )


def model_is_causal(m: Any) -> bool:
    """Whether the model's output at position t depends only on items at positions <= t.

    Every model is causal except GLINT-RU with ``causal=False`` (the official mode).
    """
    return bool(getattr(m, "causal", True))


def build_config(model: str, overrides: Mapping[str, Any] | None = None, source: str = "config") -> RunConfig:
    """Build and validate a :class:`RunConfig` from a model name and flat overrides.

    ``source`` names where the overrides came from (a file path, ``--set``) for error messages.
    """
    _check_model(model)
    overrides = dict(overrides or {})
    overrides.pop("model", None)
    spec = MODELS[model]
    mcls = spec.config_cls
    mkeys = {f.name: f for f in fields(mcls)}
    tkeys = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(k for k in overrides if k not in mkeys and k not in tkeys)
    if unknown:
        raise UserError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)} for model '{model}'; "
            f"valid keys: {', '.join(sorted(mkeys | tkeys))}"
        )
    mvals = {**spec.model_defaults}
    tvals = {**spec.train_defaults}
    for k, v in overrides.items():
        (mvals if k in mkeys else tvals)[k] = v
    m_default, t_default = mcls(), TrainConfig()
    m = mcls(**{k: _coerce(k, v, getattr(m_default, k), source) for k, v in mvals.items()})
    t = TrainConfig(**{k: _coerce(k, v, getattr(t_default, k), source) for k, v in tvals.items()})
    _validate(model, m, t, source)
    return RunConfig(model=model, model_cfg=m, train=t)


def parse_error_message(exc: BaseException) -> str:
    """One line describing a JSON/YAML parse error: ``line L, column C: problem``."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def load_config_file(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """Read a flat YAML/JSON config file: ``model: NAME`` (optional) plus flat keys.

    Returns ``(model or None, overrides)``. YAML is read with ``safe_load`` only.
    """
    import yaml

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory; give a config file (YAML or JSON), e.g. a run's config.yaml")
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{p}: not a valid {'JSON' if p.suffix == '.json' else 'YAML'} file: {parse_error_message(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise UserError(f"{p}: key {str(odd[0])!r}: config keys must be names of config fields (strings)")
    model = data.pop("model", None)
    if model is not None and model not in MODELS:
        raise UserError(f"{p}: field 'model': unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return model, data


def parse_set_args(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` items; values are read as YAML scalars (``3``, ``1e-3``, ``true``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def config_from_flat(flat: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Inverse of :meth:`RunConfig.to_flat` (used for checkpoints and saved configs)."""
    flat = dict(flat)
    model = flat.pop("model", None)
    if not isinstance(model, str):
        raise UserError(f"{source}: field 'model' is missing")
    return build_config(model, flat, source=source)


def asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
