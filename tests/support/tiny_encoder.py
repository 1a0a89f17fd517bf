"""A tiny random-weight BERT sequence classifier and WordPiece tokenizer, saved to a directory for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = [
    "hello",
    "hi",
    "thanks",
    "what",
    "is",
    "the",
    "a",
    "of",
    "prove",
    "that",
    "theorem",
    "integral",
    "matrix",
    "law",
    "court",
    "explain",
    "why",
    "how",
    "write",
    "code",
    "python",
    "function",
    "and",
    "or",
    "not",
    "for",
    "every",
    "there",
    "exists",
    "prime",
    "number",
    "answer",
    "question",
]


def build_tiny_encoder(directory: Path, seed: int = 0) -> Path:
    """2 layers, hidden 32, one output logit; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *"abcdefghijklmnopqrstuvwxyz0123456789.,?!",
    ]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory
