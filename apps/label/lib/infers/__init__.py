from lib.infers.lungs import LungsInfer
from lib.infers.pneumonia import PneumoniaInfer

__all__ = ["LungsInfer", "PneumoniaInfer"]
