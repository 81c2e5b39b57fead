"""Closed-form approximation error of the Markov fBM at the old and new default (K, gamma_max).

``MarkovFBM.relative_error`` is the time-averaged squared error of the K-term approximation
over [0, T] divided by that of fBM itself (0 is exact, 1 is B_hat = 0); ``sum omega`` is
v0 / sigma, which sets rho = v0^2 h / s^2 of the Girsanov family's warning; ``max |omega|``
shows how much the weights cancel (float32 paths lose digits when it is large). No training,
no randomness: each row is a closed form, milliseconds of CPU.

    python benchmarks/fractional_defaults.py
"""

from __future__ import annotations

import torch

from probgen.fractional.model import DEFAULT_N_OU, default_gamma_max
from probgen.sde import MarkovFBM

HURSTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def row(label: str, k: int, gamma_max: float, horizon: float) -> None:
    ms = [MarkovFBM(h, k, gamma_max, horizon, "type1", dtype=torch.float64) for h in HURSTS]
    err = " | ".join(f"{float(m.relative_error):.3f}" for m in ms)
    sums = f"{float(ms[0].omegas.sum()):.2f} .. {float(ms[-1].omegas.sum()):.2f}"
    big = max(float(m.omegas.abs().max()) for m in ms)
    print(f"| {label} | {horizon:g} | {k} | {gamma_max:g} | {1 / gamma_max:.3g} | {err} | {sums} | {big:.3g} |")


def main() -> None:
    torch.set_num_threads(1)
    print("| defaults | T | K | gamma_max | gamma_min | " + " | ".join(f"H={h}" for h in HURSTS)
          + " | sum omega (H=0.2 .. 0.8) | max abs omega |")
    print("|---" * (7 + len(HURSTS)) + "|")
    for horizon in (1.0, 2.0, 5.0):
        row("old FractionalSDE", 5, 20.0, horizon)
        row("new FractionalSDE", DEFAULT_N_OU, default_gamma_max(horizon), horizon)
    row("old LatentFractionalSDE", 5, 10.0, 1.1)
    row("new LatentFractionalSDE", DEFAULT_N_OU, default_gamma_max(1.1), 1.1)
    for k, g in ((12, 20.0), (10, 40.0), (20, 1000.0)):  # what a literal 5 % at H = 0.8 would need
        row("for comparison", k, g, 2.0)


if __name__ == "__main__":
    main()
