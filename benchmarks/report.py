"""The reproduction report: tables (mean ± std over seeds), the ablation, learning curves and the two
efficiency plots, from the run JSON files of ``benchmarks/reproduce.py``.

    python benchmarks/report.py                 # rewrites the generated part of docs/results.md

Everything between ``<!-- report:begin -->`` and ``<!-- report:end -->`` in docs/results.md is
generated; the text around it is written by hand. Plots go to ``docs/results/``. A GLINT-RU
ablation run whose configuration equals the ``glintru`` model run's (the default normaliser) counts
as that run's seed. A tagged setting (``reproduce.py --set ... --tag``) under which three or more
models trained is a comparison of its own (e.g. every model tuned with equal target weights): it gets
its own models table, best test full NDCG@10 first, captioned with what it changed for every model,
and its own accuracy-against-cost figure.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "results.md"
PLOTS = ROOT / "docs" / "results"
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
DATASETS = ("amazon-beauty", "amazon-video-games", "ml-1m", "ml-1m-5core", "amazon-beauty-54k")
MODEL_ORDER = ("glintru", "sasrec_preln", "sasrec", "sasrec_1block", "narm", "gru4rec")
# Published full-ranking HR@10 / NDCG@10 under leave-one-out with CE training (the anchors).
ANCHORS: dict[str, dict[str, tuple[float, float, str]]] = {
    "ml-1m": {
        # its code removes each user's own items from the ranking (filter_seen); RecBole's full sort of
        # a sequential model keeps them, as we do: compared with our runs rescored that way (MASKED)
        "sasrec": (0.315, 0.182, "Klenitskiy & Vasilev, RecSys 2023 (3,416 items)"),
        "gru4rec": (0.294, 0.164, "RecBole runs reported in RecBLR, CIKM 2024"),
        "narm": (0.284, 0.160, "RecBole runs reported in RecBLR, CIKM 2024"),
    },
    "amazon-beauty": {
        "sasrec": (0.0829, 0.0409, "RecBLR, CIKM 2024 (RecBole)"),
        "gru4rec": (0.0606, 0.0332, "RecBLR, CIKM 2024 (RecBole)"),
        "narm": (0.0627, 0.0333, "RecBLR, CIKM 2024 (RecBole)"),
    },
}
ANCHORS["ml-1m-5core"] = ANCHORS["ml-1m"]  # the published figures' own 3,416-item catalogue
# anchors measured with the user's own items removed from the ranking
MASKED = {("ml-1m", "sasrec"), ("ml-1m-5core", "sasrec")}
# One published table that holds all three baselines (HR@10, NDCG@10), for a dataset whose anchors above
# come from more than one paper: RecBLR (Liu et al., CIKM 2024), Table 1, RecBole runs at d = 64 on the
# 3,416-item ML-1M, the users' own items kept. A gap every model of the table shares is the table's
# setting, not one model's implementation.
SAME_TABLE: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "ml-1m": ("RecBLR, CIKM 2024, Table 1: RecBole runs at d = 64 on the 3,416-item ML-1M, the users' own "
              "items kept", {"sasrec": (0.2993, 0.1692), "gru4rec": (0.2937, 0.1638), "narm": (0.2836, 0.1597)}),
}
SAME_TABLE["ml-1m-5core"] = SAME_TABLE["ml-1m"]
ABLATION_ORDER = ("glintru-norm_none", "glintru-norm_count", "glintru-norm_kernel", "glintru-gru_only",
                  "glintru-attn_only", "glintru-kernel1")


def load_runs(results: Path = RESULTS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/*.json"))]


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    skip = {"seed"}
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def protocol_flat(model: str, dataset: str) -> dict[str, Any]:
    """The protocol's flat keys of ``model`` on ``dataset`` (reproduce.py's PROTOCOL)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reproduce import protocol

    from glintru.config import config_keys

    keys = config_keys(model)
    return {k: v for k, v in protocol(dataset).items() if k in keys}


def default_flat(model: str, dataset: str) -> dict[str, Any]:
    """Every flat key of ``model`` at its default under the dataset's protocol."""
    from glintru.config import build_config

    return build_config(model, protocol_flat(model, dataset)).to_flat()


def group_label(name: str, setting: str, tuned_from: str | None = None) -> str:
    """``glintru`` for the protocol's defaults, ``glintru (tuned)`` for a configuration tuned on the
    run's own dataset, ``glintru (tuned on amazon-beauty)`` for one tuned on another dataset."""
    if setting == "default":
        return name
    return f"{name} ({setting} on {tuned_from})" if tuned_from else f"{name} ({setting})"


def tuned_source(run: dict[str, Any]) -> str | None:
    """The dataset a tuned run's configuration was tuned on, when it is not the run's own."""
    src = run.get("tuned_from")
    return src if src and src != run["dataset"] else None


def label_cell(label: str) -> str:
    """A group label as a table cell: the model name as code, the setting after it in plain text."""
    name, _, setting = label.partition(" ")
    return f"`{name}` {setting}".rstrip()


def anchor_of(dataset: str, label: str) -> tuple[float, float] | None:
    """The published (HR@10, NDCG@10) of the label's model family (``sasrec_preln (tuned)`` -> SASRec)."""
    family = label.partition(" ")[0].split("_")[0]
    return ANCHORS.get(dataset, {}).get(family)


def model_groups(runs: list[dict[str, Any]], dataset: str) -> dict[str, list[dict[str, Any]]]:
    """Runs of each model name and setting (its seeds), tuned groups first; an ablation run with the
    default configuration counts as a seed of the default ``glintru``."""
    from glintru.config import values_before_new_keys

    groups: dict[str, list[dict[str, Any]]] = {}
    order = []
    for name in MODEL_ORDER:
        for setting in ("tuned", "default"):
            mine = [r for r in runs if r["dataset"] == dataset and r["name"] == name
                    and r.get("setting", "default") == setting]
            for src in sorted({tuned_source(r) or "" for r in mine}):
                rs = [r for r in mine if (tuned_source(r) or "") == src]
                groups[group_label(name, setting, src or None)] = rs
            order += [group_label(name, setting)] + sorted(k for k in groups if k.startswith(f"{name} ({setting} on "))
    default = default_flat("glintru", dataset)
    seeds = {r["seed"] for r in groups.get("glintru", [])}
    for r in runs:
        if (r["dataset"] == dataset and r["name"].startswith("glintru-") and r["seed"] not in seeds
                and _same_config({**default, **values_before_new_keys(r["config"]), **r["config"]}, default)):
            groups.setdefault("glintru", []).append(r)
            seeds.add(r["seed"])
    return {k: groups[k] for k in order if k in groups}


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def cpu_short(cpu: str) -> str:
    """A CPU model as a short table cell: ``Intel(R) Xeon(R) Processor @ 2.60GHz`` -> ``Xeon @ 2.60GHz``."""
    return " ".join(w for w in cpu.replace("(R)", "").replace("(TM)", "").split()
                    if w not in ("Intel", "AMD", "Processor", "CPU"))


