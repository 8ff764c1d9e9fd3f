"""Cond P-Diff's networks: the 1D-conv parameter autoencoder (Sec. 3.2) and the conditional 1D UNet denoiser (3.3).

Both see a flat parameter vector as a 1-channel sequence, as the paper does ("weight matrix parameters
do not show strong positional relationships", so 1D rather than 2D convolutions). Two additions where the
sequence is *not* shift-invariant (coordinate i is a specific weight, not a pixel): the decoder ends with a
learned per-coordinate bias, and the denoiser adds a learned position embedding to its input.

Fixed against the official code (docs/design-notes.md §7): every sample gets its OWN timestep embedding (the
official UNet embeds `time[0]` for the whole batch), and the autoencoder's noise is the paper's additive
Gaussian of amplitude 0.001 on the input and on the latent (the official code mixes in 0.1 on the latent).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------- helpers


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of each sample's own timestep (DDPM / DiT). t: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # [B, half]: row b uses t[b], never t[0]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def groups_for(channels: int) -> int:
    """GroupNorm groups: up to 8, dividing the channel count (per-sample statistics, never across the batch)."""
    return math.gcd(channels, 8)

# ----------------------------------------------------------------------------- autoencoder (Sec. 3.2)


class ParamAutoencoder(nn.Module):
    """w -> z = E(w) -> w_hat = D(z + xi_z), with Gaussian noise on the input and on the latent (eq. 6-7).

    The vector is zero-padded to a multiple of fold**layers; each encoder level folds the length by `fold`
    (strided conv, then a 3-tap conv, each followed by InstanceNorm + LeakyReLU as the official encoder);
    a 1x1 conv gives `latent_channels` channels of length n_params_padded / fold**layers.
    """

    def __init__(self, n_params: int, *, fold: int = 4, layers: int = 3, width: int = 32, latent_channels: int = 4,
                 input_noise: float = 1e-3, latent_noise: float = 1e-3):
        super().__init__()
        if fold < 2 or layers < 1 or width < 1 or latent_channels < 1:
            raise ValueError(f"autoencoder needs fold >= 2, layers >= 1, width >= 1, latent_channels >= 1; got "
                             f"fold={fold}, layers={layers}, width={width}, latent_channels={latent_channels}")
        factor = fold ** layers
        self.n_params, self.fold, self.layers = n_params, fold, layers
        self.length = -(-n_params // factor) * factor  # padded input length
        self.latent_length = self.length // factor
        if self.latent_length < 2:
            raise ValueError(f"{n_params} parameters fold to a latent of length {self.latent_length} with "
                             f"fold={fold}, layers={layers}; lower fold or layers (InstanceNorm needs length >= 2)")
        self.latent_channels = latent_channels
        self.input_noise, self.latent_noise = input_noise, latent_noise  # paper 4.1: amplitude 0.001

        def block(c_in: int, c_out: int, conv: type, **kw) -> list[nn.Module]:
            return [conv(c_in, c_out, **kw), nn.InstanceNorm1d(c_out, affine=True), nn.LeakyReLU(0.2)]

        enc: list[nn.Module] = []
        for i in range(layers):
            enc += block(1 if i == 0 else width, width, nn.Conv1d, kernel_size=fold, stride=fold)
            enc += block(width, width, nn.Conv1d, kernel_size=3, padding=1)
        enc.append(nn.Conv1d(width, latent_channels, 1))  # no tanh: p-diff #13, the latent is standardized later
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv1d(latent_channels, width, 1)]
        for _ in range(layers):
            dec += block(width, width, nn.ConvTranspose1d, kernel_size=fold, stride=fold)
            dec += block(width, width, nn.Conv1d, kernel_size=3, padding=1)
        dec.append(nn.Conv1d(width, 1, 3, padding=1))
        self.decoder = nn.Sequential(*dec)
        self.out_bias = nn.Parameter(torch.zeros(self.length))  # per-coordinate offset: convs are shift-invariant

    def encode(self, w: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """w: [B, n_params] -> z: [B, latent_channels, latent_length]. Noise only when `generator` is given."""
        if w.ndim != 2 or w.shape[1] != self.n_params:
            raise ValueError(f"autoencoder expects [B, {self.n_params}] vectors, got {tuple(w.shape)}")
        x = F.pad(w, (0, self.length - self.n_params)).unsqueeze(1)  # [B, 1, length]
        if generator is not None and self.input_noise > 0:
            x = x + self.input_noise * torch.randn(x.shape, generator=generator).to(x.device)
        return self.encoder(x)

    def decode(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z: [B, latent_channels, latent_length] -> w_hat: [B, n_params] (eq. 6b: D(z + xi_z))."""
        if generator is not None and self.latent_noise > 0:
            z = z + self.latent_noise * torch.randn(z.shape, generator=generator).to(z.device)
        x = self.decoder(z).squeeze(1) + self.out_bias  # [B, length]
        return x[:, : self.n_params]

    def forward(self, w: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.encode(w, generator), generator)

# ----------------------------------------------------------------------------- denoiser (Sec. 3.3)


