"""Architecture diagrams (``llmgen card --format svg``, ``llmgen diff --format svg``): every size the
diagram writes is checked against the IR for every catalog model, the stack's ``× N`` against the
layer count; output is byte-identical across processes and equals the committed README diagrams;
config strings are XML-escaped; an IR kind the diagram does not know yet draws generically."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import BaseModel

from llmgen.compiler.insight.card import card, load_model
from llmgen.compiler.basics.catalog import catalog_entries
from llmgen.compiler.basics.cli import main
from llmgen.compiler.insight.diagram import diagram_svg, figure, layer_kinds, render_svg
from llmgen.compiler.basics.errors import LlmgenError
from llmgen.compiler.insight.gallery_figures import figures
from llmgen.compiler.passes.load import load_config
from llmgen.compiler.passes.lowering import lower
from llmgen.compiler.passes.validate import validate
from llmgen.schemas.arch import Layer

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
README_DIAGRAMS = {"google/gemma-3-1b-it": "docs/diagrams/gemma-3-1b-it.svg",
                   "deepseek-ai/DeepSeek-V3": "docs/diagrams/DeepSeek-V3.svg"}


def _archs():
    out = []
    for entry in catalog_entries():
        try:
            out.append((entry.id, validate(lower(load_config(str(entry.path), prefer="path").raw))))
        except LlmgenError:
            continue
    return out


ARCHS = _archs()


def texts(svg: str) -> list[tuple[str, str]]:
    """(class, text) of every <text>, from the parsed XML (so escaping is undone exactly once)."""
    root = ET.fromstring(svg.encode())
    return [(node.get("class", ""), node.text or "") for node in root.iter(f"{SVG}text")]


def expected_labels(arch) -> set[str]:
    """The size labels a diagram of ``arch`` must show, written from the IR's own fields."""
    want = {f"vocab {arch.embedding.vocab_size} × hidden {arch.hidden_size}",
            f"residual stream: hidden {arch.hidden_size}",
            f"hidden {arch.hidden_size} → vocab {arch.embedding.vocab_size}",
            "tied to the embedding" if arch.head.tied else "separate weights (lm_head)"}
    for layer in arch.layers:
        m, f = layer.mixer, layer.ffn
        if m is None:  # a layer that is only a feed-forward block (Nemotron-H)
            pass
        elif m.kind == "attention":
            kv_word = "head" if m.num_kv_heads == 1 else "heads"
            want |= {f"q: {m.num_heads} heads × {m.head_dim}", f"kv: {m.num_kv_heads} {kv_word} × {m.head_dim}"}
            if m.span == "sliding":
                want.add(f"sliding window {m.window}")
            if m.num_kv_heads not in (1, m.num_heads):
                want.add(f"Grouped-query attention {m.num_heads // m.num_kv_heads}:1")
        elif m.kind == "mla":
            want |= {f"{m.num_heads} heads; q/k {m.qk_nope_head_dim} + {m.qk_rope_head_dim} RoPE, v {m.v_head_dim}",
                     f"KV latent {m.kv_lora_rank} + RoPE key {m.qk_rope_head_dim}"}
            if m.q_lora_rank:
                want.add(f"q low-rank {m.q_lora_rank}")
        if f is None:  # a layer that is only a mixer
            continue
        if f.kind == "mlp":
            want |= {f"intermediate {f.intermediate_size}",
                     f"{arch.hidden_size} → {f.intermediate_size} → {arch.hidden_size}"}
        else:
            want.add(f"{f.num_experts} experts, top-{f.top_k}")
            want.add(f"experts: intermediate {f.intermediate_size}")
            if f.shared_expert_size:
                want.add(f"+ shared expert: intermediate {f.shared_expert_size}")
    return want