def cpu_label(machine: dict[str, Any], short: bool = True) -> str:
    """A run's CPU as tables name it: the model (shortened) and, where recorded, its widest matmul
    instructions (``AMD EPYC`` names CPUs with and without AVX512-BF16 alike)."""
    name = cpu_short(machine["cpu"]) if short else machine["cpu"]
    return f"{name} ({machine['cpu_isa']})" if machine.get("cpu_isa") else name


def run_cpu(run: dict[str, Any], short: bool = True) -> str:
    """A run's machine as a cell names it: its CPU (:func:`cpu_label`), or the GPU it trained on
    (``H200 GPU``; long form with the host's CPU, which measured its latency per user); "n/a" for a
    JSON written before runs recorded their machine."""
    if "machine" not in run:
        return "n/a"
    if on_gpu(run):  # device "cuda: NVIDIA H200"
        gpu = run["machine"]["device"].partition(":")[2].strip() or "CUDA"
        return f"{gpu.removeprefix('NVIDIA ')} GPU" if short else f"{gpu} GPU (host {cpu_label(run['machine'], False)})"
    return cpu_label(run["machine"], short)


def on_gpu(run: dict[str, Any]) -> bool:
    """Whether a run trained on a GPU (``reproduce.py --device cuda`` records ``"cuda: <name>"``)."""
    return str(run.get("machine", {}).get("device") or "cpu").startswith("cuda")


def per_machine(runs: list[dict[str, Any]], values: Callable[[dict[str, Any]], list[float]],
                agg: Callable[[list[float]], float], fmt: str) -> str:
    """``agg`` of the runs' ``values`` as a cell, one figure per machine where the runs trained on
    several (a GPU's epochs and a CPU's, or bf16 on AMX and fp32 on AVX2, do not share a mean):
    ``109.4 (Xeon), 252.0 (EPYC)``; "n/a" without values."""
    by_cpu: dict[str, list[float]] = {}
    for r in runs:
        by_cpu.setdefault(run_cpu(r), []).extend(values(r))
    cells = {cpu: fmt.format(agg(v)) for cpu, v in sorted(by_cpu.items()) if v}
    if len(cells) > 1:
        return ", ".join(f"{cell} ({cpu})" for cpu, cell in cells.items())
    return next(iter(cells.values()), "n/a")


def per_epoch(runs: list[dict[str, Any]]) -> str:
    """The median seconds of the runs' training epochs, per machine (:func:`per_machine`)."""
    return per_machine(runs, lambda run: [h["train/s"] for h in run["history"] if "train/s" in h],
                       statistics.median, "{:.0f}")


def runs_cpus(runs: list[dict[str, Any]], short: bool = True) -> list[str]:
    """The distinct CPUs of a group of runs, sorted (``run_cpu`` of each)."""
    return sorted({run_cpu(r, short) for r in runs})


def run_stem(run: dict[str, Any]) -> str:
    """The run's JSON file name without ``.json`` (as reproduce.py names it)."""
    from reproduce import run_label

    setting = run.get("setting", "default")
    return f"{run_label(run['name'], setting, run['dataset'], run.get('tuned_from'))}__seed{run['seed']}"


def weights_stem(run: dict[str, Any]) -> str:
    """The stem of the run whose weights gave ``run``'s metrics: its own, or for a run reproduce.py
    recorded as the same configuration as another (``"same_run_as"``), that one's."""
    twin = run.get("same_run_as")
    return twin.removesuffix(".json") if twin else run_stem(run)


def load_masking(results: Path = RESULTS) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of ``history_masking.json`` (benchmarks/history_masking.py) by (dataset, run stem)."""
    p = results / "history_masking.json"
    if not p.is_file():
        return {}
    return {(r["dataset"], r["run"]): r for r in json.loads(p.read_text())["rows"]}


def load_paired(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Rows of ``paired_users.json`` (benchmarks/paired_users.py)."""
    p = results / "paired_users.json"
    return json.loads(p.read_text())["rows"] if p.is_file() else []


def load_latency(results: Path = RESULTS) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of ``latency.json`` (benchmarks/latency.py) by (dataset, run JSON stem)."""
    p = results / "latency.json"
    rows = json.loads(p.read_text())["rows"] if p.is_file() else []
    return {(r["dataset"], r["run"]): r for r in rows}


def latency_table(dataset: str, latency: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """One line per run timed side by side: the median and fastest round, and the figure the run
    recorded at the end of its training."""
    mine = [r for (ds, _), r in latency.items() if ds == dataset]
    if not mine:
        return []
    head = ["run", "window", "ms per user: median of rounds", "fastest round", "recorded after training", "CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(mine, key=lambda r: r["median_ms"]):
        rec = "" if r.get("recorded_ms") is None else f"{r['recorded_ms']:.2f}"
        lines.append("| " + " | ".join([f"`{r['run']}`", str(r["window"]), f"{r['median_ms']:.2f}",
                                         f"{r['min_ms']:.2f}", rec, cpu_short(r["cpu"])]) + " |")
    return lines


def paired_table(dataset: str, rows: list[dict[str, Any]]) -> list[str]:
    """One line per compared pair of runs: the per-user mean difference (points) with its bootstrap
    95% interval over test users, and how many users each run ranks better."""
    mine = [r for r in rows if r["dataset"] == dataset]
    if not mine:
        return []
    head = ["run", "against", "NDCG@10 difference [95% interval]", "HR@10 difference [95% interval]",
            "users ranked better: run / against"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(r: dict[str, Any], m: str) -> str:
        return f"{100 * r[f'diff_{m}']:+.2f} [{100 * r[f'ci95_lo_{m}']:+.2f}, {100 * r[f'ci95_hi_{m}']:+.2f}]"

    for r in mine:
        lines.append("| " + " | ".join([f"`{r['base']}`", f"`{r['other']}`", cell(r, "ndcg@10"), cell(r, "hr@10"),
                                         f"{r['base_better']:,} / {r['other_better']:,}"]) + " |")
    return lines


def rescored(dataset: str, rs: list[dict[str, Any]],
             masking: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The history-masking rows of the runs ``rs`` whose weights or test ranks were rescored, in seed
    order (a run trained elsewhere may have none)."""
    return [masking[key] for r in sorted(rs, key=lambda r: r["seed"])
            if (key := (dataset, weights_stem(r))) in masking]


