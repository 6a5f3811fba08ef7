"""Chapter 04: a couplet bot as sequence labelling with a gated CNN.

An upper line x = (x_1..x_n) and its lower line y = (y_1..y_n) have the same length and
correspond position by position, so the lower line is predicted as one label per position:
p(y|x) = prod_t p(y_t|x) (eq-04-tagging). The model is the post's: a character embedding,
dropout, six gated residual 1-D convolutions (eq-04-gate) and a per-position softmax over the
vocabulary; decoding is the per-position argmax (eq-04-map) under a prior: never the unknown
id 0, never the upper line's own character at its position (eq-04-prior, the post's), and
punctuation copied in place and nowhere else (eq-04-copy, the chapter's).

Every loss and rule is a transcription of one numbered equation of the chapter; the label is
in the comment beside it. Tensors are (batch, length) for ids and (batch, length, V) for
logits; the convolutions see (batch, channels, length).

The package is split by concern: `settings` (Config per profile), `data` (corpus, vocabulary,
length buckets), `model` (the tagger, the BiLSTM, the loss), `decoding` (priors, evaluation,
lookup table, rules), `training` (runs to the best checkpoint, the scaling curve), `figures`,
`widgets` and `claims`; everything is importable from `dlbook.couplet` itself.
"""
from __future__ import annotations

from .settings import CONFIGS, MONITOR, POST_ANSWERS, SHOWCASE, UNK, Config, config  # noqa: F401
from .data import (CoupletData, BucketBatches, build_vocab, encode_buckets, format_report, is_punct,  # noqa: F401
                   normalise, prepare, total_variation)
from .model import (BiLSTMTagger, CNNTagger, GatedBlock, gated_residual, keras_init, make_model,  # noqa: F401
                    n_params, param_formula, tagging_nll)
from .decoding import (MASKS, RULES, LookupBaseline, answer, answer_many, decode, doubling,  # noqa: F401
                       enumerate_map, evaluate, every_kth, overlap, prior_mask, punct_ids, rule_shares, rules)
from .training import (RunResult, Scaling, crossover, load_model, loglinear, scaling, step_times,  # noqa: F401
                       subset, train_runs, train_seeds, train_tagger)
from .figures import (CJK_FONTS, changed_positions, cjk_font, influence, plot_candidates,  # noqa: F401
                      plot_influence, plot_scaling, plot_training)
from .widgets import MAX_LIVE, answer_gallery, gallery_rows, live_box, live_reply, oov_message  # noqa: F401
from .claims import claims  # noqa: F401
