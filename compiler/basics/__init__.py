"""What every room shares: the error type, atomic writes, content hashes of a generated set, the bundled
catalog, the safetensors dtype rule, and the `llmgen` command line."""
