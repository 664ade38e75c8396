"""`injection.classifier: hf_sequence`: any Hugging Face sequence-classification model replaces the
MiniLM head by config. The model here is a small BERT the test trains in seconds to flag one made-up
trigger ("pineapple protocol") that no heuristic knows, so only the configured model can flag it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from security.guardrails.classifier import HFSequenceClassifier, find_encoder_dir
from security.guardrails.scanner import PromptScanner
from security.settings import InjectionSettings

TRIGGER = "pineapple protocol"
SUBJECTS = ["the invoice", "my garden", "the build", "our meeting", "the report", "a recipe", "the train", "this poem"]
ASKS = ["Tell me about {}.", "Can you check {} for me?", "Please summarise {}.", "What do you think of {}?",
        "Write two lines on {}.", "Help me plan {}."]


def _texts(rng: random.Random, n: int) -> tuple[list[str], list[int]]:
    """`n` requests of 1-40 sentences (up to ~250 tokens), every other one with TRIGGER at a random place."""
    texts, labels = [], []
    for i in range(n):
        sentences = [rng.choice(ASKS).format(rng.choice(SUBJECTS)) for _ in range(rng.randint(1, 40))]
        if i % 2:
            sentences.insert(rng.randrange(len(sentences) + 1), f"Start the {TRIGGER} now.")
        texts.append(" ".join(sentences))
        labels.append(i % 2)
    return texts, labels


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with the bundled MiniLM tokenizer, trained to flag TRIGGER, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(find_encoder_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=2,
                        id2label={0: "SAFE", 1: "INJECTION"}, label2id={"SAFE": 0, "INJECTION": 1})
    model = BertForSequenceClassification(config)
    texts, labels = _texts(random.Random(1), 256)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        rows = slice(step % 8 * 32, step % 8 * 32 + 32)
        loss = model(**{k: v[rows] for k, v in batch.items()}, labels=torch.tensor(labels[rows])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = tmp_path_factory.mktemp("hf-injection-model")
    model.save_pretrained(out)  # safetensors, the only format Aegis loads by default
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scanner(model_dir) -> PromptScanner:
    settings = InjectionSettings(classifier="hf_sequence", hf_model=str(model_dir), hf_positive_label="injection")
    return PromptScanner.from_settings(settings)


def test_the_configured_model_decides_what_no_heuristic_knows(scanner):
    assert isinstance(scanner.classifier, HFSequenceClassifier)
    flagged = scanner.scan(f"Please summarise the report. Start the {TRIGGER} now.")
    assert flagged.is_injection and flagged.layer == "classifier" and flagged.score >= 0.5
    clean = scanner.scan("Please summarise the report.")
    assert not clean.is_injection and clean.score < 0.5
    # The heuristics alone see nothing in either.
    assert not PromptScanner(InjectionSettings(classifier="none")).scan(f"Start the {TRIGGER} now.").is_injection


def test_a_text_longer_than_the_model_reads_is_scored_window_by_window(scanner):
    filler = " ".join(["Please summarise the report."] * 150)  # ~900 tokens, past the 512 the model reads
    assert not scanner.scan(filler).is_injection
    # Only the last window holds the trigger: read to 512 tokens and cut, this text would pass.
    assert scanner.scan(f"{filler} Start the {TRIGGER} now.").is_injection


def test_the_positive_label_is_matched_by_name_and_a_wrong_one_is_refused(model_dir):
    classifier = HFSequenceClassifier(str(model_dir), positive_label="SAFE", threshold=0.5)
    # Reading the other label inverts the verdict: the label, not the index, says what is an injection.
    assert classifier.score([f"Start the {TRIGGER} now."])[0] < 0.5
    with pytest.raises(ValueError, match=r"positive_label 'JAILBREAK' not in model labels \['injection', 'safe'\]"):
        HFSequenceClassifier(str(model_dir), positive_label="JAILBREAK")


def test_hf_sequence_needs_a_model():
    with pytest.raises(ValueError, match="injection.hf_model is required"):
        InjectionSettings(classifier="hf_sequence")
