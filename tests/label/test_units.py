"""Pieces of the app on their own: MC dropout, label decoding, the SEG round trip, bundle working copies."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

from conftest import make_test_networks, save_test_checkpoint


def test_mc_dropout_varies_only_through_dropout_and_keeps_batch_norm_frozen():
    from lib.activelearning import mc_dropout_probabilities
    from pneumonitor.networks import DLNet

    dlnet, _ = make_test_networks(dlnet_logit_bias=0.0)
    x = torch.randn(1, 3, 64, 64)
    running = dlnet.backbone.bn1.running_mean.clone()
    probabilities = mc_dropout_probabilities(dlnet, x, passes=16)
    assert probabilities.shape == (16,) and np.var(probabilities) > 0
    np.testing.assert_array_equal(probabilities, mc_dropout_probabilities(dlnet, x, passes=16))  # seeded
    assert torch.equal(dlnet.backbone.bn1.running_mean, running) and not dlnet.training
    with torch.no_grad():
        deterministic = torch.sigmoid(dlnet(x)[0][0, 0]).item()
    assert abs(float(np.mean(probabilities)) - deterministic) < 0.25
    no_dropout = DLNet(backbone="resnet18", dense_units=(32, 16), dropout=0.0, fpn_channels=16, localization_maps=8)
    with pytest.raises(ValueError, match="no active dropout"):
        mc_dropout_probabilities(no_dropout, x, passes=4)


def test_decode_label_formats_and_refusals(tmp_path):
    import SimpleITK as sitk

    from lib.datastore import InvalidLabel, decode_label

    label = np.zeros((40, 60), dtype=np.uint8)
    label[5:20, 5:25], label[5:20, 35:55], label[10:15, 10:15] = 1, 2, 3
    nrrd = tmp_path / "label.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(label[None]), str(nrrd))  # what the infer task gives OHIF
    np.testing.assert_array_equal(decode_label(nrrd, (40, 60)), label)
    binary = tmp_path / "label.bin"
    label.tofile(binary)
    np.testing.assert_array_equal(decode_label(binary, (40, 60)), label)
    with pytest.raises(InvalidLabel, match="60x40"):
        decode_label(nrrd, (60, 40))
    floats = tmp_path / "float.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(label.astype(np.float32) + 0.5), str(floats))
    with pytest.raises(InvalidLabel, match="integers"):
        decode_label(floats, (40, 60))
    with pytest.raises(InvalidLabel, match="unsupported"):
        decode_label(tmp_path / "label.jpg", (40, 60))


def test_seg_round_trip_on_a_real_dx(shared_data):
    import pydicom

    from lib.dicomweb import label_to_seg, seg_to_label

    source = pydicom.dcmread(shared_data / "cxr-dicom-samples" / "gdcm-CR-MONO1-10-chest.dcm")  # no PatientID
    label = np.zeros((source.Rows, source.Columns), dtype=np.uint8)
    label[50:300, 40:200], label[50:300, 240:400], label[100:150, 60:120] = 1, 2, 3
    seg = label_to_seg(label, source)
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == 3
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        seg.save_as(handle.name)
        np.testing.assert_array_equal(seg_to_label(handle.name, str(source.SOPInstanceUID)), label)


def test_prepare_bundle_refreshes_configs_but_keeps_trained_weights(tmp_path, source_bundles):
    from lib.configs import prepare_bundle

    target = prepare_bundle(source_bundles / "lsnet", tmp_path / "lsnet")
    weights = target / "models" / "model.pt"
    assert weights.is_file() and (target / "configs" / "inference.json").is_file()
    _, lsnet = make_test_networks()
    with torch.no_grad():
        lsnet.head.bias.fill_(-3.0)
    save_test_checkpoint(lsnet, weights)  # as if a training run had promoted new weights
    trained = weights.read_bytes()
    prepare_bundle(source_bundles / "lsnet", target)
    assert weights.read_bytes() == trained
