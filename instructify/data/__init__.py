"""Conversations in: sources and formats to validated `messages` rows, the held-out split, the tokenised cache, inspect."""
