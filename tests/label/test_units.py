"""Pieces of the app on their own: label decoding, the SEG round trip, bundle working copies (MC dropout is the
core's ``Analyzer.mc_dropout``: tests/test_inference_analyzer.py)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch

from conftest import NIH_DX, make_test_networks, save_test_checkpoint


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


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed (Debian package dicom3tools)")
@pytest.mark.parametrize("sample", ["dx_image.dcm", "gdcm-CR-MONO1-10-chest.dcm", NIH_DX])
def test_dciodvfy_reports_no_error_on_the_seg_of_each_sample(shared_data, tmp_path, sample):
    """The DX with PatientOrientation (copied, type 2C), the CR without patient attributes, the NIH image whose
    PatientAge "81" breaks the AS VR (left out of the SEG)."""
    import pydicom

    from lib.dicomweb import label_to_seg

    source = pydicom.dcmread(shared_data / "cxr-dicom-samples" / sample)
    label = np.zeros((source.Rows, source.Columns), dtype=np.uint8)
    label[10:60, 10:60], label[70:120, 70:120], label[20:40, 20:40] = 1, 2, 3
    path = tmp_path / "seg.dcm"
    label_to_seg(label, source).save_as(path)
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def test_prepare_bundle_refreshes_configs_but_keeps_trained_weights(tmp_path, source_bundles):
    from lib.configs import prepare_bundle

    target = prepare_bundle(source_bundles / "lsnet", tmp_path / "lsnet")
    weights = target / "models" / "model.pt"
    assert weights.is_file() and (target / "configs" / "inference.json").is_file()
    _, lsnet = make_test_networks()
    with torch.no_grad():
        lsnet.head.bias.fill_(-3.0)
    save_test_checkpoint(lsnet, weights)  # as if a training run had promoted new weights
    from pneumonitor.networks.bundle import read_inference_config, update_inference_config

    update_inference_config(target, image_size=[32, 32], threshold=0.7)  # the promotion's size, a code change
    trained = weights.read_bytes()
    prepare_bundle(source_bundles / "lsnet", target)
    assert weights.read_bytes() == trained
    config = read_inference_config(target)  # the trained size stays with its weights; the rest is the source's
    assert config["image_size"] == [32, 32] and config["threshold"] == read_inference_config(source_bundles / "lsnet")["threshold"]


def test_promotion_is_judged_at_the_served_operating_point(tmp_path, source_bundles, sample_images):
    """The served DLNet's inference.json says 0.3: a candidate at p ~ 0.5 is positive there (the paper's 0.62 would
    call it negative and score it 0 like the served model), so it is promoted; its architecture and size are served
    with it."""
    import json

    from PIL import Image

    from lib.configs import prepare_bundle
    from lib.trainers import RadiographTrainTask
    from pneumonitor.networks import load_bundle
    from pneumonitor.networks.bundle import update_inference_config
    from pneumonitor.reading import read_radiograph

    served = prepare_bundle(source_bundles / "dlnet", tmp_path / "dlnet")
    update_inference_config(served, classification_threshold=0.3, heatmap_threshold=0.5)
    silent, _ = make_test_networks(dlnet_logit_bias=-6.0)  # p ~ 0: never positive
    save_test_checkpoint(silent, served / "models" / "model.pt")
    task = RadiographTrainTask(served, {"dlnet_train_configs": "test_tiny.json"}, kind="DLNet", name="dlnet")
    staging = tmp_path / "staging"
    shutil.copytree(served / "configs", staging / "configs")
    candidate, _ = make_test_networks(dlnet_logit_bias=0.0)
    candidate.eval()
    with torch.no_grad():
        probability = torch.sigmoid(candidate(torch.zeros(1, 3, 64, 64))[0]).item()
    assert 0.3 < probability < 0.62
    save_test_checkpoint(candidate, staging / "models" / "model.pt")
    image = next(iter(sample_images.values()))
    rows, columns = read_radiograph(image).shape
    label = np.zeros((rows, columns), np.uint8)
    label[rows // 4: 3 * rows // 4, columns // 4: 3 * columns // 4] = 3  # pneumonia over the annotated lungs
    Image.fromarray(label).save(tmp_path / "final.png")
    task._staging, task._split = staging, {"train": [], "val": [{"image": str(image), "final": str(tmp_path / "final.png")}]}
    record = task.promote()
    assert (record["classification_threshold"], record["heatmap_threshold"]) == (0.3, 0.5)
    assert record["served_score"] == 0.0 and record["candidate_score"] > 0.9 and record["decision"] == "promoted"
    config = json.loads((served / "configs" / "inference.json").read_text())
    tiny = json.loads((served / "configs" / "test_tiny.json").read_text())
    assert config["image_size"] == tiny["image_size"] and config["classification_threshold"] == 0.3
    assert load_bundle(served, kind="DLNet").network.config["dense_units"] == tiny["network_def"]["dense_units"]


@pytest.mark.parametrize("kind,name", [("LSNet", "lsnet"), ("DLNet", "dlnet")])
def test_training_on_an_empty_datastore_says_why(tmp_path, source_bundles, kind, name):
    """No saved label (and, for DLNet, no boxed image): a one-line reason, not a DataLoader error about samplers."""
    from lib.configs import prepare_bundle
    from lib.datastore import RadiographDatastore
    from lib.trainers import RadiographTrainTask
    from lib.trainers.radiograph import NothingToTrain

    served = prepare_bundle(source_bundles / name, tmp_path / name)
    (tmp_path / "studies").mkdir()
    datastore = RadiographDatastore(tmp_path / "studies", auto_reload=False)
    task = RadiographTrainTask(served, {}, kind=kind, name=name)
    with pytest.raises(NothingToTrain, match="nothing to train on: the datastore has no saved label"):
        task._fetch_datalist({}, datastore)


def test_a_restart_keeps_what_a_promotion_decided(tmp_path, source_bundles):
    """The source says extent-head, names operating points and an ensemble (as the shipped DLNet does); a promotion
    serves one network with the paper's rule and drops those; a restart refreshes the configs but must not hand the
    promoted weights (whose extent head was never fitted) the source's rule back."""
    import json

    from lib.configs import prepare_bundle
    from pneumonitor.networks import serve_trained_weights
    from pneumonitor.networks.bundle import read_inference_config, update_inference_config

    source = tmp_path / "source"
    shutil.copytree(source_bundles / "dlnet", source)
    update_inference_config(source, severity_rule="extent-head", classification_threshold=0.4,
                            operating_points={"balanced": 0.4, "high-specificity": 0.7},
                            ensemble_members=[{"bundle": "a"}, {"bundle": "b"}])
    served = prepare_bundle(source, tmp_path / "dlnet")
    assert read_inference_config(served)["severity_rule"] == "extent-head"
    candidate, _ = make_test_networks()
    save_test_checkpoint(candidate, tmp_path / "candidate.pt")
    serve_trained_weights(tmp_path / "candidate.pt", [served / "configs" / "train.json",
                                                      served / "configs" / "test_tiny.json"], served)
    update_inference_config(source, classification_threshold=0.45)  # a code change in the source meanwhile
    prepare_bundle(source, served)  # the restart
    config = read_inference_config(served)
    assert config["severity_rule"] == "heatmap-threshold"
    assert "operating_points" not in config and "ensemble_members" not in config
    tiny = json.loads((served / "configs" / "test_tiny.json").read_text())
    assert config["network_def"] == tiny["network_def"]
    assert config["classification_threshold"] == 0.45  # what is not the weights' own is refreshed from the source


