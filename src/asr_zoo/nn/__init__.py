"""Neural building blocks: front-ends, the attention zoo, encoder blocks and encoders."""
