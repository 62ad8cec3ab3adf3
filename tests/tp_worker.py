"""Process bodies for tests/test_tensor_parallel.py (a module of its own, so spawned processes
import it by name): tiny replicas of the committed generated models, split over a gloo group."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

FAMILIES = ("Llama-3.2-1B", "gemma-3-1b", "Qwen3-30B-A3B", "DeepSeek-V3", "gpt-oss-20b", "Phi-3.5-mini-instruct",
            # whole-width QK-norm (gathered), GPT-NeoX's per-head fused qkv, GPT-2's Conv1D, a gated shared
            # expert; then the hybrids whose recurrent mixers are replicated (Gated DeltaNet, short conv, KDA, Mamba-2)
            "OLMo-2-1124-7B", "Olmo-3.1-32B-Instruct", "RedPajama-INCITE-7B-Base", "gpt2", "Qwen1.5-MoE-A2.7B-Chat",
            "Qwen3.5-35B-A3B", "LFM2-1.2B", "Kimi-Linear-defaults", "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
            "gemma-4-26B-A4B", "DeepSeek-V3.2",  # per-layer head counts; the DSA indexer (replicated)
            "MiMo-V2-Flash",  # value heads narrower than query/key heads, sliding layers with more KV heads and sinks
            "DeepSeek-V4-Flash")  # hyper-connections, one key=value head, grouped low-rank output, hash-routed experts
# Families with no committed generated directory: compiled into the test's tmp folder from these fixtures
# (tests/test_tensor_parallel.py's compile_families). Step-3.7's per-head gate projection; Falcon-H1's
# Mamba-2 beside the attention.
COMPILED = ("Step-3.7-Flash", "Falcon-H1-mup")
# Replica sizes changed from test_parity.py's so that 4 ranks divide them (recurrent mixers' heads, groups).
TP_SIZES = {"Qwen3.5-35B-A3B": {"linear_num_key_heads": 4, "linear_num_value_heads": 8},
            "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": {"mamba_n_groups": 4}, "Kimi-Linear-defaults": {"linear_num_heads": 4},
            "Falcon-H1-mup": {"mamba_n_groups": 4}, "DeepSeek-V4-Flash": {"o_groups": 4}}
TOLERANCE = 1e-5  # x max(1, max|logit|)
SEQ, PREFILL = 12, 5  # longer than the replicas' sliding window (8); decoding steps past it


def _import(path: Path, name: str):
    if name in sys.modules:
        return sys.modules[name]
    if path.name == "model.py":  # with runtime.py and weights.py beside it, as one module
        from llmgen.compiler.runtime.generated_files import import_generated

        return import_generated(path.parent, name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def replica(directory: Path):
    """(parallel.py module, model.py module, the tiny replica's Config) of a generated directory."""
    slug = directory.name.replace("-", "_").replace(".", "_")
    par = _import(directory / "parallel.py", f"tp_parallel_{slug}")
    tree = ast.parse((directory / "test_parity.py").read_text())
    sizes = next(ast.literal_eval(node.value) for node in tree.body  # a dict literal of the replica's sizes
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MODEL_CONFIG")
    gen = par.model_module()
    return par, gen, gen.Config(**(sizes | TP_SIZES.get(directory.name, {})))


def random_model(gen, config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = gen.CausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(1.0, 0.2) if param.ndim == 1 else param.normal_(0.0, 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith("tid2eid"):  # DeepSeek-V4's hash routing: token id -> experts, spread over the ranks
                buffer.copy_(torch.randint(0, config.num_experts, buffer.shape))
    return model


@torch.no_grad()
def logits_runs(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-sequence logits, and the logits of a cached run (prefill, then one token per step)."""
    whole = model(ids)
    sized = len(inspect.signature(model.enable_cache).parameters) > 1  # DeepSeek-V4's caches grow: batch only
    model.enable_cache(*((ids.shape[0], ids.shape[1]) if sized else (ids.shape[0],)))
    steps = [model(ids[:, :PREFILL])] + [model(ids[:, i : i + 1]) for i in range(PREFILL, ids.shape[1])]
    model.disable_cache()
    return whole, torch.cat(steps, dim=1)


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])  # OCP MX FP4 magnitudes, codes 0-7


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(experts, in, out) -> MXFP4 blocks (experts, out, in / 32, 16) and e8m0 scales (experts, out, in / 32)."""
    rows = weight.transpose(1, 2).float()
    groups = rows.reshape(*rows.shape[:-1], rows.shape[-1] // 32, 32)
    exponent = torch.floor(torch.log2(groups.abs().amax(dim=-1, keepdim=True).clamp(min=2.0**-100))) - 2
    scaled = groups / torch.exp2(exponent)
    codes = ((scaled.abs()[..., None] - E2M1).abs().argmin(dim=-1) | ((scaled < 0).long() << 3)).to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4), (exponent[..., 0] + 127).to(torch.uint8)


def save_checkpoint(gen, config, model, directory: Path) -> Path:
    """The model's parameters under their checkpoint keys, as model.safetensors (MXFP4 experts
    where model.py reads them so)."""
    from safetensors.torch import save_file

    state = dict(model.state_dict())
    keys = gen.checkpoint_keys(config) if hasattr(gen, "checkpoint_keys") else {name: name for name in state}
    tensors = {key: state[name].contiguous() for key, name in keys.items()}
    for key in [k for k in tensors if k.endswith(getattr(gen, "MXFP4_TENSORS", ()))]:
        tensors[f"{key}_blocks"], tensors[f"{key}_scales"] = quantize_mxfp4(tensors.pop(key))
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def write_checkpoints(directories: list[str], root: Path) -> None:
    for name in directories:
        par, gen, config = replica(Path(name))
        save_checkpoint(gen, config, random_model(gen, config), root / Path(name).name)


def memory_config(gen):
    """A Llama-shaped replica of about 280 MB in float32, for the per-rank memory of a sharded load."""
    return gen.Config(vocab_size=32768, hidden_size=1024, intermediate_size=2048, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=128)


def rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


FSDP_FAMILIES_NAMES = ("Llama-3.2-1B", "gemma-3-1b")


def training_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of the ids, float32."""
    logits = model(ids[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def _init(rank: int, world: int, port: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", rank=rank, world_size=world)
    return dist, init_device_mesh("cpu", (world,))


def local_heads(par, model) -> list[int]:
    """The head counts of the modules the plan splits over the heads (a replicated mixer keeps its own)."""
    layers = model.get_submodule(par.TP_LAYERS)
    return sorted({layer.get_submodule(path).num_heads for layer in layers
                   for path, (style, _) in par.layer_plan(layer).items() if style == "attention"})


def split_mixers(par, gen, config, model) -> list[list[int]]:
    """(this rank's value, the whole model's) of the first count each "split" entry (a recurrent mixer
    split over its heads or channels) cuts, per layer that has one."""
    with torch.device("meta"):
        whole = gen.CausalLM(config).get_submodule(par.TP_LAYERS)
    out = []
    for layer, full in zip(model.get_submodule(par.TP_LAYERS), whole):
        for path, (style, names) in par.layer_plan(layer).items():
            if style == "split":
                name = next(n for n in names if "=" not in n)
                out.append([getattr(layer.get_submodule(path), name), getattr(full.get_submodule(path), name)])
    return out


def tp_worker(rank: int, world: int, port: int, directories: list[str], out: str) -> None:
    """One of 4 ranks. The per-rank peak memory of a sharded load at TP=4 and TP=2; then every
    family at TP=2 (ranks 0-1 and 2-3, two groups side by side: the model in memory split) and at
    TP=4 (the checkpoint read rank by rank), each against the same model in this process alone."""
    from torch.distributed.device_mesh import init_device_mesh

    dist, mesh4 = _init(rank, world, port)
    # TP=2 groups made by every rank together (a 2 x 2 mesh's rows: ranks 0-1 and 2-3).
    meshes = {4: mesh4, 2: init_device_mesh("cpu", (2, 2), mesh_dim_names=("pair", "tp"))["tp"]}
    results: dict[str, dict] = {}
    checkpoints = Path(out).parent / "checkpoints"
    for name in directories:
        par, gen, config = replica(Path(name))
        family = Path(name).name
        ids = torch.randint(0, config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
        # TP=2: the model in memory, split by parallelize(), against the same model unsplit.
        reference = logits_runs(random_model(gen, config), ids)
        model = par.parallelize(random_model(gen, config), meshes[2])
        got = logits_runs(model, ids)
        results[f"2/{family}"] = {
            "whole": float((got[0] - reference[0]).abs().max()),
            "cached": float((got[1] - reference[1]).abs().max()),
            "scale": float(reference[0].abs().max()),
            "local_heads": local_heads(par, model),
            "split": split_mixers(par, gen, config, model),
            "heads": config.num_attention_heads,
        }
        # TP=4: each rank reads its slices of the checkpoint (load_parallel), against load_checkpoint.
        reference = logits_runs(gen.load_checkpoint(checkpoints / family, config), ids)
        model = par.load_parallel(checkpoints / family, meshes[4], config)
        got = logits_runs(model, ids)
        results[f"4/{family}"] = {
            "whole": float((got[0] - reference[0]).abs().max()),
            "cached": float((got[1] - reference[1]).abs().max()),
            "scale": float(reference[0].abs().max()),
            "local_heads": local_heads(par, model),
            "split": split_mixers(par, gen, config, model),
            "heads": config.num_attention_heads,
        }
    # FSDP2 on the 2-rank meshes: loss and gradients of one training step against one process.
    from torch.distributed import _functional_collectives as funcol

    fsdp = [d for d in directories if Path(d).name in FSDP_FAMILIES_NAMES]
    for name in fsdp:
        par, gen, config = replica(Path(name))
        ids = torch.randint(0, config.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(2))
        reference = random_model(gen, config).train()
        loss = training_loss(reference, ids)
        loss.backward()
        model = par.shard_for_training(random_model(gen, config).train(), meshes[2])
        pair_rank = meshes[2].get_local_rank()
        local_loss = training_loss(model, ids[pair_rank : pair_rank + 1])  # data parallel: one sequence per rank
        local_loss.backward()  # FSDP2 averages the gradients over the ranks: the whole batch's mean loss
        sharded_loss = funcol.all_reduce(local_loss.detach(), "avg", meshes[2])
        worst = 0.0
        grads = dict(model.named_parameters())
        for pname, param in reference.named_parameters():
            grad = grads[pname].grad
            grad = grad.full_tensor() if isinstance(grad, par.DTensor) else grad
            worst = max(worst, float((grad - param.grad).abs().max() / param.grad.abs().max().clamp(min=1e-30)))
        results[f"fsdp/{Path(name).name}"] = {"loss": loss.item(), "sharded_loss": float(sharded_loss),
                                              "grad_rel": worst}
    # Per-rank peak memory of a sharded load (after the families: torch's distributed code is loaded).
    import gc

    gc.collect()
    par, gen, _ = replica(Path(directories[0]))
    for degree in (4, 2):
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident size restarts from now
        before = rss_bytes("VmRSS")
        model = par.load_parallel(checkpoints / "memory", meshes[degree], memory_config(gen))
        results[f"memory/{degree}/{rank}"] = {"peak": rss_bytes("VmHWM") - before,
                                              "params": sum(p.to_local().nbytes if isinstance(p, par.DTensor) else p.nbytes
                                                            for p in model.parameters())}
        del model
    gathered = [None] * world
    dist.all_gather_object(gathered, results)  # every rank's memory figures
    if rank == 0:
        Path(out).write_text(json.dumps({k: v for part in gathered for k, v in part.items()}))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world: int, *args, timeout: float = 120.0) -> None:
    """Run fn(rank, world, port, *args) in `world` fresh processes; fail (and kill them) past `timeout`."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=(world, free_port(), *args), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{world} processes still running after {timeout} s")


