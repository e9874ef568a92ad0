"""From the configured corpus to the token store: sources, splits, tokenizer, store, batches.

The code of the data rules' environment (envs/data.yaml): no torch.
"""
