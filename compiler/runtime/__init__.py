"""Running a generated model: `llmgen generate` (greedy decoding, chat templates), the faster decoding
steps, the native kernel (kernels/) and the tensor-parallel launcher."""
