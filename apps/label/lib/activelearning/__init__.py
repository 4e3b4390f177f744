from lib.activelearning.boxes import BoxesOnly
from lib.activelearning.random import Random
from lib.activelearning.epistemic import DLNetEpistemicScoring, Epistemic

__all__ = ["Random", "BoxesOnly", "DLNetEpistemicScoring", "Epistemic"]
