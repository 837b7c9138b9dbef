"""Data: corpora (LibriSpeech layout, JSONL manifests, the synthetic espeak corpus), features,
tokenizer and the shared datamodule."""
