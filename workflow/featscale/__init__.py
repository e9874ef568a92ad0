"""featscale: how a transformer's SAE features change with its width.

One module per concept of the study; the Snakemake rules under workflow/rules call into
these through thin scripts, and the tests call them directly.
"""
