"""The text task, MLM pre-training, fine-tuning and its runs."""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Settings, by_profile, device as default_device, require, worker_threads
from ..train import ArrayLoader, Trainer, run_jobs
from .settings import *  # noqa: F403
from .settings import Config
from .dropout import *  # noqa: F403
from .models import *  # noqa: F403

# ----------------------------------------------------------------------------- the couplet task
@dataclass
class CharTable:
    """Characters as tokens: the special tokens, then the `size` most frequent characters of the
    pre-training text; any other character is [UNK]."""

    itos: list[str]

    @classmethod
    def build(cls, texts: Sequence[str], size: int) -> "CharTable":
        counts = Counter(c for t in texts for c in t)
        top = [c for c, _ in sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:size]]
        return cls(list(SPECIALS) + top)

    def __post_init__(self):
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, UNK) for c in text]


@dataclass
class CoupletTask:
    """Is this the true second line? A couplet's first line with either its own second line
    (label 1) or the second line of another couplet of the same length from the same split
    (label 0), about half each. Train and validation come from the last `task_train` +
    `task_val` couplets of the training file, test from the corpus' test file; MLM pre-training
    reads the training couplets before them (true pairs only, no labels), so no labelled couplet
    is pre-trained on."""

    pairs: dict[str, list[tuple[str, str]]]
    labels: dict[str, list[int]]
    pretrain: list[tuple[str, str]]
    source: str

    def counts(self, split: str) -> list[int]:
        return [self.labels[split].count(k) for k in (0, 1)]