def anchor_cells(dataset: str, label: str, rs: list[dict[str, Any]],
                 masking: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The published figures and our NDCG@10 as a share of them; an anchor measured with the users' own
    items removed from the ranking is compared with our runs rescored so (the seeds rescored, when not all
    of them are: the weights of a run trained elsewhere may be gone)."""
    anchor = anchor_of(dataset, label)
    if not anchor:
        return ["", ""]
    published = f"{100 * anchor[0]:.2f} / {100 * anchor[1]:.2f}"
    if (dataset, label.partition(" ")[0].split("_")[0]) not in MASKED:
        return [published, f"{statistics.mean(r['metrics']['test/full/ndcg@10'] for r in rs) / anchor[1]:.0%}"]
    rows = rescored(dataset, rs, masking)
    if not rows:
        return [f"{published} (own items removed)", "not rescored yet"]
    ndcg = statistics.mean(r["masked_ndcg@10"] for r in rows)
    which = "" if len(rows) == len(rs) else f", {len(rows)} of {len(rs)} seeds"
    return [f"{published} (own items removed)", f"{ndcg / anchor[1]:.0%} (ours rescored so{which}: {100 * ndcg:.2f})"]


def same_table(dataset: str, groups: dict[str, list[dict[str, Any]]],
               masking: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Every group of the models one published table holds (:data:`SAME_TABLE`; the model itself, not
    its variants: ``sasrec``, not ``sasrec_1block``) against that table: our test HR@10 / NDCG@10 and
    NDCG@10 as a share of the published one, with the users' own items kept (as the table and our
    protocol rank) and removed (over the seeds rescored by ``benchmarks/history_masking.py``)."""
    if dataset not in SAME_TABLE:
        return []
    published = SAME_TABLE[dataset][1]
    head = ["model", "seeds", "published HR@10 / NDCG@10", "ours HR@10 / NDCG@10", "ours / published NDCG",
            "ours, own items removed: NDCG@10", "removed / published NDCG"]
    lines = []
    for label, rs in groups.items():
        name = label.partition(" ")[0]
        if name not in published:
            continue
        hr, ndcg = published[name]
        rs = sorted(rs, key=lambda r: r["seed"])
        m = [r["metrics"] for r in rs]
        ours = statistics.mean(x["test/full/ndcg@10"] for x in m)
        rows = rescored(dataset, rs, masking)
        removed = statistics.mean(r["masked_ndcg@10"] for r in rows) if rows else None
        which = "" if len(rows) == len(rs) else f" ({len(rows)} of {len(rs)} seeds)"
        lines.append("| " + " | ".join([
            label_cell(label), ",".join(str(r["seed"]) for r in rs), f"{100 * hr:.2f} / {100 * ndcg:.2f}",
            f"{mean_std([x['test/full/hr@10'] for x in m])} / {mean_std([x['test/full/ndcg@10'] for x in m])}",
            f"{ours / ndcg:.0%}",
            f"{100 * removed:.2f}{which}" if rows else "not rescored yet",
            f"{removed / ndcg:.0%}" if rows else "",
        ]) + " |")
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + lines if lines else []


def model_table(dataset: str, groups: dict[str, list[dict[str, Any]]],
                masking: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[str]:
    masking = load_masking() if masking is None else masking
    anchored = dataset in ANCHORS  # no published figures (a user's own data): no columns for them
    head = ["model", "seeds", "full HR@10", "full NDCG@10", "pop100 HR@10", "pop100 NDCG@10", "epochs (best)",
            "train min", "latency ms/user", "trained on", "precision"]
    head += ["published HR@10 / NDCG@10", "ours / published NDCG"] if anchored else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        m = [r["metrics"] for r in rs]
        cells = [
            label_cell(label),
            ",".join(str(r["seed"]) for r in rs),
            mean_std([x["test/full/hr@10"] for x in m]), mean_std([x["test/full/ndcg@10"] for x in m]),
            *(mean_std([x[k] for x in m]) if all(k in x for x in m) else "n/a"  # another sampled protocol, or none
              for k in ("test/pop100/hr@10", "test/pop100/ndcg@10")),
            ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
            per_machine(rs, lambda r: [r["train_s"] / 60], statistics.mean, "{:.1f}"),
            per_machine(rs, lambda r: [r["latency_ms_per_user"]], statistics.mean, "{:.2f}"),
            ", ".join(runs_cpus(rs)),
            "/".join(sorted({r["config"].get("precision", "fp32") for r in rs})),
            *(anchor_cells(dataset, label, rs, masking) if anchored else []),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def with_variants(groups: dict[str, list[dict[str, Any]]], runs: list[dict[str, Any]],
                  dataset: str) -> dict[str, list[dict[str, Any]]]:
    """``groups`` followed by the tagged variants (``glintru (tuned-bf16)``), each after its base; a
    run recorded as the same configuration as another (``"same_run_as"``) is that run's row."""
    out = dict(groups)
    for r in sorted(runs, key=lambda r: (r["name"], r.get("setting", ""), r["seed"])):
        if r["dataset"] == dataset and "-" in r.get("setting", "default") and "same_run_as" not in r:
            out.setdefault(group_label(r["name"], r["setting"], tuned_source(r)), []).append(r)
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0].partition(" ")[0], 99)))


