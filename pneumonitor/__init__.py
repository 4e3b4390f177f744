"""pneumonitor: pneumonia detection, per-lung severity scoring and monitoring on chest X-rays.

Implements Amer et al. 2020, "COVID-19 in CXR: from Detection and Severity Scoring to Patient Disease Monitoring".
Not for clinical use.
"""

__version__ = "0.1.0"
