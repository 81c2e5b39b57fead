"""Two-dimensional toy densities with samplers and (where possible) exact log densities.

Every density has ``sample(n, generator=None) -> (n, 2)``, ``log_prob(x) -> (n,)``,
``log_prob_is_exact`` and ``entropy()``:

==================  =====================================================  ==================
name                what                                                   ``log_prob``
==================  =====================================================  ==================
``checkerboard``    uniform on the 32 dark unit squares of an 8x8 board     exact; entropy ln 32
                    on $[-4, 4]^2$ (square $(i, j)$ dark iff $i + j$ even)
``eight_gaussians`` 8 isotropic Gaussians on a circle                       exact (mixture)
``gmm``             a 2-D Gaussian mixture with full covariances            exact (mixture)
``two_moons``       two half-circles plus Gaussian noise                    exact up to 1e-4
                                                                            (2048-node quadrature)
``rings``           four concentric circles plus Gaussian noise             exact (Bessel $I_0$)
``pinwheel``        five curved arms (FFJORD's pinwheel)                    grid fallback
==================  =====================================================  ==================

The grid fallback pushes a fine tensor-product quadrature of the latent Gaussian through the
generating map and bins the weights on a 384 x 384 grid over $[-6, 6]^2$ (no Monte Carlo
noise; resolution 1/32 per bin): use it for plots and rough checks, not for sub-0.01-nat comparisons.
:class:`GaussianMixture` works in any dimension and is also the base/target of the
closed-form interpolant fields in :mod:`probgen.interpolants.gaussian`.
"""

from __future__ import annotations

import math
from pathlib import Path as FilePath

import torch
from torch import Tensor

from probgen.data.base import ProbgenDataModule
from probgen.validation import check_choice, check_int

