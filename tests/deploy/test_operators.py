"""The Deploy app's operators, through their pure methods, on the real CR/DX samples and generated bad inputs.

Networks are small random-weight DLNet/LSNet bundles exported to TorchScript by ``ckpt_export``; biases make the outputs known: LSNet says
"lung" everywhere, DLNet says "pneumonia" with probability ~1 and a heatmap of ``heatmap_bias`` (constant when
``heatmap_scale`` is 0, varying around it otherwise).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from monai.deploy.core import Fragment

from operators.dicom_common import LEFT_LUNG, PNEUMONIA, RIGHT_LUNG, derivation_source
from operators.inference import PneumoniaInferenceOperator
from operators.models import ModelsNotFound, load_analyzer, load_model
from operators.radiograph import RadiographConverterOperator
from operators.records import CaseRecord
from operators.sc_writer import DICOMOverlayWriterOperator
from operators.seg_writer import DICOMSegWriterOperator
from operators.selection import CXRDataLoaderOperator, CXRSeriesSelectorOperator
from operators.severity import SeverityOperator
from operators.sr_writer import DICOMSRWriterOperator
from operators.store import DICOMStoreOperator
from pneumonitor.networks import DLNet, LoadedNetwork, LSNet, save_bundle

from test_reading import gradient, make_dicom

IMAGE_SIZE = (128, 128)
REPO = Path(__file__).resolve().parents[2]
DCIODVFY = shutil.which("dciodvfy")


def make_networks(heatmap_bias: float = 0.9, heatmap_scale: float = 0.0) -> tuple[DLNet, LSNet]:
    torch.manual_seed(0)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16))
    ls = LSNet(width=0.125)
    with torch.no_grad():
        dl.classification_head.layers[-1].bias.fill_(10.0)
        dl.localization_head.output_conv.weight.mul_(heatmap_scale)
        dl.localization_head.output_conv.bias.fill_(heatmap_bias)
        ls.head.weight.zero_()
        ls.head.bias.fill_(10.0)
    return dl.eval(), ls.eval()


def write_models(folder: Path, heatmap_bias: float = 0.9, heatmap_scale: float = 0.0) -> dict[str, Path]:
    """Bundles ``folder/{dlnet,lsnet}`` (for the CLI) and their TorchScript ``folder/models/{dlnet,lsnet}/model.ts``,
    exported as scripts/package_map.sh does (``ckpt_export``; DLNet scripted, LSNet traced)."""
    from monai.bundle import ckpt_export

    dl, ls = make_networks(heatmap_bias, heatmap_scale)
    paths = {}
    for name, network in (("dlnet", dl), ("lsnet", ls)):
        # DLNet names a second operating point, as the shipped bundle does (the default stays the paper's 0.62)
        points = {"operating_points": {"balanced": 0.62, "high-specificity": 0.9}} if name == "dlnet" else {}
        bundle = paths[name] = save_bundle(network, folder / name, list(IMAGE_SIZE), **points)
        trace = {} if name == "dlnet" else {"use_trace": True, "input_shape": [1, 1, *IMAGE_SIZE]}
        (folder / "models" / name).mkdir(parents=True)
        ckpt_export(net_id="network_def", filepath=str(folder / "models" / name / "model.ts"),
                    ckpt_file=str(bundle / "models" / "model.pt"), config_file=str(bundle / "configs" / "inference.json"),
                    meta_file=str(REPO / "bundles" / name / "configs" / "metadata.json"), bundle_root=str(bundle), **trace)
    paths["models"] = folder / "models"
    return paths


class _Host:
    """Holds what an operator's pure method reads from ``self`` (no Holoscan graph needed)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


@pytest.fixture(scope="module")
def fragment():
    return Fragment()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def analyzer(models):
    # the gate is off here: these tests follow every sample through the operators (the gate: test_qc_gate_...)
    return load_analyzer(models["models"], device="cpu", qc="off")


@pytest.fixture(scope="module")
def input_folder(tmp_path_factory, dicom_samples):
    """The 5 samples + a lateral DX, an MR-labelled image, a truncated file and a text file."""
    folder = tmp_path_factory.mktemp("input")
    for path in dicom_samples:
        shutil.copy(path, folder / path.name)
    make_dicom(folder / "lateral.dcm", gradient(np.uint8, 255, shape=(128, 128)), ViewPosition="LL")
    make_dicom(folder / "mr.dcm", gradient(np.uint8, 255, shape=(128, 128)), modality="MR")
    dx = next(p for p in dicom_samples if p.name == "dx_image.dcm")
    (folder / "sub").mkdir()
    (folder / "sub" / "truncated.dcm").write_bytes(dx.read_bytes()[:3000])
    (folder / "notes.txt").write_text("not a DICOM file\n")
    return folder


