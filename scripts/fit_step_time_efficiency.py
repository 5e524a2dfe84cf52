"""Fit the kernel efficiencies of batchlab.calibration on Vidur's A100 operator profiles.

    .venv/bin/python scripts/fit_step_time_efficiency.py [--profiles DIR] [--check] [--leave-one-out]
    .venv/bin/python scripts/fit_step_time_efficiency.py --validate --profiles DIR --device GPU

Reads ``DIR/*.mlp.csv`` (default ``../shared/profiles/vidur-a100``, beside the checkout; see its
README for the columns), checks each file's sha256 against the README, and fits on tensor
parallel 1, 1 to 4,096 tokens, median times, with the A100 80GB SXM data-sheet peaks:

* each elementwise kernel class (norm, rope, act, add): ``latency_us``, ``memory``, ``fill_rows``;
* the matrix products (QKV, output, gate-and-up, down projections of all four models together):
  ``matmul_latency_us``, ``matmul_compute``, ``matmul_memory``, ``overlap_p`` (``m_tile`` = 128),
  first on each product's time; then, the latency kept, the other three refined on the dense
  time of a forward pass (the figure that is checked);

by least squares on ``log(model / measured)``, each octave of token counts of each model weighted
equally (so 1-64 tokens count as much as 2,048-4,096). It prints the fitted
numbers, the residuals per model and token count of the dense time of a forward pass
(``n_layers · Σ kernels``, the figure ``dense_ms`` is compared with), and a ``KernelEfficiency``
literal. ``--check`` exits 1 when the library's ``VIDUR_A100`` differs from the fit by more than
0.5 % in any number. ``--leave-one-out`` also fits on every three of the four models and prints
the held-out model's dense time, model / measured, at its worst token count: the efficiencies
name no model, and this is how far they carry to shapes they were not fitted on (it exits 1 when
a held-out model leaves ±15 %, the issue's band for a GPU that was not fitted). Nothing is
written.

``--validate`` fits nothing: it prices the profiles in ``DIR`` (e.g. Vidur's
``data/profiling/compute/h100/<model>/mlp.csv``, renamed ``<model>.mlp.csv``) with the stored
``VIDUR_A100`` efficiencies on ``--device`` (a preset of ``batchlab.roofline.GPUS``: the
data-sheet peaks of the GPU the profiles were measured on) and exits 1 when a model's dense time
leaves ±15 % of the measured one at some token count: the check that the efficiencies carry to
a GPU they were not fitted on. ``--device`` without ``--validate`` fits efficiencies for that
GPU from its own profiles (a literal to pass as ``RooflineStepTime(model, gpu, efficiency=...)``;
the library's default stays the A100 fit). ``--n-layers STEM=N`` names the layer count of a model the
library's ``PROFILE_N_LAYERS`` does not know (the profiles hold one layer).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np

from batchlab.calibration import (
    DENSE_KERNELS,
    PROFILE_N_LAYERS,
    VIDUR_A100,
    ElementwiseEfficiency,
    KernelEfficiency,
    efficiency_table,
    profile_dense_ms,
    read_operator_profile,
)
from batchlab.roofline import GPUS, dense_kernel_ms, dense_ms, profile_model_spec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROFILES = REPO.parent / "shared" / "profiles" / "vidur-a100"
FIT_DEVICE = "a100-80gb"
BAND = 0.15
MAX_TOKENS = 4096
MATMULS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
CLASSES = {
    "norm": ("input_layernorm", "post_attention_layernorm"),
    "rope": ("attn_rope",),
    "act": ("mlp_act",),
    "add": ("add",),
}


def least_squares(fun, x0, lower, upper, iters: int = 300):
    """Bounded Levenberg-Marquardt with a forward-difference Jacobian; returns (x, residuals)."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    x = np.clip(np.asarray(x0, float), lo, hi)
    r = fun(x)
    cost = r @ r
    damping = 1e-3
    for _ in range(iters):
        jac = np.empty((r.size, x.size))
        for j in range(x.size):
            h = 1e-6 * max(abs(x[j]), 1e-3)
            xj = x.copy()
            xj[j] = x[j] + h if x[j] + h <= hi[j] else x[j] - h
            jac[:, j] = (fun(xj) - r) / (xj[j] - x[j])
        a, g = jac.T @ jac, jac.T @ r
        for _ in range(40):
            step = np.linalg.solve(a + damping * np.diag(np.diag(a) + 1e-12), -g)
            xn = np.clip(x + step, lo, hi)
            rn = fun(xn)
            if rn @ rn < cost:
                break
            damping *= 4
        else:
            return x, r
        done = abs(cost - rn @ rn) <= 1e-12 * cost
        x, r, cost = xn, rn, rn @ rn
        damping = max(damping / 3, 1e-9)
        if done:
            break
    return x, r


