"""GLINT-RU model: shapes, causality, padding invariance, read-out path, parameter count, errors."""

from __future__ import annotations

import dataclasses
import math

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

from glintru.config import GlintRUConfig
from glintru.errors import UserError
from glintru.models.glintru import Dropout, GlintRU, causal_linear_attention, temporal_conv

torch.set_num_threads(1)

TINY = GlintRUConfig(hidden_size=16, n_heads=4, kernel_size=3)


def make(seed: int = 0, n_items: int = N_ITEMS, **overrides) -> GlintRU:
    torch.manual_seed(seed)
    return GlintRU(dataclasses.replace(TINY, **overrides), n_items=n_items, max_len=50).eval()


@pytest.mark.parametrize("causal", [True, False])
def test_shapes_and_attributes(causal):
    model = make(causal=causal)
    items = random_items(3, 7)
    assert model(items).shape == (3, 7, 16)
    assert model.last_hidden(items, torch.tensor([7, 3, 1])).shape == (3, 16)
    assert model.item_embeddings().shape == (N_ITEMS + 1, 16)
    assert model.causal is causal
    assert model.needs_full_window is (not causal)


def test_padding_embedding_row_is_zero():
    model = make()
    assert torch.count_nonzero(model.item_embeddings()[0]) == 0
    assert torch.count_nonzero(model.item_embeddings()[1:]) > 0


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
@pytest.mark.parametrize("gru_bias", [False, True])
def test_causal_mode_is_causal(kernel_size, gru_bias):
    model = make(kernel_size=kernel_size, gru_bias=gru_bias)
    items = random_items(2, 12)
    h = model(items)
    for t in (0, 5, 10):
        changed = items.clone()
        changed[:, t + 1 :] = random_items(2, 12 - t - 1, seed=7) % N_ITEMS + 1
        assert not torch.equal(changed[:, t + 1 :], items[:, t + 1 :])
        h2 = model(changed)
        torch.testing.assert_close(h2[:, : t + 1], h[:, : t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(h2[:, t + 1 :], h[:, t + 1 :], atol=1e-4)


def test_official_mode_is_not_causal():
    model = make(causal=False)
    items = random_items(2, 12)
    h = model(items)
    neighbour = items.clone()
    neighbour[:, 6] = neighbour[:, 6] % N_ITEMS + 1  # the k=3 convolutions look one step ahead
    assert not torch.allclose(model(neighbour)[:, 5], h[:, 5], atol=1e-4)
    far = items.clone()
    far[:, 11] = far[:, 11] % N_ITEMS + 1  # the unmasked attention sums over the whole window
    assert not torch.allclose(model(far)[:, 2], h[:, 2], atol=1e-4)


def test_official_mode_depends_on_right_padding():
    model = make(causal=False)
    items = random_items(2, 8)
    padded = torch.cat([items, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    assert not torch.allclose(model(padded)[:, :8], model(items), atol=1e-4)


@pytest.mark.parametrize("gru_bias", [False, True])
def test_causal_right_padding_invariance(gru_bias):
    model = make(gru_bias=gru_bias)
    items = random_items(3, 9)
    padded = torch.cat([items, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded)[:, :9], model(items), rtol=0, atol=1e-5)
    # rows of different lengths in one right-padded batch equal each row alone
    lengths = [9, 4, 1]
    batch = model(right_pad(items, lengths))
    for row, n in enumerate(lengths):
        alone = model(items[row : row + 1, :n])
        torch.testing.assert_close(batch[row : row + 1, :n], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
def test_causal_left_padding_invariance_without_gru_bias(kernel_size):
    model = make(kernel_size=kernel_size, gru_bias=False)
    items = random_items(3, 9)
    padded = torch.cat([torch.zeros(3, 4, dtype=torch.long), items], dim=1)
    torch.testing.assert_close(model(padded)[:, 4:], model(items), rtol=0, atol=1e-5)


def test_left_padding_changes_outputs_with_gru_bias():
    """Documented limit: a GRU with biases drifts from its zero state during leading padding."""
    model = make(gru_bias=True)
    with torch.no_grad():
        model.gru_expert.gru.bias_hh_l0.fill_(0.5)
    items = random_items(2, 6)
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), items], dim=1)
    assert not torch.allclose(model(padded)[:, 3:], model(items), atol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
@pytest.mark.parametrize("light", [False, True])
def test_last_hidden_equals_gathered_forward(causal, kernel_size, light, monkeypatch):
    model = make(causal=causal, kernel_size=kernel_size, light=light)
    monkeypatch.setattr(GlintRU, "ROW_CHUNK", 2)  # exercise the row-chunked path too
    lengths = torch.tensor([10, 1, 2, 7, 9])
    items = right_pad(random_items(5, 10), lengths.tolist())
    expected = gather_last(model(items), lengths)
    torch.testing.assert_close(model.last_hidden(items, lengths), expected, rtol=0, atol=1e-5)


def test_chunked_causal_attention_equals_masked_quadratic_form():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 70, 4, generator=g) for _ in range(3))
    reference = torch.tril(q @ k.transpose(-1, -2)) @ v  # out_t = sum_{s<=t} (q_t . k_s) v_s
    for chunk in (1, 8, 32, 70, 128):
        torch.testing.assert_close(causal_linear_attention(q, k, v, chunk=chunk), reference, rtol=1e-5, atol=1e-5)


def test_temporal_conv_padding_modes():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(4, 4, 3)
    x = torch.randn(2, 6, 4)
    official = torch.nn.functional.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=1).transpose(1, 2)
    torch.testing.assert_close(temporal_conv(x, conv, 1, 1), official)
    causal = temporal_conv(x, conv, 2, 0)
    # position 0 sees only x_0 through the last kernel tap: W[:, :, 2] x_0 + b
    torch.testing.assert_close(causal[:, 0], x[:, 0] @ conv.weight[:, :, 2].T + conv.bias)
    t = 4  # position t sees x_{t-2}, x_{t-1}, x_t
    by_hand = sum(x[:, t - 2 + j] @ conv.weight[:, :, j].T for j in range(3)) + conv.bias
    torch.testing.assert_close(causal[:, t], by_hand)


