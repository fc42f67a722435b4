"""The two pieces of the forward pass we replace: the LM head that scores only trained positions, the token-row lookup."""