def readme_sha256(folder: Path) -> dict[str, str]:
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8")
    return {name: digest for digest, name in re.findall(r"([0-9a-f]{64})\s+(\S+\.csv)", text)}


def load(
    folder: Path, device: str = FIT_DEVICE, n_layers: dict[str, int] | None = None
) -> list[dict]:
    """The profiles ``folder/*.mlp.csv`` measured on ``device``, with their model specs."""
    layers = {**PROFILE_N_LAYERS, **(n_layers or {})}
    sums = readme_sha256(folder)
    profiles = []
    for path in sorted(folder.glob("*.mlp.csv")):
        stem = path.name.removesuffix(".mlp.csv")
        if stem not in layers:
            print(f"skipping {path.name}: n_layers unknown (--n-layers {stem}=N)", file=sys.stderr)
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        expected = sums.get(path.name)
        if expected is None:
            status = "(no sum in a README to check it against)"
        else:
            status = "ok" if digest == expected else f"MISMATCH (README {expected})"
        print(f"{path.name}: sha256 {digest} {status}")
        table = read_operator_profile(path)
        table = table[table["num_tokens"] <= MAX_TOKENS].reset_index(drop=True)
        spec = profile_model_spec(table, layers[stem], stem)
        tokens = table["num_tokens"].to_numpy(dtype=float)
        octave = np.floor(np.log2(tokens)).astype(int)
        weight = np.zeros_like(tokens)
        for o in np.unique(octave):
            weight[octave == o] = 1.0 / np.sum(octave == o)
        profiles.append(
            {
                "name": stem,
                "table": table,
                "spec": spec,
                "device": GPUS[device],
                "tokens": tokens,
                "w": np.sqrt(weight),
            }
        )
    if not profiles:
        raise SystemExit(f"no profiles in {folder}")
    return profiles


def efficiency_from(matmul: np.ndarray, kinds: dict[str, np.ndarray]) -> KernelEfficiency:
    return KernelEfficiency(
        matmul_latency_us=float(matmul[0]),
        matmul_compute=float(matmul[1]),
        matmul_memory=float(matmul[2]),
        overlap_p=float(matmul[3]),
        m_tile=128,
        **{k: ElementwiseEfficiency(*map(float, v)) for k, v in kinds.items()},
        source="fit in progress",
    )


def fit(profiles: list[dict]) -> KernelEfficiency:
    base = {k: np.array([2.0, 0.5, 50.0]) for k in CLASSES}
    matmul = np.array([4.0, 0.72, 0.8, 3.0])

    def residuals(eff: KernelEfficiency, ops) -> np.ndarray:
        out = []
        for prof in profiles:
            times = dense_kernel_ms(prof["spec"], prof["device"], prof["tokens"], eff)
            for op in ops:
                out.append(prof["w"] * np.log(times[op] / prof["table"][op].to_numpy(float)))
        return np.concatenate(out)

    kinds = dict(base)
    for name, ops in CLASSES.items():

        def fun(x, name=name, ops=ops):
            trial = dict(kinds)
            trial[name] = x
            return residuals(efficiency_from(matmul, trial), ops)

        kinds[name], _ = least_squares(fun, base[name], [0.0, 0.05, 0.0], [30.0, 1.0, 5000.0])

    def dense_residuals(x) -> np.ndarray:
        eff = efficiency_from(x, kinds)
        out = []
        for prof in profiles:
            model = dense_ms(prof["spec"], prof["device"], prof["tokens"], efficiency=eff)
            measured = profile_dense_ms(prof["table"], prof["spec"].n_layers)
            out.append(prof["w"] * np.log(model / measured))
        return np.concatenate(out)

    # per product first; the launch latency is kept from there (it is set by the small,
    # memory-bound products, and trades off against the memory efficiency in a sum), then the
    # efficiencies and the overlap are refined on the dense time of a forward pass
    matmul, _ = least_squares(
        lambda x: residuals(efficiency_from(x, kinds), MATMULS),
        matmul,
        [0.0, 0.1, 0.1, 1.0],
        [30.0, 1.0, 1.0, 30.0],
    )
    latency = matmul[0]
    rest, _ = least_squares(
        lambda y: dense_residuals(np.r_[latency, y]), matmul[1:], [0.1, 0.1, 1.0], [1.0, 1.0, 30.0]
    )
    return efficiency_from(np.r_[latency, rest], kinds)


