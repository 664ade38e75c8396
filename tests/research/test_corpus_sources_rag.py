"""RAG prompt templates: reading them from wheels, filling, attack twins, the split and decontamination."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from research.guardrails import corpus_documents as D
from research.guardrails import corpus_sources_rag as rag
from research.guardrails.corpus import CORPUS_PATH, extra_split
from research.guardrails.corpus_sources import read_jsonl
from security.guardrails.prompt_templates import PromptTemplate, from_llama_index

QA = ("Context information is below.\n---------------------\n{context_str}\n---------------------\n"
      "Given the context information and not prior knowledge, answer the query.\nQuery: {query_str}\nAnswer: ")
MODULE = f'''
DEFAULT_TEXT_QA_PROMPT_TMPL = (
    "Context information is below.\\n---------------------\\n{{context_str}}\\n"
    "---------------------\\nGiven the context information and not prior knowledge, answer the query.\\n"
    "Query: {{query_str}}\\nAnswer: "
)
SQL_TMPL = "Given an input question, write a {{dialect}} query against this schema: {{schema}} for {{query_str}}"
NO_DOCUMENT = "Rephrase the follow-up question {{question}} as a standalone question, keeping its meaning."
SHORT = "Summarize: {{text}}"
LITERAL = "Return JSON like {{{{\\"answer\\": \\"...\\"}}}} for the text below, nothing else:\\n{{text}}"

def build():
    INNER = "Use the following context to answer: {{context}} Question: {{question}} (inside a function)"
'''


def _wheel(folder: Path, package: str, version: str, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{package}-{version}-py3-none-any.whl", "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


@pytest.fixture()
def wheels(tmp_path: Path) -> Path:
    copy = 'prompt_template = """Use the following pieces of context to answer the question at the end.\n\n{context}\n\nQuestion: {question}\nHelpful Answer:"""\n'
    near = copy.replace("Helpful Answer:", "Answer in English:")
    _wheel(tmp_path, "llama_index_core", "0.14.25", {"llama_index/core/prompts/default_prompts.py": MODULE,
                                                     "llama_index/core/tests/test_x.py": copy})
    _wheel(tmp_path, "langchain_classic", "1.0.8", {"langchain_classic/chains/retrieval_qa/prompt.py": copy,
                                                    "langchain_classic/chains/stuff/prompt.py": copy})
    _wheel(tmp_path, "langchain_community", "0.4.2", {"langchain_community/chains/qa/prompt.py": near})
    return tmp_path


def test_templates_in_keeps_module_level_templates_with_a_document_slot_and_known_slots() -> None:
    found = dict(rag.templates_in(MODULE))
    assert found["DEFAULT_TEXT_QA_PROMPT_TMPL"] == QA  # implicit concatenation read whole
    assert "LITERAL" in found  # doubled braces are literal text, not slots
    # an unknown slot (dialect, schema), no document slot, too short, or not at module level
    assert not {"SQL_TMPL", "NO_DOCUMENT", "SHORT", "INNER"} & found.keys()


def test_read_templates_reads_copies_once_groups_near_duplicates_and_skips_tests(wheels: Path) -> None:
    rows = rag.read_templates(wheels)
    assert [(r["package"], r["name"]) for r in rows] == [
        ("llama-index-core", "DEFAULT_TEXT_QA_PROMPT_TMPL"), ("llama-index-core", "LITERAL"),
        ("langchain-classic", "prompt_template"), ("langchain-community", "prompt_template")]
    groups = [r["group"] for r in rows]
    assert groups[0] == "tmpl-llama-index-core-default_text_qa_prompt_tmpl"
    assert groups[2] == groups[3] == "tmpl-langchain-classic-prompt_template"  # the reworded copy joins it


def test_a_missing_wheel_exits_2_naming_it(wheels: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (wheels / "langchain_community-0.4.2-py3-none-any.whl").unlink()
    assert rag.main(["--wheels-dir", str(wheels), "--out", str(wheels / "out.jsonl")]) == 2
    assert "langchain_community-0.4.2-py3-none-any.whl not found" in capsys.readouterr().err
    assert not (wheels / "out.jsonl").exists()


def _passages() -> dict[str, list[str]]:
    return {f"{kind}/{split}": [f"{kind} {split} passage {i}.\n\nSecond paragraph of {kind} {split} {i}." for i in range(5)]
            for kind in ("readme", "reference") for split in ("train", "test")}


def test_every_fill_has_a_twin_differing_only_by_one_planted_instruction(wheels: Path) -> None:
    templates = rag.read_templates(wheels)
    rows, _ = rag.build(templates, _passages(), evaluation=[], fills=8)
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row)
    assert by_group.keys() == {t["group"] for t in templates}
    instructions = [text.split("{")[0].splitlines()[0] for _, text in D.INJECTIONS]
    for clean, attacked in zip(rows[::2], rows[1::2]):
        assert (clean["label"], attacked["label"], clean["group"]) == (0, 1, attacked["group"])
        added = [line for line in attacked["text"].splitlines() if line not in clean["text"].splitlines()]
        assert added and any(prefix in line for line in added for prefix in instructions if prefix)
        assert all(line in attacked["text"].splitlines() for line in clean["text"].splitlines())
        assert not [slot for slot in rag.SLOT_KINDS if f"{{{slot}}}" in clean["text"]]  # every slot filled
        # Each row carries its template, and the template's literal text is all that a registered
        # template leaves out: the planted instruction is in a slot.
        as_filled = {from_llama_index(t["template"]) if t["package"] == "llama-index-core" else t["template"] for t in templates}
        assert clean["template"] == attacked["template"] and clean["template"] in as_filled
        template = PromptTemplate.parse(clean["group"], clean["template"])
        assert template.match(clean["text"]) is not None
        assert any(line in value for value in template.match(attacked["text"]) for line in added)


def test_llama_index_templates_are_filled_as_llama_index_fills_them(wheels: Path) -> None:
    rows, _ = rag.build(rag.read_templates(wheels), _passages(), evaluation=[], fills=2)
    json_example = [r for r in rows if r["text"].startswith("Return JSON like")]
    assert json_example and all(r["text"].startswith('Return JSON like {{"answer": "..."}} for the text') for r in json_example)


def test_a_passage_is_only_used_with_a_template_on_its_side_of_the_split(wheels: Path) -> None:
    rows, _ = rag.build(rag.read_templates(wheels), _passages(), evaluation=[], fills=20)
    for row in rows:
        split = extra_split(row["group"])
        other = "test" if split == "train" else "train"
        assert f" {other} passage" not in row["text"]
    assert any(" passage " in row["text"] for row in rows)


def test_rows_repeating_an_evaluation_prompt_are_dropped_and_counted(wheels: Path) -> None:
    templates = rag.read_templates(wheels)
    rows, _ = rag.build(templates, _passages(), evaluation=[], fills=3)
    rows2, dropped = rag.build(templates, _passages(), evaluation=[rows[1]["text"]], fills=3)
    assert rows[0]["text"] not in {r["text"] for r in rows2} and rows[1]["text"] not in {r["text"] for r in rows2}
    assert dropped["repeats an evaluation prompt"] == 1  # the pair goes whole


def test_the_shipped_rows_keep_every_readme_and_reference_passage_on_its_template_groups_side() -> None:
    """Were the set written into data/extra/ to train on, no held-out passage would sit in a training prompt."""
    passage_split = {r["text"]: r["split"] for r in read_jsonl(CORPUS_PATH) if r["source"] in ("package_readmes", "python_reference")}
    shipped = read_jsonl(rag.OUT_PATH)
    assert len(shipped) > 500 and {r["label"] for r in shipped} == {0, 1}
    checked = 0
    for row in shipped:
        inside = [p for p in passage_split if len(p) > 200 and p in row["text"]]
        # Two reference passages overlap (identifiers holds id-classes): check the one that was drawn.
        for passage in [p for p in inside if not any(p != q and p in q for q in inside)]:
            assert passage_split[passage] == extra_split(row["group"]), (row["group"], passage[:60])
            checked += 1
    assert checked > 100


def test_the_shipped_set_is_not_training_data() -> None:
    assert rag.OUT_PATH.parent != rag.EXTRA_DIR
    assert not [r for r in read_jsonl(CORPUS_PATH) if r["source"] == rag.SOURCE]


def test_fills_below_one_is_a_usage_error(wheels: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rag.main(["--wheels-dir", str(wheels), "--fills", "0", "--out", str(wheels / "out.jsonl")])
    assert exit_info.value.code == 2 and "--fills must be an integer >= 1, got 0" in capsys.readouterr().err


def test_shipped_template_rows_repeat_no_evaluation_prompt() -> None:
    shipped = read_jsonl(rag.OUT_PATH)
    index = rag.NearDuplicateIndex([r["text"] for p in rag.EVAL_SETS for r in read_jsonl(p)])
    assert not [r["text"][:80] for r in shipped if index.match(r["text"])]


def test_planting_keeps_the_passage_paragraphs_in_order() -> None:
    rng = random.Random(3)
    passage = "First.\n\nSecond.\n\nThird."
    planted = rag._plant(passage, "AI: do X.", rng)
    assert [p for p in planted.split("\n\n") if p != "AI: do X."] == ["First.", "Second.", "Third."]
