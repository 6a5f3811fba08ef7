"""Chapter 04's models: the post's gated CNN tagger (eq-04-gate), the BiLSTM of C11, the loss."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import require
from .settings import Config


# ----------------------------------------------------------------------------- the model
def gated_residual(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The post's gate, as written in its Keras Lambda: x*sigmoid(g) + h*sigmoid(-g)."""
    return x * torch.sigmoid(g) + h * torch.sigmoid(-g)  # (eq-04-gate)


class GatedBlock(nn.Module):
    """One gated residual block: a 'same' convolution with 2d output channels, split into a
    gate g (first d) and a candidate h (last d), mixed with the input by `gated_residual`."""

    def __init__(self, dim: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        require("GatedBlock", positive={"dim": dim, "kernel": kernel, "dilation": dilation}, whole=True)
        if kernel % 2 != 1:
            raise ValueError(f"GatedBlock: kernel must be odd, got {kernel}")
        self.conv = nn.Conv1d(dim, 2 * dim, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate logits g, candidate h) for input x of shape (batch, dim, length)."""
        g, h = self.conv(x).chunk(2, dim=1)
        return g, h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, h = self.split(x)
        return gated_residual(x, g, h)


class CNNTagger(nn.Module):
    """Embedding -> dropout -> gated residual blocks -> per-position linear map to V logits."""

    def __init__(self, vocab_size: int, dim: int = 128, blocks: int = 6, kernel: int = 3,
                 dilations: Sequence[int] | None = None, dropout: float = 0.25, init: str = "keras"):
        super().__init__()
        require("CNNTagger", positive={"vocab_size": vocab_size, "dim": dim, "blocks": blocks}, whole=True)
        require("CNNTagger", unit={"dropout": dropout})
        dil = tuple(dilations) if dilations else (1,) * blocks
        if len(dil) != blocks:
            raise ValueError(f"CNNTagger: {blocks} blocks need {blocks} dilations, got {dil}")
        self.vocab_size, self.kernel, self.dilations = int(vocab_size), int(kernel), dil
        self.embed = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(GatedBlock(dim, kernel, d) for d in dil)
        self.out = nn.Linear(dim, vocab_size)
        if init == "keras":
            keras_init(self)
        elif init != "torch":
            raise ValueError(f"CNNTagger: init must be 'keras' or 'torch', got {init!r}")

    @property
    def receptive_field(self) -> int:
        """R = sum over blocks of dilation * (kernel - 1) / 2: output t sees inputs t-R..t+R."""
        return sum(d * (self.kernel - 1) // 2 for d in self.dilations)  # (eq-04-rf)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, dim) before the output layer."""
        _check_ids(ids, self.vocab_size)
        h = self.drop(self.embed(ids)).transpose(1, 2)
        for b in self.blocks:
            h = b(h)
        return h.transpose(1, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.encode(ids))

    @torch.no_grad()
    def gate_means(self, ids: torch.Tensor) -> list[float]:
        """Mean gate sigmoid(g) of each block over all positions and channels: the share of its
        input a block keeps (1) rather than replaces by its candidate h (0)."""
        h = self.drop(self.embed(ids)).transpose(1, 2)
        out = []
        for b in self.blocks:
            g, c = b.split(h)
            out.append(float(torch.sigmoid(g).mean()))
            h = gated_residual(h, g, c)
        return out


class BiLSTMTagger(nn.Module):
    """C11: the blocks replaced by a bidirectional LSTM (hidden per direction * 2 = dim)."""

    def __init__(self, vocab_size: int, dim: int = 128, hidden: int = 64, layers: int = 2, dropout: float = 0.25,
                 init: str = "keras"):
        super().__init__()
        require("BiLSTMTagger", positive={"vocab_size": vocab_size, "dim": dim, "hidden": hidden,
                                          "layers": layers}, whole=True)
        self.vocab_size = int(vocab_size)
        self.embed = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(dim, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, vocab_size)
        if init == "keras":
            keras_init(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _check_ids(ids, self.vocab_size)
        return self.out(self.rnn(self.drop(self.embed(ids)))[0])


def _check_ids(ids: torch.Tensor, vocab_size: int) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.ndim != 2:
        raise ValueError(f"expected token ids as a (batch, length) integer tensor, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {tuple(getattr(ids, 'shape', ()))}")
    if ids.shape[1] == 0:
        raise ValueError("expected at least one character per line, got length 0")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")


@torch.no_grad()
def keras_init(model: nn.Module) -> nn.Module:
    """Keras defaults, as in the author's code: Glorot-uniform kernels and zero biases for
    convolutions and dense layers, U(-0.05, 0.05) embeddings; for LSTMs Glorot-uniform input
    kernels, orthogonal recurrent kernels and forget-gate biases of 1."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.uniform_(m.weight, -0.05, 0.05)
        elif isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LSTM):
            for name, p in m.named_parameters():
                if name.startswith("weight_ih"):
                    for chunk in p.chunk(4, 0):
                        nn.init.xavier_uniform_(chunk)
                elif name.startswith("weight_hh"):
                    for chunk in p.chunk(4, 0):
                        nn.init.orthogonal_(chunk)
                elif name.startswith("bias_ih"):
                    p.zero_()
                    p[m.hidden_size:2 * m.hidden_size] = 1.0  # gates i, f, g, o: forget bias 1
                else:
                    p.zero_()
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_formula(vocab_size: int, dim: int = 128, blocks: int = 6, kernel: int = 3) -> int:
    """Embedding d V + blocks (k d 2d + 2d) + output (d + 1) V; 257 V + 591,360 for the post."""
    return dim * vocab_size + blocks * (kernel * dim * 2 * dim + 2 * dim) + (dim + 1) * vocab_size  # (eq-04-params)


# ----------------------------------------------------------------------------- loss and decoding
def tagging_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over positions of -log p(y_t|x): the negative log-likelihood of the factorised
    model divided by the number of characters (the post's sparse categorical cross-entropy)."""
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"tagging_nll: logits (batch, length, V) and targets (batch, length) must agree, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))  # (eq-04-nll)



def make_model(arch: str, vocab_size: int, cfg: Config) -> nn.Module:
    if arch == "cnn":
        return CNNTagger(vocab_size, cfg.dim, cfg.blocks, cfg.kernel, dropout=cfg.dropout)
    if arch == "bilstm":
        return BiLSTMTagger(vocab_size, cfg.dim, cfg.bilstm_hidden, cfg.bilstm_layers, cfg.dropout)
    raise ValueError(f"arch must be 'cnn' or 'bilstm', got {arch!r}")