def report(profiles: list[dict], eff: KernelEfficiency, title: str = "fitted efficiencies") -> None:
    print(f"\n{title}:")
    for key, value in efficiency_table(eff).items():
        print(f"  {key:20s} {value:10.4f}")
    print("\nper kernel, model / measured (min .. max over models and token counts):")
    for op in DENSE_KERNELS:
        ratios = np.concatenate(
            [
                dense_kernel_ms(p["spec"], p["device"], p["tokens"], eff)[op] / p["table"][op]
                for p in profiles
            ]
        )
        print(f"  {op:26s} {ratios.min():.3f} .. {ratios.max():.3f}")
    show = [1, 2, 8, 32, 64, 72, 128, 136, 256, 264, 512, 520, 1024, 2048, 4096]
    print("\ndense time of a forward pass, model / measured, per model and token count:")
    print(
        f"  {'model':18s} {'min':>6s} {'@T':>5s} {'max':>6s} {'@T':>5s}  "
        + " ".join(f"{t:>5d}" for t in show)
    )
    worst, lows, highs = 0.0, [], []
    for p in profiles:
        ratio = dense_ratio(p, eff)
        worst = max(worst, float(np.max(np.abs(np.log(ratio)))))
        lows.append(float(ratio.min()))
        highs.append(float(ratio.max()))
        cells = " ".join(
            f"{ratio[p['tokens'] == t][0]:5.2f}" if np.any(p["tokens"] == t) else "    -"
            for t in show
        )
        lo, hi = int(np.argmin(ratio)), int(np.argmax(ratio))
        print(
            f"  {p['name']:18s} {ratio[lo]:6.3f} {p['tokens'][lo]:5.0f} {ratio[hi]:6.3f} "
            f"{p['tokens'][hi]:5.0f}  {cells}"
        )
    print(f"  all models: {min(lows):.3f} .. {max(highs):.3f} (worst |log ratio| {worst:.4f})")
    ideal = [
        dense_ms(p["spec"], p["device"], p["tokens"], calibrated=False)
        / profile_dense_ms(p["table"], p["spec"].n_layers)
        for p in profiles
    ]
    ideal = np.concatenate(ideal)
    print(f"  data-sheet ideal for comparison: {ideal.min():.3f} .. {ideal.max():.3f}")


def dense_ratio(profile: dict, eff: KernelEfficiency) -> np.ndarray:
    """Dense time of a forward pass, model / measured, at each token count of ``profile``."""
    model = dense_ms(profile["spec"], profile["device"], profile["tokens"], efficiency=eff)
    return model / profile_dense_ms(profile["table"], profile["spec"].n_layers)


def within_band(profile: dict, eff: KernelEfficiency, band: float = BAND) -> bool:
    """Print ``profile``'s dense time, model / measured, at its lowest and highest token count
    ratio; True when it stays within ``1 ± band`` at every token count."""
    ratio = dense_ratio(profile, eff)
    lo, hi = int(np.argmin(ratio)), int(np.argmax(ratio))
    inside = bool(ratio.min() >= 1 - band and ratio.max() <= 1 + band)
    print(
        f"  {profile['name']:18s} {ratio[lo]:.3f} at {profile['tokens'][lo]:.0f} tokens .. "
        f"{ratio[hi]:.3f} at {profile['tokens'][hi]:.0f} tokens "
        f"({'within' if inside else 'OUTSIDE'} ±{band:.0%})"
    )
    return inside


