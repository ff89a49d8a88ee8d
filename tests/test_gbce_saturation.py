"""benchmarks/gbce_saturation.py's instruments: the learnable logit offset is exactly a shift of every
gBCE score, and the collapse probes read a collapsed model as collapsed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gbce_saturation

from glintru.engine.loss import gbce_loss


def test_the_bias_wrapper_is_gbce_on_every_score_shifted_by_the_bias():
    torch.manual_seed(0)
    h, emb = torch.randn(2, 3, 4), torch.randn(6, 4)
    targets = torch.tensor([[1, 2, 0], [3, 4, 5]])
    negatives = torch.tensor([[2, 5], [1, 3]])
    bias = torch.nn.Parameter(torch.tensor([-0.7]))
    got = gbce_saturation.gbce_with_bias(gbce_loss, bias)(h, emb, targets, negatives, 5, 0.75)
    # by hand: alpha = 2/4, beta = alpha * (t * (1 - 1/alpha) + 1/alpha) = 0.5 * (0.75 * -1 + 2) = 0.625
    terms = []
    for b in range(2):
        for n in range(3):
            t = int(targets[b, n])
            if t == 0:
                continue
            pos = h[b, n] @ emb[t] - 0.7
            neg = sum(F.logsigmoid(-(h[b, n] @ emb[j] - 0.7)) for j in negatives[b].tolist() if j != t)
            terms.append(-0.625 * F.logsigmoid(pos) - neg)
    assert float(got) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)
    got.backward()  # the offset learns: a gradient reaches it
    assert bias.grad is not None and float(bias.grad.abs()) > 0
    # The engine's own offset (gbce_offset=true) is the same loss and the same gradient.
    engine_bias = bias.detach().clone().requires_grad_(True)
    engine = gbce_loss(h, emb, targets, negatives, 5, 0.75, offset=engine_bias)
    assert float(engine) == pytest.approx(float(got), rel=1e-6)
    engine.backward()
    assert float(engine_bias.grad) == pytest.approx(float(bias.grad), rel=1e-5)


def test_variant_options_are_split_from_config_overrides_and_unknown_ones_named():
    assert gbce_saturation.parse_variant("loss=gbce,bench.logit_bias=1") == ({"loss": "gbce"}, {"logit_bias": 1})
    assert gbce_saturation.parse_variant("bench.logit_bias=1,bench.logit_bias_init=-8.2") == (
        {}, {"logit_bias": 1, "logit_bias_init": -8.2})
    with pytest.raises(SystemExit, match="bench.typo"):
        gbce_saturation.parse_variant("loss=gbce,bench.typo=1")
    with pytest.raises(SystemExit, match="bench.logit_bias is a second offset on top of gbce_offset=true"):
        gbce_saturation.run_variant({}, "loss=gbce,gbce_offset=true,bench.logit_bias=1", "unused", 1)


def test_the_collapse_probes_on_a_model_whose_items_share_one_vector():
    from glintru.config import build_config
    from glintru.models import build_model

    torch.manual_seed(0)
    model = build_model(build_config("glintru", {"hidden_size": 16, "max_len": 6}), n_items=9)
    v = torch.randn(16)
    with torch.no_grad():
        model.item_embeddings()[1:] = v  # every item the same vector: all of the energy is common
    items = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9], [9, 1, 0, 0, 0, 0]])
    out = gbce_saturation.saturation(model, items)
    assert out["item_common_share"] == pytest.approx(1.0, rel=1e-5)
    assert out["score_std_per_user"] == pytest.approx(0.0, abs=1e-5)  # one score for every item
    assert model.training  # the probe puts the model back in training mode
    with torch.no_grad():
        last = model.eval().last_hidden(items, torch.tensor([3, 6, 2]))
    assert out["mean_score"] == pytest.approx(float((last @ v).mean()), rel=1e-4)
    unit = F.normalize(last, dim=1)
    pairs = [float(unit[i] @ unit[j]) for i in range(3) for j in range(3) if i != j]
    assert out["hidden_pairwise_cos"] == pytest.approx(sum(pairs) / len(pairs), rel=1e-4)
