"""Divergence report: where, inside the network, a generated model stops matching transformers.

Both models of a generated directory's parity test (the tiny replica, same random weights,
same tokens) are hooked at matching points, in the order the data flows:

    embed (after any scaling) -> per layer: attn_in, attn_out, mlp_in, mlp_out, resid -> final_norm -> logits

The points and the modules that lie between two points (the *suspects*) are computed from the
replica's IR, so they follow the generated code. The first point over tolerance is re-run in
float64: a difference that vanishes there was float32 rounding noise, one that stays is a bug.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...schemas.arch import Architecture
from ..basics.errors import LlmgenError, SourceError
from ..passes.lowering import lower
from ..passes.validate import validate
from ..verification.verify import _import
from ..passes.mixers import KINDS, module_name
from ..passes.weight_map import block_norms

NOISE_RATIO = 10.0  # float64 must shrink the difference at least this much to call it noise
NOISE_RELATIVE = 1e-6  # or leave it within a few float32 ulps of the values compared


@dataclass(frozen=True)
class Point:
    name: str  # e.g. "L0.attn_out"
    module: str  # module path in the generated model (transformers uses the same names)
    side: str  # "in": the module's input; "out": its output
    suspects: str  # what is computed between the previous point and this one
    reference_module: str | None = None  # the module path in transformers, where its in-memory name differs


@dataclass
class Row:
    point: Point
    max_abs: float
    mean_abs: float
    max_ref: float
    tolerance: float
    note: str = ""

    @property
    def over(self) -> bool:
        return not self.max_abs <= self.tolerance  # NaN counts as over


@dataclass
class Report:
    name: str
    rows: list[Row]
    tolerance: float
    settings: str
    first: int | None = None  # index into rows of the first point over tolerance
    float64: Row | None = None  # that point, re-measured in float64
    verdict: str = ""


def _block_suspects(layer: Any, names: Any, where: str) -> tuple[str, str, str]:
    """What lies before attn_in, between attn_out and mlp_in, and between mlp_out and resid."""
    norms = [f"{where}.{name}" for name in block_norms(layer, names)]
    n = norms + ["?"] * 4
    add = "residual add" + (f" (branch x {layer.residual_scale:g})" if getattr(layer, "residual_scale", None) else "")
    if layer.block == "pre_norm":
        return n[0], f"{add}, {n[1]}", add
    if layer.block == "sandwich":
        return n[0], f"{n[1]}, {add}, {n[2]}", f"{n[3]}, {add}"
    if layer.block == "post_norm":
        return "residual stream (no input norm)", f"{n[0]}, {add}", f"{n[1]}, {add}"
    if layer.block == "parallel":
        return n[0], f"{norms[-1] if norms else n[0]} (parallel branch, reads the block input)", f"sum of attention, MLP and {add}"
    return (f"{layer.block} block wiring",) * 3


def _mixer_suspects(arch: Architecture, mixer: Any, module: str) -> str:
    if mixer.kind in KINDS:
        return KINDS[mixer.kind].suspects(mixer, module)
    parts = [f"{module} projections"]
    if getattr(mixer, "output_gate", False):
        parts.append("sigmoid output gate")
    if getattr(mixer, "qk_norm", "none") != "none":
        parts.append("QK-norm")
    rope = getattr(mixer, "rope", None)
    if rope:
        parts.append(f"RoPE (theta {arch.rope_table(rope).theta:g})")
    elif hasattr(mixer, "rope"):
        parts.append("no RoPE (NoPE)")
    if getattr(mixer, "span", None) == "sliding":
        parts.append(f"sliding-window mask ({mixer.window})")
    elif getattr(mixer, "span", None) == "full":
        parts.append("causal mask")
    if getattr(mixer, "scale", None):
        parts.append(f"score scale {mixer.scale:g}")
    if getattr(mixer, "softcap", None):
        parts.append(f"softcap {mixer.softcap:g}")
    return ", ".join(parts)


def points_for(arch: Architecture) -> list[Point]:
    """The comparison points of ``arch``, in data-flow order; module paths from ``arch.names``."""
    names = arch.names
    backbone = f"{names.backbone}."
    embed = f"{backbone}{names.embed}"
    if arch.embedding.learned_positions:
        embed += f" + {backbone}{names.positions}"
    if arch.embedding.scale:
        embed += f" x {arch.embedding.scale:g}"
    pts = [Point("embed", f"{backbone}{names.layers}.0", "in", embed)]
    for layer in arch.layers:
        i, where = layer.index, f"{backbone}{names.layers}.{layer.index}"
        mixer = f"{where}.{module_name(layer.mixer.kind, names)}" if layer.mixer is not None else ""
        ffn = f"{where}.{names.mlp}"
        before_attn, before_mlp, after_mlp = _block_suspects(layer, names, where)
        if layer.mixer is None:  # a feed-forward-only layer: its input norm comes first
            before_mlp = before_attn
        act = getattr(layer.ffn, "activation", "")
        names_moe = getattr(layer.ffn, "names", None)  # experts: transformers 5 may hold the block under another name
        fused = f"{where}.{names_moe.fused_block}" if names_moe and names_moe.fused_block != names.mlp else None
        if layer.mixer is not None:  # a layer of one block has the points of that block only
            pts += [Point(f"L{i}.attn_in", mixer, "in", before_attn),
                    Point(f"L{i}.attn_out", mixer, "out", _mixer_suspects(arch, layer.mixer, mixer))]
        if layer.ffn is not None:
            pts += [Point(f"L{i}.mlp_in", ffn, "in", before_mlp, fused),
                    Point(f"L{i}.mlp_out", ffn, "out", f"{ffn} ({'gated ' if getattr(layer.ffn, 'gated', False) else ''}{act})", fused)]
        pts.append(Point(f"L{i}.resid", where, "out", after_mlp))
    head = f"output head tied to {backbone}{names.embed}" if arch.head.tied else names.head
    for field, words in (("multiplier", "x"), ("divisor", "/"), ("softcap", "soft-cap")):
        if getattr(arch.head, field, None):
            head += f", logits {words} {getattr(arch.head, field):g}"
    final = f"{backbone}{names.final_norm}"
    pts += [Point("final_norm", final, "out", final), Point("logits", "", "out", head)]
    return pts


def _resolve(modules: dict[str, Any], path: str, prefix: str) -> Any:
    """The module at ``path``, or the one unique module ending with it (wrapper models)."""
    if path in modules:
        return modules[path]
    tail = path.split(".", 1)[-1] if path.startswith("model.") else path
    found = [name for name in modules if name.endswith("." + tail)]
    if len(found) > 1 and prefix:
        found = [name for name in found if prefix.rstrip(".") in name.split(".")]
    return modules[found[0]] if len(found) == 1 else None


def _first_tensor(values: Any) -> Any:
    import torch

    if isinstance(values, torch.Tensor):
        return values
    items = values.values() if isinstance(values, dict) else values if isinstance(values, (tuple, list)) else ()
    for item in items:
        if isinstance(item, torch.Tensor):
            return item
    return getattr(values, "logits", None)


def _capture(model: Any, points: list[Point], prefix: str, run: Any, reference: bool = False) -> dict[str, Any]:
    """Run ``run()`` with hooks on ``model``; returns point name -> captured tensor."""
    modules = dict(model.named_modules())
    seen: dict[str, Any] = {}
    handles = []
    for point in points:
        path = point.reference_module if reference and point.reference_module else point.module
        module = _resolve(modules, path, prefix) if path else None
        if module is None:
            continue

        def hook(_m, args, kwargs, output=None, *, name=point.name, side=point.side):
            if side == "out":
                value = _first_tensor(output)
            else:
                value = _first_tensor(args)
                value = value if value is not None else kwargs.get("hidden_states", _first_tensor(kwargs))
            if value is not None:
                seen[name] = value.detach().clone()

        if point.side == "in":
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        seen["logits"] = _first_tensor(run()).detach().clone()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _compare(point: Point, got: Any, want: Any, tolerance: float) -> Row:
    if got is None or want is None:
        missing = "generated" if got is None else "transformers"
        return Row(point, math.nan, math.nan, math.nan, math.inf, note=f"not hooked in {missing}")
    want64 = want.double()
    max_ref = want64.abs().max().item() if want64.numel() else 0.0
    tol = tolerance * max(1.0, max_ref)
    if got.shape != want.shape:
        return Row(point, math.inf, math.inf, max_ref, tol, note=f"shape {tuple(got.shape)} vs {tuple(want.shape)}")
    delta = (got.double() - want64).abs()
    return Row(point, delta.max().item(), delta.mean().item(), max_ref, tol)


def _run_pair(module: Any, arch: Architecture, points: list[Point], checkpoint: str, reference: Any,
              input_ids: Any, dtype: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    generated = module.load_generated_model()
    model = generated.load_checkpoint(checkpoint, generated.Config(**module.MODEL_CONFIG), dtype=dtype)
    reference = reference.to(dtype)
    with torch.no_grad():
        ours = _capture(model, points, "", lambda: model(input_ids))
        theirs = _capture(reference, points, arch.checkpoint_prefix, lambda: reference(input_ids=input_ids), True)
    return ours, theirs


def divergence(directory: Path, *, tolerance: float | None = None, seed: int | None = None) -> Report:
    """Hook the generated model and transformers at every point; compare in float32 (and float64)."""
    import torch

    test_file = directory / "test_parity.py"
    if not test_file.is_file():
        raise SourceError(f"{directory}: no test_parity.py (not a generated model directory)")
    try:
        import transformers
    except ImportError:
        raise LlmgenError("the divergence report needs transformers: pip install 'llmgen[verify]'") from None
    module = _import(test_file)
    arch = validate(lower(module.HF_CONFIG))
    points = points_for(arch)
    tol = module.TOLERANCE if tolerance is None else tolerance
    seed = module.SEED if seed is None else seed

    transformers.utils.logging.disable_progress_bar()
    generator = torch.Generator().manual_seed(seed)
    config = transformers.AutoConfig.for_model(**module.HF_CONFIG)
    experts = {"experts_implementation": "eager"} if hasattr(module, "EXPERTS") else {}  # MoE: the per-expert loop
    reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32,
                                                              **experts)
    module.randomise(reference, generator)
    reference.eval()
    vocab = module.MODEL_CONFIG["vocab_size"] - 8
    input_ids = torch.randint(0, vocab, (module.BATCH, module.SEQ_LEN), generator=generator)
    settings = (f"tiny replica, batch {module.BATCH} x {module.SEQ_LEN} tokens, seed {seed}, "
                f"transformers {transformers.__version__}, tolerance {tol:g} x max(1, max|ref|)")
    try:
        return _measure(module, arch, points, reference, input_ids, Report(directory.name, [], tol, settings))
    except LlmgenError:
        raise
    except Exception as exc:  # a crash in either model: one line, like verify
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LlmgenError(f"{directory}: divergence report crashed: {type(exc).__name__}: {first:.300}") from None


def _measure(module: Any, arch: Architecture, points: list[Point], reference: Any, input_ids: Any,
             report: Report) -> Report:
    import torch

    tol = report.tolerance
    with tempfile.TemporaryDirectory() as checkpoint:
        reference.save_pretrained(checkpoint)
        ours, theirs = _run_pair(module, arch, points, checkpoint, reference, input_ids, torch.float32)
        rows = report.rows = [_compare(p, ours.get(p.name), theirs.get(p.name), tol) for p in points]
        report.first = next((i for i, row in enumerate(rows) if row.over and not row.note.startswith("not hooked")), None)
        if report.first is not None:
            point = points[report.first]
            ours64, theirs64 = _run_pair(module, arch, points, checkpoint, reference, input_ids, torch.float64)
            report.float64 = _compare(point, ours64.get(point.name), theirs64.get(point.name), tol)
            report.verdict = _verdict(rows[report.first], report.float64)
    return report


def _verdict(row32: Row, row64: Row) -> str:
    if row64.note:
        return "a bug (" + row64.note + ")"
    if row64.max_abs <= row64.tolerance:
        return "rounding noise: within tolerance in float64"
    if row64.max_abs * NOISE_RATIO <= row32.max_abs:
        return f"rounding noise: float64 shrinks it {row32.max_abs / max(row64.max_abs, 1e-300):.3g}x"
    if row64.max_abs <= NOISE_RELATIVE * max(1.0, row64.max_ref):
        return (f"rounding noise: it stays below {NOISE_RELATIVE:g} x max|ref| in float64 (the float32 "
                "islands both models keep, such as norms and softmax, still round)")
    return "a bug: the difference stays in float64"


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "0" if value == 0 else f"{value:.2e}"


def format_report(report: Report) -> str:
    """The table, then one line naming the first divergent point and the float64 verdict."""
    width = max(len(row.point.name) for row in report.rows)
    mod_width = max(len(row.point.module + " (in)") for row in report.rows)
    lines = [f"divergence of {report.name}: generated model.py vs transformers ({report.settings})",
             f"{'point':<{width}}  {'module':<{mod_width}}  {'max|d|':>9}  {'mean|d|':>9}  {'max|ref|':>9}"]
    for i, row in enumerate(report.rows):
        where = row.point.module + (" (in)" if row.point.side == "in" else "") if row.point.module else "(output)"
        mark = "  <-- first over tolerance" if i == report.first else (f"  {row.note}" if row.note else "")
        lines.append(f"{row.point.name:<{width}}  {where:<{mod_width}}  {_num(row.max_abs):>9}  "
                     f"{_num(row.mean_abs):>9}  {_num(row.max_ref):>9}{mark}")
    if report.first is None:
        lines.append("every point within tolerance")
        return "\n".join(lines)
    row = report.rows[report.first]
    lines.append(f"first over tolerance: {row.point.name} (max|d| {_num(row.max_abs)} > {_num(row.tolerance)}); "
                 f"computed since the previous point: {row.point.suspects}")
    if report.float64 is not None:
        lines.append(f"float64 re-run at {row.point.name}: max|d| {_num(report.float64.max_abs)} "
                     f"(float32: {_num(row.max_abs)}): {report.verdict}")
    return "\n".join(lines)