def test_training_starts_from_the_served_ensembles_member_of_its_architecture(tmp_path, source_bundles):
    """A served DLNet ensemble (the shipped 0.5.x) holds members.<i>.* weights that fit no training network: the
    run loads the member of its own architecture, strictly; a run of an architecture no member has is refused."""
    from monai.bundle import ConfigParser

    from lib.configs import prepare_bundle
    from lib.trainers import RadiographTrainTask
    from pneumonitor.networks import DLNet, combine_dlnet_bundles, save_bundle
    from pneumonitor.networks.bundle import read_inference_config

    tiny, _ = make_test_networks()  # the test_tiny.json architecture
    other = DLNet("resnet18", dense_units=(32, 16), fpn_channels=8, localization_maps=4)
    members = [save_bundle(other, tmp_path / "m0", [64, 64]), save_bundle(tiny, tmp_path / "m1", [64, 64])]
    served = prepare_bundle(source_bundles / "dlnet", tmp_path / "dlnet")
    combine_dlnet_bundles(members, tmp_path / "ensemble")
    shutil.copyfile(tmp_path / "ensemble" / "models" / "model.pt", served / "models" / "model.pt")
    from pneumonitor.networks.bundle import update_inference_config

    update_inference_config(served, network_def=read_inference_config(tmp_path / "ensemble")["network_def"])
    task = RadiographTrainTask(served, {"dlnet_train_configs": "test_tiny.json"}, kind="DLNet", name="dlnet")
    handlers: list = []
    task._load_checkpoint(str(served / "models" / "model.pt"), True, handlers)
    loader = handlers[0]
    assert loader["_target_"] == "CheckpointLoader" and loader["strict"] is True
    assert loader["load_path"] != str(served / "models" / "model.pt")
    parser = ConfigParser()
    parser.read_config(task.training_configs())
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(loader["load_path"], weights_only=True))  # strict: every key, every shape
    for name, value in tiny.state_dict().items():
        assert torch.equal(network.state_dict()[name], value), name
    # the paper's ResNet-50 configuration (train.json alone): neither member
    plain = RadiographTrainTask(served, {}, kind="DLNet", name="dlnet")
    with pytest.raises(ValueError, match="do not fit the training network"):
        plain._load_checkpoint(str(served / "models" / "model.pt"), True, [])