def mismatch(pairs: Sequence[tuple[str, str]], seed: int = 0) -> tuple[list[tuple[str, str]], list[int]]:
    """Give about half of the couplets another couplet's second line of the same length: the
    couplets drawn to be negatives are grouped by length and their second lines rotated by one
    inside each group (so none keeps its own); a negative alone in its length stays true."""
    rng = np.random.default_rng(seed)
    neg = rng.random(len(pairs)) < 0.5
    out, labels = list(pairs), [1] * len(pairs)
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(neg).tolist():
        groups.setdefault(len(pairs[i][1]), []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        for a, b in zip(idx, idx[1:] + idx[:1]):
            if pairs[b][1] != pairs[a][1]:
                out[a] = (pairs[a][0], pairs[b][1])
                labels[a] = 0
    return out, labels


def couplet_task(cfg: Config) -> CoupletTask:
    """Build the couplet-matching task (see `CoupletTask`)."""
    from ..data import load_text

    train = load_text("couplet", "train")
    test = load_text("couplet", "test")
    tr = [tuple(r) for r in train.records]
    n_lab = cfg.task_train + cfg.task_val
    if len(tr) < n_lab + 1:
        raise ValueError(f"couplet_task: {len(tr)} training couplets, fewer than the {n_lab} labelled ones + 1")
    lab, pre = tr[-n_lab:], tr[:-n_lab]
    held = {p for p in lab} | {tuple(r) for r in test.records}
    pre = [p for p in pre if p not in held]
    pairs, labels = {}, {}
    for i, (s, part) in enumerate((("train", lab[:cfg.task_train]), ("validation", lab[cfg.task_train:]),
                                   ("test", [tuple(r) for r in test.records][:cfg.task_test]))):
        pairs[s], labels[s] = mismatch(part, seed=i)
    return CoupletTask(pairs, labels, pre, f"couplet train: {train.source}; test: {test.source}")


def encode_pairs(pairs: Sequence[tuple[str, str]], vocab, line_len: int):
    """[CLS] first line [SEP] second line, each line cut to `line_len` characters, right-padded
    to 2 line_len + 2 tokens. The second line repeats the first line's position ids (character
    j of either line sits at position j + 1) and carries segment 1, so that aligned characters
    share a position, as a couplet aligns them. Returns (ids, pad, pos, seg)."""
    n = 2 * line_len + 2
    ids = torch.full((len(pairs), n), PAD, dtype=torch.long)
    pos = torch.zeros_like(ids)
    seg = torch.zeros_like(ids)
    for i, (a, b) in enumerate(pairs):
        ea, eb = vocab.encode(a)[:line_len], vocab.encode(b)[:line_len]
        row = [CLS] + ea + [SEP] + eb
        ids[i, :len(row)] = torch.tensor(row)
        pos[i, :len(row)] = torch.tensor([0] + list(range(1, len(ea) + 1)) + [0] + list(range(1, len(eb) + 1)))
        seg[i, len(ea) + 1:len(row)] = 1
    return ids, ids == PAD, pos, seg


# ----------------------------------------------------------------------------- MLM pre-training
def new_bert(cfg: Config, vocab_size: int, n_classes: int = 2) -> TinyBert:
    return TinyBert(vocab_size, 2 * cfg.line_len + 2, cfg.d_model, cfg.depth, cfg.heads, cfg.ffn, n_classes,
                    cfg.local_init)


def mlm_step(cfg: Config, vocab_size: int, select: float | None = None):
    """A `Trainer` step: corrupt a batch by (eq-03-bert-rule), predict the selected characters."""
    sel = cfg.select if select is None else select

    def step(model: TinyBert, batch):
        ids, pad, pos, seg = batch
        maskable = ids >= len(SPECIALS)
        x, selected = bert_corrupt(ids, maskable, vocab_size, MASK, sel, cfg.split)
        loss = mlm_loss(model.mlm_logits(x, selected, pos, pad, seg), ids[selected])
        return loss, {}
    return step


def pretrain_mlm(task: CoupletTask, vocab, cfg: Config, seed: int = 0, select: float | None = None,
                 progress: bool = True, device=None):
    """Pre-train the tiny BERT with MLM on the task's unlabelled couplets. Returns (model, history)."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = new_bert(cfg, len(vocab))
    loader = ArrayLoader(encode_pairs(task.pretrain, vocab, cfg.line_len), cfg.pretrain_batch, seed=seed, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    warm = max(1, cfg.pretrain_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.pretrain_steps))))
    tr = Trainer(model, opt, mlm_step(cfg, len(vocab), select), device=dev, scheduler=sched, grad_clip=1.0,
                 log_every=max(1, cfg.pretrain_steps // 50), progress=progress,
                 desc=f"MLM pre-training ({select if select is not None else cfg.select:.0%} selected)")
    hist = tr.fit(loader, steps=cfg.pretrain_steps)
    return tr.model.eval(), hist


@torch.no_grad()
def mlm_accuracy(model: TinyBert, pairs: Sequence[tuple[str, str]], vocab, cfg: Config, seed: int = 0,
                 select: float | None = None) -> dict:
    """Accuracy and loss of the MLM head on the selected characters of held-out true couplets,
    with a fixed corruption (seed). Returns the corrupted inputs too, for `mlm_baselines`."""
    model.eval()
    dev = next(model.parameters()).device
    ids, pad, pos, seg = (t.to(dev) for t in encode_pairs(pairs, vocab, cfg.line_len))
    g = torch.Generator(device=dev).manual_seed(seed)
    x, sel = bert_corrupt(ids, ids >= len(SPECIALS), len(vocab), MASK, cfg.select if select is None else select,
                          cfg.split, generator=g)
    correct, loss, n = 0, 0.0, 0
    for i in range(0, len(ids), 256):
        b = slice(i, i + 256)
        s = sel[b]
        lg, tgt = model.mlm_logits(x[b], s, pos[b], pad[b], seg[b]), ids[b][s]
        correct += int((lg.argmax(-1) == tgt).sum())
        loss += float(F.cross_entropy(lg, tgt, reduction="sum"))
        n += int(s.sum())
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1), "n": n,
            "corrupted": x.cpu(), "selected": sel.cpu(), "ids": ids.cpu(), "pos": pos.cpu(), "seg": seg.cpu()}


def partner_counts(pairs: Sequence[tuple[str, str]], vocab) -> np.ndarray:
    """counts[a, b]: how often character a of one line stands at the same position as character
    b of the other line (both directions), over true couplets."""
    V = len(vocab)
    c = np.zeros((V, V), dtype=np.float32)
    for a, b in pairs:
        ea, eb = vocab.encode(a), vocab.encode(b)
        m = min(len(ea), len(eb))
        np.add.at(c, (ea[:m], eb[:m]), 1)
        np.add.at(c, (eb[:m], ea[:m]), 1)
    return c


def mlm_baselines(pretrain: Sequence[tuple[str, str]], mlm: dict, vocab) -> dict[str, float]:
    """Accuracy on the same selected characters of two count models fitted on the pre-training
    couplets: the most frequent character, and the character most often aligned with the one
    at the same position of the other line, as the corrupted input shows it."""
    s = [t for p in pretrain for line in p for t in vocab.encode(line)]
    uni = int(np.bincount(s, minlength=len(vocab)).argmax())
    best = partner_counts(pretrain, vocab).argmax(1)
    ids, x, sel, pos, seg = (mlm[k].numpy() for k in ("ids", "corrupted", "selected", "pos", "seg"))
    hits, n = 0, 0
    for r, c in zip(*np.nonzero(sel)):
        other = np.flatnonzero((pos[r] == pos[r, c]) & (seg[r] != seg[r, c]) & (ids[r] >= len(SPECIALS)))
        partner = x[r, other[0]] if len(other) else -1
        guess = best[partner] if partner >= len(SPECIALS) and partner != MASK else uni
        hits += int(guess == ids[r, c])
        n += 1
    return {"unigram": float((ids[sel] == uni).mean()), "partner": hits / max(n, 1)}


# ----------------------------------------------------------------------------- fine-tuning
def finetune_step(drop_rate: float, exact: bool = False):
    """A `Trainer` step on a batch (ids, pad, pos, seg, labels) or (ids, pad, labels): trim the
    padding, apply DropToken at `drop_rate` (never dropping [CLS] or [SEP]; the kept tokens
    keep their position and segment ids) and take the cross-entropy of the [CLS] logits."""
    def step(model: TinyBert, batch):
        if len(batch) == 3:
            ids, pad, y = batch
            pos = seg = None
        else:
            ids, pad, pos, seg, y = batch
        n = max(int((~pad).sum(1).max()), 1)
        ids, pad = ids[:, :n], pad[:, :n]
        ids, order, pad = drop_tokens(ids, pad, drop_rate, protect=(ids == CLS) | (ids == SEP), exact=exact)
        if pos is not None:
            pos, seg = pos[:, :n].gather(1, order), seg[:, :n].gather(1, order)
        else:
            pos = order
        return F.cross_entropy(model(ids, pos, pad, seg), y), {}
    return step


@torch.no_grad()
def accuracy(model: TinyBert, data: tuple, batch: int = 500) -> float:
    """Classification accuracy with every token (no DropToken at test time); `data` is
    (ids, pad, pos, seg, labels)."""
    model.eval()
    dev = next(model.parameters()).device
    ids, pad, pos, seg, y = data
    n = max(int((~pad).sum(1).max()), 1)
    hits = 0
    for i in range(0, len(ids), batch):
        b = slice(i, i + batch)
        out = model(ids[b, :n].to(dev), pos[b, :n].to(dev), pad[b, :n].to(dev), seg[b, :n].to(dev))
        hits += int((out.argmax(-1) == y[b].to(dev)).sum())
    return hits / len(ids)


@dataclass
class FinetuneResult:
    """One fine-tuning run: accuracies at the epoch of best validation accuracy, the (train,
    validation) accuracies of every epoch (train on the first `eval_train` examples) and the
    test accuracy after the last epoch."""

    correction: bool
    drop_rate: float
    seed: int
    best_epoch: int
    train: float
    validation: float
    test: float
    curve: list[tuple[float, float]]
    seconds: float
    test_last: float = float("nan")

    @property
    def gap(self) -> float:
        return self.train - self.validation


def finetune(state: dict | None, data: dict, cfg: Config, vocab_size: int, seed: int = 0,
             correction: bool = False, drop_rate: float = 0.0, select: float | None = None, epochs: int | None = None,
             progress: bool = False, device=None) -> FinetuneResult:
    """Fine-tune on the couplet task from a pre-trained state (None: from scratch), optionally
    after the embedding correction (eq-03-correction, applied to every row as in the post's
    snippet, [CLS] and [SEP] included; e_bar over the characters that random replacement draws;
    `select` is the pre-training selection rate, cfg.select by default) and with DropToken at
    `drop_rate`. `data[split] = (ids, pad, pos, seg, labels)`. Keeps the epoch with the best
    validation accuracy, as the post's baseline scripts do, and records every epoch."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = new_bert(cfg, vocab_size)
    if state is not None:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("cls_head")}, strict=False)
    if correction:
        if state is None:
            raise ValueError("finetune: the embedding correction needs a pre-trained state")
        sel = cfg.select if select is None else select
        model.tok.weight.data.copy_(corrected_embeddings(model.tok.weight, MASK, sel, cfg.split,
                                                         slice(len(SPECIALS), None)))
    model.to(dev)
    loader = ArrayLoader(data["train"], cfg.finetune_batch, seed=seed, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.finetune_lr, weight_decay=0.01)
    tr = Trainer(model, opt, finetune_step(drop_rate), device=dev, grad_clip=1.0, log_every=len(loader),
                 progress=progress, desc=f"fine-tune r={drop_rate:g}{' +fix' if correction else ''}")
    t0 = time.perf_counter()
    tr_eval = tuple(t[:cfg.eval_train] for t in data["train"])   # training accuracy on a fixed subset
    best, curve = None, []
    for ep in range(1, (epochs or cfg.finetune_epochs) + 1):
        tr.fit(loader, steps=ep * len(loader))
        acc = (accuracy(model, tr_eval), accuracy(model, data["validation"]))
        curve.append(acc)
        if best is None or acc[1] > best[1][1]:
            best = (ep, acc, {k: v.detach().clone() for k, v in model.state_dict().items()})
    test_last = accuracy(model, data["test"])
    ep, acc, st = best
    model.load_state_dict(st)
    return FinetuneResult(correction, drop_rate, seed, ep, acc[0], acc[1], accuracy(model, data["test"]), curve,
                          time.perf_counter() - t0, test_last)


