"""Experiments E1–E3 of shared/spec/experiments.md, one package each, on the library's public API.

* :mod:`.sparse_majority` — E1, sparse majority: does the gap, the ℓ1 norm or a bound proxy grow with T?
* :mod:`.scaling` — E2, growth of the proxies with depth L and width N (BERT miniatures or the
  synthetic family trained here).
* :mod:`.correlation` — E3, which measure tracks the generalisation gap over a sweep.

Shared: :mod:`.common` (seeding, threads, versions, hashing, atomic writes, run cache,
progress events), :mod:`.stats` (the slope-with-interval fit, on scipy), :mod:`.training`
(the AdamW recipe), :mod:`.hf_bert` (BERT config, masking, training loop, evaluation for E2
and E3), :mod:`.synthetic_language` (the seeded language of E2 and E3's masked task).
Importing this package imports none of them.
"""
