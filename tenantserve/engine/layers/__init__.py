"""Model building blocks and transforms (attention, rotary embedding, LoRA, quantization)."""