@pytest.fixture(scope="module")
def selected(fragment, input_folder):
    loader = CXRDataLoaderOperator(fragment, input_folder=input_folder, name="loader")
    studies = loader.load_data_to_studies(input_folder)
    selector = CXRSeriesSelectorOperator(fragment, name="selector")
    return selector.select(studies) + loader.unreadable


def by_name(records):
    return {r.source.name: r for r in records}


def test_models_load_from_torchscript(models, tmp_path):
    loaded = load_model(models["models"] / "dlnet", "DLNet")
    assert loaded.image_size == IMAGE_SIZE and isinstance(loaded.network, torch.jit.ScriptModule)
    logits, maps = loaded.network(torch.zeros(1, 3, *IMAGE_SIZE))
    assert logits.shape == (1, 1) and maps.shape == (1, 8, 16, 16)
    assert torch.sigmoid(logits).item() > 0.99 and torch.allclose(maps, torch.full_like(maps, 0.9))
    # a TorchScript file not exported by ckpt_export (no inference.json in it), a non-TorchScript file and a
    # missing folder are refused clearly
    plain = tmp_path / "plain" / "model.ts"
    plain.parent.mkdir()
    torch.jit.save(torch.jit.trace(make_networks()[1], torch.zeros(1, 1, 32, 32)), str(plain))
    with pytest.raises(ModelsNotFound, match="carries no inference.json"):
        load_model(plain.parent, "LSNet")
    plain.write_bytes(b"garbage")
    with pytest.raises(ModelsNotFound, match="is not TorchScript"):
        load_model(plain.parent, "LSNet")
    assert load_model(models["lsnet"], "LSNet").image_size == IMAGE_SIZE  # a bundle folder
    with pytest.raises(ModelsNotFound, match="not DLNet"):
        load_model(models["lsnet"], "DLNet")
    with pytest.raises(ModelsNotFound, match="does not exist"):
        load_analyzer(tmp_path / "nowhere")
    with pytest.raises(ModelsNotFound, match="lsnet"):
        (tmp_path / "half" / "dlnet").mkdir(parents=True)
        shutil.copy(models["models"] / "dlnet" / "model.ts", tmp_path / "half" / "dlnet")
        load_analyzer(tmp_path / "half")


def test_named_operating_point_travels_in_the_torchscript_export(models):
    """PNEUMONITOR_OPERATING_POINT: the exported model.ts embeds inference.json, its operating_points with it."""
    assert load_analyzer(models["models"], device="cpu", qc="off").settings.classification_threshold == 0.62
    strict = load_analyzer(models["models"], device="cpu", qc="off", operating_point="high-specificity")
    assert strict.settings.classification_threshold == 0.9
    with pytest.raises(ModelsNotFound, match="'screening' is not one of the DLNet bundle's: balanced, high-specificity"):
        load_analyzer(models["models"], device="cpu", qc="off", operating_point="screening")


def test_bundle_ckpt_export_is_loadable(tmp_path):
    """What scripts/package_map.sh runs on a trained bundle: ``ckpt_export`` (traced: LSNet is not scriptable)
    embeds inference.json and with it the input size the app reads."""
    from monai.bundle import ckpt_export

    bundle = tmp_path / "lsnet"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    _, lsnet = make_networks()
    torch.save(lsnet.state_dict(), bundle / "models" / "model.pt")
    config = {"imports": ["$import pneumonitor.networks"], "image_size": [96, 80],
              "network_def": {"_target_": "pneumonitor.networks.LSNet", "width": 0.125}}
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    target = tmp_path / "models" / "lsnet" / "model.ts"
    target.parent.mkdir(parents=True)
    ckpt_export(net_id="network_def", filepath=str(target), ckpt_file=str(bundle / "models" / "model.pt"),
                config_file=str(bundle / "configs" / "inference.json"),
                meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle),
                use_trace=True, input_shape=[1, 1, 96, 80])
    loaded = load_model(target.parent, "LSNet")
    assert loaded.image_size == (96, 80)
    x = torch.rand(1, 1, 96, 80)
    assert torch.allclose(loaded.network(x), lsnet(x), atol=1e-5)


