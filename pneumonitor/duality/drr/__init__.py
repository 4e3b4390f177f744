"""Physically based digitally reconstructed radiographs (DRRs) from chest CT.

Modules: :mod:`.geometry` (cone-beam PA/AP), :mod:`.spectrum` (spekpy tube spectra), :mod:`.materials` (HU ->
density, material decomposition, NIST mass attenuation via xraydb), :mod:`.projector` (torch line integrals, CPU and
CUDA), :mod:`.postprocess` (paper's inversion / 8-bit / gamma), :mod:`.render` (all together, label footprints).
The duality study that uses them is :mod:`pneumonitor.duality.study`.
"""
