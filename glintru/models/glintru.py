"""GLINT-RU: Gated Lightweight Intelligent Recurrent Units (Zhang et al., KDD 2025).

Paper: doi 10.1145/3690624.3709304, arXiv 2406.10244; official code: github.com/szhang-cityu/GLINT-RU.
docs/model.md gives the equations as implemented, every deviation from the paper and from the
official code, and the options below; comments carry its equation numbers (``# Eq. (n)``).

One layer, read top-down like the paper: item embedding (no positional embedding) -> expert mixing
block [dense selective GRU (Eq. 5-9) in parallel with multi-head linear attention (Eq. 2), mixed by
learnable softmax weights (Eq. 10), data-aware GeLU gate (Eq. 11)] -> Dropout -> Add & LayerNorm ->
gated MLP (Eq. 12) -> Dropout -> Add & LayerNorm -> tied-embedding scores (Eq. 13).

Two modes (``GlintRUConfig.causal``):

* ``causal=True``: both temporal convolutions are causal (left padding k-1) and the linear attention
  at position t sums only over positions s <= t. Padding tokens (id 0) are masked: the sequence is
  zeroed at padding positions before each temporal operation (conv in, GRU, conv out) and padding
  keys are zeroed in the attention sums. The output at a real position depends only on the real
  items at positions <= t: right padding never changes it; left padding does not either when
  ``gru_bias=False`` (the default), because a bias-free GRU fed zeros from a zero state stays at zero.
  This mode also streams: :meth:`GlintRU.step` applies one event to a stored state.
* ``causal=False`` ("official" mode): symmetric convolution padding and attention over the whole
  padded window (padding included, no mask) as the official code executes it. Outputs depend on the
  amount of right padding, so the engine feeds exactly ``max_len`` positions (``needs_full_window``).

Options beyond the official code: the attention normaliser ``attn_norm`` (none / count / kernel),
16-wide heads by default (``head_dim``), one expert only (``experts``, ablation), and the dropouts,
kernel size, gate ratio, GRU bias and light variant as config fields. Without the item embedding the
official-compatible configuration (``causal=False``, ``attn_norm="none"``, d=128, 8 heads, kernel 3)
has exactly the official 395,586 parameters with the official shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glintru.config import GlintRUConfig, attention_heads, check_model_config
from glintru.models import SequentialRecommender


def temporal_conv(x: torch.Tensor, conv: nn.Conv1d, left: int, right: int) -> torch.Tensor:
    """1-D convolution over time of ``x`` [B, N, d] -> [B, N, d], zero-padded ``left``/``right``.

    ``conv`` holds the weight [d_out, d_in, k] and bias; it is built with no padding of its own.
    (oneDNN's conv1d, transposes included, beat one matmul over unfolded windows on CPU.)
    """
    return conv(F.pad(x.transpose(1, 2), (left, right))).transpose(1, 2)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the same distribution, drawn with ``torch.rand``: 2.5x faster on CPU
    than the Bernoulli kernel of ``F.dropout`` (measured at [32, 200, 128])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class DenseSelectiveGRU(nn.Module):
    """The GRU expert (paper Fig. "dense selective GRU", Eq. 5-9): [B, N, d] -> [B, N, d]."""

    def __init__(self, cfg: GlintRUConfig) -> None:
        super().__init__()
        d, k = cfg.hidden_size, cfg.kernel_size
        self.input_proj = nn.Linear(d, d)  # W_0, b_0 of Eq. 5 (official dense1)
        self.conv_in = nn.Conv1d(d, d, k)  # TemporalConv1d of Eq. 5
        self.gru = nn.GRU(d, d, batch_first=True, bias=cfg.gru_bias)  # Eq. 1 / 6
        self.channel_crossing = nn.Linear(d, d)  # Phi of Eq. 7 (official proj)
        bottleneck = int(d * cfg.gate_ratio)
        self.selective_gate = nn.Sequential(  # Eq. 9: (SiLU(delta_1(C)) W_Omega + b_Omega)
            nn.Linear(d, bottleneck), nn.SiLU(), nn.Linear(bottleneck, d), Dropout(cfg.gate_dropout)
        )
        self.conv_out = nn.Conv1d(d, d, k)  # TemporalConv1d of Eq. 8
        self.left = k - 1 if cfg.causal else (k - 1) // 2  # zero padding before / after each window
        self.right = 0 if cfg.causal else k // 2

    def recurrent(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU input C (Eq. 5) and GRU output H over the whole window: [B, N, d] each."""
        u = self.input_proj(x)  # X W_0 + b_0
        if mask is not None:
            u = u * mask
        c = temporal_conv(u, self.conv_in, self.left, self.right)  # Eq. (5)
        if mask is not None:
            c = c * mask
        h, _ = self.gru(c)  # Eq. (1)
        return c, h

    def gated(self, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The selective gate applied to the crossed channels: G = Omega(delta_1(C), H)."""
        return self.selective_gate(c) * self.channel_crossing(h)  # Eq. (9) with Phi(H) of Eq. (7)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, N, d] embeddings, ``mask`` [B, N, 1] (1 = real item) or None -> Y [B, N, d]."""
        c, h = self.recurrent(x, mask)
        g = self.gated(c, h)
        if mask is not None:
            g = g * mask
        return temporal_conv(g, self.conv_out, self.left, self.right)  # Eq. (8)

    def forward_at(self, x: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        """Y at one position per row, ``pos`` [B]: -> [B, d]. The GRU still runs over the window,
        but the gate, channel crossing and conv_out are computed only at the k positions conv_out reads."""
        B, N, d = x.shape
        k = self.conv_out.kernel_size[0]
        c, h = self.recurrent(x, mask)
        idx = pos.view(B, 1) - self.left + torch.arange(k, device=x.device)  # [B, k] positions read
        valid = ((idx >= 0) & (idx < N)).to(x.dtype).unsqueeze(-1)  # outside the window = zero pad
        gather = idx.clamp(0, N - 1).unsqueeze(-1).expand(B, k, d)
        g = self.gated(c.gather(1, gather), h.gather(1, gather)) * valid  # [B, k, d]
        if mask is not None:
            g = g * mask.gather(1, gather[..., :1])
        w = self.conv_out.weight.reshape(d, d * k)  # [d_out, d_in * k], (d_in, k) order
        return F.linear(g.transpose(1, 2).reshape(B, d * k), w, self.conv_out.bias)  # Eq. (8)


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """out_t = sum_{s <= t} (q_t . k_s) v_s for q, k [B, h, N, d_h], v [B, h, N, d_v] -> [B, h, N, d_v].

    Chunked form: the window is cut into chunks of <= ``chunk`` positions; within a chunk the masked
    quadratic form tril(Q K^T) V, across chunks the running state sum_s k_s^T v_s (d_h x d_h) of
    the earlier chunks. Same result as tril(Q K^T) V over the whole window, about 3x faster at
    N = 200 on CPU (forward + backward) and without its [B, h, N, N] temporaries.
    """
    B, h, N, d_h = q.shape
    n = -(-N // chunk)  # chunks
    c = -(-N // n)  # balanced chunk length <= chunk
    pad = n * c - N
    qc, kc, vc = (F.pad(t, (0, 0, 0, pad)).view(B, h, n, c, t.shape[-1]) for t in (q, k, v))
    future = torch.ones(c, c, dtype=torch.bool, device=q.device).triu_(1)
    out = (qc @ kc.transpose(-1, -2)).masked_fill_(future, 0.0) @ vc  # within chunks, [B, h, n, c, d_h]
    if n > 1:
        kv = kc.transpose(-1, -2) @ vc  # [B, h, n, d_h, d_h] per chunk
        out = out + qc @ (kv.cumsum(2) - kv)  # earlier chunks: exclusive running sum
    return out.view(B, h, n * c, v.shape[-1])[:, :, :N]


class LinearAttention(nn.Module):
    """Multi-head linear attention, Eq. 2, as the official code runs it, plus a causal normaliser.

    ``attn_norm="none"`` (the official form): A'(Q, K, V)_t = sum_s (q_t . k_s) v_s with
    q = X1(elu(Q W_Q)) / sqrt(d_h), k = X2(elu(K W_K)) and X1/X2 the L2 normalisation of each query /
    key over the head dimension. ``"count"``: the same sum divided by the number of real items it
    runs over (positions <= t in causal mode, the whole window N in official mode), so its scale no
    longer grows with the position. ``"kernel"``: phi = elu + 1 feature maps without L2
    normalisation, divided by sum_s phi(q_t) . phi(k_s) (Katharopoulos et al., ICML 2020), a
    departure from Eq. 2. Then Linear, Dropout, residual and LayerNorm (official code, not in Eq. 2).
    Causal mode: the output at t sums over s <= t only, padding keys masked out
    (:func:`causal_linear_attention` computes the sums chunk by chunk).
    """

    EPS = 1e-6  # floor of the kernel normaliser (reached only before the first real item)

    def __init__(self, cfg: GlintRUConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.n_heads = attention_heads(cfg)
        self.causal = cfg.causal
        self.attn_norm = cfg.attn_norm
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.dropout = Dropout(cfg.attn_dropout)
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # [B, N, d] -> [B, h, N, d_h]
        B, N, d = t.shape
        return t.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2)

    def _features(self, t: torch.Tensor) -> torch.Tensor:
        """Query / key features [B, N, d] -> [B, h, N, d_h]: X(elu(.)) per head, or elu + 1 (kernel)."""
        t = F.elu(self._heads(t))
        return t + 1.0 if self.attn_norm == "kernel" else F.normalize(t, dim=-1)

    def _keys_values(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        k = self._features(self.key(x))  # X2(elu(K)), [B, h, N, d_h]
        if mask is not None:
            k = k * mask.unsqueeze(1)  # padding keys leave every sum
        return k, self._heads(self.value(x))

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        q = self._features(self.query(x))  # X1(elu(Q))
        if self.attn_norm == "kernel":  # the normaliser cancels any scale
            return q
        return q * (1.0 / math.sqrt(q.shape[-1]))

    def _finish(self, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.out(a)) + x)  # official: own Linear, Dropout, Add & Norm

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Eq. (2) with the configured normaliser: q, k, v [B, h, N, d_h], mask [B, N, 1] -> [B, h, N, d_h]."""
        N = k.shape[2]  # keys summed over in official mode
        if self.causal:
            if self.attn_norm == "kernel":  # numerator and sum_s phi(q_t).phi(k_s) in one pass: v gets a ones column
                num = causal_linear_attention(q, k, F.pad(v, (0, 1), value=1.0))
                return num[..., :-1] / num[..., -1:].clamp(min=self.EPS)
            a = causal_linear_attention(q, k, v)  # Eq. (2), causal: sum over s <= t
            if self.attn_norm == "count":  # real items at positions <= t
                return a / mask.cumsum(1).clamp(min=1.0).unsqueeze(1)
            return a
        a = q @ (k.transpose(-1, -2) @ v)  # Eq. (2): Q (K^T V), all N positions
        if self.attn_norm == "kernel":
            return a / (q @ k.sum(2).unsqueeze(-1)).clamp(min=self.EPS)
        return a / N if self.attn_norm == "count" else a

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, N, d], ``mask`` [B, N, 1] or None -> [B, N, d]."""
        B, N, d = x.shape
        q = self._queries(x)
        k, v = self._keys_values(x, mask)
        a = self.mix(q, k, v, mask)
        return self._finish(a.transpose(1, 2).reshape(B, N, d), x)

    def forward_at(self, x: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        """The attention output at one position per row, ``pos`` [B] -> [B, d]."""
        B, N, d = x.shape
        x_t = x[torch.arange(B, device=x.device), pos].unsqueeze(1)  # [B, 1, d]
        q = self._queries(x_t)  # [B, h, 1, d_h]
        k, v = self._keys_values(x, mask)
        if self.causal:
            future = torch.arange(N, device=x.device).view(1, N) > pos.view(B, 1)  # [B, N]
            scores = (q @ k.transpose(-1, -2)).masked_fill_(future.view(B, 1, 1, N), 0.0)  # [B, h, 1, N]
            a = scores @ v  # Eq. (2), s <= t
            if self.attn_norm == "kernel":
                a = a / scores.sum(-1, keepdim=True).clamp(min=self.EPS)
            elif self.attn_norm == "count":
                seen = mask.squeeze(-1).masked_fill(future, 0.0).sum(1).clamp(min=1.0)  # [B]
                a = a / seen.view(B, 1, 1, 1)
        else:
            a = self.mix(q, k, v, None)
        return self._finish(a.transpose(1, 2).reshape(B, 1, d), x_t).squeeze(1)


def _gru_cell(gru: nn.GRU, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step of a single-layer ``nn.GRU`` with its own weights: [B, d_in], [B, d] -> [B, d].

    PyTorch's GRU equations (gates r, z, n in that order): r = sigma(W_ir x + b_ir + W_hr h + b_hr),
    z = sigma(W_iz x + b_iz + W_hz h + b_hz), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h (the paper's Eq. 1)."""
    gi = F.linear(x, gru.weight_ih_l0, getattr(gru, "bias_ih_l0", None))  # [B, 3d]
    gh = F.linear(h, gru.weight_hh_l0, getattr(gru, "bias_hh_l0", None))
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


class GatedMLP(nn.Module):
    """Gated MLP block, Eq. 12: R = (GeLU(delta_3(Z)) * (Z W + b)) W_o + b_o; [..., d] -> [..., d]."""

    def __init__(self, cfg: GlintRUConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.gate = nn.Linear(d, d)  # delta_3
        self.value = nn.Linear(d, d)  # W, b
        self.out = nn.Linear(d, d)  # W_o, b_o

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.gate(z)) * self.value(z))  # Eq. (12)


class GlintRU(SequentialRecommender):
    """GLINT-RU: ``forward(items [B, N]) -> [B, N, d]``; scores = hidden @ item_embeddings()[1:].T."""

    ROW_CHUNK = 64  # on a CPU, last_hidden processes at most this many sequences at once

    def __init__(self, cfg: GlintRUConfig, n_items: int, max_len: int) -> None:
        super().__init__()
        check_model_config(cfg, "GlintRUConfig", n_items=n_items, max_len=max_len)
        d = cfg.hidden_size
        self.cfg = cfg
        self.causal = cfg.causal
        self.needs_full_window = not cfg.causal
        # No positional embedding: the GRU carries order (the paper's item embedding layer).
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=0)  # Eq. (3)-(4)
        self.emb_dropout = Dropout(cfg.emb_dropout)
        # Expert mixing block.
        self.gru_expert = DenseSelectiveGRU(cfg)
        self.attention = LinearAttention(cfg)
        p = cfg.mixing_init  # GRU expert's initial share; [GRU, attention] as the official code orders them
        self.mixing_logits = nn.Parameter(torch.tensor([math.log(p), math.log(1.0 - p)]))
        self.experts = cfg.experts
        self.data_gate = nn.Linear(d, d)  # delta_2 of Eq. 11 (official dense2)
        self.dense = nn.Linear(d, d)  # the official extra Linear after the gate (docs/model.md, section 2)
        self.dense_dropout = Dropout(cfg.dense_dropout)
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        # Gated MLP block (absent in the light variant).
        self.mlp = None if cfg.light else GatedMLP(cfg)
        self.mlp_dropout = Dropout(cfg.mlp_dropout)
        self.mlp_norm = None if (cfg.light or cfg.shared_layernorm) else nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Official init: xavier for embedding, Linear and GRU weights; padding row kept at zero."""
        if isinstance(module, nn.Embedding):
            nn.init.xavier_normal_(module.weight)
            with torch.no_grad():
                module.weight[0].zero_()  # padding row stays zero (docs/model.md, section 3)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.GRU):
            nn.init.xavier_uniform_(module.weight_ih_l0)
            nn.init.xavier_uniform_(module.weight_hh_l0)

    def mixing_weights(self) -> torch.Tensor:
        """[GRU share, attention share], Eq. 10's alpha: softmax of the learnable logits, or fixed at
        [1, 0] / [0, 1] when ``experts`` keeps one expert (ablation)."""
        if self.experts == "both":
            return torch.softmax(self.mixing_logits, dim=0)
        one = self.mixing_logits.new_tensor([1.0, 0.0] if self.experts == "gru" else [0.0, 1.0])
        return one.detach()

    def _embed(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.emb_dropout(self.item_embedding(items))  # E, [B, N, d]
        mask = (items != 0).unsqueeze(-1).to(x.dtype) if self.causal else None  # [B, N, 1]
        return x, mask

    def _head(self, x: torch.Tensor, y: torch.Tensor | None, a: torch.Tensor | None) -> torch.Tensor:
        """Everything after the experts, position-wise: E, Y, A' [..., d] -> R [..., d].
        (Y or A' is None when ``experts`` keeps only the other one.)"""
        w = self.mixing_weights()
        if self.experts == "gru":
            m = y
        elif self.experts == "attention":
            m = a
        else:
            m = w[0] * y + w[1] * a  # Eq. (10)
        z = F.gelu(self.data_gate(x)) * m  # Eq. (11)
        h = self.norm(self.dense_dropout(self.dense(z)) + x)  # Dropout, Add & LayerNorm
        if self.mlp is None:
            return h
        r = self.mlp_dropout(self.mlp(h))  # Eq. (12), Dropout
        norm = self.norm if self.mlp_norm is None else self.mlp_norm
        return norm(r + h)  # Add & LayerNorm (shared when shared_layernorm)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` [B, N] item ids, 0 = padding -> hidden states [B, N, d]."""
        x, mask = self._embed(items)
        y = self.gru_expert(x, mask) if self.experts != "attention" else None  # Eq. 5-9
        a = self.attention(x, mask) if self.experts != "gru" else None  # Eq. 2
        return self._head(x, y, a)

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state at position ``lengths - 1``: [B, N], [B] -> [B, d].

        Equals gathering ``forward`` but computes the attention, gates and MLP only at that position;
        the GRU expert runs only over the prefix the read-out depends on (plus the 2*(k//2) positions
        the two symmetric convolutions look ahead in official mode).
        """
        B, N = items.shape
        # CPU: cache-sized pieces (64 x 200 windows ran ~25% faster than 256 x 200). Not on a GPU,
        # where each piece would relaunch the GRU's sequential steps and read its length back.
        if B > self.ROW_CHUNK and items.device.type == "cpu":
            pieces = zip(items.split(self.ROW_CHUNK), lengths.split(self.ROW_CHUNK))
            return torch.cat([self.last_hidden(i, n) for i, n in pieces])
        pos = (lengths - 1).clamp(min=0)
        x, mask = self._embed(items)
        span = min(N, int(pos.max()) + 1 + 2 * self.gru_expert.right)
        y = self.gru_expert.forward_at(x[:, :span], None if mask is None else mask[:, :span], pos)
        if self.causal:  # keys after the read-out are masked anyway: drop them
            a = self.attention.forward_at(x[:, :span], mask[:, :span], pos)
        else:
            a = self.attention.forward_at(x, mask, pos)
        x_t = x[torch.arange(B, device=x.device), pos]
        return self._head(x_t, y, a)

    @torch.no_grad()
    def diagnostics(self, items: torch.Tensor) -> dict[str, float]:
        """What the expert mix does on ``items`` [B, N] (call in eval mode): the mixing weights of
        Eq. (10) and the mean L2 norm, over real positions, of each expert's output (Y of Eq. 8, A'
        after its Linear and LayerNorm) and of the raw attention sum of Eq. (2) before them."""
        x, mask = self._embed(items)
        real = items != 0  # [B, N]
        y = self.gru_expert(x, mask)
        att = self.attention
        q = att._queries(x)
        k, v = att._keys_values(x, mask)
        raw = att.mix(q, k, v, mask).transpose(1, 2).flatten(2)  # [B, N, d]
        a = att._finish(raw, x)
        w = self.mixing_weights()
        return {
            "mix_gru": float(w[0]), "mix_attn": float(w[1]),
            "gru_out_norm": float(y[real].norm(dim=-1).mean()),
            "attn_out_norm": float(a[real].norm(dim=-1).mean()),
            "attn_sum_norm": float(raw[real].norm(dim=-1).mean()),
        }

    # --------------------------------------------------------------------------------------------
    # Streaming inference (causal mode): the state after t events determines the output after event
    # t + 1 in O(d^2) work, whatever t is. Stepping through a history equals ``forward`` (tested).
    # --------------------------------------------------------------------------------------------

    def _check_streamable(self) -> None:
        if not self.causal:
            raise ValueError("streaming needs causal=True: official mode looks ahead and over the whole window")

    def init_state(self, items: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The streaming state after each row's history ``items[b, :lengths[b]]`` ([B, N] right-padded).

        Keys (all [B, ...] tensors): ``gru`` [B, d] GRU state h_t; ``conv_in`` / ``conv_out``
        [B, k-1, d] the last k-1 inputs of each causal temporal convolution (zeros before the first
        item, like the left padding); ``kv`` [B, h, d_h, d_h] = sum_s k_s^T v_s and ``ksum``
        [B, h, d_h] = sum_s k_s (the linear attention's running sums); ``count`` [B] real items so
        far; ``hidden`` [B, d] the model output after the last item (zeros for an empty history).
        Computed in parallel over the window (no Python loop over positions); eval mode expected.
        """
        self._check_streamable()
        B, N = items.shape
        d = self.cfg.hidden_size
        k = self.gru_expert.conv_in.kernel_size[0]
        att = self.attention
        real = torch.arange(N, device=items.device).view(1, N) < lengths.view(B, 1)  # [B, N]
        items = items.masked_fill(~real, 0)
        x, mask = self._embed(items)  # mask [B, N, 1]
        ge = self.gru_expert
        u = ge.input_proj(x) * mask
        c, h_seq = ge.recurrent(x, mask)
        g = ge.gated(c, h_seq) * mask
        pos = (lengths - 1).clamp(min=0)
        rows = torch.arange(B, device=items.device)
        h_last = torch.where((lengths > 0).view(B, 1), h_seq[rows, pos], torch.zeros_like(h_seq[:, 0]))
        back = pos.view(B, 1) - torch.arange(k - 2, -1, -1, device=items.device).view(1, -1)  # [B, k-1], oldest first
        ok = ((back >= 0) & (back < lengths.view(B, 1))).to(x.dtype).unsqueeze(-1)
        take = back.clamp(min=0).unsqueeze(-1).expand(B, k - 1, d)
        keys, values = att._keys_values(x, mask)  # [B, h, N, d_h], padding keys zero
        hidden = self.last_hidden(items, lengths.clamp(min=1)) * (lengths > 0).to(x.dtype).view(B, 1)
        return {
            "gru": h_last,
            "conv_in": u.gather(1, take) * ok,
            "conv_out": g.gather(1, take) * ok,
            "kv": keys.transpose(-1, -2) @ values,
            "ksum": keys.sum(2),
            "count": lengths.to(x.dtype),
            "hidden": hidden,
        }

    def empty_state(self, batch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The state of ``batch`` empty histories."""
        items = torch.zeros(batch, 1, dtype=torch.long, device=device)
        return self.init_state(items, torch.zeros(batch, dtype=torch.long, device=device))

    def step(self, state: dict[str, torch.Tensor], items: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One new event per row: ``items`` [B] (ids >= 1) -> (new state, hidden [B, d]).

        The same equations as ``forward`` at one position: Eq. 5 and 8's causal convolutions read
        the stored last k-1 inputs, the GRU (Eq. 1) advances one step, and Eq. 2's causal sums are
        updated by k_t^T v_t. Scores are ``hidden @ item_embeddings()[1:].T`` (Eq. 13).
        """
        self._check_streamable()
        ge, att = self.gru_expert, self.attention
        B = items.shape[0]
        d = self.cfg.hidden_size
        x = self.emb_dropout(self.item_embedding(items))  # [B, d]
        u = ge.input_proj(x)
        win_in = torch.cat([state["conv_in"], u.unsqueeze(1)], dim=1)  # [B, k, d], oldest first
        k = win_in.shape[1]
        c = F.linear(win_in.transpose(1, 2).reshape(B, d * k), ge.conv_in.weight.reshape(d, d * k), ge.conv_in.bias)  # Eq. (5)
        h = _gru_cell(ge.gru, c, state["gru"])  # Eq. (1)
        g = ge.gated(c, h)  # Eq. (9)
        win_out = torch.cat([state["conv_out"], g.unsqueeze(1)], dim=1)
        y = F.linear(win_out.transpose(1, 2).reshape(B, d * k), ge.conv_out.weight.reshape(d, d * k), ge.conv_out.bias)  # Eq. (8)
        x1 = x.unsqueeze(1)  # [B, 1, d]
        q = att._queries(x1)  # [B, h, 1, d_h]
        key, value = att._keys_values(x1, None)  # [B, h, 1, d_h]
        kv = state["kv"] + key.transpose(-1, -2) @ value  # [B, h, d_h, d_h]
        ksum = state["ksum"] + key.squeeze(2)
        count = state["count"] + 1.0
        a = q @ kv  # Eq. (2): sum over s <= t
        if att.attn_norm == "kernel":
            a = a / (q @ ksum.unsqueeze(-1)).clamp(min=att.EPS)
        elif att.attn_norm == "count":
            a = a / count.view(B, 1, 1, 1)
        a = att._finish(a.transpose(1, 2).reshape(B, 1, d), x1).squeeze(1)
        hidden = self._head(x, y if self.experts != "attention" else None, a if self.experts != "gru" else None)
        new = {"gru": h, "conv_in": win_in[:, 1:], "conv_out": win_out[:, 1:], "kv": kv, "ksum": ksum,
               "count": count, "hidden": hidden}
        return new, hidden

    def item_embeddings(self) -> torch.Tensor:
        """Tied output embeddings [n_items + 1, d]; row 0 (padding) is zero and never scored.

        Eq. (13): scores = hidden @ item_embeddings()[1:].T, softmax over the catalogue (the engine's loss).
        """
        return self.item_embedding.weight
