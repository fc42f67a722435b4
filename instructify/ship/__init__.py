"""A model others can run: export (merge), GGUF and Ollama Modelfile, doctor, push to the Hub."""