def task_tensors(task: CoupletTask, vocab, cfg: Config) -> dict:
    """`data[split] = (ids, pad, pos, seg, labels)` for `finetune`."""
    return {s: (*encode_pairs(task.pairs[s], vocab, cfg.line_len), torch.tensor(task.labels[s]))
            for s in ("train", "validation", "test")}


def bag_of_tokens(pairs: Sequence[tuple[str, str]], vocab, line_len: int | None = None) -> np.ndarray:
    """Which characters occur in each line (first `line_len`, what the model sees), the two
    lines side by side: a bag-of-tokens baseline for logistic regression."""
    V = len(vocab)
    out = np.zeros((len(pairs), 2 * V), dtype=np.float32)
    for i, (a, b) in enumerate(pairs):
        out[i, vocab.encode(a)[:line_len]] = 1.0
        out[i, V + np.asarray(vocab.encode(b)[:line_len], dtype=np.int64)] = 1.0
    return out


def partner_score(pairs: Sequence[tuple[str, str]], counts: np.ndarray, vocab, line_len: int) -> np.ndarray:
    """Mean pointwise mutual information of the aligned character pairs of each couplet, from
    the pre-training counts (`partner_counts`, add-one smoothed): the strongest simple pair
    baseline we know, a count model of which characters face each other."""
    c = counts + 1.0
    logp = np.log(c / c.sum())
    row = np.log(c.sum(1) / c.sum())
    out = np.zeros((len(pairs), 1), dtype=np.float32)
    for i, (a, b) in enumerate(pairs):
        ea, eb = vocab.encode(a)[:line_len], vocab.encode(b)[:line_len]
        m = min(len(ea), len(eb))
        if m:
            ia, ib = np.asarray(ea[:m]), np.asarray(eb[:m])
            out[i, 0] = float((logp[ia, ib] - row[ia] - row[ib]).mean())
    return out


