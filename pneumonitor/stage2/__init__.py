"""Stage 2 (Sec. III-B of the paper): Grad-CAM proposals inside the radiologists' boxes (:mod:`.gradcam`), the
DLNet-2 datalist built from them (:mod:`.proposals`) and the measurement table against the radiologist masks
(:mod:`.measure`)."""
