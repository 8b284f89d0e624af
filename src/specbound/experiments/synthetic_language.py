"""A seeded synthetic language with real structure, for masked-token pre-training offline.

The language is a small probabilistic context-free grammar with number agreement and lexical
selection, so that predicting a masked token needs more than its frequency:

    S      → NP[n] VP[n] "."                      n ∈ {sg, pl}, P(sg) = 0.5
    NP[n]  → DET[n] ADJ^k N[n] (PP | RC[n])?      k ~ truncated geometric
    PP     → PREP NP[m]                            m drawn afresh
    RC[n]  → "that" VP[n]                          the relative clause agrees with its head
    VP[n]  → V_tr[n] NP[m]  |  V_in[n] ADV?        transitive verbs select their objects

Structure a model can learn:

* **agreement at a distance** — the main verb agrees in number with the subject's head noun
  across any PP / relative clause in between; determiners agree with their noun;
* **lexical selection** — every transitive verb has its own (Dirichlet) preference over object
  nouns, every adjective over the nouns it modifies; singular and plural noun forms share a lemma;
* **Zipfian frequencies** inside every word class, with seed-dependent ranks.

Everything about the language (the lexicon's frequencies, the selectional preferences, the
rule probabilities) is drawn from ``SyntheticLanguage(seed)``; a corpus is drawn with a second
seed, so the same two seeds give the same corpus bit for bit.

A sequence is ``[CLS] sentence sentence … [SEP] [PAD]…``: sentences are packed until the next
one would not fit (a sentence longer than the room left is cut, so every sequence is full
before its ``[SEP]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

#: word class → number of words in it (sg/pl pairs are listed as two classes of equal size).
CLASS_SIZES: dict[str, int] = {
    "DET_sg": 3,
    "DET_pl": 3,
    "ADJ": 24,
    "N_sg": 40,
    "N_pl": 40,
    "Vtr_sg": 20,
    "Vtr_pl": 20,
    "Vin_sg": 12,
    "Vin_pl": 12,
    "PREP": 8,
    "ADV": 10,
    "THAT": 1,
    "DOT": 1,
}


def _pick(rng: np.random.Generator, p: np.ndarray) -> int:
    """Index drawn from the probability vector ``p`` (faster than ``rng.choice`` for one draw)."""
    c = np.cumsum(p)
    return min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), len(p) - 1)


def _zipf(rng: np.random.Generator, n: int, s: float = 1.1) -> np.ndarray:
    """Zipf(s) probabilities over ``n`` items, ranks shuffled by ``rng``."""
    p = 1.0 / np.arange(1, n + 1) ** s
    p = p[rng.permutation(n)]
    return p / p.sum()


@dataclass
class SyntheticLanguage:
    """The grammar and lexicon of one seeded language (see the module docstring).

    ``vocab_size`` counts the 5 special tokens (``[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3,
    [MASK]=4``) and the words. ``max_depth`` bounds the nesting of PP / RC.
    """

    seed: int = 0
    max_depth: int = 2
    p_pp: float = 0.25
    p_rc: float = 0.2
    p_transitive: float = 0.6
    p_adv: float = 0.3
    p_adj: float = 0.45
    words: list[str] = field(init=False)
    offsets: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0x5EC])
        self.words = list(SPECIAL_TOKENS)
        self.offsets = {}
        for cls, n in CLASS_SIZES.items():
            self.offsets[cls] = len(self.words)
            self.words.extend(f"{cls.lower()}{i}" for i in range(n))
        # frequencies within classes; sg and pl forms of a lemma share one lemma distribution
        n_noun = CLASS_SIZES["N_sg"]
        self.p_det = {num: _zipf(rng, CLASS_SIZES["DET_sg"], 1.0) for num in ("sg", "pl")}
        self.p_adj_word = _zipf(rng, CLASS_SIZES["ADJ"])
        self.p_noun = _zipf(rng, n_noun)
        self.p_vtr = _zipf(rng, CLASS_SIZES["Vtr_sg"])
        self.p_vin = _zipf(rng, CLASS_SIZES["Vin_sg"])
        self.p_prep = _zipf(rng, CLASS_SIZES["PREP"])
        self.p_adv_word = _zipf(rng, CLASS_SIZES["ADV"])
        # lexical selection: verb → object-noun lemma, adjective → noun lemma, preposition → noun
        self.obj_pref = rng.dirichlet(np.full(n_noun, 0.15), size=CLASS_SIZES["Vtr_sg"])
        self.adj_pref = rng.dirichlet(np.full(n_noun, 0.3), size=CLASS_SIZES["ADJ"])
        self.prep_pref = rng.dirichlet(np.full(n_noun, 0.3), size=CLASS_SIZES["PREP"])
        # intransitive verbs prefer some subjects: subject lemma → verb distribution
        self.subj_vin_pref = rng.dirichlet(np.full(CLASS_SIZES["Vin_sg"], 0.3), size=n_noun)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    # -- generation ---------------------------------------------------------------------------
    def _tok(self, cls: str, i: int) -> int:
        return self.offsets[cls] + int(i)

    def _np(self, rng: np.random.Generator, num: str, depth: int, lemma_p: np.ndarray | None) -> tuple[list[int], int]:
        """A noun phrase of number ``num``; returns (tokens, head lemma)."""
        out = [self._tok(f"DET_{num}", _pick(rng, self.p_det[num]))]
        adjs: list[int] = []
        while len(adjs) < 2 and rng.random() < self.p_adj:
            adjs.append(int(_pick(rng, self.p_adj_word)))
        p = self.p_noun if lemma_p is None else lemma_p
        if adjs:  # the last adjective reweights the noun lemma (selection)
            p = p * self.adj_pref[adjs[-1]]
            p = p / p.sum()
        lemma = int(_pick(rng, p))
        out += [self._tok("ADJ", a) for a in adjs]
        out.append(self._tok(f"N_{num}", lemma))
        if depth < self.max_depth:
            u = rng.random()
            if u < self.p_pp:
                prep = int(_pick(rng, self.p_prep))
                inner_num = "sg" if rng.random() < 0.5 else "pl"
                toks, _ = self._np(rng, inner_num, depth + 1, self.prep_pref[prep])
                out += [self._tok("PREP", prep)] + toks
            elif u < self.p_pp + self.p_rc:
                out.append(self._tok("THAT", 0))
                out += self._vp(rng, num, depth + 1, lemma)
        return out, lemma

    def _vp(self, rng: np.random.Generator, num: str, depth: int, subj_lemma: int) -> list[int]:
        if rng.random() < self.p_transitive:
            v = int(_pick(rng, self.p_vtr))
            obj_num = "sg" if rng.random() < 0.5 else "pl"
            toks, _ = self._np(rng, obj_num, depth, self.obj_pref[v])
            return [self._tok(f"Vtr_{num}", v)] + toks
        p = self.p_vin * self.subj_vin_pref[subj_lemma]
        p = p / p.sum()
        v = int(_pick(rng, p))
        out = [self._tok(f"Vin_{num}", v)]
        if rng.random() < self.p_adv:
            out.append(self._tok("ADV", _pick(rng, self.p_adv_word)))
        return out

    def sentence(self, rng: np.random.Generator) -> list[int]:
        """One sentence as token ids (no special tokens), ending with "."."""
        num = "sg" if rng.random() < 0.5 else "pl"
        subj, lemma = self._np(rng, num, 0, None)
        return subj + self._vp(rng, num, 0, lemma) + [self._tok("DOT", 0)]

    def corpus(self, n_sequences: int, max_len: int, seed: int) -> np.ndarray:
        """``[n_sequences, max_len]`` int64 token ids, reproducible from (``self.seed``, ``seed``).

        Each row is ``[CLS] s_1 s_2 … [SEP]`` filled to ``max_len`` (a last sentence that does
        not fit is cut); rows are independent draws.
        """
        if max_len < 8:
            raise ValueError(f"max_len must be at least 8, got {max_len}")
        rng = np.random.default_rng([self.seed, int(seed), 0xC0])
        out = np.full((n_sequences, max_len), PAD, dtype=np.int64)
        room = max_len - 2
        for r in range(n_sequences):
            toks: list[int] = []
            while len(toks) < room:
                toks += self.sentence(rng)
            row = [CLS] + toks[:room] + [SEP]
            out[r, : len(row)] = row
        return out

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return " ".join(self.words[int(i)] for i in ids if int(i) != PAD)


def unigram_logprobs(corpus: np.ndarray, vocab_size: int, alpha: float = 0.5) -> np.ndarray:
    """Natural-log unigram probabilities of the non-special tokens of ``corpus`` (add-α smoothed).

    Special tokens get probability 0 (``-inf``); this is the baseline a masked-token model has
    to beat.
    """
    counts = np.bincount(corpus.ravel(), minlength=vocab_size).astype(np.float64)
    counts[: len(SPECIAL_TOKENS)] = 0.0
    counts[len(SPECIAL_TOKENS) :] += alpha
    p = counts / counts.sum()
    with np.errstate(divide="ignore"):
        return np.log(p)
