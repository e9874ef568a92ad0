"""The GPT family: the model, its training, its next-token loss and its Hugging Face export.

The code of the torch environment (envs/torch.yaml).
"""
