"""``specbound attention``: the data side (bounds.md §8) of one checkpoint on a text: per-head
tables, the capacity ``attention_effective_rank``, plots, and a compact summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from specbound.cli.console import BAD_INPUT, USAGE, err, fail, progress_bar
from specbound.cli.console import out as _stdout
from specbound.cli.options import check_device, check_outputs, check_positive
from specbound.errors import SpecboundError

__all__ = ["attention", "print_attention_summary"]


def attention(
    source: Optional[str] = typer.Argument(
        None, help="Checkpoint folder (config.json, weights, tokenizer). Default: the packaged all-MiniLM-L6-v2."
    ),
    text: Optional[Path] = typer.Option(
        None, "--text", help="Text file, one sequence per non-empty line. Default: the packaged MiniLM's model card, "
        "split into sentences."
    ),
    token_ids: Optional[Path] = typer.Option(
        None, "--token-ids", help="JSON file with pre-tokenised sequences (a list of lists of ids), for a "
        "checkpoint without a tokenizer."
    ),
    max_length: Optional[int] = typer.Option(
        None, "--max-length", help="Longest sequence in tokens (longer ones are truncated). Default: the model's maximum."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass."),
    max_sequences: Optional[int] = typer.Option(None, "--max-sequences", help="Use the first N sequences."),
    random_tokens: bool = typer.Option(
        False, "--random-tokens", help="Add the baseline: uniformly drawn token ids of the same lengths (seeded)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random tokens and of the bootstrap."),
    out_dir: Path = typer.Option(Path("specbound-attention"), "--out", help="Output folder (CSV, JSON, plots)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the PNG plots."),
) -> None:
    """Attention matrices and logit fields on real inputs: effective rank, entropy and rank per head."""
    check_positive("--batch-size", batch_size)
    if max_sequences is not None:
        check_positive("--max-sequences", max_sequences)
    if max_length is not None:
        check_positive("--max-length", max_length)
    if text is not None and token_ids is not None:
        fail("--text and --token-ids exclude each other: pass one.", USAGE)
    from specbound.data.result import ATTENTION_FILES

    check_outputs(folders=[(out_dir, "--out", ATTENTION_FILES)])
    check_device(device)
    from specbound.data import attention as run  # torch, transformers: once the options are known good

    try:
        with progress_bar("forward passes (batches)") as update:
            att = run(source, texts=text, token_ids=token_ids, max_length=max_length, batch_size=batch_size,
                      max_sequences=max_sequences, random_tokens=random_tokens, device=device, seed=seed,
                      progress=update)
        written = att.write(out_dir, plots=plots)
    except SpecboundError as e:
        fail(str(e), BAD_INPUT)
    print_attention_summary(att)
    _stdout.print(f"Wrote {len(written)} files to [bold]{escape(str(out_dir))}[/]", highlight=False)


def _f(v: Any, fmt: str = ".2f") -> str:
    return "" if v is None or v != v else format(float(v), fmt)


def print_attention_summary(att: Any, console: Any = None) -> None:
    """The model line, which text was used, one row per layer (text and random side by side),
    the capacity and the notes (notes also on stderr, as warnings); on ``console`` (default:
    stdout)."""
    out = console if console is not None else _stdout
    m, txt = att.info["model"], att.info["text"]
    out.print(f"[bold]{m['model_type']}[/]  L={m['L']}  H={m['H']}  H_kv={m['H_kv']}  N={m['N']}  "
              f"{m['attention']} attention  ({escape(str(m['source']))})", highlight=False)
    out.print(f"Text: {escape(txt['source']['description'])}; {txt['n_sequences']} sequences, "
              f"{txt['n_tokens']} tokens", highlight=False)
    lay = att.layers
    sources = att.sources
    t = Table(title="Per layer, text (means over heads and sequences; bounds.md §8)", title_justify="left",
              box=box.SIMPLE_HEAD, padding=(0, 1))
    cols = [("layer", None, None), ("erank P", "text", "P_erank_mean")]
    if "random" in sources:
        cols.append(("random", "random", "P_erank_mean"))
    cols += [("erank S", "text", "S_erank_mean"), ("H/ln n", "text", "norm_entropy_mean"),
             ("erank X", "text", "hidden_erank_mean")]
    if "random" in sources:
        cols.append(("random", "random", "hidden_erank_mean"))
    cols += [("k90 S", "text", "S_k90_mean"), ("k90 QK", "text", "weight_qk_k90")]
    # erank P/S: effective rank of the attention matrix / logit field; H/ln n: normalised entropy;
    # erank X: of the hidden state entering the layer; k90 QK: of the weight QK (bounds.md §8)
    for name, _, _ in cols:
        t.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    for layer in sorted(lay["layer"].unique()):
        row = [str(layer)]
        for _, s, c in cols[1:]:
            v = lay[(lay["source"] == s) & (lay["layer"] == layer)][c]
            row.append(_f(v.iloc[0] if len(v) else None))
        t.add_row(*row)
    out.print(t)
    cap = att.capacity_dict()
    line = f"attention_effective_rank = {cap['value']:.2f} (measure, {cap['label']})"
    if "random" in cap["per_source"]:
        line += f"; random tokens {cap['per_source']['random']:.2f} (text - random {cap['text_minus_random']:+.2f})"
    out.print(line, highlight=False)
    for n in att.notes:
        err.print(f"[yellow]note[/] {escape(n)}", highlight=False)
