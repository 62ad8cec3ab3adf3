"""llmgen compiler: Hugging Face config.json -> architecture IR -> standalone PyTorch file.

Rooms, by role:
    passes/        load -> lowering -> validate -> weight map -> render -> format -> write (pipeline.py)
    insight/       card, describe, diagram, diff, gallery, divergence, coverage
    verification/  parity, reference logits, checkpoint check, example checkpoint
    runtime/       generate, chat, fast decoding, native kernels, tensor-parallel launch
    basics/        errors, atomic writes, content hashes, catalog, dtypes, the command line
"""

__version__ = "0.1.0"
