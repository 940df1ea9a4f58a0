"""Tables for issue #17 (docs/results.md) from the evaluations of docs/experiments/kaggle_assistant.sh: base, today's recipe, dropout, dropout + mix.
Run from the repository root: .venv/bin/python docs/experiments/kaggle_assistant_tables.py [ctx noctx instr]"""
import json
import sys

from gemma_fast.evaluation import metrics as M

VARIANTS = {"today": "today's recipe", "drop": "context dropout 0.3", "mix": "dropout 0.3 + mix 20 %"}
METRICS = [("answer_loss", "answer-token loss (per question)"), ("rougeL", "ROUGE-L"), ("bertscore_f1", "BERTScore F1"),
           ("yes_no_accuracy", "yes/no accuracy"), ("true_false_reflex", "True/False reflex (lower better)"),
           ("unsupported_words", "unsupported words (lower better)"), ("repetition", "repetition / loops (lower better)")]


def rows(variant, tag):
    return [json.loads(line) for line in open(f"runs/k17/{variant}/eval_{tag}/predictions.jsonl")]


def values(rs, model, name):
    return [r[model].get(name) for r in rs]


def cell(vals):
    s = M.bootstrap_mean(vals)
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] (n={s['n']})" if s else "n/a"


def diff(a, b):
    s = M.paired_bootstrap(a, b)
    return f"{s['diff']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]" if s else "n/a"


for tag in sys.argv[1:] or ["ctx", "noctx", "instr"]:
    data = {v: rows(v, tag) for v in VARIANTS}
    ids = [r["id"] for r in data["today"]]
    assert all([r["id"] for r in data[v]] == ids for v in VARIANTS)
    print(f"\n### {tag} ({len(ids)} questions)\n")
    print("| metric | base | " + " | ".join(VARIANTS.values()) + " | dropout − today | mix − today |")
    print("| --- |" + " --- |" * (len(VARIANTS) + 3))
    for name, label in METRICS:
        base = values(data["today"], "base", name)
        per = {v: values(data[v], "fine-tuned", name) for v in VARIANTS}
        print(f"| {label} | {cell(base)} | " + " | ".join(cell(per[v]) for v in VARIANTS)
              + f" | {diff(per['today'], per['drop'])} | {diff(per['today'], per['mix'])} |")
