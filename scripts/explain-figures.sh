#!/usr/bin/env bash
# The pictures of docs/explain.md, made by the commands themselves from the shipped photos and the
# quickstart model (run `make quickstart` first). The commands write PNGs; the docs keep JPEG copies.
set -euo pipefail
RUN=${RUN:-runs/quickstart}
KIT=${KIT:-.venv/bin/alexnet-kit}
PY=${PY:-.venv/bin/python}
TMP=$(mktemp -d)
OUT=docs/img/explain
mkdir -p "$OUT"
M=(--model "$RUN/model.safetensors" --engine torch --precision fp32 --out "$TMP")
MOTO=examples/quickstart-data/Motorbikes/image_0009.jpg
LEO=examples/quickstart-data/Leopards/image_0005.jpg
for method in occlusion gradcam guided-gradcam deconvnet integrated-gradients; do
  "$KIT" explain "$MOTO" "$LEO" --method "$method" "${M[@]}"
done
"$KIT" explain "$LEO" --similar-to examples/quickstart-data/Leopards/image_0002.jpg --method occlusion "${M[@]}"
"$KIT" explain "$LEO" --similar-to examples/quickstart-data/Leopards/image_0002.jpg --method gradcam "${M[@]}"
"$KIT" explain examples/photos/fish-bike.jpg --top 2 "${M[@]}"
"$KIT" units "$RUN/photos.index" --layer conv5 --unit 13 --top 9 --out "$TMP/units-conv5-13.png" -q
"$KIT" units "$RUN/photos.index" --layer conv5 --units all --top 4 --out "$TMP/units-conv5-all.png" -q
"$PY" - "$TMP" "$OUT" <<'PY'
import sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for png in sorted(src.glob("*.png")):
    with Image.open(png) as im:
        im.convert("RGB").save(dst / (png.stem + ".jpg"), quality=82)
    print(dst / (png.stem + ".jpg"))
PY
rm -rf "$TMP"
