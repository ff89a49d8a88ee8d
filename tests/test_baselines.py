"""Seed baselines SASRec, NARM, GRU4Rec: shapes, causality, padding invariance, read-out paths,
one-batch overfit, determinism, parameter counts and errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_helpers import (
    N_ITEMS,
    assert_causal_and_right_padding_invariant,
    assert_overfits,
    gather_last,
    random_items,
    right_pad,
)

from glintru.config import GRU4RecConfig, NARMConfig, SASRecConfig, build_config
from glintru.errors import UserError
from glintru.models import build_model
from glintru.models.gru4rec import GRU4Rec
from glintru.models.narm import NARM
from glintru.models.sasrec import SASRec

torch.set_num_threads(1)

MAX_LEN = 20
TINY = {
    "sasrec": (SASRec, SASRecConfig(hidden_size=16, n_layers=2, n_heads=2, inner_size=32)),
    "sasrec_preln": (SASRec, SASRecConfig(hidden_size=16, n_layers=2, n_heads=2, inner_size=16, block="pre_ln")),
    "narm": (NARM, NARMConfig(hidden_size=12, embedding_size=16, n_layers=1)),
    "gru4rec": (GRU4Rec, GRU4RecConfig(hidden_size=12, embedding_size=16, n_layers=2)),
}
CAUSAL = ["sasrec", "sasrec_preln", "gru4rec"]


def make(name: str, seed: int = 0, **overrides):
    cls, cfg = TINY[name]
    torch.manual_seed(seed)
    return cls(dataclasses.replace(cfg, **overrides), n_items=N_ITEMS, max_len=MAX_LEN).eval()


@pytest.mark.parametrize("name", list(TINY))
def test_shapes_attributes_and_zero_padding_row(name):
    model = make(name)
    items = right_pad(random_items(3, 7), [7, 3, 1])
    assert model(items).shape == (3, 7, 16)
    assert model.last_hidden(items, torch.tensor([7, 3, 1])).shape == (3, 16)
    emb = model.item_embeddings()
    assert emb.shape == (N_ITEMS + 1, 16)
    assert emb is model.item_embedding.weight  # tied with the input embedding
    assert torch.count_nonzero(emb[0]) == 0 and torch.count_nonzero(emb[1:]) > 0
    assert model.causal is True  # NARM's forward is exact at every prefix
    assert model.needs_full_window is False


@pytest.mark.parametrize("name", list(TINY))
def test_build_model_registry_uses_defaults(name):
    run_cfg = build_config(name, {"max_len": 12})
    model = build_model(run_cfg, n_items=N_ITEMS)
    assert isinstance(model, TINY[name][0])
    assert model.cfg == run_cfg.model_cfg
    assert model.item_embeddings().shape == (N_ITEMS + 1, 128)


@pytest.mark.parametrize("name", CAUSAL + ["narm"])
def test_outputs_at_t_ignore_items_after_t(name):
    """Causality of ``forward``; for NARM it holds too, because forward gives per-prefix states."""
    model = make(name)
    items = random_items(2, 12)
    h = model(items)
    for t in (0, 5, 10):
        changed = items.clone()
        changed[:, t + 1 :] = items[:, t + 1 :] % N_ITEMS + 1  # every later item differs
        h2 = model(changed)
        torch.testing.assert_close(h2[:, : t + 1], h[:, : t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(h2[:, t + 1 :], h[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize("name", CAUSAL + ["narm"])
def test_right_padding_invariance(name):
    model = make(name)
    items = random_items(3, 9)
    padded = torch.cat([items, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded)[:, :9], model(items), rtol=0, atol=1e-5)
    lengths = [9, 4, 1]  # rows of different lengths in one right-padded batch equal each row alone
    batch = model(right_pad(items, lengths))
    for row, n in enumerate(lengths):
        torch.testing.assert_close(batch[row : row + 1, :n], model(items[row : row + 1, :n]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL + ["narm"])
def test_left_padding_invariance(name):
    model = make(name)
    items = random_items(3, 9)
    padded = torch.cat([torch.zeros(3, 4, dtype=torch.long), items], dim=1)
    out = model(padded)
    assert torch.isfinite(out).all()  # fully padded prefixes give finite values (SASRec: no NaN rows)
    torch.testing.assert_close(out[:, 4:], model(items), rtol=0, atol=1e-5)
    # rows with different amounts of left padding in one batch
    lengths = [9, 5, 2]
    left = torch.zeros_like(items)
    for row, n in enumerate(lengths):
        left[row, 9 - n :] = items[row, :n]
    out = model(left)
    for row, n in enumerate(lengths):
        torch.testing.assert_close(out[row, 9 - n :], model(items[row : row + 1, :n])[0], rtol=0, atol=1e-5)


def test_sasrec_positions_count_from_first_real_item():
    model = make("sasrec")
    items = torch.tensor([[0, 0, 5, 7], [5, 7, 0, 0]])
    h = model(items)
    torch.testing.assert_close(h[0, 2:], h[1, :2], rtol=0, atol=1e-5)
    with torch.no_grad():  # the positional embedding matters: permuting it changes the outputs
        model.position_embedding.weight[:2] = model.position_embedding.weight[[1, 0]].clone()
    assert not torch.allclose(model(items)[1, :2], h[1, :2], atol=1e-4)


def test_sasrec_padding_keys_are_masked():
    """A padding token between real items changes nothing at later real positions except the position
    count: [a, 0, b] at b equals [a, b] at b (positions 0, 1 in both)."""
    model = make("sasrec")
    h_gap = model(torch.tensor([[4, 0, 9]]))
    h = model(torch.tensor([[4, 9]]))
    torch.testing.assert_close(h_gap[0, [0, 2]], h[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("n_layers", [1, 2])
def test_last_hidden_equals_gathered_forward(name, n_layers):
    model = make(name, n_layers=n_layers)
    lengths = torch.tensor([10, 1, 2, 7, 9])
    items = right_pad(random_items(5, 12), lengths.tolist())  # two all-padding columns at the end
    expected = gather_last(model(items), lengths)
    torch.testing.assert_close(model.last_hidden(items, lengths), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["gru4rec", "narm"])
def test_gru_bias_keeps_causality_right_padding_and_read_out(name):
    """With GRU biases (``gru_bias=True``) the engine's right padding and read-out stay exact."""
    model = make(name, gru_bias=True)
    assert all(model.gru.get_parameter(f"bias_{kind}_l{i}").abs().sum() > 0
               for kind in ("ih", "hh") for i in range(model.cfg.n_layers))
    items = random_items(3, 9)
    full = assert_causal_and_right_padding_invariant(model, items, 5, N_ITEMS)
    lengths = torch.tensor([9, 4, 1])
    batch = right_pad(items, lengths.tolist())
    torch.testing.assert_close(model.last_hidden(batch, lengths), gather_last(model(batch), lengths), rtol=0, atol=1e-5)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(model(batch)[row, :n], model(items[row : row + 1, :n])[0], rtol=0, atol=1e-5)
    # the biases drive the state of leading padding away from zero: left padding changes the outputs,
    # which is why the bias-free GRU is the default (the engine never left-pads)
    left = torch.cat([torch.zeros(3, 4, dtype=torch.long), items], dim=1)
    assert not torch.allclose(model(left)[:, 4:], full, atol=1e-4)
    # the same weights without the biases are the bias-free model
    plain = make(name, gru_bias=False)
    state = {k: v for k, v in model.state_dict().items() if ".bias_" not in k}
    plain.load_state_dict(state)
    with torch.no_grad():
        for k in model.state_dict():
            if ".bias_" in k:
                model.get_parameter(k).zero_()
    torch.testing.assert_close(model(items), plain(items), rtol=0, atol=1e-6)


