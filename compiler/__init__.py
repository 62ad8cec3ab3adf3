"""llmgen compiler: Hugging Face config.json -> architecture IR -> standalone PyTorch file."""

__version__ = "0.1.0"
