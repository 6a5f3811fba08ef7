"""Chapter 01: Deep INFOMAX with an analytic KL prior.

Split by concern: `settings` (per-profile `Config`, `CONFIGS`, `config`), `identities`
(discrete identities, the Gaussian toy, shuffled negatives: the derivation side), `models`
(encoder, critics, random views, the loss), `experiments` (CIFAR-10 data, training over seeds,
features against baselines), `figures`, and `results` (plain per-seed results and the
chapter's claims, decided by `dlbook.claims`). Everything is re-exported here, so the
notebook and the tests import `dlbook.infomax` only. The Gaussian pieces (KL,
reparameterisation, the linear-Gaussian channel, code statistics) live in `dlbook.gaussian`.
Equation labels refer to notebooks/01_infomax.md.
"""
from ..metrics import mean_sd  # noqa: F401  (re-exported for readers of earlier versions)
from .experiments import (PIXEL_KINDS, VIEW_NAME, CifarData, InfomaxRun, compare_features,  # noqa: F401
                          compare_seeds, encode, encode_local, encoder_from_snapshot, evaluate_features,
                          feature_entries, feature_table, images_to_input, input_to_images, knn_by_epoch,
                          knn_by_passes, load_cifar, per_epoch, pixel_baselines, pixel_features, post_name,
                          random_encoder, retrieval_rows, run_label, run_sweep, seeds_of, sweep_entries, sweep_name,
                          train_infomax, train_seeds)
from .figures import retrieval_figure, run_figure, toy_figure  # noqa: F401
from .identities import (LOG2, MLPCritic2D, bce_objective, correlated_pairs, false_negative_rates,  # noqa: F401
                         fit_mlp_critic, fit_quadratic_critic, gaussian_mi, gaussian_toy, js_divergence,
                         js_divergence_batch, kl_discrete, mutual_information, prior_identity_terms, shuffle_batch)
from .models import (Encoder, GlobalCritic, InfoMax, LocalCritic, bce_mi_loss, global_pairs,  # noqa: F401
                     infomax_step, local_pairs, random_views)
from .results import claims, gather  # noqa: F401
from .settings import CONFIGS, GLOBAL_INPUTS, Config, config  # noqa: F401