__all__ = [
    "Density",
    "GaussianMixture",
    "Checkerboard",
    "EightGaussians",
    "TwoMoons",
    "Rings",
    "Pinwheel",
    "GridLogProb",
    "DENSITIES",
    "make_density",
    "Toy2D",
]


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def _check_x(x: Tensor, dim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape (n, {dim}), got {tuple(x.shape)}")
    return x


class Density:
    """A density on $\\mathbb{R}^d$ with a sampler and a log density.

    Attributes:
        dim: dimension $d$.
        log_prob_is_exact: whether :meth:`log_prob` is exact (to float precision or a stated
            quadrature error) rather than a grid approximation.
    """

    dim: int = 2
    log_prob_is_exact: bool = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``(n, dim)`` (float32; use ``.double()`` as needed)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density at ``x: (n, dim)`` -> ``(n,)`` in x's dtype (``-inf`` off the support)."""
        raise NotImplementedError

    def entropy(self, num_samples: int = 200_000, generator: torch.Generator | None = None) -> float:
        """Differential entropy in nats: closed form where known, else the Monte Carlo mean of
        $-\\log p$ over ``num_samples`` draws (standard error about $\\mathrm{sd}/\\sqrt{n}$)."""
        g = generator if generator is not None else torch.Generator().manual_seed(1234)
        x = self.sample(num_samples, generator=g).double()
        return float(-self.log_prob(x).mean())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianMixture(Density):
    """Mixture $\\sum_k w_k N(\\mu_k, \\Sigma_k)$ in any dimension.

    Args:
        means: ``(K, d)``.
        covs: ``(K, d, d)`` positive definite, or None.
        stds: ``(K,)`` isotropic standard deviations (used when ``covs`` is None; default 1).
        weights: ``(K,)`` nonnegative (normalised here), default uniform.
    """

    def __init__(self, means, covs=None, stds=None, weights=None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        if covs is None:
            stds = torch.ones(K, dtype=torch.float64) if stds is None else torch.as_tensor(stds, dtype=torch.float64)
            if stds.shape != (K,) or (stds <= 0).any():
                raise ValueError(f"stds must be positive with shape ({K},), got {stds.tolist()}")
            covs = stds[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
        try:
            chol = torch.linalg.cholesky(covs)
        except RuntimeError as err:  # pragma: no cover - message path
            raise ValueError("covs must be symmetric positive definite") from err
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be nonnegative with shape ({K},), got {weights.tolist()}")
        self.means, self.covs, self.chol = means, covs, chol
        self.weights = weights / weights.sum()
        self.dim = d

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def sample(self, n, generator=None):
        n = _check_n(n)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.chol[k], eps)
        return x.float()

    def component_log_probs(self, x: Tensor) -> Tensor:
        """$\\log w_k + \\log N(x; \\mu_k, \\Sigma_k)$, ``(n, K)``."""
        x = _check_x(x, self.dim)
        dt = x.dtype if x.is_floating_point() else torch.float64
        means, chol = self.means.to(x.device, dt), self.chol.to(x.device, dt)
        diff = x[:, None, :] - means[None]  # (n, K, d)
        sol = torch.linalg.solve_triangular(chol[None].expand(x.shape[0], -1, -1, -1), diff[..., None], upper=False)
        maha = sol.squeeze(-1).pow(2).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights.to(x.device, dt)) - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def log_prob(self, x):
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def score(self, x: Tensor) -> Tensor:
        """$\\nabla_x \\log p(x)$, ``(n, d)``, in closed form."""
        lp = self.component_log_probs(x)
        w = torch.softmax(lp, dim=-1)  # (n, K)
        prec = torch.cholesky_inverse(self.chol).to(x.device, x.dtype)
        diff = x[:, None, :] - self.means.to(x.device, x.dtype)[None]
        comp = -torch.einsum("kij,nkj->nki", prec, diff)
        return (w[..., None] * comp).sum(1)

    def __repr__(self):
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"


class Checkerboard(Density):
    """Uniform on the 32 dark unit squares of the 8x8 board on $[-4, 4]^2$; square
    $[i - 4, i - 3) \\times [j - 4, j - 3)$ is dark iff $i + j$ is even. Entropy $\\ln 32$."""

    def __init__(self) -> None:
        ij = torch.tensor([(i, j) for i in range(8) for j in range(8) if (i + j) % 2 == 0], dtype=torch.float64)
        self.corners = ij - 4.0  # (32, 2)

    def sample(self, n, generator=None):
        n = _check_n(n)
        k = torch.randint(0, 32, (n,), generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return (self.corners[k] + u).float()

    def log_prob(self, x):
        x = _check_x(x, 2)
        f = torch.floor(x)
        inside = (x.abs() <= 4).all(-1) & ((f[:, 0] + f[:, 1]) % 2 == 0) & (x < 4).all(-1)
        out = torch.full(x.shape[:1], -math.log(32.0), dtype=x.dtype, device=x.device)
        return torch.where(inside, out, torch.full_like(out, -math.inf))

    def entropy(self, num_samples=0, generator=None):
        return math.log(32.0)


class EightGaussians(GaussianMixture):
    """Eight isotropic Gaussians with centres on a circle.

    Args:
        radius: radius of the circle of centres.
        std: standard deviation of each component.
    """

    def __init__(self, radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)) -> None:
        ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
        super().__init__(means, stds=torch.full((8,), float(std)))
        self.radius, self.std = radius, std

    def __repr__(self):
        return f"EightGaussians(radius={self.radius}, std={self.std})"


def default_gmm() -> GaussianMixture:
    """The ``gmm`` toy target: three correlated Gaussians of unequal weight."""
    means = [[-2.0, -1.5], [2.0, -1.0], [0.0, 2.0]]
    covs = [
        [[0.5, 0.3], [0.3, 0.5]],
        [[0.3, -0.2], [-0.2, 0.6]],
        [[1.0, 0.0], [0.0, 0.15]],
    ]
    return GaussianMixture(means, covs=covs, weights=[0.3, 0.3, 0.4])


class TwoMoons(Density):
    """Two interleaved half-circles with isotropic Gaussian noise.

    The curve parameter $\\theta \\sim U[0, \\pi]$ picks a point on the upper arc
    $2((\\cos\\theta, \\sin\\theta) - (1/2, 1/4))$ or the lower arc
    $2((1 - \\cos\\theta, 1/2 - \\sin\\theta) - (1/2, 1/4))$ with probability 1/2 each; then
    $N(0, \\sigma^2 I)$ noise is added. ``log_prob`` integrates the Gaussian over $\\theta$ with a
    ``num_nodes``-point midpoint rule per arc (error below 1e-4 nats for the default $\\sigma$;
    checked against 8192 nodes in the tests).

    Args:
        noise: $\\sigma > 0$.
    """

    def __init__(self, noise: float = 0.2, num_nodes: int = 2048) -> None:
        if not noise > 0:
            raise ValueError(f"noise must be > 0, got {noise}")
        self.noise, self.num_nodes = float(noise), int(num_nodes)

    def _curve(self, theta: Tensor, upper: Tensor) -> Tensor:
        c, s = torch.cos(theta), torch.sin(theta)
        up = torch.stack([c, s], -1)
        lo = torch.stack([1 - c, 0.5 - s], -1)
        pts = torch.where(upper[..., None], up, lo)
        return 2.0 * (pts - torch.tensor([0.5, 0.25], dtype=pts.dtype))

    def sample(self, n, generator=None):
        n = _check_n(n)
        theta = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        upper = torch.rand(n, generator=generator) < 0.5
        x = self._curve(theta, upper) + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return x.float()

    def log_prob(self, x):
        x = _check_x(x, 2)
        dt = x.dtype
        theta = (torch.arange(self.num_nodes, dtype=dt, device=x.device) + 0.5) * (math.pi / self.num_nodes)
        nodes = torch.cat(
            [self._curve(theta, torch.ones_like(theta, dtype=torch.bool)), self._curve(theta, torch.zeros_like(theta, dtype=torch.bool))]
        ).to(x.device)  # (2M, 2)
        log_w = -math.log(2 * self.num_nodes)
        out = []
        for xb in x.split(2048):
            d2 = torch.cdist(xb, nodes).pow(2)
            out.append(torch.logsumexp(-0.5 * d2 / self.noise**2, -1) + log_w - math.log(2 * math.pi * self.noise**2))
        return torch.cat(out)

    def __repr__(self):
        return f"TwoMoons(noise={self.noise})"


class Rings(Density):
    """Concentric circles of radii $r_k$ (equal weights) plus $N(0, \\sigma^2 I)$ noise.

    The angular integral is closed-form: $p(x) = \\sum_k \\frac{w_k}{2\\pi\\sigma^2}
    e^{-(|x| - r_k)^2 / 2\\sigma^2} \\, I_0^{e}(r_k |x| / \\sigma^2)$ with $I_0^e(z) = e^{-z} I_0(z)$.

    Args:
        radii: ring radii.
        noise: $\\sigma > 0$.
    """

    def __init__(self, radii=(0.9, 1.8, 2.7, 3.6), noise: float = 0.1) -> None:
        if not noise > 0:
            raise ValueError(f"noise must be > 0, got {noise}")
        self.radii = torch.as_tensor(radii, dtype=torch.float64)
        if self.radii.dim() != 1 or (self.radii <= 0).any():
            raise ValueError(f"radii must be a 1-D sequence of positive numbers, got {radii!r}")
        self.noise = float(noise)

    def sample(self, n, generator=None):
        n = _check_n(n)
        k = torch.randint(0, len(self.radii), (n,), generator=generator)
        phi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        x = self.radii[k, None] * torch.stack([torch.cos(phi), torch.sin(phi)], -1)
        x = x + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return x.float()

    def log_prob(self, x):
        x = _check_x(x, 2)
        rho = x.norm(dim=-1, keepdim=True)
        r = self.radii.to(x.device, x.dtype)[None]
        s2 = self.noise**2
        comp = -((rho - r) ** 2) / (2 * s2) + torch.log(torch.special.i0e(r * rho / s2))
        return torch.logsumexp(comp, -1) - math.log(len(self.radii)) - math.log(2 * math.pi * s2)

    def __repr__(self):
        return f"Rings(radii={self.radii.tolist()}, noise={self.noise})"


class GridLogProb:
    """Piecewise-constant log density on a regular grid from weighted points.

    Args:
        points: ``(m, 2)`` point cloud.
        weights: ``(m,)`` nonnegative masses summing to 1.
        bound: the grid covers $[-\\mathrm{bound}, \\mathrm{bound}]^2$.
        bins: bins per axis.
    """

    def __init__(self, points: Tensor, weights: Tensor, bound: float = 4.0, bins: int = 256) -> None:
        self.bound, self.bins = float(bound), int(bins)
        h = 2 * self.bound / self.bins
        idx = torch.floor((points + self.bound) / h).long()
        ok = ((idx >= 0) & (idx < self.bins)).all(-1)
        flat = idx[ok, 0] * self.bins + idx[ok, 1]
        mass = torch.zeros(self.bins * self.bins, dtype=torch.float64).index_add_(0, flat, weights[ok].double())
        floor = 1e-9  # an empty bin gets this mass: the density is positive everywhere
        self.log_density = torch.log(mass.clamp_min(floor) / h**2).reshape(self.bins, self.bins)
        self.log_floor = math.log(floor / h**2)

    def __call__(self, x: Tensor) -> Tensor:
        h = 2 * self.bound / self.bins
        idx = torch.floor((x.double() + self.bound) / h).long()
        ok = ((idx >= 0) & (idx < self.bins)).all(-1)
        idx = idx.clamp(0, self.bins - 1)
        lp = self.log_density[idx[:, 0], idx[:, 1]].to(x.dtype)
        return torch.where(ok, lp, torch.full_like(lp, self.log_floor))


class Pinwheel(Density):
    """FFJORD's pinwheel: arm $k$ of ``num_arms`` maps $f \\sim N((1, 0), \\mathrm{diag}(\\sigma_r^2,
    \\sigma_t^2))$ to $2 R(2\\pi k / K + \\mathrm{rate}\\, e^{f_1}) f$.

    The map is not invertible in closed form, so ``log_prob`` is the grid fallback
    (:class:`GridLogProb`, ``log_prob_is_exact = False``) built from an 800 x 800 tensor grid
    over $\\pm 6$ standard deviations per arm (bins of 1/32 on $[-6, 6]^2$; off-grid points get
    the floor density).
    """

    log_prob_is_exact = False

    def __init__(self, num_arms: int = 5, radial_std: float = 0.3, tangential_std: float = 0.1, rate: float = 0.25) -> None:
        self.num_arms, self.radial_std, self.tangential_std, self.rate = int(num_arms), float(radial_std), float(tangential_std), float(rate)
        self._grid: GridLogProb | None = None

    def _map(self, f: Tensor, k: Tensor) -> Tensor:
        ang = 2 * math.pi * k / self.num_arms + self.rate * torch.exp(f[:, 0])
        c, s = torch.cos(ang), torch.sin(ang)
        return 2.0 * torch.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], -1)

    def sample(self, n, generator=None):
        n = _check_n(n)
        f = torch.randn(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([self.radial_std, self.tangential_std], dtype=torch.float64)
        f[:, 0] += 1.0
        k = torch.randint(0, self.num_arms, (n,), generator=generator).double()
        return self._map(f, k).float()

    def _build_grid(self) -> GridLogProb:
        m = 800
        u = torch.linspace(-6, 6, m, dtype=torch.float64)
        w1 = torch.exp(-0.5 * u**2)
        w = (w1[:, None] * w1[None, :]).reshape(-1)
        w = w / w.sum()
        f = torch.stack(torch.meshgrid(u * self.radial_std + 1.0, u * self.tangential_std, indexing="ij"), -1).reshape(-1, 2)
        pts, wts = [], []
        for k in range(self.num_arms):
            pts.append(self._map(f, torch.full((f.shape[0],), float(k), dtype=torch.float64)))
            wts.append(w / self.num_arms)
        return GridLogProb(torch.cat(pts), torch.cat(wts), bound=6.0, bins=384)

    def log_prob(self, x):
        x = _check_x(x, 2)
        if self._grid is None:
            self._grid = self._build_grid()
        return self._grid(x)


DENSITIES = {
    "checkerboard": Checkerboard,
    "eight_gaussians": EightGaussians,
    "gmm": default_gmm,
    "two_moons": TwoMoons,
    "rings": Rings,
    "pinwheel": Pinwheel,
}


def make_density(name: str, **kwargs) -> Density:
    """Build a toy density by name (``DENSITIES``), passing ``kwargs`` to its constructor."""
    if name not in DENSITIES:
        raise ValueError(f"density name must be one of {sorted(DENSITIES)}, got {name!r}")
    return DENSITIES[name](**kwargs)


class Toy2D(ProbgenDataModule):
    """Samples of a 2-D toy density as train / val / test splits (one tensor ``x`` each).

    Args:
        name: a key of ``DENSITIES``.
        n_train, n_val, n_test: split sizes (> 0).
        density_kwargs: passed to the density's constructor.
        batch_size, eval_batch_size, num_workers, seed: see :class:`ProbgenDataModule`; the
            splits are drawn with seeds ``seed``, ``seed + 1``, ``seed + 2``.
    """

    def __init__(
        self,
        name: str = "checkerboard",
        n_train: int = 200_000,
        n_val: int = 5_000,
        n_test: int = 20_000,
        density_kwargs: dict | None = None,
        batch_size: int = 1024,
        eval_batch_size: int | None = 4096,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
        for arg, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            check_int(arg, v, ge=1)
        check_choice("name", name, DENSITIES)
        self.name = name
        self.density = make_density(name, **(density_kwargs or {}))
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test

    def build_splits(self):
        out = {}
        for i, (split, n) in enumerate((("train", self.n_train), ("val", self.n_val), ("test", self.n_test))):
            g = torch.Generator().manual_seed(self.seed + i)
            out[split] = (self.density.sample(n, generator=g),)
        return out

    def plot_samples(self, samples: Tensor, path: str | FilePath) -> FilePath:
        """2-D histogram of ``samples`` beside held-out data on the same axes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.setup()
        reference = self.splits["test"][0]
        path = FilePath(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lim = 4.5
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
        for ax, (title, x) in zip(axes, (("model samples", samples), (f"data ({self.name})", reference[: len(samples)]))):
            x = x.detach().float().cpu()
            ax.hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=120, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
            ax.set_aspect("equal")
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

