"""Fine-tuning: load a base, LoRA, SFT with its callbacks (monitor, guard, speed), several processes and shards."""
