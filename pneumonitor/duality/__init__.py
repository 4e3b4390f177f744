"""The CT-X-ray duality: CT reading and body/lung/infection segmentation with the CT ratio (:mod:`.ct`), the
physically based DRR renderer (:mod:`.drr`) and the duality study on virtual patients (:mod:`.study`)."""
