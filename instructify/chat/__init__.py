"""How a conversation becomes tokens: the ChatML template, special tokens, eos/pad/generation_config, the in-context prompt."""
