#!/usr/bin/env bash
# Stage the Python packages that the lent GPU machine lacks, packed as .gpu_site/site-py<version>.tar.gz
# (git-ignored): a device call carries at most 64 MiB, and the device has no internet.
#
# Here (needs PyPI):   bench/stage_gpu_site.sh                 # prints the packed and unpacked sizes
# On the device:       run(carry=[".gpu_site/site-py3.12.tar.gz"], command="bench/stage_gpu_site.sh --check &&
#                          PYTHONPATH=$PWD/.gpu_site/site python3 bench/train_throughput.py ...")
# --check first asserts that the device's python3 is the version the wheels were staged for, then unpacks the
# site into .gpu_site/site (carry only the tarball: ~37 MiB), lists what the image lacks, imports the staged stack
# (unsloth first) against the image's torch, and prints the version of every library a result depends on
# (bench/common.py LIBRARIES), staged or the image's. bench/gpu_smoke.sh runs it first.
#
# The device image is expected to have (not staged: too big to carry, or built against its own torch):
#   torch with CUDA, triton, transformers (<= 5.17, Unsloth's ceiling), huggingface_hub, tokenizers, safetensors,
#   numpy, pandas, pyarrow, httpx, requests, tqdm, psutil, regex, packaging, filelock, matplotlib (loss.png).
# Staged, with --no-deps, at the CPU core's pins where it has them (datasets' own caps: dill < 0.4.2,
# multiprocess < 0.70.20, fsspec <= 2026.2.0):
#   the Unsloth stack: unsloth, unsloth_zoo, trl, bitsandbytes, cut_cross_entropy, msgspec, pillow
#     (unsloth_zoo imports PIL on `import unsloth`), jinja2 + markupsafe (trl's SFTTrainer imports jinja2);
#   peft 0.21.2 and accelerate 1.15.0 (the core's pins: small pure-Python wheels, so the image's own versions
#     never decide a result);
#   datasets and its light dependencies: dill, multiprocess, xxhash, fsspec;
#   the project's own: rich (+ markdown-it-py, mdurl, pygments), pyyaml, gguf, sentencepiece.
# Left out: torchao (Unsloth imports it only for fp8 / QAT) and tyro (only Unsloth's CLI uses it).
#
# Not set: UNSLOTH_SKIP_TORCHVISION_CHECK. Unsloth's torchvision check (unsloth/import_fixes.py,
# torchvision_compatibility_check) returns at once when torchvision is absent and passes a matching pair; it
# raises only for a torch/torchvision mismatch, a real fault that this setup must show rather than hide.
set -euo pipefail

mode=stage
if [ "${1:-}" = --check ]; then mode=check; fi
dest=.gpu_site
PY=${PY:-3.12}                 # the device's Python: sentencepiece, xxhash, msgspec, pyyaml, pillow are per version
UNSLOTH=${UNSLOTH:-2026.10.9}  # the newest; it accepts trl <= 1.15.0 and transformers <= 5.17.0
# bitsandbytes picks its CUDA library from torch.version.cuda when it is imported (same major, nearest minor), so
# the builds for every CUDA that current torch wheels use are kept: 12.6, 12.8 (also serves 12.9), 13.0, 13.2.
# Another torch CUDA: restage with BNB_CUDA_TAGS="<major><minor> ..." (the 11.8-12.4 builds are ~21 MiB each).
BNB_CUDA_TAGS=${BNB_CUDA_TAGS:-"126 128 130 132"}

if [ "$mode" = check ]; then
  device_py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ ! -f "$dest/site-py$device_py.tar.gz" ]; then
    echo "stage_gpu_site: python3 here is $(python3 -V 2>&1), and $dest holds no site for it" \
         "($(ls "$dest" 2>/dev/null | tr '\n' ' ')); stage with PY=$device_py" >&2
    exit 1
  fi
  rm -rf "$dest/site"; mkdir "$dest/site"
  tar -C "$dest/site" -xzf "$dest/site-py$device_py.tar.gz"
  python3 - "$dest/site" <<'EOF'
