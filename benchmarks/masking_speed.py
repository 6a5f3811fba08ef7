"""Chapter 03's speed claims, measured as ratios in one run.

- D8: forward + backward of the small encoder (width 128, 4 layers, 256 tokens, batch 16) on all
  tokens over the same on 25 % of them (MAE's encoder sees only the visible patches): > 2.
- D9: one DropToken fine-tuning step at drop rate 0.5 over the same at rate 0: < 0.7.

Candidates alternate step by step, so that drifts in machine load hit all of them; the last line
prints the ratios:

    python benchmarks/masking_speed.py [--steps 30] [--threads N]
"""
from __future__ import annotations

import argparse
import dataclasses

from dlbook import masking
from dlbook.config import threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    n = threads(a.threads)
    cfg = dataclasses.replace(masking.config("cpu"), time_steps=a.steps)
    print(f"{n} threads; encoder width {cfg.time_d}, {cfg.time_depth} layers, {cfg.time_n} tokens, "
          f"batch {cfg.time_batch}; median of {cfg.time_steps} steps after {cfg.time_warmup} warm-up")
    enc = masking.time_encoder(cfg)
    print(f"encoder fwd+bwd: all tokens {enc[1.0] * 1e3:.1f} ms, 25 % {enc[0.25] * 1e3:.1f} ms")
    rates = (0.0, 0.1, 0.25, 0.5)
    dt = masking.time_droptoken(cfg, rates)
    print("DropToken step: " + ", ".join(f"r={r:g} {dt[r] * 1e3:.1f} ms" for r in rates))
    print(f"ratios: encoder all/25% {enc[1.0] / enc[0.25]:.3f} (D8 > 2); "
          f"DropToken t(0.5)/t(0) {dt[0.5] / dt[0.0]:.3f} (D9 < 0.7)")


if __name__ == "__main__":
    main()
