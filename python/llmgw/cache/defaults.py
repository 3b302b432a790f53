"""Defaults for the semantic cache, chosen by benches/cache_quality.py on the labelled set
tests/data/cache_pairs.jsonl (split=tune: 156 paraphrases, 156 near-misses) and reported on the
split kept out of tuning (split=heldout: 52 + 52). A hit = cosine ≥ threshold and the
near-miss guards (`llmgw.cache.nearmiss`) pass; no verifier.

Rule: among thresholds whose tune near-miss hit rate is ≤ 1%, take the best tune paraphrase hit
rate P, then the highest threshold within 2 points of P. The guards do the separating (0 of 208
near-misses pass them at any threshold); the threshold is a second line, kept as high as costs
nothing.
"""

LEXICAL_THRESHOLD = 0.50
"""`llmgw._core.embed` (hashed n-grams). Tune: 44.9% of paraphrases hit, 0.0% of near-misses;
heldout: 36.5% (19/52) and 0.0% (0/52). Cosine alone at 0.50 lets 94% of heldout near-misses
hit, and below 0.97 it hits more near-misses than paraphrases at every threshold."""

MINILM_THRESHOLD = 0.60
"""all-MiniLM-L6-v2 (`llmgw.cache.minilm`, which reproduces sentence-transformers to 4
decimals). Tune: 45.5% / 0.0%; heldout: 36.5% (19/52) /
0.0% (0/52). Cosine alone at 0.60 lets 98% of heldout near-misses hit; at 0.90, where it keeps
about half the paraphrases, it still lets 52% of near-misses hit. MiniLM + guards is no better
than lexical + guards: the guards reject the rewordings MiniLM is good at. Its worth is in
front of a verifier, which it hands the reworded candidates the guards call "soft" rejects."""