def test_official_attention_matches_the_formula():
    """Official mode: LN(x + Linear(Q (K^T V) / sqrt(d_h))) per head, Q/K = L2-normalised elu, no mask."""
    model = make(causal=False, attn_norm="none")
    att = model.attention
    x = torch.randn(2, 5, 16)
    d_h = 4
    q = F.elu(att.query(x)).view(2, 5, 4, d_h)
    k = F.elu(att.key(x)).view(2, 5, 4, d_h)
    v = att.value(x).view(2, 5, 4, d_h)
    q = q / q.norm(dim=-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    a = torch.einsum("bthe,bshe,bshf->bthf", q, k, v) / math.sqrt(d_h)
    expected = att.norm(x + att.out(a.reshape(2, 5, 16)))
    torch.testing.assert_close(att(x, None), expected, rtol=1e-5, atol=1e-5)


def test_mixing_weights_init_and_gradients():
    model = make(mixing_init=0.8)
    torch.testing.assert_close(model.mixing_weights(), torch.tensor([0.8, 0.2]))
    model(random_items(2, 6)).pow(2).sum().backward()
    assert model.mixing_logits.grad is not None
    assert torch.count_nonzero(model.mixing_logits.grad) == 2


def test_light_variant_has_no_mlp_parameters():
    full, light = make(), make(light=True)
    assert light.mlp is None and light.mlp_norm is None
    assert not any(name.startswith("mlp") for name, _ in light.named_parameters())
    n_full = sum(p.numel() for p in full.parameters())
    n_light = sum(p.numel() for p in light.parameters())
    assert n_full - n_light == 3 * (16 * 16 + 16)


def test_unshared_layernorm_adds_one_layernorm():
    shared, unshared = make(), make(shared_layernorm=False)
    diff = sum(p.numel() for p in unshared.parameters()) - sum(p.numel() for p in shared.parameters())
    assert diff == 2 * 16
    assert unshared.mlp_norm is not None and unshared.mlp_norm is not unshared.norm


@pytest.mark.parametrize("d,heads,expected", [(128, 8, 395_586), (64, 4, 99_490)])
def test_official_parameter_count_and_shapes(d, heads, expected):
    cfg = GlintRUConfig(hidden_size=d, n_heads=heads, causal=False)
    model = GlintRU(cfg, n_items=3706, max_len=200)
    params = dict(model.named_parameters())
    embedding = params.pop("item_embedding.weight")
    assert embedding.shape == (3707, d)
    assert sum(p.numel() for p in params.values()) == expected
    assert sum(p.numel() for p in model.parameters()) == expected + 3707 * d
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    lin = {"weight": (d, d), "bias": (d,)}
    for mod in ("gru_expert.input_proj", "gru_expert.channel_crossing", "attention.query", "attention.key",
                "attention.value", "attention.out", "data_gate", "dense", "mlp.gate", "mlp.value", "mlp.out"):
        assert {k: shapes[f"{mod}.{k}"] for k in lin} == lin
    for conv in ("gru_expert.conv_in", "gru_expert.conv_out"):
        assert shapes[f"{conv}.weight"] == (d, d, 3) and shapes[f"{conv}.bias"] == (d,)
    assert shapes["gru_expert.gru.weight_ih_l0"] == (3 * d, d)
    assert shapes["gru_expert.gru.weight_hh_l0"] == (3 * d, d)
    assert shapes["gru_expert.selective_gate.0.weight"] == (d // 2, d)
    assert shapes["gru_expert.selective_gate.2.weight"] == (d, d // 2)
    assert shapes["attention.norm.weight"] == shapes["norm.weight"] == (d,)
    assert shapes["mixing_logits"] == (2,)
    assert len(shapes) == 37  # 11 Linear x 2 + 2 convs x 2 + GRU 2 + gate 4 + LayerNorms 4 + mixing 1


def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = GlintRU(TINY, n_items=N_ITEMS, max_len=50).train()
    items = random_items(4, 9)
    inputs, targets = items[:, :-1], items[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn() -> torch.Tensor:
        logits = model(inputs) @ model.item_embeddings()[1:].T  # [B, N, n_items]
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten() - 1)

    assert_overfits(model, opt, loss_fn)


def test_seeded_construction_is_deterministic():
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.item_embeddings(), c.item_embeddings())
    items = random_items(2, 6)
    a.train(), b.train()
    torch.manual_seed(9)
    ha = a(items)
    torch.manual_seed(9)
    assert torch.equal(ha, b(items))  # same dropout draws under the same seed


def test_dropout_keeps_a_fraction_one_minus_p_and_rescales():
    drop = Dropout(0.3)
    x = torch.ones(100_000)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize(
    "field,value",
    [
        ("hidden_size", 0),
        ("n_heads", -1),
        ("n_heads", 3),  # 16 % 3 != 0
        ("attn_norm", "softmax"),
        ("experts", "neither"),
        ("kernel_size", 0),
        ("mixing_init", 0.0),
        ("mixing_init", 1.0),
        ("mixing_init", -0.5),
        ("gate_ratio", 0.0),
        ("gate_ratio", 0.01),  # int(16 * 0.01) = 0 units
        ("emb_dropout", 1.0),
        ("attn_dropout", -0.1),
        ("gate_dropout", 1.5),
        ("dense_dropout", 1.0),
        ("mlp_dropout", -1.0),
        ("layer_norm_eps", 0.0),
    ],
)
def test_invalid_hyperparameter_raises_user_error_naming_field(field, value):
    cfg = dataclasses.replace(TINY, **{field: value})
    with pytest.raises(UserError, match=f"'{field}'"):
        GlintRU(cfg, n_items=N_ITEMS, max_len=50)


@pytest.mark.parametrize("n_items,max_len,word", [(0, 50, "n_items"), (5, 0, "max_len")])
def test_invalid_sizes_raise_user_error(n_items, max_len, word):
    with pytest.raises(UserError, match=word):
        GlintRU(TINY, n_items=n_items, max_len=max_len)


# ------------------------------------------------------------------------------------------------
# Attention normaliser (attn_norm), head width rule, single-expert ablation, diagnostics
# ------------------------------------------------------------------------------------------------

NORMS = ["none", "count", "kernel"]


def _attention_by_hand(att, x: torch.Tensor, items: torch.Tensor, norm: str) -> torch.Tensor:
    """Causal attention expert written as explicit sums over s <= t (real items only)."""
    B, N, d = x.shape
    h = att.n_heads
    d_h = d // h
    q = F.elu(att.query(x)).view(B, N, h, d_h)
    k = F.elu(att.key(x)).view(B, N, h, d_h)
    if norm == "kernel":
        q, k = q + 1, k + 1
    else:
        q = q / q.norm(dim=-1, keepdim=True) / math.sqrt(d_h)
        k = k / k.norm(dim=-1, keepdim=True)
    v = att.value(x).view(B, N, h, d_h)
    out = torch.zeros(B, N, h, d_h)
    for b in range(B):
        for t in range(N):
            s_ok = [s for s in range(t + 1) if items[b, s] != 0]
            w = torch.stack([(q[b, t] * k[b, s]).sum(-1) for s in s_ok])  # [S, h]
            num = (w.unsqueeze(-1) * v[b, s_ok]).sum(0)  # [h, d_h]
            if norm == "count":
                num = num / len(s_ok)
            elif norm == "kernel":
                num = num / w.sum(0).unsqueeze(-1)
            out[b, t] = num
    return att.norm(x + att.out(out.reshape(B, N, d)))


@pytest.mark.parametrize("norm", NORMS)
def test_causal_attention_normaliser_matches_explicit_sums(norm):
    model = make(attn_norm=norm)
    att = model.attention
    items = right_pad(random_items(2, 7), [7, 4])
    x = model.item_embedding(items)
    mask = (items != 0).unsqueeze(-1).float()
    got = att(x, mask)
    expected = _attention_by_hand(att, x, items, norm)
    real = items != 0
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-5)


def test_count_normaliser_keeps_the_attention_sum_bounded_on_long_histories():
    """Without a normaliser the causal sum grows with the position; divided by the count it does not."""
    items = random_items(1, 200, seed=4)
    norms = {}
    for norm in ("none", "count"):
        model = make(attn_norm=norm)
        x, mask = model._embed(items)
        att = model.attention
        raw = att.mix(att._queries(x), *att._keys_values(x, mask), mask).transpose(1, 2).flatten(2)[0]
        norms[norm] = raw.norm(dim=-1)  # [N]
    assert norms["none"][150:].mean() > 20 * norms["none"][:5].mean()
    assert norms["count"][150:].mean() < 2 * norms["count"][:5].mean()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_every_normaliser_is_causal_and_right_padding_invariant(norm, kernel_size):
    model = make(attn_norm=norm, kernel_size=kernel_size)
    items = random_items(2, 12)
    h = assert_causal_and_right_padding_invariant(model, items, 6, N_ITEMS)
    left = torch.cat([torch.zeros(2, 3, dtype=torch.long), items], dim=1)
    torch.testing.assert_close(model(left)[:, 3:], h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("causal", [True, False])
def test_every_normaliser_last_hidden_equals_gathered_forward(norm, causal, monkeypatch):
    model = make(attn_norm=norm, causal=causal)
    monkeypatch.setattr(GlintRU, "ROW_CHUNK", 2)
    lengths = torch.tensor([10, 1, 2, 7, 9])
    items = right_pad(random_items(5, 10), lengths.tolist())
    torch.testing.assert_close(model.last_hidden(items, lengths), gather_last(model(items), lengths), rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_every_normaliser_chunked_equals_quadratic(norm, monkeypatch):
    """The chunked causal sums (windows longer than one chunk) equal one masked quadratic form."""
    import glintru.models.glintru as g

    model = make(attn_norm=norm)
    items = right_pad(random_items(2, 75, seed=5), [75, 40])
    chunked = model(items)
    monkeypatch.setattr(g, "causal_linear_attention",
                        lambda q, k, v, chunk=32: torch.tril(q @ k.transpose(-1, -2)) @ v)
    torch.testing.assert_close(model(items), chunked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d,heads", [(128, 8), (64, 4), (32, 2), (16, 1)])
def test_heads_follow_hidden_size_sixteen_wide(d, heads):
    model = GlintRU(GlintRUConfig(hidden_size=d), n_items=N_ITEMS, max_len=10)
    assert model.attention.n_heads == heads
    explicit = GlintRU(GlintRUConfig(hidden_size=d, n_heads=1), n_items=N_ITEMS, max_len=10)
    assert explicit.attention.n_heads == 1  # an explicit n_heads wins over head_dim


def test_head_dim_must_split_hidden_size_into_equal_heads():
    assert GlintRU(GlintRUConfig(hidden_size=8), n_items=N_ITEMS, max_len=10).attention.n_heads == 1  # d < head_dim
    with pytest.raises(UserError, match="'head_dim'"):
        GlintRU(GlintRUConfig(hidden_size=56, head_dim=16), n_items=N_ITEMS, max_len=10)  # 56 // 16 = 3 heads


@pytest.mark.parametrize("expert,unused", [("gru", "attention."), ("attention", "gru_expert.")])
def test_single_expert_ignores_the_other_expert(expert, unused):
    model = make(experts=expert)
    items = random_items(2, 6)
    h = model(items)
    lengths = torch.tensor([6, 3])
    torch.testing.assert_close(model.last_hidden(items, lengths), gather_last(h, lengths), rtol=0, atol=1e-5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(unused) and not name.startswith("attention.norm"):
                p.add_(1.0)
    torch.testing.assert_close(model(items), h)
    w = model.mixing_weights()
    assert w.tolist() == ([1.0, 0.0] if expert == "gru" else [0.0, 1.0])


def test_diagnostics_report_mixing_weights_and_expert_norms():
    model = make(mixing_init=0.3)
    items = right_pad(random_items(3, 8), [8, 5, 2])
    diag = model.diagnostics(items)
    assert diag["mix_gru"] == pytest.approx(0.3) and diag["mix_attn"] == pytest.approx(0.7)
    with torch.no_grad():
        x, mask = model._embed(items)
        y = model.gru_expert(x, mask)
    real = items != 0
    assert diag["gru_out_norm"] == pytest.approx(float(y[real].norm(dim=-1).mean()), rel=1e-5)
    assert diag["attn_out_norm"] > 0 and diag["attn_sum_norm"] > 0


# ------------------------------------------------------------------------------------------------
# Streaming inference: step(state, item) equals forward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("kernel_size", [1, 2, 3])
@pytest.mark.parametrize("experts", ["both", "gru", "attention"])
def test_stepping_through_a_history_equals_forward(norm, kernel_size, experts):
    model = make(attn_norm=norm, kernel_size=kernel_size, experts=experts)
    items = random_items(3, 11)
    with torch.no_grad():
        h = model(items)  # [3, 11, 16]
        state = model.empty_state(3)
        for t in range(11):
            state, hidden = model.step(state, items[:, t])
            torch.testing.assert_close(hidden, h[:, t], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(state["hidden"], h[:, -1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("gru_bias", [False, True])
def test_state_of_a_prefix_then_steps_equals_forward(norm, gru_bias):
    """init_state over right-padded prefixes of different lengths, then one step per row."""
    model = make(attn_norm=norm, gru_bias=gru_bias, kernel_size=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name and "gru" in name:
                p.add_(0.1)  # biased GRU: left padding would drift; the state must not
    items = random_items(3, 9)
    lengths = torch.tensor([5, 1, 8])
    with torch.no_grad():
        h = model(items)
        state = model.init_state(right_pad(items, lengths.tolist()), lengths)
        torch.testing.assert_close(state["hidden"], gather_last(h, lengths), rtol=1e-4, atol=1e-5)
        nxt = items[torch.arange(3), lengths]
        state, hidden = model.step(state, nxt)
        torch.testing.assert_close(hidden, h[torch.arange(3), lengths], rtol=1e-4, atol=1e-5)
        state, hidden = model.step(state, items[torch.arange(3), lengths + 1 - (lengths == 8).long()])
    assert state["count"].tolist() == [7.0, 3.0, 10.0]


def test_streaming_is_refused_in_official_mode():
    with pytest.raises(ValueError, match="causal"):
        make(causal=False).empty_state(2)