def families(runs: list[dict[str, Any]], dataset: str,
             min_models: int = 3) -> dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]]:
    """Tagged settings (``reproduce.py --set ... --tag``) under which at least ``min_models`` of the
    report's models trained on ``dataset``: ``{(setting, tuned on): {model name: its seeds}}``, the
    models ordered by mean test full NDCG@10, best first. Each is a comparison of its own: every model
    changed alike (e.g. ``tuned-equal``: equal target weights, each model's tuned configuration)."""
    found: dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        if r["dataset"] == dataset and r["name"] in MODEL_ORDER and "-" in r.get("setting", "default"):
            found.setdefault((r["setting"], tuned_source(r)), {}).setdefault(r["name"], []).append(r)

    def mean_ndcg(rs: list[dict[str, Any]]) -> float:
        return statistics.mean(r["metrics"]["test/full/ndcg@10"] for r in rs)

    return {key: dict(sorted(groups.items(), key=lambda kv: -mean_ndcg(kv[1])))
            for key, groups in sorted(found.items()) if len(groups) >= min_models}


def plan_flat(name: str, dataset: str) -> dict[str, Any]:
    """Every flat key of a ``models``-plan run ``name`` as its plan gives it (protocol, plan keys)."""
    from reproduce import MODEL_RUNS, run_spec

    model, overrides = MODEL_RUNS[name]
    return {k: v for k, v in run_spec(dataset, name, model, overrides, 0).to_flat().items() if k != "seed"}


