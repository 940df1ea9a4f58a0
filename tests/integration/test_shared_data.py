"""The real datasets in ../shared/data (not part of the project); skipped where that folder is absent."""

import pytest

from gemma_fast.data import load_records, split_records
from tests.conftest import SHARED_DATA

KAGGLE = SHARED_DATA / "kaggle_docs"
pytestmark = pytest.mark.skipif(not KAGGLE.is_dir(), reason=f"{KAGGLE} not present (shared test data lives beside the repo)")


@pytest.mark.parametrize("name, count", [("kaggle_docs_QA_v3.json", 1663), ("kaggle_docs_QA_v2.json", 793)])
def test_kaggle_docs_files_load_into_the_schema(name, count):
    records = load_records(str(KAGGLE / name))
    assert len(records) == count
    assert all(r["instruction"] and r["output"] and r["lang"] == "en" for r in records)
    assert len({r["id"] for r in records}) == count
    splits = split_records(records, 0.1, 0.0, seed=42)
    assert len(splits["train"]) + len(splits["val"]) == count
