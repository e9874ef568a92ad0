"""The study's answer from the stores: correlations, fits, statistics, tables, figures, report.

The code of the analysis environment (envs/analysis.yaml): no torch.
"""
