"""Writes kaggle_instructions.jsonl: 36 instruction-type questions about how Kaggle works, written by this project
(not taken from the Kaggle docs QA files): 12 translate (into French, Spanish or German), 12 paraphrase, 12 summarise.

The text to transform sits in `input`, the slot where the Kaggle docs QA records keep their docs passage, so the
prompt has the shape the docs assistant is trained on (a Context block, then the instruction). Each record's `task`
is also the last part of its id (ki-01-translate): prepared splits keep only the schema fields, and
eval.where=task=translate reads the id. Run: python gemma_fast/assets/make_kaggle_instructions.py
"""

from __future__ import annotations

import json
from pathlib import Path

INSTRUCTIONS = {"translate": "Translate this sentence into {}.", "paraphrase": "Rewrite this sentence in simpler words.",
                "summarise": "Summarise this passage in one sentence."}

# (target language, English sentence, reference translation)
TRANSLATE = [
    ("French", "Kaggle competitions have a public leaderboard and a private leaderboard.",
     "Les compétitions Kaggle ont un classement public et un classement privé."),
    ("French", "Each competition sets its own daily submission limit.",
     "Chaque compétition fixe sa propre limite quotidienne de soumissions."),
    ("French", "A notebook can read any public dataset that you add to it.",
     "Un notebook peut lire tout jeu de données public que vous y ajoutez."),
    ("French", "Medals are awarded in competitions, datasets, notebooks and discussions.",
     "Des médailles sont décernées dans les compétitions, les jeux de données, les notebooks et les discussions."),
    ("Spanish", "The GPU quota resets every week.",
     "La cuota de GPU se restablece cada semana."),
    ("Spanish", "Your final score is computed on the private test set after the competition ends.",
     "Tu puntuación final se calcula con el conjunto de prueba privado cuando termina la competición."),
    ("Spanish", "Anyone can create a dataset and share it with the community.",
     "Cualquiera puede crear un conjunto de datos y compartirlo con la comunidad."),
    ("Spanish", "Teams can merge before the team merger deadline.",
     "Los equipos pueden fusionarse antes de la fecha límite de fusión de equipos."),
    ("German", "Turn on the accelerator in the notebook settings to use a GPU.",
     "Aktiviere den Beschleuniger in den Notebook-Einstellungen, um eine GPU zu verwenden."),
    ("German", "A submission file must have the same columns as the sample submission.",
     "Eine Einreichungsdatei muss dieselben Spalten wie die Beispieleinreichung haben."),
    ("German", "Notebooks keep their output files when you save a version.",
     "Notebooks behalten ihre Ausgabedateien, wenn du eine Version speicherst."),
    ("German", "Code competitions run your notebook on hidden test data.",
     "Code-Wettbewerbe führen dein Notebook mit versteckten Testdaten aus."),
]
# (formal sentence, simpler rewrite)
PARAPHRASE = [
    ("Participants are required to adhere to the competition rules, which must be accepted prior to downloading the data.",
     "You must accept the competition rules before you can download the data."),
    ("Utilisation of GPU accelerators is subject to a weekly quota that is replenished at the start of each week.",
     "You can use GPUs for a limited number of hours each week, and the hours come back every week."),
    ("Submissions that do not conform to the format of the sample submission file will fail to be scored.",
     "If your file does not match the sample submission, it will not get a score."),
    ("The private leaderboard, which is revealed upon the conclusion of the competition, determines the final standings.",
     "The private leaderboard decides the final ranking, and you see it when the competition ends."),
    ("Datasets may be published with either public or private visibility, at the discretion of the owner.",
     "The owner chooses whether a dataset is public or private."),
    ("Notebook sessions are terminated automatically after an extended period of inactivity.",
     "A notebook stops by itself if you do not use it for a long time."),
    ("Competitors are permitted to form teams, provided that the combined number of submissions does not exceed the allowed limit.",
     "You can form a team if your total number of submissions stays within the limit."),
    ("Medals are conferred upon users whose contributions receive a sufficient number of upvotes from the community.",
     "You get a medal when enough people upvote your work."),
    ("Progression through the performance tiers is contingent upon the accumulation of medals.",
     "You move up the tiers by earning medals."),
    ("External data may be utilised only if the competition rules explicitly permit it.",
     "You can use outside data only if the rules say so."),
    ("Internet access must be disabled in notebooks that are submitted to code competitions.",
     "Turn off the internet in notebooks you submit to code competitions."),
    ("The evaluation metric employed by each competition is specified on its overview page.",
     "Each competition's overview page says how entries are scored."),
]
# (passage, one-sentence summary)
SUMMARISE = [
    ("Kaggle competitions ask participants to build models for a given problem. Each competition provides training data "
     "and a test set. Participants upload predictions for the test set, and Kaggle scores them with the competition's "
     "metric. The best scores appear at the top of the leaderboard.",
     "In Kaggle competitions, participants train models on the provided data and upload test-set predictions that are "
     "scored and ranked on a leaderboard."),
    ("A Kaggle notebook is a cloud environment for running Python or R code. It comes with many popular libraries "
     "already installed. You can attach datasets and competition data to it. Notebooks can also be shared publicly so "
     "that others can read and copy them.",
     "Kaggle notebooks are shareable cloud environments for Python or R code, with common libraries installed and data "
     "attached."),
    ("Kaggle offers free GPU and TPU accelerators in notebooks. Their use is limited by a weekly quota. The remaining "
     "quota is shown in the notebook's side panel. When the quota runs out, you have to wait until it resets the next week.",
     "Kaggle notebooks offer free GPUs and TPUs under a weekly quota, shown in the side panel, that resets every week."),
    ("The leaderboard of a competition is split in two. The public leaderboard is computed on part of the test data and "
     "is visible during the competition. The private leaderboard uses the rest of the test data and is shown only at "
     "the end. Final rankings come from the private leaderboard.",
     "The public leaderboard scores part of the test data during a competition, while the final ranking comes from the "
     "private leaderboard shown at the end."),
    ("Anyone with an account can publish a dataset on Kaggle. A dataset can contain files such as CSV, JSON or images. "
     "Its owner writes a description and chooses a license. Other users can then download it or use it in notebooks.",
     "Any Kaggle user can publish a described, licensed dataset of files that others can download or use in notebooks."),
    ("Teams let several users compete together in one competition. A user sends a merge request to another team. The "
     "merged team must not have made more submissions than allowed. After the team merger deadline, no teams can merge.",
     "Users can merge into teams before the merger deadline, as long as their combined submissions stay within the limit."),
    ("Kaggle awards medals for strong work. In competitions, medals depend on the final leaderboard rank. For notebooks, "
     "datasets and discussion posts, medals depend on upvotes. Medals count towards a user's progression tier.",
     "Kaggle gives medals for leaderboard rank in competitions and for upvotes on notebooks, datasets and posts, and "
     "they count towards a user's tier."),
    ("Some competitions are code competitions. In these, you submit a notebook instead of a file. Kaggle reruns the "
     "notebook on hidden test data. The notebook must finish within the time limit set by the competition.",
     "In code competitions you submit a notebook, which Kaggle reruns on hidden test data within a time limit."),
    ("Before joining a competition, you must accept its rules. The rules cover how many submissions you can make each "
     "day, whether external data is allowed and how prizes are awarded. Breaking the rules can lead to disqualification.",
     "Every competition has rules you must accept, covering daily submissions, external data and prizes, and breaking "
     "them can get you disqualified."),
    ("A notebook session has a maximum run time. If you leave a notebook idle, the session stops to free resources. "
     "Saving a version runs the whole notebook from top to bottom in the background. The output files of that version "
     "are kept.",
     "Notebook sessions have a time limit and stop when idle, and saving a version reruns the whole notebook in the "
     "background and keeps its output files."),
    ("Kaggle Discussions are forums attached to competitions, datasets and the wider community. Users ask questions, "
     "share ideas and post solutions there. Good posts receive upvotes from other users. Competition hosts often answer "
     "questions in the forum.",
     "Kaggle Discussions are forums where users ask questions, share ideas and solutions and upvote good posts, and "
     "hosts often answer there."),
    ("To submit to a file-based competition, you create a CSV file with your predictions. It must follow the format of "
     "the sample submission. You upload the file on the competition page, and the score appears after it is evaluated. "
     "Each competition limits the number of submissions per day.",
     "In file-based competitions you upload a CSV of predictions in the sample submission's format and get a score, "
     "within a daily submission limit."),
]


def records() -> list[dict]:
    items = [("translate", INSTRUCTIONS["translate"].format(lang), text, out) for lang, text, out in TRANSLATE]
    items += [("paraphrase", INSTRUCTIONS["paraphrase"], text, out) for text, out in PARAPHRASE]
    items += [("summarise", INSTRUCTIONS["summarise"], text, out) for text, out in SUMMARISE]
    return [{"id": f"ki-{n:02d}-{task}", "task": task, "instruction": instruction, "input": text, "output": output}
            for n, (task, instruction, text, output) in enumerate(items, start=1)]


if __name__ == "__main__":
    path = Path(__file__).with_name("kaggle_instructions.jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records()), encoding="utf-8")
    print(f"wrote {path}")
