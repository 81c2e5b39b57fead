"""Conditional fields, classifier-free guidance and the U-Net."""

import math

import pytest
import torch

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants import (
    ConditionEmbedding,
    GaussianMixtureFields,
    Interpolant,
    StochasticInterpolant,
    TimeMLP,
    UNet,
    generate,
    guided_fields,
    standard_normal,
)

MEANS = torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=torch.float64)


def exact_conditional_fields():
    """Closed-form b(t, x | y) for a two-class Gaussian target and b(t, x | null) for the mixture."""
    I = Interpolant("one_sided_linear", "zero")
    base = standard_normal(2)
    per_class = [GaussianMixtureFields(I, base, GaussianMixture(MEANS[k : k + 1], stds=[0.5])) for k in range(2)]
    mixture = GaussianMixtureFields(I, base, GaussianMixture(MEANS, stds=[0.5, 0.5]))
    calls = []

    def fields(t, x, cond, drop):
        calls.append(x.shape[0])
        b = mixture.velocity(t, x)
        if cond is not None:
            bc = torch.where((cond == 0)[:, None], per_class[0].velocity(t, x), per_class[1].velocity(t, x))
            b = bc if drop is None else torch.where(drop[:, None], b, bc)
        return {"b": b}

    return fields, mixture, per_class, calls


