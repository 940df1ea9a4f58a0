"""Every way an answer is generated: transformers and llama.cpp behind one interface. Importing this package imports nothing heavy."""