def test_selection_keeps_frontal_cr_dx_and_says_why_others_are_skipped(selected, dicom_samples):
    records = by_name(selected)
    assert {p.name for p in dicom_samples} <= {n for n, r in records.items() if r.ok}
    assert "lateral view" in records["lateral.dcm"].reason and records["lateral.dcm"].status == "skipped"
    assert "modality MR" in records["mr.dcm"].reason
    assert "not a readable DICOM" in records["notes.txt"].reason
    # the truncated file has a readable header: it is selected here and refused by the 2-D conversion
    assert records["truncated.dcm"].ok
    assert all(r.reason for r in selected if not r.ok)
    ok = [r for r in selected if r.ok]
    assert all(r.study_instance_uid and r.sop_instance_uid and r.dataset is not None for r in ok)


def test_empty_folder_gives_no_studies_and_no_error(fragment, tmp_path):
    loader = CXRDataLoaderOperator(fragment, input_folder=tmp_path, name="empty_loader")
    assert loader.load_data_to_studies(tmp_path) == []
    assert CXRSeriesSelectorOperator(fragment, name="empty_selector").select([]) == []


def test_conversion_is_the_cli_reader(selected):
    records = by_name(RadiographConverterOperator.convert(r) for r in selected)
    truncated = records["truncated.dcm"]
    assert truncated.status == "skipped" and "could not be decoded" in truncated.reason
    for name, record in records.items():
        if not record.ok:
            continue
        pixels = record.radiograph.pixels
        assert pixels.dtype == np.float32 and pixels.ndim == 2 and pixels.min() == 0 and pixels.max() == 1
        assert pixels.shape == (record.dataset.Rows, record.dataset.Columns)
    assert records["dx_image.dcm"].radiograph.meta["pixel_spacing"] == pytest.approx((1.2, 1.2012), abs=1e-3)
    # Fake_MONOHR1 holds the same stored pixels as its MONOCHROME2 original, relabelled MONOCHROME1: the
    # conversion must invert it (MONOCHROME1 displays the minimum white)
    mono2 = records["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"].radiograph.pixels
    mono1 = records["Fake_MONOHR1.dcm"].radiograph.pixels
    assert np.allclose(mono1, 1.0 - mono2, atol=1e-6)


@pytest.fixture(scope="module")
def analysed(selected, analyzer):
    records = [RadiographConverterOperator.convert(r) for r in selected]
    PneumoniaInferenceOperator.predict(_Host(analyzer=analyzer, batch_size=3), records)
    host = _Host(analyzer=analyzer)
    return [SeverityOperator.assess(host, r) for r in records]


def test_qc_gate_in_the_inference_operator(selected, models):
    analyzer = load_analyzer(models["models"], device="cpu")  # qc on, the shipped bundles/qc
    # copies: the module's other tests follow the same (module-scoped) records with the gate off
    records = [RadiographConverterOperator.convert(copy.copy(r)) for r in selected]
    PneumoniaInferenceOperator.predict(_Host(analyzer=analyzer, batch_size=3), records)
    named = {r.source.name: r for r in records}
    assert named["dx_image.dcm"].reason.startswith("image QC: lateral view") and not named["dx_image.dcm"].ok
    # the selector may already refuse the copy as a duplicate of the CR sample's SOP Instance UID
    assert named["Fake_MONOHR1.dcm"].reason.startswith(("image QC: inverted", "duplicate of SOP instance"))
    assert sum(r.ok and r.prediction is not None for r in records) == 3
    assert all(r.prediction.qc.passed for r in records if r.ok)


def test_inference_and_severity(analysed):
    ok = [r for r in analysed if r.ok]
    assert len(ok) == 5
    for record in ok:
        assert record.prediction.probability > 0.99
        assert record.prediction.heatmap.shape == IMAGE_SIZE and record.prediction.lung_probability.shape == IMAGE_SIZE
        severity = record.analysis.severity
        assert severity.pneumonia_mask.shape == record.radiograph.shape
        # heatmap 0.9 >= 0.8 everywhere and every pixel is lung: each lung fully involved
        assert severity.ratio_right == severity.ratio_left == 100.0 and severity.score_total == 8
        assert severity.right_lung.any() and severity.left_lung.any()
        assert not (severity.right_lung & severity.left_lung).any()


