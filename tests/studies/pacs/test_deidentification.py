"""De-identification on ingest (PS3.15 Basic Profile + Retain Longitudinal Full Dates + Retain Patient
Characteristics + Retain UIDs) and the pseudonym map."""

import json

import pydicom
import pytest
from pydicom.dataset import Dataset

from analysis.imaging.dicom_writer import write_ct_series
from studies.pacs import deid
from studies.pacs.ingest import IngestError, import_local
from studies.pacs.models import PseudonymMap, StoredSeries
from tests.factories import ExamFactory, PatientFactory
from tests.studies.pacs.conftest import stored_files
from tests.studies.pacs.test_bad_series import phantom

PHI = {
    "PatientName": "Doe^Jane", "PatientID": "MRN-0042", "PatientBirthDate": "19590315",
    "PatientSex": "F", "PatientWeight": "61", "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "1 Main Street", "OperatorsName": "Tech^Tom", "ReferringPhysicianName": "Dr^Who",
    "AccessionNumber": "ACC998877", "StudyDescription": "CT chest Jane Doe", "StationName": "CTROOM1",
    "OtherPatientIDs": "OLD-77", "StudyDate": "20240101",
}


def phi_series(folder, seed=0, series_uid=None, **tags):
    extra = {**PHI, **tags}
    patient_id = extra.pop("PatientID")
    files = write_ct_series(phantom(seed=seed), folder, patient_id=patient_id, series_uid=series_uid,
                            extra_tags=extra)
    for path in files:  # a private element and a person name nested in a sequence, as real scanners write
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x0019, "ACME 1.0", create=True)
        block.add_new(0x01, "LO", "private note: Jane Doe")
        item = Dataset()
        item.PerformingPhysicianName = "Nested^Name"
        ds.ProcedureCodeSequence = [item]
        ds.save_as(path)
    return files


def test_profile_table_on_one_dataset(tmp_path):
    ds = pydicom.dcmread(phi_series(tmp_path / "s")[0])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    record = deid.deidentify(ds, pseudonym="PX1")
    assert ds.PatientID == "PX1" and str(ds.PatientName) == "PX1"
    # Removed (X) and emptied (Z) per PS3.15 Table E.1-1.
    for keyword in ("InstitutionName", "InstitutionAddress", "OperatorsName", "StudyDescription", "StationName",
                    "OtherPatientIDs"):
        assert keyword not in ds, keyword
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.ReferringPhysicianName == ""
    # Retain Patient Characteristics: sex, weight; age computed from the birth date before it went
    # (2024-01-01 minus 1959-03-15 = 64 full years).
    assert ds.PatientSex == "F" and ds.PatientWeight == "61" and ds.PatientAge == "064Y"
    assert record.age_from_birth_date
    # Retain Longitudinal Temporal Information (full dates) and Retain UIDs.
    assert ds.StudyDate == "20240101"
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == uids
    # Private elements and names at any depth are gone.
    assert not any(elem.tag.is_private for elem in ds)
    assert "PerformingPhysicianName" not in ds.ProcedureCodeSequence[0]
    assert record.private_removed >= 1 and record.other_names_removed == 1
    # The method is recorded in the dataset (CID 7050 codes).
    assert ds.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100", "113106", "113108",
                                                                                   "113110"]
    everything = ds.to_json()
    for value in ("Doe^Jane", "MRN-0042", "19590315", "St Elsewhere", "Tech^Tom", "ACC998877", "Jane Doe",
                  "OLD-77", "Nested^Name"):
        assert value not in everything, value


def test_stored_series_holds_no_phi_and_the_map_holds_the_real_id(project, pacs_storage, tmp_path):
    phi_series(tmp_path / "s")
    stored = import_local(project, tmp_path / "s").stored
    row = json.dumps(StoredSeries.objects.filter(pk=stored.pk).values().get(), default=str)
    for value in ("Doe^Jane", "MRN-0042", "19590315", "St Elsewhere", "Tech^Tom", "ACC998877", "CTROOM1"):
        assert value not in row, value
    mapping = PseudonymMap.objects.get(project=project)
    assert mapping.real_patient_id == "MRN-0042"
    assert stored.meta["patient_pseudonym"] == mapping.pseudonym
    assert stored.meta["patient_sex"] == "F" and stored.meta["patient_age"] == "064Y"
    assert stored.meta["study_date"] == "20240101"
    assert "InstitutionName" in stored.meta["deidentification"]["removed"]
    # The real id stays out of str/repr of the map row (they reach logs and admin lists).
    assert "MRN-0042" not in str(mapping) and "MRN-0042" not in repr(mapping)


def test_same_patient_same_pseudonym_across_series(project, pacs_storage, tmp_path):
    phi_series(tmp_path / "a", seed=1)
    phi_series(tmp_path / "b", seed=2)
    a = import_local(project, tmp_path / "a").stored
    b = import_local(project, tmp_path / "b").stored
    assert a.pk != b.pk and a.meta["patient_pseudonym"] == b.meta["patient_pseudonym"]
    assert PseudonymMap.objects.count() == 1


def test_linking_to_an_exam_uses_its_pseudonym_and_fills_the_exam(project, pacs_storage, tmp_path):
    exam = ExamFactory(patient=PatientFactory(project=project, pseudonym="BMD-001"))
    phi_series(tmp_path / "a", seed=1)
    stored = import_local(project, tmp_path / "a", exam=exam).stored
    assert stored.exam == exam and stored.meta["patient_pseudonym"] == "BMD-001"
    assert PseudonymMap.objects.get(project=project).pseudonym == "BMD-001"
    exam.refresh_from_db()
    assert exam.series_uid == stored.series_uid and exam.kvp == 120.0
    assert exam.scanner_model == "synthetic phantom"


def test_series_of_another_patient_cannot_join_an_exam(project, pacs_storage, tmp_path):
    exam = ExamFactory(patient=PatientFactory(project=project, pseudonym="BMD-001"))
    phi_series(tmp_path / "a", seed=1)
    import_local(project, tmp_path / "a", exam=exam)
    phi_series(tmp_path / "b", seed=2, PatientID="MRN-OTHER")
    with pytest.raises(IngestError) as info:
        import_local(project, tmp_path / "b", exam=exam)
    assert info.value.code == "patient_mismatch" and "MRN-OTHER" not in str(info.value)
    assert StoredSeries.objects.count() == 1 and PseudonymMap.objects.count() == 1
    assert len(stored_files(pacs_storage)) == 1
