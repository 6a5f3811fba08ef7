"""dlbook: the helper package of the executed book on Scientific Spaces articles."""
__version__ = "0.1.0"

from .config import PROFILES, by_profile, device, device_name, resolve_profile, seed_everything, setup  # noqa: E402,F401

__all__ = ["PROFILES", "by_profile", "device", "device_name", "resolve_profile", "seed_everything", "setup",
           "__version__"]
