"""Overhead of dlbook's Trainer over a hand-written loop.

Trains the same MLP on the same MNIST images with both loops, alternating (so drifts in
machine load hit both), and prints the median ratio trainer time / raw time as the last line:

    python benchmarks/trainer_overhead.py [--rounds 7] [--steps 300] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from dlbook import data
from dlbook.config import device as pick_device, seed_everything
from dlbook.train import ArrayLoader, Trainer


def make(dev):
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10)).to(dev)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def step_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def raw_loop(model, opt, loader, steps, dev):
    """What one writes by hand: the same batches, loss logged every step."""
    losses, step, epoch = [], 0, 0
    model.train()
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step >= steps:
                break
        epoch += 1
    return losses


def timed(fn, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    dev = pick_device(a.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.OfflineWarning)
        d = data.load("mnist", "train", limit=4096)
    x, y = data.to_float(d.x), torch.from_numpy(d.y)
    loader = ArrayLoader((x, y), batch_size=a.batch, seed=0)
    print(f"device {dev}, {a.steps} steps of batch {a.batch}, {a.rounds} rounds, data: {d.source}")

    def run_trainer():
        model, opt = make(dev)
        Trainer(model, opt, step_fn, device=dev, amp=False, progress=True, desc="trainer").fit(loader, a.steps)

    def run_raw():
        model, opt = make(dev)
        raw_loop(model, opt, loader, a.steps, dev)

    run_trainer(), run_raw()  # warm-up
    ratios = []
    for r in range(a.rounds):
        first, second = (run_trainer, run_raw) if r % 2 == 0 else (run_raw, run_trainer)
        t1, t2 = timed(first, dev), timed(second, dev)
        t_tr, t_raw = (t1, t2) if first is run_trainer else (t2, t1)
        ratios.append(t_tr / t_raw)
        print(f"round {r}: trainer {t_tr:.3f} s, raw {t_raw:.3f} s, ratio {t_tr / t_raw:.4f}")
    print(f"overhead ratio: {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
