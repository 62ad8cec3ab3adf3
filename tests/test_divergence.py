"""The divergence report: planted bugs in a generated file are traced to the right first point
(and the modules computed just before it); clean models show no divergence; a rounding-only
change is called noise by the float64 re-run."""

from __future__ import annotations

import shutil

import pytest
from conftest import GENERATED

from llmgen.compiler.basics.cli import main
from llmgen.compiler.insight.divergence import divergence, format_report, points_for
from llmgen.compiler.passes.lowering import lower

# bug -> (model.py text, its replacement, first divergent point, a word of its suspects)
PLANTED = {
    "drop (1+w) norm offset": ("(1.0 + self.weight.float())", "self.weight.float()", "L0.attn_in", "input_layernorm"),
    "swap sandwich norms": ("self.post_attention_layernorm(\n", "self.post_feedforward_layernorm(\n", "L0.mlp_in",
                            "post_attention_layernorm"),
    "sliding layers use the global RoPE theta": ("rope_inv_freq(c.local_rope_theta", "rope_inv_freq(c.rope_theta",
                                                 "L0.attn_out", "RoPE (theta 10000)"),
    "missing embedding scale": ("x = x * torch.tensor(c.embed_scale, dtype=x.dtype)", "pass", "embed", "embed_tokens x"),
}
ROUNDING_ONLY = ("h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)",
                 "h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)")


def planted(tmp_path, model: str, before: str, after: str):
    target = tmp_path / model
    shutil.copytree(GENERATED / model, target)
    path = target / "model.py"
    source = path.read_text()
    assert before in source, f"planted-bug anchor vanished from {model}/model.py: {before!r}"
    path.write_text(source.replace(before, after, 1))
    return target


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_report_names_the_first_divergent_module(bug, tmp_path):
    before, after, point, suspect = PLANTED[bug]
    report = divergence(planted(tmp_path, "gemma-3-1b-it", before, after))
    first = report.rows[report.first]
    assert first.point.name == point, format_report(report)
    assert suspect in first.point.suspects, first.point.suspects
    assert all(not row.over for row in report.rows[: report.first])
    assert report.float64 is not None and report.float64.max_abs > 1e-3
    assert report.verdict.startswith("a bug"), report.verdict
    text = format_report(report)
    assert f"first over tolerance: {point} " in text and "<-- first over tolerance" in text


def test_the_replica_starts_with_a_sliding_layer():
    """The RoPE-theta plant above is only visible at layer 0 if layer 0 slides."""
    from llmgen.compiler.verification.verify import _import

    module = _import(GENERATED / "gemma-3-1b-it" / "test_parity.py")
    assert lower(module.HF_CONFIG).layers[0].mixer.span == "sliding"


@pytest.mark.parametrize("model", ["Llama-3.2-1B", "gemma-3-270m"])
def test_clean_models_have_no_divergence(model):
    report = divergence(GENERATED / model)
    assert report.first is None, format_report(report)
    assert [row.max_abs for row in report.rows] == [0.0] * len(report.rows)
    assert not any(row.note for row in report.rows), "every point must be hooked in both models"
    assert "every point within tolerance" in format_report(report)


def test_points_follow_the_ir():
    from llmgen.compiler.verification.verify import _import

    arch = lower(_import(GENERATED / "Llama-3.2-1B" / "test_parity.py").HF_CONFIG)
    names = [p.name for p in points_for(arch)]
    per_layer = ["attn_in", "attn_out", "mlp_in", "mlp_out", "resid"]
    assert names == ["embed", *[f"L{i}.{n}" for i in range(arch.num_layers) for n in per_layer], "final_norm", "logits"]


def test_rounding_only_change_is_called_noise(tmp_path):
    report = divergence(planted(tmp_path, "Llama-3.2-1B", *ROUNDING_ONLY), tolerance=1e-12)
    assert report.first is not None and report.rows[report.first].max_abs < 1e-5
    assert report.verdict.startswith("rounding noise"), format_report(report)


def test_verify_prints_the_report_on_failure(tmp_path, capsys):
    before, after, point, _ = PLANTED["missing embedding scale"]
    target = planted(tmp_path, "gemma-3-1b-it", before, after)
    assert main(["verify", str(target)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"first over tolerance: {point} " in out and "float64 re-run" in out


def test_verify_layers_on_request(tmp_path, capsys):
    target = tmp_path / "llama"
    shutil.copytree(GENERATED / "Llama-3.2-1B", target)
    assert main(["verify", "--layers", str(target)]) == 0
    out = capsys.readouterr().out
    assert " ok" in out and "L1.resid" in out and "every point within tolerance" in out


def test_not_a_generated_directory(tmp_path):
    from llmgen.compiler.basics.errors import SourceError

    with pytest.raises(SourceError, match="no test_parity.py"):
        divergence(tmp_path)
