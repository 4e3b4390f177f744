from lib.activelearning.boxes import BoxesOnly
from lib.activelearning.epistemic import DLNetEpistemicScoring, Epistemic, mc_dropout_probabilities

__all__ = ["BoxesOnly", "DLNetEpistemicScoring", "Epistemic", "mc_dropout_probabilities"]
