"""The feature browser: a static page per SAE spec, opened from the file system, that shows the
study's importance-against-universality scatter per ordered pair of models and, per latent, its
numbers, its best partners in the other models, its top and sampled contexts and its histogram.

    builder      build_browser: reads the stores and the study's tables, writes browser/{sae}/
    contexts     per latent, from its column of the codes: examples, shades, histogram
    payload      the data files: scripts that register packed, gzipped arrays or JSON
    vocabulary   each token id of the run's byte-level BPE as display text
    assets/      index.html, browser.js, browser.css (plain JS, CSS and canvas; no library)
"""

from featscale.browser.builder import BrowserInputs, StudySettings, build_browser
from featscale.browser.contexts import ExampleSettings

__all__ = ["BrowserInputs", "ExampleSettings", "StudySettings", "build_browser"]
