"""instructify: turn a base language model into a ChatML chat model that stops when its turn is over."""
