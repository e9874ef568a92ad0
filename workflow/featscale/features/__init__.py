"""Feature stores: every SAE's codes over the same analysis tokens.

`store` reads them and picks the tokens (no torch: the analysis environment reads stores);
`encode` writes them (torch).
"""
