"""A 10,000+ point regression set fitted end to end from the CLI: Friedman #1, Student-t process.

Writes scikit-learn's Friedman #1 data (``make_friedman1``: $d = 10$, five informative inputs,
$y = 10 \\sin(\\pi x_1 x_2) + 20 (x_3 - 1/2)^2 + 10 x_4 + 5 x_5 + \\varepsilon$, noise s.d. 1,
``random_state=0``) in the UCI layout that :class:`probgen.data.UCIRegression` reads (one split:
the first ``--n-train`` rows train, the next ``--n-test`` rows test), and a config for
``probgen fit`` (``benchmarks/configs/nngp_friedman.yaml``: depth-2 ReLU NNGP, inverse-gamma
prior, float64, every training point, the iterative solver). Then run, e.g.::

    python benchmarks/nngp_friedman_cli.py --n-train 20000 --n-test 500 --root /tmp/friedman
    /usr/bin/time -v probgen fit --config benchmarks/configs/nngp_friedman.yaml \\
        --data.init_args.root /tmp/friedman --trainer.max_steps 2 --trainer.default_root_dir /tmp/friedman/run
    /usr/bin/time -v probgen test --config benchmarks/configs/nngp_friedman.yaml \\
        --data.init_args.root /tmp/friedman --ckpt_path /tmp/friedman/run/.../last.ckpt

The time and peak memory (``Maximum resident set size``) of both go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_friedman(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Friedman #1 in the UCI layout under ``root/friedman1``; returns that folder."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n_train + n_test, n_features=10, noise=1.0, random_state=seed)
    folder = root / "friedman1"
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "data.txt", np.column_stack([x, y]), fmt="%.10g")
    np.savetxt(folder / "index_features.txt", np.arange(10), fmt="%d")
    np.savetxt(folder / "index_target.txt", [10], fmt="%d")
    np.savetxt(folder / "index_train_0.txt", np.arange(n_train), fmt="%d")
    np.savetxt(folder / "index_test_0.txt", np.arange(n_train, n_train + n_test), fmt="%d")
    (folder / "n_splits.txt").write_text("1\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    folder = write_friedman(args.root, args.n_train, args.n_test)
    print(f"wrote {folder}: {args.n_train} train and {args.n_test} test rows of Friedman #1")


if __name__ == "__main__":
    main()
