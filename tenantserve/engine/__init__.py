"""The built-in inference engine: continuous batching, paged KV cache, multi-LoRA."""