def build_objects(records):
    for cls in (DICOMSegWriterOperator, DICOMSRWriterOperator, DICOMOverlayWriterOperator):
        host = _Host(kind=cls.kind, build=lambda record, cls=cls, host=None: cls.build(None, record))
        cls.apply(host, records)
    return records


@pytest.fixture(scope="module")
def built(analysed):
    return build_objects([r for r in analysed if r.ok])


def test_seg_frames_are_the_masks(built):
    import highdicom as hd

    for record in built:
        seg = hd.seg.Segmentation.from_dataset(record.objects["seg"])
        source = record.dataset
        assert seg.number_of_segments == 3
        types = [seg.get_segment_description(n).segmented_property_type for n in (1, 2, 3)]
        assert [t.value for t in types] == [RIGHT_LUNG.value, LEFT_LUNG.value, PNEUMONIA.value]
        assert all(t.scheme_designator == "SCT" for t in types)
        severity = record.analysis.severity
        pixels = seg.get_pixels_by_source_instance(
            [source.SOPInstanceUID], segment_numbers=[1, 2, 3], combine_segments=False, skip_overlap_checks=True
        )
        expected = np.stack([severity.right_lung, severity.left_lung, severity.pneumonia_mask], axis=-1)
        assert pixels.shape == (1, source.Rows, source.Columns, 3)
        assert np.array_equal(pixels[0].astype(bool), expected)


def test_seg_of_a_flipped_radiograph_lies_on_its_stored_pixels(tmp_path, analyzer):
    """pneumonitor.reading flips an image stored with its rows toward the patient's right (PatientOrientation R\\F);
    the SEG must still match the source's stored pixels, the SC says how it is drawn (L\\F)."""
    import highdicom as hd

    path = make_dicom(tmp_path / "rf.dcm", gradient(np.uint8, 255, shape=(128, 160)), PatientOrientation=["R", "F"])
    record = CaseRecord(source=path, dataset=pydicom.dcmread(path, stop_before_pixels=True))
    RadiographConverterOperator.convert(record)
    assert record.radiograph.meta["orientation_flips"] == ("columns",)
    PneumoniaInferenceOperator.predict(_Host(analyzer=analyzer, batch_size=1), [record])
    SeverityOperator.assess(_Host(analyzer=analyzer), record)
    build_objects([record])
    severity = record.analysis.severity
    # the test LSNet calls every pixel lung: the patient's right lung is on the left of the oriented image ...
    assert severity.right_lung[:, 0].all() and not severity.right_lung[:, -1].any()
    seg = hd.seg.Segmentation.from_dataset(record.objects["seg"])
    pixels = seg.get_pixels_by_source_instance(
        [record.dataset.SOPInstanceUID], segment_numbers=[1, 2], combine_segments=False, skip_overlap_checks=True
    )[0].astype(bool)
    # ... and on the right of the stored pixels, where the header says the patient's right is
    assert np.array_equal(pixels[..., 0], severity.right_lung[:, ::-1])
    assert np.array_equal(pixels[..., 1], severity.left_lung[:, ::-1])
    assert list(record.objects["sc"].PatientOrientation) == ["L", "F"]


def test_objects_copy_patient_study_and_get_new_valid_uids(built):
    from pydicom.uid import UID

    seen = set()
    for record in built:
        source = record.dataset
        for kind, ds in record.objects.items():
            assert ds.StudyInstanceUID == source.StudyInstanceUID, kind
            for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate",
                            "AccessionNumber"):
                assert str(ds.get(keyword, "") or "") == str(source.get(keyword, "") or ""), (kind, keyword)
            for keyword in ("SeriesInstanceUID", "SOPInstanceUID"):
                uid = UID(getattr(ds, keyword))
                assert uid.is_valid and uid not in seen and uid != source.get(keyword), (kind, keyword)
                seen.add(uid)
            assert "NOT FOR CLINICAL USE" in ds.SeriesDescription
    sc = built[0].objects["sc"]
    assert sc.PhotometricInterpretation == "RGB" and (sc.Rows, sc.Columns) == built[0].radiograph.shape
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == built[0].dataset.SOPInstanceUID


