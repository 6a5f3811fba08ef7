"""Chapter 02 — Lipschitz constraints: from weight decay to spectral normalisation.

What only this chapter needs, by concern:

- `norms`: norms of layer matrices (the kernel reshaping, power iteration, the operator norm of
  a convolution, the gradients of sigma_1 and of W / sigma_1, the product bound, the exact
  empirical W1 and its 1-D dual), spectral normalisation by the exact SVD, the post-update
  projection of the post's Keras code and BatchNorm's gain;
- `classifier`: the classifier with weight decay or spectral-norm regularisation (L6, L7);
- `critics`: critics fitted on fixed 2-D samples (L8, L10, the soft penalty's optimum, the
  25-Gaussians probe) and the per-step timing of L11;
- `settings`: `Config`, `CONFIGS`, `config(profile)` and the image loss table (L12);
- `images`: the image experiment through the toolkit and what the trained SN critic is
  measured on;
- `claims`: the verdicts of the chapter's experiments by the book's rule.

The SN critic, the other losses and the GAN loops come from `dlbook.gan` / `dlbook.gan_runs`.
"""
from .classifier import (REGULARISERS, Classifier, ClassifierConfig, accuracy, classifier_data,  # noqa: F401
                         classifier_experiment, input_grad_norm, pick_lambda, spearman, train_classifier)
from .critics import (CRITICS, L10_VARIANTS, ToyCriticConfig, critic_experiment, dual_value, fit_critic,  # noqa: F401
                      gp_optimum, gp_probe, gradient_cosines, reparam_vs_projection, step_times, toy_critic,
                      toy_samples)
from .norms import (PROJECTIONS, ExactSN, PowerIteration, ProjectedWGAN, as_matrix, bn_gain,  # noqa: F401
                    conv_operator_norm, difference_quotient, empirical_w1, exact_spectral_normalise,
                    frobenius_product, grad_norms, kr_dual_1d, layer_weights, post_spectral_norm, power_curve,
                    power_iteration, product_bound, project_spectral_, sigma_grad, sn_grad)
from .settings import CONFIGS, Config, config, image_table  # noqa: F401
from .images import floor, image_experiment, largest_input_gradient, sn_layers, trained_sn_critic  # noqa: F401
from .claims import claims, results_of  # noqa: F401
