"""Noise distributions $q$ for importance-sampled $\\log Z$, the compositional objective and NCE.

A noise distribution is an ``nn.Module`` with ``sample(n, generator=None) -> (n, *event_shape)``,
``log_prob(x) -> (n,)`` and ``fit(x) -> self``. Its parameters are buffers (fitted, not
trained), so they travel in checkpoints. :class:`FlowNoise` is the exception: a pre-trained
stochastic-interpolant flow whose (frozen) weights are parameters with ``requires_grad=False``.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from probgen.energy.energies import Energy
from probgen.exceptions import NotPositiveDefiniteError

__all__ = ["FlowNoise", "GaussianMixtureNoise", "GaussianNoise", "NoiseDistribution", "PulledBackEnergy", "build_noise"]


def _robust_cholesky(cov: Tensor, where: str) -> Tensor:
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(1e-12)[..., None]
    for jitter in (0.0, 1e-8, 1e-6, 1e-4, 1e-2):
        chol, info = torch.linalg.cholesky_ex(cov + jitter * scale * eye)
        if not bool((info != 0).any()):
            return chol
    raise NotPositiveDefiniteError(f"{where}: covariance not positive definite after jitter 1e-2; add more data or raise min_var")


def _check_finite(what: str, x: Tensor) -> None:
    """Raise ValueError naming the first non-finite rows of ``x: (n, ...)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a Tensor, got {type(x).__name__}")
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(-1) if x.dim() > 0 else ~torch.isfinite(x.reshape(1))
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        raise ValueError(f"{what} contains NaN or inf in {rows.numel()} row(s), e.g. rows {rows[:5].tolist()}: clean or drop them")


class NoiseDistribution(nn.Module):
    """Base class for $q$.

    Args:
        event_shape: shape of one sample.
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        shape = tuple(event_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"event_shape (dim) must be a non-empty tuple of positive ints, got {shape!r}")
        self.event_shape = shape

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def _fit_data(self, x: Tensor, where: str) -> Tensor:
        """``x`` flattened for :meth:`fit`, after checking its shape and that every row is finite."""
        flat = self._flat(x)
        _check_finite(f"{where}: x", flat)
        return flat

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, x: Tensor) -> NoiseDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x, log q(x))`` for ``n`` fresh samples."""
        x = self.sample(n, generator)
        return x, self.log_prob(x)


