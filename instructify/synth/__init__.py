"""Synthetic instructions: prompts from seeds and templates, the base model's in-context replies, filtered by program."""
