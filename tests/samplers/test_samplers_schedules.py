"""Cyclical and polynomial step-size schedules."""

import io
import itertools
import math

import pytest
import torch

from probgen.samplers import (
    SGLD,
    CyclicalLR,
    PolynomialDecayLR,
    cyclical_phase,
    cyclical_schedule,
    polynomial_schedule,
)


def test_cyclical_schedule_closed_form_points():
    K, M, a0 = 100, 4, 0.2  # cycle length ceil(100/4) = 25
    assert cyclical_schedule(0, K, M, a0) == pytest.approx(a0)
    assert cyclical_schedule(25, K, M, a0) == pytest.approx(a0)  # restart
    # r = 12.5/25 would be a0/2; at k=5: r = 0.2
    assert cyclical_schedule(5, K, M, a0) == pytest.approx(a0 / 2 * (math.cos(math.pi * 0.2) + 1))
    assert cyclical_schedule(24, K, M, a0) == pytest.approx(
        a0 / 2 * (math.cos(math.pi * 24 / 25) + 1)
    )
    values = [cyclical_schedule(k, K, M, a0) for k in range(25)]
    assert all(x > y for x, y in itertools.pairwise(values))  # decreasing within a cycle


def test_cyclical_phase():
    K, M = 100, 4
    assert cyclical_phase(0, K, M, 0.8) == (0, False)
    assert cyclical_phase(19, K, M, 0.8) == (0, False)  # 19/25 = 0.76 < 0.8
    assert cyclical_phase(20, K, M, 0.8) == (0, True)  # 20/25 = 0.8
    assert cyclical_phase(26, K, M, 0.8) == (1, False)
    assert sum(cyclical_phase(k, K, M, 0.8)[1] for k in range(K)) == 4 * 5


def test_polynomial_schedule():
    assert polynomial_schedule(0, 1.0, 10.0, 0.55) == pytest.approx(10.0**-0.55)
    assert polynomial_schedule(90, 2.0, 10.0, 1.0) == pytest.approx(2.0 / 100.0)


def test_cyclical_lr_drives_sgld_lr_and_noise():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = SGLD([w], lr=0.1, num_data=10, temperature=1.0)
    sched = CyclicalLR(opt, total_steps=20, num_cycles=2, exploration_fraction=0.5)
    lrs, temps, sampling = [], [], []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        temps.append(opt.param_groups[0]["temperature"])
        sampling.append(sched.sampling)
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        sched.step()
    assert lrs == pytest.approx([cyclical_schedule(k, 20, 2, 0.1) for k in range(20)])
    assert sampling == [cyclical_phase(k, 20, 2, 0.5)[1] for k in range(20)]
    assert temps == [1.0 if s else 0.0 for s in sampling]  # noise only when sampling
    # scheduler state round-trips (plain Python types)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert sd["last_epoch"] == 20 and sd["num_cycles"] == 2


def test_polynomial_decay_lr():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = SGLD([w], lr=0.5, num_data=1)
    sched = PolynomialDecayLR(opt, b=10.0, gamma=0.6)
    got = []
    for _ in range(5):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx([0.5 * (1 + t / 10) ** -0.6 for t in range(5)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_cycles"):
        cyclical_schedule(0, 10, 20, 0.1)
    with pytest.raises(ValueError, match="lr0"):
        cyclical_schedule(0, 10, 2, -0.1)
    with pytest.raises(ValueError, match="exploration_fraction"):
        cyclical_phase(0, 10, 2, 1.5)
    with pytest.raises(TypeError, match="step"):
        cyclical_schedule(0.5, 10, 2, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        polynomial_schedule(0, 1.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="b"):
        polynomial_schedule(0, 1.0, 0.0, 0.5)


def test_cyclical_lr_resumes_from_state_dicts():
    def make():
        w = torch.nn.Parameter(torch.ones(2))
        opt = SGLD([w], lr=0.1, num_data=10, generator=torch.Generator().manual_seed(0))
        return w, opt, CyclicalLR(opt, total_steps=30, num_cycles=3, exploration_fraction=0.6)

    def run(w, opt, sched, steps):
        for _ in range(steps):
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
            sched.step()

    w, opt, sched = make()
    run(w, opt, sched, 7)
    buf = io.BytesIO()
    torch.save({"w": w.detach(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    run(w, opt, sched, 11)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    w2, opt2, sched2 = make()
    with torch.no_grad():
        w2.copy_(ckpt["w"])
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    run(w2, opt2, sched2, 11)
    assert torch.equal(w, w2)
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    assert opt.param_groups[0]["temperature"] == opt2.param_groups[0]["temperature"]