def test_narm_last_hidden_matches_the_paper_formula():
    """c_t = [h_t; sum_j v^T sigmoid(A1 h_t + A2 h_j) h_j], hidden = B c_t, one row at a time."""
    model = make("narm")
    lengths = torch.tensor([6, 3])
    items = right_pad(random_items(2, 8), lengths.tolist())
    got = model.last_hidden(items, lengths)
    for row, n in enumerate(lengths.tolist()):
        h, _ = model.gru(model.item_embedding(items[row, :n]).unsqueeze(0))
        h = h[0]  # [n, H]
        alpha = torch.stack([model.v.weight[0] @ torch.sigmoid(model.a1(h[-1]) + model.a2(h[j])) for j in range(n)])
        c = torch.cat([h[-1], (alpha[:, None] * h).sum(0)])
        torch.testing.assert_close(got[row], model.b(c), rtol=0, atol=1e-5)


def test_narm_last_hidden_invariant_to_right_padding_and_uses_every_item():
    model = make("narm")
    items = random_items(2, 7)
    lengths = torch.tensor([7, 7])
    base = model.last_hidden(items, lengths)
    padded = torch.cat([items, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model.last_hidden(padded, lengths), base, rtol=0, atol=1e-6)
    mixed = right_pad(random_items(2, 7, seed=3), [7, 4])  # row 1 shorter: row 0 unaffected by the batch
    batch = model.last_hidden(torch.cat([items[:1], mixed[1:]]), torch.tensor([7, 4]))
    torch.testing.assert_close(batch[0], base[0], rtol=0, atol=1e-6)
    for j in range(7):  # the session state depends on every item, not only the last one
        changed = items.clone()
        changed[:, j] = items[:, j] % N_ITEMS + 1
        assert not torch.allclose(model.last_hidden(changed, lengths), base, atol=1e-5), j


def _narm_reference_forward(model: NARM, items: torch.Tensor) -> torch.Tensor:
    """Every prefix's state from ``_local`` over all queries and keys at once, plain autograd."""
    h, mask = model._states(items)
    N = items.size(1)
    allowed = torch.ones(N, N).tril() * mask.unsqueeze(1)
    return model._decode(h, model._local(model.a1(h), model.a2(h), h, allowed))


@pytest.mark.parametrize("tile", [1, 7 * 12, 1 << 18])  # one row x one query per tile, a few, all at once
@pytest.mark.parametrize("gru_bias", [False, True])
def test_narm_tiled_forward_and_gradients_equal_plain_autograd(monkeypatch, tile, gru_bias):
    model = make("narm", gru_bias=gru_bias)
    items = right_pad(random_items(3, 11), [11, 6, 2])
    with torch.enable_grad():
        expected = _narm_reference_forward(model, items)
        (expected.pow(2).sum() + expected[:, 3].sum()).backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    monkeypatch.setattr(NARM, "TILE_ELEMENTS", tile)
    torch.testing.assert_close(model(items), expected.detach(), rtol=0, atol=1e-6)
    with torch.enable_grad():  # the tiled backward gives the same gradients as autograd's
        out = model(items)
        (out.pow(2).sum() + out[:, 3].sum()).backward()
    torch.testing.assert_close(out.detach(), expected.detach(), rtol=0, atol=1e-6)
    assert model.a1.weight.grad.abs().sum() > 0 and model.v.weight.grad.abs().sum() > 0
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected_grads[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("tile", [1, 1 << 18])
def test_narm_forward_at_chosen_queries_is_exact_there_with_the_same_gradients(monkeypatch, tile):
    """forward(items, queries) is exact at the chosen positions, and a loss read there has the same
    gradients as with every position computed (context-only positions of overlapping windows)."""
    monkeypatch.setattr(NARM, "TILE_ELEMENTS", tile)
    model = make("narm")
    items = right_pad(random_items(3, 11), [11, 6, 2])
    queries = torch.zeros(3, 11, dtype=torch.bool)
    queries[0, 8:] = True  # a window whose first 8 positions are context only
    queries[1, :6] = True  # every real position of a shorter row
    results = []
    for q in (None, queries):
        model.zero_grad()
        with torch.enable_grad():
            out = model(items) if q is None else model(items, queries=q)
            out[queries].pow(2).sum().backward()
        results.append((out.detach()[queries], {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full, full_grads), (chosen, chosen_grads) = results
    torch.testing.assert_close(chosen, full, rtol=0, atol=1e-6)
    for n in full_grads:
        torch.testing.assert_close(chosen_grads[n], full_grads[n], rtol=1e-5, atol=1e-6, msg=n)


def test_narm_tiles_skip_those_without_a_chosen_query():
    from glintru.models.narm import _tiles

    B, N, H = 4, 40, 8
    need = np.zeros((B, N), dtype=bool)
    need[:, 30:] = True  # the last 10 positions of each row, as in an overlapping window
    all_tiles = list(_tiles(B, N, H, 1 << 10))
    chosen = list(_tiles(B, N, H, 1 << 10, need))
    assert chosen == [t for t in all_tiles if need[t[0]:t[1], t[2]:t[3]].any()]
    work = lambda tiles: sum((b1 - b0) * (t1 - t0) * t1 for b0, b1, t0, t1 in tiles)  # noqa: E731
    assert work(chosen) < 0.5 * work(all_tiles)  # the keys of 10 queries out of 40, not of all 40


def test_narm_tiles_cover_the_causal_triangle_once():
    """Every (row, query) lies in exactly one tile, and a tile reads the keys before its last query only."""
    from glintru.models.narm import _tiles

    for B, N, H, tile in [(5, 11, 4, 1), (5, 11, 4, 40), (3, 200, 128, 1 << 18), (128, 7, 16, 1 << 18)]:
        seen = torch.zeros(B, N, dtype=torch.long)
        for b0, b1, t0, t1 in _tiles(B, N, H, tile):
            assert 0 <= b0 < b1 <= B and 0 <= t0 < t1 <= N
            seen[b0:b1, t0:t1] += 1
            assert (b1 - b0) * (t1 - t0) * t1 * H <= max(tile, t1 * H * (t1 - t0))  # one row may exceed a tiny tile
        assert (seen == 1).all()


def test_narm_local_backward_passes_gradcheck():
    """The hand-written backward of the tiled local encoder against finite differences (float64)."""
    from glintru.models.narm import _CausalLocal

    g = torch.Generator().manual_seed(0)
    B, N, H = 2, 5, 3
    q, k = (torch.randn(B, N, H, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(H, generator=g, dtype=torch.float64, requires_grad=True)
    allowed = torch.ones(N, N, dtype=torch.float64).tril().expand(B, N, N).clone()
    allowed[1, :, 3:] = 0  # row 1: two padded keys
    need = np.zeros((B, N), dtype=bool)
    need[0, 3:] = need[1, :2] = True  # skipped tiles' rows are zero: a function with these gradients too
    for tile in (1, 2 * 4 * H, 1 << 18):
        for chosen in (None, need):
            assert torch.autograd.gradcheck(
                lambda q, k, v, t=tile, c=chosen: _CausalLocal.apply(q, k, v, allowed, t, c), (q, k, v))


def test_narm_bf16_autocast_tiled_path_matches_fp32():
    """Under bf16 autocast the tiles run in bf16 and sum their gradients in fp32: close to fp32's."""
    model = make("narm")
    items = right_pad(random_items(3, 11), [11, 6, 2])
    grads, outs = {}, {}
    for low in (False, True):
        model.zero_grad()
        with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            out = model(items)
            out.float().pow(2).sum().backward()
        grads[low] = {n: p.grad.clone() for n, p in model.named_parameters()}
        outs[low] = out.detach()
    assert outs[True].dtype == torch.bfloat16
    torch.testing.assert_close(outs[True].float(), outs[False], rtol=0.05, atol=0.05)
    for n in ("a1.weight", "a2.weight", "v.weight", "gru.weight_hh_l0"):
        rel = (grads[True][n] - grads[False][n]).norm() / grads[False][n].norm()
        assert rel < 0.05, (n, float(rel))


@pytest.mark.parametrize("name", list(TINY))
def test_loss_falls_when_overfitting_one_batch(name):
    model = make(name).train()
    lengths = torch.tensor([9, 6, 4, 9])
    seqs = right_pad(random_items(4, 10), lengths.tolist())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn() -> torch.Tensor:
        if model.causal:  # all positions: input items[:-1] predicts items[1:], padding targets dropped
            inputs, targets = seqs[:, :-1], seqs[:, 1:]
            h = model(inputs)[targets != 0]  # [n_targets, d]
            targets = targets[targets != 0]
        else:  # last position: the prefix before the last item predicts it
            inputs = right_pad(seqs, (lengths - 1).tolist())
            h = model.last_hidden(inputs, lengths - 1)
            targets = seqs[torch.arange(4), lengths - 1]
        logits = h @ model.item_embeddings()[1:].T  # [n_targets, n_items]
        return F.cross_entropy(logits, targets - 1)

    assert_overfits(model, opt, loss_fn)


@pytest.mark.parametrize("name", list(TINY))
def test_seeded_construction_and_dropout_are_deterministic(name):
    a, b, c = make(name, seed=5), make(name, seed=5), make(name, seed=6)
    for (key, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), key
    assert not torch.equal(a.item_embeddings(), c.item_embeddings())
    items = right_pad(random_items(2, 6), [6, 3])
    lengths = torch.tensor([6, 3])
    a.train(), b.train()
    torch.manual_seed(9)
    ha = a.last_hidden(items, lengths)
    torch.manual_seed(9)
    assert torch.equal(ha, b.last_hidden(items, lengths))  # same dropout draws under the same seed
    torch.manual_seed(10)
    assert not torch.equal(ha, a.last_hidden(items, lengths))  # dropout is active in train mode


@pytest.mark.parametrize(
    "name,d,expected",
    [
        # emb 3707*128 + pos 200*128 + emb LN 2*128 + 2 blocks * (qkv 128*384+384 + out 128*128+128
        #   + LN 256 + fc1 128*256+256 + fc2 256*128+128 + LN 256)
        ("sasrec", 128, 3707 * 128 + 200 * 128 + 256 + 2 * (49_536 + 16_512 + 256 + 33_024 + 32_896 + 256)),
        # emb 3707*128 + GRU (no bias) 3*(128*128 + 128*128) + A1, A2 128*128 each + v 128 + B 256*128
        ("narm", 128, 3707 * 128 + 3 * 2 * 128 * 128 + 2 * 128 * 128 + 128 + 256 * 128),
        # emb 3707*128 + GRU (no bias) 3*(128*128 + 128*128) + dense 128*128 + 128
        ("gru4rec", 128, 3707 * 128 + 3 * 2 * 128 * 128 + 128 * 128 + 128),
        # GRU biases: b_ih and b_hh, 3*128 each
        ("narm+gru_bias", 128, 3707 * 128 + 3 * 2 * 128 * 128 + 2 * 3 * 128 + 2 * 128 * 128 + 128 + 256 * 128),
        ("gru4rec+gru_bias", 128, 3707 * 128 + 3 * 2 * 128 * 128 + 2 * 3 * 128 + 128 * 128 + 128),
    ],
)
def test_parameter_count_at_ml1m_shape(name, d, expected):
    name, _, flag = name.partition("+")
    overrides = {"max_len": 200, **({flag: True} if flag else {})}
    model = build_model(build_config(name, overrides), n_items=3706)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(
    "name,field,value",
    [
        ("sasrec", "hidden_size", 0),
        ("sasrec", "n_layers", 0),
        ("sasrec", "n_heads", 0),
        ("sasrec", "n_heads", 3),  # 16 % 3 != 0 (128 % 3 != 0 through build_config)
        ("sasrec", "inner_size", 0),
        ("sasrec", "hidden_dropout", 1.0),
        ("sasrec", "attn_dropout", -0.1),
        ("sasrec", "layer_norm_eps", 0.0),
        ("narm", "hidden_size", 0),
        ("narm", "embedding_size", -1),
        ("narm", "n_layers", 0),
        ("narm", "emb_dropout", 1.0),
        ("narm", "ct_dropout", -0.5),
        ("gru4rec", "hidden_size", 0),
        ("gru4rec", "embedding_size", 0),
        ("gru4rec", "n_layers", 0),
        ("gru4rec", "emb_dropout", 1.5),
    ],
)
def test_invalid_hyperparameter_raises_user_error_naming_field(name, field, value):
    cls, cfg = TINY[name]
    with pytest.raises(UserError, match=f"field '{field}'"):
        cls(dataclasses.replace(cfg, **{field: value}), n_items=N_ITEMS, max_len=MAX_LEN)
    with pytest.raises(UserError, match=f"field '{field}'"):
        build_config(name, {field: value})


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("n_items,max_len,word", [(0, 5, "n_items"), (5, 0, "max_len")])
def test_invalid_sizes_raise_user_error(name, n_items, max_len, word):
    cls, cfg = TINY[name]
    with pytest.raises(UserError, match=word):
        cls(cfg, n_items=n_items, max_len=max_len)


def test_all_positions_objective_allowed_for_causal_models_only():
    assert build_config("narm", {"objective": "all_positions"}).train.objective == "all_positions"
    assert build_config("narm").train.objective == "last_position"  # the preset keeps NARM's usual objective
    with pytest.raises(UserError, match="field 'objective'"):
        build_config("glintru", {"causal": False, "objective": "all_positions"})


def test_sasrec_1block_preset():
    cfg = build_config("sasrec_1block").model_cfg
    assert (cfg.n_layers, cfg.inner_size) == (1, 128)
    assert build_config("sasrec").model_cfg.n_layers == 2


def test_glintru_official_preset_uses_the_official_attention():
    cfg = build_config("glintru_official")
    assert (cfg.model_cfg.causal, cfg.model_cfg.attn_norm, cfg.train.objective) == (False, "none", "last_position")