def ir_integers(arch) -> set[int]:
    """Every integer of the IR (and the derived counts a diagram may print: layer counts, head ratios)."""
    found: set[int] = set(range(arch.num_layers + 1))

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, float) and value.is_integer():
            found.add(int(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            found.add(value)

    walk(arch.model_dump())
    for layer in arch.layers:
        if getattr(layer.mixer, "kind", None) == "attention":
            found.add(layer.mixer.num_heads // layer.mixer.num_kv_heads)
    return found


@pytest.mark.parametrize("hub_id, arch", ARCHS, ids=[hub_id for hub_id, _ in ARCHS])
def test_labels_match_the_ir(hub_id, arch):
    svg = diagram_svg(arch, hub_id)
    shown = texts(svg)
    lines = "\n".join(text for _, text in shown)
    missing = [label for label in expected_labels(arch)
               if not re.search(rf"(?<![\w.]){re.escape(label)}(?![\w.])", lines)]
    assert not missing, missing
    totals = [text for cls, text in shown if cls == "lgd-total"]
    assert totals == [f"× {arch.num_layers}"]
    counts = [int(text.removeprefix("× ")) for cls, text in shown if cls == "lgd-count"]
    assert sum(counts) == arch.num_layers and len(counts) == len(layer_kinds(arch))
    # no size the IR does not have: every whole number in a box is one of the IR's integers
    allowed = ir_integers(arch)
    boxes = [text for cls, text in shown if cls in ("lgd-t", "lgd-l", "lgd-n", "lgd-meta", "lgd-count")]
    numbers = {int(n) for text in boxes for n in re.findall(r"(?<![\d.])\d+(?![\d.])", text)}
    assert numbers <= allowed, numbers - allowed
    nope_columns = {k.col for k in layer_kinds(arch) if getattr(arch.layers[k.layers[0]].mixer, "rope", "") is None}
    assert [text for cls, text in shown if cls == "lgd-bt"].count("NoPE") == len(nope_columns)


def test_gemma3_and_deepseek_columns():
    gemma = dict(ARCHS)["google/gemma-3-1b-it"]
    shown = texts(diagram_svg(gemma, "g"))
    assert [t for c, t in shown if c == "lgd-count"] == ["× 22", "× 4"]
    assert "pattern SSSSSF×4 + SS" in {t for _, t in shown}
    assert sum(t.startswith("RMSNorm (1 + w)") for _, t in shown) == 9  # 4 per sandwich block x 2, final
    deepseek = dict(ARCHS)["deepseek-ai/DeepSeek-V3"]
    shown = texts(diagram_svg(deepseek, "d"))
    assert [t for c, t in shown if c == "lgd-count"] == ["× 3", "× 58"]
    assert {"Multi-head latent attention", "Mixture of experts", "SwiGLU MLP", "pre-norm · layers 3–60",
            "+ shared expert: intermediate 2048", "256 experts, top-8"} <= {t for _, t in shown}


def test_block_kinds_draw_their_norm_placement():
    by_id = dict(ARCHS)
    for hub_id, block, norms in [("allenai/OLMo-2-1124-7B", "post-norm", 2 + 1), ("microsoft/phi-2", "parallel", 1 + 1),
                                 ("meta-llama/Llama-3.2-1B", "pre-norm", 2 + 1)]:
        shown = texts(diagram_svg(by_id[hub_id], hub_id))
        assert any(t.startswith(block) for c, t in shown if c == "lgd-meta"), hub_id
        assert sum(c == "lgd-n" for c, _ in shown) == norms, hub_id
    post = [t for c, t in texts(diagram_svg(by_id["allenai/OLMo-2-1124-7B"], "o")) if c == "lgd-n"]
    assert post == ["RMSNorm · post", "RMSNorm · post", "RMSNorm · final"]


def test_deterministic_across_processes(tmp_path):
    outputs = []
    for seed in ("1", "2"):
        code = "import sys; from llmgen.compiler.basics.cli import main; sys.exit(main(sys.argv[1:]))"
        run = subprocess.run([sys.executable, "-c", code, "card", "google/gemma-3-1b-it", "--format", "svg"],
                             capture_output=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1] and outputs[0].startswith(b"<?xml")
    ET.fromstring(outputs[0])


@pytest.mark.parametrize("hub_id, path", README_DIAGRAMS.items())
def test_committed_readme_diagrams_are_current(hub_id, path):
    model = load_model(hub_id)
    fresh = diagram_svg(model.arch, model.label, params=card(model)["parameters"])
    assert (REPO / path).read_text(encoding="utf-8") == fresh, f"regenerate: llmgen card {hub_id} --format svg > {path}"
    assert f"![{hub_id}]({path})" in (REPO / "README.md").read_text()


HOSTILE = "<script>alert('x')</script> & \"co\""


def test_config_strings_are_escaped(tmp_path, capsys):
    src = REPO / "generated" / "gemma-3-1b-it"
    model_dir = tmp_path / "hostile"
    model_dir.mkdir()
    (model_dir / "arch.json").write_text((src / "arch.json").read_text())
    (model_dir / "llmgen.json").write_text('{"source": "' + HOSTILE.replace('"', '\\"') + '"}')
    assert main(["card", str(model_dir), "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert "<script" not in out and "&lt;script&gt;" in out
    assert ("lgd-title", HOSTILE) in texts(out)
    assert ET.fromstring(out.encode()).find(f"{SVG}title").text == f"Architecture of {HOSTILE}"
    assert main(["diff", str(model_dir), "google/gemma-3-1b-it", "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert "<script" not in out and ("lgd-title", f"A: {HOSTILE}") in texts(out)
    inline = str(figures(load_model(str(model_dir)).arch, HOSTILE)["diagram"])
    assert "<script" not in inline and "&lt;script&gt;" in inline


def test_diff_highlights_exactly_what_differs(capsys):
    assert main(["diff", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B", "--format", "svg"]) == 0
    out = capsys.readouterr().out
    root = ET.fromstring(out.encode())
    changed = {n.text for n in root.iter(f"{SVG}text") if "lgd-changed" in n.get("class", "")}
    assert {"intermediate 8192", "intermediate 14336", "q: 32 heads × 64", "q: 32 heads × 128", "× 16", "× 32",
            "tied to the embedding", "separate weights (lm_head)"} <= changed
    assert not changed & {"RMSNorm", "SwiGLU MLP", "Grouped-query attention 4:1", "full causal", "Decoder layers"}
    listed = [n.text for n in root.iter(f"{SVG}text") if n.get("class") == "lgd-diff-l"]
    assert "• MLP width: 8192 → 14336" in listed
    assert main(["diff", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B", "--format", "svg"]) == 0
    same = capsys.readouterr().out
    classes = [node.get("class", "") for node in ET.fromstring(same.encode()).iter()]
    assert not any("lgd-changed" in c for c in classes) and "• no architectural differences" in same


def test_columns_are_matched_by_kind():
    """Llama's one full-attention column is compared with Gemma 3's full-attention column."""
    from llmgen.compiler.insight.diagram_diff import match_columns

    by_id = dict(ARCHS)
    a, b = figure(by_id["meta-llama/Llama-3.2-1B"], "a"), figure(by_id["google/gemma-3-1b-it"], "b")
    match_columns(a, b)
    assert {s["text"] for s in b.shapes if s["role"] == "col0.header"} >= {"× 4"}


class LinearAttention(BaseModel):
    """A mixer kind the IR may gain (for the generic fallback); not part of the schema."""

    kind: str = "linear_attention"
    num_heads: int = 16
    head_dim: int = 128
    conv_kernel: int = 4
    gate_eps: float = 1e-6
    rope: str | None = None


def test_unknown_mixer_kind_draws_generically():
    base = dict(ARCHS)["meta-llama/Llama-3.2-1B"]
    layers = tuple(Layer.model_construct(**{**dict(layer), "mixer": LinearAttention()}) if layer.index % 4 else layer
                   for layer in base.layers)
    arch = base.model_construct(**{**dict(base), "layers": layers})
    shown = texts(render_svg([(0, 0, figure(arch, "hybrid"))], 800, 900, "hybrid"))
    lines = {text for _, text in shown}
    assert {"Linear attention", "num heads 16", "head dim 128", "conv kernel 4", "gate eps 1e-06"} <= lines
    assert [t for c, t in shown if c == "lgd-count"] == ["× 4", "× 12"]
    assert "pattern Flll×4" in lines and "NoPE" in lines  # lower case: no RoPE


def test_cli_svg_formats(capsys):
    assert main(["card", "deepseek-ai/DeepSeek-V3", "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')
    assert "671B parameters (37.6B active)" in out
    assert main(["card", "no/such-model-anywhere", "--format", "svg"]) == 2
    assert capsys.readouterr().err.startswith("llmgen: error:")