def test_box_only_proposal_with_a_served_ensemble(tmp_path, source_bundles, sample_images):
    """The shipped DLNet is an ensemble: the Grad-CAM proposal of a box-only image runs on its localization member
    (the ensemble itself has no single network's layers)."""
    from lib.infers.pneumonia import PneumoniaInfer
    from pneumonitor.networks import combine_dlnet_bundles, save_bundle
    from pneumonitor.reading import read_radiograph

    first, _ = make_test_networks()
    second, _ = make_test_networks(dlnet_logit_bias=2.0)
    members = [save_bundle(first, tmp_path / "m0", [64, 64], severity_rule="heatmap-threshold"),
               save_bundle(second, tmp_path / "m1", [64, 64])]
    from lib.configs import prepare_bundle
    from pneumonitor.networks.bundle import read_inference_config, update_inference_config

    served = prepare_bundle(source_bundles / "dlnet", tmp_path / "dlnet")
    combine_dlnet_bundles(members, tmp_path / "ensemble")
    shutil.copyfile(tmp_path / "ensemble" / "models" / "model.pt", served / "models" / "model.pt")
    update_inference_config(served, network_def=read_inference_config(tmp_path / "ensemble")["network_def"])
    task = PneumoniaInfer(served, source_bundles / "lsnet", {})
    radiograph = read_radiograph(next(p for p in sample_images.values() if p.suffix == ".png"))
    rows, columns = radiograph.shape
    box = [columns // 8, rows // 4, columns // 2, 3 * rows // 4]
    label, result = task.compute({"radiograph": radiograph, "boxes": [box], "qc": "off"}, "cpu")
    assert result["source"] == "gradcam-proposal" and result["boxes"] == 1
    # a second request reuses the proposer: its Grad-CAM hooks are not registered again on the served network
    network = task.networks.get("cpu").network
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in network.modules())
    task.compute({"radiograph": radiograph, "boxes": [box], "qc": "off"}, "cpu")
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in network.modules()) == hooks > 0
    outside = np.ones(label.shape, dtype=bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert not np.any(label[outside] == 3) and np.any(label[~outside] == 3)


def test_a_repository_update_reaches_a_working_copy_it_never_promoted(tmp_path, source_bundles):
    """New operating points for the same weights, then new weights: a working copy still serving what it copied
    takes both at the next start, with the configs that describe them; promoted weights stay whatever ships."""
    from lib.configs import prepare_bundle
    from pneumonitor.networks.bundle import read_inference_config, update_inference_config

    source = tmp_path / "source"
    shutil.copytree(source_bundles / "dlnet", source)
    served = prepare_bundle(source, tmp_path / "dlnet")
    update_inference_config(source, operating_points={"balanced": 0.4, "high-specificity": 0.7})
    prepare_bundle(source, served)
    assert read_inference_config(served)["operating_points"] == {"balanced": 0.4, "high-specificity": 0.7}
    shipped, _ = make_test_networks(dlnet_logit_bias=2.0)
    save_test_checkpoint(shipped, source / "models" / "model.pt")  # a release with new weights and a new size
    update_inference_config(source, image_size=[48, 48], severity_rule="extent-head")
    prepare_bundle(source, served)
    assert (served / "models" / "model.pt").read_bytes() == (source / "models" / "model.pt").read_bytes()
    config = read_inference_config(served)
    assert config["image_size"] == [48, 48] and config["severity_rule"] == "extent-head"
    promoted, _ = make_test_networks(dlnet_logit_bias=-2.0)
    save_test_checkpoint(promoted, served / "models" / "model.pt")  # as a promotion writes it
    update_inference_config(served, image_size=[64, 64], severity_rule="heatmap-threshold")
    kept = (served / "models" / "model.pt").read_bytes()
    save_test_checkpoint(make_test_networks(dlnet_logit_bias=1.0)[0], source / "models" / "model.pt")  # next release
    prepare_bundle(source, served)
    assert (served / "models" / "model.pt").read_bytes() == kept
    config = read_inference_config(served)
    assert config["image_size"] == [64, 64] and config["severity_rule"] == "heatmap-threshold"
    assert not list((served / "models").glob("*.partial"))
