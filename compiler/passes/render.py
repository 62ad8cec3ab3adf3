"""Pass 5, rendering: IR + weight map -> Python source text through jinja2 templates.

This module decides *what* to print (which components, which Config fields, finished
literal values); the templates decide *how* it looks. Every value reaches a template
already formatted as a Python literal (``repr``) or as a validated identifier.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ...schemas.arch import Architecture
from .. import __version__
from ..basics.errors import LlmgenError
from .literals import activation, derived_field, identifier, literal, safe_comment, scale_derivations
from .literals import field as _field
from .lowering import family_titles
from ..insight.describe import features, fused_attention, layer_pattern
from ..basics.dtypes import loader_context
from .rope_fields import rope_config_fields, rope_context
from .render_mla import mla_config_fields, mla_context, mla_names, mla_of
from .render_moe import moe_config_fields, moe_context
from .render_dsv4 import hyper_context
from .mixers import KINDS, attention_layers, first_attention, letter_of, recurrent_kinds
from .render_linear import linear_config_fields, mixed_kinds, linear_context, mixer_maps, nested_context
from .render_chunked import chunked_config_fields, chunked_context
from .render_layer_extras import extras_config_fields, extras_context, static_cache
from .render_calls import attention_inputs, ffn_build, layer_inputs
from .render_parallel import parallel_config_fields, parallel_context
from .weight_map import WeightEntry, block_norms, ffn_kinds
from .render_blocks import WORDS as BLOCK_LETTERS, blocks_context, no_attention, single_block

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"


@dataclass(frozen=True)
class Provenance:
    """Where the config came from; printed in headers only, never as code."""

    source: str
    revision: str
    command: str

    @property
    def label(self) -> str:
        return safe_comment(f"{self.source}@{self.revision}")


def config_values(arch: Architecture) -> list[dict[str, str]]:
    """The generated ``Config`` dataclass: one field per number the code reads."""
    layer = arch.layers[0]
    attn, ffn = first_attention(arch), ffn_kinds(arch).get("mlp")  # the dense MLP, if any layer has one
    fields = [
        _field("vocab_size", "int", arch.embedding.vocab_size),
        *([_field("pad_token_id", "int", arch.embedding.padding_idx, "the padding token: its embedding row gets no gradient")]
          if arch.embedding.padding_idx is not None else []),
        _field("hidden_size", "int", arch.hidden_size),
        *([_field("intermediate_size", "int", ffn.intermediate_size)] if ffn else []),
        *moe_config_fields(arch),
        _field("num_hidden_layers", "int", arch.num_layers),
        *(mla_config_fields(attn) if mla_of(arch) else [
            _field("num_attention_heads", "int", attn.num_heads),
            _field("num_key_value_heads", "int", attn.num_kv_heads),
            _field("head_dim", "int", attn.head_dim),
        ] if attn else []),
        *linear_config_fields(arch),
        _field("norm_eps", "float", layer.norm.eps),
        *([derived_field("attention_scale", attn.scale, scale_derivations(attn), "multiplies q.k")] if attn else []),
        *([_field("max_position_embeddings", "int", arch.max_position_embeddings, "trained context length")]
          if attn else []),
    ]
    kinds = layer_kinds(arch)
    if len(kinds) > 1:
        fields.append(_field("layer_pattern", "str", layer_pattern(arch), pattern_legend(arch, short=True)))
    windows = [lay.mixer.window for lay in attention_layers(arch) if lay.mixer.span == "sliding"]
    if windows:
        fields.append(_field("sliding_window", "int", windows[0], "keys visible to a query, itself included"))
    fields += chunked_config_fields(arch)
    fields += rope_config_fields(arch)
    fields += extras_config_fields(arch) + parallel_config_fields(arch)
    if arch.embedding.positions_offset:
        fields.append(_field("position_offset", "int", arch.embedding.positions_offset,
                             "position p reads row p + position_offset of the position table"))
    if arch.embedding.scale is not None:
        fields.append(derived_field("embed_scale", arch.embedding.scale, [(f"math.sqrt({arch.hidden_size})", "sqrt(hidden_size)")],
                               "multiplies the embeddings"))
    if layer.residual_scale is not None:
        fields.append(_field("residual_multiplier", "float", layer.residual_scale, "scales each branch's output"))
    if arch.head.multiplier is not None:
        fields.append(_field("logit_scale", "float", arch.head.multiplier, "multiplies the logits"))
    if arch.head.divisor is not None:
        fields.append(_field("logits_scaling", "float", arch.head.divisor, "divides the logits"))
    if getattr(attn, "alibi", None) is not None and attn.alibi.max_bias is not None:
        fields.append(_field("alibi_bias_max", "float", attn.alibi.max_bias, "ALiBi: the largest slope exponent"))
    if getattr(attn, "clip_qkv", None) is not None:
        fields.append(_field("clip_qkv", "float", attn.clip_qkv, "q, k and v are clamped to [-clip_qkv, clip_qkv]"))
    if getattr(attn, "softcap", None) is not None:
        fields.append(_field("attn_logit_softcapping", "float", attn.softcap))
    if arch.head.softcap is not None:
        fields.append(_field("final_logit_softcapping", "float", arch.head.softcap))
    return fields


def layer_kinds(arch: Architecture) -> list[dict[str, Any]]:
    """Distinct kinds of layer, in order of first appearance; ``args``: the names DecoderModel passes
    to such a layer after x: its mask, then one per attention input (render_calls.attention_inputs: its
    RoPE table's cos and sin, the query scale, the ALiBi bias), None where it has none."""
    inputs = [t["name"] for t in attention_inputs(arch)]
    blank = ["None"] * (1 + len(attention_inputs(arch, alibi=False)))  # a layer without attention
    kinds: dict[str, dict[str, Any]] = {}
    for layer, letter in zip(arch.layers, layer_pattern(arch)):
        if letter in kinds:
            continue
        if layer.mixer is None or letter_of(layer):  # recurrent or feed-forward only: no mask, no positions
            kinds[letter] = {"letter_literal": literal(letter), "linear": True, "sliding": False, "chunked": False,
                             "temperature": False, "rope": "", "args": blank,
                             "words": KINDS[layer.mixer.kind].short_words if layer.mixer else "no attention"}
            continue
        rope = identifier(layer.mixer.rope) if layer.mixer.rope else ""
        temperature = getattr(layer.mixer, "temperature", None) is not None
        values = {"cos": f"{rope}_cos" if rope else "None", "sin": f"{rope}_sin" if rope else "None",
                  "q_scale": "q_scale" if temperature else "None", "alibi": "alibi"}
        kinds[letter] = {"letter_literal": literal(letter), "linear": False, "sliding": layer.mixer.span == "sliding",
                         "chunked": layer.mixer.span == "chunked", "temperature": temperature, "rope": rope,
                         "args": [f"{layer.mixer.span}_mask"] + [values[name] for name in inputs]}
    return list(kinds.values())


def model_context(arch: Architecture, weights: list[WeightEntry], prov: Provenance) -> dict[str, Any]:
    """Everything the model templates need. Keys other than config_fields/features/provenance
    are structural: two models with equal structure render the same code."""
    if arch.hyper is not None:  # hyper-connected streams: blocks of their own (templates/model/hyper/)
        return hyper_context(arch, prov)
    layer = arch.layers[0]
    attn, ffn, norm = first_attention(arch), ffn_kinds(arch).get("mlp"), layer.norm  # ffn: the dense MLP, if any
    grouped = attn is not None and attn.num_kv_heads < attn.num_heads
    attns = attention_layers(arch)
    has_rope = any(lay.mixer.rope for lay in attns)
    has_nope = has_rope and any(lay.mixer.rope is None for lay in attns)
    alibi = getattr(attn, "alibi", None)
    hybrid, extras = mixed_kinds(arch), extras_context(arch)  # each computed once, used twice below
    names = {key: identifier(value) for key, value in arch.names if key not in ("attn_checkpoint", "mlp_checkpoint")}  # every field (dumps leave some out)
    return {
        "version": __version__,
        "source": prov.label,
        "command": safe_comment(prov.command),
        "title": family_titles()[arch.model_type],
        "features": features(arch),
        "config_fields": config_values(arch),
        "n": names,
        "conv1d": arch.linear_layout == "in_out",
        "norm": {"kind": norm.kind, "offset": literal(norm.weight_offset) if norm.weight_offset else "",
                 "weight_in_compute_dtype": norm.weight_in_compute_dtype, "bias": norm.bias,
                 "plain": not norm.weight,
                 "torch_layernorm": norm.kind == "layernorm" and norm.compute_dtype == "input",
                 # the class make_norm (macros.j2) builds: the file's LayerNorm is float32 or has a weight offset
                 "module": "RMSNorm" if norm.kind == "rmsnorm" else "LayerNorm"
                 if norm.weight_offset or norm.compute_dtype != "input" else "nn.LayerNorm"},
        **rope_context(arch),
        "has_rope": has_rope,
        "has_nope": has_nope,
        "attn_inputs": attention_inputs(arch),  # after (x, mask), in the attention's and the layer's forward
        "block_inputs": attention_inputs(arch, alibi=False),  # an attention block's, in one-block layers
        "alibi": {"slopes": alibi.slopes, "from_last_key": alibi.from_last_key} if alibi else None,
        **chunked_context(arch),
        "has_sliding": any(lay.mixer.span == "sliding" for lay in attns),
        "has_full": any(lay.mixer.span == "full" for lay in attns),
        "static_cache": static_cache(arch),  # CausalLM.enable_static_cache
        **linear_context(arch),
        "attn_in_hybrid": bool(attns),
        "mixer_words": " or ".join([kind.title for kind, _ in recurrent_kinds(arch)] + (["attention"] if attns else [])),
        "single": single_block(arch),
        "blocks": single_block(arch) or no_attention(arch),  # layers built per letter in layer.py.j2's first branch
        "no_attention": no_attention(arch),
        "hybrid": hybrid,
        "layer_inputs": layer_inputs(arch, hybrid or single_block(arch)),
        "layer_kinds": layer_kinds(arch),
        "x": extras, **parallel_context(arch),
        "pattern_legend": pattern_legend(arch),
        "mla": mla_context(arch),
        "ml": mla_names(arch),
        "attn": None if mla_of(arch) or attn is None else {
            "summary": ("Grouped-query" if grouped else "Multi-head") + " self-attention"
            + (" with RoPE" if has_rope else "")
            + (", written out eagerly (or torch's fused kernel: eager=False)." if fused_attention(attn)
               else ", written out eagerly."),
            "fused": fused_attention(attn),
            "qkv": attn.qkv, "qkv_blocks": literal(attn.qkv_blocks) if attn.qkv_blocks else "", "q_bias": attn.q_bias, "k_bias": attn.k_bias, "v_bias": attn.v_bias,
            "o_bias": attn.o_bias, "clip_qkv": attn.clip_qkv is not None, "output_norm": attn.output_norm, "scale_queries": attn.scale_queries, "alibi": attn.alibi is not None, "qk_norm": attn.qk_norm, "softcap": attn.softcap is not None, "grouped": grouped,
            "sinks": attn.sinks, "output_gate": attn.output_gate, "qk_norm_after_rope": attn.qk_norm_after_rope,
        },
        "mlp": {
            "summary": ("Gated feed-forward: down(act(gate(x)) * up(x))." if ffn.gated
                        else "Feed-forward: down(act(up(x)))."),
            "gated": ffn.gated, "fused": ffn.fused_gate_up, "bias": ffn.bias, **activation(ffn.activation),
            "inner_norm": ffn.inner_norm, "xielu": ffn.activation == "xielu",
        } if ffn else None,
        "moe": moe_context(arch),
        "ffn": ffn_build(arch),
        **blocks_context(arch, layer_pattern(arch)),
        "block": {
            "kind": layer.block,
            "norms": [identifier(name) for name in block_norms(layer, arch.names)],
            "residual_scale": layer.residual_scale is not None,
            "branches_first": layer.parallel_sum == "branches_first",
            "summary": BLOCK_SUMMARY[layer.block if layer.block != "parallel" else f"parallel{layer.parallel_norms}"],
        },
        "embedding": {"padding": arch.embedding.padding_idx is not None, "scale": arch.embedding.scale is not None, "scale_in_dtype": arch.embedding.scale_in_dtype,
                      "learned_positions": arch.embedding.learned_positions is not None,
                      "norm": arch.embedding.norm is not None, "offset": arch.embedding.positions_offset != 0,
                      "sinusoidal": arch.embedding.sinusoidal_positions},
        "head": {"tied": arch.head.tied, "bias": arch.head.bias, "softcap": arch.head.softcap is not None,
                 "multiplier": arch.head.multiplier is not None, "divisor": arch.head.divisor is not None},
        "weights": [{"checkpoint_literal": literal(e.checkpoint), "param_literal": literal(e.param), "kind": e.ffn_kind,
                     "mixer": e.mixer_kind} for e in _unique_keys(weights)],
        "mixer_maps": mixer_maps(arch, weights),
        # the checkpoint's names are the parameters' own: weights.py lists the model's state dict, no map
        "identity_map": all(e.checkpoint == e.param and not e.head_count for e in weights)
        and not (hybrid or set(ffn_kinds(arch)) - {"mlp"} or extras.get("per_layer_attention")),
        "head_keys": [{"checkpoint_literal": literal(e.checkpoint), "field_literal": literal(e.head_count)}
                      for e in weights if e.head_count],
        "fp8": {"block_literal": literal(arch.fp8.block[0]) and f"({arch.fp8.block[0]}, {arch.fp8.block[1]})",
                "block_words": f"{arch.fp8.block[0]}x{arch.fp8.block[1]}"} if arch.fp8 else None,
        "mxfp4": {"tensors_literal": repr(tuple(identifier(t) for t in arch.mxfp4.tensors))} if arch.mxfp4 else None,
        "safetensors": loader_context(),  # compiler/basics/dtypes.py: the same rule as the compile-time check
        "modelopt": {"formats": arch.modelopt.formats, "group_literal": literal(arch.modelopt.nvfp4_group)}
        if arch.modelopt else None,
        "extra_layers": literal(arch.extra_checkpoint_layers) if arch.extra_checkpoint_layers else "",
        "layer_prefix_literal": literal(f"{arch.checkpoint_prefix}{arch.names.backbone}.{arch.names.layers}."),
        "ignored_literal": literal(arch.checkpoint_prefix + arch.names.head + ".weight"),
        "prefix_literal": literal(arch.checkpoint_prefix) if arch.checkpoint_prefix else "",
        "skipped_literal": repr(tuple(arch.skipped_prefixes)) if arch.skipped_prefixes else "",
        "legacy": {"bare": arch.bare_decoder_checkpoints, "stale": bool(arch.stale_layer_buffers),
                   "backbone_literal": literal(f"{arch.checkpoint_prefix}{arch.names.backbone}."),
                   "stale_literal": "(" + ", ".join(literal(name) for name in arch.stale_layer_buffers)
                   + ("," if len(arch.stale_layer_buffers) == 1 else "") + ")",
                   "stale_words": ", ".join(arch.stale_layer_buffers), **nested_context(arch)}
        if arch.bare_decoder_checkpoints or arch.stale_layer_buffers or arch.nested_decoder else None,
    }


def _unique_keys(weights: list[WeightEntry]) -> list[WeightEntry]:
    """One entry per checkpoint key (a key's shape may differ between groups of layers: one map entry)."""
    seen: set[str] = set()
    return [e for e in weights if not (e.checkpoint in seen or seen.add(e.checkpoint))]


LETTERS = {"S": "S = sliding-window attention", "C": "C = chunked attention", "F": "F = full attention",
           "N": "N = NoPE (full attention, no RoPE)", **BLOCK_LETTERS}


def letter_words() -> dict[str, str]:
    """Every pattern letter's meaning: the attention spans', the registered recurrent kinds', the single blocks'."""
    from .mixers import KINDS

    return {**LETTERS, **{k.letter: f"{k.letter} = {k.words}" for k in KINDS.values() if k.letter not in LETTERS}}


def pattern_legend(arch: Architecture, short: bool = False) -> str:
    """What the letters of this model's layer pattern mean (only the letters it uses; recurrent kinds after)."""
    used = set(layer_pattern(arch))
    words = [text for letter, text in letter_words().items() if letter in used]
    return ", ".join(w.replace(" attention", "") if short and "NoPE" not in w else w for w in words)


BLOCK_SUMMARY = {
    "pre_norm": "Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)).",
    "sandwich": "Sandwich block: x + post_norm(f(pre_norm(x))) for attention, then for the MLP.",
    "post_norm": "Post-norm block: x + norm(attn(x)), then x + norm(mlp(x)) (the norm inside the residual).",
    "parallel1": "Parallel block: x + attn(norm(x)) + mlp(norm(x)), one norm shared by both branches.",
    "parallel2": "Parallel block: x + attn(norm1(x)) + mlp(norm2(x)), both branches read the same x.",
}


STRUCTURE_EXEMPT = ("features", "config_fields", "source", "command", "title")


def structure(context: dict[str, Any]) -> dict[str, Any]:
    """The part of a context that decides which code is printed."""
    return {k: v for k, v in context.items() if k not in STRUCTURE_EXEMPT}


class TemplateError(LlmgenError):
    """A template (a user's --templates, usually) that cannot be read, parsed or rendered."""


class _Loader(jinja2.FileSystemLoader):
    """FileSystemLoader whose non-UTF-8 file is one error naming the file and line."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Any]:
        try:
            return super().get_source(environment, template)
        except UnicodeDecodeError:
            for base in self.searchpath:
                path = Path(base, *template.split("/"))
                if path.is_file():
                    data = path.read_bytes()
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError as err:
                        line = data[: err.start].count(b"\n") + 1
                        raise TemplateError(f"{path}: line {line}: not UTF-8 text ({err.reason})") from None
            raise


def environment(user_templates: Path | None = None) -> jinja2.Environment:
    """Templates from ``user_templates`` shadow the built-ins by relative path. The built-ins alone:
    one environment per process, so each template is parsed and compiled once (jinja reloads a
    template whose file changed), not at every render."""
    return _builtin_environment() if user_templates is None else _environment(user_templates)


@functools.lru_cache(maxsize=1)
def _builtin_environment() -> jinja2.Environment:
    return _environment(None)


def _environment(user_templates: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if user_templates is not None:
        loaders.append(_Loader(str(user_templates)))
    loaders.append(_Loader(str(BUILTIN_TEMPLATES)))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render(template: str, context: dict[str, Any], user_templates: Path | None = None) -> str:
    """Render one top-level template (pass 5 of the pipeline). A template that cannot be parsed
    or rendered, or (for ``*.py.j2``) renders code that is not Python, is one TemplateError
    naming the template file and line."""
    try:
        text = environment(user_templates).get_template(template).render(**context)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{err.filename or err.name}: line {err.lineno}: template syntax error: {err.message}") from None
    except jinja2.TemplateError as err:
        raise TemplateError(f"{_where(err, template)}: {type(err).__name__}: {err.message or err}") from None
    except (TemplateError, RecursionError):
        raise
    except Exception as err:  # a user's template may compute anything; ours crashing is our bug
        if user_templates is None:
            raise
        raise TemplateError(f"{_where(err, template)}: {type(err).__name__}: {str(err)[:200]}") from None
    if template.endswith(".py.j2"):
        _check_python(text, template, user_templates)
    return text


def _where(err: BaseException, template: str) -> str:
    """``file: line N`` of the innermost template frame of ``err`` (jinja maps frames to templates)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith(".j2")]
    return f"{frames[-1].filename}: line {frames[-1].lineno}" if frames else template


def _check_python(text: str, template: str, user_templates: Path | None) -> None:
    try:
        compile(text, template, "exec", dont_inherit=True)
    except SyntaxError as err:
        bad = text.splitlines()[err.lineno - 1].strip() if err.lineno and 0 < err.lineno <= text.count("\n") + 1 else ""
        found = ""
        for base in ([user_templates] if user_templates else []) + [BUILTIN_TEMPLATES]:
            for path in sorted(Path(base).rglob("*.j2")) if bad else ():
                lines = path.read_bytes().decode("utf-8", "replace").splitlines()
                hit = next((i for i, line in enumerate(lines, 1) if line.strip() == bad), None)
                if hit and not found:
                    found = f" (from {path}: line {hit})"
        raise TemplateError(f"{template} renders code that is not valid Python: line {err.lineno}: {err.msg}:"
                            f" {bad[:80]!r}{found}") from None


def config_kwargs(arch: Architecture) -> dict[str, Any]:
    """The generated Config's field values for ``arch`` (used for tiny replicas)."""
    return {f["name"]: f["value"] for f in config_values(arch)}
