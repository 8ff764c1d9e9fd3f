"""Tina's denoiser: a GPT-2-style transformer over p-Model parameter tokens and class-text tokens (Tina 2.2).

Read top to bottom: the config, the token layout (how a flat p-Model vector becomes tokens), the
building blocks (timestep embedding, attention block), then `TinaNet`. The scheduler lives elsewhere
(methods/diffusion.py); the two meet in methods/tina.py.

Tokens, in sequence order (paper 2.2.3; docs/design-notes.md §3 and §6.3):
1. parameter chunks: each layer is cut into chunks of <= M values (chunks never cross layers; a layer
   smaller than M is one token); every chunk has its own bias-free linear encoder and decoder (no sharing).
2. the classifier head, by `head_tokens`:
   - "paper": fc.weight and fc.bias are chunked like every other layer (CNN-5K: [320] and [10]), and the K
     class texts are K separate tokens with their own encoders, in prompt order with position embeddings;
   - "rows" (default, design-notes §3): one token per class row (weights + bias of row i) with ONE encoder and ONE
     decoder shared by all rows; row token i = encoder(row i) + projection of class i's text + one row
     position shared by all rows. No other token knows the order of the rows, so permuting the prompt
     permutes the generated rows exactly (equivariance), and K may be anything up to `max_classes`.
3. with `merge_text`, one token carrying the mean of the class embeddings (TAPER's choice, Table 6 ablation).
4. the diffusion timestep: a frequency encoding (as G.pt's FrequencyEmbedder) through a linear layer.
The transformer predicts the clean parameters (signal / x0 prediction, paper eq. 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import Layout

HEAD_TOKENS = ("rows", "paper")

# ----------------------------------------------------------------------------- config


@dataclass
class TinaNetConfig:
    """Shape of the denoiser. Defaults: the paper's A.5 (the official cifar100 config uses width 512)."""

    width: int = 2048  # hidden size (paper A.5); official cifar100 config 512; 256 on CPU (design-notes §4)
    depth: int = 12  # transformer blocks (paper A.5; the official code has 12 blocks, 1-layer encoders)
    heads: int = 16  # attention heads (paper A.5)
    chunk: int = 576  # M, parameters per token (paper A.5, official chunk_within_layer)
    text_dim: int = 512  # text embedding size (CLIP ViT-B/32: 512; MiniLM: 384)
    max_classes: int = 10  # longest prompt; shorter prompts are padded with '<->' (paper 2.2.3)
    head_tokens: str = "rows"  # "rows": per-class equivariant row tokens (design-notes §3); "paper": chunked head
    merge_text: bool = False  # average the class embeddings into one token (TAPER-style, Table 6 ablation)
    time_freqs: int = 128  # frequencies of the timestep encoding (G.pt's FrequencyEmbedder: 128)
    dropout: float = 0.0  # official: 0
    input_norm: bool = True  # LayerNorm over the encoded tokens before the blocks (official); without it the
    # text term, ~3x the row term at initialisation, enters the residual stream unscaled

# ----------------------------------------------------------------------------- token layout


@dataclass(frozen=True)
class ParamToken:
    """One parameter chunk: values [start, start + size) of segment `name` (offsets in the flat vector)."""

    name: str
    offset: int  # position in the tokenized flat vector
    size: int


def chunk_tokens(layout: Layout, chunk: int, include_head: bool) -> list[ParamToken]:
    """Chunk every layer (the head too if `include_head`) into tokens of <= `chunk` values, within layers."""
    head = {f"{layout.head}.weight", f"{layout.head}.bias"}
    tokens = []
    for seg in layout.segments:
        if seg.name in head and not include_head:
            continue
        for start in range(0, seg.numel, chunk):
            tokens.append(ParamToken(seg.name, seg.offset + start, min(chunk, seg.numel - start)))
    return tokens

# ----------------------------------------------------------------------------- building blocks


