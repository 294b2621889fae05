"""Where the files ordermesh reads at run time live in a checkout (and in the image)."""

from pathlib import Path

# The Avro event schemas, one folder per event with every released version (schemas/).
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