import importlib.util, pathlib, sys
image = ["torch", "triton", "transformers", "huggingface_hub", "tokenizers", "safetensors",
         "numpy", "pandas", "pyarrow", "httpx", "requests", "tqdm", "psutil", "regex", "packaging", "filelock", "matplotlib"]
missing = [m for m in image if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"stage_gpu_site: the device image lacks {', '.join(missing)}; stage them too or use another image")
import torch, transformers
if not torch.cuda.is_available() or not torch.version.cuda:
    sys.exit(f"stage_gpu_site: torch {torch.__version__} sees no CUDA GPU")
major, minor = torch.version.cuda.split(".")[:2]
if not list((pathlib.Path(sys.argv[1]) / "bitsandbytes").glob(f"libbitsandbytes_cuda{major}*.so")):
    sys.exit(f"stage_gpu_site: torch is built for CUDA {torch.version.cuda} and no bitsandbytes CUDA {major} library "
             f"is staged; restage with BNB_CUDA_TAGS={major}{minor}")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__},"
      f" {torch.cuda.get_device_name(0)}")
if tuple(int(x) for x in transformers.__version__.split(".")[:2]) > (5, 17):
    print("stage_gpu_site: warning: Unsloth declares transformers <= 5.17.0", file=sys.stderr)
EOF
  # Unsloth first: it patches transformers, peft and trl as it is imported. Then every library's version, from
  # its installed metadata (the staged copy where one is staged: PYTHONPATH comes before the image's site).
  PYTHONPATH="$PWD/$dest/site${PYTHONPATH:+:$PYTHONPATH}" python3 -c '
import unsloth, bitsandbytes, trl, peft, accelerate, datasets, rich, yaml, gguf, sentencepiece
print("staged stack imports: ok")
import sys; sys.path.insert(0, ".")
from bench.common import library_versions
print("versions: " + ", ".join("%s %s" % (k, v or "-") for k, v in library_versions().items()))'
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp/wheels" \
  "unsloth==$UNSLOTH" "unsloth_zoo==$UNSLOTH" trl==1.15.0 bitsandbytes==0.50.2 cut_cross_entropy==25.1.1 \
  peft==0.21.2 accelerate==1.15.0 \
  msgspec==0.22.0 pillow==13.0.0 jinja2==3.1.6 markupsafe==3.0.4 \
  datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 fsspec==2026.2.0 \
  rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 pyyaml==6.0.3 gguf==0.19.0 sentencepiece==0.2.3
site=$tmp/site
for w in "$tmp"/wheels/*.whl; do python3 -m zipfile -e "$w" "$site" >/dev/null; done
# Trim what a training run never imports: Unsloth's web studio and CLI, and the bitsandbytes builds for other
# CUDA versions, ROCm and XPU (the CPU one stays, so bitsandbytes still imports on any torch).
rm -rf "$site/studio" "$site/unsloth_cli" "$site/test"
for so in "$site"/bitsandbytes/libbitsandbytes_*.so; do
  tag=${so##*libbitsandbytes_}; tag=${tag%.so}
  case " cpu $BNB_CUDA_TAGS " in *" ${tag#cuda} "*) ;; *) rm "$so" ;; esac
done
find "$site" -name '__pycache__' -prune -exec rm -rf {} +
rm -rf "$dest"; mkdir -p "$dest"
tar -C "$site" -czf "$dest/site-py$PY.tar.gz" .
echo "staged for Python $PY: $dest/site-py$PY.tar.gz, $(du -h "$dest/site-py$PY.tar.gz" | cut -f1) to carry" \
  "($(du -sh "$site" | cut -f1) unpacked); bitsandbytes: $(cd "$site/bitsandbytes" && echo libbitsandbytes_*.so)"