class ResBlock1D(nn.Module):
    """GroupNorm-SiLU-conv twice, with FiLM (per-sample scale and shift) from the time+condition embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups_for(c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # starts as the identity (skip path only)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb).unsqueeze(-1).chunk(2, dim=1)  # [B, c_out, 1] each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class CrossAttention1D(nn.Module):
    """Latent positions attend to condition tokens (one per class, in task order): the `class-tokens` mode."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        heads = math.gcd(channels, heads)
        self.norm = nn.GroupNorm(groups_for(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        q = self.norm(x).transpose(1, 2)  # [B, L, C]
        h, _ = self.attn(q, tokens, tokens, need_weights=False)
        return x + self.out(h).transpose(1, 2)


class CondUNet1D(nn.Module):
    """Conditional 1D UNet predicting epsilon (eq. 8) for latents [B, channels, length].

    Conditioning: a vector `cond` [B, cond_dim] is embedded and added to the timestep embedding; the sum
    drives every ResBlock through FiLM. Optional `tokens` [B, n_tokens, token_dim] (per-class text embeddings
    in task order) get a learned slot embedding and are cross-attended at every level.
    """

    def __init__(self, channels: int, length: int, cond_dim: int, *, width: int = 64, mults: tuple[int, ...] = (1, 2),
                 emb_dim: int = 128, token_dim: int = 0, n_tokens: int = 0):
        super().__init__()
        self.channels, self.length, self.cond_dim = channels, length, cond_dim
        self.factor = 2 ** (len(mults) - 1)
        self.padded = -(-length // self.factor) * self.factor
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_mlp = nn.Sequential(nn.Linear(max(cond_dim, 1), emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.use_tokens = token_dim > 0 and n_tokens > 0
        if self.use_tokens:
            self.n_tokens = n_tokens
            self.token_in = nn.Linear(token_dim, width * mults[-1])
            self.slots = nn.Parameter(0.02 * torch.randn(n_tokens, width * mults[-1]))  # order of the classes

        self.inp = nn.Conv1d(channels, width, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, width, self.padded))  # coordinates are not shift-invariant
        widths = [width * m for m in mults]
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = width
        for i, w in enumerate(widths):
            self.down.append(ResBlock1D(c, w, emb_dim))
            self.down_attn.append(self._attn(w))
            self.downsample.append(nn.Conv1d(w, w, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
            c = w
        self.mid1, self.mid_attn, self.mid2 = ResBlock1D(c, c, emb_dim), self._attn(c), ResBlock1D(c, c, emb_dim)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.upsample.append(nn.Conv1d(c, c, 3, padding=1) if i < len(widths) - 1 else nn.Identity())
            self.up.append(ResBlock1D(c + w, w, emb_dim))
            self.up_attn.append(self._attn(w))
            c = w
        self.out_norm = nn.GroupNorm(groups_for(c), c)
        self.out = nn.Conv1d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _attn(self, c: int) -> nn.Module:
        return CrossAttention1D(c) if self.use_tokens else nn.Identity()

    def _tokens(self, tokens: Tensor | None, c: int) -> Tensor | None:
        if not self.use_tokens:
            return None
        tok = self.token_in(tokens) + self.slots  # [B, n_tokens, width_max]
        return tok[..., :c]  # lower levels read a prefix of the token channels

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, tokens: Tensor | None = None) -> Tensor:
        """x: [B, channels, length]; t: [B] integer timesteps, one per sample; cond: [B, cond_dim];
        tokens: [B, n_tokens, token_dim] or None. Returns epsilon_hat [B, channels, length]."""
        b = x.shape[0]
        if t.ndim != 1 or t.shape[0] != b:
            raise ValueError(f"expected one timestep per sample, t of shape [{b}], got {tuple(t.shape)}")
        if self.use_tokens and (tokens is None or tokens.shape[:2] != (b, self.n_tokens)):
            raise ValueError(f"class-token denoiser needs tokens [{b}, {self.n_tokens}, d], got "
                             f"{None if tokens is None else tuple(tokens.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))  # [B, emb]: per-sample t (the official bug fixed)
        c_in = cond if self.cond_dim > 0 else torch.zeros(b, 1, device=x.device)
        emb = emb + self.cond_mlp(c_in)
        h = self.inp(F.pad(x, (0, self.padded - self.length))) + self.pos
        skips = []
        for block, attn, down in zip(self.down, self.down_attn, self.downsample):
            h = block(h, emb)
            if self.use_tokens:
                h = attn(h, self._tokens(tokens, h.shape[1]))
            skips.append(h)
            h = down(h)
        h = self.mid1(h, emb)
        if self.use_tokens:
            h = self.mid_attn(h, self._tokens(tokens, h.shape[1]))
        h = self.mid2(h, emb)
        for block, attn, up in zip(self.up, self.up_attn, self.upsample):
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-1], mode="nearest")
            h = block(torch.cat([up(h), skip], dim=1), emb)
            if self.use_tokens:
                h = attn(h, self._tokens(tokens, h.shape[1]))
        return self.out(F.silu(self.out_norm(h)))[..., : self.length]