def baselines(setup: "TextSetup", cfg: Config) -> dict[str, float]:
    """Test accuracy of the majority class, of logistic regression on the bag of tokens, and of
    logistic regression on the aligned-pair score (fitted on the task's training pairs)."""
    from ..metrics import linear_probe

    task, vocab = setup.task, setup.vocab
    y = {s: task.labels[s] for s in ("train", "test")}
    bow = {s: bag_of_tokens(task.pairs[s], vocab, cfg.line_len) for s in y}
    counts = partner_counts(task.pretrain, vocab)
    pmi = {s: partner_score(task.pairs[s], counts, vocab, cfg.line_len) for s in y}
    return {"majority": max(task.counts("test")) / len(y["test"]),
            "bag of tokens": linear_probe(bow["train"], y["train"], bow["test"], y["test"], weight_decay=1e-2),
            "aligned pairs": linear_probe(pmi["train"], y["train"], pmi["test"], y["test"])}


# ----------------------------------------------------------------------------- experiment drivers
@dataclass
class TextSetup:
    """The couplet task, its vocabulary and its tensors."""

    task: CoupletTask
    vocab: object
    data: dict

    @property
    def n_classes(self) -> int:
        return 2


def text_setup(cfg: Config) -> TextSetup:
    task = couplet_task(cfg)
    vocab = CharTable.build([line for p in task.pretrain for line in p], cfg.vocab_chars)
    return TextSetup(task, vocab, task_tensors(task, vocab, cfg))