def test_guidance_weights_zero_and_one_are_the_unconditional_and_conditional_fields():
    fields, mixture, per_class, calls = exact_conditional_fields()
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((6,), 0.4, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    torch.testing.assert_close(guided_fields(fields, y, 0.0)(t, x)["b"], mixture.velocity(t, x), rtol=0, atol=0)
    cond = torch.where((y == 0)[:, None], per_class[0].velocity(t, x), per_class[1].velocity(t, x))
    torch.testing.assert_close(guided_fields(fields, y, 1.0)(t, x)["b"], cond, rtol=0, atol=0)
    calls.clear()
    b3 = guided_fields(fields, y, 3.0)(t, x)["b"]
    assert calls == [12]  # one call on the doubled batch
    torch.testing.assert_close(b3, 3 * cond - 2 * mixture.velocity(t, x))
    with pytest.raises(ValueError, match="guidance weight"):
        guided_fields(fields, y, -1.0)


def test_guided_flow_with_exact_fields_samples_the_class():
    """w = 1 transports N(0, I) to the class-k Gaussian exactly; w = 0 to the two-class mixture."""
    fields, *_ = exact_conditional_fields()
    n = 4000
    x0 = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.ones(n, dtype=torch.long)
    x1 = generate(lambda t, x: guided_fields(fields, y, 1.0)(t, x)["b"], x0, steps=20)
    se = 0.5 / math.sqrt(n)
    assert ((x1.mean(0) - MEANS[1]).abs() < 4 * se + 1e-3).all()
    x1u = generate(lambda t, x: guided_fields(fields, y, 0.0)(t, x)["b"], x0, steps=20)
    frac = float((x1u[:, 0] > 0).double().mean())
    assert abs(frac - 0.5) < 4 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("net_kind", ["mlp", "unet"])
def test_networks_condition_and_null_embedding(net_kind):
    torch.manual_seed(0)
    if net_kind == "mlp":
        net = TimeMLP(16, 16, [32], num_classes=3)
    else:
        net = UNet((1, 4, 4), 1, channels=8, attention_resolutions=(2,), num_classes=3)
        torch.nn.init.normal_(net.out.weight, std=0.1)  # the output layer starts at zero
    x, t = torch.randn(4, 16), torch.rand(4)
    y = torch.tensor([0, 1, 2, 0])
    out = net(t, x, y)
    assert out.shape == (4, 16)
    dropped = net(t, x, y, torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(dropped, net(t, x, None))  # drop everything == no condition
    assert not torch.allclose(out, dropped)
    # each sample's output depends on its own row only (needed by the per-sample divergence)
    torch.testing.assert_close(net(t[:2], x[:2], y[:2]), out[:2])


def test_unet_shapes_and_validation():
    net = UNet((3, 8, 8), 6, channels=8, channel_mults=(1, 2), attention_resolutions=(4,))
    assert net(torch.rand(2), torch.randn(2, 3 * 64)).shape == (2, 6 * 64)
    assert torch.equal(net(torch.rand(2), torch.randn(2, 3, 8, 8)), torch.zeros(2, 6 * 64))  # zero-initialised output
    with pytest.raises(ValueError, match="divisible"):
        UNet((1, 6, 6), channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="image_shape"):
        UNet((8, 8))
    with pytest.raises(ValueError, match="exactly one"):
        ConditionEmbedding(8, num_classes=3, cond_dim=2)


def small(**kw):
    args = dict(dim=16, hidden_dims=[32], time_frequencies=1, nll_steps=3, val_nll_samples=8, sample_steps=3,
                plot_every_n_val=0, lr_schedule="constant", ema_decay=0.0, nll_divergence="exact")
    args.update(kw)
    return StochasticInterpolant(**args)


@pytest.mark.parametrize("kw", [dict(num_classes=3), dict(num_classes=3, network="unet", image_shape=[1, 4, 4], unet_channels=8,
                                                             unet_attention_resolutions=[2], nll_divergence="hutchinson",
                                                             nll_steps=1, sample_steps=1), dict(cond_dim=5)])
def test_conditional_module_loss_sample_and_nll(kw):
    torch.manual_seed(0)
    model = small(**kw)
    x = torch.randn(8, 16)
    cond = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]) if "num_classes" in kw else torch.randn(8, 5)
    loss, _ = model._loss(x, model.net, generator=torch.Generator().manual_seed(0), cond=cond)
    loss.backward()
    assert torch.isfinite(loss)
    for w in (0.0, 1.0, 3.0):
        s = model.sample(8, generator=torch.Generator().manual_seed(0), cond=cond, guidance=w)
        assert s.shape == (8, 16) and torch.isfinite(s).all()
    # w = 0 ignores the condition: equals the model's unconditional sample
    other = cond.flip(0)
    torch.testing.assert_close(model.sample(8, generator=torch.Generator().manual_seed(0), cond=cond, guidance=0.0),
                               model.sample(8, generator=torch.Generator().manual_seed(0), cond=other, guidance=0.0))
    nll = model.nll(x, cond=cond)  # exact divergence through the batched form
    assert nll.shape == (8,) and torch.isfinite(nll).all()
    if "num_classes" in kw:
        assert model.sample(6).shape == (6, 16)  # labels cycle 0, 1, 2, 0, ...
        with pytest.raises(ValueError, match="class labels"):
            model.sample(2, cond=torch.tensor([0, 3]))
    else:
        with pytest.raises(ValueError, match="needs cond"):
            model.sample(2)


def test_exact_batch_divergence_equals_vmap_divergence():
    from probgen.interpolants import divergence

    A = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(7, 5, dtype=torch.float64)
    f = lambda y: torch.tanh(y @ A.T)  # noqa: E731
    _, d1 = divergence(f, x, method="exact")
    _, d2 = divergence(f, x, method="exact_batch")
    torch.testing.assert_close(d1, d2)


def test_conditional_module_validation():
    with pytest.raises(ValueError, match="not both"):
        small(num_classes=3, cond_dim=2)
    with pytest.raises(ValueError, match="needs image_shape"):
        small(network="unet")
    with pytest.raises(ValueError, match="image_shape"):
        small(network="unet", image_shape=[1, 4, 5])
    with pytest.raises(ValueError, match="cond_drop_prob"):
        small(num_classes=3, cond_drop_prob=1.0)
    with pytest.raises(ValueError, match="needs batches"):
        small(num_classes=3)._batch_cond((torch.zeros(2, 16),))
