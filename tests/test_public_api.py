"""The public names of DESIGN.md resolve from the top-level package."""

import probgen


def test_public_names_resolve():
    for name in probgen.__all__:
        assert getattr(probgen, name) is not None, name
    assert probgen.sdeint.__module__.startswith("probgen.sde")
    assert probgen.NNGPKernel.__module__.startswith("probgen.nngp")
