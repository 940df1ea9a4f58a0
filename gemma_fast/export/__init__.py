"""Merged weights, GGUF files, Ollama Modelfiles and the round trip that checks them. Importing this package imports nothing heavy."""