def test_sr_holds_the_severity_numbers(built):
    import highdicom as hd

    for record in built:
        sr = hd.sr.Comprehensive3DSR.from_dataset(record.objects["sr"])
        row = record.analysis.severity.as_row()
        image_group = sr.content.get_image_measurement_groups()[0]
        values = {m.name.meaning: (m.value, m.unit.value) for m in image_group.get_measurements()}
        assert values["Probability"] == (pytest.approx(row["pneumonia_probability"]), "{probability}")
        assert values["Pneumonia ratio"] == (pytest.approx(row["ratio_total"]), "%")
        assert values["Pneumonia severity score"] == (row["score_total"], "{score}")
        assert image_group.get_qualitative_evaluations()[0].value.meaning == "Present"
        lungs = sr.content.get_planar_roi_measurement_groups()
        assert [g.finding_sites[0].value.value for g in lungs] == [RIGHT_LUNG.value, LEFT_LUNG.value]
        for group, side, segment in zip(lungs, ("right", "left"), (1, 2)):
            values = {m.name.meaning: m.value for m in group.get_measurements()}
            assert values == {"Pneumonia ratio": row[f"ratio_{side}"], "Pneumonia severity score": row[f"score_{side}"]}
            reference = group.referenced_segmentation_frame
            assert reference.referenced_sop_instance_uid == record.objects["seg"].SOPInstanceUID
            assert reference.referenced_segment_numbers == [segment]
        statement = sr.ContentSequence[-1]
        assert statement.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
        assert statement.ContentSequence[0].TextValue.startswith("NOT FOR CLINICAL USE")
        evidence = [e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for s in sr.CurrentRequestedProcedureEvidenceSequence for e in s.ReferencedSeriesSequence]
        assert record.dataset.SOPInstanceUID in evidence


def test_sr_carries_the_uncertainty_of_analyze(built):
    """TID 1419 upper/lower measurement uncertainty = distances to the ends of the results.csv intervals."""
    import dataclasses

    import highdicom as hd

    record = copy.copy(built[0])
    value = record.analysis.severity.probability
    spread = {**record.analysis.uncertainty, "pneumonia_probability_low": value - 0.25,
              "pneumonia_probability_high": min(1.0, value + 0.01), "ratio_right_sd": 2.5, "interval_z": 2.0}
    record.analysis = dataclasses.replace(record.analysis, uncertainty=spread)
    sr = hd.sr.Comprehensive3DSR.from_dataset(DICOMSRWriterOperator.build(None, record))

    def uncertainties(measurement):
        items = {i.ConceptNameCodeSequence[0].CodeValue: i.MeasuredValueSequence[0].NumericValue
                 for i in measurement[0].ContentSequence if "MeasuredValueSequence" in i}
        return float(items["371886008"]), float(items["371885007"])  # upper, lower

    probability = next(m for m in sr.content.get_image_measurement_groups()[0].get_measurements()
                       if m.name.meaning == "Probability")
    upper, lower = uncertainties(probability)
    assert lower == pytest.approx(0.25, abs=1e-5) and upper == pytest.approx(min(1.0, value + 0.01) - value, abs=1e-5)
    right = sr.content.get_planar_roi_measurement_groups()[0]
    ratio = next(m for m in right.get_measurements() if m.name.meaning == "Pneumonia ratio")
    r = record.analysis.severity.ratio_right
    assert uncertainties(ratio) == (pytest.approx(min(100.0, r + 5.0) - r), pytest.approx(r - max(0.0, r - 5.0)))


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools)")
def test_dciodvfy_reports_no_errors(built, tmp_path):
    for index, record in enumerate(built):
        for kind, ds in record.objects.items():
            path = tmp_path / f"{index}-{kind}.dcm"
            ds.save_as(path, enforce_file_format=True)
            report = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
            errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
            assert not errors, (record.source.name, kind, errors)


