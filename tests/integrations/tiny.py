"""Tiny models and data for the tracking tests: a BERT classifier from a config (random init,
seeded) and a synthetic token-classification dataset made here."""

from __future__ import annotations

import torch

VOCAB, SEQ = 40, 8


def tiny_bert(seed: int = 0, layers: int = 2):  # -> BertForSequenceClassification
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=SEQ, type_vocab_size=1, num_labels=2)
    return BertForSequenceClassification(cfg)


class Synthetic(torch.utils.data.Dataset):
    """``n`` sequences of random tokens; the label is whether token 1 occurs (learnable)."""

    def __init__(self, n: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(2, VOCAB, (n, SEQ), generator=g)
        self.x[: n // 2, 3] = 1
        self.y = (self.x == 1).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": self.y[i]}


def training_args(out, **kw):  # -> TrainingArguments
    from transformers import TrainingArguments

    base = dict(output_dir=str(out), per_device_train_batch_size=8, per_device_eval_batch_size=16,
                learning_rate=1e-3, use_cpu=True, report_to="none", disable_tqdm=True, seed=0,
                logging_steps=5, save_strategy="no", dataloader_num_workers=0)
    base.update(kw)
    return TrainingArguments(**base)