def family_changes(groups: dict[str, list[dict[str, Any]]],
                   dataset: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """What a family changed from the plan's configuration of each model: the keys every run shares
    with a value other than some model's plan value (changed for all alike), and each model's other
    changed keys (its tuned values, or a model-specific ``--set``). The precision is left out: the
    models table gives each group's in a column of its own, and a family's seeds may have trained in
    different precisions on different machines."""
    from glintru.config import values_before_new_keys

    cfgs = {name: [{k: v for k, v in {**values_before_new_keys(r["config"]), **r["config"]}.items()
                    if k != "precision"} for r in rs] for name, rs in groups.items()}
    flat = [c for cs in cfgs.values() for c in cs]
    plans = {name: plan_flat(name, dataset) for name in groups}
    missing = object()
    common = {k: v for k, v in flat[0].items() if k != "seed" and all(c.get(k, missing) == v for c in flat[1:])}
    alike = {k: v for k, v in common.items() if any(p.get(k) != v for p in plans.values())}
    own = {name: {k: v for k, v in cfgs[name][0].items()
                  if k != "seed" and k not in common and plans[name].get(k) != v} for name in groups}
    return alike, own


def family_caption(setting: str, tuned_from: str | None, groups: dict[str, list[dict[str, Any]]],
                   dataset: str) -> str:
    alike, own = family_changes(groups, dataset)
    if setting.startswith("tuned"):
        parts = [f"each model's configuration tuned on {tuned_from or 'this dataset'}"]
    else:
        except_ = " and ".join(f"{name}: {', '.join(f'{k}={v}' for k, v in sorted(o.items()))}"
                               for name, o in own.items() if o)
        parts = ["each model at the protocol's defaults" + (f", except {except_}" if except_ else "")]
    if alike:
        parts.append("every model with " + ", ".join(f"{k}={v}" for k, v in sorted(alike.items())))
    twins: dict[str, list[str]] = {}  # a configuration equal to another setting's run: reproduce.py recorded that run
    for name, rs in groups.items():
        if all("same_run_as" in r for r in rs):
            twins.setdefault(rs[0]["same_run_as"].split("__")[1], []).append(name)
    for other, names in sorted(twins.items()):
        names = sorted(names)
        who = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        parts.append(f"{who}: the `{other}` run{'s' if len(names) > 1 else ''}, "
                     f"the same configuration{'s' if len(names) > 1 else ''}")
    return f"Models trained alike, `{setting}` ({'; '.join(parts)}), best test full NDCG@10 first (in %):"


def masking_table(dataset: str, masking: dict[tuple[str, str], dict[str, Any]],
                  groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each model group's test metrics with the users' own items kept (our protocol) and removed, over
    the seeds whose weights were rescored (``benchmarks/history_masking.py``); ``groups`` may hold
    tagged variants too (:func:`with_variants`)."""
    head = ["model", "seeds rescored", "full HR@10 kept", "full NDCG@10 kept", "HR@10 removed",
            "NDCG@10 removed", "NDCG removed / kept"]
    lines = []
    for label, rs in groups.items():
        rows = rescored(dataset, rs, masking)
        if not rows:
            continue
        lines.append("| " + " | ".join([
            label_cell(label), f"{len(rows)} of {len(rs)}",
            mean_std([r["kept_hr@10"] for r in rows]), mean_std([r["kept_ndcg@10"] for r in rows]),
            mean_std([r["masked_hr@10"] for r in rows]), mean_std([r["masked_ndcg@10"] for r in rows]),
            f"{statistics.mean(r['ndcg_lift'] for r in rows):.2f}x",
        ]) + " |")
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + lines if lines else []


def load_tuning(results: Path = RESULTS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((results / "tuning").glob("*.json"))]


def chosen_trial(study: dict[str, Any], keys: list[str], metric: str) -> dict[str, str]:
    """The trial whose searched values the study's ``best_config`` holds: ``glintru tune`` chooses by
    each trial's best epoch, which the trials list (each trial's last report) does not show. A record
    without ``best_config``, or whose values match no trial, falls back to the highest last report."""
    import yaml
    from tune_models import matching_trial

    best = yaml.safe_load(study.get("best_config") or "") or {}
    chosen = matching_trial(study["trials"], {k: best[k] for k in keys}) if all(k in best for k in keys) else None
    return chosen or max(study["trials"], key=lambda t: float(t[metric]))


SPACE_GRACE = 5  # the grace of benchmarks/spaces/*.yaml: studies recorded before "grace_period" was, ran with it


def tuning_table(studies: list[dict[str, Any]], dataset: str) -> list[str]:
    """One row per model's study: trials, epochs, the chosen trial's validation NDCG@10 and its values."""
    rows = [s for s in studies if s["dataset"] == dataset]
    if not rows:
        return []
    metric = "valid/full/ndcg@10"
    head = ["model", "trials", "ASHA grace", "epochs trained (all trials)", "first trial (defaults) valid NDCG@10",
            "chosen trial valid NDCG@10", "chosen configuration", "trial minutes (sum)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    for st in sorted(rows, key=lambda s: order.get(s["model"], 99)):
        trials = st["trials"]
        keys = [k for k in trials[0] if k not in ("trial_id", "epoch", metric, "best_epoch", f"best {metric}")
                and not k.endswith("_s")]
        best = chosen_trial(st, keys, metric)
        first = next((t for t in trials if t["trial_id"] == st.get("first_trial")), None)

        def fmt(v: str) -> str:
            x = float(v)
            return f"{x:.3g}" if x != int(x) else str(int(x))

        lines.append("| " + " | ".join([
            f"`{st['model']}`" + (f" ({st['tag']})" if st.get("tag") else ""), str(len(trials)),
            str(st.get("grace_period", SPACE_GRACE)), str(sum(int(float(t["epoch"])) for t in trials)),
            f"{100 * float(first[metric]):.2f}" if first else "",
            f"{100 * float(best[metric]):.2f}", ", ".join(f"{k}={fmt(best[k])}" for k in keys),
            f"{sum(float(t['trial_s'] or 0) for t in trials) / 60:.0f}",
        ]) + " |")
    return lines


LOSS_ORDER = ("glintru-loss_ce", "glintru-loss_sampled", "glintru-loss_gbce", "glintru-loss_gbce_offset")


def loss_label(config: dict[str, Any]) -> str:
    """A loss as the tables name it; gBCE with the learnable score offset is ``gbce`` + offset (runs
    recorded before ``gbce_offset`` existed had none)."""
    return config["loss"] + (" + offset" if config["loss"] == "gbce" and config.get("gbce_offset", False) else "")


def losses_table(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    """GLINT-RU trained with each loss (seed 1): accuracy, epochs and the training rate."""
    rs = {r["name"]: r for r in runs if r["dataset"] == dataset and r["name"] in LOSS_ORDER and r["seed"] == 1}
    if not rs:
        return []
    head = ["loss", "negatives", "full HR@10", "full NDCG@10", "pop100 NDCG@10", "epochs (best)", "train min",
            "median targets/s", "precision", "trained on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in LOSS_ORDER:
        if name not in rs:
            continue
        r, c, m = rs[name], rs[name]["config"], rs[name]["metrics"]
        rate = statistics.median(h["train/targets_per_s"] for h in r["history"])
        lines.append("| " + " | ".join([
            f"`{loss_label(c)}`", "all items" if c["loss"] == "ce" else str(c["num_negatives_train"]),
            f"{100 * m['test/full/hr@10']:.2f}", f"{100 * m['test/full/ndcg@10']:.2f}",
            f"{100 * m['test/pop100/ndcg@10']:.2f}", f"{r['epochs']} ({r['best_epoch']})",
            f"{r['train_s'] / 60:.1f}", f"{rate:,.0f}", c.get("precision", "fp32"), run_cpu(r),
        ]) + " |")
    return lines


def losses_section(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    """One captioned losses table per base configuration (the runs' setting): the caption says which
    GLINT-RU the losses trained (protocol defaults or a tuned configuration, the window overlap)."""
    from reproduce import LOSS_RUNS

    mine = [r for r in runs if r["dataset"] == dataset and r["name"] in LOSS_ORDER and r["seed"] == 1]
    # keys the plan's runs set themselves, or that every row names: not a tagged variant's change
    plan_keys = {k for _, over in LOSS_RUNS.values() for k in over} | {"precision", "window_overlap"}
    lines: list[str] = []
    for setting in sorted({r.get("setting", "default") for r in mine}):
        rs = [r for r in mine if r.get("setting", "default") == setting]
        first = rs[0]
        tuned = setting.startswith("tuned")
        base = (f"GLINT-RU with its configuration tuned on {tuned_source(first) or dataset}" if tuned
                else "GLINT-RU at the protocol's settings")
        overlap = first["config"].get("window_overlap", 0)
        if overlap:
            base += f", training windows overlapping by {overlap} items"
        if not tuned and setting != "default":  # a tagged variant (--set ... --tag T): what it changed
            changed = {k: v for k, v in (first.get("overrides") or {}).items() if k not in plan_keys}
            base += "".join(f", {k}={v}" for k, v in sorted(changed.items()))
        lines += [f"Training losses ({base}, seed 1; the sampled softmax shares its negatives across the batch, "
                  "gBCE draws them per sequence; compare times within one CPU and precision only):", ""]
        lines += losses_table(rs, dataset) + [""]
    return lines


def ablation_table(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    rs = {r["name"]: r for r in runs if r["dataset"] == dataset and r["name"] in ABLATION_ORDER and r["seed"] == 1}
    if not rs:
        return []
    head = ["variant", "attn_norm", "experts", "kernel", "full HR@10", "full NDCG@10", "pop100 NDCG@10",
            "epochs (best)", "mix at best (GRU share)", "train min", "precision", "trained on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ABLATION_ORDER:
        if name not in rs:
            continue
        r, c, m = rs[name], rs[name]["config"], rs[name]["metrics"]
        mix = r["history"][r["best_epoch"] - 1].get("diag/mix_gru")
        lines.append("| " + " | ".join([
            f"`{name}`", c["attn_norm"], c["experts"], str(c["kernel_size"]), f"{100 * m['test/full/hr@10']:.2f}",
            f"{100 * m['test/full/ndcg@10']:.2f}", f"{100 * m['test/pop100/ndcg@10']:.2f}",
            f"{r['epochs']} ({r['best_epoch']})", f"{mix:.2f}" if mix is not None else "",
            f"{r['train_s'] / 60:.1f}", c.get("precision", "fp32"), run_cpu(r),
        ]) + " |")
    return lines


def set_by_variant(run: dict[str, Any]) -> dict[str, Any]:
    """The overrides of a run beyond those its plan gives its name (what ``--set`` added)."""
    from reproduce import PLANS

    plan = next((p[run["name"]][1] for p in PLANS.values() if run["name"] in p), {})
    return {k: v for k, v in run.get("overrides", {}).items() if k not in plan or plan[k] != v}


def variants_table(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    """Tagged variants (``reproduce.py --tag``, e.g. ``tuned-bf16``) next to the runs they vary: the
    same name in the untagged setting. Per variant: its seeds' test full NDCG@10, the base's mean ±
    std over its seeds, the difference of the means in units of the base's seed-to-seed std, and
    the median training seconds per epoch of each (with the CPU, since bases may come from another).
    The training losses have their own table (:func:`losses_section`), tagged or not; a tuned run
    of a family (:func:`families`) without a base run is left to its family's table, which says what
    the family changed (here every tuned value would be listed as a change from nothing)."""
    in_family = {(name, setting) for (setting, _), fam in families(runs, dataset).items() for name in fam}
    tagged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        if (r["dataset"] == dataset and "-" in r.get("setting", "default") and r["name"] not in LOSS_ORDER
                and "same_run_as" not in r):  # a recorded twin is its original's row
            tagged.setdefault((r["name"], r["setting"]), []).append(r)
    if not tagged:
        return []
    head = ["variant", "changed", "seeds", "full NDCG@10 per seed", "mean", "base (seeds)", "difference / base std",
            "s per epoch: variant / base", "CPU: variant / base"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = model_groups(runs, dataset)
    for (name, setting), rs in sorted(tagged.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        base_setting = setting.split("-", 1)[0]
        # the model table's group: a default GLINT-RU's ablation-run seeds and a tuned-on-another-dataset
        # base count as in the main table; names outside it (ablation runs) by name and setting
        base = groups.get(group_label(name, base_setting, tuned_source(rs[0])))
        if base is None:
            base = [r for r in runs if r["dataset"] == dataset and r["name"] == name
                    and r.get("setting", "default") == base_setting and tuned_source(r) == tuned_source(rs[0])]
        if not base and setting.startswith("tuned") and (name, setting) in in_family:
            continue
        base = sorted(base, key=lambda r: r["seed"])
        nd = [r["metrics"]["test/full/ndcg@10"] for r in rs]
        bnd = [r["metrics"]["test/full/ndcg@10"] for r in base]
        # a key newer than the base run has its default there (what the base run trained with)
        if base:
            base_cfg = {**default_flat(rs[0]["model"], dataset), **base[0]["config"]}
            per_seed = [{k: v for k, v in r["config"].items() if k != "seed" and base_cfg.get(k) != v} for r in rs]
        else:  # no base run: what --set changed on top of the plan's own settings for this name
            per_seed = [set_by_variant(r) for r in rs]
        gap = ""
        if len(bnd) > 1 and statistics.stdev(bnd) > 0:
            gap = f"{(statistics.mean(nd) - statistics.mean(bnd)) / statistics.stdev(bnd):+.1f}"

        lines.append("| " + " | ".join([
            f"`{name}` ({setting})", changed_text(rs, per_seed),
            ",".join(str(r["seed"]) for r in rs), ", ".join(f"{100 * v:.2f}" for v in nd),
            f"{100 * statistics.mean(nd):.2f}",
            f"{mean_std(bnd)} ({','.join(str(r['seed']) for r in base)})" if base else "none",
            gap, f"{per_epoch(rs)} / {per_epoch(base)}" if base else per_epoch(rs),
            ", ".join(runs_cpus(rs)) + (" / " + ", ".join(runs_cpus(base)) if base else ""),
        ]) + " |")
    return lines if len(lines) > 2 else []  # a header alone: every variant is in its family's table


def changed_text(rs: list[dict[str, Any]], per_seed: list[dict[str, Any]]) -> str:
    """A variant's changed keys, ``k=v``: every key some seed changed (``per_seed``), with the value
    each seed's configuration holds; a key whose value differs between the seeds (one trained in
    bf16, another in fp32) names each value's seeds: ``precision=bf16 (1), fp32 (3)``."""
    parts = []
    for k in sorted({k for changes in per_seed for k in changes}):
        by_value: dict[str, list[str]] = {}
        for r, changes in zip(rs, per_seed):
            by_value.setdefault(str(changes.get(k, r["config"].get(k))), []).append(str(r["seed"]))
        if len(by_value) == 1:
            parts.append(f"{k}={next(iter(by_value))}")
        else:
            parts.append(f"{k}=" + ", ".join(f"{v} ({','.join(seeds)})" for v, seeds in by_value.items()))
    return ", ".join(parts)


def diagnostics_table(groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """How the expert mix evolves in the default GLINT-RU run (seed 1): mixing share and output norms."""
    run = next((r for r in groups.get("glintru", []) if r["seed"] == 1), None)
    if run is None or "diag/mix_gru" not in run["history"][0]:
        return []
    head = ["epoch", "GRU share", "GRU expert output norm", "attention expert output norm", "raw attention sum norm",
            "valid full NDCG@10"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n = len(run["history"])
    for e in sorted({1, 2, 3, 5, 10, run["best_epoch"], n}):
        if e > n:
            continue
        h = run["history"][e - 1]
        lines.append("| " + " | ".join([str(e), f"{h['diag/mix_gru']:.3f}", f"{h['diag/gru_out_norm']:.2f}",
                                          f"{h['diag/attn_out_norm']:.2f}", f"{h['diag/attn_sum_norm']:.3f}",
                                          f"{100 * h['valid/full/ndcg@10']:.2f}"]) + " |")
    return lines


def efficiency_points(runs: list[dict[str, Any]], dataset: str,
                      groups: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """What the accuracy-against-cost figure places: the model groups, or, on a dataset without model
    runs (the 54,542-item Beauty), the training losses, one point each."""
    if groups:
        return groups
    return {f"loss {loss_label(r['config'])}": [r] for r in runs
            if r["dataset"] == dataset and r["name"] in LOSS_ORDER and r["seed"] == 1}


MARKERS = "o^sDvP*X"


def figure_stem(dataset: str, setting: str | None = None, tuned_from: str | None = None) -> str:
    """The file stem of a dataset's accuracy-against-cost figure: the main model table's, or a
    family's (``efficiency_ml-1m__tuned-equal_overlap150__from-amazon-beauty``)."""
    stem = f"efficiency_{dataset}"
    if setting:
        stem += f"__{setting}" + (f"__from-{tuned_from}" if tuned_from else "")
    return stem


def side_by_side(runs: list[dict[str, Any]],
                 latency: dict[tuple[str, str], dict[str, Any]]) -> dict[int, float] | None:
    """Each run's latency from one side-by-side measurement (``benchmarks/latency.py``, the run's
    own weights or its twin's), by ``id(run)``: only when every run has one, all taken on one CPU,
    else None (a figure never mixes those with the latencies recorded after training)."""
    found = {}
    for r in runs:
        row = latency.get((r["dataset"], run_stem(r))) or latency.get((r["dataset"], weights_stem(r)))
        if row is None:
            return None
        found[id(r)] = row
    if len({row["cpu"] for row in found.values()}) > 1:
        return None
    return {k: row["median_ms"] for k, row in found.items()}


def cost_coordinates(points: dict[str, list[dict[str, Any]]],
                     latency: dict[tuple[str, str], dict[str, Any]] | None = None,
                     ) -> tuple[list[tuple[str, str, float, float]], list[tuple[str, str, float, float]], bool]:
    """What the accuracy-against-cost figure places, as (group, machine, x, test full NDCG@10 in %):
    training minutes to convergence (left panel) and latency per user in ms (right), and whether the
    latencies are one side-by-side measurement (:func:`side_by_side`) rather than each run's own,
    recorded after its training. A run trained on a GPU has no point on the left (its training time
    is not on the CPU's scale); its latency, measured on a CPU like every run's, is on the right."""
    runs = [r for rs in points.values() for r in rs]
    shared = side_by_side(runs, latency or {})
    left, right = [], []
    for name, rs in points.items():
        for r in rs:
            nd = 100 * r["metrics"]["test/full/ndcg@10"]
            if not on_gpu(r):
                left.append((name, run_cpu(r), r["train_s"] / 60, nd))
            right.append((name, run_cpu(r), shared[id(r)] if shared else r["latency_ms_per_user"], nd))
    return left, right, shared is not None


def efficiency_figure(points: dict[str, list[dict[str, Any]]], title: str, path: Path,
                      latency: dict[tuple[str, str], dict[str, Any]] | None = None) -> bool:
    """Test full NDCG@10 against training time to convergence (left) and latency per user (right),
    one colour a model group, one marker a machine (:func:`cost_coordinates`). False (and no file)
    when there is nothing to place."""
    left, right, shared = cost_coordinates(points, latency)
    if not right:
        path.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    machines = sorted({m for _, m, _, _ in right})
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(machines)}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = {m: i for i, m in enumerate(MODEL_ORDER)}  # a model keeps its colour from figure to figure
    colour = {name: cycle[order.get(name.partition(" ")[0], len(order) + i) % len(cycle)]
              for i, name in enumerate(points)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, placed in zip(axes, (left, right)):
        for name, m, x, y in placed:
            ax.scatter(x, y, color=colour[name], marker=marker[m])
        ax.set_ylabel("test full NDCG@10 (%)")
    left_out = len(right) - len(left)
    axes[0].set_xlabel("training time to convergence (min, 1 CPU thread)"
                       + (f"; {left_out} GPU-trained run{'s' if left_out > 1 else ''} left out" if left_out else ""))
    axes[1].set_xlabel("latency per user (ms, batch of 1, 1 CPU thread, "
                       + ("side by side)" if shared else "each run after its training)"))
    axes[0].legend(handles=[Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in colour.items()], fontsize=7)
    axes[1].legend(handles=[Line2D([], [], color="grey", marker=marker[m], ls="", label=f"trained on {m}")
                            for m in machines], fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plots(runs: list[dict[str, Any]], dataset: str, groups: dict[str, list[dict[str, Any]]],
          fams: dict[tuple[str, str | None], dict[str, list[dict[str, Any]]]] | None = None,
          latency: dict[tuple[str, str], dict[str, Any]] | None = None, doc: Path | None = None) -> list[str]:
    """The learning curves, the main table's accuracy-against-cost figure and one per family, as PNG
    files in the folder named after ``doc`` (``docs/results/`` for ``docs/results.md``, the default),
    linked relative to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder, doc = (PLOTS, DOC) if doc is None else (doc.parent / doc.stem, doc)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in sorted((r for r in runs if r["dataset"] == dataset), key=lambda r: (r["name"], r["seed"])):
        ep = [h["epoch"] for h in r["history"]]
        label = group_label(r["name"], r.get("setting", "default"), tuned_source(r))
        ax.plot(ep, [100 * h["valid/full/ndcg@10"] for h in r["history"]], label=f"{label} s{r['seed']}", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid full NDCG@10 (%)")
    ax.set_title(f"{dataset}: learning curves")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = folder / f"curves_{dataset}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out.append(f"![learning curves]({path.relative_to(doc.parent)})")
    figures = [(efficiency_points(runs, dataset, groups), f"{dataset}: accuracy against cost", figure_stem(dataset))]
    for (setting, src), fam in (fams or {}).items():
        figures.append((fam, f"{dataset}, {setting}" + (f" (tuned on {src})" if src else "")
                        + ": accuracy against cost", figure_stem(dataset, setting, src)))
    for points, title, stem in figures:
        path = folder / f"{stem}.png"
        if efficiency_figure(points, title, path, latency):
            out.append(f"![{title}]({path.relative_to(doc.parent)})")
    made = {stem for _, _, stem in figures}
    for old in folder.glob(f"{figure_stem(dataset)}__*.png"):  # a family no longer in the report
        if old.stem not in made:
            old.unlink()
    return out


def report(runs: list[dict[str, Any]], studies: list[dict[str, Any]] | None = None,
           masking: dict[tuple[str, str], dict[str, Any]] | None = None,
           paired: list[dict[str, Any]] | None = None,
           latency: dict[tuple[str, str], dict[str, Any]] | None = None,
           datasets: list[str] | None = None, doc: Path | None = None) -> str:
    """The generated block; ``studies`` are the tuning records, ``masking`` the history-masking rows,
    ``paired`` the user-by-user comparisons and ``latency`` the side-by-side latencies (default:
    those under ``benchmarks/results``); one section per dataset of ``datasets`` (default:
    :func:`report_datasets`); the plots go beside ``doc`` (:func:`plots`)."""
    paired = load_paired() if paired is None else paired
    latency = load_latency() if latency is None else latency
    studies = load_tuning() if studies is None else studies
    masking = load_masking() if masking is None else masking
    lines = []
    for ds in datasets or report_datasets(runs):
        if not any(r["dataset"] == ds for r in runs):
            lines += [f"### {ds}", "", "No converged run yet.", ""]
            continue
        groups = model_groups(runs, ds)
        cpus = runs_cpus([r for r in runs if r["dataset"] == ds], short=False)
        gpu_runs = [r for r in runs if r["dataset"] == ds and on_gpu(r)]
        shared = (f"; on a GPU, up to {max(r['machine'].get('parallel_runs', 1) for r in gpu_runs)} runs of one "
                  "call shared it, one process each") if gpu_runs else ""
        lines += [f"### {ds}", "", f"Measured on: {', '.join(cpus)}; {cpu_practice(runs, ds)}{shared}.", ""]
        if groups:
            lines += [("Models (test metrics in %, the best epoch on each protocol's own validation metric; training "
                       "minutes and latency are means over the seeds, per machine where they trained on several):"), ""]
            lines += model_table(ds, groups, masking) + [""]
        fams = families(runs, ds)
        for (setting, src), fam in fams.items():
            lines += [family_caption(setting, src, fam, ds), ""] + model_table(ds, fam, masking) + [""]
        variants = with_variants(groups, runs, ds)
        lines += captioned("The same weights' test metrics with each user's own items removed from the ranking "
                           "(`benchmarks/history_masking.py`; our protocol keeps them as candidates; in %, over the "
                           "seeds whose weights or test ranks (`benchmarks/results/ranks/`) are at hand):", masking_table(ds, masking, variants))
        if ds in SAME_TABLE:
            lines += captioned(f"The baselines against one published table that holds them all ({SAME_TABLE[ds][0]}; "
                               "every group of each of its models, in %; a share that every model has in common "
                               "points at the table's setting rather than at one model's code):",
                               same_table(ds, variants, masking))
        lines += captioned("Runs compared user by user against the noise of the test users alone "
                           "(`benchmarks/paired_users.py`: each user's test rank under each run's best weights, paired "
                           "across the two runs; mean difference in points with a bootstrap 95% interval over "
                           "users; the seed-to-seed spread is not in it):", paired_table(ds, paired))
        lines += captioned("Inference latency per user measured side by side (`benchmarks/latency.py`: each run's best "
                           "weights in one process, one thread, round-robin; per round the median over the first test "
                           "users, scored one at a time over the whole catalogue; the figures below use these where "
                           "every run of a figure has one):", latency_table(ds, latency))
        lines += captioned("The expert mix during training (`glintru`, seed 1; norms are means over real positions of a "
                           "fixed batch of 256 training windows):", diagnostics_table(groups))
        lines += captioned("Tuning (`benchmarks/tune_models.py`: `glintru tune`, the same budget for every model: 8 "
                           "trials, ASHA grace 5 epochs (a family with a longer grace names it), at most 30 epochs; validation full NDCG@10 in %, the value a "
                           "trial last reported; the study chooses the trial whose best epoch was highest, so its "
                           "last report can be below another trial's):", tuning_table(studies, ds))
        lines += losses_section(runs, ds)
        lines += captioned("Variants (`reproduce.py --set ... --tag ...`: one setting changed, the other keys as in the "
                           "base runs; test full NDCG@10 in %):", variants_table(runs, ds))
        lines += captioned("Ablation (GLINT-RU, seed 1):", ablation_table(runs, ds))
        lines += plots(runs, ds, groups, fams, latency, doc) + [""]
    return "\n".join(lines)


def cpu_practice(runs: list[dict[str, Any]], dataset: str) -> str:
    """How the runs of ``dataset`` shared a CPU: the project's own practice for its datasets (two
    calls of ``--jobs 1`` side by side count as one in the runs' records), else what the runs recorded
    (their torch threads, and the most runs one call trained at once)."""
    if dataset in DATASETS:
        return "one torch thread per run, two runs at a time on a CPU"
    cpu = [r["machine"] for r in runs if r["dataset"] == dataset and not on_gpu(r) and r.get("machine")]
    if not cpu:
        return "no run on a CPU"
    threads = sorted({m.get("torch_threads", 1) for m in cpu})
    jobs = max(m.get("parallel_runs", 1) for m in cpu)
    each = "one torch thread" if threads == [1] else f"{'/'.join(map(str, threads))} torch threads"
    return f"{each} per run, " + ("one run at a time" if jobs == 1 else f"up to {jobs} runs of one call at a time") + " on a CPU"


def report_datasets(runs: list[dict[str, Any]]) -> list[str]:
    """The reproduction's datasets in their order, then any other dataset with runs (a user's own,
    ``reproduce.py --prepared NAME=DIR``), by name."""
    return [*DATASETS, *sorted({r["dataset"] for r in runs} - set(DATASETS))]


def captioned(caption: str, table: list[str]) -> list[str]:
    """A table under its caption, each followed by a blank line; nothing for an empty table."""
    return [caption, "", *table, ""] if table else []


def write_report(results: Path = RESULTS, doc: Path = DOC, datasets: list[str] | None = None) -> Path:
    """Rewrite the block between :data:`BEGIN` and :data:`END` of ``doc``; a ``doc`` that does not
    exist yet is made with a title and the block (a report of your own data, beside the project's)."""
    if doc.exists():
        text = doc.read_text(encoding="utf-8")
    else:
        doc.parent.mkdir(parents=True, exist_ok=True)
        text = (f"# Results: {', '.join(datasets) if datasets else results}\n\nMade by `benchmarks/report.py`; "
                f"the block below is rewritten each time.\n\n{BEGIN}\n{END}\n")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} block to fill")
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    block = report(load_runs(results), load_tuning(results), load_masking(results), load_paired(results),
                   load_latency(results), datasets, doc)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(before + BEGIN + "\n" + block + "\n" + END + after, encoding="utf-8")
    tmp.replace(doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(RESULTS), help="directory holding runs/ and tuning/")
    ap.add_argument("--doc", default=str(DOC), help="the markdown file whose report block is rewritten, made "
                    "if missing (plots go to the folder of its name beside it: docs/results/ for the default)")
    ap.add_argument("--datasets", nargs="+", metavar="DATASET",
                    help="the datasets to report, in this order (default: the reproduction's, then any other with runs)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    print(write_report(Path(args.results), Path(args.doc), args.datasets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