def test_negative_image_has_an_empty_pneumonia_segment(tmp_path, selected):
    dl, ls = make_networks()
    with torch.no_grad():
        dl.classification_head.layers[-1].bias.fill_(-10.0)  # probability ~0: negative
    from pneumonitor.inference.analyzer import Analyzer

    analyzer = Analyzer(
        LoadedNetwork(dl, IMAGE_SIZE, tmp_path, "", {}), LoadedNetwork(ls, IMAGE_SIZE, tmp_path, "", {})
    )
    record = next(r for r in selected if r.source.name == "dx_image.dcm")
    record = CaseRecord(source=record.source, study_instance_uid=record.study_instance_uid, dataset=record.dataset)
    RadiographConverterOperator.convert(record)
    PneumoniaInferenceOperator.predict(_Host(analyzer=analyzer, batch_size=1), [record])
    SeverityOperator.assess(_Host(analyzer=analyzer), record)
    build_objects([record])
    assert record.ok and record.analysis.severity.score_total == 0
    seg = record.objects["seg"]
    assert seg.NumberOfFrames == 3
    frames = seg.pixel_array
    assert frames[0].any() and frames[1].any() and not frames[2].any()


def test_failed_object_fails_the_whole_study(fragment, built, tmp_path):
    records = [CaseRecord(source=r.source, study_instance_uid=r.study_instance_uid, sop_instance_uid=r.sop_instance_uid,
                          dataset=r.dataset, radiograph=r.radiograph, analysis=r.analysis, objects=dict(r.objects))
               for r in built]
    pair = ("Fake_MONOHR1.dcm", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")  # one study
    shared = [r for r in records if r.source.name in pair]
    assert len(shared) == 2 and shared[0].study_instance_uid == shared[1].study_instance_uid
    broken = shared[0].dataset.copy()
    del broken.SOPClassUID  # the SEG cannot reference a source without a SOP class
    shared[0].dataset = broken
    shared[0].objects.clear()
    DICOMSegWriterOperator.apply(_Host(kind="seg", build=lambda r: DICOMSegWriterOperator.build(None, r)), [shared[0]])
    assert shared[0].status == "failed" and "SEG" in shared[0].reason
    store = DICOMStoreOperator(fragment, output_folder=tmp_path / "out", name="store")
    counts = store.store(records)
    assert counts == {"ok": 3, "skipped": 0, "failed": 2}
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert shared[0].study_instance_uid not in folders and len(folders) == 3
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir())
    for folder in folders:
        assert sorted(p.name for p in (tmp_path / "out" / folder).iterdir()) == ["01-sc.dcm", "01-seg.dcm", "01-sr.dcm"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["reason"] and not r["seg"] for r in failed)
    assert "another image of study" in {r["image"]: r for r in failed}[str(shared[1].source)]["reason"]


def test_derivation_source_repairs_without_touching_the_source(dicom_samples):
    source = pydicom.dcmread(dicom_samples[0], stop_before_pixels=True)
    source.PatientAge = "62"
    if "PatientBirthDate" in source:
        del source.PatientBirthDate
    derived = derivation_source(source)
    assert derived.PatientAge == "062Y" and derived.PatientBirthDate in (None, "")
    assert source.PatientAge == "62" and "PatientBirthDate" not in source


@pytest.mark.parametrize("study_uid", ["..", ".", "../../evil", ""])
def test_store_never_derives_a_folder_from_an_invalid_study_uid(fragment, built, tmp_path, study_uid):
    """Regression: a StudyInstanceUID ``..`` made the store remove the parent of the output folder, ``.`` the
    output folder itself. Now the study fails with the reason and nothing outside its own folder is touched."""
    work = tmp_path / "work"
    out = work / "out"
    out.mkdir(parents=True)
    (work / "neighbour.txt").write_text("keep me")
    (out / "earlier.txt").write_text("keep me too")
    source = built[0]
    record = CaseRecord(source=source.source, study_instance_uid=study_uid, sop_instance_uid=source.sop_instance_uid,
                        dataset=source.dataset, radiograph=source.radiograph, analysis=source.analysis,
                        objects=dict(source.objects))
    counts = DICOMStoreOperator(fragment, output_folder=out, name="store").store([record])
    assert counts == {"ok": 0, "skipped": 0, "failed": 1}
    assert record.reason.startswith("study not written: StudyInstanceUID")
    assert "not a valid DICOM UID" in record.reason or "is missing" in record.reason
    assert (work / "neighbour.txt").read_text() == "keep me" and (out / "earlier.txt").read_text() == "keep me too"
    assert sorted(p.name for p in work.iterdir()) == ["neighbour.txt", "out"]
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt", "results.csv", "results.json"]


