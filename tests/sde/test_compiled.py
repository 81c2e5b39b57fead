"""sdeint / odeint with compile=True: equal to the eager path to float tolerance, compiled once.

torch.compile (inductor, a C++ compile) takes tens of seconds to minutes on a busy 2-core CPU,
so the tests that compile are marked slow. The chunking around the compiled calls (whole
chunks between outputs, eager remainders, interpolated outputs) is tested by default with an
eager stand-in for the compiled chunk.
"""

import pytest
import torch
import torchsde
from torch import nn

from probgen.sde import compiled, odeint, sdeint

F64 = torch.float64


class NeuralSDE(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, d=3, hidden=16):
        super().__init__()
        torch.manual_seed(0)
        self.drift = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d))
        self.diffusion = nn.Sequential(
            nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d), nn.Sigmoid()
        )

    def f(self, t, y):
        return self.drift(y) * torch.cos(t)

    def g(self, t, y):
        return self.diffusion(y)


def test_canonical_steps_merges_rounding_only():
    hs = [0.1, 0.1 + 1e-17, 0.1 * (1 + 1e-9), 0.05]
    assert compiled.canonical_steps(hs) == [0.1, 0.1, 0.1 * (1 + 1e-9), 0.05]


@pytest.mark.parametrize("interpolate", [False, True])
def test_chunking_around_the_compiled_calls_equals_the_eager_loop(monkeypatch, interpolate):
    # stand-in for torch.compile: the chunk runs the same steps eagerly, so the outputs must be
    # the eager loop's exactly; the count shows that whole chunks were used
    calls = []

    def fake_cached_chunk(owner, key, make_step):
        step = make_step()

        def fn(y, nodes, hs, noise):
            calls.append(len(hs))
            for j in range(len(hs)):
                y = step(tuple(nodes[j].unbind(0)), hs[j], y, noise[j])
            return y

        return fn

    monkeypatch.setattr(compiled, "cached_chunk", fake_cached_chunk)
    monkeypatch.setattr(compiled, "DEFAULT_CHUNK", 4)
    sde = NeuralSDE().to(F64)
    y0 = torch.randn(5, 3, dtype=F64)
    ts = torch.tensor([0.0, 0.3, 0.35, 1.0], dtype=F64)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(5, 3), dtype=F64, entropy=1)
    kw = {"method": "euler", "dt": 0.03, "bm": bm, "interpolate": interpolate}
    eager = sdeint(sde, y0, ts, **kw)
    ours = sdeint(sde, y0, ts, compile=True, **kw)
    torch.testing.assert_close(ours, eager, rtol=1e-14, atol=1e-14)
    assert calls and set(calls) == {4}


def test_compile_rejects_delegated_methods():
    sde = NeuralSDE()
    with pytest.raises(ValueError, match="compile=True"):
        sdeint(sde, torch.zeros(2, 3), [0.0, 1.0], method="srk", dt=0.1, compile=True)


@pytest.mark.slow
def test_sdeint_compile_matches_eager_forward_and_backward_and_is_cached():
    compiled.clear_cache()
    torch._dynamo.reset()
    sde = NeuralSDE()
    y0 = torch.randn(8, 3)
    ts = torch.tensor([0.0, 0.5, 1.0])

    def solve(**kw):
        return sdeint(
            sde, y0, ts, method="euler", dt=1 / 23, generator=torch.Generator().manual_seed(3), **kw
        )

    with torch.no_grad():
        torch.testing.assert_close(solve(compile=True), solve(), rtol=1e-5, atol=1e-5)
    params = list(sde.parameters())
    g_eager = torch.autograd.grad(solve()[-1].square().mean(), params)
    g_comp = torch.autograd.grad(solve(compile=True)[-1].square().mean(), params)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    with torch.no_grad():  # a new initial state of the same shape: no new compilation
        sdeint(sde, y0 + 1.0, ts, method="euler", dt=1 / 23, compile=True)
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames


@pytest.mark.slow
def test_odeint_compile_matches_eager_rk4():
    compiled.clear_cache()
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))

    def field(t, y):
        return net(y) - y

    y0 = torch.randn(8, 3)
    ts = torch.linspace(0.0, 1.0, 4)
    with torch.no_grad():
        eager = odeint(field, y0, ts, method="rk4", dt=0.02)
        ours = odeint(field, y0, ts, method="rk4", dt=0.02, compile=True)
    torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-5)
