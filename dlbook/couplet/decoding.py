"""Chapter 04's decoding under the priors (eq-04-prior), evaluation, the lookup table, the rules."""
from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import CharVocab
from .data import is_punct


MASKS = ("none", "post", "exempt", "copy")


def prior_mask(x: torch.Tensor, vocab_size: int, mode: str = "post",
               punct_ids: Sequence[int] = ()) -> torch.Tensor:
    """Banned outputs, (batch, length, V) booleans. Every mode bans the unknown id 0.
    - "post": also the upper line's own character x_t at position t (the post's prior);
    - "exempt": the same, but punctuation may answer itself (a comma answers a comma), and
      may also stand anywhere else;
    - "copy": a punctuation mark of the upper line is copied to its place (everything else is
      banned there), punctuation is banned at every other position, and x_t is banned as in
      "post" (the chapter's prior: the rules of section 1, written into the decoder);
    - "none": only id 0."""
    if mode not in MASKS:
        raise ValueError(f"prior_mask: mode must be one of {MASKS}, got {mode!r}")
    ban = torch.zeros(*x.shape, vocab_size, dtype=torch.bool, device=x.device)
    ban[..., 0] = True                                     # (eq-04-prior): never <unk>
    if mode == "none":
        return ban
    P = torch.as_tensor(list(punct_ids), dtype=torch.long, device=x.device)
    is_p = torch.isin(x, P) if len(punct_ids) else torch.zeros_like(x, dtype=torch.bool)
    if mode == "copy":
        ban[..., P] = True                                 # (eq-04-copy): no punctuation of its own
        ban[is_p] = True                                   # (eq-04-copy): at a mark, only the mark
        ban.scatter_(-1, x.unsqueeze(-1), (~is_p).unsqueeze(-1))
        return ban
    own = ~is_p if mode == "exempt" else torch.ones_like(x, dtype=torch.bool)
    ban.scatter_(-1, x.unsqueeze(-1), own.unsqueeze(-1) | ban.gather(-1, x.unsqueeze(-1)))  # (eq-04-prior): y_t != x_t
    return ban


def decode(logits: torch.Tensor, x: torch.Tensor, mode: str = "post", punct_ids: Sequence[int] = ()) -> torch.Tensor:
    """The per-position argmax under the prior: the MAP lower line of the factorised model
    restricted to the allowed characters."""
    ban = prior_mask(x, logits.shape[-1], mode, punct_ids)
    return logits.masked_fill(ban, float("-inf")).argmax(-1)  # (eq-04-map)


def enumerate_map(logp: torch.Tensor, transitions: torch.Tensor | None = None) -> tuple[tuple[int, ...], float]:
    """Brute force over all V^n sequences: the one maximising sum_t logp[t, y_t]
    (+ sum_t A[y_{t-1}, y_t] with a CRF transition matrix A). For tiny n and V only."""
    logp = logp.detach()
    n, V = logp.shape
    if V ** n > 200_000:
        raise ValueError(f"enumerate_map: {V}^{n} sequences is too many to enumerate")
    best, arg = -math.inf, None
    for ys in itertools.product(range(V), repeat=n):
        s = sum(float(logp[t, y]) for t, y in enumerate(ys))
        if transitions is not None:
            s += sum(float(transitions[a, b]) for a, b in zip(ys, ys[1:]))  # (eq-04-crf)
        if s > best:
            best, arg = s, ys
    return arg, best


def punct_ids(vocab: CharVocab) -> list[int]:
    """The vocabulary's punctuation ids (Unicode category P*)."""
    return [i for i, t in enumerate(vocab.itos) if is_punct(t)]


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, buckets: dict[int, tuple[np.ndarray, np.ndarray]], punct_ids: Sequence[int] = (),
             batch: int = 512, device: torch.device | None = None) -> dict[str, float]:
    """Cross-entropy (nats per character) and per-character accuracy of the decoded lines
    under the post's prior, the punctuation-exempt one and the copy prior, over every pair."""
    dev = device or next(model.parameters()).device
    was = model.training
    model.eval()
    nll = n = ok_post = ok_ex = ok_copy = 0.0
    for L, (X, Y) in buckets.items():
        for i in range(0, len(X), batch):
            x, y = torch.from_numpy(X[i:i + batch]).to(dev), torch.from_numpy(Y[i:i + batch]).to(dev)
            logits = model(x).float()
            nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            ok_post += float((decode(logits, x, "post") == y).sum())
            ok_ex += float((decode(logits, x, "exempt", punct_ids) == y).sum())
            ok_copy += float((decode(logits, x, "copy", punct_ids) == y).sum())
            n += y.numel()
    model.train(was)
    return {"ce": nll / n, "acc_post": ok_post / n, "acc_exempt": ok_ex / n, "acc_copy": ok_copy / n,
            "chars": int(n)}


@torch.no_grad()
def answer(model: nn.Module, vocab: CharVocab, line: str, mode: str = "copy", top: int = 0):
    """The lower line for one upper line (unknown characters count as <unk>); with `top`,
    also the `top` allowed candidates per position with their probabilities."""
    if not line:
        raise ValueError("answer: empty upper line")
    model.eval()
    dev = next(model.parameters()).device
    x = torch.tensor([vocab.encode(line)], device=dev)
    logits = model(x).float()
    punct = punct_ids(vocab)
    ids = decode(logits, x, mode, punct)[0]
    lower = "".join(vocab.itos[int(i)] for i in ids)
    if not top:
        return lower
    p = logits.masked_fill(prior_mask(x, logits.shape[-1], mode, punct), float("-inf")).softmax(-1)[0]
    val, idx = p.topk(top, dim=-1)
    cands = [[(vocab.itos[int(j)], float(v)) for v, j in zip(vr, ir)] for vr, ir in zip(val, idx)]
    return lower, cands


