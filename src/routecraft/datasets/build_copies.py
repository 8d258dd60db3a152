"""Rebuild the packaged copies of the published routing logs from a checkout of the raw data.

    python -m routecraft.datasets.build_copies /path/to/shared/data

Every text file is gzipped as published (byte-identical after ``gunzip``), except RouteLLM's 57 MMLU
per-subject CSVs, which are combined (a ``subject`` column added, the rest unchanged) and split into two
gzip parts so that no packaged file exceeds 2 MB. See NOTICE at the repository root for sources and licences.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

# (source folder, path in the published layout, path in the packaged layout without .gz)
COPIES = [
    ("zeroeval", "gsm8k_matrix.csv.gz", "gsm8k_matrix.csv"),  # already gzipped upstream: copied as is
    ("zeroeval", "gsm8k_questions.csv", "gsm8k_questions.csv"),
    ("zeroeval", "gsm.summary.json", "gsm.summary.json"),
    ("llmrouter", "dcrouter_preprocessed/train.json", "dcrouter_preprocessed/train.json"),
    ("llmrouter", "dcrouter_preprocessed/test.json", "dcrouter_preprocessed/test.json"),
    ("llmrouter", "example_data/llm_candidates/default_llm.json", "llm_candidates/default_llm.json"),
    ("llmrouter", "example_data/query_data/default_query_train.jsonl", "query_data/default_query_train.jsonl"),
    ("llmrouter", "example_data/query_data/default_query_test.jsonl", "query_data/default_query_test.jsonl"),
    ("routellm", "gsm8k/gsm8k_responses.csv", "gsm8k/gsm8k_responses.csv"),
    ("routellm", "gsm8k/contaminated_prompts.jsonl", "gsm8k/contaminated_prompts.jsonl"),
    ("routellm", "gsm8k/test.jsonl", "gsm8k/test.jsonl"),
    ("routellm", "gsm8k/train.jsonl", "gsm8k/train.jsonl"),
    ("routellm", "mmlu/contaminated_prompts.jsonl", "mmlu/contaminated_prompts.jsonl"),
    ("routellm", "mt_bench/question.jsonl", "mt_bench/question.jsonl"),
    ("routellm", "mt_bench/judgements.jsonl", "mt_bench/judgements.jsonl"),
    ("routellm", "mt_bench/contaminated_prompts.jsonl", "mt_bench/contaminated_prompts.jsonl"),
]
MMLU_PARTS = 2


def _gzip_to(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".gz":
        shutil.copyfile(src, dst)
        return
    # mtime=0 and no file name: the same input always gives the same bytes
    with open(src, "rb") as f, open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as out:
            shutil.copyfileobj(f, out)


def build(raw_root: Path, out_root: Path = HERE) -> list[Path]:
    written = []
    for source, rel_src, rel_dst in COPIES:
        src = raw_root / source / rel_src
        dst = out_root / source / (rel_dst + ".gz")
        _gzip_to(src, dst)
        written.append(dst)
    files = sorted((raw_root / "routellm" / "mmlu" / "responses").glob("mmlu_*.csv"))
    if len(files) != 57:
        raise SystemExit(f"expected 57 MMLU subject files under {raw_root}/routellm/mmlu/responses, got {len(files)}")
    frames = []
    for f in files:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        df.insert(0, "subject", f.stem[len("mmlu_"):])
        frames.append(df)
    subjects = [f.stem[len("mmlu_"):] for f in files]
    per = -(-len(subjects) // MMLU_PARTS)
    for i in range(MMLU_PARTS):
        part = set(subjects[i * per:(i + 1) * per])
        df = pd.concat([fr for fr in frames if fr["subject"].iloc[0] in part], ignore_index=True)
        dst = out_root / "routellm" / "mmlu" / f"mmlu_responses.part{i + 1}.csv.gz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as out:
                out.write(df.to_csv(index=False).encode("utf-8"))
        written.append(dst)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance script
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for p in build(Path(sys.argv[1])):
        print(f"{p.stat().st_size:>10,d}  {p.relative_to(HERE)}")