class GaussianNoise(NoiseDistribution):
    """$q = \\mathcal N(m, s^2 \\Sigma)$ with $(m, \\Sigma)$ the data mean and covariance.

    Args:
        event_shape: shape of one sample (an int means ``(dim,)``).
        scale: inflation $s \\geq$ 1 widens $q$ so that it covers the data's tails.
        diagonal: fit only the variances.
        mean, cov: optional fixed parameters (skip :meth:`fit`).
    """

    def __init__(self, event_shape, scale: float = 1.0, diagonal: bool = False, mean=None, cov=None) -> None:
        super().__init__((event_shape,) if isinstance(event_shape, int) else event_shape)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.diagonal = bool(diagonal)
        d = self.dim
        # follow the dtype of tensor parameters (float64 in, float64 buffers), else the default
        given = [v for v in (mean, cov) if isinstance(v, Tensor) and v.is_floating_point()]
        dtype = given[0].dtype if given else torch.get_default_dtype()
        self.register_buffer("loc", torch.zeros(d, dtype=dtype) if mean is None else torch.as_tensor(mean, dtype=dtype).reshape(d).clone())
        cov = torch.eye(d, dtype=dtype) if cov is None else torch.as_tensor(cov, dtype=dtype).reshape(d, d)
        self.register_buffer("scale_tril", _robust_cholesky(cov * self.scale**2, "GaussianNoise"))

    @torch.no_grad()
    def fit(self, x: Tensor) -> GaussianNoise:
        """Set the mean and (inflated) covariance from data ``x: (n, *event_shape)``."""
        flat = self._fit_data(x, "GaussianNoise.fit").to(self.loc.dtype)
        if flat.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 samples, got {flat.shape[0]}")
        self.loc.copy_(flat.mean(0))
        centred = flat - self.loc
        cov = centred.T @ centred / (flat.shape[0] - 1)
        if self.diagonal:
            cov = torch.diag(cov.diagonal())
        cov = cov + 1e-6 * cov.diagonal().mean() * torch.eye(self.dim, dtype=cov.dtype, device=cov.device)
        self.scale_tril.copy_(_robust_cholesky(cov * self.scale**2, "GaussianNoise.fit"))
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        return (self.loc + eps @ self.scale_tril.T).reshape(n, *self.event_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        L = self.scale_tril.to(flat)
        z = torch.linalg.solve_triangular(L, (flat - self.loc.to(flat)).T, upper=False).T
        return -0.5 * z.pow(2).sum(-1) - L.diagonal().log().sum() - 0.5 * self.dim * math.log(2 * math.pi)


class GaussianMixtureNoise(NoiseDistribution):
    """Gaussian mixture $q = \\sum_k \\pi_k \\mathcal N(m_k, s^2 \\Sigma_k)$ fitted by EM.

    Args:
        event_shape: shape of one sample (an int means ``(dim,)``).
        num_components: $K$.
        scale: covariance inflation $s$.
        diagonal: diagonal covariances (use for high dimensions, e.g. digits).
        iterations: EM iterations in :meth:`fit`.
        min_var: variance floor added to every covariance.
        seed: seed of the k-means++ initialisation and of the fit subsample.
        max_fit_points: :meth:`fit` runs EM on a random subsample (without replacement, drawn
            with ``seed``) of at most this many rows of the data; ``None`` uses every row. EM
            costs $O(nKd^2)$ per iteration, and a 16-component 2-D mixture is determined to
            well within its own misfit by 20,000 points (the default), so 200,000 training
            points no longer cost 10x the fit time. Data with at most this many rows are used
            whole and in order (the fit is then unchanged by this option).
    """

    def __init__(self, event_shape, num_components: int = 8, scale: float = 1.0, diagonal: bool = False, iterations: int = 100, min_var: float = 1e-3, seed: int = 0,
                 max_fit_points: int | None = 20_000) -> None:
        super().__init__((event_shape,) if isinstance(event_shape, int) else event_shape)
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components must be a positive int, got {num_components!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if max_fit_points is not None and (isinstance(max_fit_points, bool) or not isinstance(max_fit_points, int) or max_fit_points < 2 * num_components):
            raise ValueError(f"max_fit_points must be None or an int >= 2 * num_components = {2 * num_components}, got {max_fit_points!r}")
        self.max_fit_points = max_fit_points
        self.num_components, self.scale, self.diagonal = num_components, float(scale), bool(diagonal)
        self.iterations, self.min_var, self.seed = int(iterations), float(min_var), int(seed)
        K, d, dtype = num_components, self.dim, torch.get_default_dtype()
        self.register_buffer("logits", torch.zeros(K, dtype=dtype))
        self.register_buffer("locs", torch.zeros(K, d, dtype=dtype))
        self.register_buffer("scale_trils", torch.eye(d, dtype=dtype).expand(K, d, d).clone() * self.scale)

    def _component_log_prob(self, flat: Tensor) -> Tensor:
        L = self.scale_trils.to(flat)  # (K, d, d)
        diff = (flat[None] - self.locs.to(flat)[:, None]).transpose(-1, -2)  # (K, d, n)
        z = torch.linalg.solve_triangular(L, diff, upper=False)
        logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (-0.5 * z.pow(2).sum(-2) - logdet[:, None] - 0.5 * self.dim * math.log(2 * math.pi)).T  # (n, K)

    @torch.no_grad()
    def fit(self, x: Tensor) -> GaussianMixtureNoise:
        """EM from a k-means++ start on ``x: (n, *event_shape)``; the covariances are then inflated by ``scale**2``.

        If ``n > max_fit_points`` EM runs on ``max_fit_points`` rows drawn without replacement
        (seeded by ``seed``, so the fit is reproducible).
        """
        flat = self._fit_data(x, "GaussianMixtureNoise.fit").to(self.locs.dtype)
        n, d, K = flat.shape[0], self.dim, self.num_components
        if n < 2 * K:
            raise ValueError(f"fit needs at least 2 * num_components = {2 * K} samples, got {n}")
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        if self.max_fit_points is not None and n > self.max_fit_points:
            flat = flat[torch.randperm(n, generator=gen)[: self.max_fit_points].to(flat.device)]
            n = self.max_fit_points
        centres = [flat[torch.randint(n, (1,), generator=gen).item()]]
        for _ in range(1, K):
            d2 = torch.cdist(flat, torch.stack(centres)).pow(2).min(1).values
            centres.append(flat[torch.multinomial(d2.cpu() + 1e-12, 1, generator=gen).item()])
        locs = torch.stack(centres)
        eye = torch.eye(d, dtype=flat.dtype, device=flat.device)
        var0 = flat.var(0).mean()
        covs = (var0 / K + self.min_var) * eye.expand(K, d, d).clone()
        log_pi = torch.full((K,), -math.log(K), dtype=flat.dtype, device=flat.device)
        for _ in range(self.iterations):
            self.locs.copy_(locs)
            self.scale_trils.copy_(_robust_cholesky(covs, "GaussianMixtureNoise.fit"))
            log_r = self._component_log_prob(flat) + log_pi
            log_r = log_r - torch.logsumexp(log_r, -1, keepdim=True)
            r = log_r.exp()  # (n, K)
            nk = r.sum(0) + 1e-10
            log_pi = (nk / n).log()
            locs = (r.T @ flat) / nk[:, None]
            diff = flat[None] - locs[:, None]  # (K, n, d)
            if self.diagonal:
                covs = torch.diag_embed((r.T[..., None] * diff.pow(2)).sum(1) / nk[:, None] + self.min_var)
            else:
                covs = torch.einsum("kn,kni,knj->kij", r.T, diff, diff) / nk[:, None, None] + self.min_var * eye
        self.logits.copy_(log_pi)
        self.locs.copy_(locs)
        self.scale_trils.copy_(_robust_cholesky(covs * self.scale**2, "GaussianMixtureNoise.fit"))
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        probs = torch.softmax(self.logits, 0)
        k = torch.multinomial(probs, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.locs.dtype, device=self.locs.device)
        x = self.locs[k] + torch.einsum("nij,nj->ni", self.scale_trils[k], eps)
        return x.reshape(n, *self.event_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        return torch.logsumexp(self._component_log_prob(flat) + torch.log_softmax(self.logits.to(flat), 0), -1)


class _ExternalBase(NoiseDistribution):
    """An interpolant base with ``sample(n, generator, dtype, device)`` and ``log_prob`` as a noise."""

    def __init__(self, base, dim: int) -> None:
        super().__init__((dim,))
        self.base = base
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.base.sample(n, generator, self._anchor.dtype, self._anchor.device).reshape(n, self.dim)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.base.log_prob(self._flat(x)).to(x)


class FlowNoise(NoiseDistribution):
    r"""A trained probability-flow ODE as $q$: $q = \rho_1$ of $\dot X_t = b(t, X_t)$, $X_{t_0} \sim \rho_0$.

    Going beyond Jiang et al. (2023), who use fixed Gaussian-type $q$: a flow fitted to the data
    (a :class:`~probgen.interpolants.StochasticInterpolant`) is a far better proposal, so the
    importance weights $e^{-E(x')}/q(x')$ of the compositional objective, NCE and the
    $\log Z$ estimate have much lower variance. Both operations solve an ODE with the same
    solver, steps and time span; the flow's weights are frozen:

    - :meth:`sample`: $x = X_{t_1}$ from $X_{t_0} \sim \rho_0$ by
      :func:`probgen.interpolants.generate` (``method="ode"``);
    - :meth:`log_prob`: the instantaneous change of variables (Albergo et al. 2023; Chen et al.
      2018) $\log q(x) = \log\rho_0(X_{t_0}) - \int_{t_0}^{t_1} \nabla\cdot b(t, X_t)\,dt$ with
      $X_{t_1} = x$, solved backwards by :func:`probgen.interpolants.log_likelihood` with the
      exact divergence ($d$ backward passes per evaluation) for ``dim <= 16`` and Hutchinson's
      estimator with a **fixed** probe (seeded by ``probe_seed`` at every call) above.

    :meth:`log_prob` is differentiable in ``x`` (when grad mode is on and ``x`` requires grad):
    the graph is kept through the solve (``create_graph=True``), so $\nabla_x \log q$ is the
    exact gradient of the computed, discretised $\log q$. This is what makes the tilted model
    $p \propto q\,e^{-E}$ (:class:`NoiseEnergy`, ``base_on_noise=True``) correct for Langevin
    samplers, CD/PCD and score matching. With Hutchinson the fixed probe makes $\log q$ a
    smooth, deterministic function of ``x`` (for a given batch), so its gradient is consistent
    too. Without ``requires_grad`` no graph is built (the cost of an evaluation under no grad).

    Consistency: $\log q$ of the flow's own samples is computed by the likelihood ODE run
    backwards from them, not tracked along the sampling solve, so the pair
    ``(x, log_prob(x))`` is exact up to the two solves' discretisation error, $O(h^4)$ for
    ``rk4`` with $h = (t_1 - t_0)/\text{steps}$. Measured with the exact field from $N(0, I)$ to a
    2-D Gaussian, on 500 of the flow's own samples (max over them; tests/energy/test_flow_noise.py):
    ``rk4`` 10 steps: $5 \cdot 10^{-5}$ nats in $\log q$ ($3 \cdot 10^{-5}$ in $x$), 20 steps:
    $2.4 \cdot 10^{-6}$ nats; ``heun`` 20 steps: $0.015$ nats; ``euler`` 20 / 80 steps: $0.57$ /
    $0.17$ nats. To a 2-D two-component mixture, ``rk4`` with 20 steps errs by $7 \cdot 10^{-5}$
    nats on target samples but $0.1$ nats at far, low-density points (50 steps: $3 \cdot 10^{-4}$).
    A trained network's field is less smooth than these: check ``log_prob`` at two step counts.

    The velocity and the base act on flat vectors ``(batch, d)``, ``d = prod(event_shape)``;
    samples are returned, and ``log_prob`` inputs accepted, in ``event_shape``.

    Args:
        velocity: $b(t, x)$, ``t: (batch,)``, ``x: (batch, d)`` -> ``(batch, d)``, acting on each
            row independently. If it is an ``nn.Module`` it is registered (as ``flow``) and
            frozen in place.
        event_shape: shape of one sample (an int means ``(dim,)``).
        base: $\rho_0$, an object with ``sample(n, generator) -> (n, d)`` and
            ``log_prob(x) -> (n,)`` (e.g. a :class:`GaussianNoise` of event shape ``(d,)``);
            default $N(0, I_d)$.
        module: the ``nn.Module`` holding the velocity's weights when ``velocity`` is a closure
            (registered as ``flow`` and frozen in place, so that ``.to()``/``.double()`` and state
            dicts include it).
        steps: fixed solver steps over ``t_span`` (both solves; ignored by ``dopri5``).
        solver: ``"euler"``, ``"heun"``, ``"rk4"`` or ``"dopri5"``.
        t_span: $[t_0, t_1] \subseteq [0, 1]$ (an interpolant's ``t_bounds`` when its field is
            singular at the ends).
        rtol, atol: ``dopri5`` tolerances.
        chunk_size: evaluate ``log_prob`` in chunks of this many points (bounds the memory of the
            Jacobians); None: all at once.
        divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact for ``dim <= 16``).
        num_probes: Hutchinson probes (Rademacher), fixed for the solve.
        probe_seed: seed of the Hutchinson probes, re-used at every call (a fixed probe).

    Raises:
        TypeError: ``velocity`` not callable or ``base`` without ``sample``/``log_prob``.
        ValueError: bad ``steps``, ``solver``, ``t_span``, ``chunk_size``, ``divergence`` or
            ``num_probes``.
    """

    def __init__(
        self,
        velocity: Callable[[Tensor, Tensor], Tensor],
        event_shape,
        base=None,
        *,
        module: nn.Module | None = None,
        steps: int = 50,
        solver: str = "rk4",
        t_span: tuple[float, float] = (0.0, 1.0),
        rtol: float = 1e-5,
        atol: float = 1e-5,
        chunk_size: int | None = None,
        divergence: str = "auto",
        num_probes: int = 1,
        probe_seed: int = 0,
    ) -> None:
        from probgen.interpolants.generate import ODE_SOLVERS

        super().__init__((event_shape,) if isinstance(event_shape, int) else event_shape)
        if not callable(velocity):
            raise TypeError(f"velocity must be callable b(t, x), got {type(velocity).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if solver not in ODE_SOLVERS:
            raise ValueError(f"solver must be one of {ODE_SOLVERS}, got {solver!r}")
        t0, t1 = (float(v) for v in t_span)
        if not 0.0 <= t0 < t1 <= 1.0:
            raise ValueError(f"t_span must satisfy 0 <= t0 < t1 <= 1, got {t_span!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        if divergence not in ("auto", "exact", "hutchinson"):
            raise ValueError(f"divergence must be 'auto', 'exact' or 'hutchinson', got {divergence!r}")
        if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"num_probes must be a positive int, got {num_probes!r}")
        if divergence == "auto":
            divergence = "exact" if self.dim <= 16 else "hutchinson"
        self.divergence, self.num_probes, self.probe_seed = divergence, num_probes, int(probe_seed)
        if base is None:
            base = GaussianNoise(self.dim)
        if not (callable(getattr(base, "sample", None)) and callable(getattr(base, "log_prob", None))):
            raise TypeError(f"base must have sample(n, generator) and log_prob(x), got {type(base).__name__}")
        self.base = base
        if module is None and isinstance(velocity, nn.Module):
            module = velocity
        self.flow = module.requires_grad_(False) if module is not None else None
        object.__setattr__(self, "_velocity", velocity)  # not registered twice when it is `flow`
        object.__setattr__(self, "_velocity_factory", None)
        self.steps, self.solver, self.t_span = steps, solver, (t0, t1)
        self.rtol, self.atol, self.chunk_size = float(rtol), float(atol), chunk_size
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def velocity(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The field $b(t, x)$ on flat ``(batch, d)`` inputs."""
        if self._velocity_factory is not None:
            return self._velocity_factory(self.flow)
        return self._velocity

    @classmethod
    def from_interpolant(cls, model, *, ema: bool = True, event_shape=None, steps: int | None = None, solver: str | None = None, **kwargs) -> FlowNoise:
        """$q$ from a trained :class:`~probgen.interpolants.StochasticInterpolant`.

        The (EMA) network is copied and frozen (the model itself is left untouched); the base is
        the model's $\\rho_0$ and the time span its ``(t_min, t_max)``.

        Args:
            model: the trained interpolant (not a mirror path: it has no generative ODE).
            ema: use the EMA weights (the ones its ``sample``/``nll`` use) if it keeps them.
            event_shape: shape of one sample, of size ``model.dim`` (default ``(model.dim,)``).
            steps, solver: ODE settings for both solves; default the model's ``nll_steps`` and
                ``nll_solver``.
            **kwargs: ``rtol``, ``atol``, ``chunk_size``.
        """
        from probgen.interpolants.module import GaussianBase, StochasticInterpolant

        if not isinstance(model, StochasticInterpolant):
            raise TypeError(f"model must be a StochasticInterpolant, got {type(model).__name__}")
        if model.interpolant.kind == "mirror":
            raise ValueError("a mirror interpolant maps the data to itself and defines no density: use a one- or two-sided path")
        event_shape = (model.dim,) if event_shape is None else ((event_shape,) if isinstance(event_shape, int) else tuple(event_shape))
        if math.prod(event_shape) != model.dim:
            raise ValueError(f"event_shape {event_shape} has {math.prod(event_shape)} elements, but the flow has dim={model.dim}")
        net = copy.deepcopy(model._eval_net() if ema else model.net).eval()
        dtype = next(net.parameters()).dtype
        if isinstance(model.base, GaussianBase):
            base = GaussianNoise(model.dim, cov=model.base.scale**2 * torch.eye(model.dim))
        else:
            base = _ExternalBase(model.base, model.dim)
        hp = model.hparams
        objective, interpolant, fields = model.objective, model.interpolant, model.fields

        def factory(flow: nn.Module):
            return objective.velocity(fields(flow), interpolant)

        out = cls(
            factory(net),
            event_shape,
            base,
            module=net,
            steps=int(hp.nll_steps) if steps is None else steps,
            solver=hp.nll_solver if solver is None else solver,
            t_span=(model.t_min, model.t_max),
            **kwargs,
        )
        # rebuild the field from the registered copy at each use, so it follows .to() and copies
        object.__setattr__(out, "_velocity_factory", factory)
        return out.to(dtype=dtype)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, ema: bool = True, map_location="cpu", **kwargs) -> FlowNoise:
        """$q$ from a :class:`~probgen.interpolants.StochasticInterpolant` Lightning checkpoint.

        Loaded with ``torch.load(..., weights_only=True)``; the module is rebuilt from the saved
        hyper-parameters. The global RNG state saved in the checkpoint is not restored.

        Args:
            path: the ``.ckpt`` file.
            ema, **kwargs: as in :meth:`from_interpolant`.
            map_location: device to load onto.
        """
        from probgen.interpolants.module import StochasticInterpolant

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"checkpoint {str(path)!r} is not a file")
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        if "state_dict" not in ckpt:
            raise ValueError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
        allowed = inspect.signature(StochasticInterpolant.__init__).parameters
        hp = {k: v for k, v in dict(ckpt.get("hyper_parameters", {})).items() if k in allowed}
        model = StochasticInterpolant(**hp)
        model.load_state_dict(ckpt["state_dict"])
        return cls.from_interpolant(model, ema=ema, **kwargs)

    def fit(self, x: Tensor) -> FlowNoise:
        """No-op (the flow is trained beforehand with :mod:`probgen.interpolants`); checks ``x``'s shape."""
        self._flat(x)
        return self

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, *event_shape)`` by the probability-flow ODE from base draws."""
        from probgen.interpolants.generate import generate

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        x0 = self.base.sample(n, generator).reshape(n, self.dim).to(self._anchor)
        x = generate(self.velocity, x0, steps=self.steps, method="ode", solver=self.solver, t_span=self.t_span, rtol=self.rtol, atol=self.atol)
        return x.reshape(n, *self.event_shape)

    def transport(self, z: Tensor) -> Tensor:
        """The flow map $T$: base points ``z: (n, d)`` to data space ``(n, *event_shape)``.

        The solve of :meth:`sample` (same solver, steps and time span), without ``no_grad``:
        differentiable in ``z``, so an energy of $T(z)$ can be sampled or annealed in the base
        space (:class:`PulledBackEnergy`). ``sample(n, g)`` equals ``transport(base.sample(n, g))``.
        """
        from probgen.interpolants.generate import generate

        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must be a (n, {self.dim}) tensor of base points, got {getattr(z, 'shape', type(z).__name__)}")
        x = generate(self.velocity, z.to(self._anchor), steps=self.steps, method="ode", solver=self.solver, t_span=self.t_span, rtol=self.rtol, atol=self.atol)
        return x.reshape(z.shape[0], *self.event_shape).to(z.dtype)

    @torch.no_grad()
    def inverse(self, x: Tensor) -> Tensor:
        """$T^{-1}$: data ``x: (n, *event_shape)`` to base points ``(n, d)`` by the ODE run backwards."""
        from probgen.interpolants.generate import generate

        flat = self._flat(x).to(self._anchor)
        z = generate(self.velocity, flat, steps=self.steps, method="ode", solver=self.solver, direction="backward", t_span=self.t_span, rtol=self.rtol, atol=self.atol)
        return z.to(x.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """$\\log q(x)$ ``(n,)`` by the likelihood ODE, differentiable in ``x`` when ``x`` requires grad."""
        from probgen.interpolants.likelihood import log_likelihood

        flat = self._flat(x).to(self._anchor)
        create_graph = torch.is_grad_enabled() and flat.requires_grad
        if not create_graph:
            flat = flat.detach()
        field = self.velocity
        size = self.chunk_size or max(flat.shape[0], 1)
        out = []
        for chunk in flat.split(size):
            gen = None
            if self.divergence == "hutchinson":
                gen = torch.Generator(device=chunk.device).manual_seed(self.probe_seed)
            out.append(
                log_likelihood(
                    field, chunk, self.base.log_prob, steps=self.steps, divergence=self.divergence, solver=self.solver,
                    t_span=self.t_span, rtol=self.rtol, atol=self.atol, num_probes=self.num_probes, generator=gen,
                    create_graph=create_graph,
                )
            )
        return torch.cat(out).to(x.dtype)


class NoiseEnergy(Energy):
    """$E(x) = -\\log q(x)$: a fixed, normalised noise distribution as an expert.

    ``net + NoiseEnergy(q)`` is the exponentially tilted model $p \\propto q\\,e^{-E_{net}}$: its
    importance weights under $q$ are $e^{-E_{net}}$, bounded at initialisation, which keeps the
    compositional, minibatch and NCE objectives usable in high dimensions. The noise's buffers
    are not trained.

    Args:
        noise: a fitted noise distribution.
    """

    def __init__(self, noise: NoiseDistribution) -> None:
        super().__init__(noise.event_shape)
        self.noise = noise

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return -self.noise.log_prob(x)


class PulledBackEnergy(Energy):
    """A tilted flow model in the flow's base coordinates: $E_z(z) = E_{net}(T(z)) - \\log\\rho_0(z)$.

    For $q = T_\\#\\rho_0$ (:class:`FlowNoise`, $T$ its discretised flow map, :meth:`FlowNoise.transport`)
    the tilted model $p(x) \\propto q(x)\\,e^{-E_{net}(x)}$ is the push-forward by $T$ of
    $p_z(z) \\propto \\rho_0(z)\\,e^{-E_{net}(T(z))} = e^{-E_z(z)}$, and both have the same
    normaliser $Z = \\mathbb E_{\\rho_0}[e^{-E_{net}(T(z))}]$. Sampling or annealing $p_z$ needs
    gradients through the sampling ODE only, never $\\log q$ or its divergence, and its geometry is
    the base's (near-Gaussian) rather than the data's (the "neural transport" reparameterisation,
    Hoffman et al. 2019). AIS from $\\rho_0$ on $E_z$ (:func:`~probgen.energy.log_partition_ais_flow`)
    then brackets $\\log Z$ of the tilted model exactly for the discretised $T$.

    Args:
        tilt: $E_{net}$ on data space (event shape of the flow).
        flow: the :class:`FlowNoise` $q$; its base must have a differentiable ``log_prob``.
    """

    def __init__(self, tilt: Energy, flow: FlowNoise) -> None:
        if not isinstance(flow, FlowNoise):
            raise TypeError(f"flow must be a FlowNoise, got {type(flow).__name__}")
        if not isinstance(tilt, Energy) or tilt.event_shape != flow.event_shape:
            raise ValueError(f"tilt must be an Energy on the flow's event shape {flow.event_shape}, got {getattr(tilt, 'event_shape', type(tilt).__name__)}")
        super().__init__((flow.dim,))
        self.tilt, self.flow = tilt, flow

    def forward(self, z: Tensor) -> Tensor:
        self._check(z)
        return self.tilt(self.flow.transport(z)) - self.flow.base.log_prob(z).to(z.dtype)


def build_noise(kind: str, event_shape, **kwargs) -> NoiseDistribution:
    """``kind``: ``"gaussian"``, ``"mixture"`` or ``"flow"``; ``kwargs`` go to the class.

    ``"flow"`` needs ``checkpoint=<path to a StochasticInterpolant .ckpt>``; the other
    ``kwargs`` go to :meth:`FlowNoise.from_checkpoint` (``ema``, ``steps``, ``solver``, ...).
    """
    if kind == "flow":
        kwargs = dict(kwargs)
        checkpoint = kwargs.pop("checkpoint", None)
        if checkpoint is None:
            raise ValueError("noise kind 'flow' needs checkpoint=<path to a trained StochasticInterpolant .ckpt> in noise_kwargs")
        return FlowNoise.from_checkpoint(checkpoint, event_shape=event_shape, **kwargs)
    kinds = {"gaussian": GaussianNoise, "mixture": GaussianMixtureNoise}
    if kind not in kinds:
        raise ValueError(f"noise kind must be one of {sorted([*kinds, 'flow'])}, got {kind!r}")
    return kinds[kind](event_shape, **kwargs)