@torch.no_grad()
def answer_many(model: nn.Module, vocab: CharVocab, lines: Sequence[str], mode: str = "copy") -> list[str]:
    """`answer` for many lines, batched by length; the order of `lines` is kept."""
    model.eval()
    dev = next(model.parameters()).device
    punct = punct_ids(vocab)
    out: list[str | None] = [None] * len(lines)
    by_len: dict[int, list[int]] = {}
    for i, l in enumerate(lines):
        by_len.setdefault(len(l), []).append(i)
    for L, idx in by_len.items():
        for k in range(0, len(idx), 512):
            part = idx[k:k + 512]
            x = torch.tensor([vocab.encode(lines[i]) for i in part], device=dev)
            ids = decode(model(x).float(), x, mode, punct)
            for i, row in zip(part, ids.tolist()):
                out[i] = "".join(vocab.itos[j] for j in row)
    return out  # type: ignore[return-value]


class LookupBaseline:
    """For each upper character, its most frequent lower character at the same position in
    the training pairs (ties by code point), never the character itself except punctuation.
    A character never seen in training gets no answer (counted wrong; shown as ○)."""

    MISSING = "○"

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        counts: dict[str, Counter] = {}
        for up, lo in pairs:
            for a, b in zip(up, lo):
                counts.setdefault(a, Counter())[b] += 1
        self.table: dict[str, str] = {}
        for a, c in counts.items():
            allowed = [(-k, b) for b, k in c.items() if b != a or is_punct(a)]
            if allowed:
                self.table[a] = min(allowed)[1]

    def predict(self, line: str) -> list[str | None]:
        return [self.table.get(a) for a in line]

    def __call__(self, line: str) -> str:
        return "".join(c or self.MISSING for c in self.predict(line))

    def accuracy(self, pairs: Sequence[tuple[str, str]]) -> float:
        """Per-character accuracy on `pairs` (no answer counts as wrong)."""
        hit = tot = 0
        for up, lo in pairs:
            hit += sum(p is not None and p == b for p, b in zip(self.predict(up), lo))
            tot += len(lo)
        return hit / tot


# ----------------------------------------------------------------------------- couplet rules
def rules(upper: str, lower: str) -> dict[str, bool]:
    """The rules of a couplet a program can check:
    - length: the lines have equal length;
    - no_echo: no character of the upper line reappears at its own position (punctuation aside);
    - punctuation: punctuation stands at the same places, as the same marks;
    - repetition: x_i = x_j exactly when y_i = y_j (doubled and repeated characters answered
      by doubled and repeated characters, and no repetition where the upper line has none)."""
    n = len(upper)
    if len(lower) != n:
        return {"length": False, "no_echo": False, "punctuation": False, "repetition": False}
    no_echo = all(a != b or is_punct(a) for a, b in zip(upper, lower))
    punct = all((is_punct(a) or is_punct(b)) <= (a == b) for a, b in zip(upper, lower))
    rep = all((upper[i] == upper[j]) == (lower[i] == lower[j]) for i in range(n) for j in range(i + 1, n))
    return {"length": True, "no_echo": no_echo, "punctuation": punct, "repetition": rep}


RULES = ("length", "no_echo", "punctuation", "repetition")


def rule_shares(uppers: Sequence[str], lowers: Sequence[str]) -> dict[str, float]:
    """Share of lines keeping each rule, and all of them."""
    rs = [rules(u, l) for u, l in zip(uppers, lowers)]
    out = {k: float(np.mean([r[k] for r in rs])) for k in RULES}
    out["all"] = float(np.mean([all(r.values()) for r in rs]))
    return out


def doubling(uppers: Sequence[str], lowers: Sequence[str]) -> dict[str, float]:
    """P(y_i = y_{i+1} | x_i = x_{i+1}) against P(y_i = y_{i+1} | x_i != x_{i+1}), over all
    adjacent positions (punctuation aside): does a doubled character get a doubled answer?"""
    dd = dn = sd = sn = 0
    for u, l in zip(uppers, lowers):
        for i in range(len(u) - 1):
            if is_punct(u[i]) or is_punct(u[i + 1]):
                continue
            if u[i] == u[i + 1]:
                dd += 1
                sd += l[i] == l[i + 1]
            else:
                dn += 1
                sn += l[i] == l[i + 1]
    return {"doubled": sd / dd if dd else float("nan"), "other": sn / dn if dn else float("nan"),
            "n_doubled": dd, "n_other": dn}



def overlap(answer: str, human: str) -> float:
    """Character overlap with the human lower line: the share of the human line's characters
    (punctuation aside) that the answer also uses, counted with multiplicity and regardless of
    position (a unigram recall). NaN for a human line of punctuation only."""
    h = Counter(c for c in human if not is_punct(c))
    a = Counter(c for c in answer if not is_punct(c))
    n = sum(h.values())
    return sum((h & a).values()) / n if n else float("nan")


def every_kth(n_items: int, k_items: int) -> list[int]:
    """The gallery's fixed rule: `k_items` indices spread evenly over `n_items` (every
    (n/k)-th item from the first), so no line is picked for how its answer looks."""
    if n_items < 1 or k_items < 1:
        raise ValueError(f"every_kth: need items to choose from and to choose, got {n_items} and {k_items}")
    k = min(k_items, n_items)
    return sorted({int(i * n_items / k) for i in range(k)})
