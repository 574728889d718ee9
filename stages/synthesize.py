"""Stage synthesize: write the embedded default's synthetic set in the OmniMedVQA layout."""

import shutil
from pathlib import Path

from medr1.config import load_params
from medr1.errors import run_main
from medr1.synthetic.dataset import write_synthetic

OUT = Path("data/raw/synthetic")


def main() -> None:
    params = load_params().ingest.synthetic
    shutil.rmtree(OUT, ignore_errors=True)
    count = write_synthetic(OUT, params.images_per_modality, params.seed)
    print(f"[synthesize] {count} questions about {8 * params.images_per_modality} images in {OUT}")


if __name__ == "__main__":
    run_main(main, "synthesize")
