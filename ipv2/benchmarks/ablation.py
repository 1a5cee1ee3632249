"""The purification ablation on the demo's phantom, per region against the noise-free truth.

``python -m ipv2.benchmarks.ablation --out DIR`` builds one dataset per row from the
demo's phantom patients (same seed, sizes and pairs as ``ipv2 demo``), trains the demo's
FFM on each with the same step budget, denoises the test patient and measures bias, RMSE
and noise SD per truth region (background, body without the lungs, lung). It prints a
Markdown table (the one in docs/ablation.md) and writes ``ablation.json`` and
``ablation.md`` into DIR.

Rows:

- ``plain``: the real pairs as they are, ``(U, N)``: no purification.
- ``ipv1``: the previous strategy, ``M*N + (1-M)*((1-T)*U + T*N)``.
- ``ipv2-1``, ``ipv2-12``: IPv2's Module 1 (Remove Background), then Modules 1 and 2
  (Add Noise), with Module 1's region as the engine builds it (``L`` plus the outline
  band, background in one image only).
- ``ipv2-1-paper-L``, ``ipv2-12-paper-L``: the same with the paper's literal ``L``, which
  left the band to the input's U and the label's N (issue 14's body regression).

Module 3 (Remove Noise) changes only the evaluation label, so the network trained for
``{1, 2, 3}`` is the ``{1, 2}`` network; the table says so instead of training it twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.core.events import Reporter
from ipv2.core.hu_window import HUWindow
from ipv2.demo.pipeline import DemoConfig, write_phantoms
from ipv2.purification.modules import Module
from ipv2.purification.recipe import Recipe


@dataclass(frozen=True)
class Row:
    """One ablation row: how its dataset is built and which kinds the network learns."""

    name: str
    title: str
    recipe: Recipe
    match_uldct: bool = False
    train_kinds: tuple[str, str] | None = None  # None: the dataset's input -> ndct


def _ipv2(modules: set[Module], *, literal: bool) -> Recipe:
    return Recipe(strategy="ipv2", modules=frozenset(modules), align_outline=not literal)


M1 = {Module.REMOVE_BACKGROUND}
M12 = {Module.REMOVE_BACKGROUND, Module.ADD_NOISE}
ROWS: tuple[Row, ...] = (
    Row("plain", "plain (U, N) pairs", Recipe.for_strategy("ipv1"), train_kinds=("uldct", "ndct")),
    Row("ipv1", "IPv1", Recipe.for_strategy("ipv1")),
    Row("ipv2-1-paper-L", "IPv2 {1}, paper's literal L", _ipv2(M1, literal=True)),
    Row("ipv2-1", "IPv2 {1}", _ipv2(M1, literal=False)),
    Row(
        "ipv2-12-paper-L",
        "IPv2 {1,2} = {1,2,3}, paper's literal L",
        _ipv2(M12, literal=True),
        match_uldct=True,
    ),
    Row("ipv2-12", "IPv2 {1,2} = {1,2,3}", _ipv2(M12, literal=False), match_uldct=True),
)
ROW_NAMES = tuple(r.name for r in ROWS)


def run_ablation(
    out_dir: Path,
    rows: Sequence[Row] = ROWS,
    *,
    config: DemoConfig | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train and measure every row into ``out_dir`` (a new folder); returns the results."""
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.demo.pipeline import measure_regions, train_demo_ffm
    from ipv2.inference.denoise import DenoiseOptions, denoise_volume
    from ipv2.io.atomic import write_json_atomic
    from ipv2.io.checkpoints import load_checkpoint

    cfg = config or DemoConfig()
    cfg.check()
    rep = reporter or Reporter()
    if out_dir.exists():
        raise InputError(f"{out_dir} exists; give a new folder for the ablation")
    out_dir.mkdir(parents=True)
    window = HUWindow(*cfg.window)
    cases = write_phantoms(cfg, out_dir / "phantom", rep)
    test = cases[-1]
    results: dict[str, Any] = {"config": cfg.__dict__ | {"mults": list(cfg.mults)}, "rows": {}}
    results["rows"]["uldct (input)"] = {"title": "input uLDCT (no denoising)"} | measure_regions(
        test, test.uldct.array, window
    )
    for row in rows:
        t0 = time.perf_counter()
        rep.log(f"ablation row {row.name}: {row.title}")
        data = out_dir / f"dataset-{row.name}"
        build = BuildConfig(recipe=row.recipe, match_uldct=row.match_uldct, window=window)
        build_dataset(out_dir / "phantom" / "pairs.csv", data, build, reporter=rep)
        model = train_demo_ffm(
            cfg, data, out_dir / f"model-{row.name}", reporter=rep, train_kinds=row.train_kinds
        )
        options = DenoiseOptions(steps=cfg.sampler_steps, device=cfg.device)
        out, _ = denoise_volume(test.uldct, load_checkpoint(model), options)
        results["rows"][row.name] = {
            "title": row.title,
            "formulas": row.recipe.describe() if row.train_kinds is None else None,
            "seconds": round(time.perf_counter() - t0, 1),
        } | measure_regions(test, out.array, window)
        write_json_atomic(out_dir / "ablation.json", results)
    table = markdown_table(results)
    (out_dir / "ablation.md").write_text(table + "\n")
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """Bias / RMSE (HU) per region, one line per row, as in docs/ablation.md."""
    lines = [
        "| row | background bias / RMSE | body bias / RMSE | lung bias / RMSE |",
        "|---|---|---|---|",
    ]
    for row in results["rows"].values():
        cells = [
            f"{row[f'bias_{r}_hu']:+.0f} / {row[f'rmse_{r}_hu']:.0f}"
            for r in ("background", "body", "lung")
        ]
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipv2.benchmarks.ablation",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--out", type=Path, required=True, help="new folder for the results")
    parser.add_argument(
        "--rows", default=",".join(ROW_NAMES), help=f"comma list of {', '.join(ROW_NAMES)}"
    )
    parser.add_argument("--steps", type=int, default=DemoConfig.steps, help="training steps")
    parser.add_argument("--size", type=int, default=DemoConfig.size, help="phantom size (px)")
    parser.add_argument("--slices", type=int, default=DemoConfig.slices)
    parser.add_argument("--cases", type=int, default=DemoConfig.cases)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ROW_NAMES))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROW_NAMES)}")
    cfg = replace(
        DemoConfig(),
        steps=args.steps,
        size=args.size,
        slices=args.slices,
        cases=args.cases,
        threads=args.threads,
        crop=min(DemoConfig.crop, args.size),
    )
    try:
        results = run_ablation(args.out, [r for r in ROWS if r.name in wanted], config=cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    print(json.dumps({k: v.get("seconds") for k, v in results["rows"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
