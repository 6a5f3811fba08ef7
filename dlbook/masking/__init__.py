"""Chapter 03: masking is dropout (MLM, MAE and DropToken).

Notation follows the post: ``p`` is the **keep** probability of a Bernoulli mask
``eps ~ Bernoulli(p)``, and a dropout layer trains ``f(x * eps / p)``. PyTorch's
``nn.Dropout(p)`` takes the **drop** probability ``1 - p``; so does the DropToken rate ``r``
of this package (``r = 1 - p``) and the MAE mask ratio (0.75 masked, ``p = 0.25`` kept).

The package, by concern, each piece with the label of the chapter's equation it transcribes:

- `settings`: the `Config` of every profile, the special tokens;
- `dropout`: Bernoulli masks, the model average and the weight average, the Taylor gap;
  BERT's 80/10/10 corruption, the MLM loss and the embedding correction; attention dropout;
- `models`: a small pre-LN Transformer encoder whose attention can drop key columns, a tiny
  BERT (token, segment and position embeddings, MLM head, classification head), DropToken; a
  small MAE (patch encoder on the visible patches, light decoder) and its FLOP count;
- `text`: the couplet-matching task, MLM pre-training, fine-tuning and the runs of D11 / D12;
- `experiments`: the MAE experiments and the timings of D8 / D9;
- `figures`: the chapter's figures;
- `claims`: the chapter's experiment claims, decided by `dlbook.claims`.
"""
from ..metrics import mean_sd, paired  # noqa: F401  (the chapter calls masking.paired / mean_sd)
from .settings import *  # noqa: F401,F403
from .settings import CONFIGS, Config, config  # noqa: F401
from .dropout import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .text import *  # noqa: F401,F403
from .text import _finetune_job, _run_finetunes  # noqa: F401
from .experiments import *  # noqa: F401,F403
from .experiments import _median_times  # noqa: F401
from .claims import claims, claims_results  # noqa: F401
from .figures import *  # noqa: F401,F403
