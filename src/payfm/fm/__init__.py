"""The payments foundation model: tokenizer, sequences, transformer, pretraining, embeddings (docs/fm.md)."""