def leave_one_out(profiles: list[dict], band: float = BAND) -> bool:
    """Fit on all models but one, compare on that one; True when every held-out model stays
    within ``1 ± band`` at every token count."""
    print("\nleave one model out: fitted on the others, dense time model / measured:")
    held_in = [within_band(h, fit([p for p in profiles if p is not h]), band) for h in profiles]
    return all(held_in)


def layer_count(text: str) -> tuple[str, int]:
    """``STEM=N`` of ``--n-layers``."""
    stem, sep, n = text.partition("=")
    if not sep or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected STEM=N with N >= 1, got {text!r}")
    return stem, int(n)


def literal(eff: KernelEfficiency) -> str:
    def kind(k: ElementwiseEfficiency) -> str:
        return (
            f"ElementwiseEfficiency(latency_us={k.latency_us:.3f}, memory={k.memory:.4f}, "
            f"fill_rows={k.fill_rows:.4g})"
        )

    return (
        "KernelEfficiency(\n"
        f"    matmul_latency_us={eff.matmul_latency_us:.3f},\n"
        f"    matmul_compute={eff.matmul_compute:.4f},\n"
        f"    matmul_memory={eff.matmul_memory:.4f},\n"
        f"    overlap_p={eff.overlap_p:.3f},\n"
        f"    m_tile={eff.m_tile},\n"
        + "".join(f"    {name}={kind(getattr(eff, name))},\n" for name in CLASSES)
        + ")"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=Path, default=DEFAULT_PROFILES)
    parser.add_argument("--check", action="store_true", help="compare with VIDUR_A100")
    parser.add_argument(
        "--leave-one-out", action="store_true", help="also fit without each model, check on it"
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="fit nothing: check the stored VIDUR_A100 on these profiles and --device",
    )
    parser.add_argument(
        "--device",
        choices=sorted(GPUS),
        default=FIT_DEVICE,
        help=f"the GPU the profiles were measured on (default {FIT_DEVICE})",
    )
    parser.add_argument(
        "--n-layers",
        type=layer_count,
        action="append",
        default=[],
        metavar="STEM=N",
        help="layer count of a profiled model the library does not know (repeatable)",
    )
    args = parser.parse_args(argv)
    if not args.profiles.is_dir():
        print(f"error: no profile folder {args.profiles}", file=sys.stderr)
        return 2
    if args.validate and (args.check or args.leave_one_out):
        print(
            "error: --validate fits nothing; it takes no --check or --leave-one-out",
            file=sys.stderr,
        )
        return 2
    if args.check and args.device != FIT_DEVICE:
        print(
            f"error: --check compares with VIDUR_A100, a fit on {FIT_DEVICE} profiles",
            file=sys.stderr,
        )
        return 2
    profiles = load(args.profiles, args.device, dict(args.n_layers))
    if args.validate:
        report(profiles, VIDUR_A100, f"stored efficiencies (VIDUR_A100), priced on {args.device}")
        print(f"\nwithin ±{BAND:.0%} of the measured dense time at every token count?")
        return 0 if all([within_band(p, VIDUR_A100) for p in profiles]) else 1
    eff = fit(profiles)
    report(profiles, eff)
    if args.device == FIT_DEVICE:
        target = "batchlab.calibration.VIDUR_A100"
    else:  # a user's own GPU: the numbers go to RooflineStepTime(..., efficiency=...)
        target = f"{args.device} (RooflineStepTime(model, {args.device!r}, efficiency=...))"
    print(f"\nKernelEfficiency literal for {target}:\n" + literal(eff))
    status = 0
    if args.leave_one_out and not leave_one_out(profiles):
        status = 1
    if args.check:
        fitted, stored = efficiency_table(eff), efficiency_table(VIDUR_A100)
        off = {
            k: (fitted[k], stored[k])
            for k in fitted
            if abs(fitted[k] - stored[k]) > 0.005 * max(abs(stored[k]), 1.0)
        }
        for k, (a, b) in off.items():
            print(f"check: {k} fitted {a:.4f}, stored {b:.4f}", file=sys.stderr)
        print("check:", "stored numbers match the fit" if not off else "MISMATCH")
        status = max(status, 1 if off else 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