def test_selector_skips_instances_with_invalid_uids(fragment, tmp_path):
    """UIDs name output folders and are copied into the derived objects: a path or a newline is refused up front."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = gradient(np.uint8, 255, shape=(128, 128))
    make_dicom(folder / "dotdot.dcm", image, StudyInstanceUID="..")
    make_dicom(folder / "evil-series.dcm", image, SeriesInstanceUID="../../evil")
    make_dicom(folder / "good.dcm", image)
    loader = CXRDataLoaderOperator(fragment, input_folder=folder, name="loader")
    records = by_name(CXRSeriesSelectorOperator(fragment, name="selector").select(loader.load_data_to_studies(folder)))
    assert records["good.dcm"].ok
    assert records["dotdot.dcm"].status == "skipped"
    assert records["dotdot.dcm"].reason.startswith("StudyInstanceUID '..' is not a valid DICOM UID")
    assert records["evil-series.dcm"].reason.startswith("SeriesInstanceUID '../../evil' is not a valid DICOM UID")


def test_converter_skips_pixel_data_that_disagrees_with_the_header(tmp_path):
    """Regression (issue 16, item 3): striped pixels of a wrong header were scored 8/8 and stored as SEG/SR/SC."""
    path = make_dicom(tmp_path / "striped.dcm", gradient(np.uint8, 255, shape=(128, 128)))
    ds = pydicom.dcmread(path)
    ds.Columns = 127
    ds.save_as(path)
    record = RadiographConverterOperator.convert(CaseRecord(source=path))
    assert record.status == "skipped" and record.radiograph is None
    assert record.reason.endswith("needs 16256 (header and pixel data disagree)"), record.reason


def test_the_extent_head_survives_the_torchscript_export(models, tmp_path, dicom_samples):
    """A DLNet whose severity and probability use its extent head (lung classifier included), exported as scripts/package_map.sh does, gives the app the same
    severity as the bundle gives ``pneumonitor analyze``."""
    from monai.bundle import ckpt_export

    from pneumonitor.inference.analyzer import AnalysisSettings, Analyzer
    from pneumonitor.networks import load_bundle
    from pneumonitor.reading import read_radiograph

    torch.manual_seed(1)
    dl = DLNet("resnet18", fpn_channels=16, localization_maps=8, dense_units=(32, 16), extent_head=True,
               lung_classifier=True)
    with torch.no_grad():
        dl.classification_head.layers[-1].bias.fill_(-10.0)  # the classification head says negative ...
        dl.extent_head.conv.weight.mul_(0.01)
        dl.extent_head.conv.bias.copy_(torch.tensor([2.0, 1.5, 1.5]))  # ... the lung classifier positive (p ~0.95);
        # each lung's extent near 2: about 37.5 % involved
    bundle = save_bundle(dl.eval(), tmp_path / "dlnet", list(IMAGE_SIZE), severity_rule="extent-head",
                         probability_source="lung-classifier")
    target = tmp_path / "models" / "dlnet" / "model.ts"
    target.parent.mkdir(parents=True)
    ckpt_export(net_id="network_def", filepath=str(target), ckpt_file=str(bundle / "models" / "model.pt"),
                config_file=str(bundle / "configs" / "inference.json"),
                meta_file=str(REPO / "bundles" / "dlnet" / "configs" / "metadata.json"), bundle_root=str(bundle))
    shutil.copytree(models["models"] / "lsnet", tmp_path / "models" / "lsnet")
    exported = load_analyzer(tmp_path / "models", device="cpu", qc="off")
    assert exported.extent_rule and exported.lung_classifier
    assert isinstance(exported.dlnet.network, torch.jit.ScriptModule)
    eager = Analyzer(load_bundle(bundle), load_bundle(models["lsnet"]), AnalysisSettings(qc="off"))
    radiograph = read_radiograph(dicom_samples[0])
    app, cli = exported.analyze_one(radiograph), eager.analyze_one(radiograph)
    assert app.status == cli.status == "ok"
    assert app.severity.probability == pytest.approx(cli.severity.probability, abs=1e-4) and app.severity.positive
    assert 25 < app.severity.ratio_right < 50 and 25 < app.severity.ratio_left < 50
    assert (app.severity.ratio_right, app.severity.ratio_left) == pytest.approx(
        (cli.severity.ratio_right, cli.severity.ratio_left), abs=0.01)
    assert np.array_equal(app.severity.pneumonia_mask, cli.severity.pneumonia_mask)
