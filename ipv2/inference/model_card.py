"""The model card: what a model is, what it was trained on and what it is for.

A radiologist choosing a model, or a colleague receiving one, needs to know before using
it what data and purification it was trained with, at which HU window and sampler steps,
how it scored on validation, what it is meant for and under which licence it is shared.
Training writes a ``card`` object into ``model.json`` (:func:`training_card`: the
dataset described without patient paths, plus the intended use and licence, which a
model's author may edit before sharing, since ``model.json`` is not part of the weights'
hash); :func:`card_text` renders the whole description for ``ipv2 models show`` and the
IPv2Denoise panel, falling back to what older model files hold. Its "Steps" rows show
the steps curve measured at the end of training and the steps ``--steps auto`` takes
from it (:mod:`ipv2.inference.steps_auto`). A student (``ipv2 distill``) also shows its
teacher and the validation RMSE of both, since its speed is bought with some accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ipv2.core.errors import InputError
from ipv2.inference.steps_auto import choose_for_model, one_pass, read_curve
from ipv2.purification.modules import as_module

INTENDED_USE = "research use; not a medical device"
LICENCE = "not stated by the model's author; ask before sharing or clinical evaluation"
CARD_FIELDS = ("trained_on", "intended_use", "licence")


def training_card(
    dataset_root: str | Path,
    manifest: Mapping[str, Any] | None = None,
    *,
    train_kinds: Sequence[str] = (),
) -> dict[str, str]:
    """The ``card`` of a model trained on the dataset folder ``dataset_root``."""
    return {
        "trained_on": _trained_on(Path(dataset_root), manifest or {}, train_kinds),
        "intended_use": INTENDED_USE,
        "licence": LICENCE,
    }


def _trained_on(root: Path, manifest: Mapping[str, Any], kinds: Sequence[str]) -> str:
    """One sentence on the data, naming folders but never full paths (which may name people)."""
    cases = [c for c in manifest.get("cases", []) if isinstance(c, dict)]
    parts = [f"dataset '{root.name}'"]
    if not manifest:  # only the authors' PNG layout comes without a manifest
        parts.append("the authors' PNG layout (train/lq, train/gt)")
    elif cases:
        splits = [str(c.get("split")) for c in cases]
        counts = ", ".join(
            f"{s} {splits.count(s)}" for s in ("train", "val", "test") if s in splits
        )
        parts.append(f"{len(cases)} cases ({counts})")
    source = manifest.get("source")
    if source:
        parts.append(f"built from '{Path(str(source)).name}'")
    params = manifest.get("parameters")
    dose = params.get("dose_fraction") if isinstance(params, dict) else None
    if dose:
        parts.append(f"simulated dose fraction {dose}")
    if kinds:
        parts.append(f"pairs {', '.join(kinds)}")
    return "; ".join(parts)


def _modules(values: Any) -> str:
    try:
        return ", ".join(f"{m.value} {m.title}" for m in sorted(as_module(v) for v in values))
    except (InputError, TypeError, ValueError):  # hand-edited: show it as written
        return ", ".join(str(v) for v in values)


def card_lines(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows of the card, from a ``model.json`` body."""
    card = _dict(meta.get("card"))
    scheme = _dict(meta.get("scheme"))
    params = _dict(scheme.get("params"))
    purification = _dict(meta.get("purification"))
    raw_window = meta.get("window")
    window = raw_window if isinstance(raw_window, list) and len(raw_window) == 2 else ["?", "?"]
    metrics = _dict(meta.get("metrics"))
    weights = _dict(meta.get("weights"))
    modules = purification.get("modules") or []
    rows = [
        ("Model", f"{meta.get('arch')} network, {scheme.get('name')} scheme"),
        ("Role", str(meta.get("role") or "denoiser")),
        *_teacher_rows(meta),
        ("Trained on", str(card.get("trained_on") or _fallback_data(meta))),
        (
            "Purification",
            f"{purification.get('strategy') or 'unknown'} strategy; modules "
            + (_modules(modules) if modules else "none"),
        ),
        ("HU window", f"[{window[0]}, {window[1]}]"),
        *_steps_rows(meta, params.get("steps")),
        (
            "Training",
            f"epoch {meta.get('epoch')}, step {meta.get('step')}, "
            f"{meta.get('weights_kind') or 'raw'} weights, engine {meta.get('engine_version')}",
        ),
        (
            "Validation",
            ", ".join(f"{k} {_number(v)}" for k, v in metrics.items()) or "none recorded",
        ),
        ("Intended use", str(card.get("intended_use") or INTENDED_USE)),
        ("Licence", str(card.get("licence") or LICENCE)),
    ]
    if meta.get("data_fingerprint"):
        rows.append(("Data fingerprint", str(meta["data_fingerprint"])[:16]))
    if weights.get("sha256"):
        size = int(weights.get("bytes") or 0)
        rows.append(("Weights", f"{size / 2**20:.1f} MiB, SHA-256 {weights['sha256']}"))
    return rows


def _steps_rows(meta: Mapping[str, Any], steps: Any) -> list[tuple[str, str]]:
    """The configured steps, what ``--steps auto`` takes, and the measured curve."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        return [("Steps", "?")]
    calls = f"{steps} network call{'s' if steps != 1 else ''} per slice"
    if one_pass(meta):
        return [("Steps", f"{calls} (a one-pass model)")]
    curve, problem = read_curve(meta)
    if curve is None:
        return [("Steps", f"{calls} as configured; --steps auto uses them too, since {problem}")]
    choice = choose_for_model(meta, "auto", configured=steps)
    where = curve.where()
    return [
        ("Steps", f"{calls} as configured; --steps auto takes {choice.count}, {choice.reason}"),
        (
            "Steps curve",
            f"validation RMSE and time per slice by steps: {curve.describe()}"
            + (f" ({where})" if where else ""),
        ),
    ]


def _teacher_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A student's teacher (``ipv2 distill``) and what distilling it cost, when recorded."""
    teacher = _dict(meta.get("teacher"))
    if not teacher:
        return []
    sha = str(teacher.get("sha256") or "?")[:16]
    rows = [
        (
            "Teacher",
            f"'{teacher.get('name')}' ({teacher.get('arch')} network, {teacher.get('scheme')} "
            f"scheme, {teacher.get('steps')} steps), weights SHA-256 {sha}...",
        )
    ]
    figures = _dict(meta.get("distill"))
    if figures:
        rows.append(
            (
                "Distillation",
                f"validation RMSE {_number(figures.get('student_rmse_hu'))} HU in "
                f"{figures.get('student_steps')} step(s) against the teacher's "
                f"{_number(figures.get('teacher_rmse_hu'))} HU in {figures.get('teacher_steps')} "
                f"steps ({figures.get('slices')} slices; "
                f"{_number(figures.get('speedup'))}x faster per slice)",
            )
        )
    return rows


def _dict(value: Any) -> dict[str, Any]:
    """A section of a (possibly hand-edited) ``model.json``, empty unless it is an object."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _fallback_data(meta: Mapping[str, Any]) -> str:
    root = meta.get("data_root")
    return f"dataset '{Path(str(root)).name}'" if root else "not recorded"


def card_text(meta: Mapping[str, Any], *, extra: Sequence[tuple[str, str]] = ()) -> str:
    """The card as aligned ``Label: text`` lines (``extra`` rows first, e.g. name and path)."""
    rows = [*extra, *card_lines(meta)]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label + ':':<{width + 1}} {text}" for label, text in rows)
