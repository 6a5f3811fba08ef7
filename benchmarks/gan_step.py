"""Speed of the GAN toolkit (dlbook.gan_loop, dlbook.gan_runs), measured in one run on the same model and data.

1. The toolkit's critic + generator step (``train_gan``) over a hand-written PyTorch loop that
   does the same work (same nets, data, batches, WGAN-div loss, Adam), alternating the two so
   that drifts in machine load hit both; target <= 1.03.
2. A WGAN-GP critic step (LayerNorm critic, gradient penalty on interpolates: a double
   backward) over a WGAN-SN critic step (spectrally normalised critic, no penalty).
3. Images per second of the image loop under ``torchrun`` on the CPU with one process (all
   cores) and with two processes (the cores shared out), gloo on 127.0.0.1.

    python benchmarks/gan_step.py [--rounds 5] [--steps 40] [--device cpu] [--no-torchrun]

The nets are chapter 06's cpu setting (MNIST 32x32, 16 to 64 channels, batch 64). The last
line holds the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch

from dlbook import gan, gan_runs as gr
from dlbook.config import device as pick_device, threads
from dlbook.gan_loop import adam

CFG = gr.ImageConfig()


def data() -> gr.ImageData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a smaller offline copy is fine for timing
        return gr.load_image_data(CFG)


def nets(norm: str = "bn", seed: int = 0):
    torch.manual_seed(seed)
    G = gan.ConvGenerator(CFG.z_dim, CFG.img_size, 1, CFG.base, CFG.max_ch, CFG.kernel)
    T = gan.ConvCritic(CFG.img_size, 1, CFG.base, CFG.max_ch, CFG.kernel, norm)
    return G, T


def toolkit(x: gr.ImageData, steps: int, dev) -> float:
    G, T = nets()
    cfg = gr.LoopConfig(steps=steps, batch=CFG.batch, z_dim=CFG.z_dim, log_every=10, eval_every=steps,
                        progress=False)
    t0 = time.perf_counter()
    gr.train_gan(G, T, gan.WGANDiv(2.0, 6.0, "pool"), x.sample, cfg, seed=0, device=dev)
    return time.perf_counter() - t0


def by_hand(x: gr.ImageData, steps: int, dev) -> float:
    """What one writes by hand: WGAN-div with the penalty on the real and fake points, one
    critic step per generator step, the same Adam as the toolkit, the same batches; losses
    logged every 10 steps."""
    G, T = nets()
    G.to(dev).train()
    T.to(dev).train()
    opt_g = adam(G, gr.LoopConfig(lr=CFG.lr, betas=CFG.betas), dev)  # the toolkit's optimiser (fused Adam)
    opt_t = adam(T, gr.LoopConfig(lr=CFG.lr, betas=CFG.betas), dev)
    t0 = time.perf_counter()
    log = []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        xr = x.sample(CFG.batch, g).to(dev)
        z = torch.randn(CFG.batch, CFG.z_dim, generator=g).to(dev)
        with torch.no_grad():
            xf = G(z)
        pts = torch.cat([xr, xf]).requires_grad_(True)
        (grad,) = torch.autograd.grad(T(pts).sum(), pts, create_graph=True)
        pen = 2.0 * grad.pow(2).flatten(1).sum(1).pow(3).mean()
        lt = -(T(xr).mean() - T(xf).mean()) + pen
        opt_t.zero_grad(set_to_none=True)
        lt.backward()
        opt_t.step()
        for p in T.parameters():
            p.requires_grad_(False)
        lg = -T(G(torch.randn(CFG.batch, CFG.z_dim, generator=g).to(dev))).mean()
        opt_g.zero_grad(set_to_none=True)
        lg.backward()
        opt_g.step()
        for p in T.parameters():
            p.requires_grad_(True)
        if (step + 1) % 10 == 0:
            log.append((float(lt.detach()), float(lg.detach())))
    return time.perf_counter() - t0


def critic_steps(x: gr.ImageData, loss: gan.GANLoss, norm: str, steps: int, dev) -> float:
    G, T = nets(norm)
    G.to(dev)
    T.to(dev).train()
    opt = torch.optim.Adam(T.parameters(), CFG.lr, betas=CFG.betas)
    g = torch.Generator().manual_seed(0)
    batches = [(x.sample(CFG.batch, g).to(dev), torch.randn(CFG.batch, CFG.z_dim, generator=g).to(dev))
               for _ in range(steps)]
    with torch.no_grad():
        fakes = [G(z) for _, z in batches]
    t0 = time.perf_counter()
    for (xr, _), xf in zip(batches, fakes):
        lt, _ = loss.critic_loss(T, xr, xf)
        opt.zero_grad(set_to_none=True)
        lt.backward()
        opt.step()
    return time.perf_counter() - t0


def worker(steps: int) -> None:
    """One torchrun process: the image loop for ``steps`` generator steps; rank 0 prints images/s."""
    procs = gr.init_processes()
    if procs.world == 1:
        threads()  # one process gets every core
    x = data()
    G, T = nets()
    cfg = gr.LoopConfig(steps=steps, batch=CFG.batch, z_dim=CFG.z_dim, log_every=10, eval_every=steps,
                        progress=False)
    gr.train_gan(G, T, gan.WGANDiv(2.0, 6.0, "pool"), x.sample, replace_steps(cfg, 2), seed=0, device="cpu")
    t0 = time.perf_counter()
    run = gr.train_gan(G, T, gan.WGANDiv(2.0, 6.0, "pool"), x.sample, cfg, seed=1, device="cpu")
    wall = time.perf_counter() - t0
    if procs.main:
        print(f"IMAGES_PER_S {steps * CFG.batch / wall:.1f} processes {procs.world} threads "
              f"{torch.get_num_threads()} loop {run.seconds:.2f}s", flush=True)


def replace_steps(cfg, steps):
    from dataclasses import replace

    return replace(cfg, steps=steps, eval_every=steps)


def images_per_second(nproc: int, steps: int) -> float:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, "--worker", "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode:
        raise RuntimeError(f"torchrun with {nproc} processes failed:\n{out.stderr[-2000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("IMAGES_PER_S")][0]
    print(f"  torchrun --nproc_per_node={nproc}: {line.split(maxsplit=1)[1]}")
    return float(line.split()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-torchrun", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.steps)
    dev = pick_device(a.device)
    x = data()
    print(f"device {dev}, {torch.get_num_threads()} threads; MNIST 32x32, nets base {CFG.base} max {CFG.max_ch}, "
          f"batch {CFG.batch}; {a.steps} steps x {a.rounds} rounds")
    toolkit(x, 3, dev), by_hand(x, 3, dev)  # warm-up (first Adam step imports, allocator)
    tk, hd = [], []
    for i in range(a.rounds):  # alternate which goes first, so that neither profits from the order
        if i % 2:
            hd.append(by_hand(x, a.steps, dev))
        tk.append(toolkit(x, a.steps, dev))
        if not i % 2:
            hd.append(by_hand(x, a.steps, dev))
    r_step = statistics.median(t / h for t, h in zip(tk, hd))
    print(f"  critic+generator step: toolkit {1e3 * statistics.median(tk) / a.steps:.1f} ms, by hand "
          f"{1e3 * statistics.median(hd) / a.steps:.1f} ms; median ratio {r_step:.3f} (target <= 1.03)")
    gp, sn = [], []
    for i in range(a.rounds):
        if i % 2:
            sn.append(critic_steps(x, gan.WGAN(), "sn", a.steps, dev))
        gp.append(critic_steps(x, gan.WGANGP(10.0, "interp"), "ln", a.steps, dev))
        if not i % 2:
            sn.append(critic_steps(x, gan.WGAN(), "sn", a.steps, dev))
    r_gp = statistics.median(g / s for g, s in zip(gp, sn))
    print(f"  critic step: WGAN-GP (LayerNorm, penalty) {1e3 * statistics.median(gp) / a.steps:.1f} ms, WGAN-SN "
          f"{1e3 * statistics.median(sn) / a.steps:.1f} ms; median ratio {r_gp:.2f}")
    tail = ""
    if not a.no_torchrun:
        one, two = images_per_second(1, a.steps), images_per_second(2, a.steps)
        tail = f"; images/s 1 process {one:.0f}, 2 processes {two:.0f} (ratio {two / one:.2f})"
    print(f"ratios: toolkit/hand-written step {r_step:.3f}; WGAN-GP/SN critic step {r_gp:.2f}{tail}")


if __name__ == "__main__":
    main()