class FrequencyEmbedding(nn.Module):
    """t in [0, 1] -> [sin(f t), cos(f t), t] for `n` frequencies f = pi * 2^linspace(0, 10).

    G.pt encodes the raw integer step with 2^linspace(0, 14); we take t / T so the embedding does not depend
    on T, with frequencies up to 1024 pi, enough to tell apart single steps of a 1000-step schedule.
    """

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.linspace(0, 10, n), persistent=False)
        self.dim = 2 * n + 1

    def forward(self, t: Tensor) -> Tensor:
        angles = t[:, None].float() * self.freqs  # [B, n]
        return torch.cat([angles.sin(), angles.cos(), t[:, None].float()], dim=-1)  # [B, 2n + 1]


class Attention(nn.Module):
    """Multi-head self-attention without a causal mask (every token sees every token)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, h, n, d]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """GPT-2 pre-LN block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

# ----------------------------------------------------------------------------- the denoiser


class TinaNet(nn.Module):
    """G_phi(T(t_k), theta^j, j) -> theta_hat: the text-conditioned parameter denoiser (Tina eq. 1).

    Works on a p-Model as (body, rows): body [B, n_body] = everything before the head (empty for head-only
    archs), rows [B, K, d+1] = classifier row i and bias i of class i, in prompt order.
    """

    def __init__(self, cfg: TinaNetConfig, layout: Layout):
        super().__init__()
        if cfg.head_tokens not in HEAD_TOKENS:
            raise ValueError(f"head_tokens must be one of {HEAD_TOKENS}, got {cfg.head_tokens!r}")
        self.cfg = cfg
        layout = layout.with_classes(cfg.max_classes)
        self.paper = cfg.head_tokens == "paper"
        self.n_body = layout.body(torch.zeros(layout.n_params)).numel()
        self.row_dim = layout.by_name[f"{layout.head}.weight"].shape[1] + 1  # d + 1
        w, m = cfg.width, cfg.chunk

        # 1. parameter chunks: one bias-free linear encoder/decoder per token, stored stacked as
        # [n_tok, M, W] and zero-padded to M inputs (a padded input is always 0, so this is exactly a
        # separate Linear(size_i, W) per token; the decoders' extra outputs are dropped).
        self.tokens = chunk_tokens(layout, m, include_head=self.paper)
        n_tok = len(self.tokens)
        self.n_flat = self.n_body + (self.row_dim * cfg.max_classes if self.paper else 0)
        index = torch.full((n_tok, m), self.n_flat, dtype=torch.long)  # n_flat points at an appended 0
        for i, tok in enumerate(self.tokens):
            index[i, : tok.size] = torch.arange(tok.offset, tok.offset + tok.size)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("valid", index < self.n_flat, persistent=False)  # [n_tok, M]
        self.enc_w = nn.Parameter(torch.randn(n_tok, m, w) * 0.02)
        self.dec_w = nn.Parameter(torch.randn(n_tok, w, m) * 0.02)

        # 2. classifier head and class texts
        n_text = 0
        if self.paper:
            n_text = 1 if cfg.merge_text else cfg.max_classes
            # each class-text token has its own encoder too (paper: "without weight sharing")
            self.text_w = nn.Parameter(torch.randn(n_text, cfg.text_dim, w) * 0.02)
            self.text_b = nn.Parameter(torch.zeros(n_text, w))
        else:
            self.row_enc = nn.Linear(self.row_dim, w, bias=False)  # shared by all row tokens
            self.row_dec = nn.Linear(w, self.row_dim, bias=False)
            self.row_pos = nn.Parameter(torch.zeros(w))  # ONE position for every row: no row order inside
            self.text_proj = nn.Linear(cfg.text_dim, w)  # class text -> added to its row token
            n_text = 1 if cfg.merge_text else 0
        if cfg.merge_text and not self.paper:
            self.merged_proj = nn.Linear(cfg.text_dim, w)

        # 3. timestep, positions, transformer
        self.time = FrequencyEmbedding(cfg.time_freqs)
        self.time_proj = nn.Linear(self.time.dim, w)
        self.pos_emb = nn.Parameter(torch.zeros(n_tok + n_text + 1, w))  # zero-init, learned (official)
        self.ln_in = nn.LayerNorm(w) if cfg.input_norm else nn.Identity()  # after encoding (official)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(w, cfg.heads, cfg.dropout) for _ in range(cfg.depth)])
        self.ln_f = nn.LayerNorm(w)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.depth))

    @staticmethod
    def _init(module: nn.Module) -> None:
        """minGPT init, as the official code: Linear N(0, 0.02), biases 0."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters that act (the stacked chunk encoders/decoders' zero-padding slots never do): the
        count of a model with one Linear(size_i, W) and Linear(W, size_i) per chunk, as the paper's."""
        unused = 2 * self.cfg.width * sum(self.cfg.chunk - t.size for t in self.tokens)
        return sum(p.numel() for p in self.parameters()) - unused

    def token_sizes(self) -> list[int]:
        """Sizes of the parameter-chunk tokens in sequence order ("rows": the body's; K row tokens follow)."""
        return [t.size for t in self.tokens]

    def forward(self, body: Tensor, rows: Tensor, text: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Predict the clean parameters.

        Args:
            body: [B, n_body] noised body parameters; rows: [B, K, d+1] noised head rows, K <= max_classes
                ("paper" needs K = max_classes: pad first); text: [B, K, text_dim] class embeddings in
                prompt order; t: [B] diffusion time in [0, 1] (step / T).
        Returns:
            (body [B, n_body], rows [B, K, d+1]), the predicted x0.
        """
        b, k = rows.shape[:2]
        if k > self.cfg.max_classes or text.shape[1] != k:
            raise ValueError(f"got {k} head rows and {text.shape[1]} texts; expected equal counts <= "
                             f"max_classes={self.cfg.max_classes}")
        if self.paper and k != self.cfg.max_classes:
            raise ValueError(f"head_tokens='paper' has a fixed head of {self.cfg.max_classes} rows; got {k} "
                             "(pad the prompt with '<->' and zero rows)")
        n_tok = len(self.tokens)
        # 1. parameter chunks, each through its own encoder
        flat = torch.cat([body, rows[..., :-1].flatten(1), rows[..., -1]], dim=1) if self.paper else body
        flat = torch.cat([flat, flat.new_zeros(b, 1)], dim=1)  # + the slot that padded inputs read (0)
        x = [torch.einsum("bnm,nmw->bnw", flat[:, self.index], self.enc_w)]  # [B, n_tok, W]
        # 2. rows (shared encoder, own class text) or class-text tokens (own encoders, prompt positions)
        if not self.paper:
            x.append(self.row_enc(rows) + (0 if self.cfg.merge_text else self.text_proj(text)))  # [B, K, W]
        if self.paper:
            txt = text.mean(1, keepdim=True) if self.cfg.merge_text else text  # [B, n_text, D]
            x.append(torch.einsum("bnd,ndw->bnw", txt, self.text_w) + self.text_b)
        elif self.cfg.merge_text:
            x.append(self.merged_proj(text.mean(1, keepdim=True)))  # [B, 1, W]
        # 3. timestep
        x.append(self.time_proj(self.time(t))[:, None])  # [B, 1, W]
        pos = self.pos_emb
        if not self.paper:  # every row token gets the same position: the rows form a set
            pos = torch.cat([pos[:n_tok], self.row_pos.expand(k, -1), pos[n_tok:]])
        h = self.drop(self.ln_in(torch.cat(x, dim=1)) + pos)  # [B, n_tok (+K) + n_text + 1, W]
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        # decode: each chunk with its own decoder, the rows with the shared one
        out = torch.einsum("bnw,nwm->bnm", h[:, :n_tok], self.dec_w)[:, self.valid]  # [B, n_flat], in order
        if self.paper:
            d = self.row_dim - 1
            w_, b_ = out[:, self.n_body:self.n_body + k * d], out[:, self.n_body + k * d:]
            return out[:, : self.n_body], torch.cat([w_.view(b, k, d), b_.unsqueeze(-1)], dim=-1)
        return out, self.row_dec(h[:, n_tok:n_tok + k])