def _progress(iterable, total: int, desc: str, on: bool):
    if not on:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _finetune_job(spec: dict) -> FinetuneResult:
    """One fine-tuning run (top level, so that spawned worker processes can run it)."""
    if spec["workers"] > 1:
        torch.set_num_threads(worker_threads(spec["workers"]))
    return finetune(spec["state"], spec["data"], spec["cfg"], spec["vocab_size"], seed=spec["seed"],
                    correction=spec["correction"], drop_rate=spec["drop_rate"], select=spec["select"],
                    epochs=spec["epochs"])


def _run_finetunes(specs: list[dict], setup: TextSetup, cfg: Config, desc: str) -> list[FinetuneResult]:
    """`finetune` for every spec, in cfg.workers processes side by side (each seeds itself, so
    the runs do not depend on where they run)."""
    common = dict(data=setup.data, cfg=cfg, vocab_size=len(setup.vocab), workers=cfg.workers, select=None,
                  correction=False, drop_rate=0.0, epochs=None)
    return run_jobs(_finetune_job, [{**common, **s} for s in specs], workers=cfg.workers, desc=desc)


def correction_runs(state: dict, setup: TextSetup, cfg: Config, seed: int = 0, select: float | None = None,
                    scratch: bool = True) -> dict[str, list[FinetuneResult]]:
    """D11: fine-tune from the same pre-trained state with and without the embedding correction
    (for a model pre-trained at selection rate `select`), seeds seed..seed+cfg.seeds-1: the same
    seed gives both runs the same head and the same batches, a paired design. With `scratch`,
    also the same model from scratch, the equal-budget baseline without pre-training."""
    names = ("base", "corrected", "scratch") if scratch else ("base", "corrected")
    specs = [dict(name=name, seed=seed + s, state=None if name == "scratch" else state,
                  correction=name == "corrected", select=select) for s in range(cfg.seeds) for name in names]
    results = _run_finetunes([{k: v for k, v in sp.items() if k != "name"} for sp in specs], setup, cfg,
                             "fine-tuning (D11)")
    out: dict[str, list[FinetuneResult]] = {name: [] for name in names}
    for sp, r in zip(specs, results):
        out[sp["name"]].append(r)
    return out


def droptoken_runs(state: dict, setup: TextSetup, cfg: Config, seed: int = 0,
                   base: Sequence[FinetuneResult] = ()) -> dict:
    """D12: fine-tune at every DropToken rate, seeds seed..seed+cfg.sweep_seeds-1, plus the
    underfitting check: the largest rate again at twice the epochs (key ``"long"``). Runs at
    rate 0 are taken from `base` (the uncorrected runs of D11, the same setting) when given."""
    seeds = [seed + s for s in range(cfg.sweep_seeds)]
    reuse = {r.seed: r for r in base if r.drop_rate == 0 and not r.correction}
    out: dict = {r: [reuse[s] for s in seeds if r == 0 and s in reuse] for r in cfg.drop_rates}
    specs = [dict(seed=s, state=state, drop_rate=r) for r in cfg.drop_rates for s in seeds
             if not (r == 0 and s in reuse)]
    r_max = max(cfg.drop_rates)
    specs += [dict(seed=s, state=state, drop_rate=r_max, epochs=2 * cfg.finetune_epochs, long=True) for s in seeds]
    out["long"] = []
    jobs = [{k: v for k, v in sp.items() if k != "long"} for sp in specs]
    for sp, res in zip(specs, _run_finetunes(jobs, setup, cfg, "fine-tuning (DropToken)")):
        out["long" if sp.get("long") else sp["drop_rate"]].append(res)
    for r in out:
        out[r].sort(key=lambda x: x.seed)
    return out
