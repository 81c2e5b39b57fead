"""sdeint / odeint on CUDA: device placement and no host syncs inside the time loop."""

import warnings

import pytest
import torch

from probgen.sde import odeint, sdeint

pytestmark = pytest.mark.gpu


class NeuralSDE(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, d=4):
        super().__init__()
        self.drift = torch.nn.Sequential(
            torch.nn.Linear(d, 64), torch.nn.Tanh(), torch.nn.Linear(64, d)
        )
        self.diffusion = torch.nn.Sequential(
            torch.nn.Linear(d, 64), torch.nn.Sigmoid(), torch.nn.Linear(64, d)
        )

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return self.diffusion(y)


def count_syncs(fn):
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_sync_count_does_not_grow_with_steps(method):
    sde = NeuralSDE().cuda()
    y0 = torch.randn(64, 4, device="cuda")
    ts = torch.tensor([0.0, 0.5, 1.0], device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    few = count_syncs(lambda: sdeint(sde, y0, ts, method=method, dt=0.1, generator=gen))
    many = count_syncs(lambda: sdeint(sde, y0, ts, method=method, dt=0.001, generator=gen))
    assert many == few, (
        f"host syncs grow with the number of steps: {few} at 10 steps, {many} at 1000"
    )


def test_odeint_sync_count_does_not_grow_with_steps():
    y0 = torch.randn(64, 4, device="cuda")
    few = count_syncs(lambda: odeint(lambda t, y: -y, y0, [0.0, 1.0], method="rk4", dt=0.1))
    many = count_syncs(lambda: odeint(lambda t, y: -y, y0, [0.0, 1.0], method="rk4", dt=0.001))
    assert many == few


def test_outputs_follow_device_and_dtype_and_generator():
    sde = NeuralSDE().cuda().double()
    y0 = torch.randn(16, 4, device="cuda", dtype=torch.float64)
    a = sdeint(
        sde, y0, [0.0, 1.0], dt=0.01, generator=torch.Generator(device="cuda").manual_seed(1)
    )
    b = sdeint(
        sde, y0, [0.0, 1.0], dt=0.01, generator=torch.Generator(device="cuda").manual_seed(1)
    )
    assert a.device.type == "cuda" and a.dtype == torch.float64
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="generator"):
        sdeint(sde, y0, [0.0, 1.0], dt=0.01, generator=torch.Generator().manual_seed(1))
